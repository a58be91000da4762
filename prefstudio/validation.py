"""Bounds on everything a user can type or upload, checked before anything changes."""
import math
import reprlib
from collections.abc import Mapping

from prefstudio.errors import InvalidInput

MAX_PROMPT_CHARS = 1000
# Larger than any screen (8K UHD is 33 MP) yet far below clip-art "bombs" of 100+ MP.
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 * 2**20
# Each side too: a 1×40,000,000 PNG is within the pixel bound yet takes PIL 13 s and 1 GB.
MAX_IMAGE_SIDE = 16_384
MAX_PROFILE_FILE_BYTES = 1 * 2**30
# All images of one profile file together (decoding costs ~8 ms per MP): 1,000 SDXL images.
MAX_PROFILE_PIXELS = 1_000_000_000
# The safetensors header of a profile file: tensor index plus the profile JSON (a profile
# of 10,000 judgments and 5,000 images needs about 5 MB).
MAX_PROFILE_HEADER_BYTES = 16 * 2**20
MAX_WEIGHT = 10.0
MAX_PROFILE_NAME_CHARS = 64


def validate_prompt(prompt: str) -> str:
    if not isinstance(prompt, str):
        raise InvalidInput(f"prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if not prompt:
        raise InvalidInput("prompt is empty: type what the image should show")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(
            f"prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}"
        )
    return prompt


def validate_profile_name(name: str) -> str:
    """1-64 letters, digits, spaces, '-' or '_': safe in menus and file names."""
    if not isinstance(name, str):
        raise InvalidInput(f"profile name must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise InvalidInput("profile name is empty")
    if len(name) > MAX_PROFILE_NAME_CHARS:
        raise InvalidInput(
            f"profile name is {len(name)} characters; the limit is {MAX_PROFILE_NAME_CHARS}"
        )
    bad = sorted({c for c in name if not (c.isalnum() or c in " -_")})
    if bad:
        raise InvalidInput(
            f"profile name {name!r} contains {''.join(bad)!r}; "
            "use letters, digits, spaces, '-' or '_'"
        )
    return name


def validate_weights(weights: Mapping[str, float], known: set[str]) -> dict[str, float]:
    """Reward weights: finite, in [0, MAX_WEIGHT], names the backend offers, not all zero."""
    checked = {}
    for name, value in weights.items():
        if name not in known:
            raise InvalidInput(f"unknown reward {name!r}; available: {', '.join(sorted(known))}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"weight of {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise InvalidInput(f"weight of {name!r} is {value}; it must be a finite number")
        if not 0.0 <= value <= MAX_WEIGHT:
            raise InvalidInput(f"weight of {name!r} is {value}; it must lie in [0, {MAX_WEIGHT:g}]")
        checked[name] = value
    if not any(checked.values()):
        raise InvalidInput("all reward weights are zero: nothing to optimise")
    return checked


def validate_seed(seed) -> int:
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InvalidInput(f"seed must be a whole number, got {seed!r}") from None
    if not 0 <= seed < 2**32:
        raise InvalidInput(f"seed {seed} is out of range [0, 2^32)")
    return seed


def shorten(value, limit: int = 60) -> str:
    """A repr of `value` of at most about `limit` characters, for echoing untrusted
    input in an error message: a 1 MB string or a list nested a million deep must
    not come back whole (reprlib cuts long strings, long and deep containers)."""
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring = 3, limit
    shortener.maxother = shortener.maxlong = limit
    try:
        text = shortener.repr(value)
    except (RecursionError, ValueError):  # ValueError: an int of more than 4,300 digits
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
