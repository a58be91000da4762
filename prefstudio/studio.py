"""The studio: the whole personalization loop behind one object the CLI and the UI call.

    candidates = studio.generate_candidates("a fox in the snow", n=8)
    studio.judge("alice", "like", candidates[0].sha256)
    report = studio.fit("alice")
    for step in studio.personalize("alice", "a fox in the snow", seed=7):
        ...  # GuidanceProgress per iteration, then a SideBySide

It owns one generator, one image encoder (features for the preference model and the
rewards, cached per image in the history store), the history store, and one preference
model (`prefstudio.preference.model.PreferenceModel`; "auto" by default), which it never
asks the kind of.
"""
import copy
import hashlib
import itertools
import os
import secrets
import shlex
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from prefstudio.blend import PROFILE_PREFIX, blended_profile, validate_reward_name
from prefstudio.encoders.base import ImageEncoder, pil_to_tensor
from prefstudio.errors import InvalidInput, ModelUnavailable, NoSuchProfile, NotFound, echo
from prefstudio.generators.base import GeneratedImage, Generator, to_pil
from prefstudio.guidance.adapter import WEIGHTS_FILE, PreferenceAdapter, load_adapter
from prefstudio.guidance.best_of_n import best_of_n
from prefstudio.guidance.instant import instant_image
from prefstudio.guidance.methods import CHAIN_ITERATIONS, METHODS
from prefstudio.guidance.noise_optimization import (
    DEFAULT_ITERATIONS, CandidatePool, GuidanceProgress, GuidanceResult, GuidanceSettings, optimise_noise,
    run_guidance, validate_iterations,
)
from prefstudio.preference.history_pairs import training_pairs
from prefstudio.preference.model import JudgedPairs, PreferenceModel, Taste
from prefstudio.preference.models import AUTO, build_preference_model
from prefstudio.preference.user_embedding import UserBank, bank_combination
from prefstudio.rewards.base import Reward, score_all
from prefstudio.rewards.prompt_consistency import PromptConsistencyReward
from prefstudio.rewards.user_preference import TasteReward
from prefstudio.shipped import CHECKPOINTS, DEFAULT_BANK
from prefstudio.store.history import HistoryStore, ImageRecord, Judgment
from prefstudio.validation import (
    MAX_WEIGHT, validate_prompt, validate_seed, validate_weights, weight_mapping, whole_number,
)

DEFAULT_ADAPTER = CHECKPOINTS / "preference_adapter_embedded"
USER_WEIGHT = 0.75  # 000 app. D: the user model's weight in guided generation
GUARD_WEIGHT = 0.5  # what a drop of one spread in a guard (prompt consistency) costs
OTHER_WEIGHT = 0.25
BRIDGE_TRIES = 3  # per gap between two neighbouring cells of a trade-off grid
DEFAULT_STRENGTH = 0.5
MAX_RADIUS = 0.5  # strength 1: the noise may move half its norm away from the seed's
MIN_GAIN = 0.05  # below this the personalized image is not called better (PNG rounding)
MAX_CANDIDATES = 32
# Judgments one import-pairs call records (each new image in them is decoded and stored).
MAX_IMPORTED_PAIRS = 10_000
# Fewer held-out pairs than this: a leave-one-out accuracy gets no verdict (chance or not).
FEW_HELD_OUT = 8
MAX_ADAPTER_SCALE = 2.0  # the PPD adapter's scale: 1 is what it was trained at, above exaggerates


@dataclass
class FitReport:
    profile: str
    model: str  # the preference model that served
    mode: str
    reason: str  # why this model/mode, in words
    n_pairs: int
    loo_accuracy: float | None
    loo_pairs: int
    seconds: float

    def summary(self) -> str:
        loo = (f"leave-one-out pairwise accuracy {self.loo_accuracy:.0%} over {self.loo_pairs} pairs"
               if self.loo_accuracy is not None else "too few pairs for leave-one-out accuracy")
        if self.loo_accuracy is not None and self.loo_pairs < FEW_HELD_OUT:
            loo += " (too few to say much yet)"
        return (f"{self.profile}: {self.model} ({self.mode}) fit on {self.n_pairs} pairs in {self.seconds:.2f} s; "
                f"{loo}. {self.reason}")


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
    strength: float
    # The rewards it raises (guards aside) score the personalized image higher than the
    # baseline, from the PNGs: otherwise it is not called personalized.
    improved: bool
    gain: float
    seconds: float = 0.0  # the personalization itself (not the baseline, scoring or storing)


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {n: round(v, 4) for n, v in scores.items()}


def no_fit_yet(profile: str) -> str:
    return (f"profile {profile!r} has no fitted taste yet: judge some images, then fit it (Fit my taste on the "
            f"Profile tab, or python -m prefstudio fit {shlex.quote(profile)})")


def check_one_pass_weights(weights: dict[str, float], method: str) -> None:
    """A one-pass method (Instant, PPD) makes the image for the profile's own taste and follows no
    slider; the weights only judge its result, so they may not ask for what it cannot follow."""
    blended = [blended_profile(n) for n, w in weights.items() if w > 0 and blended_profile(n) is not None]
    if blended:
        raise InvalidInput(f"{method} makes one pass for your own taste and cannot follow the taste of "
                           f"{' and '.join(blended)}: set its weight to 0, or choose guidance to blend")
    if weights.get("user", 0) <= 0:
        raise InvalidInput(f"{method} makes one pass for your own taste, but your taste's weight is 0: "
                           "raise it (it judges the result), or choose another method")


