"""PrefBench for the preference models the studio serves: user embedding, preference tokens, auto.

    python bench/studio_models.py --data data/bench

Each model runs through `PreferenceModel.fit(JudgedPairs)` and `Taste.log_odds` exactly as
the studio runs it, with the shipped checkpoints (`prefstudio_research/prefbench/methods.StudioModel`).
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
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from prefstudio_research.prefbench import evaluate  # noqa: E402
from prefstudio_research.prefbench.data import load_split, load_text_features  # noqa: E402
from prefstudio.preference.models import AUTO_WEIGHTS_FILE, DEFAULT_TOKEN_CHECKPOINT  # noqa: E402
from prefstudio_research.prefbench.methods import STUDIO_MODELS, StudioModel  # noqa: E402
from prefstudio_research.prefbench.studio_scores import (  # noqa: E402
    ENCODER, TEXT_ENCODER, mean_se, per_user, present, target_owner, top1,
)

REPO = Path(__file__).resolve().parents[1]
USER_EMBEDDING, TOKENS, AUTO = STUDIO_MODELS


def score_split(split, n_ref, prompts, log, users: list[str] | None = None,
                token_checkpoint: Path | None = None) -> dict[str, torch.Tensor]:
    """Per 1v1 target of every user (file order; or of `users`, a block of them): [T, 2] scores
    (liked, disliked) of each model at this N_ref, auto's per-person member scales [U, 2] and
    each member's held-out margins on the history [U, N_ref] (NaN: not held out)."""
    users = split.users if users is None else users
    auto = StudioModel(AUTO, ENCODER, TEXT_ENCODER, token_checkpoint=token_checkpoint)
    out = {}
    rows = {name: [] for name in STUDIO_MODELS}
    held_out = {name: torch.full((len(users), n_ref), float("nan"), dtype=torch.float64)
                for name in (USER_EMBEDDING, TOKENS)}
    scales = []  # auto's per-person spread of each member's log-odds (what it standardises by)
    start = time.perf_counter()
    for user in users:
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
    log(f"  {split.name} N_ref={n_ref}: {len(users)} users in {time.perf_counter() - start:.0f} s")
    return out


def join_shards(folder: Path) -> dict[str, torch.Tensor]:
    """Scores of every split and N_ref that all K shard files of one K hold, joined in user order."""
    out = {}
    for count in sorted({int(f.name.split("of")[1].split(".")[0]) for f in folder.glob("scores.shard*of*.safetensors")}):
        files = [folder / f"scores.shard{i}of{count}.safetensors" for i in range(count)]
        if not all(f.exists() for f in files):
            continue
        parts = [load_file(str(f)) for f in files]
        for key in set.intersection(*(set(p) for p in parts)):
            out[key] = torch.cat([p[key] for p in parts])
    return out


def leading_families(data: Path, users: list[str]) -> dict[str, str]:
    """Each user's leading taste family: the largest share of their hidden utility's variance
    (attribute weights times the pool's spread, summed in squares per family; for subject the
    variance of the category affinities). Analysis only: no model sees it."""
    from prefstudio.eval.simulated_users import FAMILIES

    hidden = json.loads((data / "pairs" / "hidden" / "users.json").read_text())
    spread = hidden["attribute_spread"]
    out = {}
    for user in hidden["users"]:
        if user["user_id"] not in users:
            continue
        share = {family: sum((user["attribute_weights"][a] * spread[a]) ** 2 for a in attributes)
                 for family, attributes in FAMILIES.items() if attributes}
        affinity = torch.tensor(list(user["category_affinity"].values()), dtype=torch.float64)
        share["subject"] = float(affinity.var()) if affinity.numel() > 1 else 0.0
        out[user["user_id"]] = max(share, key=share.get)
    return out


