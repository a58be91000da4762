"""The studio: the whole personalization loop behind one object the CLI and the UI call.

    candidates = studio.generate_candidates("a fox in the snow", n=8)
    studio.judge("alice", "like", candidates[0].sha256)
    report = studio.fit("alice")
    for step in studio.personalize("alice", "a fox in the snow", seed=7):
        ...  # GuidanceProgress per iteration, then a SideBySide

It owns one generator, one image encoder (features for the preference model and the
rewards, cached per image in the history store), the history store, and one kind of
preference model: the fitted user embedding (model A, the default) or the preference-token
model (model B, 000 §3), which reads the person's judged pairs instead of being fitted.
"""
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from prefstudio.encoders.base import ImageEncoder, pil_to_tensor
from prefstudio.errors import InvalidInput, NotFound
from prefstudio.generators.base import GeneratedImage, Generator
from prefstudio.guidance.best_of_n import best_of_n
from prefstudio.guidance.noise_optimization import (
    GuidanceProgress, GuidanceResult, GuidanceSettings, optimise_noise,
)
from prefstudio.preference.user_embedding import (
    FitResult, UserBank, UserEmbeddingModel, fit_user_embedding,
)
from prefstudio.preference.tokens import PairFeatures, TargetFeatures, load_token_model, read_checkpoint_config
from prefstudio.rewards.base import Reward, score_all
from prefstudio.rewards.prompt_consistency import PromptConsistencyReward
from prefstudio.rewards.token_preference import TokenPreferenceReward, check_encoders
from prefstudio.rewards.user_preference import UserPreferenceReward
from prefstudio.store.history import HistoryStore, ImageRecord, Judgment
from prefstudio.validation import validate_prompt, validate_seed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BANK = REPO_ROOT / "checkpoints" / "user_bank_embedded.safetensors"
# The preference models a studio can run, by name; a folder holding a lite preference-token
# checkpoint (prefstudio.train.preference_tokens) is accepted too.
USER_EMBEDDING = "user-embedding"
PREFERENCE_TOKENS = "preference-tokens"
PREFERENCE_MODELS = {USER_EMBEDDING: None,
                     PREFERENCE_TOKENS: REPO_ROOT / "checkpoints" / "preference_tokens_lite"}
TOKEN_HISTORY_PAIRS = 8  # the lite checkpoint was trained on histories of 8 pairs (000: N_ref = 8)
USER_WEIGHT = 0.75  # 000 app. D: the user model's weight in guided generation
MAX_CANDIDATES = 32
MAX_TRAINING_PAIRS = 4000  # like x dislike combinations beyond this are sampled


@dataclass
class FitReport:
    profile: str
    mode: str
    n_pairs: int
    loo_accuracy: float | None
    loo_pairs: int
    seconds: float

    def summary(self) -> str:
        loo = (f"leave-one-out pairwise accuracy {self.loo_accuracy:.0%} over {self.loo_pairs} pairs"
               if self.loo_accuracy is not None else "too few pairs for leave-one-out accuracy")
        return f"{self.profile}: {self.mode} fit on {self.n_pairs} pairs in {self.seconds:.2f} s; {loo}"


@dataclass
class ScoredImage:
    record: ImageRecord
    normalised: dict[str, float]
    raw: dict[str, float]


@dataclass
class SideBySide:
    prompt: str
    seed: int
    weights: dict[str, float]
    baseline: ScoredImage
    personalized: ScoredImage
    best_iteration: int
    iterations_run: int
    stopped: bool


def training_pairs(judgments: list[Judgment]) -> list[tuple[str, str]]:
    """(liked, disliked) image pairs from a history.

    A ≻ B judgments are pairs as they stand. Single 👍/👎 judgments become pairs of
    every liked with every disliked image, same-prompt pairs first (they differ in
    style only, as in Pick-a-Pic); ties and skips carry no order. Later judgments of
    the same image override earlier ones (a person may change their mind)."""
    pairs = [(j.image_a, j.image_b) for j in judgments if j.kind == "pair"]
    verdict = {}
    for j in judgments:
        if j.kind in ("like", "dislike"):
            verdict[j.image_a] = j.kind
    liked = [sha for sha, v in verdict.items() if v == "like"]
    disliked = [sha for sha, v in verdict.items() if v == "dislike"]
    singles = [(a, b) for a in liked for b in disliked]
    if len(singles) > MAX_TRAINING_PAIRS:
        rng = torch.Generator().manual_seed(len(singles))
        keep = torch.randperm(len(singles), generator=rng)[:MAX_TRAINING_PAIRS].tolist()
        singles = [singles[i] for i in sorted(keep)]
    return pairs + singles


