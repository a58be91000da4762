"""Two-stage training of the preference-token model (000 §3.3, §4.1; 001 train.py/train2.py).

    # stage 1: the backbone (lite: all weights; vlm: LoRA) with L_all, and P_v with it
    # when the config's stage 1 has preference_tokens (L_p) > 0
    python -m prefstudio_research.train.preference_tokens --config assets/preference_tokens/lite.json \
        --data data/bench --stage 1 --out runs/lite/stage1
    # stage 2: from the stage-1 checkpoint, everything frozen but P_v (added here, with the
    # stage-2 L_p, if the stage-1 model has none)
    python -m prefstudio_research.train.preference_tokens --config assets/preference_tokens/lite.json \
        --data data/bench --stage 2 --resume runs/lite/stage1 --out runs/lite/stage2
    # several GPUs (the paper's 8-GPU run):
    accelerate launch --num_processes 8 -m prefstudio_research.train.preference_tokens --config \
        assets/preference_tokens/idefics2-8b.json --data DATA --stage 1 --out runs/idefics2/stage1

Where P_v starts is read two ways. 000 §4.1: the model is trained with the loss, "after
which the model weights are fixed, and only the learnable preference tokens are further
tuned" (P_v exists in stage 1); 001's README: stage 2 "introduces" them. Both run here: a
stage-1 L_p > 0 trains P_v with the backbone, L_p = 0 trains without (also the "w/o P_v"
ablation) and stage 2 then adds fresh ones. The lite config uses the first; what each
gives on PrefBench is in docs/preference_tokens.md.

A training example is one judged pair (z_pos, z_neg) of a training user and a history of
N_ref other pairs of the same user that share no image with it, drawn at random and in a
random order every time (the shuffle of §4.1; it matters to the VLM, the lite model reads
the history as a set). Validation uses the *validation users*
(their references and 1v1 targets), never the training set. The weights kept are those of
the best validation accuracy; log.jsonl holds every logged step.

`train_lite_on_features` is the same two stages for callers that hold features, not files
(the benchmark harness).
"""
import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.eval.metrics import top_k_hits
from prefstudio.preference.losses import preference_loss
from prefstudio.preference.pair_data import PairDataSet
from prefstudio.preference.tokens import (LiteConfig, LiteTokenModel, PairFeatures, TargetFeatures,
                                          save_token_model)


@dataclass
class StageConfig:
    steps: int
    batch_size: int  # pairs per optimizer step on each process (in grad_accum micro-batches)
    lr: float
    weight_decay: float = 0.0
    n_ref: int = 8
    # Each step's history length is drawn from these (empty: always n_ref), so one model reads
    # short and long histories; validation then averages over the same lengths.
    history_lengths: list[int] = field(default_factory=list)
    targets_per_history: int = 1  # lite: several target pairs share one encoded history (cheaper signal)
    contrastive: bool = True  # L_all; False = L_base alone (Table 5's baseline)
    grad_accum: int = 1
    eval_every: int = 250
    warmup_steps: int = 0
    preference_tokens: int = 0  # L_p: stage 1, trained with the backbone (0: none); stage 2, added if the model has none
    seed: int = 0


