"""Learns auto's stacking rows on PrefBench's validation users, never on test users.

    python bench/studio_models.py --data data/bench --splits val --no-docs --token-checkpoint CKPT  # val scores
    python bench/auto_weights.py --data data/bench --out CKPT/auto_weights.json

For each history length N_ref, from the two members' log-odds gaps (liked − disliked) on every
validation target, each divided by the member's spread over the person's judged images
(what `AutoPreference` combines), and the members' held-out margins on the person's history:
1. a calibration κ per member: a one-weight logistic regression of the label on g/s;
2. the weights: a logistic regression on κ·g/s per member ("stack"), and with the person
   term δ·κ·g/s per member as well ("stack + own fit"; δ as `models.member_fit`).
Which of "equal" (the file-less default), "stack" and "stack + own fit" ships is chosen by
5-fold cross-validation over validation users (top-1 averaged over every N_ref), each fold
scored through `models.stacking_weights`, the function the studio serves with; the chosen
variant is then refitted on all validation users. Negative weights are set to 0. Each member
alone is cross-validated and printed beside them: auto's bar on the test users is the better one.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from prefstudio.preference.models import (  # noqa: E402
    AUTO_WEIGHTS_FORMAT, DEFAULT_TOKEN_CHECKPOINT, StackingRow, member_fit, stacking_weights,
)

REPO = Path(__file__).resolve().parents[1]
MEMBERS = ("user-embedding", "preference-tokens")
VARIANTS = ("equal", "stack", "stack + own fit")
# Each member alone, printed next to the variants for comparison (auto's bar is the better of them).
ALONE = tuple(f"{member} alone" for member in MEMBERS)
FOLDS = 5


class Person:
    """One validation user at one N_ref: standardised target gaps [T, M] and held-out margins."""

    def __init__(self, gaps: torch.Tensor, held_out: dict[str, list[float]]):
        self.gaps, self.held_out = gaps, held_out


def people(scores: dict, split: str, n_ref: int, counts: list[int]) -> list[Person]:
    scales = scores[f"{split}.{n_ref}.scales"]
    gaps = torch.stack([scores[f"{split}.{n_ref}.{m}"][:, 0] - scores[f"{split}.{n_ref}.{m}"][:, 1]
                        for m in MEMBERS], 1)
    out, start = [], 0
    for u, count in enumerate(counts):
        margins = torch.stack([scores[f"{split}.{n_ref}.held_out.{m}"][u] for m in MEMBERS])  # [M, n_ref]
        common = ~torch.isnan(margins).any(0)
        held_out = {m: (margins[i, common] / scales[u, i]).tolist() for i, m in enumerate(MEMBERS)}
        out.append(Person(gaps[start:start + count] / scales[u], held_out))
        start += count
    return out


def logistic(x: torch.Tensor, l2: float = 1e-3) -> torch.Tensor:
    """w minimising mean −log σ(x·w) + l2‖w‖² (every row is a liked-minus-disliked gap)."""
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -F.logsigmoid(x @ w).mean() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def fit_row(group: list[Person], n_ref: int, variant: str) -> StackingRow:
    if variant in ALONE:
        alone = dict.fromkeys(MEMBERS, 0.0) | {variant.removesuffix(" alone"): 1.0}
        return StackingRow(n_ref, dict.fromkeys(MEMBERS, 1.0), alone, dict.fromkeys(MEMBERS, 0.0))
    if variant == "equal":
        return StackingRow(n_ref, dict.fromkeys(MEMBERS, 1.0), dict.fromkeys(MEMBERS, 0.5), dict.fromkeys(MEMBERS, 0.0))
    gaps = torch.cat([p.gaps for p in group]).double()
    calibration = {m: max(float(logistic(gaps[:, [i]])[0]), 1e-3) for i, m in enumerate(MEMBERS)}
    kappa = torch.tensor([calibration[m] for m in MEMBERS], dtype=torch.float64)
    calibrated = gaps * kappa
    if variant == "stack":
        w = logistic(calibrated)
        v = torch.zeros(len(MEMBERS), dtype=torch.float64)
    else:
        deltas = [[member_fit(p.held_out, calibration)[m] for m in MEMBERS] for p in group]
        delta = torch.repeat_interleave(torch.tensor(deltas, dtype=torch.float64),
                                        torch.tensor([p.gaps.shape[0] for p in group]), dim=0)
        wv = logistic(torch.cat([calibrated, calibrated * delta], 1))
        w, v = wv[: len(MEMBERS)], wv[len(MEMBERS):]
    w = w.clamp_min(0.0)
    if float(w.sum()) <= 0:
        w = torch.full_like(w, 0.5)
    return StackingRow(n_ref, calibration, {m: float(w[i]) for i, m in enumerate(MEMBERS)},
                       {m: float(v[i]) for i, m in enumerate(MEMBERS)})


def top1(row: StackingRow, group: list[Person]) -> torch.Tensor:
    hits = []
    for p in group:
        weights = stacking_weights(row, p.held_out)
        if sum(weights.values()) <= 0:
            weights = {m: row.weight[m] * row.calibration[m] for m in MEMBERS}
        combined = p.gaps.double() @ torch.tensor([weights[m] for m in MEMBERS], dtype=torch.float64)
        hits.append((combined > 0).double() + 0.5 * (combined == 0).double())
    return torch.cat(hits)


def cross_validated(by_n: dict[int, list[Person]], variant: str) -> dict[int, float]:
    n_users = len(next(iter(by_n.values())))
    fold_of = torch.randperm(n_users, generator=torch.Generator().manual_seed(0)) % FOLDS
    out = {}
    for n_ref, group in by_n.items():
        hits = []
        for fold in range(FOLDS):
            train = [p for u, p in enumerate(group) if int(fold_of[u]) != fold]
            held = [p for u, p in enumerate(group) if int(fold_of[u]) == fold]
            hits.append(top1(fit_row(train, n_ref, variant), held))
        out[n_ref] = float(torch.cat(hits).mean())
    return out


def main(argv=None) -> int:
    from prefstudio_research.prefbench.data import load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--out", type=Path, default=DEFAULT_TOKEN_CHECKPOINT / "auto_weights.json",
                        help="auto_weights.json in the folder of the token checkpoint that was scored")
    args = parser.parse_args(argv)
    scores = load_file(str(args.data / "studio_models" / "scores.safetensors"))
    val = load_split(args.data, "val", "embedded-effnetlite0-stats-v1")
    counts = [val.targets_1v1[u].shape[0] for u in val.users]
    n_refs = sorted({int(key.split(".")[1]) for key in scores if key.startswith("val.") and key.endswith(".scales")})
    by_n = {n: people(scores, "val", n, counts) for n in n_refs}
    cv = {variant: cross_validated(by_n, variant) for variant in ALONE + VARIANTS}
    for variant, row in cv.items():
        print(f"{variant:>16}: " + "  ".join(f"N{n} {100 * a:.1f}" for n, a in row.items())
              + f"  mean {100 * sum(row.values()) / len(row):.2f}")
    chosen = max(VARIANTS, key=lambda v: sum(cv[v].values()))
    rows = []
    for n_ref in n_refs:
        row = fit_row(by_n[n_ref], n_ref, chosen)
        rows.append({"min_pairs": n_ref, "calibration": {m: round(x, 5) for m, x in row.calibration.items()},
                     "weight": {m: round(x, 5) for m, x in row.weight.items()},
                     "by_fit": {m: round(x, 5) for m, x in row.by_fit.items()}})
        print(n_ref, rows[-1])
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    data = {"format": AUTO_WEIGHTS_FORMAT, "version": 2,
            "about": f"auto's stacking rows ({chosen!r}, chosen by {FOLDS}-fold cross-validation over users) for the "
                     f"shipped user bank and this token checkpoint, learned on PrefBench's {len(val.users)} "
                     "validation users (never test users) by bench/auto_weights.py",
            "command": "python bench/auto_weights.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "cross_validated_top1": {v: {str(n): round(a, 4) for n, a in row.items()} for v, row in cv.items()},
            "user_bank_sha256": digest(REPO / "checkpoints" / "user_bank_embedded.safetensors"),
            "token_model_sha256": digest(args.out.parent / "model.safetensors"),
            "by_history": rows}
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
