"""The person's taste as a differentiable reward (000 §4.2), whatever model fitted it.

Raw reward: the log-odds M⁺ − M⁻ of eq. 2's Q (the logit is not saturated the way Q
is, so its gradient keeps pointing somewhere useful). Normalised against the spread of
that log-odds over the images the person judged, so "+1" means "one spread of how
differently this person rates the images they have seen".
"""
import torch

from prefstudio.encoders.base import ImageEncoder
from prefstudio.preference.model import Taste
from prefstudio.rewards.base import Reward


class TasteReward(Reward):
    name = "user"
    description = "Your taste, as learned from your judgments"
    normalisation_source = "unit scale: too few judged images for a spread"

    def __init__(self, taste: Taste, encoder: ImageEncoder, reference_features: torch.Tensor | None = None,
                 reference_prompts: list[str] | None = None):
        self.taste, self.encoder = taste, encoder
        if reference_features is not None and len(reference_features) >= 2:
            with torch.no_grad():
                odds = self.score_features(reference_features, taste.prompt_context(reference_prompts or [""]))
            self.offset = float(odds.mean())
            self.scale = max(float(odds.std()), 1e-3)
            self.normalisation_source = "the spread of your taste's scores over the images you judged"

    def prepare(self, prompt: str):
        return self.taste.prompt_context([prompt])

    def score_features(self, features: torch.Tensor, context) -> torch.Tensor:
        return self.taste.log_odds(features, context)

    def score(self, pixels: torch.Tensor, context) -> torch.Tensor:
        return self.taste.log_odds(self.encoder.encode_shared(pixels), context)