def read_run_config(path: str | Path) -> dict:
    """{"backbone": "lite"|"vlm", "model": {...}, "stage1": StageConfig, "stage2": StageConfig}."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidInput(f"cannot read the training config {path}: {err}") from None
    if raw.get("backbone") not in ("lite", "vlm"):
        raise InvalidInput(f"{path}: backbone must be 'lite' or 'vlm'")
    known = {f.name for f in fields(StageConfig)}
    config = {"backbone": raw["backbone"], "model": dict(raw.get("model", {}))}
    for stage in ("stage1", "stage2"):
        unknown = set(raw.get(stage, {})) - known
        if unknown:
            raise InvalidInput(f"{path}: unknown {stage} settings {sorted(unknown)}")
        config[stage] = StageConfig(**raw[stage])
    return config


class HistorySampler:
    """Random (target pair, history) examples: judgment i is (users[i], liked[i], disliked[i]),
    images named by any hashable key (a path, a feature row)."""

    def __init__(self, users: list, liked: list, disliked: list, n_ref: int):
        self.liked, self.disliked, self.n_ref = liked, disliked, n_ref
        per_user: dict = {}
        for i, user in enumerate(users):
            per_user.setdefault(user, []).append(i)
        self.per_user = {u: idx for u, idx in per_user.items() if len(idx) > n_ref}
        self.user_of = {i: u for u, idx in self.per_user.items() for i in idx}
        self.targets = sorted(self.user_of)
        if not self.targets:
            raise InvalidInput(f"no training user has more than N_ref = {n_ref} judgments")
        self.skipped_users = len(per_user) - len(self.per_user)

    def sample(self, generator: torch.Generator, targets: int = 1) -> tuple[list[int], list[int]] | None:
        """`targets` target pairs of one user and n_ref other pairs of theirs sharing no image with
        them, in random order; None when this draw cannot make that."""
        first = self.targets[int(torch.randint(len(self.targets), (), generator=generator))]
        own = self.per_user[self.user_of[first]]
        others = [own[i] for i in torch.randperm(len(own), generator=generator).tolist() if own[i] != first]
        chosen, shown = [first], {self.liked[first], self.disliked[first]}
        for i in others:
            if len(chosen) == targets:
                break
            chosen.append(i)
            shown |= {self.liked[i], self.disliked[i]}
        pool = [i for i in others if i not in chosen and self.liked[i] not in shown and self.disliked[i] not in shown]
        if len(chosen) < targets or len(pool) < self.n_ref:
            return None
        return chosen, pool[: self.n_ref]

    def batch(self, size: int, generator: torch.Generator, targets: int = 1) -> list[tuple[list[int], list[int]]]:
        examples = []
        for _ in range(size * 20):
            example = self.sample(generator, targets)
            if example is not None:
                examples.append(example)
                if len(examples) == size:
                    return examples
        raise InvalidInput("training users' judgments share too many images to draw disjoint histories")


# ---- what a stage trains on -------------------------------------------------------------------
class LiteTask:
    """Feature tables, the training judgments as rows (liked, disliked, liked's prompt,
    disliked's prompt; prompts -1 when the model reads none; rows of three columns share one
    prompt) and the validation users as (history rows, target rows); a validation history is
    read at each of the task's history lengths (its first n pairs)."""

    def __init__(self, images, prompts, users, rows, validation, n_ref):
        self.images, self.prompts = images, prompts
        self.users, self.rows = users, self._four(rows)
        self.validation = [(self._four(h), self._four(t)) for h, t in validation]
        self.groups = [("val", len(validation))]  # named blocks of validation users, logged apart
        self.by_group: dict[str, float] = {}
        self.set_n_ref(n_ref)

    @staticmethod
    def _four(rows: torch.Tensor) -> torch.Tensor:
        return rows if rows.shape[-1] == 4 else torch.cat([rows, rows[..., 2:3]], -1)

    def join(self, other: "LiteTask", n_ref: int, names: tuple[str, str] = ("val", "other")) -> "LiteTask":
        """Both tasks' training users and validation users in one task (feature tables joined);
        `names` name the two blocks of validation users in the log."""
        if (self.prompts is None) != (other.prompts is None):
            raise InvalidInput("both tasks must read prompts, or neither")
        offset = torch.tensor([0, 0, 0, 0])
        offset[:2] = self.images.shape[0]
        if self.prompts is not None:
            offset[2:] = self.prompts.shape[0]
        images = torch.cat([self.images, other.images])
        prompts = None if self.prompts is None else torch.cat([self.prompts, other.prompts])
        users = [(0, u) for u in self.users] + [(1, u) for u in other.users]
        validation = self.validation + [(h + offset, t + offset) for h, t in other.validation]
        joined = LiteTask(images, prompts, users, torch.cat([self.rows, other.rows + offset]), validation, n_ref)
        joined.groups = [(names[0], len(self.validation)), (names[1], len(other.validation))]
        return joined

    def set_n_ref(self, n_ref: int, lengths: list[int] | None = None) -> None:
        """Histories of `n_ref` pairs, or of one of `lengths` drawn per batch."""
        self.lengths = sorted(set(lengths or [n_ref]))
        self.samplers = {n: HistorySampler(self.users, self.rows[:, 0].tolist(), self.rows[:, 1].tolist(), n)
                         for n in self.lengths}
        self.sampler = self.samplers[self.lengths[-1]]  # the longest: the fewest users can serve it

    def batch(self, size: int, generator: torch.Generator, targets: int = 1):
        n = self.lengths[int(torch.randint(len(self.lengths), (), generator=generator))]
        return self.samplers[n].batch(size, generator, targets)

    @classmethod
    def from_data(cls, data: PairDataSet, scorer, n_ref: int) -> "LiteTask":
        """Validation histories hold every reference pair of a validation user (`n_ref` or more)."""
        validation = [(scorer.rows(data.references["val"][u]),
                       scorer.rows([j for j in data.targets_1v1["val"] if j.user_id == u]))
                      for u in data.users["val"] if u in data.references["val"]]
        short = [len(data.references["val"][u]) for u in data.users["val"]
                 if len(data.references["val"].get(u, [])) < n_ref]
        if short:
            raise InvalidInput(f"{len(short)} validation users have fewer than N_ref = {n_ref} reference pairs")
        return cls(scorer.image_features, scorer.prompt_features, [j.user_id for j in data.train],
                   scorer.rows(data.train), validation, n_ref)

    @classmethod
    def from_features(cls, train_users: list[PairFeatures], validation: list[tuple], n_ref: int) -> "LiteTask":
        """Features in, as a harness holds them; an image is identified by its feature vector.
        validation: (history, liked [T,Di], disliked [T,Di]) per user, plus the targets' prompt
        features [T,Dt] as a fourth item when the histories carry prompts."""
        with_prompts = train_users[0].prompts is not None
        for item in validation:
            if with_prompts and (len(item) < 4 or item[0].prompts is None):
                raise InvalidInput("the training histories carry prompts, so the validation histories and "
                                   "targets must too: pass (history, liked, disliked, target prompts)")
        histories = list(train_users) + [item[0] for item in validation]
        all_images = torch.cat([torch.cat([h.liked, h.disliked]) for h in histories]
                               + [torch.cat([item[1], item[2]]) for item in validation])
        images, image_rows = torch.unique(all_images, dim=0, return_inverse=True)
        prompts, prompt_rows = None, None
        if with_prompts:  # a history's disliked images may have prompts of their own
            prompts, prompt_rows = torch.unique(torch.cat(
                [torch.cat([h.prompts, h.prompts if h.disliked_prompts is None else h.disliked_prompts])
                 for h in histories] + [item[3] for item in validation]), dim=0, return_inverse=True)
        image_at, prompt_at = iter(image_rows.tolist()), iter([] if prompt_rows is None else prompt_rows.tolist())

        # Rows are read back in the order the features were concatenated above.
        histories_rows = []
        for h in histories:
            n = h.liked.shape[0]
            liked, disliked = [next(image_at) for _ in range(n)], [next(image_at) for _ in range(n)]
            histories_rows.append([liked, disliked])
        target_rows = []
        for item in validation:
            t = item[1].shape[0]
            target_rows.append([[next(image_at) for _ in range(t)], [next(image_at) for _ in range(t)]])
        for pair in histories_rows:
            n = len(pair[0])
            pair.append([next(prompt_at) for _ in range(n)] if with_prompts else [-1] * n)
            pair.append([next(prompt_at) for _ in range(n)] if with_prompts else [-1] * n)
        for pair in target_rows:
            t = len(pair[0])
            pair.append([next(prompt_at) for _ in range(t)] if with_prompts else [-1] * t)
            pair.append(pair[-1])
        as_rows = [torch.tensor(r).T.reshape(-1, 4) for r in histories_rows]
        train_rows, val_histories = as_rows[: len(train_users)], as_rows[len(train_users):]
        val_targets = [torch.tensor(r).T.reshape(-1, 4) for r in target_rows]
        users = [u for u, r in enumerate(train_rows) for _ in range(r.shape[0])]
        return cls(images, prompts, users, torch.cat(train_rows), list(zip(val_histories, val_targets)), n_ref)

    def _prompts(self, rows):
        return None if self.prompts is None else self.prompts[rows]

    def history(self, rows) -> PairFeatures:
        return PairFeatures(self.images[rows[..., 0]], self.images[rows[..., 1]], self._prompts(rows[..., 2]),
                            self._prompts(rows[..., 3]))

    def logits(self, model, examples):
        """-> pos_like, pos_dislike, neg_like, neg_dislike [B·T] (T target pairs per history)."""
        history = self.rows[torch.tensor([h for _, h in examples])]  # [B, N, 4]
        target = self.rows[torch.tensor([t for t, _ in examples])]  # [B, T, 4]
        prompts = self._prompts(target[..., 2:4].flatten(1, 2))  # each image's own prompt
        targets = TargetFeatures(self.images[target[..., :2]].flatten(1, 2),  # [B, 2T, D]: liked, disliked, ...
                                 prompts)
        m_like, m_dislike = model(self.history(history), targets)
        return m_like[:, 0::2].flatten(), m_dislike[:, 0::2].flatten(), m_like[:, 1::2].flatten(), \
            m_dislike[:, 1::2].flatten()

    @torch.no_grad()
    def validation_accuracy(self, model) -> tuple[float, int]:
        """Top-1, 1 liked vs 1 disliked, over the validation users' targets, averaged over the
        history lengths (each validation history cut to its first n pairs)."""
        hits, owner = [], []
        for n in self.lengths:
            for user, (history, targets) in enumerate(self.validation):
                both = TargetFeatures(self.images[targets[:, :2]].flatten(0, 1),
                                      self._prompts(targets[:, 2:4].flatten(0, 1)))
                m_like, m_dislike = model(self.history(history[:n]), both)
                hits.append(top_k_hits((m_like - m_dislike).reshape(-1, 2), 1))
                owner += [user] * hits[-1].numel()
        hits, owner = torch.cat(hits), torch.tensor(owner)
        start = 0
        for name, count in self.groups:
            mask = (owner >= start) & (owner < start + count)
            self.by_group[name] = float(hits[mask].float().mean()) if bool(mask.any()) else float("nan")
            start += count
        return float(hits.mean()), hits.numel()


