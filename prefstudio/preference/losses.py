"""The contrastive preference loss of 000 §3.2 (eqs. 1-5).

Every preference model outputs two logits per target z given history S:
M⁺(S,z) ("like") and M⁻(S,z) ("dislike"). A training example is a pair
(z_pos, z_neg) judged by the same person under the same history.

ℒ in eq. 1 is the classification loss over the two label logits, i.e. the
cross-entropy of the softmax in eq. 2: for z_pos the target label is "like",
for z_neg it is "dislike". (In the paper the labels are next-token targets of
the VLM; the two-way softmax is the same quantity restricted to the two label tokens.)
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last dimension; with weights, a weighted mean (used to fit many
    leave-one-out models at once, each with its own mask over the pairs)."""
    if weights is None:
        return values.mean(-1)
    return (values * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)


def like_probability(m_like: torch.Tensor, m_dislike: torch.Tensor) -> torch.Tensor:
    """Q(S,z) = exp(M⁺) / (exp(M⁺) + exp(M⁻))   (eq. 2)."""
    return torch.sigmoid(m_like - m_dislike)


def base_loss(pos_like, pos_dislike, neg_like, neg_dislike, weights=None) -> torch.Tensor:
    """L_base = ½ (ℒ(M(S,z_pos), like) + ℒ(M(S,z_neg), dislike))   (eq. 1)."""
    loss_pos = -F.logsigmoid(pos_like - pos_dislike)  # -log Q(S, z_pos)
    loss_neg = -F.logsigmoid(neg_dislike - neg_like)  # -log (1 - Q(S, z_neg))
    return 0.5 * (_mean(loss_pos, weights) + _mean(loss_neg, weights))


def positive_preference_loss(pos_like, neg_like, weights=None) -> torch.Tensor:
    """L₊ = -mean log σ(M⁺(S,z_pos) - M⁺(S,z_neg))   (eq. 3)."""
    return _mean(-F.logsigmoid(pos_like - neg_like), weights)


def negative_preference_loss(pos_dislike, neg_dislike, weights=None) -> torch.Tensor:
    """L₋ = -mean log σ(M⁻(S,z_neg) - M⁻(S,z_pos))   (eq. 4)."""
    return _mean(-F.logsigmoid(neg_dislike - pos_dislike), weights)


@dataclass
class PreferenceLoss:
    total: torch.Tensor
    base: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def preference_loss(
    pos_like, pos_dislike, neg_like, neg_dislike, contrastive: bool = True, weights=None
) -> PreferenceLoss:
    """L_all = L_base + L₊ + L₋ (eq. 5); with contrastive=False, L_base alone (the ablation).

    Inputs are logits [..., N] over N pairs; leading dimensions are independent models
    (reduced separately). `weights` [..., N] masks or weighs pairs."""
    base = base_loss(pos_like, pos_dislike, neg_like, neg_dislike, weights)
    positive = positive_preference_loss(pos_like, neg_like, weights)
    negative = negative_preference_loss(pos_dislike, neg_dislike, weights)
    total = base + positive + negative if contrastive else base
    return PreferenceLoss(total, base, positive, negative)
