"""Write a tiny random-weight diffusers folder of a real pipeline class, for CPU runs and tests.

    python -m prefstudio.tools.make_tiny_pipeline /tmp/tiny-sd-turbo            # SD-Turbo class, 64²
    python -m prefstudio.tools.make_tiny_pipeline /tmp/tiny-sdxl --family sdxl
    python -m prefstudio.tools.make_tiny_pipeline /tmp/tiny-flux --family flux
    python -m prefstudio.tools.make_tiny_pipeline /tmp/tiny-clip --family clip  # for CLIPEncoder / rewards
    python -m prefstudio personalize --model /tmp/tiny-sd-turbo ...

Same classes, scheduler settings and folder layout as stabilityai/sd-turbo (and
sdxl-turbo, FLUX.1-schnell), with layers a few dozen channels wide and random weights
(seeded), so the whole loop runs on a CPU in seconds; the images are noise-like patterns,
not pictures. The tokenizer is CLIP's real one (assets/clip_tokenizer). The FLUX folder
uses that CLIP tokenizer for its T5 encoder too: no T5 vocabulary is available offline.
"""
import argparse
from pathlib import Path

import torch

from prefstudio.shipped import ASSETS

CLIP_TOKENIZER_DIR = ASSETS / "clip_tokenizer"
FAMILIES = ("sd", "sdxl", "flux", "clip")
VOCAB = 49408  # CLIP's vocabulary, shared by every tiny text encoder here


def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)


def _clip_text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def _vae(**overrides):
    from diffusers import AutoencoderKL

    # Two levels: 8× fewer pixels per latent than SD's four levels would give at this width.
    config = dict(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32,
    )
    return AutoencoderKL(**{**config, **overrides})


def tiny_sd_pipeline(seed: int = 0):
    """StableDiffusionPipeline like stabilityai/sd-turbo: Euler, trailing timesteps, ε-prediction."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="trailing", prediction_type="epsilon", steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_clip_text_config()), tokenizer=clip_tokenizer(),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0):
    """StableDiffusionXLPipeline like stabilityai/sdxl-turbo: two text encoders, size conditioning,
    Euler-ancestral with trailing timesteps (the generator swaps in plain Euler)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        # 6 size/crop ids × 8 + the second encoder's 32-d pooled projection
        projection_class_embeddings_input_dim=80, cross_attention_dim=64,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="trailing", prediction_type="epsilon", steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(scaling_factor=0.13025), text_encoder=CLIPTextModel(_clip_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config()),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet, scheduler=scheduler,
    )


def tiny_flux_pipeline(seed: int = 0):
    """FluxPipeline like FLUX.1-schnell: flow matching without dynamic shift, no guidance embedding."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=False, axes_dims_rope=[4, 6, 6],
    )
    t5 = T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=_vae(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=CLIPTextModel(_clip_text_config()), tokenizer=clip_tokenizer(),
        text_encoder_2=t5, tokenizer_2=clip_tokenizer(), transformer=transformer,
    )


def tiny_clip_model(seed: int = 0, image_size: int = 32):
    """A CLIPModel whose projection is 768-d like ViT-L/14's, so the LAION aesthetic head fits on it."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = _clip_text_config().to_dict()
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))


def write_tiny_clip(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A CLIPModel folder (weights, CLIP tokenizer, preprocessor config) for CLIPEncoder."""
    from transformers import CLIPImageProcessor

    out_dir = Path(out_dir)
    tiny_clip_model(seed, image_size).save_pretrained(out_dir)
    clip_tokenizer().save_pretrained(out_dir)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(out_dir)
    return out_dir


BUILDERS = {"sd": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "flux": tiny_flux_pipeline}


def write_tiny_pipeline(out_dir: str | Path, family: str = "sd", seed: int = 0) -> Path:
    out_dir = Path(out_dir)
    if family == "clip":
        return write_tiny_clip(out_dir, seed)
    BUILDERS[family](seed).save_pretrained(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--family", choices=FAMILIES, default="sd")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = write_tiny_pipeline(args.out_dir, args.family, args.seed)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote a tiny {args.family} model to {path} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