class VLMTask:
    """Training pairs as images; validation through the evaluation protocol's scorer."""

    def __init__(self, data: PairDataSet, scorer, n_ref: int):
        self.data, self.scorer = data, scorer
        judgments = data.train
        self.sampler = HistorySampler([j.user_id for j in judgments], [j.liked for j in judgments],
                                      [j.disliked for j in judgments], n_ref)
        self.n_ref = n_ref

    def batch(self, size: int, generator: torch.Generator, targets: int = 1):
        return self.sampler.batch(size, generator, targets)

    def logits(self, model, examples):
        unwrapped = self.scorer.model
        sequences = []
        for (target,), history in examples:
            pairs = self.scorer.image_history([self.data.train[i] for i in history])
            t = self.data.train[target]
            for image in (t.liked, t.disliked):
                sequences.append(unwrapped.sequence(pairs, self.scorer._load(image), t.prompt))
        # One example: both sequences hold the same history images, which are then encoded once.
        m_like, m_dislike = model(unwrapped.encode(sequences), shared_history=len(examples) == 1)
        return m_like[0::2], m_dislike[0::2], m_like[1::2], m_dislike[1::2]

    def validation_accuracy(self, model) -> tuple[float, int]:
        from prefstudio_research.eval.protocol import group_scores

        scores = group_scores(self.scorer, self.data, "val", self.n_ref, "1v1")
        hits = torch.cat([top_k_hits(s, 1) for s in scores.values() if len(s)])
        return float(hits.mean()), hits.numel()


