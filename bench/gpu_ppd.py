"""GPU time and memory of PPD: one Diffusion-DPO step of the user adapter on full-size
SD-Turbo at 512², and one VLM user embedding with a full-size VLM architecture.

Random weights in the real architectures (assets/model_configs): time and memory depend on
shapes, not on trained values. The DPO step is PrefStudio's own (prefstudio.ppd.dpo:
VAE-encode the liked and disliked images, the reference pass at adapter scale 0 under
no_grad, the policy pass, eq. 6, backward, AdamW step on the adapter only), the base UNet
frozen in float32 with bf16 autocast, as `prefstudio_research.train.ppd train --mixed-precision bf16`
runs it. The VLM embedding is `VLMUserEncoder.profile`: 4 pairs (8 images at 384²), the
chain-of-thought prompt, sampling `--new-tokens` tokens, then the forward pass over the whole
sequence for the final token's last hidden state.

    python bench/gpu_ppd.py --out docs/benchmarks_gpu.md          # CUDA GPU
    python bench/gpu_ppd.py --smoke                               # CPU, tiny models (tests)

LLaVA-OneVision's processor needs torchvision in transformers 5.x; without it that row says
so and the SmolVLM-class (Idefics3) row still runs.
"""
import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prefstudio.ppd.adapter import AdapterConfig, UserAdapter  # noqa: E402
from prefstudio.ppd.dpo import ConditionedDenoiser, dpo_loss  # noqa: E402
from prefstudio.ppd.training import encode_latents  # noqa: E402

CONFIGS = ROOT / "assets" / "model_configs"
SECTION = "gpu_ppd"
VLMS = {"llava-onevision": "llava-onevision-qwen2-7b-ov.json", "smolvlm": "smolvlm-instruct.json"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# -- DPO step ------------------------------------------------------------------------------

def dpo_step_timing(pipeline, resolution, batch, user_dim, repeats, device, autocast_dtype):
    from diffusers import DDPMScheduler

    from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator

    generator = DiffusersOneStepGenerator(pipeline, name="sd-turbo", steps=1, resolution=resolution,
                                          device=device, dtype=torch.float32, gradient_checkpointing=True)
    unet, vae = generator.denoiser, generator.pipeline.vae
    adapter = UserAdapter(unet, AdapterConfig(user_dim=user_dim, tokens=4))
    model = ConditionedDenoiser(unet, adapter, DDPMScheduler.from_config(generator.pipeline.scheduler.config))
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
    text = generator.encode_prompt("a watercolour painting of a lighthouse on a cliff at sunset").embeds
    trainable = sum(p.numel() for p in adapter.parameters())
    times = []
    reset_peak(device)
    for i in range(repeats + 1):  # the first is a warm-up
        pixels = torch.rand(2 * batch, 3, resolution, resolution, device=device)
        user = torch.randn(batch, user_dim, device=device)
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            latents = encode_latents(vae, pixels)
            errors = model(latents[:batch], latents[batch:], text.expand(batch, -1, -1), user)
            result = dpo_loss(*errors, beta_t=1000.0)
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "peak_gb": peak_gb(device), "loss": float(result.loss),
            "adapter_params_m": trainable / 1e6, "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6}


# -- VLM embedding -------------------------------------------------------------------------

def full_size_vlm(name: str, device, dtype):
    """(model, processor) of the named architecture with random weights, and a tokenizer
    trained here with the config's vocabulary size."""
    from prefstudio_research.preference.offline_vlm import IDEFICS3_CHAT_TEMPLATE, train_tokenizer

    fields = {k: v for k, v in json.loads((CONFIGS / VLMS[name]).read_text()).items() if not k.startswith("_")}
    if name == "smolvlm":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        config = Idefics3Config(**fields)
        tokenizer = train_tokenizer(min(config.text_config.vocab_size - 64, 8000))
        config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        side = config.vision_config.image_size
        processor = Idefics3Processor(
            image_processor=Idefics3ImageProcessorPil(size={"longest_edge": side}, max_image_size={"longest_edge": side},
                                                      do_image_splitting=False),
            tokenizer=tokenizer, chat_template=IDEFICS3_CHAT_TEMPLATE,
            image_seq_len=(side // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2)
        with torch.device(device):
            model = Idefics3ForConditionalGeneration._from_config(config, dtype=dtype)
        return model, processor
    from transformers import (
        LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    config = LlavaOnevisionConfig(**fields)
    tokenizer = train_tokenizer(8000)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>"]})
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.video_token_index = tokenizer.convert_tokens_to_ids("<video>")
    template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
                "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}<image>{% endif %}{% endfor %}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    # The processor's constructor insists on a video processor (torchvision-backed) even for images.
    processor = LlavaOnevisionProcessor(image_processor=LlavaOnevisionImageProcessorPil(), tokenizer=tokenizer,
                                        video_processor=LlavaOnevisionVideoProcessor(),
                                        num_image_tokens=729, vision_feature_select_strategy="full",
                                        chat_template=template)
    with torch.device(device):
        model = LlavaOnevisionForConditionalGeneration._from_config(config, dtype=dtype)
    return model, processor


def vlm_embedding_timing(name, new_tokens, repeats, device, dtype, smoke_folder=None):
    from PIL import Image

    from prefstudio.ppd.vlm_profile import JudgedPair, VLMSettings, VLMUserEncoder, load_vlm_user_encoder

    if smoke_folder is not None:
        settings = VLMSettings(model=str(smoke_folder), image_size=32, max_new_tokens=new_tokens, dtype="float32")
        encoder = load_vlm_user_encoder(settings, device)
    else:
        model, processor = full_size_vlm(name, device, dtype)
        settings = VLMSettings(model=f"{name} (random weights)", max_new_tokens=new_tokens,
                               dtype=str(dtype).removeprefix("torch."))
        encoder = VLMUserEncoder(model, processor, settings)
    # A random model rarely samples its end token: every run writes about new_tokens tokens.
    rng = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(64, 64, 3, generator=rng) * 255).byte().numpy()) for _ in range(8)]
    history = [JudgedPair(f"prompt number {i}", images[2 * i], images[2 * i + 1]) for i in range(4)]
    times = []
    reset_peak(device)
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        profile = encoder.profile(history, seed=i)
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in encoder.model.parameters()) / 1e9
    return {"embed_s": statistics.median(times), "peak_gb": peak_gb(device), "dim": int(profile.embedding.shape[0]),
            "params_b": params, "prompt_tokens": int(encoder._inputs(*encoder.messages(history))["input_ids"].shape[1])}


