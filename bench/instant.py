"""Instant personalization (the preference adapter) against Guided, under hidden utilities.

    python bench/instant.py --users 24 --prompts 8          # 192 cases

People: PrefBench's unseen users as bench/never_worse.py draws them (`judged_people`): each
judges 16 of the studio's candidates and is fitted by the studio; Instant reads them as the
bank combination (Premier's cold start). Prompts: evaluation prompts of assets/prompts.txt
(the odd lines, which the adapter never trained on); every person gets the same prompts and
seeds, so images of different people can be compared. Per case, from one seed and through
the studio's own path (`Studio.personalize`, default weights and strength):
  - baseline: the unpersonalized image;
  - Guided: 30 iterations of noise optimisation;
  - Instant: one pass of the preference adapter;
  - Instant → guidance: Instant's image, then a short guidance (--chain-iterations).
The judge is the person's hidden utility on the stored PNGs: a win is u(method) > u(other).
Time: `SideBySide.seconds`, the personalization itself (not the baseline, scoring or storing).
Dispersion: the image encoder's feature distance (1 − cosine) between Instant images of two
different people for the same prompt and seed, next to the distance between a person's
Instant image and its baseline; and whether each person's own Instant image beats another
person's under their own hidden utility. Writes the `instant` section of docs/benchmarks.md.
"""
import argparse
import itertools
import json
import random
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from prefstudio_research.studio_people import JUDGED_PROMPTS, judged_people  # noqa: E402
from prefstudio_research.report import machine, write_section  # noqa: E402
from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.guidance.methods import CHAIN_ITERATIONS, DEFAULT_ITERATIONS  # noqa: E402
from prefstudio.studio import DEFAULT_ADAPTER, DEFAULT_STRENGTH, Studio  # noqa: E402
from prefstudio_research.train.preference_adapter import evaluation_prompts  # noqa: E402

# name -> (Studio.personalize method, strength); None: the studio's default strength.
METHODS = {"guided": ("guidance", None), "instant": ("instant", None), "instant_full": ("instant", 1.0),
           "chain": ("instant+guidance", None)}