class Studio:
    def __init__(self, data_dir: str | Path, generator: Generator | None = None,
                 image_encoder: ImageEncoder | None = None, bank_path: str | Path | None = DEFAULT_BANK,
                 extra_rewards: dict[str, Reward] | None = None, preference_model: str = USER_EMBEDDING):
        self.store = HistoryStore(data_dir)
        if generator is None or image_encoder is None:
            from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder
            from prefstudio.generators.embedded import EmbeddedGenerator
            if generator is None:
                generator = EmbeddedGenerator(resolution=256, text_encoder=MiniLMTextEncoder())
            image_encoder = image_encoder or EmbeddedImageEncoder()
        self.generator = generator
        self.encoder = image_encoder
        self.bank = None
        if bank_path is not None and Path(bank_path).is_file():
            bank = UserBank.load(bank_path)
            if bank.encoder == self.encoder.name:
                self.bank = bank
        self.base_rewards: dict[str, Reward] = {
            "prompt_consistency": PromptConsistencyReward(generator, image_encoder),
            **(extra_rewards or {}),
        }
        self._models: dict[str, tuple[str, Reward]] = {}
        self.model_name = USER_EMBEDDING if preference_model == USER_EMBEDDING else PREFERENCE_TOKENS
        if self.model_name == PREFERENCE_TOKENS:
            self._load_token_model(preference_model)

    def _load_token_model(self, name_or_folder: str) -> None:
        from prefstudio.encoders.embedded import MiniLMTextEncoder

        folder = Path(PREFERENCE_MODELS.get(name_or_folder) or name_or_folder)
        if not folder.is_dir():
            raise InvalidInput(f"preference model must be one of {', '.join(PREFERENCE_MODELS)} or a folder "
                               f"holding a preference-token checkpoint; {str(name_or_folder)!r} is neither")
        if read_checkpoint_config(folder)["model"].get("backbone") != "lite":
            raise InvalidInput(f"{folder} is not a lite preference-token checkpoint; the studio guides "
                               "generation with lite ones (a VLM checkpoint scores through prefstudio.preference.vlm)")
        model = load_token_model(folder).requires_grad_(False)
        text_encoder = getattr(self.generator, "text_encoder", None)
        if getattr(text_encoder, "name", None) != model.config.text_encoder:
            text_encoder = MiniLMTextEncoder()
        check_encoders(model, self.encoder, text_encoder)
        self.token_model, self.text_encoder = model, text_encoder
        # Fits name the checkpoint they were made with: another checkpoint reads them differently.
        self.token_checkpoint = f"{folder.name}:{hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()[:16]}"

    # -- candidates and judgments ----------------------------------------------------
    def generate_candidates(self, prompt: str, n: int = 8, seeds: list[int] | None = None
                            ) -> list[ImageRecord]:
        prompt = validate_prompt(prompt)
        if seeds is None:
            if not 1 <= int(n) <= MAX_CANDIDATES:
                raise InvalidInput(f"number of candidates must lie in [1, {MAX_CANDIDATES}], got {n}")
            seeds = [secrets.randbelow(2**31) for _ in range(int(n))]
        seeds = [validate_seed(s) for s in seeds][:MAX_CANDIDATES]
        generated = self.generator.generate(prompt, seeds)
        return [self.store.add_image(g) for g in generated]

    def judge(self, profile: str, kind: str, image_a: str, image_b: str | None = None) -> Judgment:
        return self.store.record_judgment(profile, kind, image_a, image_b)

    def import_pairs(self, profile: str, path: str | Path, user_id: str | None = None) -> int:
        """Record the A ≻ B judgments of a pair data set file (JSON Lines) into a profile.

        Every line and image is checked before anything is recorded."""
        from prefstudio.preference.pair_data import read_judgments

        self.store.get_profile(profile)
        judgments = [j for j in read_judgments(path) if user_id is None or j.user_id == user_id]
        if not judgments:
            raise InvalidInput(f"{path} has no judgments" + (f" of user {user_id!r}" if user_id else ""))
        imported = [(self.store.import_image(j.liked, j.prompt).sha256,
                     self.store.import_image(j.disliked, j.prompt).sha256) for j in judgments]
        for liked, disliked in imported:
            self.judge(profile, "pair", liked, disliked)
        return len(imported)

    # -- features -------------------------------------------------------------------
    def features(self, shas: list[str]) -> torch.Tensor:
        """[N, D] encoder features of stored images, computed once and cached in the store."""
        cached = self.store.get_features(self.encoder.name, shas)
        missing = [s for s in dict.fromkeys(shas) if s not in cached]
        if missing:
            computed = self.encoder.encode_images([self.store.load_image(s) for s in missing])
            fresh = dict(zip(missing, computed))
            self.store.put_features(self.encoder.name, fresh)
            cached.update(fresh)
        if not shas:
            return torch.zeros(0, self.encoder.dim)
        return torch.stack([cached[s] for s in shas]).float()

    # -- the preference model ---------------------------------------------------------
    def fit(self, profile: str, contrastive: bool = True) -> FitReport:
        """Fit (model A) or read (model B) the profile's taste from its judgments, and store it."""
        start = time.perf_counter()
        pairs = training_pairs(self.store.judgments(profile))
        if self.model_name == PREFERENCE_TOKENS:
            return self._read_history(profile, pairs, start)
        if not pairs and self.bank is None:
            raise InvalidInput(
                f"profile {profile!r} has no like/dislike pair to learn from yet: judge at least one "
                "image 👍 and one 👎 (or pick the better of two), then fit again")
        shas = [s for pair in pairs for s in pair]
        feats = self.features(shas).view(len(pairs), 2, -1) if pairs else torch.zeros(0, 2, self.encoder.dim)
        result: FitResult = fit_user_embedding(feats[:, 0], feats[:, 1], self.bank, self.encoder.name,
                                               pair_images=pairs, contrastive=contrastive)
        tensors, config = result.model.state()
        return self._save_fit(profile, tensors, config, result.mode, result.n_pairs, result.loo_accuracy,
                              result.loo_pairs, list(dict.fromkeys(shas)), start)

    def _read_history(self, profile: str, pairs: list[tuple[str, str]], start: float) -> FitReport:
        """Model B: the history it reads is the latest pairs of distinct images; held-out
        accuracy scores each of them with the others as the history."""
        history, used = [], set()
        for liked, disliked in reversed(pairs):
            if len(history) < TOKEN_HISTORY_PAIRS and not {liked, disliked} & used:
                history.append((liked, disliked))
                used |= {liked, disliked}
        history.reverse()
        shas = [s for pair in history for s in pair]
        feats = self.features(shas).view(len(history), 2, self.encoder.dim)
        prompts = self._prompt_features([liked for liked, _ in history])
        tensors = {"liked": feats[:, 0].contiguous(), "disliked": feats[:, 1].contiguous()}
        if prompts is not None:
            tensors["prompts"] = prompts
        hits = []
        with torch.no_grad():
            for i in range(len(history)):
                rest = [j for j in range(len(history)) if j != i]
                prefix = self.token_model.encode_history(PairFeatures(
                    feats[rest, 0], feats[rest, 1], None if prompts is None else prompts[rest]))
                target_prompts = None if prompts is None else prompts[[i, i]]
                m_like, m_dislike = self.token_model.score_encoded(prefix, TargetFeatures(feats[i], target_prompts))
                odds = m_like - m_dislike
                hits.append(bool(odds[0] > odds[1]))
        config = {"type": PREFERENCE_TOKENS, "version": 1, "checkpoint": self.token_checkpoint,
                  "encoder": self.encoder.name}
        loo = sum(hits) / len(hits) if len(hits) >= 2 else None
        mode = "preference tokens" if history else "preference tokens, no history"
        return self._save_fit(profile, tensors, config, mode, len(history), loo, len(hits) if loo else 0,
                              shas, start)

    def _save_fit(self, profile, tensors, config, mode, n_pairs, loo_accuracy, loo_pairs, judged, start):
        config.update(fitted_at=time.time(), mode=mode, n_pairs=n_pairs, loo_accuracy=loo_accuracy,
                      loo_pairs=loo_pairs, reference_images=judged)
        self.store.save_model(profile, self.model_name, tensors, config)
        self._models.pop(profile.casefold(), None)
        return FitReport(profile, mode, n_pairs, loo_accuracy, loo_pairs, time.perf_counter() - start)

    def _prompt_features(self, shas: list[str]) -> torch.Tensor | None:
        """Prompt features of stored images (the model B reads prompts), or None if it reads none."""
        if not self.token_model.config.text_dim:
            return None
        if not shas:
            return torch.zeros(0, self.token_model.config.text_dim)
        return self.text_encoder.encode([self.store.image_record(s).prompt or "" for s in shas]).float()

    def fit_status(self, profile: str) -> dict | None:
        """The stored fit's config (mode, pairs, leave-one-out accuracy), or None."""
        stored = self.store.load_model(profile, self.model_name)
        return None if stored is None else stored[1]

    def user_reward(self, profile: str) -> Reward:
        stored = self.store.load_model(profile, self.model_name)
        if stored is None:
            raise NotFound(f"profile {profile!r} has no fitted taste yet: judge some images and press Fit")
        tensors, config = stored
        key = profile.casefold()
        fingerprint = config.get("fitted_at")
        cached = self._models.get(key)
        if cached is None or cached[0] != fingerprint:
            if config.get("encoder") != self.encoder.name:
                raise InvalidInput(f"profile {profile!r} was fitted on {config.get('encoder')!r} features; this "
                                   f"studio runs {self.encoder.name!r}: fit again here")
            reference = [s for s in config.get("reference_images") or [] if self._has_image(s)]
            reference_features = self.features(reference) if reference else None
            if self.model_name == USER_EMBEDDING:
                reward = UserPreferenceReward(UserEmbeddingModel.from_state(tensors, config), self.encoder,
                                              reference_features)
            else:
                if config.get("checkpoint") != self.token_checkpoint:
                    raise InvalidInput(f"profile {profile!r} was read by preference-token checkpoint "
                                       f"{config.get('checkpoint')!r}; this studio runs {self.token_checkpoint!r}: "
                                       "fit again here")
                history = PairFeatures(tensors["liked"], tensors["disliked"], tensors.get("prompts"))
                reward = TokenPreferenceReward(self.token_model, self.encoder, self.text_encoder, history,
                                               reference_features, self._prompt_features(reference))
            cached = (fingerprint, reward)
            self._models[key] = cached
        return cached[1]

    def _has_image(self, sha: str) -> bool:
        try:
            self.store.image_record(sha)
            return True
        except NotFound:
            return False

    def rewards(self, profile: str | None) -> dict[str, Reward]:
        """Every reward on offer, the user's model first (if fitted)."""
        rewards = {}
        if profile is not None:
            try:
                rewards["user"] = self.user_reward(profile)
            except NotFound:
                pass
        return rewards | self.base_rewards

    def default_weights(self) -> dict[str, float]:
        return {"user": USER_WEIGHT} | {name: 0.25 for name in self.base_rewards}

    @torch.no_grad()
    def score_images(self, profile: str | None, shas: list[str]) -> list[dict[str, float]]:
        """Normalised score of each stored image under every reward (prompt-aware)."""
        rewards = self.rewards(profile)
        out = []
        for sha in shas:
            record = self.store.image_record(sha)
            pixels = pil_to_tensor([self.store.load_image(sha)])
            contexts = {n: r.prepare(record.prompt or "") for n, r in rewards.items()} if record.prompt else {}
            usable = {n: r for n, r in rewards.items() if n in contexts}
            _, normalised = score_all(usable, contexts, pixels)
            out.append({n: float(v[0]) for n, v in normalised.items()})
        return out

    # -- personalized generation ------------------------------------------------------
    def personalize(self, profile: str, prompt: str, seed: int | None = None,
                    weights: dict[str, float] | None = None, iterations: int = 30,
                    method: str = "guidance", candidates: int = 8,
                    stop: threading.Event | None = None) -> Iterator[GuidanceProgress | SideBySide]:
        """Baseline (same seed, no personalization) and personalized, side by side.

        Yields GuidanceProgress per iteration (method "guidance"), then one SideBySide."""
        prompt = validate_prompt(prompt)
        seed = secrets.randbelow(2**31) if seed is None else validate_seed(seed)
        rewards = self.rewards(profile)
        if "user" not in rewards:
            raise NotFound(f"profile {profile!r} has no fitted taste yet: judge some images and press Fit")
        weights = dict(self.default_weights() if weights is None else weights)
        if method not in ("guidance", "best_of_n"):
            raise InvalidInput(f"method must be 'guidance' or 'best_of_n', got {method!r}")

        if method == "guidance":
            result = None
            for item in optimise_noise(self.generator, prompt, seed, rewards, weights,
                                       GuidanceSettings(iterations=int(iterations)), stop):
                if isinstance(item, GuidanceResult):
                    result = item
                else:
                    yield item
        else:
            seeds = [seed] + [validate_seed((seed + 7919 * i) % 2**32) for i in range(1, int(candidates))]
            result = best_of_n(self.generator, prompt, seeds, rewards, weights)
        baseline = self.generator.generate(prompt, [seed])[0]
        contexts = {n: r.prepare(prompt) for n, r in rewards.items()}
        with torch.no_grad():
            # Both scored from their 8-bit PNG pixels: what the person sees is what is scored.
            pixels = pil_to_tensor([baseline.image, result.image])
            raw, normalised = score_all(rewards, contexts, pixels)

        def scored(i: int, generated: GeneratedImage) -> ScoredImage:
            record = self.store.add_image(generated)
            return ScoredImage(record, {n: float(v[i]) for n, v in normalised.items()},
                               {n: float(v[i]) for n, v in raw.items()})

        params = self.generator.params() | {
            "personalized_for": profile, "method": method, "weights": weights,
            "iterations": int(iterations), "best_iteration": result.best_iteration}
        personalized = GeneratedImage(result.image, prompt, seed, self.generator.name, params)
        yield SideBySide(prompt, seed, weights, scored(0, baseline), scored(1, personalized),
                         result.best_iteration, result.iterations_run, result.stopped)

    def personalize_once(self, *args, **kwargs) -> SideBySide:
        last = None
        for last in self.personalize(*args, **kwargs):
            pass
        return last

    # -- profiles -----------------------------------------------------------------------
    def export_profile(self, profile: str, path: str | Path) -> Path:
        from prefstudio.store.profile_file import export_profile
        return export_profile(self.store, profile, path)

    def import_profile(self, path: str | Path, new_name: str | None = None):
        from prefstudio.store.profile_file import import_profile
        return import_profile(self.store, path, new_name, encoder_dims={self.encoder.name: self.encoder.dim})


def build_studio(data_dir: str | Path, model: str = "auto", device: str | None = None,
                 preference_model: str = USER_EMBEDDING) -> Studio:
    """The studio for a generator spec ('embedded', 'auto', a known name, a hub id or a folder)
    and a preference model ('user-embedding', 'preference-tokens' or a token checkpoint folder)."""
    from prefstudio.generators import EMBEDDED, default_generator_spec, load_generator

    spec = default_generator_spec() if model == "auto" else model
    if spec == EMBEDDED:  # the embedded generator, steered by the MiniLM prompt encoder
        return Studio(data_dir, preference_model=preference_model)
    return Studio(data_dir, generator=load_generator(spec, device=device), preference_model=preference_model)
