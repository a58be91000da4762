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
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio_research.report import machine, write_section  # noqa: E402
from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.studio import Studio  # noqa: E402
from prefstudio.taste_summary import read_prompts  # noqa: E402
from prefstudio_research.studio_people import JUDGED_PROMPTS, judged_people  # noqa: E402

TARGET = 0.95


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
