"""Training pairs for PPD: per-user histories, explicit ties, synthetic one-hot users.

Real users (002 §4.2, app. B.4): a user's first `history` judgments of the pair data set's
train file are what the VLM reads to make their embedding; their later judgments are the
DPO pairs. Users with no judgment beyond their history are left out (the paper drops users
with fewer than 4 pairs) and counted. A user who judged the same two images both ways gives
one tie, not two contradicting pairs.

Synthetic users (002 §5.1): every pair of images is given to one reward, drawn uniformly
(CLIP, aesthetic, PickScore, or any `Reward`), which orders it by its score; equal scores are
a tie. The user embedding of reward k is the one-hot vector e_k, so a mix of rewards at
generation time is a convex combination of one-hot vectors.

User embeddings live in one safetensors file: "embeddings" [U, D] with the user ids (and,
for a VLM, the profile texts) in its metadata, checked when read.
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.preference.pair_data import MAX_USER_ID_CHARS, Judgment, by_user

EMBEDDINGS_FORMAT = "prefstudio-ppd-user-embeddings"
MAX_EMBEDDING_USERS = 1_000_000
MAX_EMBEDDING_DIM = 16_384
MAX_METADATA_CHARS = 256 * 2**20
SYNTHETIC_REWARDS = ("clip", "aesthetic", "pickscore")


@dataclass(frozen=True)
class TrainingPair:
    user: str  # a user id of the data set, or a synthetic user's reward name
    prompt: str
    liked: Path
    disliked: Path
    tie: bool = False  # no side is preferred (liked/disliked is then just an order)


@dataclass
class SplitReport:
    users: int
    pairs: int
    ties: int
    users_without_targets: int  # users with no judgment beyond their history: left out
    duplicates: int  # the same judgment repeated: kept once

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def histories_and_pairs(judgments: list[Judgment], history: int = 4
                        ) -> tuple[dict[str, list[Judgment]], list[TrainingPair], SplitReport]:
    """Split each user's judgments into a history (the first `history`, for the embedding)
    and training pairs (the rest), with contradicting judgments turned into ties."""
    if history < 1:
        raise InvalidInput(f"the history needs at least one pair, got {history}")
    histories, pairs = {}, []
    ties = duplicates = left_out = 0
    for user, own in by_user(judgments).items():
        if len(own) <= history:
            left_out += 1
            continue
        histories[user] = own[:history]
        seen: dict[frozenset, int] = {}
        for j in own[history:]:
            key = frozenset((j.liked, j.disliked))
            if key not in seen:
                seen[key] = len(pairs)
                pairs.append(TrainingPair(user, j.prompt, j.liked, j.disliked))
                continue
            earlier = pairs[seen[key]]
            if earlier.tie or earlier.liked == j.liked:
                duplicates += 1
            else:  # the opposite verdict on the same two images
                pairs[seen[key]] = TrainingPair(user, earlier.prompt, earlier.liked, earlier.disliked, tie=True)
                ties += 1
    return histories, pairs, SplitReport(len(histories), len(pairs), ties, left_out, duplicates)


def one_hot_users(names: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """e_k for the k-th synthetic user."""
    eye = torch.eye(len(names))
    return {name: eye[i] for i, name in enumerate(names)}


def mix_users(weights: dict[str, float], names: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Σ w_k e_k: an interpolation between synthetic users (002 §5.1, Fig. 4)."""
    unknown = set(weights) - set(names)
    if unknown:
        raise InvalidInput(f"no synthetic user {', '.join(sorted(unknown))}; this adapter knows {', '.join(names)}")
    users = one_hot_users(names)
    return sum((float(w) * users[name] for name, w in weights.items()), torch.zeros(len(names)))


@torch.no_grad()
def synthetic_reward_pairs(judgments: list[Judgment], rewards: dict, load_pixels, seed: int = 0
                           ) -> tuple[list[TrainingPair], SplitReport]:
    """Relabel every pair of images by one reward each, chosen uniformly (002 §5.1).

    `rewards` maps user names to `Reward`s; `load_pixels(path)` gives [1, 3, H, W] in [0, 1]."""
    if not rewards:
        raise InvalidInput("synthetic users need at least one reward")
    names = list(rewards)
    rng = random.Random(seed)
    contexts: dict[tuple[str, str], object] = {}
    pairs, ties, seen, duplicates = [], 0, set(), 0
    for j in judgments:
        key = frozenset((j.liked, j.disliked, j.prompt))
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        name = rng.choice(names)
        reward = rewards[name]
        if (name, j.prompt) not in contexts:
            contexts[name, j.prompt] = reward.prepare(j.prompt)
        pixels = torch.cat([load_pixels(j.liked), load_pixels(j.disliked)])
        first, second = reward.score(pixels, contexts[name, j.prompt]).float().tolist()
        if first == second:
            ties += 1
            pairs.append(TrainingPair(name, j.prompt, j.liked, j.disliked, tie=True))
        elif first > second:
            pairs.append(TrainingPair(name, j.prompt, j.liked, j.disliked))
        else:
            pairs.append(TrainingPair(name, j.prompt, j.disliked, j.liked))
    return pairs, SplitReport(len({p.user for p in pairs}), len(pairs), ties, 0, duplicates)


