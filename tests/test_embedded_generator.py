"""The embedded offline generator: deterministic, steered by the prompt, varied by the seed,
and differentiable from its noise in a way guidance can use."""
import json

import pytest
import torch

from prefstudio.encoders.embedded import MiniLMTextEncoder
from prefstudio.errors import InvalidInput
from prefstudio.eval.simulated_users import image_attributes
from prefstudio.generators.base import Generator
from prefstudio.generators.embedded import NOISE_DIM, EmbeddedGenerator
from prefstudio.generators.prompt_style import LEXICON_PATH, Lexicon, PromptStyler

SEEDS = list(range(8))


@pytest.fixture(scope="module")
def generator():
    return EmbeddedGenerator()


def render_seeds(generator, prompt, seeds=SEEDS):
    noise = torch.cat([generator.initial_noise(s) for s in seeds])
    with torch.no_grad():
        return generator.render(noise, generator.encode_prompt(prompt))


def test_implements_the_generator_interface_at_256(generator):
    assert isinstance(generator, Generator)
    assert generator.resolution == 256
    images = generator.generate("a lighthouse at dusk", [0, 1])
    assert [im.image.size for im in images] == [(256, 256)] * 2
    assert [im.seed for im in images] == [0, 1]
    params = images[0].params
    assert params["generator"] == "embedded" and params["version"].startswith("embedded-")
    assert params["noise_dim"] == NOISE_DIM and params["lexicon"] and params["prompt_vector"]
    json.dumps(params)   # stored in the PNG and the history


def test_same_prompt_and_seed_give_identical_pixels_across_instances(generator):
    first = generator.generate("a koi pond in a japanese garden", [7, 8])
    again = EmbeddedGenerator().generate("a koi pond in a japanese garden", [7, 8])
    assert [im.image.tobytes() for im in first] == [im.image.tobytes() for im in again]
    # ...and whatever other seeds it was generated with: stored images can be reproduced.
    alone = generator.generate("a koi pond in a japanese garden", [8])[0]
    assert alone.image.tobytes() == first[1].image.tobytes()
    a, b = (torch.frombuffer(bytearray(im.image.tobytes()), dtype=torch.uint8).float() / 255 for im in first)
    assert (a - b).abs().mean() > 0.03   # different seeds, different images


def test_pixels_are_finite_and_in_range(generator):
    pixels = render_seeds(generator, "neon city at night", [0, 1, 2])
    assert pixels.shape == (3, 3, 256, 256)
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1


def test_prompt_sets_the_palette(generator):
    warm = image_attributes(render_seeds(generator, "sunset over the desert"))
    cold = image_attributes(render_seeds(generator, "a cold blue ocean at night"))
    # warmth is mean(R - B) in units of its typical spread over images (0.15)
    assert warm["warmth"].mean() > cold["warmth"].mean() + 2.0
    assert warm["brightness"].mean() > cold["brightness"].mean() + 0.5
    assert (warm["warmth"] > cold["warmth"]).float().mean() >= 0.75   # per seed, not only on average


def _prompt_distance(generator, a, b):
    """Mean per-seed pixel distance between two prompts (same seeds)."""
    return (render_seeds(generator, a) - render_seeds(generator, b)).abs().mean().item()


def test_similar_prompts_give_related_images(generator):
    forest, woods = "a dense green forest", "pine trees in the green woods"
    related = _prompt_distance(generator, forest, woods)
    for unrelated in ("neon city at night", "a sunny beach"):
        assert related < 0.75 * _prompt_distance(generator, forest, unrelated)


def test_unknown_words_still_relate_through_the_hashed_prompt_vector():
    # No lexicon word at all: the look comes from the hashed bag of words alone.
    generator = EmbeddedGenerator(resolution=64)
    for prompt in ("zorblax quendle", "zorblax quendle frimp", "plovish murt"):
        assert generator.encode_prompt(prompt).words == ()
    shared = _prompt_distance(generator, "zorblax quendle", "zorblax quendle frimp")
    unrelated = _prompt_distance(generator, "zorblax quendle", "plovish murt")
    assert shared < 0.8 * unrelated


def test_text_encoder_relates_prompts_by_meaning():
    generator = EmbeddedGenerator(resolution=64, text_encoder=MiniLMTextEncoder())
    assert generator.params()["prompt_vector"] == MiniLMTextEncoder.name
    # "volcano eruption" names a lexicon word; the encoder adds entries close in meaning.
    assert "lava" in generator.encode_prompt("volcano eruption").words
    ramen, soup, invoice = "a steaming bowl of ramen noodles", "noodle soup with chopsticks", "quarterly tax invoice"
    for prompt in (ramen, soup, invoice):
        assert generator.encode_prompt(prompt).words == ()   # related by the embedding alone
    assert _prompt_distance(generator, ramen, soup) < 0.85 * _prompt_distance(generator, ramen, invoice)


