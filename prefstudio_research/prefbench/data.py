"""Reading the pair data set as feature rows: what methods (and the preference-token model) get.

Nothing here opens `pairs/hidden/`: a split is the JSON Lines files, the image list and
the cached features, i.e. exactly what a person's judgments and images would give.
"""
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from prefstudio.errors import InvalidInput


@dataclass
class Split:
    name: str  # "val" or "test"
    features: torch.Tensor  # [N_images, D]
    references: dict[str, torch.Tensor]  # user -> [n_ref, 2] (liked row, disliked row), in order
    targets_1v1: dict[str, torch.Tensor]  # user -> [T, 2] (liked row, disliked row)
    targets_1v3: dict[str, torch.Tensor]  # user -> [G, 4], column 0 the liked row
    prompts: dict[str, dict[str, list[str]]]  # user -> {"references"|"1v1"|"1v3": prompts, in order}
    users: list[str]
    seen: set[str]  # seen test users (empty for val)


def feature_file(cache: Path, encoder_name: str) -> Path:
    return Path(cache) / "features" / f"{encoder_name}.safetensors"


def load_features(cache: Path, encoder_name: str) -> torch.Tensor:
    path = feature_file(cache, encoder_name)
    if not path.exists():
        raise InvalidInput(f"no features for encoder {encoder_name!r} under {cache}; "
                           "run python bench/run_benchmark.py first")
    return load_file(str(path))["features"]


def load_text_features(cache: Path, encoder_name: str) -> tuple[torch.Tensor, dict[str, int]]:
    """Prompt features [P, Dt] and the row of each prompt."""
    path = feature_file(cache, encoder_name)
    with safe_open(str(path), framework="pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        features = f.get_tensor("features")
    return features, {p: i for i, p in enumerate(prompts)}


def image_rows(cache: Path) -> dict[str, int]:
    """Image path as written in pair files ("../images/…") -> feature row."""
    with open(Path(cache) / "images.jsonl") as f:
        return {"../" + json.loads(line)["path"]: i for i, line in enumerate(f)}


def read_pairs(path: Path, rows: dict[str, int]) -> list[tuple[str, str, int, int]]:
    """(user_id, prompt, liked row, disliked row) per line."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            item = json.loads(line)
            try:
                out.append((item["user_id"], item["prompt"], rows[item["liked"]], rows[item["disliked"]]))
            except KeyError as missing:
                raise InvalidInput(f"{path}:{n}: unknown field or image {missing}") from None
    return out


def _grouped(pairs) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    rows, prompts = defaultdict(list), defaultdict(list)
    for user, prompt, liked, disliked in pairs:
        rows[user].append((liked, disliked))
        prompts[user].append(prompt)
    return {u: torch.tensor(r, dtype=torch.long) for u, r in rows.items()}, dict(prompts)


def load_split(cache: Path, name: str, encoder_name: str) -> Split:
    cache = Path(cache)
    rows = image_rows(cache)
    meta = json.loads((cache / "pairs" / "users.json").read_text())
    refs, ref_prompts = _grouped(read_pairs(cache / "pairs" / f"{name}_references.jsonl", rows))
    t11, prompts_11 = _grouped(read_pairs(cache / "pairs" / f"{name}_1v1.jsonl", rows))
    flat13 = read_pairs(cache / "pairs" / f"{name}_1v3.jsonl", rows)
    if len(flat13) % 3:
        raise InvalidInput(f"{name}_1v3.jsonl has {len(flat13)} lines; groups are 3 lines each")
    t13, prompts_13 = defaultdict(list), defaultdict(list)
    for g in range(0, len(flat13), 3):
        group = flat13[g : g + 3]
        user, prompt, liked = group[0][0], group[0][1], group[0][2]
        if any(line[0] != user or line[2] != liked for line in group):
            raise InvalidInput(f"{name}_1v3.jsonl lines {g + 1}-{g + 3} are not one group")
        t13[user].append([liked] + [line[3] for line in group])
        prompts_13[user].append(prompt)
    users = meta["val"] if name == "val" else meta["test_seen"] + meta["test_unseen"]
    return Split(
        name=name,
        features=load_features(cache, encoder_name),
        references=refs,
        targets_1v1=t11,
        targets_1v3={u: torch.tensor(g, dtype=torch.long) for u, g in t13.items()},
        prompts={u: {"references": ref_prompts.get(u, []), "1v1": prompts_11.get(u, []),
                     "1v3": prompts_13.get(u, [])} for u in users},
        users=users,
        seen=set(meta["test_seen"]) if name == "test" else set(),
    )


def load_training(cache: Path) -> dict[str, torch.Tensor]:
    """Training users' judgments: user -> [n, 2] (liked row, disliked row)."""
    return load_training_with_prompts(cache)[0]


def load_training_with_prompts(cache: Path) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Training users' judgments as in `load_training`, and each judgment's prompt, in the same order."""
    cache = Path(cache)
    return _grouped(read_pairs(cache / "pairs" / "train.jsonl", image_rows(cache)))
