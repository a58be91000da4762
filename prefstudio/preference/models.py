"""The preference models the studio serves, behind the `PreferenceModel` interface.

- `UserEmbeddingPreference`: a user embedding fitted over frozen image features, cold-started
  from a user bank (`user_embedding.fit_user_embedding`).
- `PreferenceTokens`: the lite preference-token model (000 §3); nothing is fitted per person,
  it reads their judged pairs as a history.
- `AutoPreference`: both, combined per person; the default.

`build_preference_model` turns a name (or a checkpoint folder) into one of them.
"""
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prefstudio.errors import InvalidInput, echo
from prefstudio.preference.model import FitOutcome, JudgedPairs, PreferenceModel, Taste
from prefstudio.preference.tokens import (
    LiteTokenModel, PairFeatures, TargetFeatures, load_token_model, read_checkpoint_config,
)
from prefstudio.preference.user_embedding import UserBank, UserEmbeddingModel, fit_user_embedding
from prefstudio.shipped import CHECKPOINTS

DEFAULT_TOKEN_CHECKPOINT = CHECKPOINTS / "preference_tokens_lite"
USER_EMBEDDING = "user-embedding"
PREFERENCE_TOKENS = "preference-tokens"
AUTO = "auto"
PREFERENCE_MODEL_NAMES = (AUTO, USER_EMBEDDING, PREFERENCE_TOKENS)


# ---- the user embedding ------------------------------------------------------------------
class UserEmbeddingPreference(PreferenceModel):
    name = USER_EMBEDDING
    description = "a fitted user embedding over frozen image features, cold-started from the user bank"

    def __init__(self, encoder: str, bank: UserBank | None):
        self.encoder, self.bank = encoder, bank

    def fit(self, judged: JudgedPairs) -> tuple[UserEmbeddingModel, FitOutcome]:
        pairs = judged.pairs
        if not pairs and self.bank is None:
            raise InvalidInput("no like/dislike pair to learn from yet: judge at least one image 👍 and one 👎 "
                               "(or pick the better of two), then fit again")
        shas = [s for pair in pairs for s in pair]
        feats = judged.features(shas).view(len(pairs), 2, -1) if pairs else torch.zeros(0, 2, 1)
        result = fit_user_embedding(feats[:, 0], feats[:, 1], self.bank, self.encoder, pair_images=pairs)
        reason = {"bank average": "no 👍/👎 pair judged yet: the average user of the bank",
                  "bank posterior": "few judged images yet: a mix of the bank's users who explain your judgments",
                  "bank posterior + personal": "the bank's users who explain you plus a personal offset",
                  "free": "fitted from your judgments alone: they predict your held-out pairs clearly better than "
                          "the bank's users do"}[result.mode]
        if self.bank is None:  # no cold start in this feature space: say so, and how to get one
            reason = (f"no user bank reads {self.encoder} features, so there is no cold start: fitted from your "
                      "judgments alone (`python -m prefstudio bank --images FOLDER` builds one for this encoder)")
        return result.model, FitOutcome(result.mode, result.n_pairs, reason, result.held_out)

    def load(self, tensors: dict[str, torch.Tensor], config: dict) -> UserEmbeddingModel:
        if config.get("encoder") != self.encoder:
            raise InvalidInput(f"this taste was fitted on {config.get('encoder')!r} features; this studio runs "
                               f"{self.encoder!r}: fit again here")
        return UserEmbeddingModel.from_state(tensors, config)


# ---- preference tokens ---------------------------------------------------------------------
def select(history: PairFeatures, rows: list[int]) -> PairFeatures:
    """The pairs `rows` of a history."""
    return PairFeatures(history.liked[rows], history.disliked[rows],
                        None if history.prompts is None else history.prompts[rows],
                        None if history.disliked_prompts is None else history.disliked_prompts[rows])