# ---- one stage ----------------------------------------------------------------------------------
def add_stage_tokens(model, settings: StageConfig, stage: int, log=print) -> None:
    """P_v for this stage: stage 1 adds L_p tokens to train with the backbone; stage 2 adds
    them only to a model that has none, and otherwise tunes the ones it has."""
    if stage == 2 and model.preference_tokens is not None:
        log(f"stage 2: tuning the model's {model.preference_tokens.shape[0]} preference tokens")
        return
    if stage == 2 and not settings.preference_tokens:
        raise InvalidInput("stage 2 needs preference tokens: the stage-1 model has none and L_p is 0")
    if settings.preference_tokens:
        model.add_preference_tokens(settings.preference_tokens, generator=torch.Generator().manual_seed(settings.seed))


def run_stage(model, task, settings: StageConfig, stage: int, log=print, log_file: Path | None = None) -> dict:
    """Train `model` in place for one stage (it must already hold P_v for stage 2) and leave it
    with the weights of its best validation accuracy; returns that step's log record."""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum)
    params = model.stage_parameters(stage)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def lr_at(step):  # linear warm-up, then cosine decay to 10 %
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    wrapped, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(wrapped)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + accelerator.process_index)
    micro = max(1, settings.batch_size // settings.grad_accum)
    best, best_state, running = {"val_top1": -1.0}, None, []
    start = time.perf_counter()

    def evaluate(step):
        nonlocal best, best_state
        if accelerator.is_main_process:
            unwrapped.eval()
            accuracy, n = task.validation_accuracy(unwrapped)
            unwrapped.train()
            loss = sum(running) / len(running) if running else float("nan")
            record = {"stage": stage, "step": step, "loss": loss, "val_top1": accuracy, "val_n": n,
                      "seconds": round(time.perf_counter() - start, 1)}
            if len(getattr(task, "groups", ())) > 1:
                record["val_top1_by_group"] = dict(task.by_group)
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(record) + "\n")
            log(f"stage {stage} step {step:5d}  loss {loss:.4f}  val top-1 {100 * accuracy:.2f} % (n={n})  "
                + "".join(f"[{name} {100 * a:.2f} %] " for name, a in record.get("val_top1_by_group", {}).items())
                + f"{record['seconds']:.0f} s")
            running.clear()
            if accuracy > best["val_top1"]:
                best, best_state = record, unwrapped.trained_state()
        accelerator.wait_for_everyone()

    evaluate(0)
    for step in range(1, settings.steps + 1):
        for _ in range(settings.grad_accum):
            with accelerator.accumulate(wrapped):
                logits = task.logits(wrapped, task.batch(micro, generator, settings.targets_per_history))
                loss = preference_loss(*logits, contrastive=settings.contrastive).total
                running.append(float(loss.detach()))
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        if step % settings.eval_every == 0 or step == settings.steps:
            evaluate(step)
    if accelerator.is_main_process:
        unwrapped.load_trained_state(best_state)
        log(f"stage {stage}: kept step {best['step']} (val top-1 {100 * best['val_top1']:.2f} %); "
            f"{task.sampler.skipped_users} training users had ≤ N_ref judgments and served no example")
    return best


