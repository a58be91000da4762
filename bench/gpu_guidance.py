"""GPU timing of reward-guided noise optimisation with full-size SD-Turbo and SDXL-Turbo.

The architectures are the real ones, built from assets/model_configs with random weights:
timing and memory depend on shapes, not on trained values. The loop is PrefStudio's own
(prefstudio.guidance.noise_optimization.optimise_noise: ReNO's SGD-Nesterov, lr 5, gradient
clip 0.1, noise-norm regulariser, a preview image every 5 iterations) through
DiffusersOneStepGenerator.render, with two rewards on a random CLIP ViT-L/14:
  - "user": the real TasteReward over a stand-in taste model, a linear head on the
    CLIP image features (the fitted user model is also a small head on frozen features,
    so the cost is the CLIP forward/backward, which this measures);
  - "clip": CLIPAlignmentReward (text–image cosine), prompt features computed once per run.
Weights user 0.75 (000 app. D) and clip 0.25.

    python bench/gpu_guidance.py --out docs/benchmarks_gpu.md          # CUDA GPU, 512², 30 iterations
    python bench/gpu_guidance.py --smoke                                # CPU, tiny models (CI)

Reported per model and variant: median time of one guidance iteration (render + rewards +
backward + step), median wall time of a whole 30-iteration run (prompt encoding, 31
renders, final image), and peak GPU memory during the run (weights included).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prefstudio.encoders.clip import CLIPEncoder  # noqa: E402
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator  # noqa: E402
from prefstudio.guidance.noise_optimization import GuidanceSettings, optimise_noise  # noqa: E402
from prefstudio.rewards.clip_alignment import CLIPAlignmentReward  # noqa: E402
from prefstudio.rewards.user_preference import TasteReward  # noqa: E402
from prefstudio.tools.make_tiny_pipeline import BUILDERS, clip_tokenizer, tiny_clip_model  # noqa: E402
from prefstudio_research.random_models import PROMPT, build_random_pipeline, describe_device, sync  # noqa: E402

CONFIGS = ROOT / "assets" / "model_configs"
WEIGHTS = {"user": 0.75, "clip": 0.25}
# name -> (gradient checkpointing, channels_last, torch.compile of the denoiser, cpu offload)
VARIANTS = {
    "default": (True, False, False, False),
    "no-checkpointing": (False, False, False, False),
    "channels-last": (False, True, False, False),
    "compile": (False, False, True, False),
    "cpu-offload": (True, False, False, True),
}
TARGETS = {"sd-turbo": (10.0, 16.0)}  # 30 iterations at 512²: seconds, GB (issue 4)


class LinearTaste:
    """Stand-in for a fitted user model: log-odds = features · w (w fixed, unit norm)."""

    def __init__(self, dim: int, device: torch.device):
        w = torch.randn(dim, generator=torch.Generator().manual_seed(0))
        self.w = (w / w.norm()).to(device)

    def prompt_context(self, prompts):
        return None

    def log_odds(self, features: torch.Tensor, context=None) -> torch.Tensor:
        return features @ self.w


def random_clip(device: torch.device, dtype: torch.dtype) -> CLIPEncoder:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    with torch.device(device):
        model = CLIPModel(CLIPConfig.from_json_file(CONFIGS / "clip-vit-large-patch14" / "config.json"))
    return CLIPEncoder.from_model(model.to(dtype), clip_tokenizer(), "clip-vit-large-patch14 (random weights)")


def time_guidance(generator, rewards, iterations: int, repeats: int, device: torch.device) -> dict:
    """One warm-up run (autotuning, allocator, compilation), then `repeats` timed runs."""
    settings = GuidanceSettings(iterations=iterations)
    step_times, run_times, peaks, gains = [], [], [], []
    for repeat in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        stamps, result = [], None
        for item in optimise_noise(generator, PROMPT, repeat, rewards, WEIGHTS, settings):
            sync(device)
            stamps.append(time.perf_counter())
            result = item
        if repeat == 0:
            continue
        run_times.append(stamps[-1] - start)
        progress = stamps[:-1]  # one record per iteration, the result comes last
        step_times += [b - a for a, b in zip(progress, progress[1:])]
        gains.append(result.total - result.trace[0].total)
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device) / 1e9)
    return {
        "step_ms": 1000 * statistics.median(step_times),
        "run_s": statistics.median(run_times),
        "peak_gb": max(peaks) if peaks else None,
        "gain": statistics.median(gains),
        "best_iteration": result.best_iteration,
    }


def make_generator(pipeline, name, variant, resolution, device, dtype):
    checkpointing, channels_last, compiled, offload = VARIANTS[variant]
    generator = DiffusersOneStepGenerator(
        pipeline, name=name, steps=1, resolution=resolution, device=device, dtype=dtype,
        gradient_checkpointing=checkpointing, cpu_offload=offload,
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in (generator.denoiser, pipeline.vae):
        module.to(memory_format=memory_format)
    if compiled:
        generator.denoiser = torch.compile(generator.denoiser)
    return generator


def markdown(rows: list[dict], device_line: str, command: str, args) -> str:
    lines = [
        "## Guided generation on a GPU (bench/gpu_guidance.py)",
        "",
        f"Device: {device_line}  ",
        f"Command: `{command}`  ",
        f"{args.iterations} guidance iterations per run at {args.resolution}², 1 denoising step; "
        f"one warm-up run, then the median of {args.repeats} run(s). "
        + ("Smoke test: tiny random models of the same classes (prefstudio/tools/make_tiny_pipeline.py). "
           if args.smoke else
           "Random weights in the real architectures (assets/model_configs). ")
        + "Rewards: CLIP text alignment and the user reward over a linear stand-in taste head on the "
        "same CLIP image features (weights 0.25 / 0.75).",
        "",
        f"| model | variant | one iteration (ms, median) | {args.iterations} iterations (s, median) "
        "| peak GPU memory (GB) | objective gain (best − baseline) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peak = "n/a (CPU)" if row["peak_gb"] is None else f"{row['peak_gb']:.1f}"
        target = ""
        if row["model"] in TARGETS and args.resolution == 512 and args.iterations == 30:
            seconds, gigabytes = TARGETS[row["model"]]
            met = row["run_s"] <= seconds and row["peak_gb"] is not None and row["peak_gb"] <= gigabytes
            target = f"≤ {seconds:g} s, ≤ {gigabytes:g} GB: {'met' if met else 'missed'}"
        lines.append(f"| {row['model']} | {row['variant']} | {row['step_ms']:.0f} | {row['run_s']:.2f} | "
                     f"{peak} | {row['gain']:+.3f} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sd-turbo", "sdxl-turbo"],
                        choices=["sd-turbo", "sdxl-turbo"])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as a markdown section here")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny models of the same classes, 64², 3 iterations, 1 repeat (CI)")
    args = parser.parse_args(argv)
    command = "python bench/gpu_guidance.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        device, dtype = torch.device("cpu"), torch.float32
        args.resolution, args.iterations, args.repeats = 64, 3, 1
        args.variants = ["default"]
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        parser.error("no CUDA GPU here: run with --smoke for the CPU smoke test")

    if args.smoke:
        clip = CLIPEncoder.from_model(tiny_clip_model(), clip_tokenizer(), "tiny-clip")
    else:
        clip = random_clip(device, dtype)
    rewards = {"user": TasteReward(LinearTaste(clip.dim, device), clip),
               "clip": CLIPAlignmentReward(clip)}
    device_line = describe_device(device, dtype)
    print(device_line, flush=True)
    rows = []
    for model in args.models:
        family = "sd" if model == "sd-turbo" else "sdxl"
        if args.smoke:
            pipeline = BUILDERS[family]()
        else:
            pipeline = build_random_pipeline(model, device, dtype)
        for variant in args.variants:
            generator = make_generator(pipeline, model, variant, args.resolution, device, dtype)
            row = {"model": model, "variant": variant,
                   **time_guidance(generator, rewards, args.iterations, args.repeats, device)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # after every row, so a run cut short still leaves its results
                args.out.write_text(markdown(rows, device_line, command, args))
        del pipeline, generator
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(markdown(rows, device_line, command, args))
    return rows


if __name__ == "__main__":
    main()
