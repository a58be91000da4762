"""Image and text encoder interfaces.

Image encoders take pixels [B,3,H,W] in [0,1] at any size (they resize
differentiably themselves) and return features [B,D]; used frozen, but gradients
flow through them to the pixels, which is what guidance needs.
"""
from abc import ABC, abstractmethod

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> [B,3,H,W] float32 in [0,1]."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class ImageEncoder(ABC):
    #: stable id; features are cached per (image hash, encoder name)
    name: str
    dim: int

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> [B, dim], differentiable w.r.t. pixels."""

    def encode_shared(self, pixels: torch.Tensor) -> torch.Tensor:
        """`encode`, computed once per pixels tensor: several rewards reading the same
        encoder inside one guidance iteration share one forward (and one graph)."""
        key = (id(pixels), pixels._version, torch.is_grad_enabled())
        memo = getattr(self, "_shared_memo", None)
        if memo is not None and memo[0] == key and memo[1] is pixels:
            return memo[2]
        features = self.encode(pixels)
        self._shared_memo = (key, pixels, features)
        return features

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image], batch_size: int = 16) -> torch.Tensor:
        """[N, dim] features, in order. Images are batched with others of their size only: an
        image's features (cached per image) must not depend on what was encoded with it."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.size, []).append(i)
        features = torch.empty(0, self.dim)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                chunk = self.encode(pil_to_tensor([images[i] for i in batch]))
                if len(features) != len(images):  # the encoder's device and dtype
                    features = chunk.new_empty(len(images), chunk.shape[1])
                features[batch] = chunk
        return features


class TextEncoder(ABC):
    name: str
    dim: int

    @abstractmethod
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> [B, dim] L2-normalised features."""

    def prompt_notes(self, prompt: str) -> list[str]:
        """What of `prompt` this encoder does not read, in words (see Generator.prompt_notes)."""
        return []
