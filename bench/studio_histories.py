"""Do the preference models read a person's history of the studio's own generated images?

    python bench/studio_histories.py --token-checkpoints checkpoints/preference_tokens_lite OTHER_CHECKPOINT
    python bench/studio_histories.py --seed 2 --token-checkpoints ...   # people of another population

Simulated people as the studio meets them (`prefstudio_research.studio_people.judged_people`:
PrefBench's population model drawn at seed 1, each liking the better half of 16 embedded-generator
candidates of two prompts that no training set renders, then fitted by the studio). For each
token checkpoint, the token model alone and auto (with the shipped user bank and the
checkpoint's auto_weights.json, if any) are fitted on every person's stored judgments through
`PreferenceModel.fit`, as the studio fits; the user embedding once. Metric: the leave-one-out
accuracy of the fit over the person's 8 distinct-image pairs (each predicted from the other 7;
a tie counts ½), mean ± standard error over people.

The rule, fixed before any retrained checkpoint was measured: 100 people (seed 1); the
checkpoint the studio serves must not read these histories worse than the one it replaces.
`--seed` draws the people from another population (another common taste and other archetypes),
which tells a model that reads the person from one that happens to share their population's taste.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio.preference.models import build_preference_model  # noqa: E402
from prefstudio.studio import DEFAULT_BANK, Studio  # noqa: E402
from prefstudio_research.studio_people import judged_people  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def loo(outcome) -> float:
    margins = torch.tensor(list(outcome.held_out.values()), dtype=torch.float64)
    return float(((margins > 0).double() + 0.5 * (margins == 0).double()).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-checkpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK, help="the user bank (default: the shipped one)")
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "studio_histories.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start, start = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        studio = Studio(folder, preference_model="user-embedding", bank_path=args.bank)
        people = judged_people(studio, args.people, args.seed)
        judged = {p.user_id: studio.judged_pairs(p.user_id) for p in people}
        encoder, text = studio.encoder.name, getattr(studio.generator, "text_encoder", None)
        models = {"user-embedding": build_preference_model("user-embedding", encoder, text, studio.bank)}
        for checkpoint in args.token_checkpoints:
            name = str(checkpoint.resolve().relative_to(REPO)) if checkpoint.resolve().is_relative_to(REPO) \
                else str(checkpoint)
            for kind in ("preference-tokens", "auto"):
                models[f"{kind} [{name}]"] = build_preference_model(kind, encoder, text, studio.bank,
                                                                   token_checkpoint=checkpoint)
        results = {}
        for label, model in models.items():
            accuracies = torch.tensor([loo(model.fit(judged[p.user_id])[1]) for p in people], dtype=torch.float64)
            results[label] = {"loo": float(accuracies.mean()), "se": float(accuracies.std() / math.sqrt(len(people))),
                              "first_30": float(accuracies[:30].mean())}
            print(f"{label:>70}: {100 * results[label]['loo']:.1f} ± {100 * results[label]['se']:.1f} %  "
                  f"(first 30 people {100 * results[label]['first_30']:.1f} %)", flush=True)
    report = {"command": " ".join(["python bench/studio_histories.py"] + list(sys.argv[1:] if argv is None else argv)),
              "bank": str(args.bank), "people": args.people, "seed": args.seed, "seconds": round(time.perf_counter() - start, 1),
              "load_average": {"start": load_start, "end": os.getloadavg()}, "models": results}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['seconds']:.0f} s, load {load_start[0]:.1f} → {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
