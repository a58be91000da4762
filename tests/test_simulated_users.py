"""Simulated users: the labeller's noise model and the clustered populations the benchmark uses."""
import torch

from prefstudio.eval.simulated_users import (
    ATTRIBUTES, SimulatedUser, TasteMix, bayes_accuracy, calibrate_temperature, image_attributes,
    random_user, sample_population,
)


def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g)


def test_colour_attribute_tells_colour_from_black_and_white():
    white = torch.ones(2, 3, 32, 32)
    white[:, :, 8:24, 8:24] = 0.2  # a dark grey square: no hue
    white[1, 0, 8:24, 8:24] = 0.9  # make the second square red
    colour = image_attributes(white)["colour"]
    assert colour[1] > colour[0] + 1.0  # more than a typical spread apart


def test_utility_from_attributes_matches_utility():
    user = random_user("a", seed=3, categories=["cats", "dogs"], n_attributes=3)
    pixels, cats = _images(), ["cats", "dogs"] * 12
    direct = user.utility(pixels, cats)
    cached = user.utility_from_attributes(image_attributes(pixels), cats)
    torch.testing.assert_close(direct, cached)


def test_calibrated_temperature_gives_the_target_ceiling():
    gaps = torch.randn(500, generator=torch.Generator().manual_seed(1)) * 3
    t = calibrate_temperature(gaps, 0.85)
    assert abs(float(bayes_accuracy(gaps, t)) - 0.85) < 1e-6
    # A noisier labeller (higher temperature) has a lower ceiling.
    assert bayes_accuracy(gaps, 2 * t) < 0.85


def test_choice_frequencies_follow_plackett_luce():
    user = SimulatedUser("a", {}, temperature=0.5)
    u = torch.tensor([1.0, 0.5, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([user.choose(u, g) for _ in range(4000)]), minlength=4)
    expected = torch.softmax(u / 0.5, 0)
    assert torch.allclose(counts / 4000.0, expected.float(), atol=0.03)
    # With two images, the first choice is the Bradley–Terry draw.
    wins = sum(user.prefers_first(1.0, 0.5, g) for _ in range(4000)) / 4000
    assert abs(wins - float(torch.sigmoid(torch.tensor(1.0)))) < 0.03


def test_population_tastes_cluster_by_archetype():
    subjects = [f"s{i}" for i in range(10)]
    population = sample_population([f"u{i}" for i in range(200)], seed=0, categories=subjects,
                                   mix=TasteMix(n_archetypes=4))
    vectors = torch.tensor([[u.attribute_weights[a] for a in ATTRIBUTES]
                            + [u.category_affinity[s] for s in subjects] for u in population.users])
    vectors = torch.nn.functional.normalize(vectors - vectors.mean(0), dim=1)
    sims = vectors @ vectors.T
    archetype = torch.tensor([population.archetype[u.user_id] for u in population.users])
    same = archetype[:, None] == archetype[None, :]
    off_diagonal = ~torch.eye(len(archetype), dtype=torch.bool)
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.3
    # Reproducible from the seed.
    again = sample_population([f"u{i}" for i in range(200)], seed=0, categories=subjects,
                              mix=TasteMix(n_archetypes=4))
    assert again.users[7].attribute_weights == population.users[7].attribute_weights


def _canvas(n=1, size=32):
    return torch.ones(n, 3, size, size)


def test_composition_attributes_read_where_the_mass_is():
    images = _canvas(3)
    images[0, :, 12:20, 12:20] = 0.1  # a small centred square
    images[1, :, 2:10, 2:10] = 0.1  # the same square in a corner
    images[2, :, 4:28, 4:28] = 0.1  # a large centred square
    a = image_attributes(images)
    assert a["offcentre"][1] > a["offcentre"][0] + 1.0
    assert a["symmetry"][0] > a["symmetry"][1] + 1.0  # the corner square has no mirror image
    assert a["top_heavy"][1] > a["top_heavy"][0] + 1.0  # its mass sits in the upper half
    assert a["fill"][2] > a["fill"][0] + 1.0
    assert a["spread"][2] > a["spread"][0] + 1.0


def test_light_and_detail_attributes():
    images = _canvas(3)
    images[0, :, 8:24, 8:24] = 0.1  # a dark drawing
    images[1, :, 8:24, 8:24] = 0.7  # a pale one
    images[2, :, 8:24, 8:24] = 0.1
    images[2, :, 8:24:2, 8:24] = 0.9  # the dark one striped: fine texture
    a = image_attributes(images)
    assert a["tone"][1] > a["tone"][0] + 1.0
    assert a["fine_detail"][2] > a["fine_detail"][0] + 1.0
    assert a["ink_contrast"][2] > a["ink_contrast"][0] + 1.0
    green = _canvas(2)
    green[0, :, 8:24, 8:24] = torch.tensor([0.2, 0.8, 0.2])[:, None, None]
    green[1, :, 8:24, 8:24] = torch.tensor([0.8, 0.2, 0.8])[:, None, None]
    assert image_attributes(green)["green"][0] > image_attributes(green)["green"][1] + 1.0


def test_every_attribute_is_differentiable():
    pixels = _images(4).requires_grad_(True)
    for name, values in image_attributes(pixels).items():
        (grad,) = torch.autograd.grad(values.sum(), pixels, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_every_family_leads_some_tastes_and_others_are_mixtures():
    from prefstudio.eval.simulated_users import FAMILIES

    subjects = [f"s{i}" for i in range(10)]
    population = sample_population([f"u{i}" for i in range(600)], seed=1, categories=subjects,
                                   mix=TasteMix(n_archetypes=8))
    leading = []
    for user in population.users:
        shares = {f: sum(user.attribute_weights[a] ** 2 for a in members) for f, members in FAMILIES.items()}
        shares["subject"] = sum(v**2 for v in user.category_affinity.values()) / len(subjects)
        total = sum(shares.values())
        leading.append(max(shares, key=shares.get) if max(shares.values()) > 0.4 * total else "mixture")
    counts = {f: leading.count(f) for f in [*FAMILIES, "mixture"]}
    assert all(n >= 10 for n in counts.values()), counts
