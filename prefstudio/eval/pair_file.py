"""Pairwise accuracy of the fitted user embedding on a pair data set file.

Protocol (000 Table 1, per user): the user's first N_ref pairs in file order are the
history the model is fitted on; every later pair of that user is a 1-liked-vs-1-disliked
target, scored top-1 (the liked image must get the higher Q). Users with no pair beyond
their history are skipped and counted.
"""
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.eval.metrics import standard_error, top_k_accuracy
from prefstudio.preference.pair_data import by_user, read_judgments
from prefstudio.preference.user_embedding import fit_user_embedding
from prefstudio.store.image_files import load_untrusted_image


def evaluate_pair_file(path: str | Path, n_ref: int, encoder, bank=None, contrastive: bool = True) -> dict:
    if not 1 <= n_ref <= 1000:
        raise InvalidInput(f"--n-ref must lie in [1, 1000], got {n_ref}")
    users = by_user(read_judgments(path))
    images = sorted({p for js in users.values() for j in js for p in (j.liked, j.disliked)})
    index = {p: i for i, p in enumerate(images)}
    features = encoder.encode_images([load_untrusted_image(p) for p in images])
    scores, skipped = [], []
    for user, judgments in users.items():
        history, targets = judgments[:n_ref], judgments[n_ref:]
        if not targets:
            skipped.append(user)
            continue
        liked = features[[index[j.liked] for j in history]]
        disliked = features[[index[j.disliked] for j in history]]
        model = fit_user_embedding(liked, disliked, bank, encoder.name, contrastive=contrastive).model
        with torch.no_grad():
            pos = model.log_odds(features[[index[j.liked] for j in targets]])
            neg = model.log_odds(features[[index[j.disliked] for j in targets]])
        scores.append(torch.stack([pos, neg], dim=1))
    if not scores:
        raise InvalidInput(f"{path}: no user has more than {n_ref} pairs, so nothing is left to evaluate")
    scores = torch.cat(scores)
    accuracy = top_k_accuracy(scores, 1)
    return {
        "protocol": f"per user: first {n_ref} pairs = history, later pairs = 1 liked vs 1 disliked targets; "
                    f"top-1 accuracy; loss {'L_base + L_CP' if contrastive else 'L_base'}; "
                    f"{'bank cold start' if bank is not None else 'fit from scratch'}",
        "top1_1v1": accuracy,
        "standard_error": standard_error(accuracy, len(scores)),
        "targets": len(scores),
        "users": len(users) - len(skipped),
        "users_skipped": len(skipped),
        "encoder": encoder.name,
    }
