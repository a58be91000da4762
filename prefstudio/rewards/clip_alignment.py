"""Text–image agreement: cosine between CLIP image and prompt features (CLIP score / 100).

Normalisation reference: CLIP ViT-L/14 cosines of generated images with their prompts
average about 0.30–0.32 (Premier, seeds/003 Table: "CLIP T2I" 0.298–0.318 over eight
FLUX-based methods); the per-image spread of 0.03 is an estimate, not measured here
(no CLIP weights on this machine). So a normalised +1 is "three hundredths more cosine".
"""
import torch

from prefstudio.encoders.clip import CLIPEncoder, PromptFeatures
from prefstudio.rewards.base import Reward


class CLIPAlignmentReward(Reward):
    name = "clip"
    description = "How well the image matches the prompt (CLIP ViT-L/14 text–image similarity)"
    offset = 0.30
    scale = 0.03
    normalisation_source = ("estimate: offset from published CLIP ViT-L/14 scores (Premier, seeds/003), "
                            "spread guessed; not measured here")

    def __init__(self, clip: CLIPEncoder | None = None):
        self.clip = clip if clip is not None else CLIPEncoder()

    def prepare(self, prompt: str) -> PromptFeatures:
        return self.clip.prompt_features(prompt)

    def score(self, pixels: torch.Tensor, context: PromptFeatures) -> torch.Tensor:
        return (self.clip.encode_shared(pixels) * context.features).sum(-1)


class CLIPPromptConsistencyReward(Reward):
    """Prompt consistency for a real generator: the same CLIP text–image cosine, as a guard.

    Guidance does not raise it; it only costs its weight per spread the image falls below the
    same-seed baseline. It shares the alignment reward's encoder and normalisation, so a
    calibration of "clip" holds for both."""

    name = "prompt_consistency"
    description = ("Keeps personalization on topic: a fall below the baseline's match to the prompt (CLIP) costs "
                   "this weight; rewards weighted more can still outweigh it")
    guard = True

    def __init__(self, alignment: CLIPAlignmentReward):
        self.alignment = alignment

    @property
    def normalisation_source(self) -> str:
        return self.alignment.normalisation_source

    def prepare(self, prompt: str) -> PromptFeatures:
        return self.alignment.prepare(prompt)

    def score(self, pixels: torch.Tensor, context: PromptFeatures) -> torch.Tensor:
        return self.alignment.score(pixels, context)

    def normalise(self, raw: torch.Tensor, context=None) -> torch.Tensor:
        return self.alignment.normalise(raw, context)
