"""LAION aesthetic score: the "improved aesthetic predictor" MLP on CLIP ViT-L/14 image features.

The head (christophschuhmann/improved-aesthetic-predictor on GitHub, file
`sac+logos+ava1-l14-linearMSE.pth`, 3.7 MB, Apache-2.0) predicts a 1–10 rating from
L2-normalised CLIP ViT-L/14 image embeddings. It ships as a pickle, which PrefStudio
never loads from a user's files at run time; convert it once to safetensors:

    python -m prefstudio.tools.convert_aesthetic_head sac+logos+ava1-l14-linearMSE.pth aesthetic_head.safetensors

and pass the .safetensors path (or "org/repo/file.safetensors" for a file on the Hub).

Normalisation reference: PPD (seeds/002, Table 1) reports mean aesthetic scores of
5.33–5.92 for its models on PartiPrompts; offset 5.5, spread 0.5 (the spread is an
estimate, not measured here).
"""
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from prefstudio import hub
from prefstudio.encoders.clip import CLIPEncoder
from prefstudio.errors import InvalidInput
from prefstudio.rewards.base import Reward

CLIP_L14_DIM = 768
MAX_HEAD_BYTES = 16 * 2**20  # the real head is 3.7 MB


class AestheticHead(nn.Module):
    """The LAION MLP, layer for layer (its Dropouts are no-ops at inference but keep the key names)."""

    def __init__(self, input_size: int = CLIP_L14_DIM):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def load_head(path: Path) -> AestheticHead:
    """Read and check a safetensors head; refuses anything that is not exactly the LAION MLP."""
    if path.suffix != ".safetensors":
        raise InvalidInput(
            f"{path.name}: the aesthetic head must be a .safetensors file; convert the LAION .pth with "
            "python -m prefstudio.tools.convert_aesthetic_head"
        )
    if path.stat().st_size > MAX_HEAD_BYTES:
        raise InvalidInput(f"{path.name} is {path.stat().st_size:,} bytes; the aesthetic head is about 3.7 MB")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise InvalidInput(f"{path.name} is not a readable safetensors file ({err})") from None
    head = AestheticHead()
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise InvalidInput(
            f"{path.name} does not hold the LAION aesthetic head on CLIP ViT-L/14 "
            f"(expected tensors {sorted(expected)} with 768 inputs)"
        )
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval().requires_grad_(False)


class AestheticReward(Reward):
    name = "aesthetic"
    description = "Visual appeal (LAION aesthetic predictor, 1–10 scale)"
    offset = 5.5
    scale = 0.5
    normalisation_source = ("estimate: offset from published aesthetic scores (PPD, seeds/002 Table 1), "
                            "spread guessed; not measured here")

    def __init__(self, weights: str | Path, clip: CLIPEncoder | None = None):
        self.clip = clip if clip is not None else CLIPEncoder()
        if self.clip.dim != CLIP_L14_DIM:
            raise InvalidInput(
                f"the aesthetic head reads CLIP ViT-L/14 features ({CLIP_L14_DIM}-d); "
                f"{self.clip.model_id} gives {self.clip.dim}-d"
            )
        self.head = load_head(hub.hub_file(str(weights), "3.7 MB")).to(self.clip.device)

    def score(self, pixels: torch.Tensor, context=None) -> torch.Tensor:
        return self.head(self.clip.encode_shared(pixels)).squeeze(-1)
