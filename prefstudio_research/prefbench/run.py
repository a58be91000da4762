"""PrefBench in one command: data set, preference prediction, personalized generation, speed.

    python bench/run_benchmark.py            # full: writes docs/benchmark_results.md (+ PNGs in docs/images/)
    python bench/run_benchmark.py --tiny     # CI smoke version: a few users and images, < 1 min

The first full run installs Debian's openclipart-png (apt), renders and encodes the
drawings into data/bench/ (a few minutes); later runs reuse that cache. Everything is
reproducible from --seed. See bench/README.md for the data set and protocol.
"""
import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prefstudio_research.prefbench import evaluate, generation, report, speed  # noqa: E402
from prefstudio_research.prefbench.clipart import build_image_pool, read_image_pool  # noqa: E402
from prefstudio_research.prefbench.data import load_split, load_text_features, load_training  # noqa: E402
from prefstudio_research.prefbench.features import cache_attributes, cache_image_features, cache_text_features  # noqa: E402
from prefstudio_research.prefbench.methods import PreferenceTokens, UserEmbedding, all_methods  # noqa: E402
from prefstudio_research.prefbench.pairs import (  # noqa: E402
    PairConfig, build_pairs, is_built, read_archetypes, read_hidden_users, read_oracle,
)
from prefstudio_research.prefbench.reference_points import reference_points  # noqa: E402
from prefstudio.eval.simulated_users import TasteMix  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunConfig:
    name: str
    per_subject: int
    categories: tuple[str, ...] | None
    pairs: PairConfig
    n_refs: tuple[int, ...]
    generation_users: int  # per seen/unseen half
    generation_prompts: int
    guidance_iterations: int
    speed_histories: tuple[int, ...]
    speed_pools: tuple[int, ...]
    speed_repeats: int
    speed_guidance_iterations: int
    token_steps: tuple[int, int]  # preference-token model: stage-1 and stage-2 steps
    token_n_ref: int  # ... and the history length it trains on


FULL = RunConfig(
    name="full", per_subject=60, categories=None, pairs=PairConfig(), n_refs=(1, 2, 4, 8, 16, 32),
    generation_users=8, generation_prompts=3, guidance_iterations=30,
    speed_histories=(8, 32, 128, 512, 1000), speed_pools=(100, 1000, 10000), speed_repeats=5,
    speed_guidance_iterations=10, token_steps=(3000, 1500), token_n_ref=8,
)
TINY = RunConfig(
    name="tiny", per_subject=10, categories=("animals", "food"),
    pairs=PairConfig(n_train_users=8, train_pairs_per_user=6, n_val_users=3, n_seen=2, n_unseen=3,
                     n_ref=2, n_1v1=2, n_1v3=1, mix=TasteMix(n_archetypes=2)),
    n_refs=(1, 2), generation_users=1, generation_prompts=1, guidance_iterations=3,
    speed_histories=(8, 32), speed_pools=(100, 1000), speed_repeats=2, speed_guidance_iterations=2,
    token_steps=(20, 10), token_n_ref=2,
)


