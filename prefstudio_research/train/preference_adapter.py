"""Trains a preference adapter (prefstudio/guidance/adapter.py) offline, through a generator.

    python -m prefstudio_research.train.preference_adapter --out checkpoints/preference_adapter_embedded
    accelerate launch -m prefstudio_research.train.preference_adapter --generator sd-turbo --out adapters/sd-turbo
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m prefstudio_research.train.preference_adapter --out ...

The people it learns from are the training users of a user bank (checkpoints/
user_bank_embedded.safetensors: simulated people of PrefBench's population model who judged
embedded-generator images), each represented by their fitted user embedding, the like −
dislike direction of their taste model. Half of each batch is one training user, half a
random mix of a few of them (a mix's taste model is the same mix of directions). The adapter
reads each of them as the studio reads a new person (`served`): Premier's cold start
(`user_embedding.bank_combination`), the bank posterior of 16 images they judged, with
themselves left out of the bank since a new person is not in it. So it learns to serve a
person's own taste from the noisy, blended embedding Instant actually receives, not from an
embedding it will never see (`--served 0`: from their own embedding). Each step draws a training prompt and seeds, renders every person's modulated
image through the generator (differentiable), encodes it with the bank's image encoder,
and maximises

    taste(image)                          the person's taste model, one spread = 1
  − consistency · max(0, margin − c)      c: prompt consistency (normalised); an image may be
                                          less typical of its prompt than an unguided one only
                                          down to `margin` spreads
  − size · mean(offset²)                  small modulations where they do not help
  − dispersion · L_disp                   Premier eq. 6: log mean_{i≠j} exp(−‖a_i − a_j‖² / τ)
                                          over the adapter's outputs a for different training
                                          users on an empty prompt, so different people differ

The taste is measured on the bank's encoder, so the same script trains an adapter for any
generator; under `accelerate launch` every process draws its own batches and gradients are
averaged. Prompts: the even lines of assets/prompts.txt (the odd ones are left for
evaluation, bench/instant.py).
"""
import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prefstudio.guidance.adapter import (
    AdapterShape, PreferenceAdapter, generator_signature, save_adapter,
)
from prefstudio.preference.user_embedding import UserBank
from prefstudio.rewards.prompt_consistency import PromptConsistencyReward

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BANK = REPO_ROOT / "checkpoints" / "user_bank_embedded.safetensors"
REFERENCE_SEEDS = tuple(range(20_000, 20_004))   # unguided images per prompt that set each taste's spread
EMPTY_PROMPT = ""  # Premier computes the dispersion loss on an empty prompt


@dataclass
class TrainSettings:
    steps: int = 200
    people: int = 4  # persons (images) per step
    lr: float = 3e-3
    # The rate falls along a half cosine to `lr · final_lr` at the last step: single steps are
    # noisy (a few people, one prompt), and the adapter kept is the last one (1: constant).
    final_lr: float = 0.0
    consistency: float = 2.0
    margin: float = -1.0
    size: float = 0.02
    dispersion: float = 0.1  # Premier's λ
    temperature: float = 0.5  # τ of L_disp, on the mean squared offset per token entry
    dispersion_people: int = 32
    hidden: int = 64
    user_tokens: int = 4
    mix_users: int = 4  # a mixed person combines this many training users
    # Share of people the adapter reads as the studio serves them: the bank posterior of
    # `judged` images they judged, without themselves in the bank (0: their own embedding).
    served: float = 1.0
    judged: int = 16
    grad_clip: float = 1.0
    seed: int = 0


def training_prompts() -> list[str]:
    from prefstudio.taste_summary import read_prompts

    return read_prompts()[0::2]


def evaluation_prompts() -> list[str]:
    from prefstudio.taste_summary import read_prompts

    return read_prompts()[1::2]


