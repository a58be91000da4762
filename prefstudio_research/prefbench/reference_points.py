"""Reference points that read the hidden utilities: not methods, bounds that explain the gaps.

- taste-cluster oracle: scores an image by the mean (temperature-scaled) utility of the
  training users of the person's own archetype — what perfect knowledge of "which kind of
  person is this" gives, without anything personal;
- feature oracle: a ridge regression of the person's true utility on the image features,
  fitted on every train-pool image — the best a method that scores linearly in these
  features could do with unlimited judgments (labeller noise aside).
Both sit between the generic baseline and the Bayes ceiling; where the best method lands
between them says whether the encoder, the history length or the model limits it.
"""
import torch

from prefstudio_research.prefbench.data import Split
from prefstudio.eval.metrics import top_k_hits
from prefstudio.eval.simulated_users import SimulatedUser


def _accuracy(split: Split, users: list[str], score_of: dict[str, torch.Tensor]) -> dict:
    s11 = torch.cat([score_of[u][split.targets_1v1[u]] for u in users])
    s13 = torch.cat([score_of[u][split.targets_1v3[u]] for u in users])
    return {"1v1": float(top_k_hits(s11, 1).mean()),
            **{f"1v3@{k}": float(top_k_hits(s13, k).mean()) for k in (1, 2, 3)}}


def reference_points(split: Split, hidden: dict[str, SimulatedUser], archetype: dict[str, int],
                     attributes: dict[str, torch.Tensor], subjects: list[str],
                     train_rows: torch.Tensor, ridge: float = 100.0) -> dict[str, dict]:
    """{point name: {subset: {"1v1": acc, "1v3@k": acc}}} for subsets all/seen/unseen."""
    utilities = {u: user.utility_from_attributes(attributes, subjects).double() / user.temperature
                 for u, user in hidden.items()}
    train_users = [u for u in hidden if u.startswith("train")]
    cluster = {}
    for u in split.users:
        peers = [v for v in train_users if archetype[v] == archetype[u] and v != u]
        cluster[u] = torch.stack([utilities[v] for v in peers]).mean(0)

    x = split.features.double()
    mean, std = x[train_rows].mean(0), x[train_rows].std(0).clamp_min(1e-4)
    z = (x - mean) / std
    a = z[train_rows]
    solve = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T)
    probe = {u: z @ (solve @ utilities[u][train_rows]) for u in split.users}

    out = {}
    for name, scores in (("taste-cluster oracle", cluster), ("feature oracle (linear)", probe)):
        out[name] = {}
        for subset, users in (("all", split.users), ("seen", [u for u in split.users if u in split.seen]),
                              ("unseen", [u for u in split.users if u not in split.seen])):
            if users:
                out[name][subset] = _accuracy(split, users, scores)
    return out
