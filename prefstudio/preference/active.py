"""Active queries: which pair of candidates to ask a person about next.

A judged pair is worth most when its answer is hard to predict *because the tastes that still
explain the person disagree on it* — not merely because the answer is a coin flip. Two signals,
used by what the studio has:

- **Taste disagreement** (with a user bank whose encoder matches the features): the person's
  like − dislike direction w in the bank's taste space gets a Gaussian prior fitted to the bank
  users' directions (the population's tastes, 003 §4.3), updated by the history's
  Bradley–Terry likelihood (a Laplace posterior; pairs scaled to the history's independent
  evidence, as `fit_user_embedding` scales them). A pair's score is the mutual information
  between its answer and w (BALD), over S posterior samples:
  I = H(mean_s q_s) − mean_s H(q_s), q_s = σ(w_s · (φ(first) − φ(second))).
  It is the expected entropy reduction of the posterior over the person's taste; a pair every
  plausible taste answers alike scores ~0 however uncertain each answer is. It reads only the
  features and the bank, so it serves whichever preference model the studio runs. A continuous
  posterior rather than one over the bank's users: people are mixtures of them, not copies.
- **Model uncertainty**: the entropy of the fitted taste's own answer,
  σ(log-odds(first) − log-odds(second)), through the `Taste` interface — any preference model.
  Without a bank it is the score; with one it is a tie-break (`MODEL_WEIGHT`), deciding once the
  posterior has settled.

How these were chosen, what they save and how fast they are: docs/benchmarks.md, "Active queries".
"""
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from prefstudio.errors import InvalidInput
from prefstudio.preference.model import Taste
from prefstudio.preference.user_embedding import UserBank, _evidence

MAX_CANDIDATES = 256  # pairs grow as n²: 256 candidates are 32,640 pairs
MODEL_WEIGHT = 0.05  # nats of model entropy per nat of taste information: a tie-break
POSTERIOR_SAMPLES = 256
MAX_NEWTON_STEPS = 100  # damped Newton on a concave log posterior: far fewer are needed
NEWTON_TOLERANCE = 1e-12  # nats a full Newton step would still gain: the mode is found


@dataclass
class PairQuery:
    first: int  # index into the candidates
    second: int
    score: float  # the ranking score, nats
    taste_information: float | None  # I(answer; the person's taste), nats; None without a bank
    model_confidence: float | None  # the fitted taste's probability of its likelier answer; None without one

    @property
    def reason(self) -> str:
        parts = []
        if self.taste_information is not None:
            parts.append(f"tastes that still fit your judgments disagree on it "
                         f"({self.taste_information:.3f} nats expected)")
        if self.model_confidence is not None:
            parts.append(f"your fitted taste is only {100 * self.model_confidence:.0f} % sure of your answer")
        return "; ".join(parts)


