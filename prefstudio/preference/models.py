"""The preference models the studio serves, behind the `PreferenceModel` interface.

- `UserEmbeddingPreference`: a user embedding fitted over frozen image features, cold-started
  from a user bank (`user_embedding.fit_user_embedding`).
- `PreferenceTokens`: the lite preference-token model (000 §3); nothing is fitted per person,
  it reads their judged pairs as a history.
- `AutoPreference`: both, combined per person; the default.

`build_preference_model` turns a name (or a checkpoint folder) into one of them.
"""
import hashlib
import math
from pathlib import Path

import torch

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
                  "bank posterior": "a short history: a mix of the bank's users who explain your judgments",
                  "bank posterior + personal": "the bank's users who explain you plus a personal offset",
                  "free": "fitted from your judgments alone"}[result.mode]
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
class TokenTaste(Taste):
    """A person's history read by the token model. A history longer than the model's window
    is split into interleaved chunks of at most `window` pairs, each read as one prefix, and
    their log-odds averaged: every judged pair counts, and each prefix looks like training."""

    def __init__(self, model: LiteTokenModel, text_encoder, history: PairFeatures, window: int,
                 config: dict):
        self.model, self.text_encoder, self.history, self.config = model, text_encoder, history, config
        n = history.liked.shape[0]
        chunks = max(1, math.ceil(n / window))
        self.prefixes = []
        with torch.no_grad():
            for c in range(chunks):
                rows = list(range(c, n, chunks))
                prompts = None if history.prompts is None else history.prompts[rows]
                self.prefixes.append(model.encode_history(
                    PairFeatures(history.liked[rows], history.disliked[rows], prompts)))

    def prompt_context(self, prompts: list[str]) -> torch.Tensor | None:
        return self.text_encoder.encode(prompts).float() if self.model.config.text_dim else None

    def log_odds(self, features: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
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
        return tensors, dict(self.config)


class PreferenceTokens(PreferenceModel):
    name = PREFERENCE_TOKENS
    description = "the preference-token model, which reads your judged pairs"
    window = 8  # pairs per prefix: the lite checkpoint was trained on histories of 8 (000: N_ref = 8)
    max_pairs = 32  # the latest pairs read, in chunks of `window`

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
        return TokenTaste(self.model, self.text_encoder, history, self.window, config)

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
        prompts = self._prompt_features(judged.prompts([liked for liked, _ in pairs]))
        history = PairFeatures(feats[:, 0].contiguous(), feats[:, 1].contiguous(), prompts)
        held_out = {}
        with torch.no_grad():
            for row, index in enumerate(chosen):
                rest = [r for r in range(len(chosen)) if r != row]
                if not rest:
                    break
                taste = self._taste(PairFeatures(history.liked[rest], history.disliked[rest],
                                                 None if prompts is None else prompts[rest]))
                context = None if prompts is None else prompts[[row]]
                odds = taste.log_odds(feats[row], context)
                held_out[index] = float(odds[0] - odds[1])
        mode = "preference tokens" if pairs else "preference tokens, no history"
        reason = (f"reads your latest {len(pairs)} pairs of distinct images" if pairs
                  else "no 👍/👎 pair judged yet: reads an empty history")
        return self._taste(history), FitOutcome(mode, len(pairs), reason, held_out)

    def load(self, tensors: dict[str, torch.Tensor], config: dict) -> TokenTaste:
        if config.get("checkpoint") != self.checkpoint:
            raise InvalidInput(f"this taste was read by preference-token checkpoint {config.get('checkpoint')!r}; "
                               f"this studio runs {self.checkpoint!r}: fit again here")
        if config.get("encoder") != self.image_encoder:
            raise InvalidInput(f"this taste was read from {config.get('encoder')!r} features; this studio runs "
                               f"{self.image_encoder!r}: fit again here")
        return self._taste(PairFeatures(tensors["liked"].float(), tensors["disliked"].float(),
                                        None if "prompts" not in tensors else tensors["prompts"].float()))


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
MAX_WEIGHT_ROWS = 64


def read_auto_weights(path: str | Path, members: list[str]) -> list[tuple[int, dict[str, float]]]:
    """Stacking weights learned on validation users (bench/auto_weights.py): rows of
    (fewest pairs the row applies to, weight per member), by history length. Validated."""
    path = Path(path)
    if path.stat().st_size > 1_000_000:
        raise InvalidInput(f"{path} is too large to be a weights file")
    import json

    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not JSON: {error}") from None
    rows = data.get("by_history") if isinstance(data, dict) else None
    if data.get("format") != "prefstudio-auto-weights" or not isinstance(rows, list) or not rows \
            or len(rows) > MAX_WEIGHT_ROWS:
        raise InvalidInput(f"{path} is not a prefstudio-auto-weights file")
    out = []
    for row in rows:
        weights = row.get("weights") if isinstance(row, dict) else None
        min_pairs = row.get("min_pairs") if isinstance(row, dict) else None
        if not isinstance(min_pairs, int) or isinstance(min_pairs, bool) or min_pairs < 0 \
                or not isinstance(weights, dict) or set(weights) != set(members) \
                or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights.values()) \
                or sum(weights.values()) <= 0:
            raise InvalidInput(f"{path}: each row needs min_pairs (an integer ≥ 0) and a weight ≥ 0 for each of "
                               f"{', '.join(members)}")
        out.append((min_pairs, {name: float(w) for name, w in weights.items()}))
    return sorted(out, key=lambda row: row[0])