class TokenTaste(Taste):
    """A person's history read by the token model. A history longer than the checkpoint was
    trained to read at once (`window`, its `max_history`) is split into interleaved chunks of at
    most `window` pairs, each read as one prefix, and their log-odds averaged: every judged pair
    counts, and each prefix looks like training."""

    def __init__(self, model: LiteTokenModel, text_encoder, history: PairFeatures, window: int,
                 config: dict):
        self.model, self.text_encoder, self.history, self.config = model, text_encoder, history, config
        n = history.liked.shape[0]
        if n == 0 and not model.config.preference_tokens:
            raise InvalidInput("this preference-token checkpoint has no preference tokens: it reads only your "
                               "judged pairs, and none is judged yet; judge a 👍/👎 pair first")
        chunks = max(1, math.ceil(n / window))
        self.prefixes = []
        with torch.no_grad():
            for c in range(chunks):
                rows = list(range(c, n, chunks))
                self.prefixes.append(model.encode_history(select(history, rows)))

    def prompt_context(self, prompts: list[str]) -> torch.Tensor | None:
        return self.text_encoder.encode(prompts).float() if self.model.config.text_dim else None

    def log_odds(self, features: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if features.shape[0] == 0:  # attention over no targets has no shape to give
            return features.new_zeros(0)
        prompts = None if context is None else context.expand(features.shape[0], -1)
        odds = []
        for prefix in self.prefixes:
            m_like, m_dislike = self.model.score_encoded(prefix, TargetFeatures(features, prompts))
            odds.append(m_like - m_dislike)
        return torch.stack(odds).mean(0)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {"liked": self.history.liked.contiguous(), "disliked": self.history.disliked.contiguous()}
        if self.history.prompts is not None:
            tensors["prompts"] = self.history.prompts.contiguous()
        if self.history.disliked_prompts is not None:
            tensors["disliked_prompts"] = self.history.disliked_prompts.contiguous()
        return tensors, dict(self.config)


class PreferenceTokens(PreferenceModel):
    name = PREFERENCE_TOKENS
    description = "the preference-token model, which reads your judged pairs"
    max_pairs = 32  # the latest pairs read, in chunks of the checkpoint's `max_history`

    def __init__(self, folder: str | Path, image_encoder: str, text_encoder):
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInput(f"preference model must be one of {', '.join(PREFERENCE_MODEL_NAMES)} or a folder "
                               f"holding a preference-token checkpoint; {echo(str(folder))} is neither")
        if read_checkpoint_config(folder)["model"].get("backbone") != "lite":
            raise InvalidInput(f"{folder} is not a lite preference-token checkpoint; the studio guides "
                               "generation with lite ones (a VLM checkpoint scores through prefstudio.preference.vlm)")
        model = load_token_model(folder).requires_grad_(False)
        config = model.config
        if config.text_dim and getattr(text_encoder, "name", None) != config.text_encoder:
            from prefstudio.encoders.embedded import MiniLMTextEncoder  # the encoder the shipped ones read

            text_encoder = MiniLMTextEncoder()
        if config.image_encoder != image_encoder:
            raise InvalidInput(f"the preference-token checkpoint reads {config.image_encoder!r} image features; "
                               f"this studio encodes images with {image_encoder!r}")
        if config.text_dim and config.text_encoder != getattr(text_encoder, "name", None):
            raise InvalidInput(f"the preference-token checkpoint reads {config.text_encoder!r} prompt features; "
                               f"this studio encodes prompts with {getattr(text_encoder, 'name', None)!r}")
        self.model, self.text_encoder, self.image_encoder = model, text_encoder, image_encoder
        # Fits name the checkpoint they were made with: another checkpoint reads them differently.
        digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]
        self.checkpoint = f"{folder.name}:{digest}"

    def _prompt_features(self, prompts: list[str]) -> torch.Tensor | None:
        if not self.model.config.text_dim:
            return None
        if not prompts:
            return torch.zeros(0, self.model.config.text_dim)
        return self.text_encoder.encode(prompts).float()

    def _taste(self, history: PairFeatures) -> TokenTaste:
        config = {"type": PREFERENCE_TOKENS, "version": 1, "checkpoint": self.checkpoint,
                  "encoder": self.image_encoder}
        return TokenTaste(self.model, self.text_encoder, history, self.model.config.max_history, config)

    def fit(self, judged: JudgedPairs) -> tuple[TokenTaste, FitOutcome]:
        """The history it reads is the latest pairs of distinct images; held-out margins score
        each of them with the others as the history."""
        chosen, used = [], set()
        for index in range(len(judged.pairs) - 1, -1, -1):
            liked, disliked = judged.pairs[index]
            if len(chosen) < self.max_pairs and not {liked, disliked} & used:
                chosen.append(index)
                used |= {liked, disliked}
        chosen.reverse()
        pairs = [judged.pairs[i] for i in chosen]
        shas = [s for pair in pairs for s in pair]
        feats = judged.features(shas).view(len(pairs), 2, -1) if pairs else torch.zeros(0, 2, 1)
        # Each image with its own prompt: a 👍 and a 👎 of different prompts are paired too.
        prompts = self._prompt_features(judged.prompts([liked for liked, _ in pairs]))
        disliked_prompts = self._prompt_features(judged.prompts([disliked for _, disliked in pairs]))
        history = PairFeatures(feats[:, 0].contiguous(), feats[:, 1].contiguous(), prompts, disliked_prompts)
        held_out = {}
        with torch.no_grad():
            for row, index in enumerate(chosen):
                rest = [r for r in range(len(chosen)) if r != row]
                if not rest:
                    break
                taste = self._taste(select(history, rest))
                context = None if prompts is None else torch.cat([prompts[[row]], disliked_prompts[[row]]])
                odds = taste.log_odds(feats[row], context)
                held_out[index] = float(odds[0] - odds[1])
        mode = "preference tokens" if pairs else "preference tokens, no history"
        reason = ("reads your latest pair of distinct images" if len(pairs) == 1
                  else f"reads your latest {len(pairs)} pairs of distinct images" if pairs
                  else "no 👍/👎 pair judged yet: reads an empty history")
        return self._taste(history), FitOutcome(mode, len(pairs), reason, held_out)

    def load(self, tensors: dict[str, torch.Tensor], config: dict) -> TokenTaste:
        if config.get("checkpoint") != self.checkpoint:
            raise InvalidInput(f"this taste was read by preference-token checkpoint {config.get('checkpoint')!r}; "
                               f"this studio runs {self.checkpoint!r}: fit again here")
        if config.get("encoder") != self.image_encoder:
            raise InvalidInput(f"this taste was read from {config.get('encoder')!r} features; this studio runs "
                               f"{self.image_encoder!r}: fit again here")
        optional = {name: tensors[name].float() if name in tensors else None for name in ("prompts", "disliked_prompts")}
        return self._taste(PairFeatures(tensors["liked"].float(), tensors["disliked"].float(),
                                        optional["prompts"], optional["disliked_prompts"]))


