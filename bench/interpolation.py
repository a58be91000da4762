"""Is blending monotone? Moving weight from one reward to another, one seed, in equal steps:
the reward gaining weight should score higher at each step and the one losing weight lower
(PPD 002 §5.1, Fig. 4: each reward's score rises with its weight).

    python bench/interpolation.py --between profiles --prompts 20 --steps 5
    python bench/interpolation.py --between prompt --prompts 20 --steps 5

Six simulated people are drawn as PrefBench draws its unseen users (`sample_population`,
ids new0000…new0005, population seed 0); each judges 16 of the studio's own candidates
(8 seeds × 2 prompts, liking their better half) and is fitted as a profile by the studio's
default preference model. A and B are the two whose fitted tastes disagree most over those
candidates (lowest correlation): between two people who like the same images there is no
trade-off to see. Then, on unseen prompts, each at its own seed:
  - A → B: profile A personalized with weights user = 1 − t, profile:B = t (A's own taste
    against B's, blended as a person does in the Generate tab), prompt consistency at its
    default guard weight;
  - taste → prompt consistency: user = 1 − t, prompt_consistency = t;
for t = 0, 1/steps, …, 1, at the studio's default strength and iterations: one row of the
trade-off grid (`Studio.trade_off`, what the Generate tab's grid and `python -m prefstudio grid`
show): a guided run per weighting, all into one candidate pool, each image the pool's pick for
its weights (`CandidatePool.pick`), after short bridge runs where two neighbouring cells
picked the same image (`Studio._bridge_ties`); on the grid's axis prompt consistency is raised, not a
guard. Each image is scored from its PNG (normalised scores, as the page shows them). A prompt counts as
monotone when, at every step, the reward gaining weight scores strictly higher and the
one losing weight strictly lower than at the step before. Also reported: the share of
single steps that move both ways. Each `--between` writes its own section of docs/benchmarks.md
(`interpolation_profiles`, `interpolation_prompt`), so the two can run side by side.
"""
import argparse
import os
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio.blend import profile_reward  # noqa: E402
from prefstudio.studio import DEFAULT_STRENGTH, GUARD_WEIGHT, Studio  # noqa: E402
from prefstudio.taste_summary import read_prompts  # noqa: E402
from prefstudio_research.report import machine, write_section  # noqa: E402
from prefstudio_research.studio_people import JUDGED_PROMPTS, judged_candidates, judged_people  # noqa: E402

TARGET = 0.90


def most_different(studio: Studio, names: list[str], shas: list[str]) -> tuple[str, str, float]:
    """The two profiles whose fitted tastes correlate least over the judged candidates."""
    features = studio.features(shas)
    scores = {}
    with torch.no_grad():
        for name in names:
            reward = studio.user_reward(name)
            scores[name] = reward.score_features(features, reward.taste.prompt_context([""]))
    pairs = [(a, b, float(torch.corrcoef(torch.stack([scores[a], scores[b]]))[0, 1]))
             for i, a in enumerate(names) for b in names[i + 1:]]
    return min(pairs, key=lambda pair: pair[2])


def fitted_people(studio: Studio, count: int, seed: int) -> tuple[list[str], list[str]]:
    """Profiles of `count` simulated people fitted on the same candidates, and those candidates."""
    candidates = judged_candidates(studio)
    people = judged_people(studio, count, seed, candidates)
    return [p.user_id for p in people], [c.sha256 for c in candidates]


def sweep(studio: Studio, profile: str, prompt: str, seed: int, losing: str, gaining: str, fixed: dict,
          steps: int, iterations: int) -> tuple[list[tuple[float, float]], int]:
    """(losing reward's score, gaining reward's score) of each image of the trade-off grid's row,
    and how many bridge runs the grid made."""
    items = list(studio.trade_off(profile, prompt, [losing, gaining], seed=seed, steps=steps, weights=fixed,
                                  strength=DEFAULT_STRENGTH, iterations=iterations))
    bridges = sum(isinstance(item, str) and item.startswith("Bridging") for item in items)
    scores = [(c.side.personalized.normalised[losing], c.side.personalized.normalised[gaining])
              for c in items[-1].cells()]
    return scores, bridges