class AdapterObjective:
    """Everything the training objective needs that does not change during training: each
    training prompt's conditioning, its reference images' projected features (they set each
    taste's offset and spread) and its prompt-consistency anchor."""

    def __init__(self, generator, encoder, bank: UserBank, prompts: list[str], settings: TrainSettings):
        if bank.encoder != encoder.name:
            raise ValueError(f"the bank reads {bank.encoder!r} features, the encoder is {encoder.name!r}")
        self.generator, self.encoder, self.bank, self.settings = generator, encoder, bank, settings
        self.prompts = list(prompts)
        self.consistency = PromptConsistencyReward(generator, encoder)
        self.conditioning = {p: generator.encode_prompt(p) for p in self.prompts + [EMPTY_PROMPT]}
        device = generator.device
        self.users = bank.user_embeddings.to(device)
        self.bank_mean, self.bank_std = bank.mean.to(device), bank.std.to(device)
        self.bank_projection = bank.projection.to(device)
        reference = []
        with torch.no_grad():
            for prompt in self.prompts:
                noise = torch.cat([generator.initial_noise(s) for s in REFERENCE_SEEDS])
                reference.append(self.project(generator.render(noise, self.conditioning[prompt])))
        self.reference = torch.cat(reference)  # [R, k]

    def project(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.encoder.encode_shared(pixels).to(self.bank_mean.device)
        return ((features - self.bank_mean) / self.bank_std) @ self.bank_projection

    def people(self, n: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, K], [n, K]) coefficients over the training users: how the adapter reads each
        person, and whose taste it serves. Even rows are one training user, odd rows a
        Dirichlet mix of a few. A share `served` of them is read as the studio reads a new
        person (`served_coefficients`); the rest by their own coefficients."""
        rows = torch.zeros(n, self.users.shape[0])
        for i in range(n):
            chosen = rng.sample(range(self.users.shape[0]), self.settings.mix_users if i % 2 else 1)
            shares = torch.tensor([rng.gammavariate(1.0, 1.0) for _ in chosen])
            rows[i, chosen] = shares / shares.sum()
        rows = rows.to(self.users.device)
        read = rows.clone()
        for i in range(n):
            if rng.random() < self.settings.served:
                read[i] = self.served_coefficients(rows[i], rng)
        return read, rows

    def served_coefficients(self, taste: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """[K] how the studio reads a person of this taste (coefficients [K]) who is not in the
        bank: they judge `judged` reference images (liking the better half under their taste
        plus Gumbel noise, so pairs follow Bradley–Terry), and Instant's cold start
        (`user_embedding.bank_combination`: the tempered bank posterior of their like × dislike
        pairs, worth `judged / 2` independent pairs) combines the *other* training users."""
        count = min(self.settings.judged, self.reference.shape[0]) // 2 * 2
        if count < 2:
            return taste
        pick = torch.tensor(rng.sample(range(self.reference.shape[0]), count), device=self.reference.device)
        shown = self.reference[pick]
        gumbel = torch.tensor([-math.log(-math.log(rng.uniform(1e-9, 1 - 1e-9))) for _ in range(count)],
                              device=shown.device, dtype=shown.dtype)
        order = torch.argsort(shown @ (taste @ self.users) + gumbel, descending=True)
        liked, disliked = shown[order[: count // 2]], shown[order[count // 2:]]
        gaps = (liked[:, None] - disliked[None]).flatten(0, 1)  # every like x dislike pair
        log_likelihood = F.logsigmoid(gaps @ self.users.T).sum(0) * ((count / 2) / gaps.shape[0])
        own = taste > 0
        if bool(own.all()):  # nobody else to read them by
            return taste
        return self.bank.posterior(log_likelihood.masked_fill(own, -math.inf))

    def distinct_users(self, n: int, rng: random.Random) -> torch.Tensor:
        """[n, K] one-hot rows of n different training users (the dispersion loss's batch)."""
        chosen = rng.sample(range(self.users.shape[0]), min(n, self.users.shape[0]))
        return torch.eye(self.users.shape[0], device=self.users.device)[chosen]

    def taste(self, coefficients: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """[B] each person's log-odds of their image, standardised over the reference images."""
        directions = coefficients @ self.users  # [B, k]
        reference = self.reference @ directions.T  # [R, B]
        odds = (projected * directions).sum(-1)
        return (odds - reference.mean(0)) / reference.std(0).clamp_min(1e-6)

    def terms(self, adapter, prompt: str, seeds: list[int], people: tuple[torch.Tensor, torch.Tensor],
              dispersion_coefficients: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The objective's terms for one prompt, one image per (seed, person); `people` as
        `people()` gives them: how the adapter reads each person, and their taste."""
        generator, s = self.generator, self.settings
        conditioning = self.conditioning[prompt]
        read, coefficients = people
        users = read @ self.users
        tokens = generator.conditioning_tokens(conditioning)
        n = users.shape[0]
        batch_tokens = tokens.expand(n, -1, -1)
        if dispersion_coefficients is not None:
            # One adapter call for both (a wrapped, distributed model is called once per step).
            empty = generator.conditioning_tokens(self.conditioning[EMPTY_PROMPT])
            users = torch.cat([users, dispersion_coefficients @ self.users])
            batch_tokens = torch.cat([batch_tokens, empty.expand(dispersion_coefficients.shape[0], -1, -1)])
        offsets = adapter(users, batch_tokens.to(users.dtype))
        image_offsets = offsets[:n]
        noise = torch.cat([generator.initial_noise(seed) for seed in seeds])
        pixels = generator.render(noise, generator.modulate(conditioning, image_offsets))
        projected = self.project(pixels)
        anchor = self.consistency.prepare(prompt)
        consistency = self.consistency.normalise(self.consistency.score(pixels, anchor), anchor)
        out = {"taste": self.taste(coefficients, projected),
               "consistency_shortfall": torch.relu(s.margin - consistency),
               "size": image_offsets.float().pow(2).flatten(1).mean(1)}
        if dispersion_coefficients is not None:
            out["dispersion"] = dispersion_loss(offsets[n:], s.temperature)
        return out

    def objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar that training raises."""
        s = self.settings
        value = (terms["taste"] - s.consistency * terms["consistency_shortfall"] - s.size * terms["size"]).mean()
        if "dispersion" in terms:
            value = value - s.dispersion * terms["dispersion"]
        return value


def dispersion_loss(offsets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Premier eq. 6 (after Diffuse and Disperse's InfoNCE form): log of the mean over pairs of
    different people of exp(−D/τ), D the squared L2 distance of their modulation directions
    (per entry). Lower when people's directions are further apart."""
    flat = offsets.float().flatten(1)
    # Squared distances by expansion: differentiable where two directions coincide (cdist is not).
    norms = flat.pow(2).sum(1)
    distance = (norms[:, None] + norms[None, :] - 2 * flat @ flat.T).clamp_min(0) / flat.shape[1]
    n = flat.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=flat.device)
    return torch.logsumexp(-distance[off_diagonal] / temperature, 0) - math.log(n * (n - 1))


def new_adapter(objective: AdapterObjective, settings: TrainSettings) -> PreferenceAdapter:
    generator = objective.generator
    tokens = generator.conditioning_tokens(objective.conditioning[objective.prompts[0]])
    shape = AdapterShape(user_dim=objective.users.shape[1], token_dim=int(tokens.shape[1]),
                         hidden=settings.hidden, user_tokens=settings.user_tokens)
    torch.manual_seed(settings.seed)
    user_scale = float(objective.users.norm(dim=1).mean())
    return PreferenceAdapter(shape, user_scale).to(generator.device)


def fixed_batch(objective: AdapterObjective, n: int, seed: int) -> list[tuple[str, list[int], torch.Tensor]]:
    """A reproducible evaluation batch: (prompt, seeds, coefficients) per prompt."""
    rng = random.Random(seed)
    return [(prompt, [rng.randrange(2**31) for _ in range(n)], objective.people(n, rng))
            for prompt in objective.prompts]


def evaluate(objective: AdapterObjective, adapter, batch) -> float:
    """The objective (without the dispersion term) on a fixed batch."""
    with torch.no_grad():
        values = [float(objective.objective(objective.terms(adapter, prompt, seeds, people)))
                  for prompt, seeds, people in batch]
    return sum(values) / len(values)


def train(objective: AdapterObjective, settings: TrainSettings, adapter: PreferenceAdapter | None = None,
          accelerator=None, log=print) -> tuple[PreferenceAdapter, list[dict]]:
    """Adam on the adapter; returns it (unwrapped) and one log row per step."""
    adapter = adapter or new_adapter(objective, settings)
    adapter.requires_grad_(True).train()
    optimiser = torch.optim.Adam(adapter.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: settings.final_lr + (1 - settings.final_lr)
                                                 * 0.5 * (1 + math.cos(math.pi * step / max(1, settings.steps - 1))))
    rank = 0
    if accelerator is not None:
        adapter, optimiser = accelerator.prepare(adapter, optimiser)
        rank = accelerator.process_index
    rng = random.Random(settings.seed * 1000 + rank)
    history = []
    start = time.perf_counter()
    for step in range(settings.steps):
        prompt = rng.choice(objective.prompts)
        seeds = [rng.randrange(2**31) for _ in range(settings.people)]
        terms = objective.terms(adapter, prompt, seeds, objective.people(settings.people, rng),
                                objective.distinct_users(settings.dispersion_people, rng))
        value = objective.objective(terms)
        if not torch.isfinite(value):
            raise FloatingPointError(f"step {step + 1}: the objective is not finite ({ {k: v.tolist() for k, v in terms.items()} })")
        optimiser.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(-value)
            norm = accelerator.clip_grad_norm_(adapter.parameters(), settings.grad_clip)
        else:
            (-value).backward()
            norm = torch.nn.utils.clip_grad_norm_(adapter.parameters(), settings.grad_clip)
        # A render's gradient can overflow where a shape's edge is nearly sharp: such a step is
        # skipped (as mixed-precision training skips steps whose gradients overflow).
        skipped = not torch.isfinite(norm)
        if not skipped:
            optimiser.step()
        schedule.step()
        row = {"step": step + 1, "objective": round(float(value.detach()), 4), "skipped": skipped,
               **{k: round(float(v.detach().mean()), 4) for k, v in terms.items()},
               "seconds": round(time.perf_counter() - start, 1)}
        history.append(row)
        if (step + 1) % 10 == 0 or step == 0:
            log(" ".join(f"{k} {v}" for k, v in row.items()))
    if accelerator is not None:
        adapter = accelerator.unwrap_model(adapter)
    return adapter.eval().requires_grad_(False), history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="embedded", help="'embedded', a known short name, a hub id or a folder")
    parser.add_argument("--resolution", type=int, help="render size while training (default: the generator's)")
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK)
    parser.add_argument("--out", type=Path, required=True, help="folder for adapter.safetensors + config.json")
    parser.add_argument("--prompts", type=int, default=0, help="use only the first N training prompts (0: all)")
    defaults = TrainSettings()
    for name, value in vars(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    settings = TrainSettings(**{k: getattr(args, k) for k in vars(defaults)})

    from accelerate import Accelerator

    from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder
    from prefstudio.generators import EMBEDDED, load_generator

    accelerator = Accelerator()
    if accelerator.device.type == "cpu":
        torch.set_num_threads(1)
    log = accelerator.print
    start = time.perf_counter()
    if args.generator == EMBEDDED:  # steered by the MiniLM prompt encoder, as in the studio
        from prefstudio.generators.embedded import EmbeddedGenerator

        generator = EmbeddedGenerator(resolution=args.resolution or 256, text_encoder=MiniLMTextEncoder(),
                                      device=accelerator.device)
    else:
        generator = load_generator(args.generator, device=accelerator.device, resolution=args.resolution)
    bank = UserBank.load(args.bank)
    encoder = EmbeddedImageEncoder(device=accelerator.device)
    prompts = training_prompts()[: args.prompts or None]
    objective = AdapterObjective(generator, encoder, bank, prompts, settings)
    evaluation = fixed_batch(objective, 2, seed=settings.seed + 99)
    before = evaluate(objective, new_adapter(objective, settings), evaluation)
    log(f"prepared {len(prompts)} prompts in {time.perf_counter() - start:.0f} s; objective before training {before:+.3f}")
    adapter, history = train(objective, settings, accelerator=accelerator, log=log)
    after = evaluate(objective, adapter, evaluation)
    seconds = time.perf_counter() - start
    log(f"objective on a fixed evaluation batch: {before:+.3f} -> {after:+.3f}; {seconds:.0f} s")
    if accelerator.is_main_process:
        command = "python -m prefstudio_research.train.preference_adapter " + " ".join(sys.argv[1:] if argv is None else argv)
        config = {**generator_signature(generator, objective.conditioning[prompts[0]]),
                  "bank_source": bank.source, "encoder": encoder.name,
                  "settings": vars(settings), "training_prompts": len(prompts), "processes": accelerator.num_processes,
                  "evaluation_objective": {"before": round(before, 4), "after": round(after, 4)},
                  "wall_seconds": round(seconds), "command": command}
        save_adapter(adapter, args.out, config, args.bank)
        with open(args.out / "log.jsonl", "w") as f:
            import json

            f.writelines(json.dumps(row) + "\n" for row in history)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
