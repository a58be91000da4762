"""Speed of the embedded offline generator on one CPU thread.

    python bench/generator_speed.py [--runs 10] [--resolution 256]

Measures, as medians over `runs` repetitions after one warm-up:
- `generate_8_s`: `generate(prompt, 8 seeds)`, i.e. the candidates the app shows per round
  (prompt encoding, noise, render, conversion to PIL);
- `render_fwd_bwd_s`: one `render` of a single image plus the backward pass to its noise,
  the unit step of guidance (which runs ~30 of them together with an encoder).
Prompts cycle through assets/prompts.txt so that every shape feature is exercised.
Wall-clock medians are the numbers that count; the machine's load average and the
process's own CPU time per call are printed beside them, because on a shared machine the
wall clock also counts time spent waiting for a core.
Prints the numbers and a markdown table row; `measure()` returns them for the core bench.
"""
import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402


from prefstudio.generators.embedded import EmbeddedGenerator  # noqa: E402

PROMPTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "prompts.txt"


def measure(runs: int = 10, resolution: int = 256) -> dict:
    """Median seconds for 8 candidates via generate() and for one render forward+backward."""
    torch.set_num_threads(1)
    prompts = PROMPTS_FILE.read_text().splitlines()
    generator = EmbeddedGenerator(resolution=resolution)
    conditionings = [generator.encode_prompt(p) for p in prompts]

    times = {"generate": [], "generate_cpu": [], "step": [], "step_cpu": []}

    def timed(key, call):
        wall, cpu = time.perf_counter(), time.thread_time()
        call()
        times[key].append(time.perf_counter() - wall)
        times[key + "_cpu"].append(time.thread_time() - cpu)

    for run in range(runs + 1):   # run 0 warms up
        prompt, conditioning = prompts[run % len(prompts)], conditionings[run % len(prompts)]
        timed("generate", lambda: generator.generate(prompt, list(range(8 * run, 8 * run + 8))))
        noise = generator.initial_noise(run).requires_grad_(True)
        timed("step", lambda: generator.render(noise, conditioning).mean().backward())
    median = {key: statistics.median(values[1:]) for key, values in times.items()}
    return {
        "generate_8_s": median["generate"], "generate_8_cpu_s": median["generate_cpu"],
        "render_fwd_bwd_s": median["step"], "render_fwd_bwd_cpu_s": median["step_cpu"],
        "runs": runs, "resolution": resolution, "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    result = measure(args.runs, args.resolution)
    res, ms = result["resolution"], lambda key: f"{result[key] * 1000:.0f} ms"
    print(f"generate() 8 candidates at {res}²: {ms('generate_8_s')} "
          f"(own CPU time {ms('generate_8_cpu_s')}), median of {args.runs}")
    print(f"render forward+backward, 1 image at {res}²: {ms('render_fwd_bwd_s')} "
          f"(own CPU time {ms('render_fwd_bwd_cpu_s')})")
    print(f"load average {result['load_average_1min']:.1f} on {result['cpus']} CPUs")
    print()
    print("| generator | resolution | threads | 8 candidates (generate) | render fwd+bwd (1 image) | CPU |")
    print("|---|---|---|---|---|---|")
    print(f"| embedded | {res}² | {result['threads']} | {result['generate_8_s'] * 1000:.0f} ms "
          f"| {result['render_fwd_bwd_s'] * 1000:.0f} ms | {platform.processor() or platform.machine()} |")


if __name__ == "__main__":
    main()
