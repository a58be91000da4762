"""The preference models compared by the benchmark, behind one small interface.

A method sees tensors and nothing else: `train` gets the training users' judgments as
feature pairs (and the validation users' references and 1v1 targets, for choosing its
own settings), `fit_user` gets one person's reference pairs and returns a scorer of
image features. Higher score = more likely liked. No method can reach a simulated user:
the harness passes features, never users, files or ids (tests/test_benchmark_harness.py
checks this with a spy on the utilities).
"""
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (image features [M, D], prompt features [M, Dt] or None) -> scores [M]
Scorer = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class History:
    """One person's judged pairs: liked[i] ≻ disliked[i], features [N, D]; prompt features [N, Dt]."""

    liked: torch.Tensor
    disliked: torch.Tensor
    prompts: torch.Tensor | None = None


@dataclass
class ValidationUser:
    history: History
    target_liked: torch.Tensor  # [T, D]
    target_disliked: torch.Tensor  # [T, D]


class Method(ABC):
    name: str
    #: one line for the report: what the method knows
    description: str
    #: True for methods that read the person's history (the N_ref sweep applies)
    uses_history: bool = True
    #: anything the report should say about how training time was spent
    training_note: str = ""

    def train(self, users: list[History], validation: list[ValidationUser]) -> None:
        """Learn what is shared across people (no-op for methods that learn nothing)."""

    @abstractmethod
    def fit_user(self, history: History) -> Scorer:
        """A scorer for one person from their reference pairs."""


class RandomScores(Method):
    name = "random"
    description = "uniform random scores (chance)"
    uses_history = False

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def fit_user(self, history: History) -> Scorer:
        return lambda features, prompts=None: torch.rand(features.shape[0], generator=self.generator,
                                                         dtype=torch.float64)


