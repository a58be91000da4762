"""Instant personalization: one adapter pass and one render (Premier, 003; PPD, 002).

    image = render(noise(seed), modulate(conditioning(prompt), scale · adapter(user embedding, conditioning)))

The user embedding of a person is Premier's cold start: the combination of the adapter's
training users (the user bank's) that explains their judgments
(`user_embedding.bank_combination`). Instant can also be the starting point of a short
guidance (`optimise_noise(..., conditioning=instant.conditioning)`).
"""
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from prefstudio.generators.base import Generator, to_pil
from prefstudio.guidance.adapter import PreferenceAdapter
from prefstudio.validation import validate_prompt, validate_seed


@dataclass
class InstantResult:
    image: Image.Image
    conditioning: Any  # the modulated conditioning (the prompt's own at scale 0)
    scale: float
    # The fields a side by side reads from any personalization result: Instant has no
    # iterations; iteration 1 is the adapter's image, 0 (scale 0) the baseline itself.
    best_iteration: int
    iterations_run: int = 0
    stopped: bool = False
    trace: list = field(default_factory=list)


@torch.no_grad()
def instant_image(generator: Generator, adapter: PreferenceAdapter, prompt: str, seed: int,
                  user_embedding: torch.Tensor, scale: float = 1.0) -> InstantResult:
    """The personalized image for one person ([E] or [1, E] embedding), prompt and seed."""
    prompt, seed = validate_prompt(prompt), validate_seed(seed)
    conditioning = adapter.apply(generator, generator.encode_prompt(prompt), user_embedding.reshape(1, -1), scale)
    image = to_pil(generator.render(generator.initial_noise(seed), conditioning))[0]
    return InstantResult(image, conditioning, float(scale), best_iteration=int(scale > 0))
