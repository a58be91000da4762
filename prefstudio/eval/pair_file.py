"""Pairwise accuracy of a preference model on a pair data set file.

Protocol (000 Table 1, per user): the user's first N_ref pairs in file order are the
history the model fits or reads; every later pair of that user is a 1-liked-vs-1-disliked
target, scored top-1 (the liked image must get the higher log-odds). Users with no pair
beyond their history are skipped and counted. The model is the one the studio serves
(`PreferenceModel`), so this measures what a person gets.
"""
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.eval.metrics import standard_error, top_k_accuracy
from prefstudio.preference.model import JudgedPairs, PreferenceModel
from prefstudio.preference.pair_data import by_user, read_judgments
from prefstudio.store.image_files import load_untrusted_image


def evaluate_pair_file(path: str | Path, n_ref: int, encoder, model: PreferenceModel) -> dict:
    if not 1 <= n_ref <= 1000:
        raise InvalidInput(f"--n-ref must lie in [1, 1000], got {n_ref}")
    users = by_user(read_judgments(path))
    images = sorted({p for js in users.values() for j in js for p in (j.liked, j.disliked)})
    index = {str(p): i for i, p in enumerate(images)}
    features = encoder.encode_images([_image(p) for p in images])
    prompt_of = {str(p): j.prompt or "" for js in users.values() for j in js for p in (j.liked, j.disliked)}
    scores, skipped = [], []
    for user, judgments in users.items():
        history, targets = judgments[:n_ref], judgments[n_ref:]
        if not targets:
            skipped.append(user)
            continue
        judged = JudgedPairs([(str(j.liked), str(j.disliked)) for j in history],
                             lambda ids: features[[index[i] for i in ids]],
                             lambda ids: [prompt_of[i] for i in ids])
        taste, _ = model.fit(judged)
        with torch.no_grad():
            liked = [str(j.liked) for j in targets]
            disliked = [str(j.disliked) for j in targets]
            pos = taste.log_odds(features[[index[i] for i in liked]],
                                 taste.prompt_context([prompt_of[i] for i in liked]))
            neg = taste.log_odds(features[[index[i] for i in disliked]],
                                 taste.prompt_context([prompt_of[i] for i in disliked]))
        scores.append(torch.stack([pos, neg], dim=1))
    if not scores:
        raise InvalidInput(f"{path}: no user has more than {n_ref} pairs, so nothing is left to evaluate")
    scores = torch.cat(scores)
    accuracy = top_k_accuracy(scores, 1)
    return {
        "protocol": f"per user: first {n_ref} pairs = history, later pairs = 1 liked vs 1 disliked targets; "
                    f"top-1 accuracy; preference model {model.name}",
        "top1_1v1": round(accuracy, 4),
        "standard_error": round(standard_error(accuracy, len(scores)), 4),
        "targets": len(scores),
        "users": len(users) - len(skipped),
        "users_skipped": len(skipped),
        "encoder": encoder.name,
        "preference_model": model.name,
    }


def _image(path: Path):
    try:
        return load_untrusted_image(path)
    except InvalidInput as error:  # which of the file's images, as import-pairs says
        raise InvalidInput(f"{path}: {error}") from None
