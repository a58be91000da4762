"""Prompt consistency for generators without a text–image model (the embedded one).

How typical an image is of its prompt: the cosine similarity of its features to the
mean features of unguided images of the same prompt (fixed seeds). It keeps guided
images from drifting away from what the prompt draws, and it is the benchmark's
prompt-consistency measure. Normalised by the spread of the same cosine over those
unguided images, per prompt.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefstudio.encoders.base import ImageEncoder
from prefstudio.generators.base import Generator
from prefstudio.rewards.base import Reward

REFERENCE_SEEDS = tuple(range(10_000, 10_012))


@dataclass
class PromptAnchor:
    mean_features: torch.Tensor  # [D], unit norm
    offset: float
    scale: float


class PromptConsistencyReward(Reward):
    name = "prompt_consistency"
    description = ("Keeps personalization on topic: a fall below the baseline's typicality of the prompt costs this "
                   "weight; rewards weighted more can still outweigh it")
    guard = True
    normalisation_source = "per prompt, from unguided reference images of that prompt"

    def __init__(self, generator: Generator, encoder: ImageEncoder):
        self.generator = generator
        self.encoder = encoder
        self._anchors: dict[str, PromptAnchor] = {}

    def prepare(self, prompt: str) -> PromptAnchor:
        if prompt not in self._anchors:
            with torch.no_grad():
                conditioning = self.generator.encode_prompt(prompt)
                noise = torch.cat([self.generator.initial_noise(s) for s in REFERENCE_SEEDS])
                features = F.normalize(self.encoder.encode(self.generator.render(noise, conditioning)), dim=-1)
                mean = F.normalize(features.mean(0), dim=-1)
                # Spread from each reference against the mean of the others: against a
                # mean that includes itself every reference looks typical, and a fresh
                # image would be judged against too narrow a spread.
                others = F.normalize(features.sum(0, keepdim=True) - features, dim=-1)
                cosines = (features * others).sum(-1)
            self._anchors[prompt] = PromptAnchor(mean, float(cosines.mean()), max(float(cosines.std()), 1e-3))
        return self._anchors[prompt]

    def score(self, pixels: torch.Tensor, context: PromptAnchor) -> torch.Tensor:
        return F.normalize(self.encoder.encode_shared(pixels), dim=-1) @ context.mean_features

    def normalise(self, raw: torch.Tensor, context: PromptAnchor = None) -> torch.Tensor:
        return (raw - context.offset) / context.scale