@dataclass
class SuggestedPair:
    """A pair of stored images to judge next (A ≻ B, or a like for one and a dislike for the other)."""

    first: str  # image id
    second: str
    information: float  # the ranking score, nats
    reason: str


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def taste_samples(bank: UserBank, liked: torch.Tensor, disliked: torch.Tensor,
                  pair_images: list[tuple[str, str]] | None = None,
                  n_samples: int = POSTERIOR_SAMPLES) -> torch.Tensor:
    """[S, k] like − dislike directions drawn from the Laplace posterior over the person's taste
    (module docstring). liked/disliked [N, D]: the history's features; pair_images: its image
    ids, for the evidence count. Deterministic (quasi-random draws)."""
    # In float64: the prior's precision spans orders of magnitude (tastes the bank users share
    # vs ones they split on), and in float32 rounding stalled Newton short of the mode.
    directions = (bank.like_vectors - bank.dislike_vectors).double()  # [K, k]
    k = directions.shape[1]
    prior_mean = directions.mean(0)
    prior_covariance = torch.cov(directions.T)
    prior_covariance.diagonal().add_(1e-3)
    prior_precision = torch.linalg.inv(prior_covariance)
    w, precision = prior_mean.clone(), prior_precision
    if liked.shape[0]:
        x = (bank.project(liked.float()) - bank.project(disliked.float())).double()  # [N, k]
        scale = _evidence(liked.shape[0], pair_images) / liked.shape[0]

        def log_posterior(w: torch.Tensor) -> float:
            centred = w - prior_mean
            return float(scale * F.logsigmoid(x @ w).sum() - 0.5 * centred @ prior_precision @ centred)

        for _ in range(MAX_NEWTON_STEPS):
            s = torch.sigmoid(x @ w)
            precision = prior_precision + scale * (x.T * (s * (1 - s))) @ x
            gradient = prior_precision @ (w - prior_mean) - scale * ((1 - s) @ x)
            step = torch.linalg.solve(precision, gradient)
            if float(gradient @ step) / 2 < NEWTON_TOLERANCE:
                break  # a full step would gain less than this: w is the mode, precision is at it
            # A full Newton step can overshoot where the pairs' log-likelihood bends sharply (large
            # feature gaps) and then swing between two points; halve it until the log posterior
            # rises, which, the log posterior being concave, a short enough step does.
            before, length = log_posterior(w), 1.0
            while log_posterior(w - length * step) < before and length > 1e-6:
                length /= 2
            w = w - length * step
    covariance_root = torch.linalg.cholesky(torch.linalg.inv(precision))
    # Quasi-random normal draws (Sobol points through Φ⁻¹; the first point, 0, where Φ⁻¹ is −∞,
    # skipped), each with its mirror image: deterministic without a seed, their mean is exactly
    # the mode and their covariance sits closer to the posterior's than pseudo-random draws' do.
    # An odd count adds the mode itself.
    half = torch.special.ndtri(torch.quasirandom.SobolEngine(k).draw(n_samples // 2 + 1, dtype=torch.float64)[1:])
    noise = torch.cat([half, -half, half.new_zeros(n_samples % 2, k)])
    return (w + noise @ covariance_root.T).float()


def rank_pairs(candidates: torch.Tensor, history_liked: torch.Tensor | None = None,
               history_disliked: torch.Tensor | None = None, bank: UserBank | None = None,
               taste: Taste | None = None, context: Any = None,
               pair_images: list[tuple[str, str]] | None = None,
               exclude: set[tuple[int, int]] = frozenset()) -> list[PairQuery]:
    """Every unordered pair (i < j) of `candidates` [M, D], most informative first.

    history_liked/disliked [N, D]: the person's judged pairs (features), for the taste posterior;
    pair_images their image ids (for the evidence count, as the fit does). taste/context: the
    person's fitted taste and its `prompt_context` for the candidates (one row, or one per
    candidate). exclude: (i, j) index pairs with i < j not to ask again.
    """
    if candidates.ndim != 2 or candidates.shape[0] < 2:
        raise InvalidInput("need at least two candidate images to suggest a pair; got "
                           f"{candidates.shape[0] if candidates.ndim == 2 else 'no feature matrix'}")
    if candidates.shape[0] > MAX_CANDIDATES:
        raise InvalidInput(f"at most {MAX_CANDIDATES} candidates at a time; got {candidates.shape[0]}")
    if bank is None and taste is None:
        raise InvalidInput("nothing to rank queries by: no user bank and no fitted taste")
    candidates = candidates.float()
    if not torch.isfinite(candidates).all():
        raise InvalidInput("candidate features contain NaN or infinite values")
    first, second = torch.triu_indices(candidates.shape[0], candidates.shape[0], offset=1)
    score = torch.zeros(first.shape[0])
    information = answer = None
    with torch.no_grad():
        if bank is not None:
            d = bank.mean.shape[0]
            if candidates.shape[1] != d:
                raise InvalidInput(f"the user bank reads {d}-d features; the candidates have {candidates.shape[1]}")
            liked = torch.zeros(0, d) if history_liked is None else history_liked
            disliked = torch.zeros(0, d) if history_disliked is None else history_disliked
            samples = taste_samples(bank, liked, disliked, pair_images)  # [S, k]
            utility = bank.project(candidates) @ samples.T  # [M, S]
            q = torch.sigmoid(utility[first] - utility[second])  # [P, S]
            information = (_binary_entropy(q.mean(1)) - _binary_entropy(q).mean(1)).clamp_min(0)
            score = score + information
        if taste is not None:
            odds = taste.log_odds(candidates, context).float()
            answer = torch.sigmoid(odds[first] - odds[second])
            score = score + (MODEL_WEIGHT if bank is not None else 1.0) * _binary_entropy(answer)
    queries = []
    for p in torch.argsort(score, descending=True, stable=True).tolist():
        i, j = int(first[p]), int(second[p])
        if (i, j) in exclude:
            continue
        queries.append(PairQuery(i, j, float(score[p]),
                                 None if information is None else float(information[p]),
                                 None if answer is None else max(float(answer[p]), 1 - float(answer[p]))))
    return queries
