"""The pair data set on disk, as the preference-token trainer and evaluation read it.

Layout (documented in bench/README.md; PrefBench and the Pick-a-Pic converter both write it):

    <root>/images.jsonl                   one image a line, {"path": relative to <root>, ...}
    <root>/features/<encoder>.safetensors  "features" [N, D], row i = line i of images.jsonl
    <root>/pairs/train.jsonl               training users' judgments
    <root>/pairs/{val,test}_references.jsonl   each evaluated user's history, in order
    <root>/pairs/{val,test}_1v1.jsonl      targets, 1 liked vs 1 disliked
    <root>/pairs/{val,test}_1v3.jsonl      targets, lines 3k..3k+2 = one liked vs three disliked
    <root>/pairs/users.json                {"train", "val", "test_seen", "test_unseen"}: user ids

A judgment is one JSON line {"user_id", "prompt", "liked", "disliked"}, image paths relative
to the pair file. Everything read here is checked, and an error names the file and line.
"""
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.validation import validate_prompt

MAX_LINE_CHARS = 16_384
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Judgment:
    user_id: str
    prompt: str
    liked: Path  # resolved
    disliked: Path


def _json_lines(path: Path):
    if not path.is_file():
        raise NotFound(f"{path} is not a file" if path.exists() else f"{path} does not exist")
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if len(line) > MAX_LINE_CHARS:
                raise InvalidInput(f"{path}:{number}: line is over {MAX_LINE_CHARS} characters")
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInput(f"{path}:{number}: not JSON ({err.msg})") from None


def read_judgments(path: str | Path) -> list[Judgment]:
    path = Path(path)
    judgments = []
    for number, row in _json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or set(row) != {"user_id", "prompt", "liked", "disliked"}:
            raise InvalidInput(f"{where}: a judgment has exactly the keys user_id, prompt, liked, disliked")
        if not all(isinstance(row[k], str) and row[k] for k in row):
            raise InvalidInput(f"{where}: every field must be a non-empty string")
        try:
            prompt = validate_prompt(row["prompt"])
        except InvalidInput as err:
            raise InvalidInput(f"{where}: {err}") from None
        images = []
        for key in ("liked", "disliked"):
            if Path(row[key]).is_absolute():
                raise InvalidInput(f"{where}: {key} must be a path relative to the file, got {row[key]!r}")
            images.append((path.parent / row[key]).resolve())
        if images[0] == images[1]:
            raise InvalidInput(f"{where}: liked and disliked are the same image")
        judgments.append(Judgment(row["user_id"], prompt, images[0], images[1]))
    return judgments


def by_user(judgments: list[Judgment]) -> dict[str, list[Judgment]]:
    """Judgments grouped per user, in file order."""
    grouped = defaultdict(list)
    for j in judgments:
        grouped[j.user_id].append(j)
    return dict(grouped)


@dataclass(frozen=True)
class Group1v3:
    user_id: str
    prompt: str
    liked: Path
    disliked: tuple[Path, Path, Path]


def read_groups_1v3(path: str | Path) -> list[Group1v3]:
    judgments = read_judgments(path)
    if len(judgments) % 3:
        raise InvalidInput(f"{path}: {len(judgments)} lines is not a multiple of 3 (1 liked vs 3 disliked)")
    groups = []
    for i in range(0, len(judgments), 3):
        three = judgments[i:i + 3]
        if len({(j.user_id, j.liked) for j in three}) != 1:
            raise InvalidInput(f"{path}: lines {i + 1}-{i + 3} do not share one user and one liked image")
        groups.append(Group1v3(three[0].user_id, three[0].prompt, three[0].liked,
                               tuple(j.disliked for j in three)))
    return groups


