"""A profile as one portable, versioned file, safe to accept from anyone.

The file is safetensors (no pickle): its `__metadata__` holds
    format  "prefstudio-profile"
    version "1"
    profile JSON: name, judgments (by image sha), image records, model configs
    digest  SHA-256 over the profile JSON and every tensor (name, dtype, shape, bytes)
and its tensors are each image's PNG bytes (`image.<sha>`, uint8) and the fitted
models' tensors (`model.<name>.<tensor>`). The digest catches damaged or hand-edited
files; it is not a signature. What keeps a hostile file harmless is the rest of the
checks: bounded size, each image's bytes must hash to its name and decode within
the upload bounds, and nothing is executed or unpickled.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from prefstudio import validation
from prefstudio.errors import InvalidInput, NotFound
from prefstudio.store.history import (
    HistoryStore,
    ImageRecord,
    Profile,
    check_judgment,
    validate_model_name,
)
from prefstudio.store.image_files import load_untrusted_image, write_atomically

FORMAT = "prefstudio-profile"
VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()  # via uint8: numpy has no bfloat16


def content_digest(profile_json: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(profile_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        header = f"\n{name}\n{tensor.dtype}\n{list(tensor.shape)}\n"
        digest.update(header.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def export_profile(store: HistoryStore, profile_name: str, path: str | os.PathLike) -> Path:
    """Write the profile's judgments, the images they refer to and its fitted models."""
    profile = store.get_profile(profile_name)
    judgments = store.judgments(profile.name)
    shas = list(dict.fromkeys(
        sha for j in judgments for sha in (j.image_a, j.image_b) if sha is not None
    ))
    tensors: dict[str, torch.Tensor] = {}
    images = []
    for sha in shas:
        record = store.image_record(sha)
        try:
            png = record.path.read_bytes()
        except OSError as error:
            raise NotFound(f"image file {record.path} is missing: {error.strerror}") from None
        if hashlib.sha256(png).hexdigest() != sha:
            raise InvalidInput(f"image file {record.path} is damaged: its bytes changed on disk")
        tensors[f"image.{sha}"] = torch.frombuffer(bytearray(png), dtype=torch.uint8)
        images.append({"sha256": sha, "prompt": record.prompt, "seed": record.seed,
                       "generator": record.generator, "params": record.params,
                       "created": record.created})
    models = []
    for model_name in store.model_names(profile.name):
        model_tensors, config = store.load_model(profile.name, model_name)
        for key, tensor in model_tensors.items():
            tensors[f"model.{model_name}.{key}"] = tensor
        models.append({"name": model_name, "config": config})
    content = {
        "name": profile.name,
        "images": images,
        "judgments": [{"kind": j.kind, "image_a": j.image_a, "image_b": j.image_b,
                       "created": j.created} for j in judgments],
        "models": models,
    }
    profile_json = _canonical_json(content)
    metadata = {"format": FORMAT, "version": str(VERSION), "profile": profile_json,
                "digest": content_digest(profile_json, tensors)}
    path = Path(path)
    write_atomically(path, safetensors.torch.save(tensors, metadata=metadata))
    return path


# --- import ------------------------------------------------------------------------


def _malformed(what: str) -> InvalidInput:
    return InvalidInput(f"profile file is malformed: {what}")


