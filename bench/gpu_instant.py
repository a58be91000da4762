"""GPU cost of the preference adapter with full-size SD-Turbo: one training step and one Instant image.

The architecture is the real one, built from assets/model_configs with random weights (time and
memory depend on shapes, not on trained values; bench/gpu_guidance.py does the same). The step
is prefstudio_research/train/preference_adapter.py's own (`AdapterObjective.terms` + Adam on the adapter:
render of the modulated conditioning, the bank's image encoder, taste + prompt consistency +
dispersion), for `--people` images; the Instant image is `guidance.instant.instant_image`
(adapter pass, 1 denoising step, VAE decode). Reported: median seconds of each after one
warm-up, and peak GPU memory; the section goes into docs/benchmarks_gpu.md.

    python bench/gpu_instant.py                 # CUDA GPU, 512², 4 images per training step
    python bench/gpu_instant.py --smoke         # CPU, the tiny SD-Turbo-class pipeline (CI)
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prefstudio_research.random_models import PROMPT, build_random_pipeline, describe_device, sync  # noqa: E402
from prefstudio_research.report import write_section  # noqa: E402
from prefstudio.encoders.embedded import EmbeddedImageEncoder  # noqa: E402
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator  # noqa: E402
from prefstudio.guidance.instant import instant_image  # noqa: E402
from prefstudio.preference.user_embedding import UserBank  # noqa: E402
from prefstudio.studio import DEFAULT_BANK  # noqa: E402
from prefstudio.tools.make_tiny_pipeline import tiny_sd_pipeline  # noqa: E402
from prefstudio_research.train.preference_adapter import (  # noqa: E402
    AdapterObjective, TrainSettings, new_adapter, train,
)

GPU_NOTES = ROOT / "docs" / "benchmarks_gpu.md"


def measure(device: torch.device, dtype: torch.dtype, resolution: int, people: int, repeats: int,
            smoke: bool) -> dict:
    pipeline = tiny_sd_pipeline() if smoke else build_random_pipeline("sd-turbo", device, dtype)
    generator = DiffusersOneStepGenerator(pipeline, name="sd-turbo", steps=1, resolution=resolution,
                                          device=device, dtype=dtype)
    bank = UserBank.load(DEFAULT_BANK)
    settings = TrainSettings(steps=1, people=people, dispersion_people=16)
    objective = AdapterObjective(generator, EmbeddedImageEncoder(device=device), bank, [PROMPT], settings)
    adapter = new_adapter(objective, settings)
    print(f"adapter: {sum(p.numel() for p in adapter.parameters()):,} parameters", flush=True)
    step_times, instant_times, peaks = [], [], []
    for repeat in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        adapter, _ = train(objective, TrainSettings(**{**vars(settings), "seed": repeat}), adapter=adapter,
                           log=lambda *a: None)
        sync(device)
        step = time.perf_counter() - start
        start = time.perf_counter()
        instant_image(generator, adapter, PROMPT, repeat, bank.user_embeddings[repeat % bank.n_users].to(device))
        sync(device)
        if repeat:
            step_times.append(step)
            instant_times.append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks.append(torch.cuda.max_memory_allocated(device) / 1e9)
    return {"parameters": sum(p.numel() for p in adapter.parameters()),
            "step_s": statistics.median(step_times), "instant_s": statistics.median(instant_times),
            "peak_gb": max(peaks) if peaks else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--people", type=int, default=4, help="images per training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny pipeline, 64², 1 repeat; writes nothing")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/gpu_instant.py", *(sys.argv[1:] if argv is None else argv)])
    if args.smoke:
        device, dtype = torch.device("cpu"), torch.float32
        args.resolution, args.repeats = 64, 1
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        parser.error("no CUDA GPU here: run with --smoke for the CPU smoke test")
    row = measure(device, dtype, args.resolution, args.people, args.repeats, args.smoke)
    print(json.dumps(row), flush=True)
    if not args.smoke:
        write_section("gpu_instant", f"""## The preference adapter on a GPU (bench/gpu_instant.py)

Device: {describe_device(device, dtype)}  
Command: `{command}`  
Full-size SD-Turbo (random weights in the real architecture) at {args.resolution}², 1 denoising step; adapter
of {row['parameters']:,} parameters on the 1024-d text tokens; median of {args.repeats} after one warm-up.

| one adapter training step ({args.people} images: render, image encoder, backward) | one Instant image | peak GPU memory |
|---:|---:|---:|
| {row['step_s']:.2f} s | {row['instant_s']:.3f} s | {row['peak_gb']:.1f} GB |
""", path=GPU_NOTES)
    return row


if __name__ == "__main__":
    main()
