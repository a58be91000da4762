"""PickScore (Kirstain et al. 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences.

score = exp(logit_scale) · cos(image, prompt), as in the PickScore_v1 model card; the
weights are yuvalkirstain/PickScore_v1 (about 3.9 GB), the tokenizer and preprocessing
those of laion/CLIP-ViT-H-14-laion2B-s32B-b79K.

Normalisation reference: PickScores of generated images mostly lie between 20 and 23
(100 × a cosine near 0.2, times CLIP's learned scale of 100); offset 21.5 and spread
1.0 are estimates from published PickScore/ReNO figures as recalled, not measured here
(no PickScore weights on this machine): recalibrate when real weights are at hand.
"""
import torch

from prefstudio.encoders.clip import CLIPEncoder, PromptFeatures
from prefstudio.rewards.base import Reward

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScoreReward(Reward):
    name = "pickscore"
    description = "General human preference (PickScore, trained on Pick-a-Pic choices)"
    offset = 21.5
    scale = 1.0
    normalisation_source = ("estimate: recalled from published PickScore figures; "
                            "not measured here")

    def __init__(self, clip: CLIPEncoder | None = None, device=None, dtype=None):
        self.clip = clip if clip is not None else CLIPEncoder(
            PICKSCORE_MODEL, processor_id=PICKSCORE_PROCESSOR, device=device, dtype=dtype
        )

    def prepare(self, prompt: str) -> PromptFeatures:
        return self.clip.prompt_features(prompt)

    def score(self, pixels: torch.Tensor, context: PromptFeatures) -> torch.Tensor:
        logit_scale = self.clip.model.logit_scale.exp().float()
        return logit_scale * (self.clip.encode_shared(pixels) * context.features).sum(-1)
