"""Simulated people judging the studio's own generated images: histories the token model trains
and validates on next to PrefBench's clip art (`python -m prefstudio_research.train.preference_tokens
--studio-people N`).

The images are the embedded generator's (what the studio shows), rendered for prompts of
assets/prompts.txt: the first `TRAIN_PROMPTS` for training people, the next `VAL_PROMPTS` for
validation people, at noise seeds from `SEED_BASE` (the shipped bank renders from 1,000,000; the
studio's candidates, and so tests/ and prefstudio_research.studio_people, from 0, for prompts
not in the file). The people are `bank_from_images.simulated_choices`' population (the widened
tastes, Bradley–Terry labels at one temperature for an 85 % oracle ceiling), drawn at their own
seeds. A training person judges pairs of which half show one prompt and half two (the studio
pairs every 👍 with every 👎, across prompts; each image is read with its own prompt). A
validation person has a history of such pairs on one half of the validation images and is
scored on same-prompt pairs of the other half (the studio ranks one prompt's candidates).
"""
import itertools
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefstudio.preference.bank_from_images import simulated_choices
from prefstudio.preference.tokens import PairFeatures

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_PROMPTS, VAL_PROMPTS = 36, 12
POPULATIONS = 30  # training people are drawn from this many populations, validation people from a tenth
SEEDS_PER_PROMPT = 8
SEED_BASE = 2_000_000


class ImagePool:
    """Rendered images of some prompts: pixels (uint8), image and prompt features, prompt of each."""

    def __init__(self, pixels: torch.Tensor, features: torch.Tensor, prompt_features: torch.Tensor,
                 prompt_of: torch.Tensor):
        self.pixels, self.features, self.prompt_features, self.prompt_of = pixels, features, prompt_features, prompt_of

    def pairs(self, same_prompt: bool, images: list[int] | None = None) -> list[tuple[int, int]]:
        images = list(range(len(self.prompt_of))) if images is None else images
        return [(a, b) for a, b in itertools.combinations(images, 2)
                if bool(self.prompt_of[a] == self.prompt_of[b]) == same_prompt]


def render_pool(prompts: list[str], seeds_per_prompt: int, seed_base: int, cache: Path | None = None,
                log=print) -> ImagePool:
    """The embedded generator's images of `prompts` (seed_base + 1000·i + s), quantised as stored
    PNGs are, and their features; read from `cache` (a safetensors file) when it holds them."""
    key = f"{seed_base}:{seeds_per_prompt}:" + "|".join(prompts)
    if cache is not None and cache.exists():
        tensors = load_file(str(cache))
        if bytes(tensors["key"].tolist()).decode() == key:
            return ImagePool(tensors["pixels"], tensors["features"], tensors["prompt_features"], tensors["prompt_of"])
    from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder
    from prefstudio.generators.embedded import EmbeddedGenerator

    text = MiniLMTextEncoder()
    generator = EmbeddedGenerator(resolution=256, text_encoder=text)
    encoder = EmbeddedImageEncoder()
    pixels, features = [], []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            noise = torch.cat([generator.initial_noise(seed_base + i * 1000 + s) for s in range(seeds_per_prompt)])
            images = (generator.render(noise, generator.encode_prompt(prompt)) * 255).round()
            pixels.append(images.to(torch.uint8))
            features.append(encoder.encode(images / 255))
            log(f"  rendered {len(pixels) * seeds_per_prompt}/{len(prompts) * seeds_per_prompt} studio images")
        prompt_features = text.encode(prompts).float()
    prompt_of = torch.arange(len(prompts)).repeat_interleave(seeds_per_prompt)
    pool = ImagePool(torch.cat(pixels), torch.cat(features).float(), prompt_features[prompt_of].contiguous(), prompt_of)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"pixels": pool.pixels, "features": pool.features, "prompt_features": pool.prompt_features,
                   "prompt_of": pool.prompt_of, "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}, str(cache))
    return pool


def _history(pool: ImagePool, liked: list[int], disliked: list[int]) -> PairFeatures:
    return PairFeatures(pool.features[liked], pool.features[disliked], pool.prompt_features[liked],
                        pool.prompt_features[disliked])


