"""A profile's history as the (liked, disliked) image pairs its taste models are fitted on."""
import torch

from prefstudio.store.history import Judgment

MAX_TRAINING_PAIRS = 4000  # like x dislike combinations beyond this are sampled


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