# ---- from files (the CLI) ---------------------------------------------------------------------------
def _encoders(model_config: dict):
    from prefstudio_research.preference.scorers import encoder_named

    return encoder_named(model_config["image_encoder"]), encoder_named(model_config["text_encoder"])


@dataclass
class StudioPeople:
    """Simulated people judging the studio's own images, trained and validated on next to the
    data root's users (lite only; `prefstudio_research.train.studio_histories`)."""

    train: int
    val: int
    pairs_per_user: int = 50
    targets: int = 24
    seed: int = 0
    cache: str | None = None  # folder for the rendered images and their features


def train(config: dict, data_root: str | Path, stage: int, out: str | Path, resume: str | Path | None = None,
          log=print, encoders=None, studio: StudioPeople | None = None) -> dict:
    """Run one stage on a data root (and `studio` people) and save the kept weights to `out`;
    returns the kept step's record. `encoders` (image, text) replaces the lookup of the config's
    encoder names (lite)."""
    from accelerate import PartialState
    from prefstudio_research.preference.scorers import LiteScorer, VLMScorer
    from prefstudio.preference.tokens import load_checkpoint_bank, load_token_model

    settings: StageConfig = config[f"stage{stage}"]
    if stage == 2 and resume is None:
        raise InvalidInput("stage 2 resumes from a stage-1 checkpoint: pass --resume")
    torch.manual_seed(settings.seed)
    data = PairDataSet.read(data_root, splits=("val",))
    resume = Path(resume) if resume is not None else None
    bank = None
    if config["backbone"] == "lite":
        model_config = config["model"]
        if resume is not None:
            model = load_token_model(resume)
            model_config = {"image_encoder": model.config.image_encoder, "text_encoder": model.config.text_encoder}
        image_encoder, text_encoder = encoders or _encoders(model_config)
        scorer = LiteScorer.for_encoders(data, image_encoder, text_encoder)
        longest = max([settings.n_ref, *settings.history_lengths])
        task = LiteTask.from_data(data, scorer, longest)
        if studio is not None:
            from prefstudio_research.train.studio_histories import studio_task_inputs

            histories, validation, studio_how = studio_task_inputs(
                studio.train, studio.val, studio.pairs_per_user, longest, studio.targets, studio.seed,
                None if studio.cache is None else Path(studio.cache), log)
            task = task.join(LiteTask.from_features(histories, validation, longest), longest, ("prefbench", "studio"))
            log(f"joined {studio.train} training and {studio.val} validation people on the studio's images")
        task.set_n_ref(settings.n_ref, settings.history_lengths)
        if resume is None:
            model, bank = new_lite_model(task, model_config, f"training users of {data_root}", settings.seed)
        elif model.config.taste_dim:
            bank = load_checkpoint_bank(resume)
        scorer.check(model)
        scorer.model = model
    else:
        from prefstudio.preference.vlm import VLMConfig, load_vlm, load_vlm_checkpoint

        device = PartialState().device
        model = (load_vlm_checkpoint(resume, device) if resume is not None
                 else load_vlm(VLMConfig(**config["model"]), device))
        if settings.targets_per_history != 1 or settings.history_lengths:
            raise InvalidInput("the VLM backbone trains on one target pair per history of N_ref pairs "
                               "(targets_per_history = 1, no history_lengths)")
        task = VLMTask(data, VLMScorer(model), settings.n_ref)
    add_stage_tokens(model, settings, stage, log)
    if config["backbone"] == "lite":  # the longest history it has been trained to read at once
        model.config.max_history = max(model.config.max_history if resume is not None else 0, *task.lengths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").write_text("")
    best = run_stage(model.train(), task, settings, stage, log, out / "log.jsonl")
    if studio is not None and config["backbone"] != "lite":
        raise InvalidInput("studio people train the lite backbone only")
    provenance = {"stage": stage, "data": str(data_root), "resumed_from": str(resume) if resume else None,
                  "studio_people": None if studio is None else dict(asdict(studio), how=studio_how),
                  "settings": asdict(settings), "kept": best, "command": " ".join(sys.argv)}
    if PartialState().is_main_process:
        if model.config.backbone == "lite":
            save_token_model(model, out, provenance, bank)
        else:
            model.save(out, provenance)
    return best


def new_lite_model(task: LiteTask, architecture: dict, source: str, seed: int):
    """A fresh lite model for the task's features -> (model, its user bank or None): with
    taste_dim, it reads a bank of the task's training users (trained here, `source` says on
    what); its input standardisation is fitted on the training judgments' images and prompts."""
    from prefstudio.preference.user_embedding import train_user_bank

    model = LiteTokenModel(LiteConfig(image_dim=task.images.shape[1],
                                      text_dim=0 if task.prompts is None else task.prompts.shape[1], **architecture))
    bank = None
    if model.config.taste_dim:
        per_user: dict = {}
        for i, user in enumerate(task.users):
            per_user.setdefault(user, []).append(i)
        pairs = [(task.images[task.rows[idx, 0]], task.images[task.rows[idx, 1]])
                 for idx in (torch.tensor(v) for v in per_user.values())]
        bank = train_user_bank(pairs, model.config.image_encoder, source, dim=model.config.taste_dim, seed=seed)
        model.set_taste_space(bank)
    model.fit_standardisation(task.images[task.rows[:, :2].flatten().unique()],
                              None if task.prompts is None else task.prompts[task.rows[:, 2].unique()])
    return model, bank


# ---- from features (the benchmark harness) -----------------------------------------------------
def train_lite_on_features(train_users: list[PairFeatures], validation: list[tuple],
                           model: dict, stage1: StageConfig, stage2: StageConfig | None,
                           image_encoder: str, text_encoder: str | None = None, log=print) -> dict:
    """Both stages on features: train_users are the training users' judged pairs; validation is
    (history, liked targets [T,Di], disliked targets [T,Di][, target prompts [T,Dt]]) per
    validation user. Prompts are read when the training histories carry them. Returns {"stage1":
    the stage-1 model, "stage2": the stage-2 model (None without stage2), "bank": the user bank whose
    taste space they read (None without taste_dim), "log": [kept records]}."""
    import copy

    torch.manual_seed(stage1.seed)
    task = LiteTask.from_features(train_users, validation, stage1.n_ref)
    task.set_n_ref(stage1.n_ref, stage1.history_lengths)
    architecture = dict(model, image_encoder=image_encoder,
                        text_encoder=text_encoder if task.prompts is not None else None)
    first, bank = new_lite_model(task, architecture, "training users (features)", stage1.seed)
    first.config.max_history = max(task.lengths)
    add_stage_tokens(first, stage1, 1, log)
    kept = [run_stage(first.train(), task, stage1, 1, log)]
    second = None
    if stage2 is not None:
        second = copy.deepcopy(first)
        add_stage_tokens(second, stage2, 2, log)
        task.set_n_ref(stage2.n_ref, stage2.history_lengths)
        second.config.max_history = max(first.config.max_history, *task.lengths)
        kept.append(run_stage(second.train(), task, stage2, 2, log))
        second.eval()
    return {"stage1": first.eval(), "stage2": second, "bank": bank, "log": kept}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefstudio_research.train.preference_tokens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON with backbone, model, stage1, stage2")
    parser.add_argument("--data", required=True, help="data root (images.jsonl, pairs/)")
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--resume", help="stage-1 checkpoint folder (stage 2)")
    parser.add_argument("--base-loss-only", action="store_true", help="train with L_base alone (Table 5 ablation)")
    parser.add_argument("--preference-tokens", type=int,
                        help="L_p of this stage (Table 6 ablation; at stage 1, 0 = the w/o P_v ablation)")
    parser.add_argument("--steps", type=int, help="override the config's number of steps")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--studio-people", type=int, nargs=2, metavar=("TRAIN", "VAL"),
                        help="also train on TRAIN and validate on VAL simulated people judging the studio's own "
                             "generated images (lite; prefstudio_research.train.studio_histories)")
    parser.add_argument("--studio-seed", type=int, default=0, help="seed of the studio people's tastes and labels")
    parser.add_argument("--studio-cache", default="data/studio_images",
                        help="folder for the rendered studio images and their features")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = read_run_config(args.config)
    settings = config[f"stage{args.stage}"]
    if args.base_loss_only:
        settings.contrastive = False
    for name in ("preference_tokens", "steps", "seed"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    studio = None
    if args.studio_people:
        studio = StudioPeople(*args.studio_people, seed=args.studio_seed, cache=args.studio_cache)
    train(config, args.data, args.stage, args.out, args.resume, studio=studio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
