"""What a profile's fitted model likes, in images and in words.

The model scores a fixed reference pool: the same prompts × seeds of the running
generator for every profile, so two profiles (or a profile and its imported copy) are
compared on the same images. The words come from how the scores go along with plain
image attributes (warmth, brightness, colourfulness, ...) over that pool, and which
prompts it scores highest: a reading of the model, not a claim about the person.

    summary = taste_summary(studio, "alice")
    summary.most_liked(4), summary.least_liked(4), summary.text()
"""
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.eval.simulated_users import image_attributes
from prefstudio.shipped import ASSETS
from prefstudio.store.history import ImageRecord

PROMPTS_FILE = ASSETS / "prompts.txt"
POOL_PROMPTS = 12
POOL_SEEDS = (101, 202)
# |correlation| below this over a pool of 24 is too weak to put into words.
MIN_CORRELATION = 0.3

# attribute -> (what a positive lean reads as, what a negative lean reads as)
_LEANINGS = {
    "warmth": ("warm colours", "cool colours"),
    "brightness": ("bright images", "dark images"),
    "colourfulness": ("colourful images", "muted colours"),
    "contrast": ("strong contrast", "soft contrast"),
    "density": ("busy, detailed images", "calm, simple images"),
    "saturation": ("saturated colours", "desaturated colours"),
    "colour": ("colour over black-and-white", "black-and-white over colour"),
    "green": ("greens", "reds and purples"),
    "tone": ("pale, light drawings", "dark, heavy drawings"),
    "ink_contrast": ("strong contrast within the drawing", "even tones within the drawing"),
    "fine_detail": ("fine texture", "smooth surfaces"),
    "fill": ("a full frame", "empty space around the subject"),
    "spread": ("spread-out compositions", "compact compositions"),
    "offcentre": ("off-centre compositions", "centred compositions"),
    "symmetry": ("symmetric compositions", "asymmetric compositions"),
    "top_heavy": ("weight at the top", "weight at the bottom"),
}

_pools: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def read_prompts(path: Path = PROMPTS_FILE) -> list[str]:
    """The prompt list shipped in assets/ (one per line; '#' starts a comment)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def reference_pool(studio) -> list[ImageRecord]:
    """POOL_PROMPTS prompts spread over the list × POOL_SEEDS, generated once per studio.

    Kept in the history store like any generated image (content-addressed: a second
    studio on the same folder regenerates the same files and adds nothing)."""
    pool = _pools.get(studio)
    if pool is None:
        prompts = read_prompts()
        step = max(1, len(prompts) // POOL_PROMPTS)
        chosen = prompts[::step][:POOL_PROMPTS]
        pool = [r for prompt in chosen for r in studio.generate_candidates(prompt, seeds=list(POOL_SEEDS))]
        _pools[studio] = pool
    return pool


@dataclass
class TasteSummary:
    profile: str
    ranked: list[tuple[ImageRecord, float]]  # the pool, best first, with the user model's normalised score
    leanings: list[tuple[str, float]]  # (attribute, correlation with the score), strongest first
    prompt_means: list[tuple[str, float]]  # mean score per pool prompt, best first

    def most_liked(self, k: int = 4) -> list[tuple[ImageRecord, float]]:
        return self.ranked[:k]

    def least_liked(self, k: int = 4) -> list[tuple[ImageRecord, float]]:
        return self.ranked[::-1][:k]

    def text(self) -> str:
        likes = [_LEANINGS[a][0 if r > 0 else 1] for a, r in self.leanings if abs(r) >= MIN_CORRELATION]
        if likes:
            style = "Leans towards " + _join(likes[:3]) + "."
        else:
            style = "No clear lean in colour, light or detail over the reference pool."
        top = [p for p, _ in self.prompt_means[:2]]
        bottom = [p for p, _ in self.prompt_means[-2:]]
        return (f"{style} Scores highest: {_join(top, quote=True)}; lowest: "
                f"{_join(bottom[::-1], quote=True)} (over {len(self.ranked)} reference images).")


def _join(items: list[str], quote: bool = False) -> str:
    items = [f"“{i}”" if quote else i for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return 0.0 if denominator < 1e-12 else float((x * y).sum()) / denominator


@torch.no_grad()
def taste_summary(studio, profile: str) -> TasteSummary:
    """Raises NotFound (with what to do) when the profile has no fitted model."""
    reward = studio.user_reward(profile)
    pool = reference_pool(studio)
    shas = [r.sha256 for r in pool]
    # Cached features: the pool is encoded once, however many profiles look at it.
    context = reward.taste.prompt_context([r.prompt for r in pool])
    scores = reward.normalise(reward.score_features(studio.features(shas), context)).float()
    attributes = image_attributes(pil_to_tensor([studio.store.load_image(s) for s in shas]))
    leanings = sorted(((name, _correlation(values, scores)) for name, values in attributes.items()),
                      key=lambda item: -abs(item[1]))
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    by_prompt: dict[str, list[float]] = {}
    for record, score in zip(pool, scores.tolist()):
        by_prompt.setdefault(record.prompt, []).append(score)
    prompt_means = sorted(((p, sum(v) / len(v)) for p, v in by_prompt.items()), key=lambda item: -item[1])
    return TasteSummary(studio.store.get_profile(profile).name,
                        [(pool[i], float(scores[i])) for i in order], leanings, prompt_means)