def build_synthetic_rewards(names: list[str], clip: str | None, aesthetic_head: str | None,
                            pickscore: str | None, device=None) -> dict:
    """The rewards of 002 §5.1 from the project's reward classes (HPSv2 there; PickScore here)."""
    from prefstudio.encoders.clip import DEFAULT_CLIP, CLIPEncoder

    unknown = set(names) - set(SYNTHETIC_REWARDS)
    if unknown or not names:
        raise InvalidInput(f"synthetic users are some of {', '.join(SYNTHETIC_REWARDS)}; got {', '.join(names)}")
    rewards, shared = {}, None

    def clip_encoder():
        nonlocal shared
        if shared is None:
            shared = CLIPEncoder(clip or DEFAULT_CLIP, device=device)
        return shared

    for name in names:
        if name == "clip":
            from prefstudio.rewards.clip_alignment import CLIPAlignmentReward
            rewards[name] = CLIPAlignmentReward(clip_encoder())
        elif name == "aesthetic":
            from prefstudio.rewards.aesthetic import AestheticReward
            if not aesthetic_head:
                raise InvalidInput("the aesthetic user needs --aesthetic-head (the LAION head's safetensors file)")
            rewards[name] = AestheticReward(aesthetic_head, clip_encoder())
        else:
            from prefstudio.rewards.pickscore import PickScoreReward
            rewards[name] = PickScoreReward(CLIPEncoder(pickscore, device=device) if pickscore else None,
                                            device=device)
    return rewards


# -- user embeddings file ------------------------------------------------------------------

def write_user_embeddings(path: str | Path, embeddings: dict[str, torch.Tensor], source: str,
                          profiles: dict[str, str] | None = None) -> Path:
    users = list(embeddings)
    if not users:
        raise InvalidInput("no user embeddings to write")
    stacked = torch.stack([embeddings[u].detach().float().cpu() for u in users]).contiguous()
    metadata = {"format": EMBEDDINGS_FORMAT, "version": "1", "source": source, "users": json.dumps(users)}
    if profiles is not None:
        metadata["profiles"] = json.dumps([profiles.get(u, "") for u in users])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": stacked}, str(path), metadata=metadata)
    return path


def read_user_embeddings(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """({user id: [D]}, source), every field checked."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no user-embedding file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if set(f.keys()) != {"embeddings"}:
                raise InvalidInput(f"{path} must hold exactly one tensor, 'embeddings'")
            shape = f.get_slice("embeddings").get_shape()
            if len(shape) != 2 or not (1 <= shape[0] <= MAX_EMBEDDING_USERS and 1 <= shape[1] <= MAX_EMBEDDING_DIM):
                raise InvalidInput(f"{path}: 'embeddings' has shape {shape}, expected [users, dim] within bounds")
            embeddings = f.get_tensor("embeddings")
    except InvalidInput:
        raise
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise InvalidInput(f"{path} is not a readable safetensors file ({err.__class__.__name__})") from None
    if metadata.get("format") != EMBEDDINGS_FORMAT or metadata.get("version") != "1":
        raise InvalidInput(f"{path} is not a PrefStudio user-embedding file ({EMBEDDINGS_FORMAT}, version 1)")
    if len(metadata.get("users", "")) > MAX_METADATA_CHARS:
        raise InvalidInput(f"{path}: the user list is too long")
    try:
        users = json.loads(metadata["users"])
    except (KeyError, ValueError):
        raise InvalidInput(f"{path}: the user list is missing or not JSON") from None
    if not isinstance(users, list) or len(users) != embeddings.shape[0] or len(set(users)) != len(users) or not all(
            isinstance(u, str) and 0 < len(u) <= MAX_USER_ID_CHARS for u in users):
        raise InvalidInput(f"{path}: users must be {embeddings.shape[0]} distinct non-empty ids")
    if embeddings.dtype != torch.float32 or not torch.isfinite(embeddings).all():
        raise InvalidInput(f"{path}: embeddings must be finite float32 values")
    return {u: embeddings[i] for i, u in enumerate(users)}, str(metadata.get("source", ""))
