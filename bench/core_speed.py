"""Speed and memory of the offline loop (issue 2 targets), medians over repeated runs.

    python bench/core_speed.py [--runs 10] [--threads 1]

Targets: 8 candidates at 256² < 1 s; fitting 100 pairs with cached features < 0.5 s;
30 guidance iterations at 256² < 5 s; peak memory of the whole loop < 2 GiB.
"""
import argparse
import os
import resource
import statistics
import tempfile
import time


import torch  # noqa: E402

from prefstudio_research.report import machine, write_section  # noqa: E402


def median_time(fn, runs: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds of this process (CPU time is what a quiet
    machine's wall clock would be at one thread; both are reported)."""
    fn()  # warm-up: loads weights, fills caches
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from prefstudio.eval.simulated_users import SimulatedUser
    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.preference.user_embedding import fit_user_embedding
    from prefstudio.studio import Studio

    studio = Studio(tempfile.mkdtemp())
    studio.store.create_profile("bench")
    prompt = "a lighthouse on a cliff at dusk"
    generate = median_time(lambda: studio.generator.generate(prompt, list(range(8))), args.runs)

    # A history: 16 judged candidates, as a person would start.
    person = SimulatedUser("bench", {"warmth": 1.0, "density": 1.0})
    records = studio.generate_candidates(prompt, seeds=list(range(100, 116)))
    utility = person.utility(pil_to_tensor([studio.store.load_image(r.sha256) for r in records]))
    for r, u in zip(records, utility):
        studio.judge("bench", "like" if u > utility.median() else "dislike", r.sha256)
    studio.fit("bench")

    # Fitting 100 pairs from cached features (the bank's cold start + leave-one-out included).
    pool = [r for start in range(200, 400, 25)
            for r in studio.generate_candidates("a harbour with boats", seeds=list(range(start, start + 25)))]
    features = studio.features([r.sha256 for r in pool])
    liked, disliked = features[:100], features[100:200]
    pair_ids = [(pool[i].sha256, pool[100 + i].sha256) for i in range(100)]
    fit = median_time(lambda: fit_user_embedding(liked, disliked, studio.bank, studio.encoder.name,
                                                 pair_images=pair_ids), args.runs)

    guidance_runs = max(3, args.runs // 3)
    guide = median_time(lambda: studio.personalize_once("bench", prompt, seed=7, iterations=30), guidance_runs)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = [
        ("8 candidates at 256² (embedded generator)", generate, "< 1 s", args.runs),
        ("fit on 100 pairs, cached features (incl. leave-one-out)", fit, "< 0.5 s", args.runs),
        ("personalize: 30 guidance iterations at 256² + baseline", guide, "< 5 s", guidance_runs),
    ]
    command = f"python bench/core_speed.py --runs {args.runs} --threads {args.threads}"
    lines = ["## Offline loop (issue 2)", "", f"Machine: {machine()}. torch threads: {args.threads}.",
             f"Load average at the end: {os.getloadavg()[0]:.1f}.", f"Command: `{command}`", "",
             "| step | median wall | median CPU | target | runs |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {wall:.3f} s | {cpu:.3f} s | {target} | {runs} |"
              for name, (wall, cpu), target, runs in rows]
    lines += [f"| peak resident memory of the whole loop (this process) | {peak_mib:.0f} MiB | | < 2048 MiB | 1 |"]
    print("\n".join(lines))
    write_section("core_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