def _expect(value, kind, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _malformed(f"{what} must be {getattr(kind, '__name__', kind)}")
    return value


def _read_file(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise NotFound(f"cannot read profile file {path}: {error.strerror}") from None
    limit = validation.MAX_PROFILE_FILE_BYTES
    if size > limit:
        raise InvalidInput(f"profile file is {size / 2**20:,.0f} MB; the limit is "
                           f"{limit / 2**20:,.0f} MB")
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            _check_format(metadata)
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise InvalidInput(f"not a PrefStudio profile file (not a safetensors file: {error})") \
            from None
    return metadata, tensors


def _check_format(metadata: dict) -> None:
    if metadata.get("format") != FORMAT:
        raise InvalidInput(f"not a PrefStudio profile file (format "
                           f"{metadata.get('format')!r}, expected {FORMAT!r})")
    version = metadata.get("version", "")
    if not version.isdigit():
        raise InvalidInput(f"profile file has an unreadable version {version!r}")
    if int(version) > VERSION:
        raise InvalidInput(f"profile file version {int(version)} is newer than this "
                           f"PrefStudio understands ({VERSION}); upgrade PrefStudio")
    if int(version) != VERSION:
        raise InvalidInput(f"profile file version {int(version)} is not one this "
                           f"PrefStudio reads ({VERSION})")


def _parse_images(content: dict, tensors: dict) -> list[tuple[dict, bytes]]:
    parsed = []
    for item in _expect(content.get("images"), list, "images"):
        _expect(item, dict, "each image")
        sha = _expect(item.get("sha256"), str, "an image's sha256")
        if not _SHA256.fullmatch(sha):
            raise _malformed(f"{sha!r} is not a SHA-256")
        validation.validate_prompt(_expect(item.get("prompt"), str, "an image's prompt"))
        _expect(item.get("generator"), str, "an image's generator")
        _expect(item.get("params"), dict, "an image's params")
        _expect(item.get("created"), str, "an image's created")
        if item.get("seed") is not None:
            validation.validate_seed(_expect(item["seed"], int, "an image's seed"))
        tensor = tensors.get(f"image.{sha}")
        if tensor is None or tensor.dtype != torch.uint8 or tensor.dim() != 1:
            raise _malformed(f"image {sha[:12]}… has no uint8 byte tensor")
        parsed.append((item, tensor.numpy().tobytes()))
    return parsed


def _parse_models(content: dict, tensors: dict) -> list[tuple[str, dict, dict]]:
    models = []
    for item in _expect(content.get("models"), list, "models"):
        _expect(item, dict, "each model")
        name = validate_model_name(_expect(item.get("name"), str, "a model's name"))
        config = _expect(item.get("config"), dict, "a model's config")
        prefix = f"model.{name}."
        models.append((name, {k[len(prefix):]: t for k, t in tensors.items()
                              if k.startswith(prefix)}, config))
    return models


def _parse_judgments(content: dict, image_shas: set[str]) -> list[tuple]:
    judgments = []
    for item in _expect(content.get("judgments"), list, "judgments"):
        _expect(item, dict, "each judgment")
        kind = _expect(item.get("kind"), str, "a judgment's kind")
        image_a = _expect(item.get("image_a"), str, "a judgment's image_a")
        image_b = item.get("image_b")
        if image_b is not None:
            _expect(image_b, str, "a judgment's image_b")
        created = _expect(item.get("created"), str, "a judgment's created")
        check_judgment(kind, image_a, image_b)
        for sha in (image_a, image_b):
            if sha is not None and sha not in image_shas:
                raise _malformed(f"a judgment refers to image {sha[:12]}…, which is not in it")
        judgments.append((kind, image_a, image_b, created))
    return judgments


def import_profile(store: HistoryStore, path: str | os.PathLike,
                   new_name: str | None = None) -> Profile:
    """Add the profile in `path` to `store`, all or nothing; refuses anything suspect.

    Every check runs before the store is touched; then image files are written and
    all rows are added in one transaction.
    """
    metadata, tensors = _read_file(Path(path))
    profile_json = metadata.get("profile", "")
    if content_digest(profile_json, tensors) != metadata.get("digest"):
        raise InvalidInput("profile file is damaged or was edited: its content does not "
                           "match its digest")
    try:
        content = _expect(json.loads(profile_json), dict, "the profile")
    except json.JSONDecodeError as error:
        raise _malformed(f"the profile is not JSON ({error})") from None

    name = validation.validate_profile_name(
        new_name if new_name is not None else _expect(content.get("name"), str, "the name")
    )
    images = _parse_images(content, tensors)
    image_shas = {item["sha256"] for item, _ in images}
    judgments = _parse_judgments(content, image_shas)
    models = _parse_models(content, tensors)
    expected = {f"image.{sha}" for sha in image_shas}
    expected |= {f"model.{m}.{key}" for m, model_tensors, _ in models for key in model_tensors}
    if set(tensors) != expected:
        raise _malformed(f"unexpected tensors {sorted(set(tensors) - expected)[:3]}")
    store.check_name_free(name, hint="; import it under another name")

    records = []
    for item, png in images:
        sha = item["sha256"]
        if hashlib.sha256(png).hexdigest() != sha:
            raise InvalidInput(f"image {sha[:12]}… in the profile file does not match its hash")
        try:
            image = load_untrusted_image(png)
        except InvalidInput as error:
            raise InvalidInput(f"image {sha[:12]}… in the profile file: {error}") from None
        if not png.startswith(_PNG_SIGNATURE):
            raise InvalidInput(f"image {sha[:12]}… in the profile file is not a PNG")
        record = ImageRecord(sha, store.image_path(sha), item["prompt"], item.get("seed"),
                             item["generator"], item["params"], image.width, image.height,
                             item["created"])
        records.append((record, png))
    return store.restore_profile(name, records, judgments, models)
