"""Does a token checkpoint read the person's history, or something else?

    python bench/token_history_probe.py --token-checkpoints checkpoints/preference_tokens_lite OTHER --people 30

The studio people of `bench/studio_histories.py` (same draw, seed 1 by default). Each of a
person's 8 distinct-image pairs is scored with the other 7 as the history, three ways: the
history as judged, the history mirrored (every pair judged the other way round) and an empty
history. A model that reads the person is right on the first and wrong on the second; one that
scores nearly the same whatever the history says reads something else (its training
population's average taste, or an extrapolation on images unlike its training images).
Printed: the share of held-out pairs each reading gets right (a tie counts ½).
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio.preference.models import build_preference_model, select  # noqa: E402
from prefstudio.preference.tokens import PairFeatures, TargetFeatures  # noqa: E402
from prefstudio.studio import Studio  # noqa: E402
from prefstudio_research.studio_people import judged_people  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-checkpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        studio = Studio(folder, preference_model="user-embedding")
        people = judged_people(studio, args.people, args.seed)
        encoder, text = studio.encoder.name, getattr(studio.generator, "text_encoder", None)
        for checkpoint in args.token_checkpoints:
            tokens = build_preference_model("preference-tokens", encoder, text, studio.bank,
                                            token_checkpoint=checkpoint)
            right = {"as judged": [], "mirrored": [], "empty": []}
            for person in people:
                history = tokens.fit(studio.judged_pairs(person.user_id))[0].history
                for row in range(history.liked.shape[0]):
                    rest = select(history, [r for r in range(history.liked.shape[0]) if r != row])
                    pair = TargetFeatures(torch.stack([history.liked[row], history.disliked[row]]),
                                          torch.cat([history.prompts[[row]], history.disliked_prompts[[row]]]))
                    readings = {"as judged": rest,
                                "mirrored": PairFeatures(rest.disliked, rest.liked, rest.disliked_prompts, rest.prompts),
                                "empty": select(rest, [])}
                    for name, read in readings.items():
                        with torch.no_grad():
                            m_like, m_dislike = tokens.model.score(read, pair)
                        odds = m_like - m_dislike
                        right[name].append(1.0 if odds[0] > odds[1] else 0.5 if odds[0] == odds[1] else 0.0)
            print(f"{checkpoint}: " + ", ".join(f"{name} {100 * sum(v) / len(v):.1f} %" for name, v in right.items())
                  + f" of {len(right['empty'])} held-out pairs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
