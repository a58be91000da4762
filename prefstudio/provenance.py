"""Provenance: every image that leaves the studio says how it was made.

A PNG written here carries two text chunks, before the pixel data:

    parameters   A1111-style text (prompt, then "Seed: …, Size: …, Model: …" on the last line),
                 which image viewers and other Stable Diffusion tools read and show
    prefstudio   JSON: prompt, seed, generator, params, reward weights, the fit it was made
                 with, its role (baseline / personalized / side by side / candidate / trade-off grid) and scores

`read_provenance` accepts a PNG from anywhere (a dropped file is data, never code): the file
and each chunk are bounded, only the PNG header and text chunks are parsed (no pixels
decoded), every field is checked and anything unknown is dropped. The `prefstudio` chunk of
images in the history store (prompt, seed, generator, params) reads as a subset.
"""
import io
import json
import math
import os
import re
from pathlib import Path

from PIL import Image, PngImagePlugin

from prefstudio.atomic_write import write_atomically
from prefstudio.errors import InvalidInput
from prefstudio.validation import MAX_IMAGE_BYTES, finite_json, validate_prompt, validate_seed

KEY = "prefstudio"
PARAMETERS_KEY = "parameters"
VERSION = 1
ROLES = ("candidate", "baseline", "personalized", "side-by-side", "trade-off-grid")
MAX_CHUNK_CHARS = 64 * 1024  # far above any real record; a bigger chunk is refused, not parsed
MAX_NAME_CHARS = 200
MAX_ENTRIES = 64  # weights, scores and fit keys
_FIT_KEYS = ("profile", "model", "type", "mode", "n_pairs", "loo_accuracy", "loo_pairs", "fitted_at",
             "encoder", "checkpoint")


# --- writing ----------------------------------------------------------------------------


def fit_summary(profile: str, model: str, config: dict | None) -> dict | None:
    """The scalar facts of a stored fit (`Studio.fit_status`) worth carrying in an image."""
    if config is None:
        return None
    return {"profile": profile, "model": model} | {k: config[k] for k in _FIT_KEYS if k in config}


def a1111_parameters(info: dict, size: tuple[int, int]) -> str:
    """The `parameters` text as AUTOMATIC1111's web UI writes it: prompt, then settings."""
    settings = {}
    if info.get("params", {}).get("iterations"):
        settings["Steps"] = info["params"]["iterations"]
    if info.get("seed") is not None:
        settings["Seed"] = info["seed"]
    settings["Size"] = f"{size[0]}x{size[1]}"
    settings["Model"] = info.get("generator", "")
    if info.get("params", {}).get("method"):
        settings["Method"] = info["params"]["method"]
    if info.get("weights"):
        settings["Reward weights"] = ", ".join(f"{k}={v:g}" for k, v in info["weights"].items())
    fit = info.get("fit") or {}
    if fit.get("profile"):
        settings["Profile"] = fit["profile"]
    if fit.get("mode"):
        settings["Fit"] = f"{fit['mode']}, {fit.get('n_pairs', '?')} pairs"
    if info.get("role"):
        settings["PrefStudio"] = info["role"]

    def value(v) -> str:  # A1111 quotes values holding its separators
        text = str(v)
        return json.dumps(text) if any(c in text for c in ',:\n"') else text

    return f"{info['prompt']}\n" + ", ".join(f"{k}: {value(v)}" for k, v in settings.items())