# ---- auto ----------------------------------------------------------------------------------
class CombinedTaste(Taste):
    """A weighted sum of member tastes' log-odds, each divided by its spread over the person's
    judged images so that no member wins by having the larger scale."""

    def __init__(self, members: dict[str, Taste], weights: dict[str, float], scales: dict[str, float],
                 config: dict):
        self.members, self.weights, self.scales, self.config = members, weights, scales, config

    def prompt_context(self, prompts: list[str]) -> dict:
        return {name: taste.prompt_context(prompts) for name, taste in self.members.items()}

    def log_odds(self, features: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        context = context or {}
        return sum(self.weights[name] / self.scales[name] * taste.log_odds(features, context.get(name))
                   for name, taste in self.members.items())

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, config = {}, dict(self.config)
        config["members"] = {}
        for name, taste in self.members.items():
            member_tensors, member_config = taste.state()
            tensors |= {f"{name}.{key}": value for key, value in member_tensors.items()}
            config["members"][name] = {"config": member_config, "weight": self.weights[name],
                                       "scale": self.scales[name]}
        return tensors, config


AUTO_WEIGHTS_FILE = "auto_weights.json"
AUTO_WEIGHTS_FORMAT = "prefstudio-auto-weights"
MAX_WEIGHT_ROWS = 64


@dataclass(frozen=True)
class StackingRow:
    """How auto combines its members for histories of at least `min_pairs` pairs. A member's
    log-odds g, divided by their spread s over the person's judged images, are calibrated to
    κ·g/s (`calibration`); the combination is Σ max(0, w + v·δ)·κ·g/s, with w the member's
    `weight`, v its `by_fit` and δ how much better than the members' average it predicted
    the person's own held-out pairs (mean log-likelihood of κ·held-out margin/s)."""

    min_pairs: int
    calibration: dict[str, float]
    weight: dict[str, float]
    by_fit: dict[str, float]


def member_fit(held_out: dict[str, list[float]], calibration: dict[str, float]) -> dict[str, float]:
    """δ per member: its mean held-out log-likelihood (margins already divided by the member's
    spread) minus the members' average; 0 for all when no pair was held out."""
    if not held_out or not all(held_out.values()):
        return {name: 0.0 for name in calibration}
    likelihood = {name: float(F.logsigmoid(calibration[name] * torch.tensor(margins, dtype=torch.float64)).mean())
                  for name, margins in held_out.items()}
    average = sum(likelihood.values()) / len(likelihood)
    return {name: value - average for name, value in likelihood.items()}


def stacking_weights(row: StackingRow, held_out: dict[str, list[float]]) -> dict[str, float]:
    """Each member's weight on its standardised log-odds g/s for this person (see StackingRow)."""
    delta = member_fit(held_out, row.calibration)
    return {name: max(0.0, row.weight[name] + row.by_fit[name] * delta[name]) * row.calibration[name]
            for name in row.weight}


def read_auto_weights(path: str | Path, members: list[str]) -> list[StackingRow]:
    """Stacking rows learned on validation users (bench/auto_weights.py), by history length. Validated."""
    path = Path(path)
    if path.stat().st_size > 1_000_000:
        raise InvalidInput(f"{path} is too large to be a weights file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not JSON: {error}") from None
    rows = data.get("by_history") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != AUTO_WEIGHTS_FORMAT or data.get("version") != 2 \
            or not isinstance(rows, list) or not rows or len(rows) > MAX_WEIGHT_ROWS:
        raise InvalidInput(f"{path} is not a {AUTO_WEIGHTS_FORMAT} file (version 2)")

    def numbers(row, key, low):
        values = row.get(key) if isinstance(row, dict) else None
        if not isinstance(values, dict) or set(values) != set(members) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low
                for v in values.values()):
            return None
        return {name: float(v) for name, v in values.items()}

    out = []
    for row in rows:
        min_pairs = row.get("min_pairs") if isinstance(row, dict) else None
        calibration, weight = numbers(row, "calibration", 0.0), numbers(row, "weight", 0.0)
        by_fit = numbers(row, "by_fit", -math.inf)
        if not isinstance(min_pairs, int) or isinstance(min_pairs, bool) or min_pairs < 0 \
                or calibration is None or weight is None or by_fit is None \
                or sum(weight.values()) <= 0 or min(calibration.values()) <= 0:
            raise InvalidInput(f"{path}: each row needs min_pairs (an integer ≥ 0), a calibration > 0, a weight ≥ 0 "
                               f"(not all 0) and a by_fit number for each of {', '.join(members)}")
        out.append(StackingRow(min_pairs, calibration, weight, by_fit))
    return sorted(out, key=lambda row: row.min_pairs)


