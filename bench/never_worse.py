"""Never-worse rate of personalization at default settings: how often the personalized image
scores above its same-seed baseline under the person's own taste model, through the studio's
exact path (default preference model, strength, weights and iterations).

    python bench/never_worse.py --users 12 --prompts 4      # 48 runs

Simulated people are drawn as PrefBench draws its unseen users (`sample_population`, the
same population model and seed, ids new0000…); each judges 16 of the studio's own
candidates (8 seeds × 2 prompts, liking their better half), the studio fits them, then
personalizes unseen prompts at defaults. Reported: the share of runs where the personalized
PNG's taste score is higher than the baseline's (the target is ≥ 95 %), the share the studio
itself calls improved, the hidden-utility win rate, and seconds per run. Writes the
`never_worse` section of docs/benchmarks.md.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.report import machine, write_section  # noqa: E402
from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.eval.simulated_users import (  # noqa: E402
    ATTRIBUTES, SimulatedUser, image_attributes, sample_population,
)
from prefstudio.studio import Studio  # noqa: E402
from prefstudio.taste_summary import read_prompts  # noqa: E402

JUDGED_PROMPTS = ["a quiet landscape", "a city street at dusk"]
TARGET = 0.95


def judged_people(studio: Studio, n_users: int, seed: int) -> list[SimulatedUser]:
    """PrefBench's unseen users as the studio meets them: drawn by `sample_population` (its
    population model and seed, ids new0000…), each with a profile in the studio in which they
    judged 16 of its candidates (8 seeds × JUDGED_PROMPTS, liking their better half), fitted."""
    candidates = [c for i, p in enumerate(JUDGED_PROMPTS)
                  for c in studio.generate_candidates(p, seeds=list(range(8 * i, 8 * i + 8)))]
    pixels = pil_to_tensor([studio.store.load_image(c.sha256) for c in candidates])
    attributes = image_attributes(pixels)
    spread = {name: float(attributes[name].std()) for name in ATTRIBUTES}
    ids = [f"new{i:04d}" for i in range(n_users)]
    people = sample_population(ids, seed, ["generated"], None, spread).users
    for person in people:
        studio.store.create_profile(person.user_id)
        utility = person.utility(pixels)
        for candidate, value in zip(candidates, utility):
            studio.judge(person.user_id, "like" if value > utility.median() else "dislike", candidate.sha256)
        studio.fit(person.user_id)
    return people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=4, help="personalized prompts per person")
    parser.add_argument("--seed", type=int, default=0, help="PrefBench's population seed")
    args = parser.parse_args()
    torch.set_num_threads(1)

    studio = Studio(tempfile.mkdtemp(prefix="never-worse-"))
    people = judged_people(studio, args.users, args.seed)
    unseen = [p for p in read_prompts() if p not in JUDGED_PROMPTS]
    step = max(1, len(unseen) // (args.users * args.prompts))

    rows = []
    for u, person in enumerate(people):
        for k in range(args.prompts):
            prompt = unseen[((u * args.prompts + k) * step) % len(unseen)]
            start = time.perf_counter()
            side = studio.personalize_once(person.user_id, prompt, seed=1000 + u * args.prompts + k)
            seconds = time.perf_counter() - start
            images = [studio.store.load_image(s.record.sha256) for s in (side.baseline, side.personalized)]
            hidden = person.utility(pil_to_tensor(images))
            rows.append({"higher": side.personalized.normalised["user"] > side.baseline.normalised["user"],
                         "improved": side.improved, "hidden_win": bool(hidden[1] > hidden[0]),
                         "gain": side.personalized.normalised["user"] - side.baseline.normalised["user"],
                         "seconds": seconds})
            print(f"{person.user_id} {prompt[:40]:40s} taste {side.baseline.normalised['user']:+.2f} -> "
                  f"{side.personalized.normalised['user']:+.2f} improved={side.improved} {seconds:.1f}s", flush=True)

    n = len(rows)
    higher = sum(r["higher"] for r in rows) / n
    improved = sum(r["improved"] for r in rows) / n
    hidden = sum(r["hidden_win"] for r in rows) / n
    gains = sorted(r["gain"] for r in rows)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    table = (
        "| runs | taste score higher than baseline | called improved by the studio | hidden-utility win rate | "
        "median taste gain | median s / run |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {n} | **{higher:.1%}** (target ≥ {TARGET:.0%}) | {improved:.1%} | {hidden:.1%} | "
        f"{statistics.median(gains):+.2f} | {statistics.median(r['seconds'] for r in rows):.1f} |")
    print(table)
    write_section("never_worse", f"""## Never worse than the baseline, at default settings

`python bench/never_worse.py --users {args.users} --prompts {args.prompts}` — {machine()}; load: `{load}`.
{args.users} simulated people drawn as PrefBench's unseen users (population seed {args.seed}), each fitted by the
studio's default preference model ({studio.preference.name}) on 16 judged candidates, then personalized on
{args.prompts} unseen prompts each at default strength, weights and iterations. "Higher" compares the taste
model's normalised score of the two PNGs; "called improved" is the studio's own verdict (the page says "no
improvement" otherwise); the hidden-utility win rate uses the simulated person's true taste.

{table}
""")


if __name__ == "__main__":
    main()