def encode_png_with_provenance(image: Image.Image, info: dict) -> bytes:
    info = check_info(info)
    try:
        text = json.dumps(info, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:  # params holding NaN or a non-JSON object
        raise InvalidInput(f"provenance must be plain JSON values: {error}") from None
    if len(text) > MAX_CHUNK_CHARS:
        raise InvalidInput(f"provenance record is {len(text):,} characters; the limit is {MAX_CHUNK_CHARS:,}")
    png_info = PngImagePlugin.PngInfo()
    png_info.add_itxt(PARAMETERS_KEY, a1111_parameters(info, image.size))
    png_info.add_itxt(KEY, text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info)
    return buffer.getvalue()


def write_png_with_provenance(image: Image.Image, path: str | os.PathLike, info: dict) -> Path:
    """Write `image` as a PNG at `path` with its provenance (see the module docstring).

    `info`: prompt and generator (required); seed, params, weights, fit, role, scores."""
    path = Path(path)
    write_atomically(path, encode_png_with_provenance(image, info))
    return path


# --- checking (both directions) ---------------------------------------------------------


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS or not value.isprintable():
        raise InvalidInput(f"provenance: {what} must be printable text of 1-{MAX_NAME_CHARS} characters")
    return value


def _number(value, what: str) -> float:
    # A whole number past float's range is no weight or score either (and isfinite would overflow).
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or isinstance(value, int) and abs(value) > 2**64 or not math.isfinite(value):
        raise InvalidInput(f"provenance: {what} must be a finite number")
    return value


def _scalars(value, what: str, numbers_only: bool = False) -> dict:
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise InvalidInput(f"provenance: {what} must be an object of at most {MAX_ENTRIES} entries")
    checked = {}
    for key, item in value.items():
        key = _name(key, f"a key of {what}")
        if numbers_only or isinstance(item, (int, float)) and not isinstance(item, bool):
            checked[key] = _number(item, f"{what}[{key}]")
        elif item is None or isinstance(item, bool):
            checked[key] = item
        else:
            checked[key] = _name(item, f"{what}[{key}]")
    return checked


def check_info(info: dict) -> dict:
    """The known fields of a provenance record, each checked; unknown fields are dropped."""
    if not isinstance(info, dict):
        raise InvalidInput("provenance must be a JSON object")
    checked = {"version": VERSION, "prompt": validate_prompt(info.get("prompt")),
               "generator": _name(info.get("generator"), "generator")}
    if info.get("seed") is not None:
        if isinstance(info["seed"], bool) or not isinstance(info["seed"], int):
            raise InvalidInput("provenance: seed must be a whole number")
        checked["seed"] = validate_seed(info["seed"])
    if info.get("params") is not None:
        if not isinstance(info["params"], dict):
            raise InvalidInput("provenance: params must be an object")
        # Plain JSON, bounded by the chunk size; the fields a reader acts on are checked as the others.
        checked["params"] = dict(info["params"])
        if "method" in info["params"]:
            checked["params"]["method"] = _name(info["params"]["method"], "params.method")
        if "weights" in info["params"]:
            checked["params"]["weights"] = _scalars(info["params"]["weights"], "params.weights", numbers_only=True)
    for key in ("weights", "scores"):
        if info.get(key) is not None:
            checked[key] = _scalars(info[key], key, numbers_only=True)
    if info.get("fit") is not None:
        checked["fit"] = _scalars(info["fit"], "fit")
    if info.get("role") is not None:
        if info["role"] not in ROLES:
            raise InvalidInput(f"provenance: role must be one of {', '.join(ROLES)}")
        checked["role"] = info["role"]
    return checked


# --- reading ----------------------------------------------------------------------------


def _bounded_bytes(source: str | os.PathLike | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            if not path.is_file():
                raise InvalidInput(f"{path} is not a regular file")
            with open(path, "rb") as file:
                data = file.read(MAX_IMAGE_BYTES + 1)
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"image is larger than {MAX_IMAGE_BYTES // 2**20} MB, the limit")
    return data


def _from_json(text: str) -> dict:
    try:
        value = finite_json(text)
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"provenance chunk is not valid JSON ({error.__class__.__name__})") from None
    return check_info(value)


_SEED = re.compile(r"(?:^|, )Seed: (\d{1,10})(?:,|$)")


def _from_parameters(text: str) -> dict:
    """Prompt and seed of an A1111 `parameters` chunk (written by another tool)."""
    lines = text.split("\n")
    last = lines[-1]
    settings = last if len(lines) > 1 and (last.startswith("Steps: ") or "Seed: " in last) else ""
    body = lines[:-1] if settings else lines
    prompt_lines = []
    for line in body:
        if line.startswith("Negative prompt:"):
            break
        prompt_lines.append(line)
    info = {"prompt": "\n".join(prompt_lines), "generator": "unknown (A1111 parameters)"}
    seed = _SEED.search(settings)
    if seed and int(seed.group(1)) < 2**32:
        info["seed"] = int(seed.group(1))
    return check_info(info)


def read_provenance(source: str | os.PathLike | bytes) -> dict:
    """The checked provenance of a PNG (a path or its bytes); InvalidInput if it has none.

    Prefers the `prefstudio` JSON chunk, else reads prompt and seed from an A1111
    `parameters` chunk. Pixels are never decoded."""
    data = _bounded_bytes(source)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InvalidInput("not a PNG: only PNG files carry provenance")
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            text = dict(image.info)  # text chunks before the pixel data are parsed on open
    except Exception as error:  # PIL's PNG reader raises several types on malformed chunks
        raise InvalidInput(f"PNG cannot be read ({error.__class__.__name__})") from None
    for key in (KEY, PARAMETERS_KEY):
        value = text.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_CHUNK_CHARS:
            raise InvalidInput(f"the PNG's {key!r} chunk is over {MAX_CHUNK_CHARS:,} characters")
        return _from_json(value) if key == KEY else _from_parameters(value)
    raise InvalidInput("this PNG carries no generation settings (no 'prefstudio' or 'parameters' chunk)")
