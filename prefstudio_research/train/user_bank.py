"""Builds the cold-start user bank the studio ships (checkpoints/user_bank_embedded.safetensors).

    python -m prefstudio_research.train.user_bank --users 1000 --prefbench-data data/bench

The bank's users are a simulated population (prefstudio.eval.simulated_users.sample_population):
common + archetype + personal tastes over the taste families people have — colour, light,
contrast, detail, composition (subject affinities play no part: every pair shows one
prompt) — some leaning on one family, others on a mixture. They judge same-prompt pairs of
embedded-generator images (the images the studio shows) by Bradley–Terry draws at one
temperature for everybody, set so that an oracle would agree with 85 % of the labels; the bank learns the shared taste space and
every user's vectors (prefstudio.preference.user_embedding.train_user_bank). A real person's
short history is then a mix of these users, each weighted by how well it explains the
person's judgments.

With `--prefbench-data`, PrefBench's training users (their judgments of clip-art drawings, from
a data folder `bench/run_benchmark.py` built) join them in one taste space: people who judge
two kinds of pictures. Never its validation or test users.

For another image encoder (CLIP: `--image-encoder clip`) the studio itself builds a bank in
its feature space from any folder of images, judged by the same simulated population
(prefstudio.preference.bank_from_images).
"""
import argparse
import itertools
import time
from pathlib import Path

import torch

from prefstudio.preference.bank_from_images import simulated_judgments
from prefstudio.preference.user_embedding import train_user_bank

REPO_ROOT = Path(__file__).resolve().parents[2]


def studio_users(n_users: int, n_prompts: int, seeds_per_prompt: int, pairs_per_user: int, seed: int):
    """Simulated people judging same-prompt pairs of embedded-generator images:
    ([(liked, disliked) features per user], the encoder's name, how they were made)."""
    from prefstudio.encoders.embedded import EmbeddedImageEncoder, MiniLMTextEncoder
    from prefstudio.generators.embedded import EmbeddedGenerator

    prompts = [p.strip() for p in (REPO_ROOT / "assets" / "prompts.txt").read_text().splitlines() if p.strip()]
    prompts = prompts[:n_prompts]
    generator = EmbeddedGenerator(resolution=256, text_encoder=MiniLMTextEncoder())
    encoder = EmbeddedImageEncoder()
    pixels, features, prompt_of = [], [], []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            conditioning = generator.encode_prompt(prompt)
            noise = torch.cat([generator.initial_noise(1_000_000 + i * 1000 + s) for s in range(seeds_per_prompt)])
            images = generator.render(noise, conditioning)
            # Quantise as stored PNGs are, so the bank sees what the studio will encode.
            images = (images * 255).round() / 255
            pixels.append(images)
            features.append(encoder.encode(images))
            prompt_of += [i] * seeds_per_prompt
    pixels, features = torch.cat(pixels), torch.cat(features)
    prompt_of = torch.tensor(prompt_of)
    same_prompt = [(a, b) for i in range(len(prompts))
                   for a, b in itertools.combinations((prompt_of == i).nonzero().flatten().tolist(), 2)]

    users, labelling = simulated_judgments(pixels, features, same_prompt, n_users, pairs_per_user, seed)
    return users, encoder.name, (f"{labelling}, same-prompt pairs over {len(pixels)} embedded-generator images "
                                 f"of {len(prompts)} prompts")


def prefbench_training_users(data: Path, encoder: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    from prefstudio_research.prefbench.data import load_features, load_training

    features = load_features(data, encoder)
    users = [(features[rows[:, 0]], features[rows[:, 1]]) for rows in load_training(data).values()]
    return users, f"and PrefBench's {len(users)} training users of {data.name} judging its clip-art drawings"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "checkpoints" / "user_bank_embedded.safetensors")
    parser.add_argument("--users", type=int, default=96)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds-per-prompt", type=int, default=8)
    parser.add_argument("--pairs-per-user", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefbench-data", type=Path, help="add PrefBench's training users from this data folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    command = ("python -m prefstudio_research.train.user_bank " + f"--users {args.users} --prompts {args.prompts} "
               f"--seeds-per-prompt {args.seeds_per_prompt} --pairs-per-user {args.pairs_per_user} --seed {args.seed}"
               + (f" --prefbench-data {args.prefbench_data}" if args.prefbench_data else ""))
    users, encoder, source = studio_users(args.users, args.prompts, args.seeds_per_prompt, args.pairs_per_user,
                                          args.seed)
    if args.prefbench_data:
        more, described = prefbench_training_users(args.prefbench_data, encoder)
        users, source = more + users, f"{source}; {described}"
    bank = train_user_bank(users, encoder, f"{command}: {source}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bank.save(args.out)
    print(f"wrote {args.out} ({bank.n_users} users, taste space {bank.projection.shape[1]}-d) "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