def test_seeds_vary_every_attribute_a_person_can_have_a_taste_about(generator):
    pixels = render_seeds(generator, "a quiet harbor with boats", list(range(16)))
    attributes = image_attributes(pixels)
    # Standardised units: 1.0 is the typical spread of the attribute over all kinds of images;
    # one prompt's seeds span a good part of that (measured: 0.29 to 0.59).
    for name in ("brightness", "colourfulness", "warmth", "density", "contrast"):
        assert attributes[name].std() > 0.2, name
    # Composition varies too: the brightest region is not always in the same place.
    luminance = pixels.mean(1)
    weights = (luminance - luminance.mean((1, 2), keepdim=True)).clamp(min=0)
    grid = torch.linspace(0, 1, 256)
    centre_x = (weights * grid).sum((1, 2)) / weights.sum((1, 2))
    centre_y = (weights * grid[:, None]).sum((1, 2)) / weights.sum((1, 2))
    assert centre_x.std() > 0.04 and centre_y.std() > 0.04


def test_gradients_reach_the_noise(generator):
    noise = generator.initial_noise(3).requires_grad_(True)
    pixels = generator.render(noise, generator.encode_prompt("a bouquet of pink flowers"))
    (pixels * torch.linspace(0, 1, 256)).mean().backward()
    grad = noise.grad
    assert torch.isfinite(grad).all() and grad.norm() > 0
    assert (grad != 0).float().mean() > 0.9   # nearly every noise entry has a say


def test_small_noise_changes_change_the_image_smoothly(generator):
    style = generator.encode_prompt("snowy mountains at dawn")
    noise = generator.initial_noise(5)
    direction = torch.randn(noise.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = generator.render(noise, style)
        steps = [(generator.render(noise + eps * direction, style) - base).abs().mean().item()
                 for eps in (1e-3, 2e-3, 4e-3)]
    assert 0 < steps[0] < 1e-3
    # Differences grow in proportion to the step: no jumps, no flat plateaus.
    assert 1.6 < steps[1] / steps[0] < 2.4 and 1.6 < steps[2] / steps[1] < 2.4


@pytest.mark.parametrize("prompt", ["a quiet harbor with boats", "city skyline at night"])
def test_gradient_ascent_on_the_noise_moves_each_attribute_both_ways(prompt):
    # 128² keeps this fast; the scene and its gradients are the same at any resolution.
    generator = EmbeddedGenerator(resolution=128)
    style = generator.encode_prompt(prompt)
    goals = [(name, sign) for name in ("warmth", "brightness", "colourfulness", "contrast", "density")
             for sign in (1.0, -1.0)]
    start = generator.initial_noise(11).repeat(len(goals), 1)
    noise = start.clone().requires_grad_(True)
    signs = torch.tensor([sign for _, sign in goals])
    optimiser = torch.optim.Adam([noise], lr=0.1)
    for _ in range(10):
        attributes = image_attributes(generator.render(noise, style))
        objective = torch.stack([attributes[name][i] for i, (name, _) in enumerate(goals)])
        optimiser.zero_grad()
        (-(signs * objective).sum()).backward()
        optimiser.step()
    with torch.no_grad():
        before = image_attributes(generator.render(start, style))
        after = image_attributes(generator.render(noise, style))
    for i, (name, sign) in enumerate(goals):
        moved = sign * (after[name][i] - before[name][i])
        assert moved > 0.3, f"{name} {'up' if sign > 0 else 'down'}: moved {moved:.2f} spreads"


def test_bad_input_is_refused(generator):
    style = generator.encode_prompt("a red fox")
    with pytest.raises(InvalidInput, match="noise must be"):
        generator.render(torch.zeros(1, 7), style)
    with pytest.raises(InvalidInput, match="encode_prompt"):
        generator.render(generator.initial_noise(0), "a red fox")
    with pytest.raises(InvalidInput, match="resolution"):
        EmbeddedGenerator(resolution=16)
    with pytest.raises(InvalidInput, match="empty"):
        generator.generate("   ", [0])


def test_lexicon_words_are_found_through_plurals_and_aliases():
    lexicon = Lexicon()
    assert lexicon.lookup("flowers") == "flower"
    assert lexicon.lookup("snowy") == "snow"
    assert lexicon.lookup("kitten") == "cat"
    assert lexicon.lookup("skyscrapers") == "skyline"
    assert lexicon.lookup("invoice") is None
    assert PromptStyler(lexicon=lexicon)("Sunset over the SEA").words == ("sunset", "ocean")


def test_a_broken_lexicon_is_refused_with_its_path(tmp_path):
    data = json.loads(LEXICON_PATH.read_text())
    data["aliases"]["woods"] = "forrest"
    broken = tmp_path / "lexicon.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="forrest"):
        Lexicon(broken)