class AutoPreference(PreferenceModel):
    """The user embedding and the token model, combined per person: each member's log-odds are
    standardised over the images the person judged, then summed with stacking weights that
    depend on the history's length (learned on validation users, read as data from the token
    checkpoint's `auto_weights.json`; equal weights without one). On a history of 0–1 pairs
    there is no spread to standardise by: the user embedding serves."""

    name = AUTO
    description = "the user embedding and the preference-token model, combined for you"

    def __init__(self, members: list[PreferenceModel],
                 weights_by_history: list[tuple[int, dict[str, float]]] | None = None):
        self.members = {m.name: m for m in members}
        self.weights_by_history = weights_by_history

    def _weights(self, n_pairs: int) -> tuple[dict[str, float], str]:
        if not self.weights_by_history:
            return {name: 1.0 / len(self.members) for name in self.members}, "combined with equal weights"
        rows = [w for min_pairs, w in self.weights_by_history if min_pairs <= n_pairs] or [self.weights_by_history[0][1]]
        weights = rows[-1]
        total = sum(weights.values())
        shown = ", ".join(f"{name} {w / total:.2f}" for name, w in weights.items())
        return ({name: w / total for name, w in weights.items()},
                f"combined with weights learned on validation users for histories of this length ({shown})")

    def fit(self, judged: JudgedPairs) -> tuple[Taste, FitOutcome]:
        fitted = {name: model.fit(judged) for name, model in self.members.items()}
        images = judged.images()
        if len(images) < 2:
            name = USER_EMBEDDING if USER_EMBEDDING in fitted else next(iter(fitted))
            taste, outcome = fitted[name]
            weights, scales = {name: 1.0}, {name: 1.0}
            members = {name: taste}
            reason = f"{name} alone ({outcome.reason}): too few judged images to combine models"
        else:
            features = judged.features(images)
            prompts = judged.prompts(images)
            members = {name: taste for name, (taste, _) in fitted.items()}
            scales = {}
            with torch.no_grad():
                for name, taste in members.items():
                    spread = float(taste.log_odds(features, taste.prompt_context(prompts)).std())
                    scales[name] = spread if math.isfinite(spread) and spread > 1e-6 else 1.0
            weights, how = self._weights(len(judged.pairs))
            reason = "; ".join(f"{name}: {outcome.reason}" + (f", leave-one-out {outcome.loo_accuracy:.0%}"
                                                               if outcome.loo_accuracy is not None else "")
                               for name, (_, outcome) in fitted.items())
            if len(members) == 1:
                how = "the only model that reads this image encoder's features"
            reason = f"{how} — " + reason
        held_out = {}
        for index in set.intersection(*(set(fitted[name][1].held_out) for name in members)):
            held_out[index] = sum(weights[name] / scales[name] * fitted[name][1].held_out[index] for name in members)
        mode = " + ".join(fitted[name][1].mode for name in members)
        n_pairs = max(fitted[name][1].n_pairs for name in members)
        config = {"type": AUTO, "version": 1}
        return CombinedTaste(members, weights, scales, config), FitOutcome(mode, n_pairs, reason, held_out)

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
                           bank: UserBank | None) -> PreferenceModel:
    """'auto' (default), 'user-embedding', 'preference-tokens', or a lite token checkpoint folder."""
    if name_or_folder == USER_EMBEDDING:
        return UserEmbeddingPreference(image_encoder, bank)
    if name_or_folder == AUTO:
        members: list[PreferenceModel] = [UserEmbeddingPreference(image_encoder, bank)]
        # The shipped token checkpoint reads the embedded encoder's features; with another
        # encoder auto serves the user embedding alone rather than refusing to start.
        if read_checkpoint_config(DEFAULT_TOKEN_CHECKPOINT)["model"].get("image_encoder") != image_encoder:
            return AutoPreference(members)
        members.append(PreferenceTokens(DEFAULT_TOKEN_CHECKPOINT, image_encoder, text_encoder))
        weights_file = DEFAULT_TOKEN_CHECKPOINT / AUTO_WEIGHTS_FILE
        weights = read_auto_weights(weights_file, [m.name for m in members]) if weights_file.exists() else None
        return AutoPreference(members, weights)
    folder = DEFAULT_TOKEN_CHECKPOINT if name_or_folder == PREFERENCE_TOKENS else name_or_folder
    return PreferenceTokens(folder, image_encoder, text_encoder)
