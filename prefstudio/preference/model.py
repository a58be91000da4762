"""The preference-model interface: the one object the studio, the UI and the CLI hold.

A `PreferenceModel` is a kind of taste model. It turns a person's judged pairs into a
`Taste` (fitted, or read as a history) and rebuilds a `Taste` from the state the history
store and the profile file keep. A `Taste` gives the log-odds of "like" for image features
(with prompts where the model reads them), differentiable in the features, so it is also
the reward that guidance maximises (`rewards.user_preference.TasteReward`).

    model = build_preference_model("auto", image_encoder, text_encoder, bank)
    taste, outcome = model.fit(JudgedPairs(pairs, features, prompts))
    tensors, config = taste.state()             # what the store keeps
    taste = model.load(tensors, config)         # ... and reads back, validated
    odds = taste.log_odds(features, taste.prompt_context(prompts))
"""
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class JudgedPairs:
    """A person's history as the models read it: (liked, disliked) image ids, oldest first,
    and how to get the images' frozen features and prompts."""

    pairs: list[tuple[str, str]]
    features: Callable[[list[str]], torch.Tensor]  # ids -> [N, D]
    prompts: Callable[[list[str]], list[str]]  # ids -> their prompts

    def images(self) -> list[str]:
        return list(dict.fromkeys(s for pair in self.pairs for s in pair))


@dataclass
class FitOutcome:
    """What a fit says about itself; `held_out` maps a pair's index in `JudgedPairs.pairs`
    to liked − disliked log-odds under a model that did not see that pair."""

    mode: str
    n_pairs: int
    reason: str  # which model served and why, in words
    held_out: dict[int, float] = field(default_factory=dict)
    parts: dict[str, "FitOutcome"] = field(default_factory=dict)  # a combined model's member fits, by name

    @property
    def loo_pairs(self) -> int:
        return len(self.held_out) if len(self.held_out) >= 2 else 0

    @property
    def loo_accuracy(self) -> float | None:
        if self.loo_pairs == 0:
            return None
        return sum(margin > 0 for margin in self.held_out.values()) / len(self.held_out)


class Taste(ABC):
    """One person's fitted taste."""

    @abstractmethod
    def prompt_context(self, prompts: list[str]) -> Any:
        """What `log_odds` needs of the prompts ([P, ·] features, or None for a model that
        reads none). Computed once per run, never per guidance step."""

    @abstractmethod
    def log_odds(self, features: torch.Tensor, context: Any = None) -> torch.Tensor:
        """[B] log-odds M⁺ − M⁻ of "like" for image features [B, D]; a context of one row
        applies to every image. Differentiable in the features."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON config that `PreferenceModel.load` rebuilds this taste from."""


class PreferenceModel(ABC):
    #: the stored model's name in the history store and the profile file
    name: str
    #: one line for the page: what this model is
    description: str

    @abstractmethod
    def fit(self, judged: JudgedPairs) -> tuple[Taste, FitOutcome]:
        """Fit (or read) a taste from the history; InvalidInput when it cannot."""

    @abstractmethod
    def load(self, tensors: dict[str, torch.Tensor], config: dict) -> Taste:
        """The taste a fit stored; InvalidInput when the state is not one this model reads."""
