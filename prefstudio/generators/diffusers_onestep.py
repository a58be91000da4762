"""One-step (few-step) diffusers models as PrefStudio generators: SD-Turbo, SDXL-Turbo, FLUX.1-schnell.

Guidance needs pixels as a differentiable function of the initial noise, and diffusers'
`__call__` runs under no_grad, so `render` is the short loop written out:

    latents = noise · σ_max  →  [model → scheduler step] × steps  →  VAE decode  →  pixels in [0,1]

No classifier-free guidance: these models are distilled to run without it. The models
are frozen (no weight gradients are kept) and gradient-checkpointed by default, so the
backward pass only stores what the noise's gradient needs.

Any local diffusers folder whose model_index.json names StableDiffusionPipeline,
StableDiffusionXLPipeline or FluxPipeline loads too; the scheduler is the folder's own.
"""
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from prefstudio import hub
from prefstudio.devices import pick_device, pick_dtype
from prefstudio.encoders.token_window import truncation_note
from prefstudio.errors import InvalidInput, ModelUnavailable
from prefstudio.generators.base import Generator
from prefstudio.generators.known_models import VAE_DOWNLOAD, find_known

log = logging.getLogger(__name__)

SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline")
MAX_MODEL_INDEX_BYTES = 1 << 20
# FLUX.1-schnell was trained with 256 T5 tokens (diffusers' FluxPipeline docs).
FLUX_T5_TOKENS = 256


@dataclass
class PromptConditioning:
    """Text features for one prompt, computed once and reused by every render."""

    embeds: torch.Tensor  # [1, T, D] token features the model attends to
    pooled: torch.Tensor | None = None  # [1, D'] (SDXL, FLUX)
    ids: torch.Tensor | None = None  # SDXL size/crop ids [1, 6]; FLUX text position ids [T, 3]
    #: one line per text encoder that cut the prompt; shown to the person
    truncation: list[str] = field(default_factory=list)
    #: [D_u] user embedding for a UNet with a PPD user adapter installed (prefstudio.ppd.adapter)
    user_embedding: torch.Tensor | None = None


