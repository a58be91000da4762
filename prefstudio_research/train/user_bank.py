"""Builds the cold-start user bank the studio ships (checkpoints/user_bank_embedded.safetensors).

    python -m prefstudio_research.train.user_bank --out checkpoints/user_bank_embedded.safetensors

The bank's users are a simulated population (prefstudio.eval.simulated_users.sample_population):
common + archetype + personal tastes over the taste families people have — colour, light,
contrast, detail, composition (subject affinities play no part: every pair shows one
prompt) — some leaning on one family, others on a mixture. They judge same-prompt pairs of
embedded-generator images (the images the studio shows) by Bradley–Terry draws at one
temperature for everybody, set so that an oracle would agree with 85 % of the labels; the bank learns the shared taste space and
every user's vectors (prefstudio.preference.user_embedding.train_user_bank). A real person's
short history is then a mix of these users, each weighted by how well it explains the
person's judgments.

For another image encoder (CLIP: `--image-encoder clip`), one command builds a bank in its
feature space from any folder of images, judged by the same simulated population:

    python -m prefstudio --model sd-turbo --image-encoder clip bank --images ~/Pictures/some-folder
"""
import argparse
import itertools
import time
from pathlib import Path

import torch

from prefstudio.eval.simulated_users import (
    ATTRIBUTES, FAMILIES, bayes_accuracy, calibrate_temperature, image_attributes, sample_population,
)
from prefstudio.preference.user_embedding import UserBank, train_user_bank

REPO_ROOT = Path(__file__).resolve().parents[2]
CEILING = 0.85  # an oracle's agreement with the bank users' labels, as in PrefBench


def build_bank(n_users: int, n_prompts: int, seeds_per_prompt: int, pairs_per_user: int, seed: int,
               command: str):
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
    source = (f"{command}: {labelling}, same-prompt pairs over {len(pixels)} embedded-generator images "
              f"of {len(prompts)} prompts")
    return train_user_bank(users, encoder.name, source)


def simulated_judgments(pixels: torch.Tensor, features: torch.Tensor, candidate_pairs: list[tuple[int, int]],
                        n_users: int, pairs_per_user: int, seed: int
                        ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """The benchmark's simulated population judges pairs of these images: per user, the
    (liked, disliked) features of `pairs_per_user` pairs drawn from `candidate_pairs`, labelled
    by Bradley–Terry draws from the user's hidden utility of the pixels' attributes, at one
    temperature set so that an oracle agrees with `CEILING` of the labels. Also says how."""
    attributes = image_attributes(pixels)
    spread = {name: float(values.std()) for name, values in attributes.items()}
    population = sample_population([f"bank-{u}" for u in range(n_users)], seed, categories=[],
                                   attribute_spread=spread)
    rng = torch.Generator().manual_seed(seed)
    chosen = [torch.randperm(len(candidate_pairs), generator=rng)[:pairs_per_user].tolist() for _ in range(n_users)]
    utilities = [person.utility_from_attributes(attributes).double() for person in population.users]
    gaps = torch.cat([u[[candidate_pairs[i][0] for i in c]] - u[[candidate_pairs[i][1] for i in c]]
                      for u, c in zip(utilities, chosen)])
    temperature = calibrate_temperature(gaps, CEILING)
    users = []
    for person, utility, pairs in zip(population.users, utilities, chosen):
        person.temperature = temperature
        liked, disliked = [], []
        for index in pairs:
            a, b = candidate_pairs[index]
            if not person.prefers_first(float(utility[a]), float(utility[b]), rng):
                a, b = b, a
            liked.append(a)
            disliked.append(b)
        users.append((features[liked], features[disliked]))
    how = (f"{n_users} simulated users (sample_population: tastes over the families "
           f"{', '.join(f for f in FAMILIES if FAMILIES[f])}; attributes {', '.join(ATTRIBUTES)}), "
           f"{pairs_per_user} pairs each, seed {seed}, labeller ceiling "
           f"{float(bayes_accuracy(gaps, temperature)):.2f}")
    return users, how


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MIN_FOLDER_IMAGES = 8
MAX_FOLDER_IMAGES = 1000  # all pairs of them are candidates: half a million
ATTRIBUTE_SIDE = 256  # images are judged at one size, so attributes such as fine detail compare


def build_bank_from_images(folder: str | Path, encoder, n_users: int = 96, pairs_per_user: int = 48,
                           seed: int = 0, command: str = "") -> UserBank:
    """A cold-start user bank in `encoder`'s feature space from any folder of images: the
    simulated population judges random pairs of them (`simulated_judgments`), and the bank
    learns from those judgments over the encoder's features. Every file is read as untrusted
    data (size, pixel and format checks)."""
    import torch.nn.functional as F

    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.errors import InvalidInput, NotFound
    from prefstudio.store.image_files import load_untrusted_image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotFound(f"no folder of images at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < MIN_FOLDER_IMAGES:
        raise InvalidInput(f"{folder} holds {len(files)} images; a user bank needs at least {MIN_FOLDER_IMAGES}")
    if len(files) > MAX_FOLDER_IMAGES:
        raise InvalidInput(f"{folder} holds {len(files)} images; at most {MAX_FOLDER_IMAGES} are read")
    if not 2 <= n_users <= 1000 or not 1 <= pairs_per_user <= 1000:
        raise InvalidInput("a bank takes 2–1000 users and 1–1000 pairs per user")
    images = []
    for path in files:
        try:
            image = load_untrusted_image(path)
        except InvalidInput as error:
            raise InvalidInput(f"{path}: {error}") from None
        image.thumbnail((2 * ATTRIBUTE_SIDE, 2 * ATTRIBUTE_SIDE))  # encoders read 224-512 px; keeps memory bounded
        images.append(image)
    with torch.no_grad():
        features = encoder.encode_images(images)
        pixels = torch.cat([F.interpolate(pil_to_tensor([image]), (ATTRIBUTE_SIDE, ATTRIBUTE_SIDE), mode="bilinear",
                                          antialias=True, align_corners=False) for image in images])
    pairs = list(itertools.combinations(range(len(images)), 2))
    users, labelling = simulated_judgments(pixels, features, pairs, n_users, pairs_per_user, seed)
    source = (f"{command or 'build_bank_from_images'}: {labelling}, random pairs of {len(images)} images "
              f"from {folder.name}")
    return train_user_bank(users, encoder.name, source)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "checkpoints" / "user_bank_embedded.safetensors")
    parser.add_argument("--users", type=int, default=96)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds-per-prompt", type=int, default=8)
    parser.add_argument("--pairs-per-user", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    command = ("python -m prefstudio_research.train.user_bank " + f"--users {args.users} --prompts {args.prompts} "
               f"--seeds-per-prompt {args.seeds_per_prompt} --pairs-per-user {args.pairs_per_user} --seed {args.seed}")
    bank = build_bank(args.users, args.prompts, args.seeds_per_prompt, args.pairs_per_user, args.seed, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bank.save(args.out)
    print(f"wrote {args.out} ({bank.n_users} users, taste space {bank.projection.shape[1]}-d) "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
