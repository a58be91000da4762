"""Speed and scaling: medians over repeated runs of what a person waits for.

- fitting a user (`fit_user_embedding`, scratch and bank) as the history grows;
- scoring a pool of images with a fitted model as the pool grows (features cached);
- one guidance iteration (render + encode + backward + step) as the history grows — the
  model is a few vectors, so it should not;
- generating candidates, and encoding images (the one-time cost of a new image).
"""
import statistics
import time

import torch

from prefstudio.encoders.base import ImageEncoder
from prefstudio.generators.base import Generator
from prefstudio.guidance.noise_optimization import GuidanceSettings, run_guidance
from prefstudio.preference.user_embedding import UserBank, fit_user_embedding
from prefstudio.rewards.user_preference import TasteReward


def median_wall_and_cpu(fn, repeats: int) -> tuple[float, float]:
    """Medians of wall-clock and of this process's CPU seconds: on a shared machine the
    wall time includes waiting for a core, the CPU time does not."""
    fn()  # warm-up: first calls load weights and allocate
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _pairs(features: torch.Tensor, train_rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n judged pairs from the training users' judgments (cycled when n exceeds them)."""
    rows = train_rows[torch.arange(n) % train_rows.shape[0]]
    return features[rows[:, 0]], features[rows[:, 1]]


def measure(features: torch.Tensor, train_rows: torch.Tensor, bank: UserBank, encoder: ImageEncoder,
            generator: Generator, histories: list[int], pools: list[int], repeats: int,
            guidance_iterations: int, prompt: str = "a bouquet of pink flowers", log=print) -> list[dict]:
    rows = []

    def record(what, size, unit, fn, reps, per=1):
        wall, cpu = median_wall_and_cpu(fn, reps)
        rows.append({"what": what, "size": size, "unit": unit, "seconds": wall / per,
                     "cpu_seconds": cpu / per, "repeats": reps})
        log(f"  {what} @ {size} {unit}: {wall / per * 1e3:.1f} ms (CPU {cpu / per * 1e3:.1f} ms)")

    for n in histories:
        liked, disliked = _pairs(features, train_rows, n)
        reps = repeats if n <= 128 else max(2, repeats // 2)
        for name, b in (("fit user (scratch)", None), ("fit user (bank)", bank)):
            record(name, n, "pairs", lambda: fit_user_embedding(liked, disliked, b, encoder.name), reps)

    model = fit_user_embedding(*_pairs(features, train_rows, 8), bank, encoder.name).model
    for m in pools:
        pool = features[torch.arange(m) % features.shape[0]]
        with torch.no_grad():
            record("score pool (cached features)", m, "images", lambda: model.log_odds(pool), repeats)

    for n in (histories[0], histories[-1]):
        liked, disliked = _pairs(features, train_rows, n)
        fitted = fit_user_embedding(liked, disliked, bank, encoder.name).model
        reward = TasteReward(fitted, encoder, torch.cat([liked, disliked]))
        settings = GuidanceSettings(iterations=guidance_iterations, preview_every=0)
        record("guidance iteration", n, "pairs",
               lambda: run_guidance(generator, prompt, 0, {"user": reward}, {"user": 1.0}, settings),
               max(2, repeats // 2), per=guidance_iterations + 1)

    record("generate 8 candidates", 8, "images", lambda: generator.generate(prompt, list(range(8))), repeats)
    images = [im.image for im in generator.generate(prompt, list(range(8)))]
    record("encode 8 new images", 8, "images", lambda: encoder.encode_images(images), repeats)
    return rows


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for what in dict.fromkeys(r["what"] for r in rows):
        points = sorted((r["size"], r["seconds"]) for r in rows if r["what"] == what)
        if len(points) < 2:
            continue
        unit = next(r["unit"] for r in rows if r["what"] == what)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{what} (x: {unit})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("history length (pairs) or pool size (images)")
    ax.set_ylabel("median seconds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
