"""Two-stage training of the preference-token model (000 §3.3, §4.1; 001 train.py/train2.py).

    # stage 1: the backbone (lite: all weights; vlm: LoRA) with L_all, no preference tokens
    python -m prefstudio.train.preference_tokens --config assets/preference_tokens/lite.json \
        --data data/bench --stage 1 --out runs/lite/stage1
    # stage 2: from the stage-1 checkpoint, add P_v (L_p from the config) and train P_v alone
    python -m prefstudio.train.preference_tokens --config assets/preference_tokens/lite.json \
        --data data/bench --stage 2 --resume runs/lite/stage1 --out runs/lite/stage2
    # several GPUs (the paper's 8-GPU run):
    accelerate launch --num_processes 8 -m prefstudio.train.preference_tokens --config \
        assets/preference_tokens/idefics2-8b.json --data DATA --stage 1 --out runs/idefics2/stage1

A training example is one judged pair (z_pos, z_neg) of a training user, and a history of
N_ref other pairs of the same user that share no image with it, drawn at random and in a
random order every time (the shuffle of §4.1). Validation uses the *validation users*
(val_references + val_1v1), never the training set. The checkpoint kept is the one with the
best validation accuracy; log.jsonl has every logged step.
"""
import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.eval.metrics import top_k_hits
from prefstudio.eval.protocol import group_scores
from prefstudio.preference.losses import preference_loss
from prefstudio.preference.pair_data import Judgment, PairDataSet


@dataclass
class StageConfig:
    steps: int
    batch_size: int  # pairs per optimizer step on each process (with grad_accum micro-batches)
    lr: float
    weight_decay: float = 0.0
    n_ref: int = 8
    contrastive: bool = True  # L_all; False = L_base alone (Table 5's baseline)
    grad_accum: int = 1
    eval_every: int = 250
    warmup_steps: int = 0
    preference_tokens: int = 10  # L_p, used by stage 2
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
    """Random (target pair, history) examples from the training users' judgments."""

    def __init__(self, judgments: list[Judgment], n_ref: int):
        self.judgments = judgments
        self.n_ref = n_ref
        per_user: dict[str, list[int]] = {}
        for i, j in enumerate(judgments):
            per_user.setdefault(j.user_id, []).append(i)
        # Users need n_ref pairs besides the target; the rest only ever serve as targets of none.
        self.per_user = {u: idx for u, idx in per_user.items() if len(idx) > n_ref}
        self.targets = [i for idx in self.per_user.values() for i in idx]
        if not self.targets:
            raise InvalidInput(f"no training user has more than N_ref = {n_ref} judgments")
        self.skipped_users = len(per_user) - len(self.per_user)

    def sample(self, generator: torch.Generator) -> tuple[int, list[int]] | None:
        target = self.targets[int(torch.randint(len(self.targets), (), generator=generator))]
        t = self.judgments[target]
        shown = {t.liked, t.disliked}
        pool = [i for i in self.per_user[t.user_id]
                if i != target and not {self.judgments[i].liked, self.judgments[i].disliked} & shown]
        if len(pool) < self.n_ref:
            return None
        order = torch.randperm(len(pool), generator=generator)[: self.n_ref]
        return target, [pool[i] for i in order]

    def batch(self, size: int, generator: torch.Generator) -> list[tuple[int, list[int]]]:
        examples = []
        for _ in range(size * 20):
            example = self.sample(generator)
            if example is not None:
                examples.append(example)
                if len(examples) == size:
                    return examples
        raise InvalidInput("training users' judgments share too many images to draw disjoint histories")


# ---- backbones ------------------------------------------------------------------------------
def encoder_pair(model_config: dict):
    from prefstudio.preference.scorers import encoder_named

    return encoder_named(model_config["image_encoder"]), encoder_named(model_config["text_encoder"])


