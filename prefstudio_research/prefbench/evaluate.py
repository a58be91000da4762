"""Preference prediction: every method on the same pairs, then scored against the labels.

Two phases, kept apart on purpose. `predict` runs a method on feature tensors only and
returns its scores for every target; `score` compares scores with the recorded labels
and puts the Bayes ceiling (from the labeller's probabilities) next to them. Only
`ceiling` reads the oracle file, and it never sees a method.
"""
import statistics
import time
from dataclasses import dataclass, field

import torch

from prefstudio_research.prefbench.data import Split
from prefstudio_research.prefbench.methods import History, Method, ValidationUser
from prefstudio_research.prefbench.pairs import ceilings_1v1, ceilings_1v3
from prefstudio.eval.metrics import standard_error, top_k_hits

SUBSETS = ("all", "seen", "unseen")


@dataclass
class Predictions:
    n_ref: int
    scores_1v1: dict[str, torch.Tensor] = field(default_factory=dict)  # user -> [T, 2], liked first
    scores_1v3: dict[str, torch.Tensor] = field(default_factory=dict)  # user -> [G, 4], liked first
    fit_seconds: list[float] = field(default_factory=list)
    score_seconds: list[float] = field(default_factory=list)


class PromptFeatures:
    """Prompt text -> feature row lookup (None when no text features are cached)."""

    def __init__(self, features: torch.Tensor | None, rows: dict[str, int] | None):
        self.features, self.rows = features, rows

    def __call__(self, prompts: list[str]) -> torch.Tensor | None:
        if self.features is None:
            return None
        return self.features[[self.rows[p] for p in prompts]]


def history(split: Split, user: str, n_ref: int, prompts: PromptFeatures) -> History:
    refs = split.references[user][:n_ref]
    return History(split.features[refs[:, 0]], split.features[refs[:, 1]],
                   prompts(split.prompts[user]["references"][:n_ref]))


def training_histories(features: torch.Tensor, training: dict[str, torch.Tensor]) -> list[History]:
    return [History(features[rows[:, 0]], features[rows[:, 1]]) for _, rows in sorted(training.items())]


def validation_users(split: Split, n_ref: int, prompts: PromptFeatures) -> list[ValidationUser]:
    return [ValidationUser(history(split, u, n_ref, prompts),
                           split.features[split.targets_1v1[u][:, 0]],
                           split.features[split.targets_1v1[u][:, 1]]) for u in split.users]


def predict(method: Method, split: Split, n_ref: int, prompts: PromptFeatures) -> Predictions:
    """Scores of every target of every user of `split`, the method seeing only n_ref pairs."""
    out = Predictions(n_ref)
    for user in split.users:
        start = time.perf_counter()
        scorer = method.fit_user(history(split, user, n_ref, prompts))
        out.fit_seconds.append(time.perf_counter() - start)
        t11, t13 = split.targets_1v1[user], split.targets_1v3[user]
        rows = torch.cat([t11.reshape(-1), t13.reshape(-1)])
        # Each target image carries the prompt of its pair (1v1) or group (1v3).
        target_prompts = prompts([p for p in split.prompts[user]["1v1"] for _ in range(t11.shape[1])]
                                 + [p for p in split.prompts[user]["1v3"] for _ in range(t13.shape[1])])
        start = time.perf_counter()
        scores = scorer(split.features[rows], target_prompts).double().reshape(-1)
        out.score_seconds.append(time.perf_counter() - start)
        if scores.shape[0] != rows.shape[0]:
            raise ValueError(f"{method.name} returned {scores.shape[0]} scores for {rows.shape[0]} images")
        out.scores_1v1[user] = scores[: t11.numel()].reshape(t11.shape)
        out.scores_1v3[user] = scores[t11.numel():].reshape(t13.shape)
    return out


def _users_of(split: Split, subset: str) -> list[str]:
    if subset == "seen":
        return [u for u in split.users if u in split.seen]
    if subset == "unseen":
        return [u for u in split.users if u not in split.seen]
    return list(split.users)


def score(predictions: Predictions, split: Split) -> dict:
    """Top-K accuracies per subset of users, with their standard errors."""
    result = {}
    for subset in SUBSETS:
        users = _users_of(split, subset)
        if not users:
            continue
        s11 = torch.cat([predictions.scores_1v1[u] for u in users])
        s13 = torch.cat([predictions.scores_1v3[u] for u in users])
        top1 = float(top_k_hits(s11, 1).mean())
        row = {"1v1": top1, "1v1_se": standard_error(top1, s11.shape[0]), "n_1v1": s11.shape[0],
               "n_1v3": s13.shape[0]}
        for k in (1, 2, 3):
            row[f"1v3@{k}"] = float(top_k_hits(s13, k).mean())
        row["1v3@1_se"] = standard_error(row["1v3@1"], s13.shape[0])
        result[subset] = row
    return result


def ceiling(split: Split, oracle: dict) -> dict:
    """Bayes ceiling of each subset: expected accuracy of an oracle knowing the utilities."""
    p11, p13 = oracle[f"{split.name}_1v1"], oracle[f"{split.name}_1v3"]
    result = {}
    for subset in SUBSETS:
        users = _users_of(split, subset)
        if not users:
            continue
        c11 = ceilings_1v1([p for u in users for p in p11[u]])
        groups = [g for u in users for g in p13[u]]
        result[subset] = {"1v1": float(c11.mean()),
                          **{f"1v3@{k}": float(ceilings_1v3(groups, k).mean()) for k in (1, 2, 3)}}
    return result


def run_methods(methods: list[Method], train_users: list[History], val: Split, test: Split,
                n_refs: list[int], prompts: PromptFeatures, log=print) -> dict:
    """Train each method once, predict test targets for each N_ref (once for no-history methods).

    Returns {method name: {"predictions": {n_ref: Predictions}, "train_seconds": s, "method": m}}.
    """
    validation = validation_users(val, max(n_refs), prompts)
    out = {}
    for method in methods:
        start = time.perf_counter()
        method.train(train_users, validation)
        train_seconds = time.perf_counter() - start
        sweep = n_refs if method.uses_history else [0]
        predictions = {}
        for n_ref in sweep:
            predictions[n_ref] = predict(method, test, n_ref, prompts)
        fits = predictions[max(sweep)].fit_seconds
        log(f"  {method.name}: trained in {train_seconds:.1f} s, "
            f"fit per user {statistics.median(fits) * 1e3:.1f} ms (median)")
        out[method.name] = {"method": method, "predictions": predictions, "train_seconds": train_seconds}
    return out