TARGET_MARGIN_SHARE, TARGET_SPEEDUP = 0.8, 20.0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--prompts", type=int, default=8, help="prompts (each with its own seed) per person")
    parser.add_argument("--seed", type=int, default=0, help="PrefBench's population seed")
    parser.add_argument("--chain-iterations", type=int, default=CHAIN_ITERATIONS)
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    parser.add_argument("--dump", type=Path, help="also write every case's utilities, seconds and consistency here (JSON)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of people for the standard errors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    studio = Studio(tempfile.mkdtemp(prefix="instant-"), adapter_path=args.adapter)
    if studio.adapter is None:
        raise SystemExit(studio.adapter_problem)
    people = judged_people(studio, args.users, args.seed)
    pool = [p for p in evaluation_prompts() if p not in JUDGED_PROMPTS]
    step = max(1, len(pool) // args.prompts)
    cases = [(pool[(k * step) % len(pool)], 1000 + k) for k in range(args.prompts)]

    images, utilities = {}, {}
    seconds, consistency = {name: [] for name in METHODS}, {name: [] for name in METHODS}
    for person in people:
        for prompt, seed in cases:
            sides = {}
            for name, (method, strength) in METHODS.items():
                iterations = args.chain_iterations if name == "chain" else None
                sides[name] = side = studio.personalize_once(
                    person.user_id, prompt, seed=seed, method=method, iterations=iterations,
                    strength=DEFAULT_STRENGTH if strength is None else strength)
                seconds[name].append(side.seconds)
                consistency[name].append(side.personalized.normalised["prompt_consistency"]
                                         - side.baseline.normalised["prompt_consistency"])
            shas = {"baseline": sides["guided"].baseline.record.sha256,
                    **{name: side.personalized.record.sha256 for name, side in sides.items()}}
            pixels = pil_to_tensor([studio.store.load_image(sha) for sha in shas.values()])
            key = (person.user_id, prompt, seed)
            images[key] = dict(zip(shas, pixels))
            utilities[key] = dict(zip(shas, person.utility(pixels).tolist()))
            u = utilities[key]
            print(f"{person.user_id} {prompt[:32]:32s} seed {seed}: " + " ".join(
                f"{n} {u[n] - u['baseline']:+.2f} ({seconds[n][-1]:.2f}s)" for n in METHODS), flush=True)

    def interval(p: float, count: int) -> str:
        """± half-width of a normal-approximation 95 % interval on a rate over `count` cases."""
        return f"± {196 * (p * (1 - p) / count) ** 0.5:.1f} pts"

    def rate(first: str, second: str, keys=None) -> float:
        keys = list(utilities) if keys is None else keys
        return sum(utilities[k][first] > utilities[k][second] for k in keys) / len(keys)

    n = len(utilities)
    median_seconds = {name: statistics.median(values) for name, values in seconds.items()}
    win = {name: rate(name, "baseline") for name in METHODS}
    margin_share = (win["instant"] - 0.5) / (win["guided"] - 0.5) if win["guided"] != 0.5 else float("nan")
    speedup = median_seconds["guided"] / median_seconds["instant"]
    per_person = [rate("instant", "baseline", [k for k in utilities if k[0] == p.user_id]) for p in people]

    # Standard errors that respect who the cases belong to: a person's cases are not independent
    # (one fitted taste serves all of them), so the bootstrap resamples people, not cases.
    def share_of_margin(keys) -> float:
        guided = rate("guided", "baseline", keys) - 0.5
        return (rate("instant", "baseline", keys) - 0.5) / guided if guided > 0 else float("nan")

    by_person = {p.user_id: [k for k in utilities if k[0] == p.user_id] for p in people}
    draws = random.Random(0)
    resamples = [[k for _ in people for k in by_person[draws.choice(people).user_id]] for _ in range(args.bootstrap)]

    def spread(statistic) -> tuple[float, float, float]:
        """(standard error, 2.5 % and 97.5 % quantiles) of a statistic over resampled people."""
        values = sorted(v for v in (statistic(keys) for keys in resamples) if v == v)
        if len(values) < 2:
            return float("nan"), float("nan"), float("nan")
        return statistics.stdev(values), values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]

    margin_se, margin_low, margin_high = spread(share_of_margin)
    undefined = sum(share_of_margin(keys) != share_of_margin(keys) for keys in resamples)
    se = {(a, b): spread(lambda keys: rate(a, b, keys))[0] for a, b in (
        ("guided", "baseline"), ("instant", "baseline"), ("instant_full", "baseline"), ("chain", "baseline"),
        ("instant", "guided"), ("instant_full", "guided"), ("chain", "guided"), ("chain", "instant"))}

    def shown(a: str, b: str) -> str:
        value = rate(a, b)
        return f"{value:.1%} {interval(value, n)}, ± {100 * se[(a, b)]:.1f} SE over people"

    if args.dump:
        args.dump.write_text(json.dumps({"utilities": [[*k, u] for k, u in utilities.items()],
                                         "seconds": seconds, "consistency": consistency}, indent=0))

    # Dispersion: different people, same prompt and seed.
    with torch.no_grad():
        features = {k: dict(zip(v, F.normalize(studio.encoder.encode(torch.stack(list(v.values()))), dim=-1)))
                    for k, v in images.items()}
    between, moved, own_wins = [], [], []
    by_case = {case: [p for p in people] for case in cases}
    for (prompt, seed), members in by_case.items():
        for a, b in itertools.combinations(members, 2):
            ka, kb = (a.user_id, prompt, seed), (b.user_id, prompt, seed)
            between.append(1 - float(features[ka]["instant"] @ features[kb]["instant"]))
            # Under a's own hidden utility, does a's Instant image beat b's? And b's under b's?
            pair = torch.stack([images[ka]["instant"], images[kb]["instant"]])
            ua, ub = a.utility(pair).tolist(), b.utility(pair).tolist()
            own_wins += [ua[0] > ua[1], ub[1] > ub[0]]
        for person in members:
            key = (person.user_id, prompt, seed)
            moved.append(1 - float(features[key]["instant"] @ features[key]["baseline"]))
    # The natural variation: the baseline of each case against the same prompt at another seed.
    seeds_apart = []
    with torch.no_grad():
        for prompt, seed in cases:
            other = pil_to_tensor([studio.generator.generate(prompt, [seed + 500])[0].image])
            other = F.normalize(studio.encoder.encode(other), dim=-1)[0]
            seeds_apart.append(1 - float(features[(people[0].user_id, prompt, seed)]["baseline"] @ other))

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    chain_faster = median_seconds["chain"] <= median_seconds["guided"]
    chain_beats = rate("chain", "guided") > 0.5
    drop = {name: statistics.mean(values) for name, values in consistency.items()}
    table = (
        "| method (strength) | win rate vs same-seed baseline (95 % interval over cases; SE over people) | median s / personalized image | "
        "prompt consistency vs baseline (spreads, mean) |\n|---|---:|---:|---:|\n"
        f"| Guided ({DEFAULT_ITERATIONS} iterations, {DEFAULT_STRENGTH}) | {shown('guided', 'baseline')} | "
        f"{median_seconds['guided']:.2f} | {drop['guided']:+.2f} |\n"
        f"| Instant (one adapter pass, {DEFAULT_STRENGTH}) | {shown('instant', 'baseline')} | "
        f"{median_seconds['instant']:.3f} | {drop['instant']:+.2f} |\n"
        f"| Instant at strength 1 (the modulation as trained) | {shown('instant_full', 'baseline')} | "
        f"{median_seconds['instant_full']:.3f} | {drop['instant_full']:+.2f} |\n"
        f"| Instant → guidance ({args.chain_iterations} iterations, {DEFAULT_STRENGTH}) | {shown('chain', 'baseline')} | "
        f"{median_seconds['chain']:.2f} | {drop['chain']:+.2f} |\n\n"
        "| head to head (hidden utility) | win rate (95 % interval over cases; SE over people) |\n|---|---:|\n"
        f"| Instant vs Guided | {shown('instant', 'guided')} |\n"
        f"| Instant at strength 1 vs Guided | {shown('instant_full', 'guided')} |\n"
        f"| Instant → guidance vs Guided | {shown('chain', 'guided')} |\n"
        f"| Instant → guidance vs Instant | {shown('chain', 'instant')} |\n\n"
        "| target | value | |\n|---|---:|---|\n"
        f"| Instant keeps ≥ {TARGET_MARGIN_SHARE:.0%} of Guided's margin over the baseline (win rate − 50 %) | "
        f"{margin_share:.0%} ± {margin_se:.0%} SE over people (bootstrap 95 %: {margin_low:.0%} to {margin_high:.0%}"
        f"{f'; {undefined} of {args.bootstrap} resamples had no Guided margin' if undefined else ''}; "
        f"Guided's margin {100 * (win['guided'] - 0.5):.1f} pts) | {met(margin_share >= TARGET_MARGIN_SHARE)} |\n"
        f"| … at ≥ {TARGET_SPEEDUP:.0f}× less time | {speedup:.0f}× | {met(speedup >= TARGET_SPEEDUP)} |\n"
        f"| Instant → guidance beats Guided at equal or lower time | {rate('chain', 'guided'):.1%} "
        f"{interval(rate('chain', 'guided'), n)} at "
        f"{median_seconds['chain'] / median_seconds['guided']:.0%} of the time | {met(chain_faster and chain_beats)} |\n\n"
        "| dispersion (image encoder features, 1 − cosine) | value |\n|---|---:|\n"
        f"| two different people, same prompt and seed: Instant images apart (mean over {len(between)} pairs) | "
        f"{statistics.mean(between):.4f} |\n"
        f"| a person's Instant image from its baseline (mean) | {statistics.mean(moved):.4f} |\n"
        f"| two seeds of one prompt, baselines (mean; the natural variation) | {statistics.mean(seeds_apart):.4f} |\n"
        f"| own Instant image beats the other person's, under one's own hidden utility | "
        f"{sum(own_wins) / len(own_wins):.1%} |\n"
        f"| one person across prompts and seeds: share of their Instant images that beat the baseline "
        f"(min / median / max over {len(people)} people) | {min(per_person):.0%} / "
        f"{statistics.median(per_person):.0%} / {max(per_person):.0%} |")
    print(table)
    if args.no_write:
        return
    config = studio.adapter_config
    write_section("instant", f"""## Instant personalization: the preference adapter vs Guided

`python bench/instant.py --users {args.users} --prompts {args.prompts} --chain-iterations {args.chain_iterations}`
— {machine()}; load: `{load}`.
{n} cases (the size fixed before the run): {len(people)} simulated people drawn as PrefBench's unseen users (population seed {args.seed};
`bench/never_worse.py`'s `judged_people`: 16 judged candidates each, fitted by the studio's default
preference model), × {len(cases)} prompts the adapter never trained on, one seed each, the same for every
person and every method. Every method runs through `Studio.personalize` at default weights and strength;
the judge is each person's hidden utility on the stored PNGs. ± after a rate: the normal 95 % interval
over cases, then the standard error from {args.bootstrap} resamples of people (a person's cases share one fitted
taste, so the cases are not independent); the share of Guided's margin gets the same bootstrap. Instant reads a person as the bank
combination of the adapter's training users (Premier's cold start = the bank posterior). The adapter:
`{config['id']}`, trained by `{config['command']}` ({config['wall_seconds']} s wall; the load it trained at:
checkpoints/README.md). Seconds are the
personalization itself, median per image, one thread.

{table}
""")


if __name__ == "__main__":
    main()
