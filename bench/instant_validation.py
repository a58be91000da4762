"""Instant alone on validation people, to choose between adapters without touching the benchmark's.

    python bench/instant_validation.py ADAPTER_FOLDER [ADAPTER_FOLDER ...]

People: PrefBench's population (seed 0) as bench/instant.py draws it, but users 24–47 — the
benchmark (`bench/instant.py`, `judged_people`) uses the first ones, so these are other people
of the same population. Each judges the studio's 16 candidates (liking their better half under
their hidden utility), and Instant reads them as the studio does (`Studio.bank_embedding` in the bank that travels
with each adapter, as `Studio.instant_embedding` reads them). Cases: 8 evaluation prompts (odd lines of assets/prompts.txt, stepped
differently from bench/instant.py) with seeds 5000+ (the benchmark's are 1000+), × 24 people.
Per adapter and strength (0.5: the studio's default; 1: the modulation as trained): Instant's win
rate over the same-seed baseline under the hidden utility (images through 8-bit PNG pixels, as
stored), the mean change of normalised prompt consistency, and how often a person's own Instant
image beats another person's under their own utility; from the second adapter on, its win rate
minus the first one's on the same cases, with the standard error of that paired difference.
Prints; writes nothing.
"""
import argparse
import os
import statistics
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio.encoders.base import pil_to_tensor  # noqa: E402
from prefstudio.generators.base import to_pil  # noqa: E402
from prefstudio.guidance.adapter import load_adapter  # noqa: E402
from prefstudio.rewards.prompt_consistency import PromptConsistencyReward  # noqa: E402
from prefstudio.studio import Studio  # noqa: E402
from prefstudio_research.studio_people import JUDGED_PROMPTS, judged_people  # noqa: E402
from prefstudio_research.train.preference_adapter import evaluation_prompts  # noqa: E402

FIRST_USER, USERS, PROMPTS = 24, 24, 8


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapters", nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    studio = Studio(tempfile.mkdtemp(prefix="instant-validation-"))
    people = judged_people(studio, USERS, 0, first=FIRST_USER)
    pool = [p for p in evaluation_prompts() if p not in JUDGED_PROMPTS]
    cases = [(pool[(3 * k + 1) % len(pool)], 5000 + k) for k in range(PROMPTS)]
    generator = studio.generator
    consistency = PromptConsistencyReward(generator, studio.encoder)

    def stored(images: torch.Tensor) -> torch.Tensor:
        return pil_to_tensor(to_pil(images))

    first_wins = {}  # strength -> the first adapter's per-case wins
    with torch.no_grad():
        baselines = {case: stored(generator.render(generator.initial_noise(case[1]), generator.encode_prompt(case[0])))
                     for case in cases}
        for folder in args.adapters:
            adapter, _, bank = load_adapter(folder)
            users = torch.stack([studio.bank_embedding(person.user_id, bank) for person in people])
            for scale in (0.5, 1.0):
                wins, drops, own = [], [], []
                for prompt, seed in cases:
                    conditioning, anchor = generator.encode_prompt(prompt), consistency.prepare(prompt)
                    noise = generator.initial_noise(seed).expand(len(people), -1)
                    images = stored(generator.render(noise, adapter.apply(generator, conditioning, users, scale)))
                    baseline = baselines[(prompt, seed)]
                    base_consistency = float(consistency.normalise(consistency.score(baseline, anchor), anchor)[0])
                    image_consistency = consistency.normalise(consistency.score(images, anchor), anchor)
                    for i, person in enumerate(people):
                        u = person.utility(torch.cat([baseline, images]))
                        wins.append(float(u[1 + i] > u[0]))
                        drops.append(float(image_consistency[i]) - base_consistency)
                        own += [float(u[1 + i] > u[1 + j]) for j in range(len(people)) if j != i]
                n, w = len(wins), statistics.mean(wins)
                paired = ""
                if scale in first_wins:
                    change = [a - b for a, b in zip(wins, first_wins[scale])]
                    paired = (f", {100 * statistics.mean(change):+.1f} ± {100 * statistics.stdev(change) / n ** 0.5:.1f}"
                              " pts against the first adapter (paired, SE)")
                else:
                    first_wins[scale] = wins
                print(f"{folder} strength {scale}: win rate vs baseline {w:.1%} ± {196 * (w * (1 - w) / n) ** 0.5:.1f} pts, "
                      f"prompt consistency {statistics.mean(drops):+.2f}, own image beats another's "
                      f"{statistics.mean(own):.1%} ({n} cases){paired}", flush=True)


if __name__ == "__main__":
    main()
