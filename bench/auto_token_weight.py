"""Tried for auto (issue 15), not shipped: a token member of several training seeds, and a fixed
smaller weight on the token member.

    python bench/auto_token_weight.py --population "seed 0" data/bench SCORES [SCORES ...] \
        --population "seed 1" DATA SCORES

Reads the per-target log-odds that `bench/studio_models.py` saves (`<data>/studio_models/
scores.safetensors`). Each SCORES file of one population holds the scores of one token checkpoint
(the same user embedding in each); with several, the token member is their ensemble: each seed's
log-odds divided by its spread over the person's judged images (as auto standardises a member),
then averaged. Auto is the user embedding's standardised log-odds plus `w` times the token
member's, for each `w` of `WEIGHTS` (the served auto is w = 1 with the first file's checkpoint).
Unseen test users, 1v1 top-1; auto − the better single model of the row (user embedding or token
member), ± the standard error over users, as `bench/studio_models.py` reports it. The scan is
printed whole on every population given, so a weight that only one population likes shows.
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from prefstudio_research.prefbench.data import load_split  # noqa: E402
from prefstudio_research.prefbench.studio_scores import ENCODER, mean_se, per_user, target_owner, top1  # noqa: E402

WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)
N_REFS = (8, 32)
USER_EMBEDDING, TOKENS = "user-embedding", "preference-tokens"


def rows(label: str, data: Path, score_files: list[Path]) -> list[str]:
    split = load_split(data, "test", ENCODER)
    owner = target_owner(split)
    unseen = torch.tensor([u not in split.seen for u in split.users])
    saved = [load_file(str(f)) for f in score_files]
    out = []
    for n_ref in N_REFS:
        key = f"test.{n_ref}"
        scales = [torch.repeat_interleave(s[f"{key}.scales"], owner.bincount(), 0) for s in saved]
        gap = {name: (s[:, 0] - s[:, 1]) for name in (USER_EMBEDDING, TOKENS)
               for s in [saved[0][f"{key}.{name}"]]}
        ue = gap[USER_EMBEDDING] / scales[0][:, 0]
        tokens = sum((s[f"{key}.{TOKENS}"][:, 0] - s[f"{key}.{TOKENS}"][:, 1]) / sc[:, 1]
                     for s, sc in zip(saved, scales)) / len(saved)

        def hits(g):
            return per_user(top1(torch.stack([g, torch.zeros_like(g)], 1)), owner, len(split.users))[unseen]

        single = {"user embedding": hits(ue), "tokens": hits(tokens)}
        best = max(single, key=lambda name: single[name].mean())
        cells = []
        for w in WEIGHTS:
            auto = hits(ue + w * tokens)
            diff, se = mean_se(auto - single[best])
            cells.append(f"{100 * auto.mean():.1f} ({100 * diff:+.2f} ± {100 * se:.2f})")
        out.append(f"| {label} | {len(saved)} | {n_ref} | {100 * single['user embedding'].mean():.1f} | "
                   f"{100 * single['tokens'].mean():.1f} | {best} | " + " | ".join(cells) + " |")
        print(out[-1], flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", nargs="+", action="append", required=True,
                        metavar="LABEL DATA SCORES", help="a label, a PrefBench data folder and 1+ scores files")
    args = parser.parse_args(argv)
    load_start, start = os.getloadavg(), time.perf_counter()
    lines = []
    for population in args.population:
        if len(population) < 3:
            parser.error("--population takes a label, a data folder and at least one scores file")
        lines += rows(population[0], Path(population[1]), [Path(f) for f in population[2:]])
    from prefstudio_research.report import how_it_ran, write_section

    ran = how_it_ran("bench/auto_token_weight.py", list(sys.argv[1:] if argv is None else argv), load_start, start)
    header = " | ".join(f"auto, w = {w:g} (− best single)" for w in WEIGHTS)
    write_section("auto-token-weight", "\n".join([
        "## Tried for auto: a token member of several seeds, and a smaller weight on it (issue 15)", "",
        f"{ran} The script's docstring says what each column is. Unseen test users, 1v1 top-1 (%); in brackets "
        "auto − the better single model of the row, points ± the standard error over users.", "",
        f"| population | token seeds | N_ref | user embedding | tokens | better single | {header} |",
        "| --- | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(WEIGHTS), *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
