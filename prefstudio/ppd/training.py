"""PPD training: Diffusion-DPO (002 eq. 6) of a user adapter on a frozen SD/SDXL-Turbo UNet.

Runs in one process or under `accelerate launch` on several GPUs (each process takes its
share of every epoch's batches; gradients of the adapter are averaged by accelerate). The
base model is loaded as the studio loads it (`load_diffusers_generator`: a known name, a hub
id or a local folder) in float32; `mixed_precision` ("bf16", "fp16") runs the forward passes
under autocast.

Writes into `out`:
    log.jsonl                       one line per logged step: step, loss, implicit_accuracy, pairs, ties
    data.json                       what the data gave (users, pairs, ties, left out)
    checkpoint-<step>/ and final/   adapter.safetensors + adapter.json (prefstudio.ppd.adapter)
"""
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.ppd.adapter import AdapterConfig, UserAdapter
from prefstudio.ppd.data import (
    TrainingPair, build_synthetic_rewards, histories_and_pairs, one_hot_users, read_user_embeddings,
    synthetic_reward_pairs,
)
from prefstudio.ppd.dpo import ConditionedDenoiser, dpo_loss, drop_users
from prefstudio.ppd.user_vectors import FROM_FILE, SYNTHETIC

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    model: str  # base model: sd-turbo, sdxl-turbo, a hub id or a diffusers folder
    data: str  # pair data set root (prefstudio.preference.pair_data layout)
    out: str
    # "embeddings:<file>" (per-user embeddings, e.g. from `ppd embed-users`) or
    # "synthetic:clip,aesthetic,pickscore" (002 §5.1)
    users: str
    history: int = 4  # pairs per user that make the embedding; not training targets
    tokens: int = 4
    beta: float = 1.0  # β of eq. 6 (the paper tunes it in [0.1, 2]); the loss uses β·T
    learning_rate: float = 1e-5
    batch_size: int = 4  # pairs per process per step
    gradient_accumulation: int = 1
    epochs: int = 1
    max_steps: int = 0  # 0: as many as the epochs give
    user_dropout: float = 0.1  # share of pairs trained with the zero ("no user") embedding
    resolution: int = 0  # 0: the model's own (512 for SD-Turbo)
    seed: int = 0
    mixed_precision: str = "no"
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    clip: str = ""  # synthetic users: the CLIP model of the clip reward (default ViT-L/14)
    aesthetic_head: str = ""  # synthetic users: the LAION aesthetic head file or hub path
    pickscore: str = ""  # synthetic users: the PickScore model (default yuvalkirstain/PickScore_v1)

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidInput(f"mixed precision is one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if not 0 <= self.user_dropout < 1:
            raise InvalidInput(f"user dropout must lie in [0, 1), got {self.user_dropout}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise InvalidInput(f"β must be a positive number, got {self.beta}")
        if not (0 < self.learning_rate < 1 and math.isfinite(self.learning_rate)):
            raise InvalidInput(f"learning rate must lie in (0, 1), got {self.learning_rate}")
        for name in ("max_steps", "save_every", "resolution"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name.replace('_', ' ')} must be 0 or more, got {getattr(self, name)}")
        for name in ("batch_size", "gradient_accumulation", "epochs", "history", "tokens", "log_every"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not self.users.startswith(("embeddings:", "synthetic:")):
            raise InvalidInput("users must be 'embeddings:<file>' or 'synthetic:clip,aesthetic,pickscore'")


def image_loader(resolution: int):
    """path -> pixels [1, 3, R, R] in [0, 1], read with the store's bounded image reader."""
    import numpy as np
    from PIL import Image

    from prefstudio.store.image_files import load_untrusted_image

    def load(path) -> torch.Tensor:
        image = load_untrusted_image(path).convert("RGB").resize((resolution, resolution), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    return load


def training_pairs(config: TrainConfig, load_pixels, device) -> tuple[list[TrainingPair], dict, dict]:
    """(pairs, {user: embedding}, data report) as the config asks."""
    from prefstudio.preference.pair_data import PairDataSet

    data = PairDataSet.read(config.data, splits=())
    kind, _, value = config.users.partition(":")
    if kind == "synthetic":
        names = [n.strip() for n in value.split(",") if n.strip()]
        rewards = build_synthetic_rewards(names, config.clip or None, config.aesthetic_head or None,
                                          config.pickscore or None, device=device)
        pairs, report = synthetic_reward_pairs(data.train, rewards, load_pixels, config.seed)
        return pairs, one_hot_users(names), {"user_embedding": SYNTHETIC + ", ".join(names), **report.as_dict()}
    embeddings, source = read_user_embeddings(value)
    _, pairs, report = histories_and_pairs(data.train, config.history)
    missing = sorted({p.user for p in pairs} - set(embeddings))
    pairs = [p for p in pairs if p.user in embeddings]
    if not pairs:
        raise InvalidInput(f"no training pair has a user with an embedding in {value}")
    return pairs, embeddings, {"user_embedding": FROM_FILE + (source or value), **report.as_dict(),
                               "users_without_embedding": len(missing)}


class PromptCache:
    """Text conditioning per prompt, computed once (the text encoders are frozen)."""

    def __init__(self, generator):
        self.generator, self.cache = generator, {}

    def batch(self, prompts: list[str]) -> tuple[torch.Tensor, dict | None]:
        for p in prompts:
            if p not in self.cache:
                self.cache[p] = self.generator.encode_prompt(p)
        conds = [self.cache[p] for p in prompts]
        embeds = torch.cat([c.embeds for c in conds])
        if self.generator.family != "sdxl":
            return embeds, None
        return embeds, {"text_embeds": torch.cat([c.pooled for c in conds]),
                        "time_ids": torch.cat([c.ids for c in conds])}


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> scaled VAE latents (the mean of the posterior: no sampling noise)."""
    latents = vae.encode((pixels * 2 - 1).to(vae.device, vae.dtype)).latent_dist.mean
    if getattr(vae.config, "shift_factor", None):
        latents = latents - vae.config.shift_factor
    return latents * vae.config.scaling_factor


def train(config: TrainConfig) -> dict:
    """Train, checkpoint and log; returns the final summary (also written to out/summary.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler

    from prefstudio.generators.diffusers_onestep import load_diffusers_generator

    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    out = Path(config.out)
    generator = load_diffusers_generator(config.model, device=accelerator.device, dtype="float32",
                                         resolution=config.resolution or None)
    if generator.family not in ("sd", "sdxl"):
        raise InvalidInput(f"{config.model} is a {generator.family} model; the PPD adapter goes into SD/SDXL UNets")
    load_pixels = image_loader(generator.resolution)
    pairs, users, report = training_pairs(config, load_pixels, accelerator.device)
    user_dim = next(iter(users.values())).shape[0]
    unet, vae = generator.denoiser, generator.pipeline.vae
    scheduler = DDPMScheduler.from_config(generator.pipeline.scheduler.config)
    adapter = UserAdapter(unet, AdapterConfig(
        user_dim=user_dim, tokens=config.tokens, base_model=config.model,
        user_embedding=report["user_embedding"],
        provenance={"train": asdict(config), "data": report}))
    model = ConditionedDenoiser(unet, adapter, scheduler)
    optimizer = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=config.learning_rate)
    loader = torch.utils.data.DataLoader(pairs, batch_size=config.batch_size, shuffle=True, collate_fn=list,
                                         generator=torch.Generator().manual_seed(config.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    prompts = PromptCache(generator)
    beta_t = config.beta * scheduler.config.num_train_timesteps
    dropout_rng = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data.json").write_text(json.dumps(report, indent=2) + "\n")
        log_file = (out / "log.jsonl").open("a")
    step, started, window = 0, time.perf_counter(), []
    total = config.max_steps or config.epochs * math.ceil(len(loader) / config.gradient_accumulation)
    model.train()
    while step < total:
        for batch in loader:
            with accelerator.accumulate(model):
                pixels_liked = torch.cat([load_pixels(p.liked) for p in batch])
                pixels_disliked = torch.cat([load_pixels(p.disliked) for p in batch])
                latents_liked, latents_disliked = encode_latents(vae, pixels_liked), encode_latents(vae, pixels_disliked)
                text, added = prompts.batch([p.prompt for p in batch])
                user = drop_users(torch.stack([users[p.user] for p in batch]), config.user_dropout, dropout_rng)
                tie = torch.tensor([p.tie for p in batch], device=accelerator.device)
                errors = model(latents_liked, latents_disliked, text, user.to(accelerator.device), added)
                result = dpo_loss(*errors, beta_t=beta_t, tie=tie)
                accelerator.backward(result.loss)
                optimizer.step()
                optimizer.zero_grad()
            # loss, implicit-accuracy hits, decided pairs, ties of this batch, summed over processes
            hits = result.margin.gt(0).float()[~tie].sum() + 0.5 * result.margin.eq(0).float()[~tie].sum()
            stats = torch.stack([result.loss.detach() * len(batch), hits, torch.tensor(float(result.decided)).to(hits),
                                 tie.sum().to(hits)])
            window.append(accelerator.reduce(stats, reduction="sum").cpu())
            if accelerator.sync_gradients:
                step += 1
                if step % config.log_every == 0 or step == total:
                    w, window = torch.stack(window).sum(0), []
                    if accelerator.is_main_process:
                        pairs_seen = float(w[2] + w[3])
                        line = {"step": step, "loss": round(float(w[0]) / pairs_seen, 6),
                                "implicit_accuracy": round(float(w[1] / w[2]), 4) if w[2] else None,
                                "pairs": int(pairs_seen), "ties": int(w[3]),
                                "seconds": round(time.perf_counter() - started, 2)}
                        log_file.write(json.dumps(line) + "\n")
                        log_file.flush()
                if config.save_every and step % config.save_every == 0 and step < total:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        accelerator.unwrap_model(model).adapter.save(out / f"checkpoint-{step}")
                if step >= total:
                    break
    accelerator.wait_for_everyone()
    summary = {"steps": step, "pairs": len(pairs), "data": report, "seconds": round(time.perf_counter() - started, 2)}
    if accelerator.is_main_process:
        log_file.close()
        accelerator.unwrap_model(model).adapter.save(out / "final")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return summary