class AutoPreference(PreferenceModel):
    """The user embedding and the token model, combined per person: each member's log-odds are
    standardised over the images the person judged, calibrated, and summed with weights that
    depend on the history's length and on how well each member predicted the person's own
    held-out pairs (`StackingRow`; learned on validation users, read as data from the token
    checkpoint's `auto_weights.json`; equal weights without one). With fewer than two judged
    images there is no spread to standardise by: the user embedding serves."""

    name = AUTO
    description = "the user embedding and the preference-token model, combined for you"

    def __init__(self, members: list[PreferenceModel], rows: list[StackingRow] | None = None):
        self.members = {m.name: m for m in members}
        self.rows = rows

    def row_for(self, n_pairs: int) -> StackingRow:
        if not self.rows:
            ones = {name: 1.0 for name in self.members}
            return StackingRow(0, ones, {name: 1.0 / len(self.members) for name in self.members},
                               {name: 0.0 for name in self.members})
        fitting = [row for row in self.rows if row.min_pairs <= n_pairs]
        return fitting[-1] if fitting else self.rows[0]

    def fit(self, judged: JudgedPairs) -> tuple[Taste, FitOutcome]:
        fitted = {name: model.fit(judged) for name, model in self.members.items()}
        parts = {name: outcome for name, (_, outcome) in fitted.items()}
        images = judged.images()
        if len(images) < 2 or len(fitted) == 1:
            name = USER_EMBEDDING if USER_EMBEDDING in fitted else next(iter(fitted))
            taste, outcome = fitted[name]
            why = ("the only model that reads this image encoder's features" if len(fitted) == 1
                   else "too few judged images to combine models")
            reason = f"{name} alone ({outcome.reason}): {why}"
            return (CombinedTaste({name: taste}, {name: 1.0}, {name: 1.0}, {"type": AUTO, "version": 1}),
                    FitOutcome(outcome.mode, outcome.n_pairs, reason, dict(outcome.held_out), parts))
        features, prompts = judged.features(images), judged.prompts(images)
        members = {name: taste for name, (taste, _) in fitted.items()}
        scales = {}
        with torch.no_grad():
            for name, taste in members.items():
                spread = float(taste.log_odds(features, taste.prompt_context(prompts)).std())
                scales[name] = spread if math.isfinite(spread) and spread > 1e-6 else 1.0
        common = sorted(set.intersection(*(set(outcome.held_out) for outcome in parts.values())))
        held_out = {name: [parts[name].held_out[i] / scales[name] for i in common] for name in members}
        row = self.row_for(len(judged.pairs))
        weights = stacking_weights(row, held_out)
        if sum(weights.values()) <= 0:  # every weight clipped: fall back on the row's own weights
            weights = {name: row.weight[name] * row.calibration[name] for name in members}
        total = sum(weights.values())
        share = ", ".join(f"{name} {w / total:.0%}" for name, w in weights.items())
        how = (f"combined with weights learned on validation users for histories of {row.min_pairs}+ pairs, "
               f"adjusted by how well each model predicted your {len(common)} held-out pairs ({share})"
               if self.rows else f"combined with equal weights ({share})")
        reason = f"{how} — " + "; ".join(
            f"{name}: {outcome.reason}" + (f", leave-one-out {outcome.loo_accuracy:.0%} over {outcome.loo_pairs} pairs"
                                           if outcome.loo_accuracy is not None else "")
            for name, outcome in parts.items())
        combined_held_out = {i: sum(weights[name] / scales[name] * parts[name].held_out[i] for name in members)
                             for i in common}
        mode = " + ".join(outcome.mode for outcome in parts.values())
        n_pairs = max(outcome.n_pairs for outcome in parts.values())
        return (CombinedTaste(members, weights, scales, {"type": AUTO, "version": 1}),
                FitOutcome(mode, n_pairs, reason, combined_held_out, parts))

    def load(self, tensors: dict[str, torch.Tensor], config: dict) -> CombinedTaste:
        if config.get("type") != AUTO or not isinstance(config.get("members"), dict) or not config["members"]:
            raise InvalidInput("not a combined (auto) taste")
        members, weights, scales = {}, {}, {}
        for name, entry in config["members"].items():
            if name not in self.members:
                raise InvalidInput(f"this taste combines {name!r}, which this studio does not run: fit again here")
            prefix = f"{name}."
            members[name] = self.members[name].load(
                {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}, entry["config"])
            weights[name], scales[name] = float(entry["weight"]), float(entry["scale"])
        return CombinedTaste(members, weights, scales, {k: v for k, v in config.items() if k != "members"})