def monotone_steps(scores: list[tuple[float, float]]) -> list[bool]:
    return [later[0] < earlier[0] and later[1] > earlier[1] for earlier, later in zip(scores, scores[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30, help="guidance iterations (the studio's default)")
    parser.add_argument("--seed", type=int, default=0, help="PrefBench's population seed")
    parser.add_argument("--people", type=int, default=6, help="people drawn; the two most different are used")
    parser.add_argument("--between", choices=["profiles", "prompt"], required=True,
                        help="profiles: A's taste → B's; prompt: A's taste → prompt consistency")
    args = parser.parse_args()
    torch.set_num_threads(1)

    studio = Studio(tempfile.mkdtemp(prefix="interpolation-"))
    a, b, correlation = most_different(studio, *fitted_people(studio, args.people, args.seed))
    unseen = [p for p in read_prompts() if p not in JUDGED_PROMPTS]
    prompts = [unseen[(i * max(1, len(unseen) // args.prompts)) % len(unseen)] for i in range(args.prompts)]
    experiments = {
        "profiles": {f"{a}'s taste → {b}'s taste": ("user", profile_reward(b), {"prompt_consistency": GUARD_WEIGHT})},
        "prompt": {f"{a}'s taste → prompt consistency": ("user", "prompt_consistency", {})},
    }[args.between]
    results, bridges, start = {}, 0, time.perf_counter()
    for label, (losing, gaining, fixed) in experiments.items():
        rows = []
        for i, prompt in enumerate(prompts):
            scores, bridged = sweep(studio, a, prompt, 2000 + i, losing, gaining, fixed, args.steps, args.iterations)
            bridges += bridged
            steps = monotone_steps(scores)
            rows.append(steps)
            print(f"{label[:32]:32s} {prompt[:36]:36s} " + "  ".join(f"{x:+.2f}/{y:+.2f}" for x, y in scores)
                  + f"  monotone {sum(steps)}/{len(steps)}, {bridged} bridge runs", flush=True)
        results[label] = rows
    seconds = time.perf_counter() - start
    runs = len(experiments) * args.prompts * (args.steps + 1)

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["| moving weight | prompts monotone at every step | single steps monotone | each step (t → t + 1/steps) |",
             "|---|---:|---:|---|"]
    for label, rows in results.items():
        whole = sum(all(r) for r in rows) / len(rows)
        single = sum(sum(r) for r in rows) / sum(len(r) for r in rows)
        # Where it fails: near either end the true change is small, and the optimiser's noise shows.
        each = " · ".join(f"{sum(r[k] for r in rows) / len(rows):.0%}" for k in range(args.steps))
        lines.append(f"| {label} | **{whole:.0%}** (target ≥ {TARGET:.0%}) | {single:.0%} | {each} |")
    table = "\n".join(lines)
    print(table)
    print(f"{runs} guided runs and {bridges} bridge runs in {seconds:.0f} s; load: {load}")
    moved = (f"from its own taste to {b}'s taste (`profile:{b}`; prompt consistency guarding at {GUARD_WEIGHT})"
             if args.between == "profiles" else
             "from its own taste to prompt consistency (raised: on a grid's axis it is not a guard)")
    write_section(f"interpolation_{args.between}", f"""## Interpolation: moving weight {"between two people's tastes" if args.between == "profiles" else "from taste to prompt consistency"}

`python bench/interpolation.py --between {args.between} --prompts {args.prompts} --steps {args.steps}` — {machine()}; load: `{load}`.
{args.people} simulated people drawn as PrefBench's unseen users (population seed {args.seed}), each fitted by the
studio's default preference model ({studio.preference.name}) on 16 judged candidates; A = {a} and B = {b} are the two
whose fitted tastes disagree most (correlation {correlation:+.2f} over the candidates). The embedded generator, offline.
On {args.prompts} unseen prompts (one seed each) a trade-off grid row of {args.steps + 1} images is made for profile {a}
while the weight moves in {args.steps} equal steps {moved}; default strength {DEFAULT_STRENGTH} and {args.iterations}
iterations per guided run, every run into one candidate pool and each image the pool's pick for its weights; where two
neighbouring cells picked the same image, a bridge run ({args.iterations // 3} iterations from it) filled the gap. Scores are the
normalised scores of the PNGs. A prompt is monotone when at every step the reward gaining weight scores strictly higher
and the one losing weight strictly lower. {runs} guided runs and {bridges} bridge runs took {seconds:.0f} s.

{table}
""")


if __name__ == "__main__":
    main()
