"""Reading the per-target scores `bench/studio_models.py` saves: which history lengths a file
holds, 1v1 top-1 per target and per user, and a mean with its standard error over users."""
import math

import torch

from prefstudio.preference.models import AUTO
from prefstudio_research.prefbench.data import Split

# The features the studio's shipped models read.
ENCODER, TEXT_ENCODER = "embedded-effnetlite0-stats-v1", "minilm-l6-v2-mean"


def present(scores: dict, split: str) -> list[int]:
    """The history lengths N_ref a scores file holds for `split`."""
    return sorted({int(key.split(".")[1]) for key in scores if key.startswith(f"{split}.") and key.endswith(AUTO)})


def top1(scores: torch.Tensor) -> torch.Tensor:
    """Per target: 1 when liked scores above disliked, ½ on a tie."""
    return (scores[:, 0] > scores[:, 1]).double() + 0.5 * (scores[:, 0] == scores[:, 1]).double()


def target_owner(split: Split) -> torch.Tensor:
    """The user (index in `split.users`) of each 1v1 target, in file order."""
    counts = [split.targets_1v1[u].shape[0] for u in split.users]
    return torch.repeat_interleave(torch.arange(len(split.users)), torch.tensor(counts))


def per_user(values: torch.Tensor, owner: torch.Tensor, n_users: int) -> torch.Tensor:
    """Per-target values -> each user's mean."""
    total = torch.zeros(n_users, dtype=torch.float64).index_add_(0, owner, values.double())
    count = torch.zeros(n_users, dtype=torch.float64).index_add_(0, owner, torch.ones_like(values, dtype=torch.float64))
    return total / count


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")
