"""Preference model B: a sequence model over a person's history with preference tokens (000 §3).

The input is [P_v; x_u]. x_u holds one token per judged image of the history, the liked
and the disliked image of every pair, each the sum of its image features, its prompt's
features and the embedding of its label ("like"/"dislike"); then the target, its image
and prompt plus a learned query that stands where the VLM's "Score for this image?"
stands. The target's output gives the two label logits M⁺, M⁻, and Q (eq. 2) is their
softmax. P_v ∈ ℝ^{L_p×D} are learnable tokens shared by all people; stage 1 trains the
model with them (or without, and stage 2 adds them), stage 2 trains nothing else.

This is the lite backbone: a small transformer over frozen image/text features
(any encoder). With `taste_dim` set, image features first pass through the frozen taste
space of a user bank trained on the same training users (`user_embedding.UserBank`): a
linear map learned from their judgments, so the transformer reads the directions people's
tastes differ along instead of memorising a thousand encoder dimensions of the training
images. The bank, user vectors included, is saved with the checkpoint.

[P_v; history] is a prefix with full attention among its tokens: each preference token
reads the whole history, so it can summarise the person along one shared interest for the
target to read. (Under the VLM's causal attention P_v come first and their keys and values
are the same constants for everyone.) What P_v gives in either form is measured in
docs/preference_tokens.md. The prefix's keys and values are
computed once per person and every target is scored against them in one batch; a target
attends to the prefix and to itself, never to other targets, so scores do not depend on
what else is in the batch. There are no positions: the history is a set, and its order
does not change a score.

An antisymmetric model (`LiteConfig.antisymmetric`, the shipped one) reads every history twice,
as judged and mirrored, and scores the difference: trained on one population, a plain model
learns that population's average taste and applies it to anyone, on images it never saw too;
this one can only say what the person's own judgments say (docs/benchmarks.md, "Do the token
checkpoints read studio histories?").
The VLM backbone (`prefstudio.preference.vlm`) has the same stages and loss.
"""
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.preference.losses import like_probability
from prefstudio.preference.token_checkpoint import (CHECKPOINT_BANK, CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, FORMAT,
                                                    read_checkpoint_config)
from prefstudio.preference.token_stages import train_only_stage


@dataclass
class PairFeatures:
    """A history of N judged pairs as frozen features: liked [N,Di], disliked [N,Di], prompts [N,Dt]
    (None for a model that reads no prompts); `disliked_prompts` [N,Dt] when a pair's disliked
    image was made for another prompt than its liked one (the studio pairs every 👍 with every
    👎), None when both share `prompts` (PrefBench's pairs). Leading batch dimensions are
    allowed ([B,N,Di] …)."""

    liked: torch.Tensor
    disliked: torch.Tensor
    prompts: torch.Tensor | None = None
    disliked_prompts: torch.Tensor | None = None


@dataclass
class TargetFeatures:
    """Images to score and their prompts: images [T,Di], prompts [T,Dt] (or [B,T,·]; None for a
    model that reads no prompts)."""

    images: torch.Tensor
    prompts: torch.Tensor | None = None


@dataclass
class LiteConfig:
    image_dim: int
    text_dim: int  # 0: the model reads no prompts
    image_encoder: str  # names of the frozen encoders whose features the model reads
    text_encoder: str | None
    width: int = 128
    layers: int = 2
    heads: int = 4
    preference_tokens: int = 0  # L_p of this model; 0 = "w/o P_v"
    taste_dim: int = 0  # > 0: image features are read through a user bank's taste space of this size
    max_history: int = 8  # the most pairs it was trained to read as one history (longer ones are split)
    antisymmetric: bool = False  # log-odds flip exactly when every judgment of the history flips (`encode_history`)
    backbone: str = field(default="lite", init=False)

    def __post_init__(self):
        if self.width % self.heads:
            raise InvalidInput(f"width {self.width} is not divisible by heads {self.heads}")


