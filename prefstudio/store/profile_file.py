"""A profile as one portable, versioned file, safe to accept from anyone.

The file is safetensors (no pickle): its `__metadata__` holds
    format  "prefstudio-profile"
    version "2" (version 1, without presets, is still read)
    profile JSON: name, judgments (by image sha), image records, model configs, presets
                  (named blends of reward weights, prefstudio.blend)
    digest  SHA-256 over the profile JSON and every tensor (name, dtype, shape, bytes)
and its tensors are each image's PNG bytes (`image.<sha>`, uint8) and the fitted
models' tensors (`model.<name>.<tensor>`). The digest catches damaged or hand-edited
files; it is not a signature. What keeps a hostile file harmless is the rest of the
checks: bounded sizes and costs, every JSON field and every model tensor checked
against its schema (prefstudio.preference.state_schema), each image's bytes must
hash to its name and decode within the upload bounds, and nothing is executed or
unpickled. A refused import leaves the store exactly as it was.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import safetensors.numpy
from safetensors import deserialize

from prefstudio import validation
from prefstudio.blend import MAX_PRESETS, blended_profile, validate_blend, validate_preset_name
from prefstudio.errors import InvalidInput, NotFound, echo
from prefstudio.preference.state_schema import check_state
from prefstudio.store.history import (
    KINDS,
    HistoryStore,
    ImageRecord,
    Profile,
    check_judgment,
    validate_model_name,
)
from prefstudio.store.image_files import load_untrusted_image, open_regular_file, write_atomically

if TYPE_CHECKING:
    import torch

FORMAT = "prefstudio-profile"
VERSION = 2  # 2 added presets
READABLE_VERSIONS = (1, 2)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# safetensors dtype codes -> torch's names, which the digest has always hashed.
_DIGEST_DTYPES = {"BOOL": "torch.bool", "U8": "torch.uint8", "I8": "torch.int8", "I16": "torch.int16",
                  "I32": "torch.int32", "I64": "torch.int64", "F16": "torch.float16", "BF16": "torch.bfloat16",
                  "F32": "torch.float32", "F64": "torch.float64"}


@dataclass(frozen=True)
class RawTensor:
    """A tensor as safetensors stores it: dtype code, shape and little-endian bytes."""
    dtype: str
    shape: tuple[int, ...]
    data: bytes




def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()  # via uint8: numpy has no bfloat16


def content_digest(profile_json: str, tensors: dict[str, RawTensor | torch.Tensor]) -> str:
    digest = hashlib.sha256(profile_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        if isinstance(tensor, RawTensor):
            if tensor.dtype not in _DIGEST_DTYPES:
                raise InvalidInput(f"profile file holds a tensor of unsupported type {echo(tensor.dtype)}")
            dtype, data = _DIGEST_DTYPES[tensor.dtype], tensor.data
        else:  # a torch tensor (tests and tools that build files with torch)
            dtype, data = str(tensor.dtype), _tensor_bytes(tensor)
        header = f"\n{name}\n{dtype}\n{list(tensor.shape)}\n"
        digest.update(header.encode())
        digest.update(data)
    return digest.hexdigest()


def raw_tensors(safetensors_bytes: bytes) -> dict[str, RawTensor]:
    """Parse safetensors bytes (checked by the safetensors library) into raw tensors."""
    return {name: RawTensor(info["dtype"], tuple(info["shape"]), bytes(info["data"]))
            for name, info in deserialize(safetensors_bytes)}


def serialize(tensors: dict[str, RawTensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes: an 8-byte header length, the JSON header (padded to 8 bytes), the data."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset, chunks = 0, []
    for name in sorted(tensors):
        tensor = tensors[name]
        header[name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(tensor.data)]}
        offset += len(tensor.data)
        chunks.append(tensor.data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def export_profile(store: HistoryStore, profile_name: str, path: str | os.PathLike) -> Path:
    """Write the profile's judgments, the images they refer to and its fitted models."""
    path = validation.validate_output_file(path, is_profile_file, "a PrefStudio profile file")
    profile = store.get_profile(profile_name)
    judgments = store.judgments(profile.name)
    shas = list(dict.fromkeys(
        sha for j in judgments for sha in (j.image_a, j.image_b) if sha is not None
    ))
    tensors: dict[str, RawTensor] = {}
    images = []
    for sha in shas:
        record = store.image_record(sha)
        try:
            png = record.path.read_bytes()
        except OSError as error:
            raise NotFound(f"image file {record.path} is missing: {error.strerror}") from None
        if hashlib.sha256(png).hexdigest() != sha:
            raise InvalidInput(f"image file {record.path} is damaged: its bytes changed on disk")
        tensors[f"image.{sha}"] = RawTensor("U8", (len(png),), png)
        images.append({"sha256": sha, "prompt": record.prompt, "seed": record.seed,
                       "generator": record.generator, "params": record.params,
                       "created": record.created})
    models = []
    for model_name in store.model_names(profile.name):
        weights, config = store.load_model_weights(profile.name, model_name)
        for key, tensor in raw_tensors(weights).items():
            tensors[f"model.{model_name}.{key}"] = tensor
        models.append({"name": model_name, "config": config})
    content = {
        "name": profile.name,
        "images": images,
        "judgments": [{"kind": j.kind, "image_a": j.image_a, "image_b": j.image_b,
                       "created": j.created} for j in judgments],
        "models": models,
        "presets": [{"name": p.name, "weights": p.weights, "created": p.created}
                    for p in store.presets(profile.name)],
    }
    profile_json = _canonical_json(content)
    metadata = {"format": FORMAT, "version": str(VERSION), "profile": profile_json,
                "digest": content_digest(profile_json, tensors)}
    data = serialize(tensors, metadata)
    header = int.from_bytes(data[:8], "little")
    if header > validation.MAX_PROFILE_HEADER_BYTES:  # import would refuse it: no backup that cannot be restored
        raise InvalidInput(f"{profile.name}'s file would have a header of {_size(header)} (its {len(judgments):,} "
                           f"judgments and {len(images):,} images), over the {_size(validation.MAX_PROFILE_HEADER_BYTES)} "
                           "a profile file may have: nothing was written; to keep all of it, copy the data folder")
    write_atomically(path, data)
    return path


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"