# -- report --------------------------------------------------------------------------------

def markdown(device_line, command, dpo_rows, vlm_rows, args) -> str:
    lines = ["## PPD on a GPU (bench/gpu_ppd.py)", "", f"Device: {device_line}  ", f"Command: `{command}`  ",
             ("Smoke test: tiny random models of the same classes on the CPU. " if args.smoke else
              "Random weights in the real architectures (assets/model_configs). ")
             + f"Median of {args.repeats} run(s) after one warm-up; peak memory is "
               "`torch.cuda.max_memory_allocated`, weights included.", "",
             f"One Diffusion-DPO step (eq. 6) of the user adapter at {args.resolution}², base UNet frozen (fp32 "
             "weights, bf16 autocast, gradient checkpointing), AdamW on the adapter:", "",
             "| pairs per step | user dim | adapter params (M) | step (s) | peak GPU memory (GB) |", "|---|---|---|---|---|"]
    for row in dpo_rows:
        peak = "n/a (CPU)" if row["peak_gb"] is None else f"{row['peak_gb']:.1f}"
        lines.append(f"| {row['batch']} | {row['user_dim']} | {row['adapter_params_m']:.1f} | {row['step_s']:.2f} | {peak} |")
    lines += ["", f"One VLM user embedding: 4 pairs, the chain-of-thought prompt, {args.new_tokens} sampled tokens, "
              "then one forward pass over prompt + answer:", "",
              "| VLM architecture | params (B) | prompt tokens | embedding dim | time (s) | peak GPU memory (GB) |",
              "|---|---|---|---|---|---|"]
    for row in vlm_rows:
        if "error" in row:
            lines.append(f"| {row['vlm']} | not run: {row['error']} | | | | |")
            continue
        peak = "n/a (CPU)" if row["peak_gb"] is None else f"{row['peak_gb']:.1f}"
        lines.append(f"| {row['vlm']} | {row['params_b']:.2f} | {row['prompt_tokens']} | {row['dim']} | "
                     f"{row['embed_s']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


def write_block(path: Path, markdown_text: str) -> None:
    """Replace this script's section of `path` (between its markers), leaving the rest."""
    text = path.read_text() if path.exists() else ""
    block = f"<!-- {SECTION} -->\n{markdown_text.strip()}\n<!-- /{SECTION} -->"
    pattern = re.compile(rf"<!-- {SECTION} -->.*?<!-- /{SECTION} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text.lstrip())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="pairs per DPO step")
    parser.add_argument("--vlms", nargs="+", default=["llava-onevision", "smolvlm"], choices=list(VLMS))
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results into this markdown file's gpu_ppd section")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models: checks the code path only")
    args = parser.parse_args(argv)
    command = "python bench/gpu_ppd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.smoke:
        device, dtype, autocast = torch.device("cpu"), torch.float32, None
        args.resolution, args.batches, args.new_tokens, args.repeats = 64, [1], 4, 1
    elif torch.cuda.is_available():
        device, dtype, autocast = torch.device("cuda"), torch.bfloat16, torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        parser.error("no CUDA GPU here: run with --smoke for the CPU smoke test")
    device_line = (f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}" if device.type == "cuda"
                   else f"CPU, torch {torch.__version__}")
    print(device_line, flush=True)

    dpo_rows, vlm_rows = [], []
    if args.smoke:
        from prefstudio.tools.make_tiny_pipeline import tiny_sd_pipeline
        pipeline = tiny_sd_pipeline()
    else:
        from prefstudio_research.random_models import build_random_pipeline
        pipeline = build_random_pipeline("sd-turbo", device, torch.float32)
    user_dims = {"llava-onevision": 3584, "smolvlm": 2048}
    for batch in args.batches:
        user_dim = user_dims[args.vlms[0]]
        row = {"batch": batch, "user_dim": user_dim,
               **dpo_step_timing(pipeline, args.resolution, batch, user_dim, args.repeats, device, autocast)}
        dpo_rows.append(row)
        print(json.dumps(row), flush=True)
    del pipeline
    smoke_folder = None
    if args.smoke:
        import tempfile

        from prefstudio_research.preference.offline_vlm import tiny_idefics3
        smoke_folder = tiny_idefics3(Path(tempfile.mkdtemp()) / "tiny-idefics3")
        args.vlms = ["smolvlm"]
    for name in args.vlms:
        try:
            row = {"vlm": name, **vlm_embedding_timing(name, args.new_tokens, args.repeats, device, dtype, smoke_folder)}
        except (ImportError, AttributeError, ValueError, TypeError) as err:  # e.g. LLaVA-OneVision without torchvision
            row = {"vlm": name, "error": f"{err.__class__.__name__}: {str(err).splitlines()[0][:150]}"}
        vlm_rows.append(row)
        print(json.dumps(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        write_block(args.out, markdown(device_line, command, dpo_rows, vlm_rows, args))
    return {"dpo": dpo_rows, "vlm": vlm_rows}


if __name__ == "__main__":
    main()