def build_lite(model_config: dict, data: PairDataSet, resume: Path | None, encoders=None):
    from prefstudio.preference.pair_data import image_features, prompt_features
    from prefstudio.preference.scorers import LiteScorer
    from prefstudio.preference.tokens import LiteConfig, LiteTokenModel, load_token_model

    if resume is not None:
        model = load_token_model(resume)
        model_config = {"image_encoder": model.config.image_encoder, "text_encoder": model.config.text_encoder}
    image_encoder, text_encoder = encoders or encoder_pair(model_config)
    for kind, encoder in (("image", image_encoder), ("text", text_encoder)):
        if encoder.name != model_config[f"{kind}_encoder"]:
            raise InvalidInput(f"the model reads {kind} features of {model_config[f'{kind}_encoder']!r}, "
                               f"not {encoder.name!r}")
    image_rows, images = image_features(data, image_encoder)
    prompt_rows, prompts = prompt_features(data, text_encoder)
    if resume is None:
        model = LiteTokenModel(LiteConfig(image_dim=images.shape[1], text_dim=prompts.shape[1], **model_config))
        scorer = LiteScorer(model, image_rows, images, prompt_rows, prompts)
        train_rows = scorer.rows(data.train)
        model.fit_standardisation(images[train_rows[:, :2].flatten().unique()], prompts[train_rows[:, 2].unique()])
    return model.train(), LiteScorer(model, image_rows, images, prompt_rows, prompts)


def lite_logits(model, scorer, examples, judgments):
    """-> pos_like, pos_dislike, neg_like, neg_dislike [B] for a batch of examples."""
    from prefstudio.preference.tokens import TargetFeatures

    rows = scorer.rows(judgments)  # [P, 3]
    history = rows[torch.tensor([h for _, h in examples])]  # [B, N, 3]
    target = rows[torch.tensor([t for t, _ in examples])]  # [B, 3]
    images = scorer.image_features[target[:, :2]]  # [B, 2, Di]: liked, disliked
    prompts = scorer.prompt_features[target[:, 2]].unsqueeze(1).expand(-1, 2, -1)
    m_like, m_dislike = model(scorer.history_features(history), TargetFeatures(images, prompts))
    return m_like[:, 0], m_dislike[:, 0], m_like[:, 1], m_dislike[:, 1]


def build_vlm(model_config: dict, resume: Path | None, device):
    from prefstudio.preference.scorers import VLMScorer
    from prefstudio.preference.vlm import VLMConfig, load_vlm, load_vlm_checkpoint

    model = load_vlm_checkpoint(resume, device) if resume is not None else load_vlm(VLMConfig(**model_config), device)
    return model.train(), VLMScorer(model)


def vlm_logits(model, unwrapped, scorer, examples, judgments):
    """One forward over the 2 sequences (liked / disliked target, same history) of every example."""
    sequences = []
    for target, history in examples:
        pairs = scorer.image_history([judgments[i] for i in history])
        t = judgments[target]
        for image in (t.liked, t.disliked):
            sequences.append(unwrapped.sequence(pairs, scorer._load(image), t.prompt))
    # One example: both sequences hold the same history images, which are then encoded once.
    m_like, m_dislike = model(unwrapped.encode(sequences), shared_history=len(examples) == 1)
    return m_like[0::2], m_dislike[0::2], m_like[1::2], m_dislike[1::2]


# ---- the loop -------------------------------------------------------------------------------
def validation_accuracy(scorer, data: PairDataSet, n_ref: int) -> tuple[float, int]:
    """Top-1, 1 liked vs 1 disliked, on the validation users (history: their first n_ref references)."""
    scores = group_scores(scorer, data, "val", n_ref, "1v1")
    hits = torch.cat([top_k_hits(s, 1) for s in scores.values() if len(s)])
    return float(hits.mean()), hits.numel()


