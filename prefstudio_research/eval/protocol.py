"""The evaluation protocol of 000 §4.1 / §4.3, computed from the models' scores.

    python -m prefstudio_research.eval.protocol --data data/bench \
        --model "+tokens=checkpoints/x/stage2" --model "w/o P_v=checkpoints/x/stage1" --out results.json

Every number comes with its protocol (what was compared, on whom, with how long a
history), the number of groups it averages over and its binomial standard error:
  table1  top-1, 1 liked vs 1 disliked, all test users, N_ref = 8          (Table 1)
  table2  top-1/2/3, 1 liked vs 3 disliked, all test users, N_ref = 8      (Table 2)
  table3  top-1 (1 vs 1) on seen and on unseen test users, and |gap|      (Table 3)
  fig6    top-1 (1 vs 1) with the first N_ref ∈ {1, 2, 4, 8} references,
          all / seen / unseen users                                      (Fig. 6, Fig. 5)
Ablations (Tables 5 and 6) are the same protocols run on several checkpoints (--model, repeated).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput, PrefStudioError
from prefstudio.eval.metrics import standard_error, top_k_hits
from prefstudio.preference.pair_data import PairDataSet

N_REF_SWEEP = (1, 2, 4, 8)


def group_scores(scorer, data: PairDataSet, split: str, n_ref: int, kind: str) -> dict[str, torch.Tensor]:
    """Per user, scores [G, C] of their target groups (liked first), history = first n_ref references."""
    if kind == "1v1":
        targets = [(j.user_id, [j.liked, j.disliked], j.prompt) for j in data.targets_1v1[split]]
    elif kind == "1v3":
        targets = [(g.user_id, [g.liked, *g.disliked], g.prompt) for g in data.targets_1v3[split]]
    else:
        raise InvalidInput(f"unknown target kind {kind!r}")
    per_user: dict[str, list] = {}
    for user, candidates, prompt in targets:
        per_user.setdefault(user, []).append((candidates, prompt))
    scores = {}
    for user, groups in per_user.items():
        history = data.references[split].get(user)
        if history is None or len(history) < n_ref:
            raise InvalidInput(f"user {user} has {0 if history is None else len(history)} references "
                               f"in {split}_references.jsonl, fewer than N_ref = {n_ref}")
        scores[user] = scorer.score_groups(history[:n_ref], [g for g, _ in groups], [p for _, p in groups])
    return scores


def _accuracy(scores: dict[str, torch.Tensor], users, k: int) -> tuple[float, int]:
    hits = [top_k_hits(scores[u], k) for u in users if u in scores and len(scores[u])]
    if not hits:
        return float("nan"), 0
    hits = torch.cat(hits)
    return float(hits.mean()), hits.numel()


def _row(model, protocol, metric, users, n_ref, value, n):
    return {"model": model, "protocol": protocol, "metric": metric, "users": users, "n_ref": n_ref,
            "value": value, "n": n, "se": standard_error(value, n) if n else float("nan")}


def evaluate_model(name: str, scorer, data: PairDataSet, split: str = "test",
                   protocols=("table1", "table2", "table3", "fig6")) -> list[dict]:
    """All requested protocols for one model -> result rows."""
    if split == "test":
        groups = {"all": data.users["test_seen"] + data.users["test_unseen"],
                  "seen": data.users["test_seen"], "unseen": data.users["test_unseen"]}
    else:
        groups = {"all": data.users[split]}
    groups = {name: ids for name, ids in groups.items() if ids}  # a set without seen users has no seen rows
    rows = []
    full = max(N_REF_SWEEP)
    one_v_one = {}

    def ensure_1v1(n_ref):
        if n_ref not in one_v_one:
            one_v_one[n_ref] = group_scores(scorer, data, split, n_ref, "1v1")
        return one_v_one[n_ref]

    if "table1" in protocols:
        rows.append(_row(name, "table1", "top1", "all", full, *_accuracy(ensure_1v1(full), groups["all"], 1)))
    if "table2" in protocols and data.targets_1v3[split]:
        scores = group_scores(scorer, data, split, full, "1v3")
        for k in (1, 2, 3):
            rows.append(_row(name, "table2", f"top{k}", "all", full, *_accuracy(scores, groups["all"], k)))
    if "table3" in protocols and "seen" in groups and "unseen" in groups:
        seen = _accuracy(ensure_1v1(full), groups["seen"], 1)
        unseen = _accuracy(ensure_1v1(full), groups["unseen"], 1)
        rows.append(_row(name, "table3", "top1", "seen", full, *seen))
        rows.append(_row(name, "table3", "top1", "unseen", full, *unseen))
        rows.append({**_row(name, "table3", "gap", "seen-unseen", full, abs(seen[0] - unseen[0]), 0),
                     "se": (standard_error(*seen) ** 2 + standard_error(*unseen) ** 2) ** 0.5})
    if "fig6" in protocols:
        for n_ref in N_REF_SWEEP:
            for users, ids in groups.items():
                rows.append(_row(name, "fig6", "top1", users, n_ref, *_accuracy(ensure_1v1(n_ref), ids, 1)))
    return rows


PROTOCOL_TEXT = {
    "table1": "1 liked vs 1 disliked",
    "table2": "1 liked vs 3 disliked",
    "table3": "1 liked vs 1 disliked",
    "fig6": "1 liked vs 1 disliked",
}


def describe(row: dict) -> str:
    value = 100 * row["value"]
    if row["metric"] == "gap":
        return (f"{row['model']}: |seen − unseen| top-1 gap = {value:.2f} points ± {100 * row['se']:.2f} "
                f"({PROTOCOL_TEXT[row['protocol']]}, N_ref={row['n_ref']}) [{row['protocol']}]")
    return (f"{row['model']}: {row['metric']} = {value:.2f} % ± {100 * row['se']:.2f} "
            f"({PROTOCOL_TEXT[row['protocol']]}, {row['users']} users, N_ref={row['n_ref']}, "
            f"n={row['n']} groups) [{row['protocol']}]")


def scorer_for_checkpoint(path: str | Path, data: PairDataSet, device: str = "cpu"):
    """Lite checkpoints score from cached features; VLM checkpoints read the images."""
    from prefstudio_research.preference.scorers import LiteScorer, VLMScorer, encoder_named
    from prefstudio.preference.tokens import load_token_model

    model = load_token_model(path, device=device)
    if model.config.backbone == "lite":
        return LiteScorer.for_data(model, data, encoder_named(model.config.image_encoder),
                                   encoder_named(model.config.text_encoder))
    return VLMScorer(model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefstudio_research.eval.protocol", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data root (images.jsonl, pairs/, features/)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a checkpoint folder to evaluate, with the name it gets in the tables (repeatable)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--protocols", default="table1,table2,table3,fig6")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    protocols = tuple(p.strip() for p in args.protocols.split(","))
    unknown = set(protocols) - set(PROTOCOL_TEXT)
    if unknown:
        parser.error(f"unknown protocols {sorted(unknown)}; choose from {sorted(PROTOCOL_TEXT)}")
    try:
        data = PairDataSet.read(args.data, splits=(args.split,))
    except PrefStudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = []
    for spec in args.model:
        name, sep, path = spec.rpartition("=")  # names may hold "=" (L_p=10), paths seldom do
        if not sep or not name or not path:
            parser.error(f"--model takes NAME=CHECKPOINT, got {spec!r}")
        start = time.perf_counter()
        try:
            rows = evaluate_model(name, scorer_for_checkpoint(path, data, args.device), data, args.split, protocols)
        except PrefStudioError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            return 2
        for row in rows:
            row["checkpoint"] = path
            print(describe(row))
        print(f"  ({name}: evaluated in {time.perf_counter() - start:.1f} s)")
        results += rows
    if args.out:
        report = {"command": "python -m prefstudio_research.eval.protocol " + " ".join(sys.argv[1:] if argv is None else argv),
                  "data": str(args.data), "split": args.split,
                  "protocols": {p: PROTOCOL_TEXT[p] for p in protocols}, "results": results}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
