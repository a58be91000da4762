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
