"""Each term of the contrastive preference loss against values computed by hand."""
import math

import pytest
import torch

from prefstudio.preference.losses import (
    base_loss,
    like_probability,
    negative_preference_loss,
    positive_preference_loss,
    preference_loss,
)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


# Two pairs. M⁺/M⁻ of the liked (pos) and disliked (neg) image of each pair.
POS_LIKE, POS_DISLIKE = [2.0, 0.5], [0.0, 1.0]
NEG_LIKE, NEG_DISLIKE = [1.0, -1.0], [0.5, 0.0]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_like_probability_is_eq2_softmax():
    m_like, m_dislike = 1.3, -0.4
    expected = math.exp(m_like) / (math.exp(m_like) + math.exp(m_dislike))
    assert like_probability(t([m_like]), t([m_dislike])).item() == pytest.approx(expected, rel=1e-12)


def test_base_loss_eq1():
    # ℒ = cross-entropy over the two label logits: -log softmax(target label).
    pos = [-math.log(math.exp(a) / (math.exp(a) + math.exp(b))) for a, b in zip(POS_LIKE, POS_DISLIKE)]
    neg = [-math.log(math.exp(b) / (math.exp(a) + math.exp(b))) for a, b in zip(NEG_LIKE, NEG_DISLIKE)]
    expected = 0.5 * (sum(pos) / 2 + sum(neg) / 2)
    got = base_loss(t(POS_LIKE), t(POS_DISLIKE), t(NEG_LIKE), t(NEG_DISLIKE))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_positive_preference_loss_eq3():
    expected = -(log_sigmoid(2.0 - 1.0) + log_sigmoid(0.5 - (-1.0))) / 2
    assert positive_preference_loss(t(POS_LIKE), t(NEG_LIKE)).item() == pytest.approx(expected, rel=1e-12)


def test_negative_preference_loss_eq4():
    expected = -(log_sigmoid(0.5 - 0.0) + log_sigmoid(0.0 - 1.0)) / 2
    got = negative_preference_loss(t(POS_DISLIKE), t(NEG_DISLIKE))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_total_is_eq5_and_ablation_is_base_only():
    args = t(POS_LIKE), t(POS_DISLIKE), t(NEG_LIKE), t(NEG_DISLIKE)
    full = preference_loss(*args)
    assert full.total.item() == pytest.approx(
        (full.base + full.positive + full.negative).item(), rel=1e-12
    )
    assert preference_loss(*args, contrastive=False).total.item() == pytest.approx(full.base.item())


def test_weights_select_pairs_and_batch_models():
    args = [t([v, v]) for v in (POS_LIKE, POS_DISLIKE, NEG_LIKE, NEG_DISLIKE)]  # 2 models x 2 pairs
    weights = t([[1.0, 0.0], [0.0, 1.0]])
    batched = preference_loss(*args, weights=weights).total
    first = preference_loss(*[t([v[0]]) for v in (POS_LIKE, POS_DISLIKE, NEG_LIKE, NEG_DISLIKE)]).total
    second = preference_loss(*[t([v[1]]) for v in (POS_LIKE, POS_DISLIKE, NEG_LIKE, NEG_DISLIKE)]).total
    assert batched.tolist() == pytest.approx([first.item(), second.item()], rel=1e-12)


def _per_pair_totals(logits):
    """The loss of each pair on its own (a mean over one pair is that pair's loss)."""
    flat = [x.reshape(-1) for x in logits]
    return torch.stack([preference_loss(*[x[k:k + 1] for x in flat]).total for k in range(flat[0].numel())]
                       ).reshape(logits[0].shape)


def test_every_model_of_a_batch_is_reduced_over_its_own_pairs_only():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 3, 5, generator=g, dtype=torch.float64) for _ in range(4)]  # 2×3 models, 5 pairs
    per_pair = _per_pair_totals(logits)
    assert torch.allclose(preference_loss(*logits).total, per_pair.mean(-1), rtol=1e-12, atol=0)
    # Weights that do not sum to one: a weighted mean, each model with its own weights.
    weights = torch.rand(2, 3, 5, generator=g, dtype=torch.float64) * 3
    weights[0, 1, :2] = 0.0
    expected = (per_pair * weights).sum(-1) / weights.sum(-1)
    got = preference_loss(*logits, weights=weights).total
    assert got.shape == (2, 3) and torch.allclose(got, expected, rtol=1e-12, atol=0)
    # Equal weights are the plain mean, however small.
    equal = torch.full((2, 3, 5), 0.1, dtype=torch.float64)
    assert torch.allclose(preference_loss(*logits, weights=equal).total, per_pair.mean(-1), rtol=1e-12, atol=0)
    # A model with no pair (all weights zero) gets a loss of 0, not NaN.
    weights[1, 2] = 0.0
    assert preference_loss(*logits, weights=weights).total[1, 2].item() == 0.0
