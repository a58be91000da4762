"""The preference-token ablations of 000 (Tables 1, 2, 3, 5, 6) over several training seeds.

    python bench/preference_tokens_seeds.py --data data/bench --runs runs/preference_tokens --seeds 0 1 2 3 4

For each seed it trains, with the training CLI and assets/preference_tokens/lite.json,
L_base alone and L_all without preference tokens (stage 1, L_p = 0), and the full model
with L_p = 10, 5 and 20 (stage 1 trains P_v with the backbone, stage 2 P_v alone); then it
runs the evaluation CLI on all five. A checkpoint already in the run
folder is reused (the commands are deterministic per seed). It prints and writes the
mean and per-seed numbers to bench/results/preference_tokens_prefbench.json and the
headline table with the acceptance checks of issue 5 to docs/benchmarks.md.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIG = "assets/preference_tokens/lite.json"
# name in the tables -> its training runs, in order: (stage, extra flags, folder); a stage 2
# resumes from the run before it, and the last run's checkpoint is evaluated.
MODELS = {
    "L_base only": [(1, ["--base-loss-only", "--preference-tokens", "0"], "base_s1")],
    "+ L_CP, w/o P_v": [(1, ["--preference-tokens", "0"], "nopv_s1")],
    "+ tokens, L_p = 10": [(1, [], "full_s1"), (2, [], "full_s2")],
    "L_p = 5": [(1, ["--preference-tokens", "5"], "lp5_s1"), (2, [], "lp5_s2")],
    "L_p = 20": [(1, ["--preference-tokens", "20"], "lp20_s1"), (2, [], "lp20_s2")],
}
FULL, WITHOUT, BASE = "+ tokens, L_p = 10", "+ L_CP, w/o P_v", "L_base only"


def train_and_evaluate(data: str, run: Path, seed: int, log) -> list[dict]:
    python = sys.executable
    for name, runs in MODELS.items():
        for i, (stage, flags, folder) in enumerate(runs):
            out = run / folder
            if (out / "model.safetensors").is_file():
                log(f"seed {seed}: {name}: reusing {out}")
                continue
            command = [python, "-m", "prefstudio_research.train.preference_tokens", "--config", CONFIG, "--data", data,
                       "--stage", str(stage), "--seed", str(seed), "--out", str(out), *flags]
            if stage == 2:
                command += ["--resume", str(run / runs[i - 1][2])]
            start = time.perf_counter()
            with open(run / f"{folder}.log", "w") as output:
                subprocess.run(command, cwd=ROOT, check=True, stdout=output, stderr=subprocess.STDOUT)
            log(f"seed {seed}: {name}: stage {stage} trained in {time.perf_counter() - start:.0f} s")
    results = run / "results.json"
    command = [python, "-m", "prefstudio_research.eval.protocol", "--data", data, "--out", str(results)]
    for name, runs in MODELS.items():
        command += ["--model", f"{name}={run / runs[-1][2]}"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(results.read_text())["results"]


def aggregate(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Mean, standard deviation over seeds and per-seed values of every (model, protocol) number."""
    keyed: dict[tuple, list[float]] = {}
    for rows in per_seed.values():
        for r in rows:
            keyed.setdefault((r["model"], r["protocol"], r["metric"], r["users"], r["n_ref"]), []).append(r["value"])
    return [{"model": m, "protocol": p, "metric": k, "users": u, "n_ref": n, "mean": statistics.mean(v),
             "std_over_seeds": statistics.stdev(v) if len(v) > 1 else 0.0, "per_seed": v}
            for (m, p, k, u, n), v in keyed.items()]


def seed_differences(differences: list[float]) -> str:
    """How many seeds a paired difference favours, its per-seed values and its standard error (points)."""
    return (f"{sum(d > 0 for d in differences)} of {len(differences)} seeds; per seed "
            f"{', '.join(f'{100 * d:+.2f}' for d in differences)}; standard error of the mean "
            f"{100 * statistics.stdev(differences) / len(differences) ** 0.5:.2f}")