def build_preference_model(name_or_folder: str, image_encoder: str, text_encoder,
                           bank: UserBank | None, token_checkpoint: str | Path = DEFAULT_TOKEN_CHECKPOINT
                           ) -> PreferenceModel:
    """'auto' (default), 'user-embedding', 'preference-tokens', or a lite token checkpoint folder.
    `token_checkpoint` is the token model that 'auto' and 'preference-tokens' serve (the
    benchmark measures other checkpoints through it); auto's stacking rows come with it."""
    token_checkpoint = Path(token_checkpoint)
    if name_or_folder == USER_EMBEDDING:
        return UserEmbeddingPreference(image_encoder, bank)
    if name_or_folder == AUTO:
        members: list[PreferenceModel] = [UserEmbeddingPreference(image_encoder, bank)]
        # The shipped token checkpoint reads the embedded encoder's features; with another
        # encoder auto serves the user embedding alone rather than refusing to start.
        if read_checkpoint_config(token_checkpoint)["model"].get("image_encoder") != image_encoder:
            return AutoPreference(members)
        members.append(PreferenceTokens(token_checkpoint, image_encoder, text_encoder))
        weights_file = token_checkpoint / AUTO_WEIGHTS_FILE
        rows = read_auto_weights(weights_file, [m.name for m in members]) if weights_file.exists() else None
        return AutoPreference(members, rows)
    folder = token_checkpoint if name_or_folder == PREFERENCE_TOKENS else name_or_folder
    return PreferenceTokens(folder, image_encoder, text_encoder)
