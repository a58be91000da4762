"""Speed of the lite preference-token model on this CPU (1 thread), medians of repeated runs.

    python bench/preference_tokens_speed.py [--checkpoint checkpoints/preference_tokens_lite]

Scoring: one person's history (N_ref = 8 pairs) is encoded once, then 1,000 targets are
scored against it in one batch (the acceptance bar is ≥ 1,000 targets/s). Also the time to
encode a history, one target alone, and one training step (64 pairs, N_ref = 8) of each
stage. Features are random with the real encoders' sizes: speed does not depend on them.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder  # noqa: E402
from prefstudio.preference.losses import preference_loss  # noqa: E402
from prefstudio.preference.tokens import (LiteConfig, LiteTokenModel, PairFeatures,  # noqa: E402
                                          TargetFeatures, load_token_model)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a lite checkpoint (default: the lite config's architecture, random)")
    parser.add_argument("--config", default="assets/preference_tokens/lite.json")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint:
        model = load_token_model(args.checkpoint)
    else:
        architecture = json.loads(Path(args.config).read_text())["model"]
        model = LiteTokenModel(LiteConfig(image_dim=EmbeddedImageEncoder.dim, text_dim=MiniLMTextEncoder.dim,
                                          **architecture))
        model.add_preference_tokens(10)
    c = model.config
    g = torch.Generator().manual_seed(0)

    def features(*shape, dim):
        return torch.randn(*shape, dim, generator=g)

    history = PairFeatures(features(8, dim=c.image_dim), features(8, dim=c.image_dim), features(8, dim=c.text_dim))
    targets = TargetFeatures(features(args.targets, dim=c.image_dim), features(args.targets, dim=c.text_dim))
    one = TargetFeatures(targets.images[:1], targets.prompts[:1])
    load_start = os.getloadavg()
    result = {"threads": torch.get_num_threads(), "width": c.width, "layers": c.layers,
              "preference_tokens": c.preference_tokens, "image_dim": c.image_dim, "text_dim": c.text_dim}
    model.eval()
    with torch.no_grad():
        prefix = model.encode_history(history)
        result["encode_history_ms"] = 1e3 * median_seconds(lambda: model.encode_history(history), args.repeats)
        batch_s = median_seconds(lambda: model.score_encoded(prefix, targets), args.repeats)
        result["score_batch_ms"] = 1e3 * batch_s
        result["targets_per_second"] = args.targets / batch_s
        result["history_plus_batch_targets_per_second"] = args.targets / median_seconds(
            lambda: model.score(history, targets), args.repeats)
        result["one_target_ms"] = 1e3 * median_seconds(lambda: model.score_encoded(prefix, one), args.repeats)

    model.train()
    batch = PairFeatures(features(64, 8, dim=c.image_dim), features(64, 8, dim=c.image_dim),
                         features(64, 8, dim=c.text_dim))
    pair = TargetFeatures(features(64, 2, dim=c.image_dim), features(64, 2, dim=c.text_dim))
    for stage in (1, 2):
        optimizer = torch.optim.AdamW(model.stage_parameters(stage), lr=1e-4)

        def step():
            m_like, m_dislike = model(batch, pair)
            loss = preference_loss(m_like[:, 0], m_dislike[:, 0], m_like[:, 1], m_dislike[:, 1]).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        result[f"stage{stage}_train_step_ms"] = 1e3 * median_seconds(step, args.repeats)
    result["load_average"] = {"start": load_start[0], "end": os.getloadavg()[0]}
    for key, value in result.items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    from prefstudio_research.report import machine, write_section

    command = "python bench/preference_tokens_speed.py " + " ".join(sys.argv[1:])
    write_section("preference_tokens_speed", "\n".join([
        "## Preference tokens, lite backbone: speed on CPU (issue 5)", "",
        f"Machine: {machine()}. torch threads: {result['threads']}. Load average (1 min) at the start / end: "
        f"{result['load_average']['start']:.2f} / {result['load_average']['end']:.2f} (above 1, other work shared "
        f"the 2 cores). Command: `{command.strip()}`",
        f"(model: width {c.width}, {c.layers} layers, L_p = {c.preference_tokens}, taste space {c.taste_dim or 'none'}; "
        f"random features of the real sizes, {c.image_dim}-d images and {c.text_dim}-d prompts).", "",
        f"| measure | median of {args.repeats} | target |", "|---|---|---|",
        f"| score {args.targets:,} targets against an encoded 8-pair history | {result['score_batch_ms']:.1f} ms = "
        f"**{result['targets_per_second']:,.0f} targets/s** | ≥ 1,000 targets/s |",
        f"| the same, encoding the history too | {result['history_plus_batch_targets_per_second']:,.0f} targets/s | |",
        f"| encode one 8-pair history | {result['encode_history_ms']:.2f} ms | |",
        f"| score one target alone | {result['one_target_ms']:.2f} ms | |",
        f"| training step, 64 histories × 1 target pair: stage 1 / stage 2 | {result['stage1_train_step_ms']:.0f} ms / "
        f"{result['stage2_train_step_ms']:.0f} ms | |",
        "", "Training the shipped checkpoint on PrefBench's 1,000 training users (< 10 minutes): the commands and wall "
        "times in [checkpoints/preference_tokens_lite/README.md](../checkpoints/preference_tokens_lite/README.md)."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
