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
    #: a guard is not raised, only kept from falling below the same-seed baseline (prompt
    #: consistency: raising it would pull every image towards the prompt's average look)
    guard: bool = False
    #: raw = offset + scale * normalised
    offset: float = 0.0
    scale: float = 1.0
    #: where offset and scale come from, shown beside the slider (a calibration replaces it)
    normalisation_source: str = "fixed"

    def prepare(self, prompt: str) -> Any:
        """Per-prompt context (text features...), computed once per run, not per iteration."""
        return None

    @abstractmethod
    def score(self, pixels: torch.Tensor, context: Any) -> torch.Tensor:
        """Raw reward [B] for pixels [B,3,H,W] in [0,1]; differentiable w.r.t. pixels."""

    def normalise(self, raw: torch.Tensor, context: Any = None) -> torch.Tensor:
        """z-score against the reward's reference spread (a context may carry its own)."""
        return (raw - self.offset) / self.scale


def score_all(rewards: dict[str, Reward], contexts: dict[str, Any], pixels: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Raw and normalised scores [B] of every reward for one batch of pixels."""
    raw = {name: reward.score(pixels, contexts[name]) for name, reward in rewards.items()}
    return raw, {name: rewards[name].normalise(value, contexts[name]) for name, value in raw.items()}
