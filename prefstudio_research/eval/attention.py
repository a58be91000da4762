"""Which preference tokens a person's history makes the target attend to (000 §3.3, Fig. 3).

    python -m prefstudio_research.eval.attention --checkpoint runs/lite/stage2 --data data/bench \
        --users 8 --shuffles 5 --out docs/figures/attention.png

One target image (the first test target's liked image, or --target) is appended to the
history of each of several test users, seen and unseen. For every user the history is
shuffled several times; each row of a user's panel is the attention (eq. 6) from the
target image's tokens to the L_p preference tokens in one shuffle, at one layer, averaged
over heads (or one head, as the paper's head 28). Users whose mean attention vectors point
the same way (cosine similarity of the vectors after removing the mean over users, so that
what every user shares does not make everyone look alike) are listed as similar.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.preference.pair_data import Judgment, PairDataSet


def user_attention(model, scorer, history: list[Judgment], target: Path, prompt: str) -> torch.Tensor:
    """[layers, heads, target image tokens, L_p] for one ordering of one user's history."""
    if model.config.backbone == "lite":
        from prefstudio.preference.tokens import TargetFeatures

        rows = torch.tensor([scorer.image_row(target)])
        targets = TargetFeatures(scorer.image_features[rows], scorer.prompt_features[[scorer.prompt_rows[prompt]]])
        with torch.no_grad():
            return model.preference_token_attention(scorer.history_features(scorer.rows(history)), targets)
    return model.preference_token_attention(scorer.image_history(history), scorer._load(target), prompt)


def attention_maps(model, scorer, data: PairDataSet, users: list[str], target: Path, prompt: str,
                   shuffles: int, layer: int, head: int | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per user: [shuffles × target tokens, L_p] at `layer`, averaged over heads unless `head`."""
    generator = torch.Generator().manual_seed(seed)
    maps = {}
    for user in users:
        history = data.references["test"][user]
        rows = []
        for _ in range(shuffles):
            order = torch.randperm(len(history), generator=generator).tolist()
            attention = user_attention(model, scorer, [history[i] for i in order], target, prompt)[layer]
            rows.append(attention.mean(0) if head is None else attention[head])
        maps[user] = torch.cat(rows)
    return maps


def similar_users(maps: dict[str, torch.Tensor], top: int = 10) -> tuple[torch.Tensor, list[dict]]:
    """Cosine similarity of the users' mean attention vectors, centred over users; the top pairs."""
    users = list(maps)
    vectors = torch.stack([maps[u].mean(0) for u in users])
    centred = torch.nn.functional.normalize(vectors - vectors.mean(0), dim=1)
    similarity = centred @ centred.T
    pairs = [{"users": [users[i], users[j]], "cosine": float(similarity[i, j])}
             for i in range(len(users)) for j in range(i + 1, len(users))]
    return similarity, sorted(pairs, key=lambda p: -p["cosine"])[:top]


def plot(maps: dict[str, torch.Tensor], seen: set[str], shuffles: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = list(maps)
    columns = min(4, len(users))
    rows = (len(users) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False,
                             constrained_layout=True)
    high = max(float(m.max()) for m in maps.values())
    for ax, user in zip(axes.flat, users):
        image = ax.imshow(maps[user].numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=high,
                          interpolation="nearest")
        ax.set_title(f"{user} ({'seen' if user in seen else 'unseen'})", fontsize=9)
        ax.set_xlabel("preference token", fontsize=8)
        ax.set_ylabel(f"target tokens × {shuffles} shuffles", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(users):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from prefstudio_research.eval.protocol import scorer_for_checkpoint

    parser = argparse.ArgumentParser(prog="python -m prefstudio_research.eval.attention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a stage-2 checkpoint (with preference tokens)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--users", type=int, default=8, help="test users to show, half seen, half unseen")
    parser.add_argument("--shuffles", type=int, default=5)
    parser.add_argument("--layer", type=int, default=-1, help="which layer (default: the last)")
    parser.add_argument("--head", type=int, help="one attention head (default: mean over heads)")
    parser.add_argument("--target", help="target image path (default: the first test target's liked image)")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write; the numbers go beside it as .json")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = PairDataSet.read(args.data, splits=("test",))
    scorer = scorer_for_checkpoint(args.checkpoint, data, args.device)
    model = scorer.model
    if not data.targets_1v1["test"]:
        raise InvalidInput("the test split has no targets")
    first = data.targets_1v1["test"][0]
    target = Path(args.target).resolve() if args.target else first.liked
    seen, unseen = data.users["test_seen"], data.users["test_unseen"]
    users = seen[: args.users // 2] + unseen[: args.users - min(len(seen), args.users // 2)]
    maps = attention_maps(model, scorer, data, users, target, first.prompt, args.shuffles, args.layer, args.head)
    similarity, pairs = similar_users(maps)
    head = "mean over heads" if args.head is None else f"head {args.head}"
    plot(maps, set(seen), args.shuffles,
         f"attention from the target image to the preference tokens (layer {args.layer}, {head})", args.out)
    report = {"checkpoint": args.checkpoint, "target": str(target), "prompt": first.prompt, "layer": args.layer,
              "head": args.head, "users": users, "seen": [u in set(seen) for u in users],
              "mean_attention": {u: maps[u].mean(0).tolist() for u in users},
              "similarity": similarity.tolist(), "most_similar": pairs}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    for pair in pairs:
        a, b = pair["users"]
        print(f"{a} ({'seen' if a in seen else 'unseen'}) ~ {b} ({'seen' if b in seen else 'unseen'}): "
              f"cosine {pair['cosine']:.3f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
