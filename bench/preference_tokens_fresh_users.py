"""A second look on users nobody has seen: P_v vs w/o P_v on 400 fresh unseen users.

    python bench/preference_tokens_fresh_users.py --runs runs/preference_tokens --seeds 0 1 2 3 4 5 6 7

A difference read off the seeds table after the fact (bench/preference_tokens_seeds.py) is a
lead; this checks it on test users that took no part in it. It builds data/bench-fresh: the
PrefBench data set with 800 unseen users, of which the first 400 are data/bench's and are
dropped (every user is drawn from their own random stream, so the training and validation
files are data/bench's, byte for byte, and the fresh users are new draws from the same
population). Then it evaluates each seed's "w/o P_v" (nopv_s1) and full (full_s2) runs with
the protocol CLI and prints the per-seed differences at each N_ref.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHARED = ("features", "images", "images.jsonl", "labeller", "pool.json", "render_report.json")
BUILT_UNSEEN, FRESH_FROM = 800, 400


def build_fresh(source: Path, cache: Path) -> None:
    """data/bench's images and features (linked) with only the fresh unseen users as test users."""
    import torch

    from prefstudio_research.prefbench.pairs import PairConfig
    from prefstudio_research.prefbench.run import FULL, Stopwatch, build_data
    from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder

    torch.set_num_threads(1)
    cache.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link = cache / name
        if link.exists():
            continue
        if name == "images":  # hard links: pair data readers refuse images outside the data set's folder
            shutil.copytree(source / name, link, copy_function=os.link)
        else:
            link.symlink_to((source / name).resolve())
    config = replace(FULL, pairs=replace(PairConfig(), n_unseen=BUILT_UNSEEN))
    build_data(cache, config, 0, EmbeddedImageEncoder(), MiniLMTextEncoder(), Stopwatch(), print)
    pairs = cache / "pairs"
    users = json.loads((pairs / "users.json").read_text())
    fresh = {u for u in users["test_unseen"] if int(u.removeprefix("new")) >= FRESH_FROM}
    for name in ("test_references", "test_1v1", "test_1v3"):
        lines = (pairs / f"{name}.jsonl").read_text().splitlines()
        (pairs / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines
                                                     if json.loads(line)["user_id"] in fresh))
    users["test_seen"], users["test_unseen"] = [], sorted(fresh)
    (pairs / "users.json").write_text(json.dumps(users, indent=1))
    # The pair files no longer match pairs/build.json: a later build_data would redo them.
    (pairs / "build.json").unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="data/bench", help="the PrefBench data set (bench/run_benchmark.py)")
    parser.add_argument("--cache", default="data/bench-fresh")
    parser.add_argument("--runs", default="runs/preference_tokens", help="bench/preference_tokens_seeds.py's runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    if not (cache / "pairs" / "users.json").exists():
        build_fresh(Path(args.source), cache)
    differences: dict[int, list[float]] = {}
    for seed in args.seeds:
        run, out = Path(args.runs) / f"seed{seed}", cache / f"results_seed{seed}.json"
        subprocess.run([sys.executable, "-m", "prefstudio_research.eval.protocol", "--data", str(cache), "--out", str(out),
                        "--protocols", "fig6", "--model", f"without={run / 'nopv_s1'}",
                        "--model", f"full={run / 'full_s2'}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(out.read_text())["results"]
        value = {(r["model"], r["n_ref"]): r["value"] for r in rows if r["users"] == "unseen"}
        for n_ref in sorted({n for _, n in value}):
            differences.setdefault(n_ref, []).append(100 * (value["full", n_ref] - value["without", n_ref]))
    users = len(json.loads((cache / "pairs" / "users.json").read_text())["test_unseen"])
    print(f"full − w/o P_v, 1v1 top-1 on {users} fresh unseen users, seeds {args.seeds}:")
    for n_ref, d in differences.items():
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        print(f"  N_ref = {n_ref}: {statistics.mean(d):+.2f} points (standard error {se:.2f}; "
              f"{sum(x > 0 for x in d)} of {len(d)} seeds; per seed {', '.join(f'{x:+.2f}' for x in d)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
