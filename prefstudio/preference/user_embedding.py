"""Preference model A: a fitted user embedding over frozen image features.

Features f(z) of an image are standardised and projected to a small taste space,
φ(z) = ((f(z) − μ) / σ) P. A person is two vectors there, one for "like" and one
for "dislike": M⁺(z) = φ(z)·u⁺ + b⁺, M⁻(z) = φ(z)·u⁻ + b⁻ (the logits of 000 eq. 2),
fitted on their pairs with L_all (eqs. 1-5).

Knowledge shared across people lives in a `UserBank`, trained once on many users:
μ, σ, the projection P, and every training user's (u⁺, u⁻). A new person with a
short history is a combination of the bank's users (Premier, 003 §4.3), weighted by
how well each known user's taste explains the person's judgments — a tempered
posterior over "which known person is this like" — and gains a personal offset, less
and less restrained, as their history grows. Without a bank, the taste space is the
person's own principal directions and the vectors are fitted from scratch.

Leave-one-out accuracy is computed by fitting every held-out model in one batch:
held-out pair i is predicted by a model that saw no pair sharing an image with it.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from prefstudio.errors import InvalidInput
from prefstudio.preference.losses import preference_loss
from prefstudio.preference.model import Taste

# Below this many independent pairs only the bank coefficients are fitted (003 §4.3:
# the linear combination wins for short histories, direct training for long ones).
COLD_START_PAIRS = 16
# How unlikely by chance a fit from scratch's lead on held-out pairs must be to replace the bank's.
SWITCH_SIGNIFICANCE = 0.05
# Pairs evaluated in leave-one-out (each one is an extra model in the batch).
MAX_LOO_MODELS = 64
# Taste-space size when fitting from scratch, and the PCA width a bank learns inside.
SCRATCH_DIM = 32
BANK_PCA_DIM = 128
BANK_VERSION = "2"


@dataclass
class UserBank:
    """What many users share: feature standardisation, a taste space, and their vectors."""

    encoder: str
    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    projection: torch.Tensor  # [D, k]
    like_vectors: torch.Tensor  # [K, k]
    dislike_vectors: torch.Tensor  # [K, k]
    # β of the tempered posterior w_k ∝ exp(β·log-likelihood of the person's pairs under
    # user k): the bank users' scorers are fitted on a few dozen pairs each and are
    # over- or under-confident; β is calibrated on the training users (calibrate_likelihood_power).
    likelihood_power: float
    source: str  # how the bank was built (command, data)

    @property
    def n_users(self) -> int:
        return self.like_vectors.shape[0]

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std) @ self.projection

    def pair_log_likelihoods(self, liked: torch.Tensor, disliked: torch.Tensor) -> torch.Tensor:
        """[N, K]: log P(liked[i] ≻ disliked[i]) under each bank user's taste."""
        return self.projected_pair_log_likelihoods(self.project(liked) - self.project(disliked))

    def projected_pair_log_likelihoods(self, gaps: torch.Tensor) -> torch.Tensor:
        """The same from projected liked − disliked features [N, k]."""
        return F.logsigmoid(gaps @ self.user_embeddings.T)

    @property
    def user_embeddings(self) -> torch.Tensor:
        """[K, k] each bank user's taste direction (like − dislike): their log-odds of liking
        an image are its projected features times this, up to a constant."""
        return self.like_vectors - self.dislike_vectors

    def posterior(self, log_likelihood: torch.Tensor) -> torch.Tensor:
        """Weights over the bank's users from summed pair log-likelihoods [..., K]."""
        return torch.softmax(self.likelihood_power * log_likelihood, -1)

    def save(self, path: str | Path) -> None:
        tensors = {k: getattr(self, k).contiguous() for k in
                   ("mean", "std", "projection", "like_vectors", "dislike_vectors")}
        meta = {"format": "prefstudio-user-bank", "version": BANK_VERSION, "encoder": self.encoder,
                "likelihood_power": repr(float(self.likelihood_power)), "source": self.source}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "UserBank":
        from safetensors import SafetensorError, safe_open

        try:  # a bank left half-written, or another file in its place, is named, not a traceback
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != "prefstudio-user-bank" or meta.get("version") != BANK_VERSION:
                    raise InvalidInput(f"{path} is not a PrefStudio user bank (version {BANK_VERSION}); "
                                       "rebuild it with python -m prefstudio_research.train.user_bank")
                t = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError) as error:
            raise InvalidInput(f"{path} is not a readable PrefStudio user bank (safetensors: {error}); "
                               "delete it or rebuild it with python -m prefstudio bank") from None
        return cls(meta["encoder"], t["mean"], t["std"], t["projection"], t["like_vectors"],
                   t["dislike_vectors"], float(meta["likelihood_power"]), meta.get("source", ""))