class DiffusersOneStepGenerator(Generator):
    """A loaded diffusers pipeline driven by a hand-written differentiable loop."""

    def __init__(
        self,
        pipeline,
        *,
        name: str,
        steps: int,
        resolution: int,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cpu_offload: bool = False,
        gradient_checkpointing: bool = True,
    ):
        from diffusers import (
            EulerAncestralDiscreteScheduler,
            EulerDiscreteScheduler,
            FluxPipeline,
            StableDiffusionXLPipeline,
        )

        self.name = name
        self.steps = int(steps)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        if self.steps < 1:
            raise InvalidInput(f"steps must be at least 1, got {steps}")
        self.family = (
            "flux" if isinstance(pipeline, FluxPipeline)
            else "sdxl" if isinstance(pipeline, StableDiffusionXLPipeline)
            else "sd"
        )
        # FLUX packs 2×2 latent patches, so its side must divide by 16.
        multiple = pipeline.vae_scale_factor * (2 if self.family == "flux" else 1)
        if resolution % multiple:
            raise InvalidInput(f"resolution {resolution} must be a multiple of {multiple} for {name}")
        self.resolution = int(resolution)
        if self.family == "flux" and pipeline.transformer.config.guidance_embeds:
            raise InvalidInput(
                f"{name} is a guidance-distilled FLUX model (like FLUX.1-dev) that needs many steps; "
                "guidance optimises through every step, so use FLUX.1-schnell"
            )
        # Guidance needs the image to be a function of the initial noise alone: the ancestral
        # sampler adds fresh noise each step. For one step both samplers give the same image.
        if isinstance(pipeline.scheduler, EulerAncestralDiscreteScheduler):
            pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)

        self.denoiser = pipeline.transformer if self.family == "flux" else pipeline.unet
        # CPU offload keeps the text encoders (FLUX's T5 alone is 9.5 GB in bf16) in CPU memory
        # and brings them to the GPU once per prompt. The denoiser and VAE stay: guidance runs
        # them forward and backward every iteration, and diffusers' offload hooks would move
        # weights away that the backward pass (and checkpoint recomputation) still needs.
        self.text_encoders = [m for n, m in pipeline.components.items() if n.startswith("text_encoder") and m]
        for module in pipeline.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)
                if module.dtype != self.dtype:  # (diffusers warns on any dtype cast, even a no-op)
                    module.to(dtype=self.dtype)
                module.to("cpu" if cpu_offload and module in self.text_encoders else self.device)
        for module in (self.denoiser, pipeline.vae):
            if module._supports_gradient_checkpointing:
                if gradient_checkpointing:
                    module.enable_gradient_checkpointing()
                else:
                    module.disable_gradient_checkpointing()
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.cpu_offload = cpu_offload

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        channels = self.pipeline.vae.config.latent_channels
        side = self.resolution // self.pipeline.vae_scale_factor
        return channels, side, side

    def params(self) -> dict:
        return {**super().params(), "steps": self.steps, "dtype": str(self.dtype).removeprefix("torch.")}

    def initial_noise(self, seed: int, batch: int = 1) -> torch.Tensor:
        # Drawn on the CPU so that a seed gives the same noise on every device.
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((batch, *self.noise_shape), generator=generator)
        return noise.to(self.device)

    # -- prompt ------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> PromptConditioning:
        truncation = self.prompt_notes(prompt)
        if not self.cpu_offload:
            return self._encode(prompt, truncation)
        for module in self.text_encoders:
            module.to(self.device)
        try:
            return self._encode(prompt, truncation)
        finally:
            for module in self.text_encoders:
                module.to("cpu")

    def _encode(self, prompt: str, truncation: list[str]) -> PromptConditioning:
        pipe = self.pipeline
        if self.family == "sd":
            embeds, _ = pipe.encode_prompt(prompt, self.device, 1, False)
            return PromptConditioning(embeds, truncation=truncation)
        if self.family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            size = (self.resolution, self.resolution)
            time_ids = pipe._get_add_time_ids(
                size, (0, 0), size, dtype=embeds.dtype,
                text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
            )
            return PromptConditioning(embeds, pooled, time_ids.to(self.device), truncation)
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt, prompt_2=None, device=self.device, max_sequence_length=FLUX_T5_TOKENS
        )
        return PromptConditioning(embeds, pooled, text_ids, truncation)

    def prompt_notes(self, prompt: str) -> list[str]:
        return [note for tokenizer, window, reader in self._token_windows()
                if (note := truncation_note(tokenizer, prompt, window, reader)) is not None]

    def _token_windows(self):
        pipe = self.pipeline
        # SDXL's second encoder reads the same 77 CLIP tokens as the first: one note covers both.
        windows = [(pipe.tokenizer, pipe.tokenizer.model_max_length, f"{self.name}'s CLIP text encoder")]
        if self.family == "flux":
            windows.append((pipe.tokenizer_2, FLUX_T5_TOKENS, f"{self.name}'s T5 text encoder"))
        return windows

    # -- preference adapter ---------------------------------------------------------------

    def conditioning_tokens(self, conditioning: PromptConditioning) -> torch.Tensor:
        return conditioning.embeds[0]   # [T, D] the text token features the denoiser attends to

    def modulate(self, conditioning: PromptConditioning, offsets: torch.Tensor) -> PromptConditioning:
        """Adds the offsets to the text token features (Premier, 003 §4.1, modulates the text
        tokens' conditioning; a UNet has no per-block modulation vector, so the tokens it
        cross-attends to are modulated). Pooled features and ids stay the prompt's."""
        tokens = conditioning.embeds
        if offsets.dim() != 3 or offsets.shape[1:] != tokens.shape[1:]:
            raise InvalidInput(f"{self.name} offsets must be [batch, {tokens.shape[1]}, {tokens.shape[2]}], "
                               f"got {list(offsets.shape)}")
        embeds = tokens + offsets.to(tokens.device, tokens.dtype)
        return replace(conditioning, embeds=embeds)

    # -- noise → pixels ------------------------------------------------------------------

    def render(self, noise: torch.Tensor, conditioning: PromptConditioning) -> torch.Tensor:
        if tuple(noise.shape[1:]) != self.noise_shape:
            raise InvalidInput(f"noise must have shape [B, {', '.join(map(str, self.noise_shape))}]")
        latents = noise.to(self.device, self.dtype)
        if self.family == "flux":
            latents = self._denoise_flux(latents, conditioning)
        else:
            latents = self._denoise_unet(latents, conditioning)
        return self._decode(latents)

    def _denoise_unet(self, latents: torch.Tensor, cond: PromptConditioning) -> torch.Tensor:
        scheduler, batch = self.pipeline.scheduler, latents.shape[0]
        scheduler.set_timesteps(self.steps, device=self.device)
        latents = latents * scheduler.init_noise_sigma
        embeds = cond.embeds.expand(batch, -1, -1)
        added = None
        if self.family == "sdxl":
            added = {"text_embeds": cond.pooled.expand(batch, -1), "time_ids": cond.ids.expand(batch, -1)}
        if cond.user_embedding is not None:
            user = cond.user_embedding.to(self.device).reshape(1, 1, -1).expand(batch, -1, -1)
            added = (added or {}) | {"image_embeds": [user]}
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            prediction = self.denoiser(
                model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added
            ).sample
            latents = scheduler.step(prediction, t, latents).prev_sample
        return latents

    def _denoise_flux(self, latents: torch.Tensor, cond: PromptConditioning) -> torch.Tensor:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        pipe, scheduler = self.pipeline, self.pipeline.scheduler
        batch, channels, height, width = latents.shape
        latents = pipe._pack_latents(latents, batch, channels, height, width)
        image_ids = pipe._prepare_latent_image_ids(batch, height // 2, width // 2, self.device, self.dtype)
        # The same sigma schedule FluxPipeline.__call__ uses.
        config = scheduler.config
        mu = calculate_shift(
            latents.shape[1], config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5), config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / self.steps, self.steps)
        timesteps, _ = retrieve_timesteps(scheduler, self.steps, self.device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        embeds = cond.embeds.expand(batch, -1, -1)
        pooled = cond.pooled.expand(batch, -1)
        for t in timesteps:
            velocity = self.denoiser(
                hidden_states=latents, timestep=(t / 1000).expand(batch).to(latents.dtype),
                guidance=None, pooled_projections=pooled, encoder_hidden_states=embeds,
                txt_ids=cond.ids, img_ids=image_ids, return_dict=False,
            )[0]
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        return pipe._unpack_latents(latents, self.resolution, self.resolution, pipe.vae_scale_factor)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            latents = latents + vae.config.shift_factor
        image = vae.decode(latents).sample
        return (image.float() / 2 + 0.5).clamp(0, 1)


# -- loading -------------------------------------------------------------------------------


def read_pipeline_class(source: str, spec: str, size: str) -> str:
    """The pipeline class named in model_index.json, checked before any weights load."""
    if Path(source).is_dir():
        index_file = Path(source) / "model_index.json"
        if not index_file.is_file():
            raise InvalidInput(f"{spec} is not a diffusers folder: it has no model_index.json")
    else:
        from huggingface_hub import hf_hub_download

        with hub.loading(spec, size):
            index_file = Path(hf_hub_download(source, "model_index.json"))
    if index_file.stat().st_size > MAX_MODEL_INDEX_BYTES:
        raise InvalidInput(f"{index_file} is too large to be a diffusers model_index.json")
    try:
        class_name = json.loads(index_file.read_text(encoding="utf-8")).get("_class_name")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise InvalidInput(f"{index_file} is not valid JSON") from None
    if class_name not in SUPPORTED_PIPELINES:
        raise InvalidInput(
            f"{spec} holds a {class_name}; PrefStudio runs one-step models of these kinds: "
            f"{', '.join(SUPPORTED_PIPELINES)}"
        )
    return class_name


def load_diffusers_generator(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    steps: int | None = None,
    resolution: int | None = None,
    cpu_offload: bool = False,
    gradient_checkpointing: bool = True,
) -> DiffusersOneStepGenerator:
    """Load a known short name ("sd-turbo"), a hub id or a local diffusers folder."""
    import diffusers

    known = find_known(spec)
    hub_id = known.hub_id if known else spec
    size = known.download if known else "size unknown"
    needed = [(hub_id, size)] + ([(known.vae_id, VAE_DOWNLOAD)] if known and known.vae_id else [])
    sources, missing = {}, []
    for repo, repo_size in needed:  # name everything that is missing in one message
        try:
            sources[repo] = hub.resolve(repo, repo_size)
        except ModelUnavailable as err:
            missing.append(str(err))
    if missing:
        raise ModelUnavailable(" Also: ".join(missing))
    source = sources[hub_id]
    pipeline_class = getattr(diffusers, read_pipeline_class(source, hub_id, size))
    target = pick_device(device)
    torch_dtype = pick_dtype(target, dtype)
    components = {}
    if pipeline_class is diffusers.StableDiffusionPipeline:
        # render() never calls the pipeline, so a safety checker would be dead weight.
        components = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if known and known.vae_id:
        with hub.loading(known.vae_id, VAE_DOWNLOAD):
            components["vae"] = diffusers.AutoencoderKL.from_pretrained(
                sources[known.vae_id], dtype=torch_dtype, local_files_only=not hub.downloads_allowed()
            )
    with hub.loading(hub_id, size):
        pipeline = pipeline_class.from_pretrained(
            source, dtype=torch_dtype, local_files_only=not hub.downloads_allowed(), **components
        )
    if steps is None:
        steps = known.steps if known else (4 if pipeline_class is diffusers.FluxPipeline else 1)
    if resolution is None:
        resolution = known.resolution if known else _native_resolution(pipeline)
    name = known.name if known else (Path(spec).expanduser().name if hub.is_local(spec) else spec)
    try:
        return DiffusersOneStepGenerator(
            pipeline, name=name, steps=steps, resolution=resolution,
            device=target, dtype=torch_dtype, cpu_offload=cpu_offload,
            gradient_checkpointing=gradient_checkpointing,
        )
    except torch.OutOfMemoryError:
        raise ModelUnavailable(
            f"{name} does not fit in {target}'s memory; try the CPU-offload option or a smaller model"
        ) from None


def _native_resolution(pipeline) -> int:
    if hasattr(pipeline, "unet"):
        return pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    return pipeline.default_sample_size * pipeline.vae_scale_factor