class _Block(nn.Module):
    """Pre-norm transformer block whose attention runs in two parts: full attention within
    the prefix, then targets against the cached prefix keys/values (plus themselves)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def _split(self, x):  # [..., L, W] -> 3 × [..., H, L, W/H]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        shape = x.shape[:-1] + (self.heads, -1)
        return [t.reshape(shape).transpose(-2, -3) for t in (q, k, v)]

    def _merge(self, x):  # [..., H, L, d] -> [..., L, W]
        x = x.transpose(-2, -3)
        return x.reshape(x.shape[:-2] + (-1,))

    def prefix(self, x):
        """x [B,L,W] -> (x', keys, values), self-attention among all prefix tokens."""
        q, k, v = self._split(x)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(self._merge(attended))
        return x + self.mlp(self.norm2(x)), k, v

    def targets(self, t, k_prefix, v_prefix, return_attention=False):
        """t [B,T,W]; prefix keys/values [B,H,L,d]. Each target attends to the prefix and itself."""
        q, k, v = self._split(t)  # [B,H,T,d]
        scale = 1.0 / math.sqrt(q.shape[-1])
        to_prefix = q @ k_prefix.transpose(-1, -2) * scale  # [B,H,T,L]
        to_self = (q * k).sum(-1, keepdim=True) * scale  # [B,H,T,1]
        weights = torch.cat([to_prefix, to_self], dim=-1).softmax(-1)
        attended = weights[..., :-1] @ v_prefix + weights[..., -1:] * v
        t = t + self.out(self._merge(attended))
        t = t + self.mlp(self.norm2(t))
        return (t, weights) if return_attention else (t, None)


@dataclass
class Prefix:
    """Per-layer keys/values of [P_v; history], computed once per person (an antisymmetric
    model's hold the mirrored history as a second block of the batch: `encode_history`)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    n_preference_tokens: int


class LiteTokenModel(nn.Module):
    def __init__(self, config: LiteConfig):
        super().__init__()
        self.config = config
        w = config.width
        image_width = config.taste_dim or config.image_dim
        if config.taste_dim:  # the bank's frozen map into its taste space (`set_taste_space`)
            self.register_buffer("taste_mean", torch.zeros(config.image_dim))
            self.register_buffer("taste_std", torch.ones(config.image_dim))
            self.register_buffer("taste_projection", torch.zeros(config.image_dim, config.taste_dim))
        # Feature standardisation, fitted on the training images/prompts (`fit_standardisation`).
        self.register_buffer("image_mean", torch.zeros(image_width))
        self.register_buffer("image_std", torch.ones(image_width))
        self.register_buffer("text_mean", torch.zeros(config.text_dim))
        self.register_buffer("text_std", torch.ones(config.text_dim))
        self.image_in = nn.Linear(image_width, w)
        self.text_in = nn.Linear(config.text_dim, w) if config.text_dim else None
        self.label_embedding = nn.Parameter(torch.randn(2, w) * 0.02)  # rows: like, dislike
        self.query = nn.Parameter(torch.randn(w) * 0.02)  # "Score for this image?"
        self.blocks = nn.ModuleList(_Block(w, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(w)
        self.label_head = nn.Linear(w, 2)  # rows: M⁺ ("like"), M⁻ ("dislike")
        self.preference_tokens = (
            nn.Parameter(torch.randn(config.preference_tokens, w) * 0.02)
            if config.preference_tokens else None
        )

    # ---- stages ----------------------------------------------------------------------
    def add_preference_tokens(self, count: int, generator: torch.Generator | None = None) -> None:
        """Stage 2: append L_p fresh tokens P_v (the model must have none yet)."""
        if self.preference_tokens is not None:
            raise InvalidInput("this model already has preference tokens")
        if count < 1:
            raise InvalidInput(f"the number of preference tokens must be at least 1, got {count}")
        w = self.config.width
        self.preference_tokens = nn.Parameter(
            torch.randn(count, w, generator=generator).to(self.query) * 0.02
        )
        self.config.preference_tokens = count

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """Stage 1: everything (P_v included, if any); stage 2: P_v alone, the rest frozen."""
        return train_only_stage(self, stage, list(self.parameters()), self.preference_tokens)

    @torch.no_grad()
    def set_taste_space(self, bank) -> None:
        """Read image features through `bank`'s taste space (a `UserBank` over the same encoder)."""
        c = self.config
        if not c.taste_dim:
            raise InvalidInput("this model reads raw image features (taste_dim = 0)")
        if bank.encoder != c.image_encoder or tuple(bank.projection.shape) != (c.image_dim, c.taste_dim):
            raise InvalidInput(f"the user bank ({bank.encoder}, {tuple(bank.projection.shape)}) does not fit "
                               f"this model ({c.image_encoder}, ({c.image_dim}, {c.taste_dim}))")
        self.taste_mean.copy_(bank.mean)
        self.taste_std.copy_(bank.std)
        self.taste_projection.copy_(bank.projection)

    @torch.no_grad()
    def fit_standardisation(self, image_features: torch.Tensor, text_features: torch.Tensor | None) -> None:
        """Centre and scale of the model's inputs (after the taste space, if any) on training data."""
        if self.config.taste_dim:
            image_features = self._taste(image_features)
        for name, feats in (("image", image_features), ("text", text_features)):
            if feats is not None and feats.shape[1]:
                getattr(self, f"{name}_mean").copy_(feats.mean(0))
                getattr(self, f"{name}_std").copy_(feats.std(0).clamp_min(1e-4))

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    # ---- tokens ------------------------------------------------------------------------
    def _taste(self, f):
        return ((f - self.taste_mean) / self.taste_std) @ self.taste_projection

    def _image(self, f):
        if self.config.taste_dim:
            f = self._taste(f)
        return self.image_in((f - self.image_mean) / self.image_std)

    def _text(self, f):
        if self.text_in is None:
            return 0.0
        if f is None:
            raise InvalidInput("this model reads prompts: pass their features")
        return self.text_in((f - self.text_mean) / self.text_std)

    def history_tokens(self, history: PairFeatures, mirrored: bool = False) -> torch.Tensor:
        """[..., N, ·] -> [..., 2N, W]: liked and disliked image of each pair, interleaved
        (`mirrored`: each image with the other label)."""
        prompt = self._text(history.prompts)
        disliked_prompt = prompt if history.disliked_prompts is None else self._text(history.disliked_prompts)
        labels = self.label_embedding.flip(0) if mirrored else self.label_embedding
        liked = self._image(history.liked) + prompt + labels[0]
        disliked = self._image(history.disliked) + disliked_prompt + labels[1]
        return torch.stack([liked, disliked], dim=-2).flatten(-3, -2)

    def target_tokens(self, targets: TargetFeatures) -> torch.Tensor:
        return self._image(targets.images) + self._text(targets.prompts) + self.query

    # ---- forward -----------------------------------------------------------------------
    def encode_history(self, history: PairFeatures) -> Prefix:
        """Run [P_v; x_u history] once. history tensors [B,N,·] (or [N,·] for one person).

        An antisymmetric model also encodes the history mirrored (every pair judged the other way
        round) and `score_encoded` reads each target against both: a score that does not flip with
        the person's judgments (what the training population liked on average, or an extrapolation
        on images unlike the training images) cancels, and only what the history says is left."""
        tokens = self.history_tokens(history)
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0)
        if self.config.antisymmetric:
            mirrored = self.history_tokens(history, mirrored=True)
            tokens = torch.cat([tokens, mirrored.reshape(tokens.shape)])
        n_pv = 0
        if self.preference_tokens is not None:
            n_pv = self.preference_tokens.shape[0]
            pv = self.preference_tokens.unsqueeze(0).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([pv, tokens], dim=1)
        keys, values = [], []
        x = tokens
        for block in self.blocks:
            x, k, v = block.prefix(x)
            keys.append(k)
            values.append(v)
        return Prefix(keys, values, n_pv)

    def score_encoded(self, prefix: Prefix, targets: TargetFeatures, return_attention=False):
        """Targets [B,T,·] (or [T,·] for a one-person prefix) -> (m_like, m_dislike) [B,T] / [T].

        With return_attention, also a list (per layer) of [B,H,T,L_prefix+1] weights."""
        t = self.target_tokens(targets)
        single = t.dim() == 2
        if single:
            t = t.unsqueeze(0)
        batch = prefix.keys[0].shape[0] if prefix.keys else 1
        if self.config.antisymmetric:
            batch //= 2
        if t.shape[0] != batch:
            raise InvalidInput(f"{t.shape[0]} target groups for {batch} encoded histories")
        if self.config.antisymmetric:
            t = torch.cat([t, t])
        attention = []
        for block, k, v in zip(self.blocks, prefix.keys, prefix.values):
            t, weights = block.targets(t, k, v, return_attention)
            attention.append(None if weights is None else weights[:batch])
        logits = self.label_head(self.norm_out(t))
        m_like, m_dislike = logits[..., 0], logits[..., 1]
        if self.config.antisymmetric:  # "like" as read from the history = "dislike" as read from its mirror
            m_like, m_dislike = (0.5 * (m_like[:batch] + m_dislike[batch:]),
                                 0.5 * (m_dislike[:batch] + m_like[batch:]))
        if single:
            m_like, m_dislike = m_like[0], m_dislike[0]
        return (m_like, m_dislike, attention) if return_attention else (m_like, m_dislike)

    def forward(self, history: PairFeatures, targets: TargetFeatures):
        """(m_like, m_dislike): the label logits of each target given the history (one person:
        history [N,·], targets [T,·] -> [T]; or batched [B,N,·], [B,T,·] -> [B,T]).
        Differentiable w.r.t. the target features (guidance); wrap in no_grad to serve."""
        return self.score_encoded(self.encode_history(history), targets)

    score = forward  # the serving name; calling the module itself goes through hooks (DDP)

    def like_probability(self, history: PairFeatures, targets: TargetFeatures) -> torch.Tensor:
        """Q(S, z) of eq. 2 for each target."""
        return like_probability(*self.score(history, targets))

    def preference_token_attention(self, history: PairFeatures, targets: TargetFeatures) -> torch.Tensor:
        """Attention from each target image token to each preference token (eq. 6 restricted
        to P_v): [layers, heads, T, L_p], one person (history [N,·], targets [T,·])."""
        if self.preference_tokens is None:
            raise InvalidInput("this model has no preference tokens (a stage-1 model)")
        _, _, attention = self.score_encoded(self.encode_history(history), targets, return_attention=True)
        n_pv = self.preference_tokens.shape[0]
        return torch.stack([a[0, :, :, :n_pv] for a in attention])