# --- import ------------------------------------------------------------------------
#
# Cost is bounded before anything is decoded: the safetensors header is parsed here
# (not by safetensors, which would map the whole file) and every tensor's name, dtype
# and size checked from it; the digest and each image's SHA-256 are computed in one
# streaming pass; image sizes come from their PNG headers. Only then are the JSON
# fields, model states (prefstudio.preference.state_schema) and images checked, one
# image decoded at a time, and only then is anything written.

# Bytes per element of each safetensors dtype code; model tensors are read as numpy arrays
# (no torch on the import path), and bfloat16, which numpy lacks, is refused for them.
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_METADATA_KEYS = {"format", "version", "profile", "digest"}
_MODEL_TENSOR = re.compile(r"model\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_.-]{1,64})")
MAX_MODEL_TENSOR_ELEMENTS = 2**26
MAX_PARAMS_CHARS = 65_536
MAX_PARAMS_DEPTH = 8
MAX_GENERATOR_CHARS = 200
_CHUNK = 2**20


def _malformed(what: str) -> InvalidInput:
    return InvalidInput(f"profile file is malformed: {what}")


def _not_safetensors(what: str) -> InvalidInput:
    return InvalidInput(f"not a PrefStudio profile file (not a safetensors file: {what})")


def _expect(value, kind, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _malformed(f"{what} must be {getattr(kind, '__name__', kind)}")
    return value


def _keys(item: dict, required: set[str], what: str) -> None:
    if set(item) != required:
        missing, extra = sorted(required - set(item)), sorted(set(item) - required)
        why = f"missing {echo(missing[0], 40)}" if missing else f"not {echo(extra[0], 40)}"
        raise _malformed(f"{what} must have exactly the keys {', '.join(sorted(required))} ({why})")


def _load_json(text: str, what: str):
    """json.loads without NaN/Infinity, written or overflowing (the store could not write them
    back), with any parser failure (a 100,000-deep nesting, a 5,000-digit number) as InvalidInput."""
    try:
        return validation.finite_json(text)
    except RecursionError:
        raise _malformed(f"{what} is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and int-size limits are ValueErrors
        raise _malformed(f"{what} is not valid JSON ({echo(str(error), 80)})") from None


@dataclass(frozen=True)
class _Entry:
    """One tensor as the header declares it; start/end are absolute file offsets."""
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    start: int
    end: int


# What a file chosen by mistake most often is, by its first bytes.
_OTHER_KINDS = ((b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "a ZIP archive"), (b"\x89PNG", "a PNG image"),
                (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
                (b"\x1f\x8b", "a gzip file"), (b"SQLite f", "an SQLite database"))


def _not_a_profile_file(head: bytes) -> InvalidInput:
    kind = next((name for magic, name in _OTHER_KINDS if head.startswith(magic)), None)
    if kind is None and head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        kind = "text"
    return InvalidInput("not a PrefStudio profile file: " + (f"it is {kind}; " if kind else "")
                        + "a profile file is the .prefstudio file that Export profile (or `python -m prefstudio "
                          "export`) writes")


def _read_header(file, size: int) -> tuple[dict, dict[str, _Entry]]:
    if size < 8:
        raise _not_safetensors("shorter than its header")
    head = file.read(8)
    length = int.from_bytes(head, "little")
    if any(head.startswith(m) for m, _ in _OTHER_KINDS) \
            or length > validation.MAX_PROFILE_HEADER_BYTES and length > size - 8:
        raise _not_a_profile_file(head)  # a header longer than the file: another kind of file
    if length > validation.MAX_PROFILE_HEADER_BYTES:
        raise InvalidInput(f"its header is {_size(length)}, over the {_size(validation.MAX_PROFILE_HEADER_BYTES)} "
                           "a profile file may have (a profile of tens of thousands of judgments): "
                           "nothing was imported")
    if length > size - 8:
        raise _not_safetensors(f"a header of {length:,} bytes in a file of {size:,}")
    try:
        header = validation.finite_json(file.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _not_safetensors("its header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors("its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _not_safetensors("its metadata is not text")
    base, entries = 8 + length, {}
    for name, info in header.items():
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}
                and info["dtype"] in _ITEMSIZE and isinstance(info["shape"], list)
                and len(info["shape"]) <= 4 and isinstance(info["data_offsets"], list)
                and len(info["data_offsets"]) == 2
                and all(type(n) is int and n >= 0 for n in info["shape"] + info["data_offsets"])):
            raise _not_safetensors(f"tensor {echo(name, 40)} is described wrongly")
        dtype, (begin, end) = info["dtype"], info["data_offsets"]
        count = math.prod(info["shape"])
        if count * _ITEMSIZE[dtype] != end - begin:
            raise _not_safetensors(f"tensor {echo(name, 40)} has {end - begin} bytes for "
                                   f"shape {info['shape']}")
        entries[name] = _Entry(dtype, tuple(info["shape"]), base + begin, base + end)
    position = base  # the tensors must tile the rest of the file exactly, as safetensors writes them
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise _not_safetensors("its tensors overlap or leave gaps")
        position = entry.end
    if position > size:  # what a partial download or copy looks like
        raise _not_safetensors(f"cut short: its header describes {position:,} bytes, the file has {size:,}; "
                               "copy or download it again")
    if position != size:
        raise _not_safetensors(f"its tensors end at byte {position:,} of {size:,}")
    return metadata, entries


def is_profile_file(path: Path) -> bool:
    """Whether `path` holds a profile file (of any version), which an export may replace."""
    try:
        with open_regular_file(path) as file:
            metadata, _ = _read_header(file, os.fstat(file.fileno()).st_size)
    except (InvalidInput, OSError):
        return False
    return metadata.get("format") == FORMAT


def _check_format(metadata: dict) -> None:
    if metadata.get("format") != FORMAT:
        raise InvalidInput(f"not a PrefStudio profile file (format "
                           f"{echo(metadata.get('format'))}, expected {FORMAT!r})")
    version = metadata.get("version", "")
    if not re.fullmatch(r"[0-9]{1,9}", version):
        raise InvalidInput(f"profile file has an unreadable version {echo(version)}")
    if int(version) > VERSION:
        raise InvalidInput(f"profile file version {int(version)} is newer than this "
                           f"PrefStudio understands ({VERSION}); upgrade PrefStudio")
    if int(version) not in READABLE_VERSIONS:
        raise InvalidInput(f"profile file version {int(version)} is not one this "
                           f"PrefStudio reads ({', '.join(map(str, READABLE_VERSIONS))})")
    if set(metadata) != _METADATA_KEYS:
        raise _malformed(f"its metadata must hold exactly {', '.join(sorted(_METADATA_KEYS))}")


def _check_tensor_names(entries: dict[str, _Entry]) -> None:
    for name, entry in entries.items():
        if name.startswith("image."):
            if not _SHA256.fullmatch(name[6:]) or entry.dtype != "U8" or len(entry.shape) != 1:
                raise _malformed(f"tensor {echo(name, 40)} is not an image's uint8 bytes")
            if entry.end - entry.start > validation.MAX_IMAGE_BYTES:
                raise InvalidInput(f"image {name[6:18]}… in the profile file is "
                                   f"{validation.size_over_limit(entry.end - entry.start, validation.MAX_IMAGE_BYTES)}")
        elif _MODEL_TENSOR.fullmatch(name):
            if math.prod(entry.shape) > MAX_MODEL_TENSOR_ELEMENTS:
                raise _malformed(f"model tensor {name!r} has over {MAX_MODEL_TENSOR_ELEMENTS:,} values")
        else:
            raise _malformed(f"unexpected tensor {echo(name, 40)}")


def _stream_digest(file, profile_json: str, entries: dict[str, _Entry]) -> tuple[str, dict[str, str]]:
    """content_digest of the file's tensors read in chunks, and each image's SHA-256."""
    digest = hashlib.sha256(profile_json.encode())
    image_hashes = {}
    for name in sorted(entries):
        entry = entries[name]
        digest.update(f"\n{name}\n{_DIGEST_DTYPES[entry.dtype]}\n{list(entry.shape)}\n".encode())
        image_hash = hashlib.sha256() if name.startswith("image.") else None
        file.seek(entry.start)
        remaining = entry.end - entry.start
        while remaining:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise InvalidInput("profile file changed while it was read")
            digest.update(chunk)
            if image_hash is not None:
                image_hash.update(chunk)
            remaining -= len(chunk)
        if image_hash is not None:
            image_hashes[name[6:]] = image_hash.hexdigest()
    return digest.hexdigest(), image_hashes


def _read_bytes(file, entry: _Entry) -> bytes:
    file.seek(entry.start)
    data = file.read(entry.end - entry.start)
    if len(data) != entry.end - entry.start:
        raise InvalidInput("profile file changed while it was read")
    return data


def _read_tensor(file, entry: _Entry) -> np.ndarray:
    if entry.dtype not in _NUMPY:
        raise _malformed(f"a model tensor is {entry.dtype}, which PrefStudio does not store")
    return np.frombuffer(_read_bytes(file, entry), dtype=np.dtype(_NUMPY[entry.dtype]).newbyteorder("<")
                         ).reshape(entry.shape).copy()


def _check_plain_json(value, what: str, depth: int = 0) -> None:
    if depth > MAX_PARAMS_DEPTH:
        raise _malformed(f"{what} is nested more than {MAX_PARAMS_DEPTH} deep")
    if isinstance(value, dict):
        for item in value.values():
            _check_plain_json(item, what, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_plain_json(item, what, depth + 1)


def _timestamp(value, what: str) -> str:
    """An ISO 8601 time with a zone, as the store writes (the UI compares it with fits)."""
    _expect(value, str, what)
    try:
        parsed = datetime.fromisoformat(value) if len(value) <= 64 else None
        if parsed is None or parsed.tzinfo is None:
            raise ValueError
        seconds = parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        raise _malformed(f"{what} {echo(value)} is not an ISO 8601 time with a zone") from None
    # A day of slack for another machine's clock; later would sort first in the history for ever.
    if seconds > time.time() + 86_400:
        raise _malformed(f"{what} {echo(value)} lies in the future")
    return value


def _text(value, what: str, limit: int) -> str:
    _expect(value, str, what)
    if not value.strip() or len(value) > limit or not value.isprintable():
        raise _malformed(f"{what} must be one line of 1-{limit} printable characters, "
                         f"got {echo(value)}")
    return value


def _parse_images(content: dict) -> list[dict]:
    parsed, seen = [], set()
    items = _expect(content.get("images"), list, "images")
    for number, item in enumerate(items, 1):
        _expect(item, dict, "each image")
        _keys(item, {"sha256", "prompt", "seed", "generator", "params", "created"}, "an image")
        sha = _expect(item["sha256"], str, "an image's sha256")
        if not _SHA256.fullmatch(sha):
            raise _malformed(f"{echo(sha)} is not a SHA-256")
        if sha in seen:
            raise _malformed(f"image {sha[:12]}… is listed twice")
        seen.add(sha)
        _in_file(f"image prompt (image {number} of {len(items)})", validation.validate_prompt,
                 _expect(item["prompt"], str, "an image's prompt"))
        _text(item["generator"], "an image's generator", MAX_GENERATOR_CHARS)
        params = _expect(item["params"], dict, "an image's params")
        _check_plain_json(params, "an image's params")
        if len(_canonical_json(params)) > MAX_PARAMS_CHARS:
            raise _malformed(f"an image's params are over {MAX_PARAMS_CHARS:,} characters")
        _timestamp(item["created"], "an image's created")
        seed = item["seed"]
        if seed is not None and not (type(seed) is int and 0 <= seed < 2**32):
            raise _malformed(f"an image's seed must be null or a whole number in [0, 2^32), "
                             f"got {echo(seed)}")
        parsed.append(item)
    return parsed


def _in_file(what: str, check, *args):
    """`check(*args)`, its refusal said as the file's (`what` names the item and where it is)."""
    try:
        return check(*args)
    except InvalidInput as error:
        raise InvalidInput(f"profile file has a bad {what}: {error}") from None


def _parse_judgments(content: dict, image_shas: set[str]) -> list[tuple]:
    judgments = []
    items = _expect(content.get("judgments"), list, "judgments")
    for number, item in enumerate(items, 1):
        _expect(item, dict, "each judgment")
        _keys(item, {"kind", "image_a", "image_b", "created"}, "a judgment")
        kind = _expect(item["kind"], str, "a judgment's kind")
        where = f"judgment ({number} of {len(items)})"
        if kind not in KINDS:
            raise InvalidInput(f"profile file has a bad {where}: unknown kind {echo(kind)} (one of {', '.join(KINDS)})")
        image_a = _expect(item["image_a"], str, "a judgment's image_a")
        image_b = item["image_b"]
        if image_b is not None:
            _expect(image_b, str, "a judgment's image_b")
        created = _timestamp(item["created"], "a judgment's created")
        _in_file(where, check_judgment, kind, image_a, image_b)
        for sha in (image_a, image_b):
            if sha is not None and sha not in image_shas:
                raise _malformed(f"a judgment refers to image {echo(sha[:12])}…, which is not in it")
        judgments.append((kind, image_a, image_b, created))
    return judgments


def _parse_models(content: dict) -> list[tuple[str, dict]]:
    models, seen = [], set()
    for item in _expect(content.get("models"), list, "models"):
        _expect(item, dict, "each model")
        _keys(item, {"name", "config"}, "a model")
        name = _expect(item["name"], str, "a model's name")
        if len(name) > 64:
            raise _malformed(f"model name {echo(name)} is over 64 characters")
        validate_model_name(name)
        if name in seen:
            raise _malformed(f"model {name!r} is listed twice")
        seen.add(name)
        config = _expect(item["config"], dict, "a model's config")
        models.append((name, config))
    return models


def _parse_presets(content: dict) -> list[tuple[str, dict[str, float], str]]:
    """Each preset checked as the store checks one a person saves; a bad one refuses the file."""
    presets, seen = [], set()
    items = _expect(content.get("presets"), list, "presets")
    if len(items) > MAX_PRESETS:
        raise _malformed(f"it holds {len(items):,} presets; the limit is {MAX_PRESETS}")
    for item in items:
        _expect(item, dict, "each preset")
        _keys(item, {"name", "weights", "created"}, "a preset")
        name = _in_file("preset", validate_preset_name, _expect(item["name"], str, "a preset's name"))
        if name != item["name"]:
            raise InvalidInput(f"profile file has a bad preset: preset name {echo(item['name'])} has spaces around it")
        weights = _in_file("preset", validate_blend, _expect(item["weights"], dict, f"preset {name!r}'s weights"))
        if name.casefold() in seen:
            raise _malformed(f"preset {name!r} is listed twice")
        seen.add(name.casefold())
        presets.append((name, weights, _timestamp(item["created"], "a preset's created")))
    return presets


def _image_size(file, sha: str, entry: _Entry) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which PNG puts first."""
    file.seek(entry.start)
    head = file.read(24)
    if not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise InvalidInput(f"image {sha[:12]}… in the profile file is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _check_pixel_budget(file, entries: dict[str, _Entry], shas: list[str]) -> None:
    """Each image's sides and pixels, and all of them together, before decoding any."""
    total = 0
    for sha in shas:
        width, height = _image_size(file, sha, entries[f"image.{sha}"])
        where = f"image {sha[:12]}… in the profile file"
        if width * height > validation.MAX_IMAGE_PIXELS:
            raise InvalidInput(f"{where} is {width}×{height} = {width * height / 1e6:.0f} MP; "
                               f"the limit is {validation.MAX_IMAGE_PIXELS / 1e6:.0f} MP")
        if max(width, height) > validation.MAX_IMAGE_SIDE:
            raise InvalidInput(f"{where} is {width}×{height}; no side may exceed "
                               f"{validation.MAX_IMAGE_SIDE:,} pixels")
        total += width * height
    if total > validation.MAX_PROFILE_PIXELS:
        raise InvalidInput(f"the profile file's images hold {total / 1e6:,.0f} MP together; the "
                           f"limit is {validation.MAX_PROFILE_PIXELS / 1e6:,.0f} MP")


def _open_profile_file(path: Path):
    try:
        file = open_regular_file(path)
    except FileNotFoundError:
        raise NotFound(f"no profile file {path}") from None
    except OSError as error:
        raise NotFound(f"cannot read profile file {echo(str(path))}: {error.strerror}") from None
    size = os.fstat(file.fileno()).st_size
    limit = validation.MAX_PROFILE_FILE_BYTES
    if size > limit:
        file.close()
        raise InvalidInput(f"profile file is {validation.size_over_limit(size, limit)}")
    return file, size


def import_profile(store: HistoryStore, path: str | os.PathLike, new_name: str | None = None,
                   encoder_dims: Mapping[str, int] | None = None,
                   visible: Callable[[Profile], bool] | None = None) -> "ImportedProfile":
    """Add the profile in `path` to `store`, all or nothing; refuses anything suspect.

    Every check runs before the store is touched; then image files are written and
    all rows are added in one transaction (files this import wrote are removed again
    if that fails). `encoder_dims` (encoder name -> feature width) lets model tensors
    be checked against the encoders this PrefStudio runs.
    """
    file, size = _open_profile_file(Path(path))
    try:
        with file:
            name, records, judgments, models, presets = _check_file(store, file, size, new_name, encoder_dims,
                                                                    visible)
    except OSError as error:  # the disk or the file failing while it is read
        raise InvalidInput(f"cannot read profile file {echo(str(path))}: {error.strerror or error}") from None
    profile = store.restore_profile(name, records, judgments, models, presets)
    # A later verdict on the same image (or pair) replaces an earlier one, as when judging here.
    return ImportedProfile(profile.id, profile.name, profile.created, judgments_in_file=len(judgments),
                           judgments_kept=sum(store.counts(profile.name).values()))


@dataclass(frozen=True)
class ImportedProfile(Profile):
    """The profile an import made, and how many of the file's judgments it keeps."""

    judgments_in_file: int
    judgments_kept: int

    @property
    def repeated_or_replaced(self) -> int:
        return self.judgments_in_file - self.judgments_kept


def _check_file(store: HistoryStore, file, size: int, new_name: str | None,
                encoder_dims: Mapping[str, int] | None, visible: Callable[[Profile], bool] | None) -> tuple:
    """Everything import_profile checks, in order of cost; returns what restore_profile takes."""
    metadata, entries = _read_header(file, size)
    _check_format(metadata)
    _check_tensor_names(entries)
    profile_json = metadata["profile"]
    digest, image_hashes = _stream_digest(file, profile_json, entries)
    if digest != metadata["digest"]:
        raise InvalidInput("profile file is damaged or was edited: its content does not "
                           "match its digest")
    content = _expect(_load_json(profile_json, "the profile"), dict, "the profile")
    keys = {"name", "images", "judgments", "models"}
    _keys(content, keys | {"presets"} if int(metadata["version"]) >= 2 else keys, "the profile")
    name = (validation.validate_profile_name(new_name) if new_name is not None else
            _in_file("name (import it under another)", validation.validate_profile_name,
                     _expect(content["name"], str, "the name")))
    images = _parse_images(content)
    shas = [item["sha256"] for item in images]
    judgments = _parse_judgments(content, set(shas))
    models = _parse_models(content)
    presets = _parse_presets(content) if "presets" in content else []
    file_name = content["name"] if isinstance(content["name"], str) else None
    itself = {k for n in (name, file_name) if n for k in validation.profile_name_keys(n)}  # shown alike
    for preset_name, weights, _ in presets:
        for key in weights:
            if blended_profile(key) and validation.profile_name_keys(blended_profile(key)) & itself:
                raise InvalidInput(f"profile file has a bad preset: {preset_name!r} blends the profile itself "
                                   f"({key}); its own taste is the 'user' weight")
    expected = {f"image.{sha}" for sha in shas}
    for model_name, _ in models:
        expected |= {key for key in entries if key.startswith(f"model.{model_name}.")}
    if set(entries) - expected:
        raise _malformed(f"unexpected tensors {echo(sorted(set(entries) - expected)[:3], 200)}")
    if expected - set(entries):
        raise _malformed(f"missing tensors {echo(sorted(expected - set(entries))[:3], 200)}")
    for sha in shas:
        if image_hashes[sha] != sha:
            raise InvalidInput(f"image {sha[:12]}… in the profile file does not match its hash")
    store.check_name_free(name, hint="; import it under another name", visible=visible)

    stored_models = []
    for model_name, config in models:
        prefix = f"model.{model_name}."
        tensors = {key[len(prefix):]: _read_tensor(file, entry)
                   for key, entry in entries.items() if key.startswith(prefix)}
        check_state(model_name, tensors, config, encoder_dims)
        if {"fitted_at", "made_at"} & set(config):  # what it says of its fit is the file's account, not measured here
            config = {**config, "imported_at": time.time()}
        stored_models.append((model_name, safetensors.numpy.save(tensors), config))

    _check_pixel_budget(file, entries, shas)
    records = []
    for item in images:
        sha = item["sha256"]
        png = _read_bytes(file, entries[f"image.{sha}"])
        try:
            image = load_untrusted_image(png)
        except InvalidInput as error:
            raise InvalidInput(f"image {sha[:12]}… in the profile file: {error}") from None
        record = ImageRecord(sha, store.image_path(sha), item["prompt"], item["seed"],
                             item["generator"], _made_for(item["params"], file_name, name), image.width,
                             image.height, item["created"])
        records.append((record, png))
    return name, records, judgments, stored_models, presets


def _made_for(params: dict, file_name: str | None, name: str) -> dict:
    """An image's params as imported: one made for the file's own profile is made for the imported
    one; any other profile's name is dropped, so that a file never adds images to the Generate
    history of a profile that is already here."""
    params = dict(params)
    made_for = params.pop("personalized_for", None)
    if made_for is not None and made_for == file_name:
        params["personalized_for"] = name
    return params
