"""Learns auto's stacking weights on PrefBench's validation users, never on test users.

    python bench/studio_models.py --data data/bench --splits val --no-docs   # member scores of val users
    python bench/auto_weights.py --data data/bench                           # -> checkpoints/.../auto_weights.json

For each history length N_ref, a logistic regression without intercept on the two members'
standardised log-odds differences (liked − disliked, each divided by the member's spread over
the person's judged images, exactly what `AutoPreference` combines) over every validation
target; negative weights are set to 0 and the pair normalised to sum to 1. The file holds
one row per N_ref (`min_pairs`); a history of n pairs uses the last row with min_pairs ≤ n.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEMBERS = ("user-embedding", "preference-tokens")


def standardised_gaps(scores: dict, split: str, n_ref: int, counts: list[int]) -> torch.Tensor:
    """[T, 2]: per target, each member's liked − disliked log-odds over its per-person scale."""
    scales = torch.repeat_interleave(scores[f"{split}.{n_ref}.scales"], torch.tensor(counts), dim=0)
    gaps = torch.stack([scores[f"{split}.{n_ref}.{m}"][:, 0] - scores[f"{split}.{n_ref}.{m}"][:, 1]
                        for m in MEMBERS], 1)
    return gaps / scales


def fit_weights(gaps: torch.Tensor, l2: float = 1e-3) -> list[float]:
    w = torch.zeros(gaps.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -F.logsigmoid(gaps @ w).mean() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach().clamp_min(0.0)
    return (w / w.sum()).tolist() if float(w.sum()) > 0 else [0.5, 0.5]


def main(argv=None) -> int:
    from prefstudio_research.prefbench.data import load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "checkpoints" / "preference_tokens_lite" / "auto_weights.json")
    args = parser.parse_args(argv)
    scores = load_file(str(args.data / "studio_models" / "scores.safetensors"))
    val = load_split(args.data, "val", "embedded-effnetlite0-stats-v1")
    counts = [val.targets_1v1[u].shape[0] for u in val.users]
    n_refs = sorted({int(key.split(".")[1]) for key in scores if key.startswith("val.")})
    rows = []
    for n_ref in n_refs:
        gaps = standardised_gaps(scores, "val", n_ref, counts)
        weights = fit_weights(gaps)
        rows.append({"min_pairs": n_ref, "weights": dict(zip(MEMBERS, [round(w, 4) for w in weights])),
                     "validation_targets": gaps.shape[0]})
        print(n_ref, rows[-1]["weights"])
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    data = {"format": "prefstudio-auto-weights", "version": 1,
            "about": "auto's stacking weights for the shipped user bank and this token checkpoint, learned on "
                     f"PrefBench's {len(val.users)} validation users (never test users) by bench/auto_weights.py",
            "command": "python bench/auto_weights.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "user_bank_sha256": digest(REPO / "checkpoints" / "user_bank_embedded.safetensors"),
            "token_model_sha256": digest(args.out.parent / "model.safetensors"),
            "by_history": rows}
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
