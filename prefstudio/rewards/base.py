"""Differentiable rewards on one normalised scale.

Each reward returns a raw score per image; `normalise` maps it to a z-score
against a reference spread (`offset`, `scale`) so that the sliders weigh
comparable quantities: a weight of 1 on any reward means "one typical spread".
"""
from abc import ABC, abstractmethod
from typing import Any

import torch


class Reward(ABC):
    #: id used for the slider and in stored results ("user", "prompt_consistency", "clip", ...)
    name: str
    #: one line shown next to the slider
    description: str
    #: raw = offset + scale * normalised
    offset: float = 0.0
    scale: float = 1.0

    def prepare(self, prompt: str) -> Any:
        """Per-prompt context (text features...), computed once per run, not per iteration."""
        return None

    @abstractmethod
    def score(self, pixels: torch.Tensor, context: Any) -> torch.Tensor:
        """Raw reward [B] for pixels [B,3,H,W] in [0,1]; differentiable w.r.t. pixels."""

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.offset) / self.scale
