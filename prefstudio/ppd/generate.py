"""Generation with a PPD adapter next to the same-seed baseline.

The baseline is the same UNet with the adapter at scale 0, which is the base model exactly
(adapter.py); the personalized image uses the chosen scale. The user embedding is a stored
VLM profile, a mix of the adapter's synthetic one-hot users, or a vector from a file.
"""
from dataclasses import dataclass

import torch

from prefstudio.errors import InvalidInput
from prefstudio.ppd.adapter import load_adapter


@dataclass
class AdaptedPair:
    seed: int
    baseline: torch.Tensor  # [3, H, W] in [0, 1]
    personalized: torch.Tensor


class AdaptedGenerator:
    """A diffusers generator whose UNet carries a loaded PPD adapter."""

    def __init__(self, generator, adapter_dir):
        if generator.family not in ("sd", "sdxl"):
            raise InvalidInput(f"{generator.name} is a {generator.family} model; the PPD adapter goes into SD/SDXL UNets")
        self.generator = generator
        self.adapter = load_adapter(adapter_dir, generator.denoiser)

    @torch.no_grad()
    def pair(self, prompt: str, user: torch.Tensor, seed: int, scale: float = 1.0) -> AdaptedPair:
        if user.ndim != 1 or user.shape[0] != self.adapter.config.user_dim:
            raise InvalidInput(f"the adapter reads a {self.adapter.config.user_dim}-value user embedding, "
                               f"got shape {list(user.shape)}")
        cond = self.generator.encode_prompt(prompt)
        cond.user_embedding = user.float()
        noise = self.generator.initial_noise(seed)
        images = {}
        for side, value in (("baseline", 0.0), ("personalized", scale)):
            self.adapter.set_scale(value)
            images[side] = self.generator.render(noise, cond)[0].float().cpu()
        return AdaptedPair(seed, images["baseline"], images["personalized"])