def markdown(rows: list[dict], seeds: list[int], command: str, wall: float, data: Path) -> str:
    def get(model, protocol, metric, users, n_ref=8):
        return next(r for r in rows if (r["model"], r["protocol"], r["metric"], r["users"], r["n_ref"])
                    == (model, protocol, metric, users, n_ref))

    def pct(x):
        return f"{100 * x:.2f}"

    users = json.loads((data / "pairs" / "users.json").read_text())
    targets = Counter(json.loads(line)["user_id"]  # 1 vs 1 targets per test user
                      for line in (data / "pairs" / "test_1v1.jsonl").read_text().splitlines())
    n_seen, n_unseen = (sum(targets[u] for u in users[k]) for k in ("test_seen", "test_unseen"))
    accuracy = get(FULL, "table1", "top1", "all")["mean"]

    def binomial_se(n):  # points
        return 100 * (accuracy * (1 - accuracy) / n) ** 0.5

    lines = [
        "## Preference tokens: the paper's protocol over training seeds (issue 5)",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}; seeds {', '.join(map(str, seeds))}; {wall / 60:.0f} min wall "
        "on 2 cores (training runs reused from the run folder are not counted). Lite model of "
        f"`{CONFIG}` on PrefBench (`{data}`: {len(users['train']):,} training users, {len(users['test_seen'])} seen "
        f"and {len(users['test_unseen'])} unseen test users, N_ref = {users['n_ref']}). Mean over seeds (± standard "
        "deviation over seeds); one seed's single number has a binomial standard error of "
        f"≈ {binomial_se(n_seen + n_unseen):.1f} points (all), {binomial_se(n_seen):.1f} (seen), "
        f"{binomial_se(n_unseen):.1f} (unseen). Per-model protocol lines: [preference_tokens.md](preference_tokens.md).",
        "",
        "| model (Table 5 / 6) | Table 1: top-1, 1 vs 1 | Table 2: top-1 / 2 / 3, 1 vs 3 | Table 3: seen | unseen | \\|seen − unseen\\| |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model in MODELS:
        t1 = get(model, "table1", "top1", "all")
        t2 = [pct(get(model, "table2", f"top{k}", "all")["mean"]) for k in (1, 2, 3)]
        seen, unseen = get(model, "table3", "top1", "seen"), get(model, "table3", "top1", "unseen")
        gap = get(model, "table3", "gap", "seen-unseen")
        lines.append(f"| {model} | {pct(t1['mean'])} ± {pct(t1['std_over_seeds'])} | {' / '.join(t2)} | "
                     f"{pct(seen['mean'])} | {pct(unseen['mean'])} | {pct(gap['mean'])} |")
    lines += ["", "Fig. 6, top-1 (1 vs 1) with the first N_ref = 1 / 2 / 4 / 8 references, all test users (unseen users): "
              + "; ".join(f"{model} {' / '.join(pct(get(model, 'fig6', 'top1', 'all', n)['mean']) for n in (1, 2, 4, 8))} "
                          f"({' / '.join(pct(get(model, 'fig6', 'top1', 'unseen', n)['mean']) for n in (1, 2, 4, 8))})"
                          for model in (BASE, WITHOUT, FULL)) + "."]
    full_unseen, without_unseen = get(FULL, "table3", "top1", "unseen"), get(WITHOUT, "table3", "top1", "unseen")
    differences = [f - w for f, w in zip(full_unseen["per_seed"], without_unseen["per_seed"])]
    mean_difference = statistics.mean(differences)
    # The gap is taken between the seed means: each seed's |gap| carries the test users' sampling
    # noise, so the mean of per-seed |gaps| is biased upwards by it (both are printed).
    full_seen, seen_gaps = get(FULL, "table3", "top1", "seen"), get(FULL, "table3", "gap", "seen-unseen")["per_seed"]
    gap = abs(full_seen["mean"] - full_unseen["mean"])
    cp, base = get(WITHOUT, "table1", "top1", "all"), get(BASE, "table1", "top1", "all")
    cp_differences = [c - b for c, b in zip(cp["per_seed"], base["per_seed"])]
    lines += [
        "",
        f"- Full model vs the same model without P_v, unseen users: {pct(full_unseen['mean'])} % vs "
        f"{pct(without_unseen['mean'])} %, difference {100 * mean_difference:+.2f} points → "
        f"{'beats it' if mean_difference > 0 else 'does NOT beat it'} on the mean ({seed_differences(differences)}).",
        f"- Seen/unseen gap of the full model: |{pct(full_seen['mean'])} − {pct(full_unseen['mean'])}| = "
        f"{pct(gap)} points between the seed means → {'≤ 1: met' if gap <= 0.01 else '> 1: NOT met'} "
        f"(per seed {', '.join(pct(g) for g in seen_gaps)}, mean {pct(statistics.mean(seen_gaps))}).",
        f"- + L_CP vs L_base alone, all users: {pct(cp['mean'])} % vs {pct(base['mean'])} % → "
        f"{'beats it' if cp['mean'] > base['mean'] else 'does NOT beat it'} on the mean "
        f"({seed_differences(cp_differences)}).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/bench", help="PrefBench data root (bench/run_benchmark.py builds it)")
    parser.add_argument("--runs", default="runs/preference_tokens", help="folder for the checkpoints and logs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    per_seed = {}
    for seed in args.seeds:
        run = Path(args.runs) / f"seed{seed}"
        run.mkdir(parents=True, exist_ok=True)
        per_seed[seed] = train_and_evaluate(args.data, run, seed, print)
    rows = aggregate(per_seed)
    out = ROOT / "bench" / "results" / "preference_tokens_prefbench.json"
    out.write_text(json.dumps({"seeds": args.seeds, "config": CONFIG, "rows": rows}, indent=1) + "\n")
    command = "python bench/preference_tokens_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, args.seeds, command.strip(), time.perf_counter() - start, Path(args.data))
    print(text)
    from prefstudio_research.report import write_section

    write_section("preference_tokens_seeds", text)
    print(f"wrote {out.relative_to(ROOT)} and the preference_tokens_seeds section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
