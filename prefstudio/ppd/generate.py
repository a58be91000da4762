"""Generation with a PPD adapter next to the same-seed baseline.

The baseline is the same UNet with the adapter at scale 0, which is the base model exactly
(adapter.py); the personalized image uses the chosen scale. The user embedding is a stored
VLM profile, a mix of the adapter's synthetic one-hot users, or a vector from a file.
`AdaptedGenerator` keeps the adapter installed (the `ppd` commands); `ppd_image` installs it
for one render, so the studio's other runs use the base UNet.
"""
from dataclasses import dataclass, replace

import torch

from prefstudio.errors import InvalidInput
from prefstudio.generators.base import to_pil
from prefstudio.guidance.instant import InstantResult
from prefstudio.ppd.adapter import UserAdapter, load_adapter


def check_user(adapter: UserAdapter, user: torch.Tensor) -> torch.Tensor:
    if user.ndim != 1 or user.shape[0] != adapter.config.user_dim:
        raise InvalidInput(f"the adapter reads a {adapter.config.user_dim}-value user embedding, "
                           f"got shape {list(user.shape)}")
    return user.float()


@torch.no_grad()
def ppd_image(generator, adapter: UserAdapter, prompt: str, seed: int, user: torch.Tensor,
              scale: float) -> InstantResult:
    """One render of `generator` (a diffusers SD/SDXL one) with the adapter at `scale` for `user`."""
    conditioning = replace(generator.encode_prompt(prompt), user_embedding=check_user(adapter, user))
    with adapter.applied(generator.denoiser, scale):
        image = to_pil(generator.render(generator.initial_noise(seed), conditioning))[0]
    return InstantResult(image, conditioning, float(scale), best_iteration=int(scale != 0))


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
        cond = self.generator.encode_prompt(prompt)
        cond.user_embedding = check_user(self.adapter, user)
        noise = self.generator.initial_noise(seed)
        images = {}
        for side, value in (("baseline", 0.0), ("personalized", scale)):
            self.adapter.set_scale(value)
            images[side] = self.generator.render(noise, cond)[0].float().cpu()
        return AdaptedPair(seed, images["baseline"], images["personalized"])