def _standardiser(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features.mean(0), features.std(0).clamp_min(1e-4)


def _fit_pairwise_linear(diff: torch.Tensor, l2: float, steps: int = 100) -> torch.Tensor:
    """w minimising mean −log σ(w·diff) + l2‖w‖² (Bradley–Terry on feature differences), by L-BFGS."""
    w = torch.zeros(diff.shape[1], dtype=diff.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -F.logsigmoid(diff @ w).mean() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


class PopulationScorer(Method):
    """The generic no-history baseline: one Bradley–Terry scorer for everybody, trained on
    all training users' pairs pooled (what PickScore is to Pick-a-Pic). Linear in the top
    principal directions of the standardised features; the number of directions and the L2
    strength are chosen on the validation users' targets (a full-width linear score overfits
    the weak shared signal)."""

    name = "generic (population BT)"
    description = "linear Bradley–Terry score on principal directions of the features, all training pairs pooled"
    uses_history = False
    widths = (16, 32, 64, 128)
    l2_grid = (1e-3, 1e-2, 1e-1)

    def train(self, users: list[History], validation: list[ValidationUser]) -> None:
        liked = torch.cat([u.liked for u in users]).double()
        disliked = torch.cat([u.disliked for u in users]).double()
        everything = torch.cat([liked, disliked])
        self.mean, self.std = _standardiser(everything)
        centred = (everything - self.mean) / self.std
        _, singular, directions = torch.linalg.svd(centred - centred.mean(0), full_matrices=False)
        del everything
        val_liked = torch.cat([v.target_liked for v in validation]).double() if validation else None
        val_disliked = torch.cat([v.target_disliked for v in validation]).double() if validation else None
        # Principal directions are nested: project once on the widest, slice for the others.
        # One common scale so projected features have unit variance on average.
        widest = max(self.widths)
        scale = (singular[:widest].pow(2).mean() / max(1, centred.shape[0] - 1)).sqrt()
        projection = directions[:widest].T / scale
        diff = ((liked - disliked) / self.std) @ projection
        best = None
        for width in self.widths:
            for l2 in self.l2_grid:
                w = projection[:, :width] @ _fit_pairwise_linear(diff[:, :width], l2)
                accuracy = 0.0
                if validation:
                    accuracy = float(((((val_liked - val_disliked) / self.std) @ w) > 0).double().mean())
                if best is None or accuracy > best[0]:
                    best = (accuracy, (width, l2), w)
        self.validation_accuracy, self.setting, self.weights = best
        self.description += f" (chosen on validation users: {self.setting[0]} directions, L2 {self.setting[1]:g})"

    def fit_user(self, history: History) -> Scorer:
        return lambda features, prompts=None: ((features.double() - self.mean) / self.std) @ self.weights


class ViPerSimilarity(Method):
    """ViPer-like rule: an image is liked when it is closer to the person's liked references
    than to their disliked ones (cosine similarity on standardised features)."""

    name = "ViPer-like similarity"
    description = "mean cosine to liked references − mean cosine to disliked references"

    def train(self, users: list[History], validation: list[ValidationUser]) -> None:
        everything = torch.cat([torch.cat([u.liked, u.disliked]) for u in users]).double()
        self.mean, self.std = _standardiser(everything)

    def _unit(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize((features.double() - self.mean) / self.std, dim=-1)

    def fit_user(self, history: History) -> Scorer:
        liked, disliked = self._unit(history.liked), self._unit(history.disliked)

        def score(features, prompts=None):
            z = self._unit(features)
            return (z @ liked.T).mean(1) - (z @ disliked.T).mean(1)

        return score


class UserEmbedding(Method):
    """PrefStudio's model A (`prefstudio.preference.user_embedding`): like/dislike vectors
    fitted to the history, from scratch or as a mix of a bank of training users."""

    uses_history = True

    def __init__(self, encoder_name: str, contrastive: bool, with_bank: bool, seed: int = 0):
        self.encoder_name = encoder_name
        self.contrastive = contrastive
        self.with_bank = with_bank
        self.seed = seed
        loss = "L_base + L_CP" if contrastive else "L_base"
        start = "bank of training users (cold start)" if with_bank else "from scratch"
        self.name = f"user embedding, {loss}, {'bank' if with_bank else 'scratch'}"
        self.description = f"fitted user embedding ({loss}), {start}"
        self.bank = None

    def train(self, users: list[History], validation: list[ValidationUser]) -> None:
        if not self.with_bank:
            return
        from prefstudio.preference.user_embedding import train_user_bank

        self.bank = train_user_bank([(u.liked, u.disliked) for u in users], self.encoder_name,
                                    source="PrefBench training users", contrastive=self.contrastive,
                                    seed=self.seed)

    def fit_user(self, history: History) -> Scorer:
        from prefstudio.preference.user_embedding import fit_user_embedding

        fit = fit_user_embedding(history.liked, history.disliked, self.bank, self.encoder_name,
                                 contrastive=self.contrastive)
        self.last_fit = fit
        return lambda features, prompts=None: fit.model.log_odds(features.float()).detach()


class TokenTraining:
    """One training run of the lite preference-token model, shared by its two variants."""

    def __init__(self, encoder_name: str, text_encoder_name: str, steps: tuple[int, int], n_ref: int, seed: int):
        self.encoder_name, self.text_encoder_name = encoder_name, text_encoder_name
        self.steps, self.n_ref, self.seed = steps, n_ref, seed
        self.models = None
        self.seconds = 0.0

    def run(self, users: list[History], validation: list[ValidationUser]) -> dict:
        if self.models is None:
            import time
            from dataclasses import replace
            from pathlib import Path

            from prefstudio.preference.tokens import PairFeatures
            from prefstudio_research.train.preference_tokens import read_run_config, train_lite_on_features

            start = time.perf_counter()
            config = read_run_config(Path(__file__).resolve().parents[2] / TOKEN_CONFIG)
            model = {k: v for k, v in config["model"].items() if k not in ("image_encoder", "text_encoder")}
            # The paper's protocol: histories of exactly N_ref pairs (the shipped config's
            # history_lengths train the studio's model for histories of any length).
            stage1 = replace(config["stage1"], steps=self.steps[0], seed=self.seed, n_ref=self.n_ref,
                             history_lengths=[], eval_every=max(1, self.steps[0] // 6))
            stage2 = replace(config["stage2"], steps=self.steps[1], seed=self.seed, n_ref=self.n_ref,
                             history_lengths=[], eval_every=max(1, self.steps[1] // 4))
            train_users = [PairFeatures(u.liked, u.disliked, u.prompts) for u in users]
            validation_users = [(PairFeatures(v.history.liked, v.history.disliked, v.history.prompts),
                                 v.target_liked, v.target_disliked) for v in validation]

            def train(first, second):
                return train_lite_on_features(train_users, validation_users, model, first, second,
                                              self.encoder_name, self.text_encoder_name, log=lambda *a: None)

            # The same model trained without preference tokens is a run of its own (Table 3's "w/o P_v").
            self.models = {"without": train(replace(stage1, preference_tokens=0), None)["stage1"],
                           "full": train(stage1, stage2)["stage2"]}
            self.seconds = time.perf_counter() - start
        return self.models


TOKEN_CONFIG = "assets/preference_tokens/lite.json"


class PreferenceTokens(Method):
    """PrefStudio's model B (`prefstudio.preference.tokens`, lite backbone): a transformer
    reads [P_v; history pairs (images + labels)] and scores each target. Here it reads no
    prompts (text_dim = 0): the training histories hold image features only, as for every
    method of the harness; the shipped checkpoint, trained with the CLI, reads them.
    Full: P_v trained with the backbone (stage 1), then alone (stage 2) (000 §3.3, §4.1);
    w/o P_v: the same model and stage 1 without tokens. Trained here on the training users
    with the settings of assets/preference_tokens/lite.json (steps as the run config says)."""

    def __init__(self, training: TokenTraining, with_tokens: bool):
        self.training, self.variant = training, "full" if with_tokens else "without"
        self.name = "preference tokens (full, L_p = 10)" if with_tokens else "preference tokens, w/o P_v"
        self.description = (f"lite sequence model over image features (no prompts), L_base + L_CP, "
                            f"{'with' if with_tokens else 'without'} preference tokens; {training.steps[0]} stage-1"
                            + (f" + {training.steps[1]} stage-2 steps" if with_tokens else " steps"))

    def train(self, users: list[History], validation: list[ValidationUser]) -> None:
        self.model = self.training.run(users, validation)[self.variant]
        self.training_note = (f"both token variants are trained together ({self.training.seconds:.0f} s); "
                              "the time is counted under the first")

    def fit_user(self, history: History) -> Scorer:
        from prefstudio.preference.tokens import PairFeatures, TargetFeatures

        with torch.no_grad():
            prefix = self.model.encode_history(PairFeatures(history.liked, history.disliked, history.prompts))

        def score(features, prompts=None):
            with torch.no_grad():
                m_like, m_dislike = self.model.score_encoded(prefix, TargetFeatures(features.float(), prompts))
            return (m_like - m_dislike).double()

        return score

    def speed(self, features: torch.Tensor, train_rows: torch.Tensor, prompt: torch.Tensor | None,
              histories: list[int], pools: list[int], repeats: int) -> list[dict]:
        """Encoding a history (once per person) and scoring a pool against it, as each grows."""
        from prefstudio_research.prefbench.speed import median_wall_and_cpu

        def prompts(n):
            return None if prompt is None else prompt.expand(n, -1)

        rows = []
        for n in histories:
            pairs = train_rows[torch.arange(n) % train_rows.shape[0]]
            history = History(features[pairs[:, 0]], features[pairs[:, 1]], prompts(n))
            reps = repeats if n <= 128 else max(2, repeats // 2)
            wall, cpu = median_wall_and_cpu(lambda: self.fit_user(history), reps)
            rows.append({"what": "encode history (preference tokens)", "size": n, "unit": "pairs",
                         "seconds": wall, "cpu_seconds": cpu, "repeats": reps})
        pairs = train_rows[:8]
        scorer = self.fit_user(History(features[pairs[:, 0]], features[pairs[:, 1]], prompts(8)))
        for m in pools:
            pool = features[torch.arange(m) % features.shape[0]]
            wall, cpu = median_wall_and_cpu(lambda: scorer(pool, prompts(m)), repeats)
            rows.append({"what": "score pool (preference tokens)", "size": m, "unit": "images",
                         "seconds": wall, "cpu_seconds": cpu, "repeats": repeats})
        return rows


def all_methods(encoder_name: str, text_encoder_name: str, seed: int,
                token_steps: tuple[int, int], n_ref: int) -> list[Method]:
    """Every method of the benchmark; the preference-token model trains on histories of n_ref pairs."""
    tokens = TokenTraining(encoder_name, text_encoder_name, token_steps, n_ref, seed)
    return [
        RandomScores(seed),
        PopulationScorer(),
        ViPerSimilarity(),
        UserEmbedding(encoder_name, contrastive=False, with_bank=False, seed=seed),
        UserEmbedding(encoder_name, contrastive=True, with_bank=False, seed=seed),
        UserEmbedding(encoder_name, contrastive=True, with_bank=True, seed=seed),
        PreferenceTokens(tokens, with_tokens=False),
        PreferenceTokens(tokens, with_tokens=True),
        *studio_methods(encoder_name, text_encoder_name),
    ]


class _CachedPrompts:
    """A text encoder that returns features the benchmark cached with the same encoder: the
    harness hands methods prompt features, the studio's models take prompt strings, so each
    feature row is registered under a key string and looked up again. Carries the encoder's
    name so the models' checks see the encoder that made the features."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[torch.Tensor] = []

    def register(self, features: torch.Tensor | None, n: int) -> list[str]:
        if features is None:
            return [""] * n
        start = len(self.rows)
        self.rows += list(features.float())
        return [str(i) for i in range(start, start + n)]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([self.rows[int(p)] for p in prompts])

    def clear(self) -> None:
        self.rows = []


class StudioModel(Method):
    """One of the preference models the studio serves (`prefstudio.preference.models`), run
    through the interface exactly as the studio runs it: `PreferenceModel.fit(JudgedPairs)`
    on the person's history, then `Taste.log_odds(features, taste.prompt_context(prompts))`.
    Nothing is trained here: the shipped checkpoints serve (the user bank
    `checkpoints/user_bank_embedded.safetensors`, the lite token checkpoint
    `checkpoints/preference_tokens_lite`, and auto's combination of the two)."""

    def __init__(self, model_name: str, encoder_name: str, text_encoder_name: str, bank_path=None,
                 token_checkpoint=None):
        from pathlib import Path

        from prefstudio.preference.models import DEFAULT_TOKEN_CHECKPOINT, build_preference_model
        from prefstudio.preference.user_embedding import UserBank

        repo = Path(__file__).resolve().parents[2]
        bank_path = bank_path or repo / "checkpoints" / "user_bank_embedded.safetensors"
        self.prompts = _CachedPrompts(text_encoder_name)
        self.model = build_preference_model(model_name, encoder_name, self.prompts, UserBank.load(bank_path),
                                            token_checkpoint or DEFAULT_TOKEN_CHECKPOINT)
        self.name = f"studio: {model_name}"
        self.description = f"the studio's '{model_name}' model through PreferenceModel.fit / Taste.log_odds"

    def fit_user(self, history: History) -> Scorer:
        from prefstudio.preference.model import JudgedPairs

        self.prompts.clear()
        n = history.liked.shape[0]
        ids = [(f"liked{i}", f"disliked{i}") for i in range(n)]
        rows = {image: history.liked[i] if image.startswith("liked") else history.disliked[i]
                for i, pair in enumerate(ids) for image in pair}
        keys = self.prompts.register(history.prompts, n)
        prompt_of = {image: keys[i] for i, pair in enumerate(ids) for image in pair}
        judged = JudgedPairs(ids, lambda images: torch.stack([rows[s] for s in images]).float(),
                             lambda images: [prompt_of[s] for s in images])
        taste, self.last_outcome = self.model.fit(judged)
        self.last_taste = taste

        def score(features, prompts=None):
            context = taste.prompt_context(self.prompts.register(prompts, features.shape[0]))
            with torch.no_grad():
                return taste.log_odds(features.float(), context).double()

        return score


STUDIO_MODELS = ("user-embedding", "preference-tokens", "auto")


def studio_methods(encoder_name: str, text_encoder_name: str) -> list[Method]:
    return [StudioModel(name, encoder_name, text_encoder_name) for name in STUDIO_MODELS]
