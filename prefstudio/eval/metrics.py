"""Top-K accuracy of preference predictions (000 §4.1, "Evaluation Metric"), from scores.

A group is one liked image and C-1 disliked ones, scored by a method for the same user;
top-K is right when the liked image ranks among the K highest. Ties are broken at random,
counted in expectation: a liked image tied with e disliked ones and beaten by g of them
lands on each rank g+1 … g+e+1 with equal probability. A method that scores everything
the same therefore gets chance (50 % for 1 vs 1, K/4 for 1 vs 3), never full marks.
"""
import math

import torch

from prefstudio.errors import InvalidInput


def top_k_hits(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [G, C], column 0 the liked image -> [G] probability the liked one is in the top k."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise InvalidInput(f"scores must be [groups, candidates ≥ 2] with the liked image first, got {tuple(scores.shape)}")
    if not 1 <= k <= scores.shape[1]:
        raise InvalidInput(f"k={k} is outside 1..{scores.shape[1]}")
    if torch.isnan(scores).any():
        raise InvalidInput("scores contain NaN")
    liked, disliked = scores[:, :1], scores[:, 1:]
    above = (disliked > liked).sum(1)
    tied = (disliked == liked).sum(1)
    return ((k - above) / (tied + 1)).clamp(0.0, 1.0)


def top_k_accuracy(scores: torch.Tensor, k: int = 1) -> float:
    """Mean of `top_k_hits` over groups, in [0, 1]."""
    hits = top_k_hits(scores, k)
    if hits.numel() == 0:
        raise InvalidInput("no groups to evaluate")
    return float(hits.mean())


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy over n groups (how far apart two numbers must be
    before the difference means anything)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n else float("nan")
