"""Scoring a person's candidate images from the pair data set with either backbone.

The evaluation protocol, the trainer's validation and the attention analysis all ask the
same question: given this user's history (judgments, in order) and groups of candidate
images (liked first), what does the model score each candidate? The answer is the
log-odds M⁺ − M⁻ of eq. 2 (monotone in Q, and free of the ties a saturated Q would make).
"""
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.preference.pair_data import Judgment, PairDataSet
from prefstudio.preference.tokens import LiteTokenModel, PairFeatures, TargetFeatures


class LiteScorer:
    """A lite model plus the frozen features of every image and prompt of a data set."""

    def __init__(self, model: LiteTokenModel | None, image_rows: dict[Path, int], image_features: torch.Tensor,
                 prompt_rows: dict[str, int], prompt_features: torch.Tensor, encoder_names=(None, None)):
        self.model = model
        self.image_rows, self.image_features = image_rows, image_features
        self.prompt_rows, self.prompt_features = prompt_rows, prompt_features
        self.encoder_names = encoder_names

    @classmethod
    def for_encoders(cls, data: PairDataSet, image_encoder, text_encoder) -> "LiteScorer":
        """Features of the data set (cached under <root>/features/), no model yet."""
        from prefstudio.preference.pair_data import image_features, prompt_features

        return cls(None, *image_features(data, image_encoder), *prompt_features(data, text_encoder),
                   encoder_names=(image_encoder.name, text_encoder.name))

    def check(self, model: LiteTokenModel) -> None:
        for kind, have, expected in (("image", self.encoder_names[0], model.config.image_encoder),
                                     ("text", self.encoder_names[1], model.config.text_encoder)):
            if have != expected:
                raise InvalidInput(f"the model reads {kind} features of {expected!r}, not {have!r}")

    @classmethod
    def for_data(cls, model: LiteTokenModel, data: PairDataSet, image_encoder, text_encoder) -> "LiteScorer":
        scorer = cls.for_encoders(data, image_encoder, text_encoder)
        scorer.check(model)
        scorer.model = model
        return scorer

    def image_row(self, path: Path) -> int:
        try:
            return self.image_rows[path]
        except KeyError:
            raise InvalidInput(f"{path} is not listed in the data set's images.jsonl") from None

    def rows(self, judgments: list[Judgment]) -> torch.Tensor:
        """[N, 3]: liked row, disliked row, prompt row."""
        return torch.tensor([[self.image_row(j.liked), self.image_row(j.disliked), self.prompt_rows[j.prompt]]
                             for j in judgments], dtype=torch.long).reshape(-1, 3)

    def history_features(self, rows: torch.Tensor) -> PairFeatures:
        """rows [..., N, 3] -> features with the same leading shape."""
        return PairFeatures(self.image_features[rows[..., 0]], self.image_features[rows[..., 1]],
                            self.prompt_features[rows[..., 2]])

    @torch.no_grad()
    def score_groups(self, history: list[Judgment], groups: list[list[Path]], prompts: list[str]) -> torch.Tensor:
        """[G, C] log-odds; every group has C candidates for one prompt."""
        if not groups:
            return torch.empty(0, 0)
        images = torch.tensor([[self.image_row(p) for p in group] for group in groups])
        prompt_rows = torch.tensor([self.prompt_rows[p] for p in prompts]).unsqueeze(1).expand_as(images)
        targets = TargetFeatures(self.image_features[images.flatten()], self.prompt_features[prompt_rows.flatten()])
        m_like, m_dislike = self.model.score(self.history_features(self.rows(history)), targets)
        return (m_like - m_dislike).reshape(images.shape)


class VLMScorer:
    """A VLM model reading the images themselves (loaded with the store's bounded reader)."""

    def __init__(self, model, batch_size: int = 4):
        self.model = model
        self.batch_size = batch_size

    @staticmethod
    def _load(path: Path):
        from prefstudio.store.image_files import load_untrusted_image

        return load_untrusted_image(path)

    def image_history(self, history: list[Judgment]):
        from prefstudio.preference.vlm import ImagePair

        return [ImagePair(self._load(j.liked), self._load(j.disliked), j.prompt) for j in history]

    @torch.no_grad()
    def score_groups(self, history: list[Judgment], groups: list[list[Path]], prompts: list[str]) -> torch.Tensor:
        pairs = self.image_history(history)
        images = [self._load(p) for group in groups for p in group]
        flat_prompts = [prompt for group, prompt in zip(groups, prompts) for _ in group]
        m_like, m_dislike = self.model.score(pairs, images, flat_prompts, batch_size=self.batch_size)
        return (m_like - m_dislike).float().cpu().reshape(len(groups), -1)


def encoder_named(name: str):
    """The frozen encoder whose features a checkpoint was trained on, by its `name`."""
    from prefstudio.encoders import embedded

    for cls_name in ("EmbeddedImageEncoder", "MiniLMTextEncoder"):
        cls = getattr(embedded, cls_name, None)
        if cls is not None and getattr(cls, "name", None) == name:
            return cls()
    raise InvalidInput(f"no encoder named {name!r} in prefstudio.encoders.embedded")
