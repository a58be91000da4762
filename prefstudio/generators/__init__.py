"""Image generators. `load_generator` is the one entry point the CLI, the app and the benchmarks use.

    load_generator("embedded")                      # offline procedural generator, any machine
    load_generator("sd-turbo")                      # a known short name (see known_models.py)
    load_generator("stabilityai/sdxl-turbo")        # a hub id (from the local cache unless downloads are on)
    load_generator("/path/to/diffusers-folder")     # any compatible local folder
    load_generator("auto")  or  load_generator(None)  # the default for this machine
"""
import logging

from prefstudio.errors import ModelUnavailable
from prefstudio.generators.base import Generator

log = logging.getLogger(__name__)

AUTO = "auto"
EMBEDDED = "embedded"
GPU_DEFAULT = "sd-turbo"


def default_generator_spec() -> str:
    """SD-Turbo on a CUDA machine that has its weights (or may download them), else the embedded one."""
    import torch

    if not torch.cuda.is_available():
        return EMBEDDED
    from prefstudio import hub
    from prefstudio.generators.known_models import KNOWN_MODELS

    model = KNOWN_MODELS[GPU_DEFAULT]
    try:
        hub.resolve(model.hub_id, model.download)
    except ModelUnavailable as err:
        log.warning("using the embedded generator: %s", err)
        return EMBEDDED
    return GPU_DEFAULT


def load_generator(
    spec: str | None = None,
    device=None,
    dtype=None,
    *,
    resolution: int | None = None,
    steps: int | None = None,
    cpu_offload: bool = False,
    gradient_checkpointing: bool = True,
) -> Generator:
    """"embedded" | a known short name | a hub id | a local diffusers folder | "auto"/None (the default).

    device/dtype: None picks them (CUDA bf16/fp16, MPS fp16, CPU fp32). cpu_offload keeps the
    text encoders in CPU memory except while a prompt is encoded, for GPUs too small to hold
    everything. gradient_checkpointing trades speed for memory during guidance (time and
    peak memory with and without it: docs/benchmarks_gpu.md); turn it off when the GPU has
    the room.
    Missing weights raise ModelUnavailable saying how to get them.
    """
    spec = AUTO if spec is None else spec.strip()
    if spec == AUTO:
        spec = default_generator_spec()
    if spec == EMBEDDED:
        from prefstudio.generators.embedded import EmbeddedGenerator

        return EmbeddedGenerator(resolution=resolution or 256, device=device or "cpu")
    from prefstudio.generators.diffusers_onestep import load_diffusers_generator

    return load_diffusers_generator(
        spec, device=device, dtype=dtype, steps=steps, resolution=resolution,
        cpu_offload=cpu_offload, gradient_checkpointing=gradient_checkpointing,
    )
