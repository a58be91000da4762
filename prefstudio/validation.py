"""Bounds on everything a user can type or upload, checked before anything changes."""
import math
import unicodedata
from collections.abc import Mapping

from prefstudio.errors import InvalidInput

MAX_PROMPT_CHARS = 1000
# Larger than any screen (8K UHD is 33 MP) yet far below clip-art "bombs" of 100+ MP.
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 * 2**20
MAX_PROFILE_FILE_BYTES = 1 * 2**30
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


def profile_name_key(name: str) -> str:
    """What two profile names must not share: names equal after Unicode compatibility
    folding (fullwidth forms, ligatures, superscripts) and case folding look alike in a menu."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


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
