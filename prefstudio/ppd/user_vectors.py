"""User embeddings for the adapter from the studio's own taste models, besides the VLM's.

    bank-posterior  weights [K] over the user bank's people, from how well each explains the
                    person's pairs (the cold-start mix of prefstudio.preference.user_embedding)
    fitted          the person's fitted linear taste over image features, w = P(u⁺ − u⁻)/σ [D]:
                    log-odds(z) = f(z)·w + const, comparable between people whatever taste
                    space their fit used

Both read (liked, disliked) image features of the person's pairs, from the bank's encoder.
"""
import torch

from prefstudio.errors import InvalidInput, NotFound, echo
from prefstudio.preference.user_embedding import UserBank, fit_user_embedding

SOURCES = ("vlm", "bank-posterior", "fitted")
SYNTHETIC = "synthetic one-hot: "  # adapter.json's user_embedding for PPD's one-hot reward users
FROM_FILE = "embeddings from "  # ... for embeddings read from an `embed-users` file ("vlm:<model>", ...)


def bank_posterior(bank: UserBank, liked: torch.Tensor, disliked: torch.Tensor) -> torch.Tensor:
    if liked.shape != disliked.shape or liked.ndim != 2 or not len(liked):
        raise InvalidInput("the bank posterior needs [N, D] liked and disliked features of at least one pair")
    return bank.posterior(bank.pair_log_likelihoods(liked, disliked).sum(0)).float()


def fitted_vector(bank: UserBank | None, encoder: str, liked: torch.Tensor, disliked: torch.Tensor) -> torch.Tensor:
    model = fit_user_embedding(liked, disliked, bank, encoder).model
    return ((model.projection @ (model.like_vector - model.dislike_vector)) / model.std).float()


def adapter_source(user_embedding: str) -> str:
    """Which of SOURCES (or "synthetic") an adapter was trained on, from its adapter.json."""
    if user_embedding.startswith(SYNTHETIC):
        return "synthetic"
    kind = user_embedding.removeprefix(FROM_FILE).partition(":")[0]
    if kind not in SOURCES:
        raise InvalidInput(f"the adapter's user_embedding {echo(user_embedding)} names none of "
                           f"{', '.join(SOURCES)}: retrain it with `python -m prefstudio_research.train.ppd train`")
    return kind


def profile_vector(store, profile: str, source: str) -> torch.Tensor:
    """The user embedding of a studio profile for an adapter trained on `source` embeddings:
    its stored VLM profile, or the bank posterior or fitted taste of its judged pairs, made as
    `embed-users` makes them for training users (same encoder, same bank)."""
    if source == "vlm":
        from prefstudio.ppd.profile_store import read_vlm_profile

        stored = read_vlm_profile(store, profile)
        if stored is None:
            raise NotFound(f"{profile} has no VLM profile yet: run `python -m prefstudio ppd profile {profile}` "
                           f"(docs/ppd.md)")
        return stored.embedding.float()
    if source not in SOURCES:
        raise InvalidInput(f"the user embedding source must be one of {', '.join(SOURCES)}, got {echo(source)}")
    from prefstudio.encoders.embedded import EmbeddedImageEncoder
    from prefstudio.preference.history_pairs import training_pairs
    from prefstudio.shipped import DEFAULT_BANK

    pairs = training_pairs(store.judgments(profile))
    if not pairs:
        raise InvalidInput(f"{profile} has no judged pair yet: pick the better of two, or 👍 one image and 👎 another")
    bank, encoder = UserBank.load(DEFAULT_BANK), EmbeddedImageEncoder()
    liked = encoder.encode_images([store.load_image(a) for a, _ in pairs]).float()
    disliked = encoder.encode_images([store.load_image(b) for _, b in pairs]).float()
    if source == "bank-posterior":
        return bank_posterior(bank, liked, disliked)
    return fitted_vector(bank, encoder.name, liked, disliked)
