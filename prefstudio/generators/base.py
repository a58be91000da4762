"""The one interface every image generator implements.

A generator maps (prompt conditioning, initial noise) to pixels. `render` is
differentiable with respect to the noise: that is the path guidance optimises.
The embedded generator and the diffusers one-step models both implement it, so
guidance, the side-by-side and the benchmarks never ask which one runs.

A preference adapter (prefstudio/guidance/adapter.py) personalizes through the
conditioning instead: it reads `conditioning_tokens` and adds per-image offsets with
`modulate`; `render` is differentiable with respect to those offsets too.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from prefstudio.validation import validate_prompt, validate_seed


@dataclass
class GeneratedImage:
    image: Image.Image
    prompt: str
    seed: int
    generator: str
    params: dict = field(default_factory=dict)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[B,3,H,W] floats in [0,1] -> PIL RGB images."""
    array = (pixels.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in array]


class Generator(ABC):
    #: short stable id written into image metadata and the history ("embedded", "sd-turbo", ...)
    name: str
    #: output side length in pixels (square images)
    resolution: int
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def encode_prompt(self, prompt: str) -> Any:
        """Conditioning for `render`; computed once per prompt, reused across iterations."""

    def prompt_notes(self, prompt: str) -> list[str]:
        """What of `prompt` this generator does not read, in words for the person (a text
        encoder's token window cuts it); none unless a generator says otherwise."""
        return []

    @abstractmethod
    def initial_noise(self, seed: int, batch: int = 1) -> torch.Tensor:
        """Deterministic standard-normal noise for a seed, shape [batch, *noise_shape]."""

    @abstractmethod
    def render(self, noise: torch.Tensor, conditioning: Any) -> torch.Tensor:
        """Noise [B, ...] -> pixels [B,3,H,W] in [0,1], differentiable w.r.t. `noise`."""

    @abstractmethod
    def conditioning_tokens(self, conditioning: Any) -> torch.Tensor:
        """[T, D]: the part of the conditioning a preference adapter reads and modulates
        (text token features; the embedded generator's prompt-derived style vector, T = 1)."""

    @abstractmethod
    def modulate(self, conditioning: Any, offsets: torch.Tensor) -> Any:
        """The conditioning with `offsets` [B, T, D] added to its tokens, one row per image of
        the batch `render` is then given; differentiable with respect to the offsets."""

    def params(self) -> dict:
        """Everything besides prompt and seed that determines the image (stored in the PNG)."""
        return {"generator": self.name, "resolution": self.resolution}

    @torch.no_grad()
    def generate(self, prompt: str, seeds: list[int]) -> list[GeneratedImage]:
        prompt = validate_prompt(prompt)
        seeds = [validate_seed(s) for s in seeds]
        conditioning = self.encode_prompt(prompt)
        noise = torch.cat([self.initial_noise(s) for s in seeds])
        images = to_pil(self.render(noise, conditioning))
        return [
            GeneratedImage(img, prompt, seed, self.name, self.params())
            for img, seed in zip(images, seeds)
        ]
