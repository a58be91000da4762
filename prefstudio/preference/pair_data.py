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
Data sets come from elsewhere: only regular files are opened (a FIFO would block), and
images must lie inside the data set's folder once symlinks and `..` are resolved.
"""
import json
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefstudio.errors import InvalidInput, NotFound, echo
from prefstudio.store.image_files import open_regular_file
from prefstudio.validation import validate_prompt

MAX_LINE_BYTES = 65_536
MAX_USER_ID_CHARS = 256
MAX_USERS_FILE_BYTES = 64 * 2**20
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Judgment:
    user_id: str
    prompt: str
    liked: Path  # resolved
    disliked: Path


def _open(path: Path):
    """A regular file opened for reading (a FIFO would block, a device never end)."""
    try:
        return open_regular_file(path)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    except OSError as err:
        raise InvalidInput(f"cannot read {echo(str(path))}: {err.strerror or err}") from None


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInput(f"{where}: not JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, and numbers past Python's 4,300-digit limit
        raise InvalidInput(f"{where}: not JSON ({echo(getattr(err, 'msg', str(err)), 80)})") from None


def _json_lines(path: Path):
    with _open(path) as file:
        number = 0
        while raw := file.readline(MAX_LINE_BYTES + 1):  # bounded: a 1 GB line is not read whole
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidInput(f"{path}:{number}: line is over {MAX_LINE_BYTES:,} bytes")
            try:  # a byte-order mark may open the file (Windows Notepad writes one)
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{path}:{number}: not UTF-8 text") from None
            if line.strip():
                yield number, _parse_json(line, f"{path}:{number}")


def default_root(pair_file: Path) -> Path:
    """The data set's folder of a pair file: <root> for <root>/pairs/x.jsonl (the layout
    above), else the folder holding the file."""
    folder = Path(pair_file).parent
    return folder.parent if folder.name == "pairs" else folder


def _image_inside(root: Path, base: Path, value: str, what: str, where: str) -> Path:
    """`value` (relative to `base`) resolved, and only if it is a regular file inside `root`
    (already resolved) after following symlinks and `..`."""
    if Path(value).is_absolute():
        raise InvalidInput(f"{where}: {what} must be a path relative to the file, got {echo(value)}")
    name = f"{what} image {echo(value)}" if what != "path" else f"path {echo(value)}"
    try:
        resolved = (base / value).resolve()
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        raise InvalidInput(f"{where}: {name} is not a usable path") from None
    if not resolved.is_relative_to(root):
        raise InvalidInput(f"{where}: {name} lies outside the data set's folder {root}")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise InvalidInput(f"{where}: {name} does not exist") from None
    except OSError as err:
        raise InvalidInput(f"{where}: {name} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{where}: {name} is not a regular file")
    return resolved


def read_judgments(path: str | Path, root: str | Path | None = None, user_id: str | None = None,
                   limit: int | None = None) -> list[Judgment]:
    """The judgments of a pair file (of `user_id` only, if given), checked; images must be
    regular files inside `root` (default: `default_root(path)`). With `limit`, reading stops at
    the judgment after it: the caller sees more than `limit` and refuses without reading on."""
    path = Path(path)
    root = Path(default_root(path) if root is None else root).resolve()
    judgments = []
    for number, row in _json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or set(row) != {"user_id", "prompt", "liked", "disliked"}:
            raise InvalidInput(f"{where}: a judgment has exactly the keys user_id, prompt, liked, disliked")
        if not all(isinstance(row[k], str) and row[k] for k in row):
            raise InvalidInput(f"{where}: every field must be a non-empty string")
        if len(row["user_id"]) > MAX_USER_ID_CHARS:
            raise InvalidInput(f"{where}: user_id is over {MAX_USER_ID_CHARS} characters")
        try:
            prompt = validate_prompt(row["prompt"])
        except InvalidInput as err:
            raise InvalidInput(f"{where}: {err}") from None
        images = [_image_inside(root, path.parent, row[key], key, where) for key in ("liked", "disliked")]
        if images[0] == images[1]:
            raise InvalidInput(f"{where}: liked and disliked are the same image")
        if user_id is None or row["user_id"] == user_id:
            judgments.append(Judgment(row["user_id"], prompt, images[0], images[1]))
            if limit is not None and len(judgments) > limit:
                break
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


def read_groups_1v3(path: str | Path, root: str | Path | None = None) -> list[Group1v3]:
    judgments = read_judgments(path, root)
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
        if not users_file.exists():
            raise NotFound(f"{root} is not a pair data set: {users_file} is missing (see bench/README.md)")
        with _open(users_file) as file:
            raw = file.read(MAX_USERS_FILE_BYTES + 1)
        if len(raw) > MAX_USERS_FILE_BYTES:
            raise InvalidInput(f"{users_file} is over {MAX_USERS_FILE_BYTES // 2**20} MB")
        try:
            users = _parse_json(raw.decode("utf-8"), str(users_file))
        except UnicodeDecodeError:
            raise InvalidInput(f"{users_file}: not UTF-8 text") from None
        if not isinstance(users, dict):
            raise InvalidInput(f"{users_file}: expected a JSON object of user id lists")
        for key in ("train", "val", "test_seen", "test_unseen"):
            if not isinstance(users.get(key), list) or not all(isinstance(u, str) for u in users[key]):
                raise InvalidInput(f"{users_file}: {key!r} must be a list of user ids")
        references, one_v_one, one_v_three = {}, {}, {}
        for split in splits:
            references[split] = by_user(read_judgments(pairs / f"{split}_references.jsonl", root))
            one_v_one[split] = read_judgments(pairs / f"{split}_1v1.jsonl", root)
            groups = pairs / f"{split}_1v3.jsonl"
            one_v_three[split] = read_groups_1v3(groups, root) if groups.exists() else []
        return cls(root, users, read_judgments(pairs / "train.jsonl", root), references, one_v_one,
                   one_v_three)

    def image_paths(self) -> list[Path]:
        """Every image of the root's images.jsonl, resolved, in line order."""
        index = self.root / "images.jsonl"
        root = self.root.resolve()
        paths = []
        for number, row in _json_lines(index):
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"]:
                raise InvalidInput(f"{index}:{number}: needs a relative \"path\"")
            paths.append(_image_inside(root, self.root, row["path"], "path", f"{index}:{number}"))
        return paths

    def prompts(self) -> list[str]:
        found = dict.fromkeys(j.prompt for j in self.train)
        for split in self.targets_1v1:
            for history in self.references[split].values():
                found.update(dict.fromkeys(j.prompt for j in history))
            found.update(dict.fromkeys(j.prompt for j in self.targets_1v1[split]))
            found.update(dict.fromkeys(g.prompt for g in self.targets_1v3[split]))
        return list(found)


def _feature_cache(root: Path, encoder_name: str) -> Path:
    """<root>/features/<encoder>.safetensors, which must be a regular file if it exists
    (safetensors would block on a FIFO there, reading or writing)."""
    cache = root / "features" / f"{encoder_name}.safetensors"
    if cache.exists() and not cache.is_file():
        raise InvalidInput(f"{cache} is not a regular file")
    return cache


def image_features(data: PairDataSet, encoder, batch_size: int = 32) -> tuple[dict[Path, int], torch.Tensor]:
    """(row of each image path, features [N, D]) from <root>/features/<encoder.name>.safetensors,
    which is written here first if it does not exist yet (encoding every image once)."""
    from prefstudio.store.image_files import load_untrusted_image

    paths = data.image_paths()
    rows = {p: i for i, p in enumerate(paths)}
    cache = _feature_cache(data.root, encoder.name)
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
    cache = _feature_cache(data.root, encoder.name)
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