def train(config: dict, data_root: str | Path, stage: int, out: str | Path, resume: str | Path | None = None,
          log=print, encoders=None) -> dict:
    """Run one stage; returns the kept (best-validation) log record. `encoders` (image, text)
    replaces the lookup of the config's encoder names (lite only)."""
    from accelerate import Accelerator

    settings: StageConfig = config[f"stage{stage}"]
    if stage == 2 and resume is None:
        raise InvalidInput("stage 2 resumes from a stage-1 checkpoint: pass --resume")
    out = Path(out)
    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum)
    torch.manual_seed(settings.seed)
    data = PairDataSet.read(data_root, splits=("val",))
    sampler = HistorySampler(data.train, settings.n_ref)
    resume = Path(resume) if resume is not None else None
    if config["backbone"] == "lite":
        model, scorer = build_lite(config["model"], data, resume, encoders)
    else:
        model, scorer = build_vlm(config["model"], resume, accelerator.device)
    if stage == 2:
        model.add_preference_tokens(settings.preference_tokens,
                                    generator=torch.Generator().manual_seed(settings.seed))
    params = model.stage_parameters(stage)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def lr_at(step):  # linear warm-up, cosine decay to 10 %
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    wrapped, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(wrapped)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + accelerator.process_index)
    micro = max(1, settings.batch_size // settings.grad_accum)
    provenance = {"stage": stage, "data": str(data_root), "resumed_from": str(resume) if resume else None,
                  "settings": asdict(settings), "command": " ".join(sys.argv)}
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "log.jsonl"
    if accelerator.is_main_process:
        log_file.write_text("")
    best = {"val_top1": -1.0}
    start = time.perf_counter()
    running = []

    def evaluate_and_keep(step):
        nonlocal best
        if accelerator.is_main_process:
            unwrapped.eval()
            accuracy, n = validation_accuracy(scorer, data, settings.n_ref)
            unwrapped.train()
            loss = sum(running) / len(running) if running else float("nan")
            record = {"step": step, "loss": loss, "val_top1": accuracy, "val_n": n,
                      "seconds": round(time.perf_counter() - start, 1)}
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            log(f"stage {stage} step {step:5d}  loss {loss:.4f}  val top-1 {100 * accuracy:.2f} % (n={n})  "
                f"{record['seconds']:.0f} s")
            running.clear()
            if accuracy > best["val_top1"]:
                best = record
                provenance["best"] = record
                _save(unwrapped, out, provenance)
        accelerator.wait_for_everyone()

    evaluate_and_keep(0)
    for step in range(1, settings.steps + 1):
        for _ in range(settings.grad_accum):
            with accelerator.accumulate(wrapped):
                examples = sampler.batch(micro, generator)
                if config["backbone"] == "lite":
                    logits = lite_logits(wrapped, scorer, examples, data.train)
                else:
                    logits = vlm_logits(wrapped, unwrapped, scorer, examples, data.train)
                loss = preference_loss(*logits, contrastive=settings.contrastive).total
                running.append(float(loss.detach()))
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        if step % settings.eval_every == 0 or step == settings.steps:
            evaluate_and_keep(step)
    if accelerator.is_main_process:
        log(f"kept step {best['step']} (val top-1 {100 * best['val_top1']:.2f} %) in {out}; "
            f"{sampler.skipped_users} training users had ≤ N_ref judgments and were skipped")
    return best


def _save(model, out: Path, provenance: dict) -> None:
    from prefstudio.preference.tokens import save_token_model

    if model.config.backbone == "lite":
        save_token_model(model, out, provenance)
    else:
        model.save(out, provenance)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefstudio.train.preference_tokens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON with backbone, model, stage1, stage2")
    parser.add_argument("--data", required=True, help="data root (images.jsonl, pairs/)")
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--resume", help="stage-1 checkpoint folder (stage 2)")
    parser.add_argument("--base-loss-only", action="store_true", help="train with L_base alone (Table 5 ablation)")
    parser.add_argument("--preference-tokens", type=int, help="L_p for stage 2 (Table 6 ablation)")
    parser.add_argument("--steps", type=int, help="override the config's number of steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = read_run_config(args.config)
    settings = config[f"stage{args.stage}"]
    if args.base_loss_only:
        settings.contrastive = False
    if args.preference_tokens is not None:
        settings.preference_tokens = args.preference_tokens
    if args.steps is not None:
        settings.steps = args.steps
    train(config, args.data, args.stage, args.out, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