class UserEmbeddingModel(torch.nn.Module, Taste):
    """Scores images for one person: like/dislike logits from frozen features."""

    def __init__(self, encoder: str, mean, std, projection, like_vector, dislike_vector,
                 like_bias, dislike_bias):
        super().__init__()
        self.encoder = encoder
        for name, value in dict(mean=mean, std=std, projection=projection,
                                like_vector=like_vector, dislike_vector=dislike_vector,
                                like_bias=like_bias, dislike_bias=dislike_bias).items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).detach().clone())

    def logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = ((features - self.mean) / self.std) @ self.projection
        return phi @ self.like_vector + self.like_bias, phi @ self.dislike_vector + self.dislike_bias

    def prompt_context(self, prompts: list[str]) -> None:
        return None  # reads images only

    def log_odds(self, features: torch.Tensor, context=None) -> torch.Tensor:
        """M⁺ − M⁻ = logit of Q(S,z): the reward guidance maximises."""
        m_like, m_dislike = self.logits(features)
        return m_like - m_dislike

    def like_probability(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.log_odds(features))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and config for the history store / profile file."""
        tensors = {k: v.contiguous() for k, v in self.named_buffers()}
        return tensors, {"type": "user-embedding", "version": 1, "encoder": self.encoder}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict) -> "UserEmbeddingModel":
        if config.get("type") != "user-embedding" or config.get("version") != 1:
            raise InvalidInput(f"not a user-embedding model config: {json.dumps(config)[:200]}")
        return cls(config["encoder"], **tensors)


def _common_scale(features: torch.Tensor) -> torch.Tensor:
    """One scale for every dimension (the RMS spread), as a [D] tensor. Per-dimension
    z-scores would undo the encoder's own balance between feature blocks (1,280 network
    dimensions would outvote 80 colour statistics 16 to 1)."""
    rms = features.std(0).pow(2).mean().sqrt().clamp_min(1e-6)
    return rms.expand(features.shape[1]).clone()


def principal_directions(standardised: torch.Tensor, k: int) -> torch.Tensor:
    """[D, k] top principal directions, one common scale so the projected features have
    unit variance on average. Not whitened: whitening would blow weak noise directions
    up to the size of the strong ones that carry most of the signal."""
    k = max(1, min(k, standardised.shape[0] - 1 if standardised.shape[0] > 1 else 1, standardised.shape[1]))
    centred = standardised - standardised.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    scale = (s[:k].pow(2).mean() / max(1, standardised.shape[0] - 1)).sqrt().clamp_min(1e-6)
    return v[:k].T / scale


@dataclass
class FitResult:
    model: UserEmbeddingModel
    mode: str  # "bank posterior", "bank posterior + personal", "free", "bank average"
    n_pairs: int
    loo_accuracy: float | None  # None when fewer than 2 pairs
    loo_pairs: int
    final_loss: float
    # pair index -> liked − disliked log-odds under the model that did not see that pair
    held_out: dict[int, float] = field(default_factory=dict)


def _solve(phi_pos, phi_neg, weights, prior_like, prior_dislike, personal_l2: float | None,
           contrastive: bool, steps: int, lr: float):
    """Fits M models at once (one per row of `weights` [M, N]) by full-batch Adam.

    Each model's vectors are its prior [M, k] plus a weight-decayed personal offset;
    `personal_l2=None` freezes the offset, leaving only the two logit biases to fit.
    """
    n_models, k = weights.shape[0], phi_pos.shape[1]
    offset_like = torch.zeros(n_models, k, requires_grad=personal_l2 is not None)
    offset_dislike = torch.zeros(n_models, k, requires_grad=personal_l2 is not None)
    bias = torch.zeros(n_models, 2, requires_grad=True)
    params = [bias] + ([offset_like, offset_dislike] if personal_l2 is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    loss = None
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        like, dislike = prior_like + offset_like, prior_dislike + offset_dislike  # [M, k]
        pos_like = like @ phi_pos.T + bias[:, :1]  # [M, N]
        pos_dislike = dislike @ phi_pos.T + bias[:, 1:]
        neg_like = like @ phi_neg.T + bias[:, :1]
        neg_dislike = dislike @ phi_neg.T + bias[:, 1:]
        loss = preference_loss(pos_like, pos_dislike, neg_like, neg_dislike,
                               contrastive=contrastive, weights=weights).total
        penalty = 0.0
        if personal_l2 is not None:
            penalty = personal_l2 * (offset_like.pow(2).sum(-1) + offset_dislike.pow(2).sum(-1))
        (loss + penalty).sum().backward()
        opt.step()
    like, dislike = prior_like + offset_like, prior_dislike + offset_dislike
    return like.detach(), dislike.detach(), bias.detach(), loss.detach()


def _evidence(n_pairs: int, pair_images: list[tuple[str, str]] | None) -> float:
    """How many independent pairs a history is worth: 8 likes and 8 dislikes make 64
    like-x-dislike pairs but only 16 judged images, i.e. at most 8 independent pairs."""
    if pair_images is None:
        return n_pairs
    distinct = len({image for pair in pair_images for image in pair})
    return min(n_pairs, distinct / 2)


def _evidence_scaled(bank: UserBank, gaps: torch.Tensor, evidence: float) -> torch.Tensor:
    """[N, K] pair log-likelihoods under each bank user, scaled to the history's independent
    evidence: 8 likes x 8 dislikes are 64 pairs but say no more than 8 would."""
    return bank.projected_pair_log_likelihoods(gaps) * (evidence / max(1, gaps.shape[0]))


def bank_combination(bank: UserBank, liked: torch.Tensor, disliked: torch.Tensor,
                     pair_images: list[tuple[str, str]] | None = None) -> torch.Tensor:
    """[K] coefficients over the bank's users for a person's pairs (liked[i] ≻ disliked[i]).

    This is Premier's cold start (003 §4.3): a new user is a linear combination of the
    trained users' embeddings, and only the coefficients are fitted on the new user's
    pairs. Here they are the bank posterior `_fit` starts every person from (a tempered
    likelihood of the pairs under each bank user) rather than fitted by gradient descent,
    so the person's embedding is `coefficients @ bank.user_embeddings`. No pairs: the
    average bank user."""
    if liked.ndim != 2 or liked.shape != disliked.shape or liked.shape[1] != bank.mean.shape[0]:
        raise InvalidInput(f"liked and disliked features must both be [N, {bank.mean.shape[0]}]; got "
                           f"{tuple(liked.shape)} and {tuple(disliked.shape)}")
    if liked.shape[0] == 0:
        return torch.full((bank.n_users,), 1.0 / bank.n_users)
    liked, disliked = liked.float(), disliked.float()
    if not (torch.isfinite(liked).all() and torch.isfinite(disliked).all()):
        raise InvalidInput("image features contain NaN or infinite values")
    gaps = bank.project(liked) - bank.project(disliked)
    evidence = _evidence(liked.shape[0], pair_images)
    return bank.posterior(_evidence_scaled(bank, gaps, evidence).sum(0))


def _loo_masks(pair_images: list[tuple[str, str]]) -> tuple[torch.Tensor, list[int]]:
    """For each evaluated pair, a mask of the pairs its held-out model may train on:
    none that shares an image with it (else a liked image seen in another pair leaks).
    Every pair is evaluated up to MAX_LOO_MODELS; beyond, pairs spread evenly from the first
    judged to the last, so the estimate reads every period of the history."""
    n = len(pair_images)
    order = torch.linspace(0, n - 1, min(n, MAX_LOO_MODELS)).round().long().tolist()
    masks = torch.ones(len(order), n)
    for row, i in enumerate(order):
        held = set(pair_images[i])
        for j, images in enumerate(pair_images):
            if held & set(images):
                masks[row, j] = 0.0
    keep = [row for row in range(len(order)) if masks[row].sum() > 0]
    return masks[keep], [order[row] for row in keep]


def fit_user_embedding(
    liked: torch.Tensor,
    disliked: torch.Tensor,
    bank: UserBank | None,
    encoder: str,
    pair_images: list[tuple[str, str]] | None = None,
    contrastive: bool = True,
    steps: int = 150,
    lr: float = 0.05,
) -> FitResult:
    """Fits a person's like/dislike vectors on pairs (liked[i] ≻ disliked[i]).

    liked, disliked: [N, D] frozen features. pair_images: ids of the two images of
    each pair, for a leave-one-out that never reuses a held-out image (defaults to
    each pair being its own two images). With a bank and enough pairs, the
    bank-based fit and a free fit from scratch compete on the held-out pairs: the
    history moves the person off the bank once it says clearly more than the bank does
    (`reads_clearly_more`).
    """
    if not (isinstance(steps, int) and steps >= 1) or not (lr > 0 and math.isfinite(lr)):
        raise InvalidInput(f"fitting needs at least one optimisation step and a positive learning rate; "
                           f"got steps={steps!r}, lr={lr!r}")
    args = dict(pair_images=pair_images, contrastive=contrastive, steps=steps, lr=lr)
    result = _fit(liked, disliked, bank, encoder, **args)
    if bank is not None and _evidence(liked.shape[0], pair_images) >= COLD_START_PAIRS:
        free = _fit(liked, disliked, None, encoder, **args)
        if reads_clearly_more(free.held_out, result.held_out):
            return free
    return result


def reads_clearly_more(challenger: dict[int, float], incumbent: dict[int, float]) -> bool:
    """Whether the challenger's held-out margins read more of the person's pairs right than the
    incumbent's by more than chance: a one-sided sign test (mid-p) over the pairs that exactly
    one of them reads right, at 5 %. With 16 pairs a fit from scratch often reads one or two more than
    the bank's fit by luck and then reads the person's new images worse (docs/benchmarks.md)."""
    common = set(challenger) & set(incumbent)
    wins = sum(1 for i in common if challenger[i] > 0 >= incumbent[i])
    losses = sum(1 for i in common if incumbent[i] > 0 >= challenger[i])
    split = wins + losses
    # mid-p: half the chance of exactly `wins`, which the discrete test otherwise counts whole
    chance = (sum(math.comb(split, k) for k in range(wins + 1, split + 1)) + 0.5 * math.comb(split, wins)) / 2 ** split
    return wins > losses and chance < SWITCH_SIGNIFICANCE


def _fit(
    liked: torch.Tensor,
    disliked: torch.Tensor,
    bank: UserBank | None,
    encoder: str,
    *,
    pair_images: list[tuple[str, str]] | None,
    contrastive: bool,
    steps: int,
    lr: float,
) -> FitResult:
    if liked.ndim != 2 or liked.shape != disliked.shape:
        raise InvalidInput(f"liked and disliked features must both be [N, D]; got "
                           f"{tuple(liked.shape)} and {tuple(disliked.shape)}")
    n_pairs = liked.shape[0]
    if n_pairs == 0 and bank is None:
        raise InvalidInput("no judgments to learn from yet and no user bank for a cold start: "
                           "like or dislike a few images (or pick the better of two) first")
    if bank is not None and bank.encoder != encoder:
        raise InvalidInput(f"the user bank was built with encoder {bank.encoder!r}, "
                           f"but the features come from {encoder!r}")
    liked, disliked = liked.float(), disliked.float()
    if not (torch.isfinite(liked).all() and torch.isfinite(disliked).all()):
        raise InvalidInput("image features contain NaN or infinite values")

    evidence = _evidence(n_pairs, pair_images)
    if bank is not None:
        mean, std, projection = bank.mean, bank.std, bank.projection
        if evidence < COLD_START_PAIRS:
            mode, personal_l2 = "bank posterior", None
        else:
            # The personal offset is held back less as evidence accumulates.
            mode, personal_l2 = "bank posterior + personal", 0.5 * COLD_START_PAIRS / evidence
    else:
        # From scratch: the person's own images define the space (their principal directions).
        both = torch.cat([liked, disliked])
        mean = both.mean(0)
        std = _common_scale(both) if n_pairs > 1 else torch.ones_like(mean)
        projection = principal_directions((both - mean) / std, SCRATCH_DIM)
        mode, personal_l2 = "free", 1e-3

    if n_pairs == 0:  # cold start with nothing judged: the average bank user
        model = UserEmbeddingModel(encoder, mean, std, projection, bank.like_vectors.mean(0),
                                   bank.dislike_vectors.mean(0), 0.0, 0.0)
        return FitResult(model, "bank average", 0, None, 0, float("nan"))

    phi_pos = ((liked - mean) / std) @ projection
    phi_neg = ((disliked - mean) / std) @ projection
    pair_images = pair_images or [(f"pos{i}", f"neg{i}") for i in range(n_pairs)]
    loo_masks, loo_index = _loo_masks(pair_images) if n_pairs >= 2 else (torch.zeros(0, n_pairs), [])
    weights = torch.cat([torch.ones(1, n_pairs), loo_masks])  # row 0: the model on every pair

    if bank is not None:
        # Each model's prior is the posterior mix of the bank users given its pairs.
        posterior = bank.posterior(weights @ _evidence_scaled(bank, phi_pos - phi_neg, evidence))  # [M, K]
        prior_like, prior_dislike = posterior @ bank.like_vectors, posterior @ bank.dislike_vectors
    else:
        prior_like = prior_dislike = torch.zeros(weights.shape[0], projection.shape[1])
    like, dislike, bias, loss = _solve(phi_pos, phi_neg, weights, prior_like, prior_dislike,
                                       personal_l2, contrastive, steps, lr)
    model = UserEmbeddingModel(encoder, mean, std, projection, like[0], dislike[0], bias[0, 0], bias[0, 1])

    loo_accuracy, held_out = None, {}
    if loo_index:
        rows = torch.arange(1, 1 + len(loo_index))
        idx = torch.tensor(loo_index)
        odds_pos = ((phi_pos[idx] * like[rows]).sum(-1) + bias[rows, 0]) - ((phi_pos[idx] * dislike[rows]).sum(-1) + bias[rows, 1])
        odds_neg = ((phi_neg[idx] * like[rows]).sum(-1) + bias[rows, 0]) - ((phi_neg[idx] * dislike[rows]).sum(-1) + bias[rows, 1])
        loo_accuracy = float((odds_pos > odds_neg).float().mean())
        held_out = dict(zip(loo_index, (odds_pos - odds_neg).tolist()))
    return FitResult(model, mode, n_pairs, loo_accuracy, len(loo_index), float(loss[0]), held_out)


def train_user_bank(
    users: list[tuple[torch.Tensor, torch.Tensor]],
    encoder: str,
    source: str,
    dim: int = 32,
    epochs: int = 300,
    lr: float = 0.02,
    weight_decay: float = 0.1,
    contrastive: bool = True,
    seed: int = 0,
) -> UserBank:
    """Learns the taste space P and every user's vectors jointly from many users' pairs.

    users: one (liked [N_u, D], disliked [N_u, D]) per training user. The weight decay is
    strong on purpose: each user's vector comes from a few dozen pairs, and a shrunk one
    predicts their new pairs better (docs/design_figures.md), which is what
    the posterior over users needs.
    """
    if len(users) < 2:
        raise InvalidInput("a user bank needs at least two users")
    torch.manual_seed(seed)
    everything = torch.cat([torch.cat(u) for u in users]).float()
    mean, std = everything.mean(0), _common_scale(everything)
    # Learn the taste space inside the main directions of variation: far fewer
    # parameters than D x dim, so a few dozen pairs per user do not overfit it.
    pca = principal_directions((everything - mean) / std, BANK_PCA_DIM)
    inner = torch.nn.Parameter(torch.randn(pca.shape[1], dim) / math.sqrt(pca.shape[1]))
    like = torch.nn.Parameter(torch.randn(len(users), dim) * 0.1)
    dislike = torch.nn.Parameter(torch.randn(len(users), dim) * 0.1)
    bias = torch.nn.Parameter(torch.zeros(len(users), 2))
    opt = torch.optim.Adam([inner, like, dislike, bias], lr=lr)

    user_index = torch.cat([torch.full((len(u[0]),), i) for i, u in enumerate(users)])
    pos = ((torch.cat([u[0] for u in users]).float() - mean) / std) @ pca
    neg = ((torch.cat([u[1] for u in users]).float() - mean) / std) @ pca
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        phi_pos, phi_neg = pos @ inner, neg @ inner
        ul, ud, ub = like[user_index], dislike[user_index], bias[user_index]
        loss = preference_loss((phi_pos * ul).sum(-1) + ub[:, 0], (phi_pos * ud).sum(-1) + ub[:, 1],
                               (phi_neg * ul).sum(-1) + ub[:, 0], (phi_neg * ud).sum(-1) + ub[:, 1],
                               contrastive=contrastive).total
        reg = weight_decay * (inner.pow(2).sum() + like.pow(2).sum(-1).mean() + dislike.pow(2).sum(-1).mean())
        (loss + reg).backward()
        opt.step()
    with torch.no_grad():
        gaps = (pos - neg) @ inner  # [N, dim]
        power = calibrate_likelihood_power(gaps, user_index, like - dislike)
    return UserBank(encoder, mean, std, (pca @ inner).detach(), like.detach(), dislike.detach(), power, source)


LIKELIHOOD_POWERS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def calibrate_likelihood_power(gaps: torch.Tensor, user_index: torch.Tensor, directions: torch.Tensor,
                               n_history: int = 8) -> float:
    """The β at which the posterior over the *other* users, given a training user's first
    pairs, best predicts that user's remaining pairs (leave-one-user-out, accuracy).

    gaps: [N, k] projected liked − disliked features of every training pair; user_index:
    [N] its user; directions: [K, k] each user's like − dislike vector.
    """
    scores = gaps @ directions.T  # [N, K]: pair i under user k's taste
    log_likelihood = F.logsigmoid(scores)
    hits = {power: [] for power in LIKELIHOOD_POWERS}
    for user in range(directions.shape[0]):
        rows = (user_index == user).nonzero().flatten()
        n = min(n_history, len(rows) // 2)
        if n == 0:
            continue
        evidence = log_likelihood[rows[:n]].sum(0)
        evidence[user] = -math.inf  # the user's own vector saw these pairs
        for power in LIKELIHOOD_POWERS:
            mix = torch.softmax(power * evidence, -1)
            hits[power].append(scores[rows[n:]] @ mix > 0)
    if not hits[LIKELIHOOD_POWERS[0]]:
        raise InvalidInput("calibrating a user bank needs users with at least two pairs")
    accuracy = {power: float(torch.cat(h).float().mean()) for power, h in hits.items()}
    return max(LIKELIHOOD_POWERS, key=lambda power: accuracy[power])
