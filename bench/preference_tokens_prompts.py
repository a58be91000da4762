"""Does reading prompts help the lite preference-token model on PrefBench? One seed per call.

    python bench/preference_tokens_prompts.py --seed 1 --prompts yes
    python bench/preference_tokens_prompts.py --seed 1 --prompts no

Trains the model without preference tokens (stage 1 of assets/preference_tokens/lite.json,
L_p = 0) through the harness's path (`train_lite_on_features`, the benchmark's cached
features), with or without the pairs' prompt features, and prints its N_ref = 8 top-1 (1 vs 1)
on the test users as one JSON line. The harness trains without prompts and the training CLI
with them; this isolates that one difference (docs/preference_tokens.md).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

from prefstudio_research.prefbench import evaluate  # noqa: E402
from prefstudio_research.prefbench.data import load_split, load_text_features, load_training_with_prompts  # noqa: E402
from prefstudio_research.prefbench.methods import TOKEN_CONFIG, PreferenceTokens, TokenTraining  # noqa: E402
from prefstudio.preference.tokens import PairFeatures  # noqa: E402
from prefstudio_research.train.preference_tokens import read_run_config, train_lite_on_features  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/bench")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--prompts", choices=("yes", "no"), required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = read_run_config(ROOT / TOKEN_CONFIG)
    image_encoder, text_encoder = config["model"]["image_encoder"], config["model"]["text_encoder"]
    read_prompts = args.prompts == "yes"

    val, test = load_split(args.data, "val", image_encoder), load_split(args.data, "test", image_encoder)
    prompts = evaluate.PromptFeatures(*load_text_features(args.data, text_encoder))
    rows, train_prompts = load_training_with_prompts(args.data)
    users = [PairFeatures(test.features[r[:, 0]], test.features[r[:, 1]],
                          prompts(train_prompts[u]) if read_prompts else None) for u, r in sorted(rows.items())]
    validation = []
    for user, v in zip(val.users, evaluate.validation_users(val, config["stage1"].n_ref, prompts)):
        history = PairFeatures(v.history.liked, v.history.disliked, v.history.prompts if read_prompts else None)
        validation.append((history, v.target_liked, v.target_disliked)
                          + ((prompts(val.prompts[user]["1v1"]),) if read_prompts else ()))

    model = {k: v for k, v in config["model"].items() if k not in ("image_encoder", "text_encoder")}
    stage1 = replace(config["stage1"], seed=args.seed, preference_tokens=0)
    start = time.perf_counter()
    trained = train_lite_on_features(users, validation, model, stage1, None, image_encoder,
                                     text_encoder if read_prompts else None, log=lambda *a: None)
    method = PreferenceTokens(TokenTraining(image_encoder, text_encoder, (stage1.steps, 0), stage1.n_ref, args.seed),
                              with_tokens=False)
    method.model = trained["stage1"]  # scored the harness's way, trained above
    scores = evaluate.score(evaluate.predict(method, test, config["stage1"].n_ref, prompts), test)
    print(json.dumps({"seed": args.seed, "prompts": read_prompts, "train_seconds": round(time.perf_counter() - start),
                      **{users_: round(100 * s["1v1"], 2) for users_, s in scores.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
