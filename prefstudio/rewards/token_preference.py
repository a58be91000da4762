"""The preference-token model (model B, 000 §3) as a differentiable reward.

Unlike model A, nothing is fitted per person: the model reads their judged pairs as a
history, whose keys and values are computed once (`encode_history`), and scores any
image with its prompt against them. Raw reward: M⁺ − M⁻, the logit of eq. 2's Q, as for
model A; normalised against its spread over the images the person judged.
"""
import torch

from prefstudio.encoders.base import ImageEncoder
from prefstudio.errors import InvalidInput
from prefstudio.preference.tokens import LiteTokenModel, PairFeatures, TargetFeatures
from prefstudio.rewards.base import Reward


class TokenPreferenceReward(Reward):
    name = "user"
    description = "Your taste, as the preference-token model reads it from your judged pairs"

    def __init__(self, model: LiteTokenModel, image_encoder: ImageEncoder, text_encoder,
                 history: PairFeatures, reference_images: torch.Tensor | None = None,
                 reference_prompts: torch.Tensor | None = None):
        check_encoders(model, image_encoder, text_encoder)
        self.model, self.image_encoder, self.text_encoder = model, image_encoder, text_encoder
        with torch.no_grad():
            self.prefix = model.encode_history(history)
            if reference_images is not None and len(reference_images) >= 2:
                odds = self._log_odds(reference_images, reference_prompts)
                self.offset, self.scale = float(odds.mean()), max(float(odds.std()), 1e-3)

    def _log_odds(self, features: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        m_like, m_dislike = self.model.score_encoded(self.prefix, TargetFeatures(features, prompts))
        return m_like - m_dislike

    def prepare(self, prompt: str) -> torch.Tensor | None:
        return self.text_encoder.encode([prompt]) if self.model.config.text_dim else None

    def score(self, pixels: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        features = self.image_encoder.encode_shared(pixels)
        prompts = None if context is None else context.expand(features.shape[0], -1)
        return self._log_odds(features, prompts)


def check_encoders(model: LiteTokenModel, image_encoder: ImageEncoder, text_encoder) -> None:
    """The model reads the features it was trained on, or it reads noise."""
    config = model.config
    if config.image_encoder != image_encoder.name:
        raise InvalidInput(f"the preference-token checkpoint reads {config.image_encoder!r} image features; "
                           f"this studio encodes images with {image_encoder.name!r}")
    if config.text_dim and config.text_encoder != text_encoder.name:
        raise InvalidInput(f"the preference-token checkpoint reads {config.text_encoder!r} prompt features; "
                           f"this studio encodes prompts with {text_encoder.name!r}")