# ---- checkpoints ------------------------------------------------------------------------
def save_token_model(model: LiteTokenModel, directory: str | Path, provenance: dict | None = None,
                     bank=None) -> Path:
    """safetensors weights + JSON config (+ how it was made) in `directory`, and the user bank
    whose taste space the model reads (required when it reads one)."""
    if model.config.taste_dim and bank is None:
        raise InvalidInput("this model reads a user bank's taste space: save the bank with it")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if bank is not None:
        bank.save(directory / CHECKPOINT_BANK)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / CHECKPOINT_WEIGHTS), metadata={"format": FORMAT})
    config = {"format": FORMAT, "version": 1, "model": asdict(model.config), "provenance": provenance or {}}
    (directory / CHECKPOINT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_checkpoint_bank(directory: str | Path):
    """The user bank saved with a lite checkpoint: the training users' taste space and vectors."""
    from prefstudio.preference.user_embedding import UserBank

    path = Path(directory) / CHECKPOINT_BANK
    if not path.is_file():
        raise NotFound(f"{directory} holds no user bank ({CHECKPOINT_BANK})")
    return UserBank.load(path)


def load_token_model(directory: str | Path, device: torch.device | str = "cpu"):
    """Load a checkpoint written by `save_token_model` (lite) or the VLM trainer (vlm)."""
    config = read_checkpoint_config(directory)
    backbone = config["model"].get("backbone")
    if backbone == "vlm":
        from prefstudio.preference.vlm import load_vlm_checkpoint

        return load_vlm_checkpoint(directory, device=device)
    if backbone != "lite":
        raise InvalidInput(f"unknown backbone {backbone!r} in {directory}")
    fields = {k: v for k, v in config["model"].items() if k != "backbone"}
    model = LiteTokenModel(LiteConfig(**fields))
    weights_file = Path(directory) / CHECKPOINT_WEIGHTS
    if not weights_file.is_file():
        raise NotFound(f"{weights_file} is missing")
    state = load_file(str(weights_file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidInput(f"{weights_file} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()
