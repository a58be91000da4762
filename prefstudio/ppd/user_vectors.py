"""User embeddings for the adapter from the studio's own taste models, besides the VLM's.

    bank-posterior  weights [K] over the user bank's people, from how well each explains the
                    person's pairs (the cold-start mix of prefstudio.preference.user_embedding)
    fitted          the person's fitted linear taste over image features, w = P(u⁺ − u⁻)/σ [D]:
                    log-odds(z) = f(z)·w + const, comparable between people whatever taste
                    space their fit used

Both read (liked, disliked) image features of the person's pairs, from the bank's encoder.
"""
import torch

from prefstudio.errors import InvalidInput
from prefstudio.preference.user_embedding import UserBank, fit_user_embedding

SOURCES = ("vlm", "bank-posterior", "fitted")


def bank_posterior(bank: UserBank, liked: torch.Tensor, disliked: torch.Tensor) -> torch.Tensor:
    if liked.shape != disliked.shape or liked.ndim != 2 or not len(liked):
        raise InvalidInput("the bank posterior needs [N, D] liked and disliked features of at least one pair")
    return bank.posterior(bank.pair_log_likelihoods(liked, disliked).sum(0)).float()


def fitted_vector(bank: UserBank | None, encoder: str, liked: torch.Tensor, disliked: torch.Tensor) -> torch.Tensor:
    model = fit_user_embedding(liked, disliked, bank, encoder).model
    return ((model.projection @ (model.like_vector - model.dislike_vector)) / model.std).float()
