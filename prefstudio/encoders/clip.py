"""CLIP through transformers: image features for the user model, text features for rewards.

`CLIPEncoder` is an `ImageEncoder` (L2-normalised projected image embeddings, so it
can replace the embedded encoder under the preference model) and gives a
`TextEncoder` over the same weights. Preprocessing is CLIP's own — resize the short
side to the model's input size (bicubic, antialiased), centre crop, mean/std — written
in torch so that gradients reach the pixels.

A checkpoint loads once per process (model id, processor id, device, dtype), however
many encoders and rewards share it.
"""
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prefstudio import hub
from prefstudio.devices import pick_device, pick_dtype
from prefstudio.encoders.base import ImageEncoder, TextEncoder
from prefstudio.encoders.token_window import truncation_note
from prefstudio.errors import InvalidInput

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
# What the loader reads (safetensors weights, rounded); the processor repos only lend tokenizer files.
DOWNLOADS = {
    "openai/clip-vit-large-patch14": "about 1.7 GB",
    "yuvalkirstain/PickScore_v1": "about 3.9 GB",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": "tokenizer and preprocessor files, a few MB",
}
# OpenAI CLIP's normalisation, used when a folder has no preprocessor_config.json.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class PromptFeatures:
    """A prompt's text features, computed once per guidance run (`Reward.prepare`)."""

    features: torch.Tensor  # [1, dim], L2-normalised
    truncation: str | None  # set when the prompt was longer than the text encoder's window


@dataclass(frozen=True)
class LoadedCLIP:
    model: torch.nn.Module  # transformers CLIPModel, frozen
    tokenizer: object
    image_size: int
    mean: torch.Tensor  # [1,3,1,1]
    std: torch.Tensor


def _preprocessor_settings(folder: str, default_size: int) -> tuple[int, tuple, tuple]:
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        return default_size, OPENAI_MEAN, OPENAI_STD
    config = json.loads(path.read_text(encoding="utf-8"))
    crop = config.get("crop_size", default_size)
    size = crop.get("height", default_size) if isinstance(crop, dict) else int(crop)
    return size, tuple(config.get("image_mean", OPENAI_MEAN)), tuple(config.get("image_std", OPENAI_STD))


@functools.cache
def load_clip(model_id: str, processor_id: str, device: torch.device, dtype: torch.dtype) -> LoadedCLIP:
    from transformers import AutoTokenizer, CLIPModel

    model_size = DOWNLOADS.get(model_id, "size unknown")
    processor_size = DOWNLOADS.get(processor_id, "tokenizer files, a few MB")
    model_source = hub.resolve(model_id, model_size)
    processor_source = hub.resolve(processor_id, processor_size)
    local_only = not hub.downloads_allowed()
    with hub.loading(model_id, model_size):
        model = CLIPModel.from_pretrained(model_source, dtype=dtype, local_files_only=local_only)
    with hub.loading(processor_id, processor_size):
        tokenizer = AutoTokenizer.from_pretrained(processor_source, local_files_only=local_only)
    model = model.to(device).eval().requires_grad_(False)
    default_size = model.config.vision_config.image_size
    size, mean, std = default_size, OPENAI_MEAN, OPENAI_STD
    if Path(processor_source).is_dir():
        size, mean, std = _preprocessor_settings(processor_source, default_size)
    return LoadedCLIP(
        model, tokenizer, size,
        torch.tensor(mean, device=device).view(1, 3, 1, 1),
        torch.tensor(std, device=device).view(1, 3, 1, 1),
    )


def clip_preprocess(pixels: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> CLIP input [B,3,size,size], differentiable (CLIPImageProcessor's steps)."""
    height, width = pixels.shape[-2:]
    # transformers' rule for the long side: floor(size · long / short)
    short = min(height, width)
    new_h, new_w = (size, int(size * width / short)) if height == short else (int(size * height / short), size)
    if (new_h, new_w) != (height, width):
        pixels = F.interpolate(pixels, (new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    pixels = pixels[..., top : top + size, left : left + size]
    return (pixels - mean) / std


class CLIPEncoder(ImageEncoder):
    """CLIP image features [B, projection_dim], L2-normalised; `text_encoder()` for the text side."""

    def __init__(
        self,
        model_id: str = DEFAULT_CLIP,
        *,
        processor_id: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        self.model_id = model_id
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.loaded = load_clip(model_id, processor_id or model_id, self.device, self.dtype)
        self.name = f"clip:{model_id}"
        self.dim = self.loaded.model.config.projection_dim

    @classmethod
    def from_model(cls, model, tokenizer, model_id: str) -> "CLIPEncoder":
        """Wrap a CLIPModel already in memory (e.g. random weights for timing), OpenAI preprocessing."""
        encoder = cls.__new__(cls)
        parameter = next(model.parameters())
        encoder.model_id, encoder.device, encoder.dtype = model_id, parameter.device, parameter.dtype
        encoder.loaded = LoadedCLIP(
            model.eval().requires_grad_(False), tokenizer, model.config.vision_config.image_size,
            torch.tensor(OPENAI_MEAN, device=encoder.device).view(1, 3, 1, 1),
            torch.tensor(OPENAI_STD, device=encoder.device).view(1, 3, 1, 1),
        )
        encoder.name = f"clip:{model_id}"
        encoder.dim = model.config.projection_dim
        return encoder

    @property
    def model(self):
        return self.loaded.model

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InvalidInput(f"pixels must be [B,3,H,W], got {tuple(pixels.shape)}")
        x = clip_preprocess(pixels.to(self.device, torch.float32), self.loaded.image_size,
                            self.loaded.mean, self.loaded.std)
        vision = self.model.vision_model(pixel_values=x.to(self.dtype))
        features = self.model.visual_projection(vision.pooler_output)
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def encode_text_with_notes(self, prompts: list[str]) -> tuple[torch.Tensor, list[str | None]]:
        """L2-normalised text features [B, dim] and, per prompt, a note if it was cut."""
        tokenizer = self.loaded.tokenizer
        window = tokenizer.model_max_length
        notes = [truncation_note(tokenizer, p, window, f"{self.model_id}'s text encoder") for p in prompts]
        batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=window,
                          return_tensors="pt").to(self.device)
        text = self.model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        features = self.model.text_projection(text.pooler_output)
        return F.normalize(features.float(), dim=-1), notes

    def prompt_features(self, prompt: str) -> PromptFeatures:
        features, notes = self.encode_text_with_notes([prompt])
        return PromptFeatures(features, notes[0])

    def text_encoder(self) -> "CLIPTextEncoder":
        return CLIPTextEncoder(self)


class CLIPTextEncoder(TextEncoder):
    """The text side of a `CLIPEncoder` (same weights). `last_truncated` flags cut prompts."""

    def __init__(self, clip: CLIPEncoder):
        self.clip = clip
        self.name = f"clip-text:{clip.model_id}"
        self.dim = clip.dim
        self.last_truncated: list[bool] = []

    def encode(self, prompts: list[str]) -> torch.Tensor:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InvalidInput("the text encoder takes a list of prompts (strings)")
        if not prompts:
            return torch.empty(0, self.dim, device=self.clip.device)
        features, notes = self.clip.encode_text_with_notes(list(prompts))
        self.last_truncated = [note is not None for note in notes]
        return features