def table(scores: dict[str, torch.Tensor], split, n_refs, families: dict[str, str] | None = None) -> dict:
    """Top-1 per model and auto − the better single model, each with its standard error over
    users (the rule in the module docstring) and, for comparison, over targets."""
    owner = target_owner(split)
    seen_user = torch.tensor([u in split.seen for u in split.users])
    result = {}
    for subset, user_mask in (("unseen", ~seen_user), ("seen", seen_user)):
        if not bool(user_mask.any()):
            continue
        rows = {}
        for n_ref in n_refs:
            hits = {name: top1(scores[f"{split.name}.{n_ref}.{name}"]) for name in STUDIO_MODELS}
            users = {name: per_user(h, owner, len(split.users))[user_mask] for name, h in hits.items()}
            row = {}
            for name in STUDIO_MODELS:
                m, se = mean_se(users[name])
                row[name] = {"top1": m, "se": se}
            best = max((USER_EMBEDDING, TOKENS), key=lambda name: row[name]["top1"])
            diff_users = users[AUTO] - users[best]
            diff_targets = (hits[AUTO] - hits[best])[user_mask[owner]]
            d, se = mean_se(diff_users)
            row["auto_minus_best"] = {"best": best, "diff": d, "se": se, "se_targets": mean_se(diff_targets)[1],
                                      "n_users": int(user_mask.sum()), "n_targets": int(diff_targets.numel())}
            if families and subset == "unseen":
                by_family = {}
                for family in sorted(set(families.values())):
                    mask = torch.tensor([families.get(u) == family for u in split.users])[user_mask]
                    if int(mask.sum()) >= 2:
                        fd, fse = mean_se(diff_users[mask])
                        single = {name: float(users[name][mask].mean()) for name in (USER_EMBEDDING, TOKENS)}
                        by_family[family] = {"users": int(mask.sum()), "diff": fd, "se": fse, **single}
                row["by_family"] = by_family
            rows[str(n_ref)] = row
        result[subset] = rows
    return result


