"""The diffusers models PrefStudio knows by short name, as data.

Sizes are the diffusers-format weights the loader reads (full-precision files,
cast to the run's dtype on load), rounded; a full `hf download` of a repository
also fetches its other variants and is larger.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    name: str  # short name for --model and the UI
    hub_id: str
    steps: int  # denoising steps per image; guidance backpropagates through all of them
    resolution: int  # default side length in pixels
    download: str  # approximate size of what is loaded
    vae_id: str | None = None  # a replacement VAE loaded instead of the repository's


KNOWN_MODELS = {
    model.name: model
    for model in (
        KnownModel("sd-turbo", "stabilityai/sd-turbo", steps=1, resolution=512, download="about 5.2 GB"),
        # SDXL's own VAE overflows in fp16; madebyollin's fix keeps it finite (about 0.3 GB more).
        KnownModel(
            "sdxl-turbo", "stabilityai/sdxl-turbo", steps=1, resolution=512,
            download="about 14 GB", vae_id="madebyollin/sdxl-vae-fp16-fix",
        ),
        # 4 steps is schnell's setting; 512² rather than its native 1024² because guidance keeps
        # the activations of all 4 transformer passes for the backward pass.
        KnownModel(
            "flux-schnell", "black-forest-labs/FLUX.1-schnell", steps=4, resolution=512,
            download="about 34 GB",
        ),
    )
}

VAE_DOWNLOAD = "about 0.3 GB"


def find_known(spec: str) -> KnownModel | None:
    """By short name or by hub id."""
    if spec in KNOWN_MODELS:
        return KNOWN_MODELS[spec]
    return next((m for m in KNOWN_MODELS.values() if m.hub_id == spec), None)