def training_histories(pool: ImagePool, n_users: int, pairs_per_user: int, seed: int) -> tuple[list[PairFeatures], str]:
    """Each person's judged pairs, half of one prompt and half across two. The people come from
    `POPULATIONS` populations (seeds seed·1000 + k), each with a common taste and archetypes of its
    own, so that what is learned is how to read a history, not one population's average taste."""
    same, cross = pool.pairs(True), pool.pairs(False)
    rng = torch.Generator().manual_seed(seed)
    cross = [cross[i] for i in torch.randperm(len(cross), generator=rng)[: len(same)].tolist()]
    histories, hows = [], []
    for k in range(POPULATIONS):
        count = n_users // POPULATIONS + (1 if k < n_users % POPULATIONS else 0)
        users, how = simulated_choices(pool.pixels.float() / 255, same + cross, count, pairs_per_user,
                                       seed * 1000 + k, id_prefix="studio-train-")
        histories += [_history(pool, liked, disliked) for liked, disliked in users]
        hows.append(how)
    return histories, f"{POPULATIONS} populations of which the first: {hows[0]}"


def validation_people(pool: ImagePool, n_users: int, n_ref: int, n_targets: int, seed: int) -> tuple[list[tuple], str]:
    """(history of n_ref pairs, liked targets, disliked targets, target prompts) per person, the
    history on half of the pool's images and the same-prompt target pairs on the other half (per
    prompt: its first half of seeds for one population, its second for the next)."""
    half = pool.prompt_of.shape[0] // len(pool.prompt_of.unique()) // 2
    seed_rank = torch.arange(pool.prompt_of.shape[0]) % (2 * half)
    out, hows = [], []
    for side in range(max(2, POPULATIONS // 10)):
        history_images = (seed_rank < half).nonzero().flatten().tolist() if side % 2 == 0 else \
            (seed_rank >= half).nonzero().flatten().tolist()
        target_images = sorted(set(range(pool.prompt_of.shape[0])) - set(history_images))
        history_pairs = pool.pairs(True, history_images) + pool.pairs(False, history_images)
        target_pairs = pool.pairs(True, target_images)
        sides = max(2, POPULATIONS // 10)
        count = n_users // sides + (1 if side < n_users % sides else 0)
        # One draw of people; their histories and targets come from separate draws of labels.
        histories, how = simulated_choices(pool.pixels.float() / 255, history_pairs, count, n_ref,
                                           seed * 1000 + side, id_prefix="studio-val-")
        targets, _ = simulated_choices(pool.pixels.float() / 255, target_pairs, count, n_targets,
                                       seed * 1000 + side, id_prefix="studio-val-")
        hows.append(how)
        for (liked, disliked), (t_liked, t_disliked) in zip(histories, targets):
            out.append((_history(pool, liked, disliked), pool.features[t_liked], pool.features[t_disliked],
                        pool.prompt_features[t_liked]))
    return out, f"{len(hows)} populations of which the first: {hows[0]}"


def studio_task_inputs(n_train: int, n_val: int, pairs_per_user: int, n_ref: int, n_targets: int, seed: int,
                       cache_dir: Path | None, log=print) -> tuple[list[PairFeatures], list[tuple], str]:
    """Training histories and validation people on the studio's images, and how they were made."""
    prompts = [p.strip() for p in (REPO_ROOT / "assets" / "prompts.txt").read_text().splitlines() if p.strip()]
    train_prompts, val_prompts = prompts[:TRAIN_PROMPTS], prompts[TRAIN_PROMPTS:TRAIN_PROMPTS + VAL_PROMPTS]
    train_pool = render_pool(train_prompts, SEEDS_PER_PROMPT, SEED_BASE,
                             None if cache_dir is None else cache_dir / "train_pool.safetensors", log)
    val_pool = render_pool(val_prompts, SEEDS_PER_PROMPT, SEED_BASE + 500_000,
                           None if cache_dir is None else cache_dir / "val_pool.safetensors", log)
    train, train_how = training_histories(train_pool, n_train, pairs_per_user, seed)
    val, val_how = validation_people(val_pool, n_val, n_ref, n_targets, seed + 1)
    how = (f"studio images: {len(train_prompts)} training prompts × {SEEDS_PER_PROMPT} seeds (from {SEED_BASE}), "
           f"{len(val_prompts)} validation prompts × {SEEDS_PER_PROMPT} seeds (from {SEED_BASE + 500_000}) of "
           f"assets/prompts.txt, embedded generator; training people: {train_how}; validation people: {val_how}")
    return train, val, how
