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

    def __init__(self, clip: CLIPEncoder | None = None):
        self.clip = clip if clip is not None else CLIPEncoder()

    def prepare(self, prompt: str) -> PromptFeatures:
        return self.clip.prompt_features(prompt)

    def score(self, pixels: torch.Tensor, context: PromptFeatures) -> torch.Tensor:
        return (self.clip.encode_shared(pixels) * context.features).sum(-1)