class Stopwatch:
    """Wall and CPU seconds of each phase: on a shared machine they differ, and both are reported."""

    def __init__(self):
        self.phases: dict[str, dict[str, float]] = {}

    @contextmanager
    def phase(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.phases[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def build_data(cache: Path, config: RunConfig, seed: int, image_encoder, text_encoder, clock, log):
    """Render, encode and judge — each step skipped when its cached output matches."""
    pool_key = json.loads(json.dumps({"seed": seed, "per_subject": config.per_subject,
                                      "categories": config.categories}))
    pool_file = cache / "pool.json"
    with clock.phase("render images"):
        if pool_file.exists() and json.loads(pool_file.read_text()) == pool_key and (cache / "images.jsonl").exists():
            drawings = read_image_pool(cache)
        else:
            log("rendering openclipart drawings")
            drawings = build_image_pool(cache, seed, config.per_subject,
                                        list(config.categories) if config.categories else None, log)
            pool_file.write_text(json.dumps(pool_key))
    with clock.phase("encode images"):
        log(f"encoding {len(drawings)} images ({image_encoder.name})")
        cache_image_features(cache, drawings, image_encoder, log)
    with clock.phase("encode prompts, attributes"):
        cache_text_features(cache, drawings, text_encoder)
        attributes = cache_attributes(cache, drawings)
    with clock.phase("users and pairs"):
        pair_config = replace(config.pairs, seed=seed)
        if not is_built(cache, pair_config):
            log("simulated users judging pairs")
            build_pairs(cache, drawings, attributes, pair_config, log)
    return drawings, attributes


def personalized_generation(test, bank, image_encoder, config: RunConfig, seed: int, log):
    """Guided images for test users (half seen, half unseen), then judged by their hidden utilities."""
    from prefstudio.generators.embedded import EmbeddedGenerator
    from prefstudio.preference.user_embedding import fit_user_embedding
    from prefstudio.rewards.prompt_consistency import PromptConsistencyReward

    generator = EmbeddedGenerator(resolution=256)
    consistency = PromptConsistencyReward(generator, image_encoder)
    prompt_list = [p.strip() for p in (REPO / "assets" / "prompts.txt").read_text().splitlines() if p.strip()]
    step = max(1, len(prompt_list) // config.generation_prompts)
    prompts = prompt_list[::step][: config.generation_prompts]
    seen = [u for u in test.users if u in test.seen][: config.generation_users]
    unseen = [u for u in test.users if u not in test.seen][: config.generation_users]
    sets = []
    for i, user in enumerate(seen + unseen):
        refs = test.references[user][: config.pairs.n_ref]
        liked, disliked = test.features[refs[:, 0]], test.features[refs[:, 1]]
        model = fit_user_embedding(liked, disliked, bank, image_encoder.name).model
        sets += generation.personalize(generator, image_encoder, consistency, user, model,
                                       torch.cat([liked, disliked]), prompts, seed=1000 + i,
                                       iterations=config.guidance_iterations)
        log(f"  personalized {len(sets)}/{len(prompts) * (len(seen) + len(unseen))} images")
    return generator, prompts, sets, consistency


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CI smoke version (a few users and images)")
    parser.add_argument("--cache", type=Path, help="data folder (default data/bench, or data/bench-tiny with --tiny)")
    parser.add_argument("--out", type=Path, help="report to write (default docs/benchmark_results.md; "
                                                 "with --tiny, benchmark_results.md in the cache folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = TINY if args.tiny else FULL
    cache = args.cache or REPO / ("data/bench-tiny" if args.tiny else "data/bench")
    out = args.out or (cache / "benchmark_results.md" if args.tiny else REPO / "docs" / "benchmark_results.md")
    suffix = "_tiny" if args.tiny else ""
    images_dir = out.parent / "images"
    cache.mkdir(parents=True, exist_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    load_start = os.getloadavg()
    commit = report.git_commit()  # the code that runs: the tree may move on during a long run
    log = lambda *a: print(*a, flush=True)  # noqa: E731

    from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder

    with clock.phase("total"):
        image_encoder, text_encoder = EmbeddedImageEncoder(), MiniLMTextEncoder()
        drawings, attributes = build_data(cache, config, args.seed, image_encoder, text_encoder, clock, log)

        # Preference prediction: methods see features and judgments only.
        with clock.phase("preference methods"):
            val = load_split(cache, "val", image_encoder.name)
            test = load_split(cache, "test", image_encoder.name)
            training = load_training(cache)
            train_users = evaluate.training_histories(test.features, training)
            text_features, text_rows = load_text_features(cache, text_encoder.name)
            prompts = evaluate.PromptFeatures(text_features, text_rows)
            methods = all_methods(image_encoder.name, text_encoder.name, args.seed, config.token_steps,
                                  config.token_n_ref)
            runs = evaluate.run_methods(methods, train_users, val, test, list(config.n_refs), prompts, log)

        # Judged against the labels and the oracle; no method involved.
        ceiling = evaluate.ceiling(test, read_oracle(cache))
        scores = {name: {n: evaluate.score(p, test) for n, p in run["predictions"].items()}
                  for name, run in runs.items()}
        hidden = read_hidden_users(cache)
        train_pool = torch.tensor([i for i, d in enumerate(drawings) if d.split == "train"])
        points = reference_points(test, hidden, read_archetypes(cache), attributes,
                                  [d.subject for d in drawings], train_pool)

        bank = next(m for m in methods if isinstance(m, UserEmbedding) and m.with_bank and m.contrastive).bank
        with clock.phase("personalized generation"):
            generator, gen_prompts, sets, consistency = personalized_generation(
                test, bank, image_encoder, config, args.seed, log)
            judged = {"all": generation.judge(sets, hidden, image_encoder, consistency),
                      "seen": generation.judge([s for s in sets if s.user in test.seen], hidden,
                                               image_encoder, consistency),
                      "unseen": generation.judge([s for s in sets if s.user not in test.seen], hidden,
                                                 image_encoder, consistency)}
            generation.contact_sheet(sets[:6], images_dir / f"benchmark_generation{suffix}.png")

        with clock.phase("speed and scaling"):
            all_train_rows = torch.cat([rows for _, rows in sorted(training.items())])
            speed_rows = speed.measure(test.features, all_train_rows, bank, image_encoder, generator,
                                       list(config.speed_histories), list(config.speed_pools),
                                       config.speed_repeats, config.speed_guidance_iterations, log=log)
            tokens = next(m for m in methods if isinstance(m, PreferenceTokens))
            speed_rows += tokens.speed(test.features, all_train_rows, text_features[:1],
                                       list(config.speed_histories), list(config.speed_pools),
                                       config.speed_repeats)

    speed.plot(speed_rows, images_dir / f"benchmark_speed{suffix}.png")
    sweep = {name: {n: s[n]["unseen"]["1v1"] for n in s} for name, s in scores.items()
             if runs[name]["method"].uses_history}
    generic = max(s[0]["unseen"]["1v1"] for name, s in scores.items() if not runs[name]["method"].uses_history)
    report.nref_plot(sweep, ceiling["unseen"]["1v1"], generic, images_dir / f"benchmark_nref{suffix}.png")
    render_report = json.loads((cache / "render_report.json").read_text())
    results = {
        "config": config.name, "seed": args.seed,
        "command": " ".join(["python bench/run_benchmark.py"] + list(sys.argv[1:] if argv is None else argv)),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(), "torch_threads": torch.get_num_threads(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "commit": commit,
        "render_report": {k: v for k, v in render_report.items() if k != "refusals"},
        "refusal_reasons": report.refusal_summary(render_report),
        "data": report.data_summary(cache, test, training),
        "methods": {name: {"description": run["method"].description, "uses_history": run["method"].uses_history,
                           "train_seconds": run["train_seconds"], "training_note": run["method"].training_note,
                           "fit_ms_median": 1e3 * report.median(run["predictions"][max(run["predictions"])].fit_seconds)}
                    for name, run in runs.items()},
        "scores": scores, "ceiling": ceiling, "reference_points": points,
        "generation": {"prompts": gen_prompts, "iterations": config.guidance_iterations,
                       "best_of": generation.BEST_OF, "judged": judged},
        "speed": speed_rows, "timings": clock.phases, "n_refs": list(config.n_refs),
        "images": {"nref": f"images/benchmark_nref{suffix}.png", "speed": f"images/benchmark_speed{suffix}.png",
                   "generation": f"images/benchmark_generation{suffix}.png"},
    }
    (cache / f"results{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    out.write_text(report.render_markdown(results))
    if not args.tiny:  # the headline numbers go to docs/benchmarks.md next to the other benchmarks
        from prefstudio_research.report import write_section

        write_section("prefbench", report.summary_markdown(results, out.name))
    log(f"wrote {out} in {clock.phases['total']['wall']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