def check_something_raised(weights: dict[str, float], rewards: dict[str, Reward], method: str) -> None:
    """A method that climbs the weighted rewards needs one it raises: a guard (prompt consistency)
    is only kept from falling, so guards alone leave nothing to personalize for."""
    guards = [n.replace("_", " ") for n, w in weights.items() if w > 0 and rewards[n].guard]
    if method in ("guidance", "best_of_n", "instant+guidance") and guards and not any(
            w > 0 and not rewards[n].guard for n, w in weights.items()):
        raise InvalidInput(f"nothing to personalize for: every reward that is raised has weight 0 "
                           f"({' and '.join(guards)} only guard{'s' if len(guards) == 1 else ''}, "
                           f"{'it is' if len(guards) == 1 else 'they are'} never raised); give your taste a "
                           "weight above 0")


class Studio:
    def __init__(self, data_dir: str | Path, generator: Generator | None = None,
                 image_encoder: ImageEncoder | None = None, bank_path: str | Path | None = DEFAULT_BANK,
                 extra_rewards: dict[str, Reward] | None = None, preference_model: str = AUTO,
                 reward_states: dict | None = None, adapter_path: str | Path | None = DEFAULT_ADAPTER,
                 ppd_adapter_path: str | Path | None = None):
        """`extra_rewards` join prompt consistency (one named "prompt_consistency" replaces it);
        `reward_states` (`prefstudio.rewards.catalog.RewardState` by name) say which catalogued
        rewards are ready and how to get the missing ones. The user bank is `bank_path` when it
        reads this encoder's features, unless `python -m prefstudio bank` built one for it in the data folder.
        `adapter_path` holds the preference adapter Instant runs; `ppd_adapter_path` a PPD
        adapter (docs/ppd.md) for an SD/SDXL generator, which the "ppd" method runs."""
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
        if bank_path is not None:
            # A bank the person built for this encoder (`bank`) comes before the shipped one.
            for path in (user_bank_path(data_dir, self.encoder.name), Path(bank_path)):
                bank = UserBank.load(path) if path.is_file() else None
                if bank is not None and bank.encoder == self.encoder.name:
                    self.bank = bank
                    break
        self.reward_states = dict(reward_states or {})
        self.adapter, self.adapter_config, self.adapter_bank, self.adapter_problem = self._load_adapter(adapter_path)
        self.ppd_adapter, self.ppd_source = self._load_ppd_adapter(ppd_adapter_path)
        self.base_rewards: dict[str, Reward] = {
            "prompt_consistency": PromptConsistencyReward(generator, image_encoder),
            **(extra_rewards or {}),
        }
        self.preference: PreferenceModel = build_preference_model(
            preference_model, self.encoder.name, getattr(generator, "text_encoder", None), self.bank)
        self._rewards: dict[str, tuple[object, Reward]] = {}

    def _load_adapter(self, folder) -> tuple[PreferenceAdapter | None, dict | None, UserBank | None, str]:
        """The preference adapter for Instant and the user bank it reads, when they match this
        generator and encoder; else why not."""
        train = ("train one: python -m prefstudio_research.train.preference_adapter --generator "
                 f"{self.generator.name} --out <folder> (checkpoints/README.md)")
        if folder is None or not Path(folder).is_dir():
            return None, None, None, f"no preference adapter is installed for {self.generator.name}; {train}"
        try:
            adapter, config, bank = load_adapter(folder)
        except InvalidInput as error:  # the studio still starts; Instant says why it cannot run
            return None, None, None, f"{error}; {train}"
        problem = None
        if config["generator"] != self.generator.name or config["shape"]["token_dim"] != \
                self.generator.conditioning_tokens(self.generator.encode_prompt("a picture")).shape[1]:
            problem = f"was trained for {config['generator']}, this studio runs {self.generator.name}"
        elif bank.encoder != self.encoder.name:
            problem = f"reads {bank.encoder} image features, this studio encodes with {self.encoder.name}"
        if problem:
            return None, None, None, f"the preference adapter in {folder} {problem}; {train}"
        weights = hashlib.sha256((Path(folder) / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
        return adapter.to(self.generator.device), config | {"id": f"{Path(folder).name}:{weights}"}, bank, ""

    def _load_ppd_adapter(self, folder):
        """The PPD adapter the person asked for, and which user embedding it reads."""
        if folder is None:
            return None, None
        from prefstudio.ppd.adapter import load_adapter as load_ppd_adapter
        from prefstudio.ppd.user_vectors import adapter_source

        unet = getattr(self.generator, "denoiser", None)
        if getattr(self.generator, "family", None) not in ("sd", "sdxl") or unet is None:
            raise InvalidInput(f"--ppd-adapter goes into an SD or SDXL UNet and {self.generator.name} has none: "
                               "start with --model sd-turbo (or sdxl-turbo, a hub id or a diffusers folder)")
        adapter = load_ppd_adapter(folder, unet, install=False)
        source = adapter_source(adapter.config.user_embedding)
        if source == "synthetic":
            raise InvalidInput(f"{folder} was trained on PPD's synthetic reward users, not on people: use it with "
                               f"`python -m prefstudio ppd generate - PROMPT --adapter {folder} --mix clip=0.5,...`")
        return adapter, source

    def ppd_embedding(self, profile: str) -> torch.Tensor:
        """[D_u] the profile's user embedding of the kind the PPD adapter was trained on."""
        if self.ppd_adapter is None:
            raise ModelUnavailable("the PPD adapter is not loaded: start the studio with --ppd-adapter FOLDER and an "
                                   "SD/SDXL generator (docs/ppd.md says how to train one)")
        from prefstudio.ppd.generate import check_user
        from prefstudio.ppd.user_vectors import profile_vector

        return check_user(self.ppd_adapter, profile_vector(self.store, self.store.get_profile(profile).name,
                                                           self.ppd_source))

    # -- candidates and judgments ----------------------------------------------------
    def generate_candidates(self, prompt: str, n: int = 8, seeds: list[int] | None = None
                            ) -> list[ImageRecord]:
        """`n` candidates from random seeds, or one from each of `seeds` (then `n` is not used,
        as the CLI's --seeds overrides -n)."""
        prompt = validate_prompt(prompt)
        if seeds is None:
            n = whole_number(n, "number of candidates")
            if not 1 <= n <= MAX_CANDIDATES:
                raise InvalidInput(f"number of candidates must lie in [1, {MAX_CANDIDATES}], got {n}")
            seeds = [secrets.randbelow(2**31) for _ in range(int(n))]
        elif isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):  # "123" is no 1, 2, 3
            raise InvalidInput(f"seeds must be a list of whole numbers, got {echo(seeds)}")
        if not isinstance(seeds, (list, tuple)):  # an endless iterator is not read whole
            seeds = list(itertools.islice(seeds, MAX_CANDIDATES + 1))
        if len(seeds) > MAX_CANDIDATES:
            raise InvalidInput(f"{len(seeds)} seeds given; at most {MAX_CANDIDATES} candidates at a time")
        seeds = [validate_seed(s) for s in seeds]
        twice = next((s for s in seeds if seeds.count(s) > 1), None)
        if twice is not None:
            raise InvalidInput(f"seed {twice} is given twice: a prompt and a seed make one image")
        generated = self.generator.generate(prompt, seeds)
        return [self.store.add_image(g) for g in generated]

    def prompt_notes(self, prompt: str) -> list[str]:
        """What of `prompt` the generator will not read (past its text encoder's window), in words."""
        return self.generator.prompt_notes(validate_prompt(prompt))

    def judge(self, profile: str, kind: str, image_a: str, image_b: str | None = None) -> Judgment:
        return self.store.record_judgment(profile, kind, image_a, image_b)

    def import_pairs(self, profile: str, path: str | Path, user_id: str | None = None) -> dict[str, int]:
        """Record the A ≻ B judgments of a pair data set file (JSON Lines) into a profile.

        Every line and image is checked before anything is recorded; a refused file leaves nothing behind.
        Returns what changed: the lines read, the pairs whose verdict it recorded (new, or replacing
        another), the pairs it judged as they already were, the pairs it judged both ways, and the
        lines on a pair an earlier line of the file judged (a profile holds one verdict a pair: the
        file's last line on it counts)."""
        from prefstudio.preference.pair_data import read_judgments

        self.store.get_profile(profile)
        # Each new image is decoded and stored: the cost is bounded, and so is the reading.
        judgments = read_judgments(path, user_id=user_id, limit=MAX_IMPORTED_PAIRS)
        whose = f" of user {echo(user_id)}" if user_id else ""
        if not judgments:
            raise InvalidInput(f"{path} has no judgments{whose}")
        people = list(dict.fromkeys(j.user_id for j in judgments))
        if len(people) > 1:  # one profile is one person's taste
            named = ", ".join(echo(u, 40) for u in people[:5]) + (", …" if len(people) > 5 else "")
            raise InvalidInput(f"{path} holds several people's judgments ({named}): a profile is one person's; "
                               "choose whose with --user")
        if len(judgments) > MAX_IMPORTED_PAIRS:
            raise InvalidInput(f"{path} holds more than {MAX_IMPORTED_PAIRS:,} judgments{whose}; one import takes "
                               f"at most {MAX_IMPORTED_PAIRS:,}: split the file, or import one user at a time")
        before = {frozenset((j.image_a, j.image_b)): j.image_a for j in self.store.judgments(profile, ("pair",))}
        last, winners = {}, {}  # per pair: the winner of the file's last line on it, and of every line
        for j in self.store.import_pairs(profile, [(j.liked, j.disliked, j.prompt) for j in judgments]):
            pair = frozenset((j.image_a, j.image_b))
            last[pair] = j.image_a
            winners.setdefault(pair, set()).add(j.image_a)
        unchanged = sum(before.get(pair) == winner for pair, winner in last.items())
        return {"lines": len(judgments), "recorded": len(last) - unchanged, "already_recorded": unchanged,
                "judged_both_ways": sum(len(w) > 1 for w in winners.values()), "repeated_lines": len(judgments) - len(last)}

    # -- features -------------------------------------------------------------------
    def features(self, shas: list[str]) -> torch.Tensor:
        """[N, D] encoder features of stored images, computed once and cached in the store."""
        check_id_list(shas, "image ids")
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
    def judged_pairs(self, profile: str) -> JudgedPairs:
        return JudgedPairs(training_pairs(self.store.judgments(profile)), self.features,
                           lambda shas: [self.store.image_record(s).prompt or "" for s in shas])

    def fit(self, profile: str) -> FitReport:
        """Fit (or read) the profile's taste from its judgments with the studio's model, and store it."""
        start = time.perf_counter()
        judged = self.judged_pairs(profile)
        if not judged.pairs:
            # A model fitted on nothing is the bank's average person, not this one's taste: it
            # would be served as "your taste" and offered for other profiles' blends.
            n = sum(n for kind, n in self.store.counts(profile).items() if kind != "skip")
            have = "nothing judged yet" if not n else f"{n} judgment{'s' if n > 1 else ''} but no pair yet"
            raise InvalidInput(f"{self.store.get_profile(profile).name} has {have}: a fit learns from pairs, one "
                               "image 👍 and one 👎 or a pick of the better of two; judge those, then fit")
        taste, outcome = self.preference.fit(judged)
        tensors, config = taste.state()
        config.update(fitted_at=time.time(), mode=outcome.mode, reason=outcome.reason, n_pairs=outcome.n_pairs,
                      loo_accuracy=outcome.loo_accuracy, loo_pairs=outcome.loo_pairs,
                      reference_images=judged.images())
        self.store.save_model(profile, self.preference.name, tensors, config)
        return FitReport(self.store.get_profile(profile).name, self.preference.name, outcome.mode, outcome.reason,
                         outcome.n_pairs, outcome.loo_accuracy, outcome.loo_pairs, time.perf_counter() - start)

    def fit_status(self, profile: str) -> dict | None:
        """The stored fit's config (mode, reason, pairs, leave-one-out accuracy), or None."""
        stored = self.store.load_model(profile, self.preference.name)
        return None if stored is None else stored[1]

    def user_reward(self, profile: str) -> TasteReward:
        """The profile's fitted taste as a reward, rebuilt only when a newer fit was stored."""
        stored = self.store.load_model(profile, self.preference.name)
        if stored is None:
            raise NotFound(no_fit_yet(profile))
        tensors, config = stored
        key = self.store.get_profile(profile).id
        fingerprint = (config.get("fitted_at"), self.preference.name)
        cached = self._rewards.get(key)
        if cached is None or cached[0] != fingerprint:
            taste: Taste = self.preference.load(tensors, config)
            reference = [s for s in config.get("reference_images") or [] if self._has_image(s)]
            prompts = [self.store.image_record(s).prompt or "" for s in reference]
            cached = (fingerprint, TasteReward(taste, self.encoder, self.features(reference) if reference else None,
                                               prompts))
            self._rewards[key] = cached
        return cached[1]

    def _has_image(self, sha: str) -> bool:
        try:
            self.store.image_record(sha)
            return True
        except NotFound:
            return False

    def rewards(self, profile: str | None, blend: Iterable[str] = ()) -> dict[str, Reward]:
        """Every reward on offer, the user's model first (if fitted), then the tastes of the
        other profiles `blend` names as `profile:NAME` (each must exist and be fitted)."""
        rewards = {}
        if profile is not None:
            self.store.get_profile(profile)  # a mistyped name is refused, not scored without its taste
            try:
                rewards["user"] = self.user_reward(profile)
            except NotFound:  # not fitted yet
                pass
        for name in blend:
            other = blended_profile(validate_reward_name(name))
            if other is not None:
                rewards[name] = self.blended_reward(profile, other)
        return rewards | self.base_rewards

    def _check_available(self, weights: dict[str, float], rewards: dict[str, Reward]) -> None:
        """Every reward weighted is here: a catalogued one whose weights are missing says what is
        missing and how to get it; any other name is refused with the rewards on offer."""
        for name in weights:
            state = self.reward_states.get(name)
            if name not in rewards and state is not None and not state.ready:
                raise ModelUnavailable(f"the {name} reward is not available here: {state.detail}")
        self._check_known(weights)

    def _check_known(self, names: Iterable[str]) -> None:
        offered = {"user", *self.base_rewards}
        unknown = [n for n in names if blended_profile(n) is None and n not in offered]
        if unknown:
            raise InvalidInput(f"unknown reward {echo(unknown[0])}; available: {', '.join(sorted(offered))} "
                               "and profile:NAME")

    def blended_reward(self, profile: str | None, other: str) -> TasteReward:
        """Another profile's fitted taste, to blend into `profile`'s generation."""
        try:
            found = self.store.get_profile(other)
        except NoSuchProfile as error:
            raise NoSuchProfile(other, error.existing, f"cannot blend {PROFILE_PREFIX}{other}: ") from None
        if profile is not None and found.id == self.store.get_profile(profile).id:
            raise InvalidInput(f"{PROFILE_PREFIX}{other} is the profile being personalized: its own taste is "
                               "the 'user' weight")
        try:
            return self.user_reward(found.name)
        except NotFound:
            raise NotFound(f"cannot blend {PROFILE_PREFIX}{other}: {found.name} has no fitted taste yet "
                           "(fit it in its Profile tab or with `fit`)") from None

    def blendable_profiles(self, exclude: str | None = None) -> list[str]:
        """Profiles whose taste can join a blend: those with a fit of this studio's model."""
        skip = None if exclude is None else self.store.get_profile(exclude).id
        return [p.name for p in self.store.list_profiles()
                if p.id != skip and self.preference.name in self.store.model_names(p.name)]

    def blend_weights(self, profile: str, weights: dict[str, float] | None = None,
                      preset: str | None = None) -> dict[str, float]:
        """The weights a run uses: the named preset's, each overridden by `weights`; without a
        preset, the defaults, each overridden by `weights`. A preset whose rewards or blended profiles are not
        here is refused, saying which."""
        if preset is None:  # named weights change those rewards; the others keep their defaults
            return self.default_weights() | weight_mapping(weights or {})
        stored = self.store.get_preset(profile, preset)
        offered = {"user", *self.base_rewards}
        for name in stored.weights:
            other = blended_profile(name)
            if other is None and name not in offered:
                raise NotFound(f"preset {stored.name!r} weighs reward {name!r}, which this studio does not offer "
                               f"(it offers {', '.join(sorted(offered))} and profile:NAME)")
            if other is not None:
                try:
                    self.store.get_profile(other)
                except NotFound:
                    raise NotFound(f"preset {stored.name!r} blends profile {other!r}, which is not a profile here: "
                                   "import that profile's file, or save the preset without it") from None
        return stored.weights | weight_mapping(weights or {})

    def save_preset(self, profile: str, name: str, weights: dict[str, float]):
        """Store a blend as a named preset of `profile`, once every reward it names is here."""
        weights = weight_mapping(weights)
        self.rewards(profile, weights)  # an unknown or unfitted blended profile is refused now
        self._check_known(weights)
        return self.store.save_preset(profile, name, weights)

    def default_weights(self) -> dict[str, float]:
        return {"user": USER_WEIGHT} | {name: GUARD_WEIGHT if reward.guard else OTHER_WEIGHT
                                        for name, reward in self.base_rewards.items()}

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

    # -- active queries ----------------------------------------------------------------------
    def suggest(self, profile: str, candidate_shas: list[str], top: int = 3) -> list:
        """`SuggestedPair`s of these stored candidates most worth judging next, most informative first
        (`prefstudio.preference.active`: how much the tastes that still fit the profile's history
        disagree on each pair, and the stored fit's uncertainty). Pairs already judged (a tie or a skip too)
        are left out."""
        from prefstudio.preference.active import SuggestedPair, rank_pairs

        if whole_number(top, "top") < 1:
            raise InvalidInput(f"top must be a whole number ≥ 1, got {top}")
        shas = list(dict.fromkeys(check_id_list(candidate_shas, "candidate image ids")))
        if len(shas) < 2:
            raise InvalidInput(f"suggesting a pair needs at least two different candidate images; got {len(shas)}")
        for sha in shas:
            self.store.image_record(sha)  # NotFound names an unknown image
        pairs = self.judged_pairs(profile).pairs  # NotFound for an unknown profile
        try:
            taste = self.user_reward(profile).taste
        except (NotFound, InvalidInput):  # never fitted, or fitted by another model: the bank alone
            taste = None
        if self.bank is None and taste is None:
            raise NotFound(f"nothing to choose queries by: profile {profile!r} has no fitted taste and this "
                           "studio has no user bank; judge a few images and press Fit first")
        position = {sha: i for i, sha in enumerate(shas)}
        judged = {tuple(sorted((position[a], position[b]))) for a, b in pairs if a in position and b in position}
        # A tie or a skip is a verdict on the pair too, though it trains nothing.
        judged |= {tuple(sorted(position[s] for s in pair)) for pair in self.store.pair_verdicts(profile, shas)}
        if len(judged) == len(shas) * (len(shas) - 1) // 2:
            raise InvalidInput(f"every pair of these {len(shas)} candidates is judged already: generate new ones")
        history = self.features([s for pair in pairs for s in pair]).view(len(pairs), 2, -1) if pairs else None
        prompts = [self.store.image_record(s).prompt or "" for s in shas]
        # One row serves every candidate: a batch of one prompt is encoded once, not per image.
        context = None if taste is None else taste.prompt_context(prompts[:1] if len(set(prompts)) == 1 else prompts)
        queries = rank_pairs(self.features(shas), None if history is None else history[:, 0],
                             None if history is None else history[:, 1], self.bank, taste, context,
                             pair_images=pairs or None, exclude=judged)
        return [SuggestedPair(shas[q.first], shas[q.second], q.score, q.reason) for q in queries[:max(1, int(top))]]

    def instant_embedding(self, profile: str) -> torch.Tensor:
        """[k] the profile's user embedding for Instant: Premier's cold start, a linear combination
        of the adapter's training users (the bank that ships with the adapter) with coefficients
        from the person's pairs (`bank_combination`, the bank posterior)."""
        if self.adapter is None:
            raise ModelUnavailable(f"Instant is unavailable: {self.adapter_problem}")
        return self.bank_embedding(profile, self.adapter_bank)

    def bank_embedding(self, profile: str, bank: UserBank) -> torch.Tensor:
        """[k] the profile's user embedding in `bank`'s taste space: the bank posterior of its pairs
        times the bank users' embeddings (the average bank user with nothing judged)."""
        pairs = self.judged_pairs(profile).pairs
        shas = [s for pair in pairs for s in pair]
        features = self.features(shas).view(len(pairs), 2, -1) if pairs else torch.zeros(0, 2, self.encoder.dim)
        coefficients = bank_combination(bank, features[:, 0], features[:, 1], pair_images=pairs or None)
        return coefficients @ bank.user_embeddings

    # -- personalized generation ------------------------------------------------------
    def personalize(self, profile: str, prompt: str, seed: int | None = None,
                    weights: dict[str, float] | None = None, iterations: int | None = None,
                    method: str = "guidance", candidates: int = 8, strength: float = DEFAULT_STRENGTH,
                    stop: threading.Event | None = None, blind: bool = False, listed: bool = True,
                    adapter_scale: float = 1.0) -> Iterator[GuidanceProgress | SideBySide]:
        """Baseline (same seed, no personalization) and personalized, side by side.

        `strength` in [0, 1] bounds how far guidance may move the seed's noise (0: the
        baseline itself). `blind` marks a blind test's images, which the lists of past side by
        sides leave out (they would tell which side was which); `listed` False leaves a run out
        of them too (a trade-off grid's cells). `weights` may blend other profiles' tastes as
        `profile:NAME`. `method` is one of METHODS: "instant" is one pass of the preference
        adapter, its modulation scaled by strength (1: the modulation it was trained to make; 0:
        the baseline, bit for bit); "instant+guidance" starts `iterations` of guidance
        (CHAIN_ITERATIONS by default) from Instant's image; "ppd" is one render with the PPD
        adapter at `adapter_scale` (0: the baseline, bit for bit). Yields GuidanceProgress per
        iteration (the guidance methods), then one SideBySide."""
        prompt = validate_prompt(prompt)
        seed = secrets.randbelow(2**31) if seed is None else validate_seed(seed)
        self.store.get_profile(profile)  # a missing profile is not one without a fit
        weights = weight_mapping(self.default_weights() if weights is None else weights)
        if stop is not None and not callable(getattr(stop, "is_set", None)):
            raise InvalidInput(f"stop must be a threading.Event or None, got {echo(stop)}")
        rewards = self.rewards(profile, weights)
        if "user" not in rewards:
            raise NotFound(no_fit_yet(profile))
        self._check_available(weights, rewards)
        weights = validate_weights(weights, set(rewards))
        if method not in METHODS:
            raise InvalidInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        check_something_raised(weights, rewards, method)
        if method in ("instant", "ppd"):
            check_one_pass_weights(weights, method)
            iterations = 0  # one pass, no iterations
        elif iterations is None:
            iterations = CHAIN_ITERATIONS if method == "instant+guidance" else DEFAULT_ITERATIONS
        if method == "guidance" and validate_iterations(iterations) == 0:
            raise InvalidInput("Guided with 0 iterations is the baseline itself: give it at least 1 iteration "
                               "(Instant is the one-pass method)")
        strength = validate_strength(strength)
        try:
            adapter_scale = float(adapter_scale)
        except (TypeError, ValueError):
            raise InvalidInput(f"adapter scale must be a number in [0, {MAX_ADAPTER_SCALE:g}], "
                               f"got {echo(adapter_scale)}") from None
        if not 0.0 <= adapter_scale <= MAX_ADAPTER_SCALE:
            raise InvalidInput(f"adapter scale must lie in [0, {MAX_ADAPTER_SCALE:g}], got {adapter_scale}")

        start = time.perf_counter()
        instant = None  # the one-pass image (Instant's or the PPD adapter's), if the method makes one
        if method.startswith("instant"):
            instant = instant_image(self.generator, self.adapter, prompt, seed, self.instant_embedding(profile),
                                    scale=strength)
        elif method == "ppd":
            from prefstudio.ppd.generate import ppd_image

            instant = ppd_image(self.generator, self.ppd_adapter, prompt, seed, self.ppd_embedding(profile),
                                adapter_scale)
        if method in ("guidance", "instant+guidance"):
            result = None
            for item in optimise_noise(self.generator, prompt, seed, rewards, weights,
                                       GuidanceSettings(iterations=int(iterations),
                                                        radius=strength * MAX_RADIUS), stop,
                                       conditioning=None if instant is None else instant.conditioning):
                if isinstance(item, GuidanceResult):
                    result = item
                else:
                    yield item
        elif instant is not None:
            result = instant
        else:
            # Strength 0 is the baseline for every method: Best of N then tries the baseline's seed alone.
            count = int(candidates) if strength > 0 else 1
            seeds = [seed] + [validate_seed((seed + 7919 * i) % 2**32) for i in range(1, count)]
            result = best_of_n(self.generator, prompt, seeds, rewards, weights)
            picked = seeds[result.best_iteration]  # its image is that seed's: the record says so
        yield self._side_by_side(profile, prompt, seed, weights, rewards, method, result, instant, strength,
                                 iterations, blind, listed, time.perf_counter() - start,
                                 **({"picked_seed": picked} if method == "best_of_n" else {}))

    def _side_by_side(self, profile: str, prompt: str, seed: int, weights: dict[str, float],
                      rewards: dict[str, Reward], method: str, result: GuidanceResult, instant, strength: float,
                      iterations: int, blind: bool, listed: bool, seconds: float, **params) -> SideBySide:
        """The baseline and `result`'s image, scored from their PNGs, stored with provenance."""
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

        raised = [n for n, w in weights.items() if w > 0 and not rewards[n].guard]
        gain = float(sum(weights[n] * (normalised[n][1] - normalised[n][0]) for n in raised))
        # Iteration 0 of a chain is Instant's image, which already differs from the baseline.
        departs = result.best_iteration > 0 or (instant is not None and instant.scale > 0)
        improved = departs and gain > MIN_GAIN
        baseline_scored = scored(0, baseline)
        params = self.generator.params() | {
            "personalized_for": self.store.get_profile(profile).name, "method": method, "weights": weights,
            "strength": strength, "iterations": int(iterations), "iterations_run": result.iterations_run,
            "stopped": result.stopped,
            **({} if instant is None else {"adapter": self._adapter_id(method), "adapter_scale": instant.scale}),
            "blind": blind, "listed": listed,
            "best_iteration": result.best_iteration, "improved": improved, "gain": round(gain, 4),
            "baseline": baseline_scored.record.sha256, "fit": self._fit_stamp(profile),
            "trace": [[p.iteration, round(p.total, 4), _rounded(p.normalised)] for p in result.trace],
            "scores": {"baseline": _rounded(baseline_scored.normalised),
                       "personalized": _rounded({n: float(v[1]) for n, v in normalised.items()})}} | params
        personalized = GeneratedImage(result.image, prompt, params.get("picked_seed", seed), self.generator.name,
                                      params)
        return SideBySide(prompt, seed, weights, baseline_scored, scored(1, personalized),
                          result.best_iteration, result.iterations_run, result.stopped, strength, improved, gain,
                          seconds)

    def _adapter_id(self, method: str) -> str:
        if method == "ppd":
            return f"ppd:{self.ppd_adapter.config.base_model or 'adapter'} ({self.ppd_source} user embedding)"
        return self.adapter_config["id"]

    def trade_off(self, profile: str, prompt: str, axes: list[str], seed: int | None = None,
                  steps: int | None = None, weights: dict[str, float] | None = None, total: float = 1.0,
                  strength: float = DEFAULT_STRENGTH, iterations: int = 30,
                  stop: threading.Event | None = None) -> Iterator[str | object]:
        """A `TradeOffGrid` (prefstudio.trade_off) of one seed across weight combinations of two
        or three rewards (`axes`, which may be profile:NAME): yields a line of progress before
        each cell's guided run, then the grid. Every run joins one `CandidatePool`, and each cell
        shows the pool's pick for its weights (`CandidatePool.pick`), so moving weight along a row
        raises the reward gaining it and lowers the other. An axis is always raised, a guard too (the grid shows
        what raising one reward costs the others); the other rewards keep their weight in
        `weights` (default: the studio's), so a guard off the axes keeps guarding."""
        from prefstudio.trade_off import TradeOffCell, TradeOffGrid, check_axes, simplex_rows

        axes, steps = check_axes(axes, steps)
        prompt = validate_prompt(prompt)
        seed = secrets.randbelow(2**31) if seed is None else validate_seed(seed)
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not 0 < total <= MAX_WEIGHT:
            raise InvalidInput(f"the weight shared among the rewards must lie in (0, {MAX_WEIGHT:g}], got {total!r}")
        self.store.get_profile(profile)  # a missing profile is not one without a fit
        base = {n: w for n, w in self.blend_weights(profile, weights).items() if n not in axes}
        rewards = self.rewards(profile, [*axes, *base])  # every reward named is here, before the first run
        if "user" not in rewards:
            raise NotFound(no_fit_yet(profile))
        self._check_available(base | dict.fromkeys(axes, 1.0), rewards)
        for name in axes:
            if rewards[name].guard:
                rewards[name] = copy.copy(rewards[name])
                rewards[name].guard = False
        strength = validate_strength(strength)
        settings = GuidanceSettings(iterations=validate_iterations(iterations), radius=strength * MAX_RADIUS)
        rows = [[dict(zip(axes, shares)) | base for shares in row] for row in simplex_rows(len(axes), steps, total)]
        count = sum(len(row) for row in rows)
        pool, runs = CandidatePool(), []
        for done, cell_weights in enumerate((w for row in rows for w in row), 1):
            yield f"Image {done} of {count}: " + ", ".join(f"{n} {cell_weights[n]:g}" for n in axes)
            start = time.perf_counter()
            runs.append((run_guidance(self.generator, prompt, seed, rewards, cell_weights, settings, stop, pool=pool),
                         time.perf_counter() - start))
        picks = yield from self._bridge_ties(pool, rows, prompt, seed, rewards, axes, settings, stop)
        grid_rows, cells, conditioning = [], iter(runs), self.generator.encode_prompt(prompt)
        for row, row_picks in zip(rows, picks):
            grid_cells = []
            for cell_weights, pick in zip(row, row_picks):
                own, seconds = next(cells)
                with torch.no_grad():
                    image = to_pil(self.generator.render(pick.noise, conditioning))[0]
                result = GuidanceResult(image, pick.noise, pick.iteration, float("nan"), pick.normalised, pick.raw,
                                        own.iterations_run, own.stopped, own.trace)
                side = self._side_by_side(profile, prompt, seed, cell_weights, rewards, "guidance", result, None,
                                          strength, int(iterations), blind=False, listed=False,
                                          seconds=seconds, grid={"axes": axes, "runs": pool.runs, "picked_from_run":
                                                                 pick.run + 1, "raised_axes": True})
                grid_cells.append(TradeOffCell(cell_weights, side))
            grid_rows.append(grid_cells)
        yield TradeOffGrid(self.store.get_profile(profile).name, prompt, seed, axes, steps, strength,
                           grid_rows)

    def _bridge_ties(self, pool: CandidatePool, rows: list[list[dict]], prompt: str, seed: int,
                     rewards: dict, axes: list[str], settings: GuidanceSettings,
                     stop: threading.Event | None) -> Iterator[str]:
        """Each cell's pick from `pool`, after bridging the gaps its front leaves: where two
        neighbouring cells of a row pick the same candidate, the pool holds nothing between
        them, and moving the weight would change nothing. Whichever of the two cells would gain
        from a candidate near the tied one gets it: the later cell if the axis gaining weight is
        the one its pick falls short on most, else the earlier (its binding axis is then the
        one losing weight). A short run from the tied candidate, with that cell's weights taken
        one step further away from the other cell's, adds candidates near it; then every cell
        picks again. A gap still there is tried again with half the step (what it lacks may lie
        closer to the tied candidate than one step reaches), up to `BRIDGE_TRIES` times; all
        bridges together are at most as many runs as the grid has cells. Yields a line of
        progress per bridge; returns the picks."""
        tries, budget, runs = {}, sum(len(row) for row in rows), 0
        while runs < budget and not (stop is not None and stop.is_set()):
            picks = [[pool.pick(w, rewards, axes) for w in row] for row in rows]
            gap = None
            for r, row in enumerate(picks):
                for c in range(len(row) - 1):
                    if row[c] is row[c + 1] and tries.get((r, c, id(row[c])), 0) < BRIDGE_TRIES:
                        gap = gap or (r, c, row[c])
            if gap is None:
                break
            r, c, tied = gap
            here, there = rows[r][c], rows[r][c + 1]
            axis = pool.binding_axis(tied, there, axes)
            cell, other = (there, here) if there[axis] > here[axis] else (here, there)
            further = {n: max(0.0, 2 * cell[n] - other[n]) for n in cell}
            tried = tries[(r, c, id(tied))] = tries.get((r, c, id(tied)), 0) + 1
            runs += 1
            yield f"Bridging a gap between two neighbouring images ({runs} of at most {budget})"
            bridge = replace(settings, iterations=max(1, settings.iterations // 3),
                             learning_rate=settings.learning_rate / 2 ** (tried - 1))
            run_guidance(self.generator, prompt, seed, rewards, further, bridge, stop, pool=pool,
                         from_noise=tied.noise)
        return [[pool.pick(w, rewards, axes) for w in row] for row in rows]

    def _fit_stamp(self, profile: str) -> dict:
        """Which fit made an image: the model, when, on how many pairs."""
        status = self.fit_status(profile) or {}
        return {"model": self.preference.name, "fitted_at": status.get("fitted_at"),
                "n_pairs": status.get("n_pairs"), "mode": status.get("mode")}

    def personalize_once(self, *args, **kwargs) -> SideBySide:
        last = None
        for last in self.personalize(*args, **kwargs):
            pass
        return last

    # -- profiles -----------------------------------------------------------------------
    def export_profile(self, profile: str, path: str | Path) -> Path:
        from prefstudio.store.profile_file import export_profile
        return export_profile(self.store, profile, path)

    def import_profile(self, path: str | Path, new_name: str | None = None, visible=None):
        """`visible`: which existing profiles a name clash may name (HistoryStore.check_name_free)."""
        from prefstudio.store.profile_file import import_profile
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInput(f"a profile file must be a path, got {echo(path)}")
        return import_profile(self.store, path, new_name, encoder_dims={self.encoder.name: self.encoder.dim},
                              visible=visible)


def check_id_list(shas, what: str) -> list[str] | tuple[str, ...]:
    """Ids come as a list: one id given alone would be read letter by letter."""
    if isinstance(shas, (str, bytes)) or not isinstance(shas, (list, tuple)):
        raise InvalidInput(f"{what} must be a list of ids, got {echo(shas)}")
    return shas


def validate_strength(strength) -> float:
    """Guidance strength: how far from the seed's noise it may go, 0 (the baseline) to 1."""
    try:
        if isinstance(strength, bool):  # True is no strength, though float(True) is 1
            raise TypeError
        strength = float(strength)
    except (TypeError, ValueError):
        raise InvalidInput(f"strength must be a number in [0, 1], got {echo(strength)}") from None
    if not 0.0 <= strength <= 1.0:
        raise InvalidInput(f"strength must lie in [0, 1], got {strength}")
    return strength


def user_bank_path(data_dir: str | Path, encoder_name: str) -> Path:
    """Where `python -m prefstudio bank` puts a user bank for an encoder, and where the studio looks."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)[:120]
    return Path(data_dir) / "user_banks" / f"{slug}.safetensors"


def build_studio(data_dir: str | Path, model: str = "auto", device: str | None = None,
                 preference_model: str = AUTO, reward_folders: dict[str, str] | None = None,
                 image_encoder: str = "embedded", ppd_adapter: str | None = None) -> Studio:
    """The studio for a generator spec ('embedded', 'auto', a known name, a hub id or a folder),
    a preference model ('auto', 'user-embedding', 'preference-tokens' or a token checkpoint folder),
    an image encoder for it ('embedded' or 'clip') and optionally a PPD adapter folder.

    With a real generator, every catalogued reward whose weights are here (`reward_folders`:
    NAME → folder, else the local Hugging Face cache) joins the sliders, with its calibration
    from the data folder if one was measured; with CLIP, prompt consistency is CLIP's text–image
    cosine. The embedded generator keeps its own rewards (its procedural images are not what
    CLIP, the aesthetic head or PickScore were trained on)."""
    from prefstudio.generators import EMBEDDED, default_generator_spec, load_generator
    from prefstudio.rewards import catalog

    reward_folders = catalog.check_folders(dict(reward_folders or {}))  # before minutes of loading
    if ppd_adapter is not None:
        from prefstudio.ppd.adapter import read_config

        read_config(ppd_adapter)  # a wrong folder fails before the generator loads
    if image_encoder not in catalog.IMAGE_ENCODERS:
        catalog.image_encoder(image_encoder)  # says which there are
    spec = default_generator_spec() if model == "auto" else model
    if spec == EMBEDDED:  # the embedded generator, steered by the MiniLM prompt encoder
        if set(reward_folders or {}) - ({"clip"} if image_encoder == "clip" else set()):
            raise InvalidInput("--reward folders serve a real generator (--model sd-turbo, a hub id or a diffusers "
                               "folder); the embedded generator offers its own rewards only")
        encoder = None
        if image_encoder != "embedded":
            encoder = catalog.image_encoder(image_encoder, reward_folders, device or "cpu")
        return Studio(data_dir, image_encoder=encoder, preference_model=preference_model,
                      ppd_adapter_path=ppd_adapter)
    generator = load_generator(spec, device=device)
    found = catalog.discover_rewards(data_dir, reward_folders, generator.device)
    from prefstudio.rewards.calibration import CALIBRATION_FILE, apply_calibrations, read_calibrations

    sources = {name: state.source for name, state in found.states.items()}
    apply_calibrations(found.rewards, sources, generator, read_calibrations(Path(data_dir) / CALIBRATION_FILE))
    for name, reward in found.rewards.items():
        found.states[name].normalisation = reward.normalisation_source
    extra = dict(found.rewards)
    if found.clip is not None:
        from prefstudio.rewards.clip_alignment import CLIPPromptConsistencyReward

        extra = {"prompt_consistency": CLIPPromptConsistencyReward(found.rewards["clip"])} | extra
    encoder = None
    if image_encoder == "clip":
        if found.clip is None:
            raise ModelUnavailable(f"--image-encoder clip needs CLIP: {found.states['clip'].detail}")
        encoder = found.clip
    return Studio(data_dir, generator=generator, image_encoder=encoder, extra_rewards=extra,
                  preference_model=preference_model, reward_states=found.states, ppd_adapter_path=ppd_adapter)
