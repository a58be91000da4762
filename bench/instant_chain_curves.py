"""Hidden utility along the guidance, Guided vs Instant → guidance, on validation people.

    python bench/instant_chain_curves.py --people 12 --prompts 2 --out runs/chain_curves.json

Why Instant → short guidance does or does not beat Guided: for each case both run 30 iterations
(the studio's rewards and default weights, strength 0.5's trust region), every iterate is decoded
and scored under the person's hidden utility, so the result of any budget B ≤ 30 (the best iterate
so far by the fitted objective, as `optimise_noise` keeps it) can be read off one run. People: the
seed-0 population's users 24.. (bench/instant.py uses the first ones), judging the studio's 16
candidates and fitted by the studio; prompts: evaluation prompts, seeds 5000+. Prints, per budget,
how often the chain at B iterations beats Guided at 30, how often Guided at B beats Guided at 30,
and how often each beats the same-seed baseline.
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.guidance.instant import instant_image  # noqa: E402
from prefstudio.guidance.noise_optimization import GuidanceResult, GuidanceSettings, optimise_noise  # noqa: E402
from prefstudio.studio import DEFAULT_ADAPTER, DEFAULT_STRENGTH, MAX_RADIUS, Studio  # noqa: E402
from prefstudio_research.studio_people import JUDGED_PROMPTS, judged_people  # noqa: E402
from prefstudio_research.train.preference_adapter import evaluation_prompts  # noqa: E402

FIRST_USER, ITERATIONS = 24, 30


def kept(trace: list, budget: int) -> float:
    """Hidden-utility gain of the iterate guidance keeps after `budget` iterations: the first best by the fitted objective."""
    best = 0
    for i in range(budget + 1):
        if trace[i][0] > trace[best][0]:
            best = i
    return trace[best][1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--out", type=Path, help="every case's trace (fitted total, hidden-utility gain) as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    studio = Studio(tempfile.mkdtemp(prefix="chain-curves-"), adapter_path=args.adapter)
    people = judged_people(studio, args.people, 0, first=FIRST_USER)
    pool = [p for p in evaluation_prompts() if p not in JUDGED_PROMPTS]
    cases = [(pool[(3 * k + 1) % len(pool)], 5000 + k) for k in range(args.prompts)]
    settings = GuidanceSettings(iterations=ITERATIONS, radius=DEFAULT_STRENGTH * MAX_RADIUS, preview_every=1)
    rows = []
    for person in people:
        weights = studio.default_weights()
        rewards = studio.rewards(person.user_id, weights)
        for prompt, seed in cases:
            base = float(person.utility(pil_to_tensor([studio.generator.generate(prompt, [seed])[0].image]))[0])
            row = {}
            for name in ("guided", "chain"):
                conditioning = None if name == "guided" else instant_image(
                    studio.generator, studio.adapter, prompt, seed, studio.instant_embedding(person.user_id),
                    DEFAULT_STRENGTH).conditioning
                row[name] = [(item.total, float(person.utility(pil_to_tensor([item.preview]))[0]) - base)
                             for item in optimise_noise(studio.generator, prompt, seed, rewards, weights, settings,
                                                        conditioning=conditioning)
                             if not isinstance(item, GuidanceResult)]
            rows.append(row)
            print(person.user_id, prompt[:24], " ".join(
                f"{n}: B10 {kept(row[n], 10):+.2f} B30 {kept(row[n], 30):+.2f}" for n in row), flush=True)
    n = len(rows)
    for budget in (0, 5, 10, 15, 20, 25, 28, 30):
        print(f"B={budget:2d}: chain(B) beats Guided(30) {sum(kept(r['chain'], budget) > kept(r['guided'], 30) for r in rows)}/{n}; "
              f"Guided(B) beats Guided(30) {sum(kept(r['guided'], budget) > kept(r['guided'], 30) for r in rows)}/{n}; "
              f"beat the baseline: Guided(B) {sum(kept(r['guided'], budget) > 0 for r in rows)}/{n}, "
              f"chain(B) {sum(kept(r['chain'], budget) > 0 for r in rows)}/{n}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
