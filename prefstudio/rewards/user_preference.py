"""The person's preference model as a differentiable reward (000 §4.2).

Raw reward: the log-odds M⁺ − M⁻ of eq. 2's Q (the logit is not saturated the way Q
is, so its gradient keeps pointing somewhere useful). Normalised against the spread of
that log-odds over the images the person judged, so "+1" means "one spread of how
differently this person rates the images they have seen".
"""
import torch

from prefstudio.encoders.base import ImageEncoder
from prefstudio.rewards.base import Reward


class UserPreferenceReward(Reward):
    name = "user"
    description = "Your taste, as fitted from your likes and dislikes"

    def __init__(self, model, encoder: ImageEncoder, reference_features: torch.Tensor | None = None):
        if getattr(model, "encoder", encoder.name) != encoder.name:
            raise ValueError(f"model was fitted on {model.encoder!r} features, encoder is {encoder.name!r}")
        self.model = model
        self.encoder = encoder
        if reference_features is not None and len(reference_features) >= 2:
            with torch.no_grad():
                odds = model.log_odds(reference_features)
            self.offset = float(odds.mean())
            self.scale = max(float(odds.std()), 1e-3)

    def score(self, pixels: torch.Tensor, context=None) -> torch.Tensor:
        return self.model.log_odds(self.encoder.encode_shared(pixels))