@dataclass
class PairDataSet:
    """The pair files of one data root, read and checked."""

    root: Path
    users: dict[str, list[str]]
    train: list[Judgment]
    references: dict[str, dict[str, list[Judgment]]]  # split -> user -> history, in order
    targets_1v1: dict[str, list[Judgment]]  # split -> judgments
    targets_1v3: dict[str, list[Group1v3]]

    @classmethod
    def read(cls, root: str | Path, splits=SPLITS) -> "PairDataSet":
        root = Path(root)
        pairs = root / "pairs"
        users_file = pairs / "users.json"
        if not users_file.is_file():
            raise NotFound(f"{root} is not a pair data set: {users_file} is missing (see bench/README.md)")
        try:
            users = json.loads(users_file.read_text())
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{users_file}: not JSON ({err.msg})") from None
        for key in ("train", "val", "test_seen", "test_unseen"):
            if not isinstance(users.get(key), list):
                raise InvalidInput(f"{users_file}: {key!r} must be a list of user ids")
        references, one_v_one, one_v_three = {}, {}, {}
        for split in splits:
            references[split] = by_user(read_judgments(pairs / f"{split}_references.jsonl"))
            one_v_one[split] = read_judgments(pairs / f"{split}_1v1.jsonl")
            groups = pairs / f"{split}_1v3.jsonl"
            one_v_three[split] = read_groups_1v3(groups) if groups.is_file() else []
        return cls(root, users, read_judgments(pairs / "train.jsonl"), references, one_v_one, one_v_three)

    def image_paths(self) -> list[Path]:
        """Every image of the root's images.jsonl, resolved, in line order."""
        index = self.root / "images.jsonl"
        paths = []
        for number, row in _json_lines(index):
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or Path(row["path"]).is_absolute():
                raise InvalidInput(f"{index}:{number}: needs a relative \"path\"")
            paths.append((self.root / row["path"]).resolve())
        return paths

    def prompts(self) -> list[str]:
        found = dict.fromkeys(j.prompt for j in self.train)
        for split in self.targets_1v1:
            for history in self.references[split].values():
                found.update(dict.fromkeys(j.prompt for j in history))
            found.update(dict.fromkeys(j.prompt for j in self.targets_1v1[split]))
            found.update(dict.fromkeys(g.prompt for g in self.targets_1v3[split]))
        return list(found)


def image_features(data: PairDataSet, encoder, batch_size: int = 32) -> tuple[dict[Path, int], torch.Tensor]:
    """(row of each image path, features [N, D]) from <root>/features/<encoder.name>.safetensors,
    which is written here first if it does not exist yet (encoding every image once)."""
    from prefstudio.store.image_files import load_untrusted_image

    paths = data.image_paths()
    rows = {p: i for i, p in enumerate(paths)}
    cache = data.root / "features" / f"{encoder.name}.safetensors"
    if cache.is_file():
        features = load_file(str(cache))["features"]
        if features.shape[0] != len(paths):
            raise InvalidInput(f"{cache} has {features.shape[0]} rows but images.jsonl {len(paths)} lines: "
                               f"delete it to encode the images again")
        return rows, features
    chunks = []
    for start in range(0, len(paths), batch_size):
        images = [load_untrusted_image(p) for p in paths[start:start + batch_size]]
        chunks.append(encoder.encode_images(images, batch_size=batch_size).float().cpu())
    features = torch.cat(chunks) if chunks else torch.empty(0, encoder.dim)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.contiguous()}, str(cache), metadata={"encoder": encoder.name})
    return rows, features


def prompt_features(data: PairDataSet, encoder) -> tuple[dict[str, int], torch.Tensor]:
    """(row of each prompt, features [P, D]) for every prompt of the data set, from
    <root>/features/<encoder.name>.safetensors ("features" + the prompt list in its metadata,
    as PrefBench writes it); prompts not in it yet are encoded and added."""
    cache = data.root / "features" / f"{encoder.name}.safetensors"
    known, features, metadata = [], torch.empty(0, encoder.dim), {"encoder": encoder.name}
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            features = f.get_tensor("features")
        try:
            known = json.loads(metadata["prompts"])
        except (KeyError, json.JSONDecodeError):
            raise InvalidInput(f"{cache} has no prompt list: it is not a text-feature file") from None
        if features.shape[0] != len(known):
            raise InvalidInput(f"{cache} is inconsistent: delete it to encode the prompts again")
    seen = set(known)
    missing = [p for p in data.prompts() if p not in seen]
    if missing:
        new = torch.cat([encoder.encode(missing[i:i + 256]).float().cpu() for i in range(0, len(missing), 256)])
        known, features = known + missing, torch.cat([features, new])
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"features": features.contiguous()}, str(cache), metadata={**metadata, "prompts": json.dumps(known)})
    return {p: i for i, p in enumerate(known)}, features
