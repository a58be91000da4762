"""Speed of the embedded image encoder (EfficientNet-Lite0 + colour/texture statistics) on one CPU thread.

    python bench/encoder_speed.py [--runs 10] [--resolution 256]

Measures, as medians over `runs` repetitions after one warm-up (weights already loaded):
- `encode_8_s`: `encode` of a batch of 8 images, gradients off (features for a round
  of candidates);
- `encode_fwd_bwd_s`: `encode` of one image plus the backward pass to its pixels, the
  encoder's share of one guidance step.
- `network_8_s`, `stats_8_s`: the two halves of `encode_8_s`.
Each also as `..._cpu_s`: this thread's CPU time, which stays close to the unloaded wall
time when other processes share the cores (wall-clock medians on a busy 2-core machine
varied 2x between runs). Prints the numbers and a markdown table row; `measure()`
returns them for the core bench.
"""
import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402


from prefstudio.encoders import efficientnet_lite0, image_stats  # noqa: E402
from prefstudio.encoders.embedded import EmbeddedImageEncoder  # noqa: E402


def _median_seconds(step, runs: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds of `step`, after one warm-up run."""
    wall, cpu = [], []
    for _ in range(runs + 1):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.thread_time() - start_cpu)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def measure(runs: int = 10, resolution: int = 256) -> dict:
    torch.set_num_threads(1)
    encoder = EmbeddedImageEncoder()
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(8, 3, resolution, resolution, generator=generator)
    single = torch.rand(1, 3, resolution, resolution, generator=generator)
    direction = torch.randn(encoder.dim, generator=generator)

    def fwd_bwd():
        pixels = single.clone().requires_grad_(True)
        (encoder.encode(pixels) @ direction).sum().backward()

    steps = {
        "encode_8": lambda: encoder.encode(batch),
        "network_8": lambda: encoder.network.features(efficientnet_lite0.preprocess(batch)),
        "stats_8": lambda: image_stats.image_statistics(batch),
    }
    result = {}
    with torch.no_grad():
        for key, step in steps.items():
            result[f"{key}_s"], result[f"{key}_cpu_s"] = _median_seconds(step, runs)
    result["encode_fwd_bwd_s"], result["encode_fwd_bwd_cpu_s"] = _median_seconds(fwd_bwd, runs)
    return result | {
        "runs": runs,
        "resolution": resolution,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    result = measure(args.runs, args.resolution)
    res = result["resolution"]
    ms = {k: v * 1000 for k, v in result.items() if k.endswith("_s")}
    print(f"medians of {args.runs} runs, wall clock (CPU time of this thread):")
    print(f"encode, batch of 8 at {res}²: {ms['encode_8_s']:.0f} ms ({ms['encode_8_cpu_s']:.0f} ms); "
          f"network alone {ms['network_8_s']:.0f} ms ({ms['network_8_cpu_s']:.0f} ms), "
          f"statistics alone {ms['stats_8_s']:.0f} ms ({ms['stats_8_cpu_s']:.0f} ms)")
    print(f"encode forward+backward, 1 image at {res}²: {ms['encode_fwd_bwd_s']:.0f} ms "
          f"({ms['encode_fwd_bwd_cpu_s']:.0f} ms)")
    print()
    print("| encoder | resolution | threads | encode 8 | fwd+bwd (1 image) | CPU |")
    print("|---|---|---|---|---|---|")
    print(f"| {EmbeddedImageEncoder.name} | {res}² | {result['threads']} | {ms['encode_8_s']:.0f} ms "
          f"| {ms['encode_fwd_bwd_s']:.0f} ms | {platform.processor() or platform.machine()} |")


if __name__ == "__main__":
    main()