def markdown(results: dict) -> str:
    short = {USER_EMBEDDING: "user embedding", TOKENS: "preference tokens", AUTO: "auto"}
    lines = ["## The studio's preference models on PrefBench (user embedding, preference tokens, auto)", "",
             f"`{results['command']}` — {results['date']}, {results['machine']}; load average "
             f"{results['load_average']['start'][0]:.1f} at the start, {results['load_average']['end'][0]:.1f} at the "
             f"end; {results['seconds']:.0f} s" + (" (joining scores that runs with `--shard I/K` and the same "
                                                   "arguments had written, one block of users each)"
                                                   if results.get("joined_shards") else "") + ".", "",
             "Protocol (fixed before the results, in `bench/studio_models.py`): PrefBench test users (data/bench, "
             f"seed 0: the widened simulated population, {results['n_users']['unseen']} unseen and "
             f"{results['n_users']['seen']} seen), 1v1 top-1 over 24 targets a user; N_ref = the user's first N_ref "
             "reference pairs. Every model runs through `PreferenceModel.fit` / `Taste.log_odds` as the studio runs "
             f"it, with the user bank `checkpoints/user_bank_embedded.safetensors` and the token checkpoint "
             f"`{results['token_checkpoint']}` (auto: {results['auto_weights']}). ± is the standard error over "
             "users. auto − best is "
             "the mean over users of the paired per-target difference between auto and the better single model of "
             "that row (chosen on these same users, which favours the single model); the bar is ≥ 2 standard errors "
             "over users at N_ref 8 and 32 on unseen users. The standard error over targets is shown in brackets "
             "for comparison.", ""]
    served = str(DEFAULT_TOKEN_CHECKPOINT.resolve().relative_to(REPO))
    if results["token_checkpoint"] != served:
        lines += [f"`{results['token_checkpoint']}` is not the token checkpoint the studio serves by default "
                  f"(`{served}`); its README says why.", ""]
    for subset in ("unseen", "seen"):
        if subset not in results["table"]:
            continue
        lines += [f"**{subset} users**", "",
                  "| N_ref | user embedding | preference tokens | auto | auto − best single |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for n_ref, row in results["table"][subset].items():
            d = row["auto_minus_best"]
            cells = [f"{100 * row[m]['top1']:.1f} ± {100 * row[m]['se']:.1f}" for m in STUDIO_MODELS]
            if d["se"] == 0 and d["diff"] == 0:  # auto's row gives one member all the weight
                lines.append(f"| {n_ref} | " + " | ".join(cells) + f" | identical to {short[d['best']]} |")
                continue
            lines.append(f"| {n_ref} | " + " | ".join(cells) + f" | {100 * d['diff']:+.2f} ± {100 * d['se']:.2f} "
                         f"[{100 * d['se_targets']:.2f}] (vs {short[d['best']]}, {d['diff'] / d['se']:+.2f} SE) |")
        lines.append("")
    unseen = results["table"].get("unseen", {})
    if any("by_family" in row for row in unseen.values()):
        n_refs = [n for n in unseen if "by_family" in unseen[n]]
        families = sorted(unseen[n_refs[0]]["by_family"])
        lines += ["**unseen users by leading taste family** (auto − the better single model of the whole row, "
                  "points, ± standard error over the family's users; user embedding / tokens top-1 in brackets)", "",
                  "| family (users) | " + " | ".join(f"N_ref {n}" for n in n_refs) + " |",
                  "| --- | " + " | ".join("---:" for _ in n_refs) + " |"]
        for family in families:
            cells = []
            for n in n_refs:
                f = unseen[n]["by_family"][family]
                cells.append(f"{100 * f['diff']:+.1f} ± {100 * f['se']:.1f} ({100 * f[USER_EMBEDDING]:.0f} / "
                             f"{100 * f[TOKENS]:.0f})")
            users = unseen[n_refs[0]]["by_family"][family]["users"]
            lines.append(f"| {family} ({users}) | " + " | ".join(cells) + " |")
        lines.append("")
    if "token_gain" in results:
        g = results["token_gain"]
        lines += [f"Preference tokens from N_ref 8 to 32 on unseen users: {100 * g['diff']:+.2f} ± {100 * g['se']:.2f} "
                  "points (paired per user).", ""]
    return "\n".join(lines)


def shown_path(folder: Path) -> str:
    """A folder as the docs name it: relative to the repository when it is inside it."""
    folder = folder.resolve()
    return str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--n-refs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    parser.add_argument("--rescore", action="store_true", help="fit again even when the scores file exists")
    parser.add_argument("--no-docs", action="store_true", help="print the table only: do not write docs/benchmarks.md or bench/results/studio_models.json")
    parser.add_argument("--token-checkpoint", type=Path, default=DEFAULT_TOKEN_CHECKPOINT,
                        help="the token checkpoint auto and preference-tokens serve (with its auto_weights.json)")
    parser.add_argument("--shard", help="I/K: score only the I-th of K blocks of users (0-based) into a file of "
                                        "its own and report nothing; a later run without --shard joins the K files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start, start = os.getloadavg(), time.perf_counter()
    text_features, text_rows = load_text_features(args.data, TEXT_ENCODER)
    prompts = evaluate.PromptFeatures(text_features, text_rows)
    splits = {name: load_split(args.data, name, ENCODER) for name in args.splits}
    path = args.data / "studio_models" / "scores.safetensors"
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        path = path.with_name(f"scores.shard{index}of{count}.safetensors")
    scores = {}
    if path.exists() and not args.rescore:
        scores = load_file(str(path))
    if args.shard:
        for name, split in splits.items():
            block = split.users[index * len(split.users) // count:(index + 1) * len(split.users) // count]
            for n_ref in args.n_refs:
                if f"{name}.{n_ref}.{AUTO}" not in scores:
                    scores |= score_split(split, n_ref, prompts, print, block, args.token_checkpoint)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_file(scores, str(path))
        return 0
    joined = {k: v for k, v in join_shards(path.parent).items() if k not in scores}
    scores |= joined
    if joined:  # bench/auto_weights.py reads the joined validation scores from this file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(scores, str(path))
    for name, split in splits.items():
        for n_ref in args.n_refs:  # saved after each N_ref: a long run can be resumed
            if f"{name}.{n_ref}.{AUTO}" not in scores:
                scores |= score_split(split, n_ref, prompts, print, token_checkpoint=args.token_checkpoint)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file(scores, str(path))
    if "test" not in splits:
        return 0
    from prefstudio_research.report import machine
    from datetime import datetime, timezone

    test = splits["test"]
    results = {
        "command": " ".join(["python bench/studio_models.py"] + list(sys.argv[1:] if argv is None else argv)),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "seconds": time.perf_counter() - start,
        "n_users": {"seen": len(test.seen), "unseen": len(test.users) - len(test.seen)},
        "token_checkpoint": shown_path(args.token_checkpoint),
        "auto_weights": ("the stacking rows of its `auto_weights.json`, learned on the 60 validation users only"
                         if (args.token_checkpoint / AUTO_WEIGHTS_FILE).is_file()
                         else "its members at equal weights: the checkpoint has no `auto_weights.json`"),
        "joined_shards": sorted(joined) != [],
        "table": table(scores, test, present(scores, "test"), leading_families(args.data, test.users)),
    }
    if {"8", "32"} <= set(results["table"].get("unseen", {})):
        owner = target_owner(test)
        unseen = torch.tensor([u not in test.seen for u in test.users])
        gain = (per_user(top1(scores[f"test.32.{TOKENS}"]), owner, len(test.users))
                - per_user(top1(scores[f"test.8.{TOKENS}"]), owner, len(test.users)))[unseen]
        results["token_gain"] = dict(zip(("diff", "se"), mean_se(gain)))
    if "val" in splits:
        results["validation"] = table(scores, splits["val"], present(scores, "val"))
    print(markdown(results))
    if not args.no_docs:  # a run for another checkpoint or population leaves the served results alone
        from prefstudio_research.report import write_section

        (REPO / "bench" / "results" / "studio_models.json").write_text(json.dumps(results, indent=1))
        write_section("studio-models", markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
