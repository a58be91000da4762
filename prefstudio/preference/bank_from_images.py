"""A cold-start user bank in any image encoder's feature space, built from a folder of images.

    python -m prefstudio --model sd-turbo --image-encoder clip bank --images ~/Pictures/some-folder

The benchmark's simulated population (prefstudio.eval.simulated_users) judges random pairs of
the images by their hidden utilities; the bank learns the shared taste space and every
simulated user's vectors over the encoder's features (train_user_bank). The shipped bank for
the embedded encoder is built the same way by prefstudio_research.train.user_bank.
"""
import itertools
from pathlib import Path

import torch

from prefstudio.eval.simulated_users import (
    ATTRIBUTES, FAMILIES, bayes_accuracy, calibrate_temperature, image_attributes, sample_population,
)
from prefstudio.preference.user_embedding import UserBank, train_user_bank

CEILING = 0.85  # an oracle's agreement with the bank users' labels, as in PrefBench


def simulated_choices(pixels: torch.Tensor, candidate_pairs: list[tuple[int, int]], n_users: int,
                      pairs_per_user: int, seed: int, id_prefix: str = "bank-"
                      ) -> tuple[list[tuple[list[int], list[int]]], str]:
    """The benchmark's simulated population judges pairs of these images: per user, the
    (liked, disliked) image indices of `pairs_per_user` pairs drawn from `candidate_pairs`,
    labelled by Bradley–Terry draws from the user's hidden utility of the pixels' attributes,
    at one temperature set so that an oracle agrees with `CEILING` of the labels. Also says how."""
    attributes = image_attributes(pixels)
    spread = {name: float(values.std()) for name, values in attributes.items()}
    population = sample_population([f"{id_prefix}{u}" for u in range(n_users)], seed, categories=[],
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
        users.append((liked, disliked))
    how = (f"{n_users} simulated users (sample_population: tastes over the families "
           f"{', '.join(f for f in FAMILIES if FAMILIES[f])}; attributes {', '.join(ATTRIBUTES)}), "
           f"{pairs_per_user} pairs each, seed {seed}, labeller ceiling "
           f"{float(bayes_accuracy(gaps, temperature)):.2f}")
    return users, how


def simulated_judgments(pixels: torch.Tensor, features: torch.Tensor, candidate_pairs: list[tuple[int, int]],
                        n_users: int, pairs_per_user: int, seed: int
                        ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """`simulated_choices` as the (liked, disliked) features of each user's pairs."""
    users, how = simulated_choices(pixels, candidate_pairs, n_users, pairs_per_user, seed)
    return [(features[liked], features[disliked]) for liked, disliked in users], how


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
