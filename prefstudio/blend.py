"""Blends: reward weights that may include other people's tastes, and the presets that name them.

A blend maps reward names to weights. Besides the studio's own rewards ("user" is the
profile being personalized, "prompt_consistency", ...), any fitted profile can join as
`profile:NAME` (PPD 002 §5.1: interpolating between users' rewards at inference). A
preset is a named blend stored with its profile and exported in its profile file, so
every preset is checked here the same way whether a person typed it or a file brought it.
"""
import math
import re
from collections.abc import Mapping

from prefstudio.errors import InvalidInput, echo
from prefstudio.validation import MAX_WEIGHT, validate_profile_name

PROFILE_PREFIX = "profile:"
MAX_BLEND_TERMS = 32  # rewards in one blend: far more than a page of sliders
MAX_PRESETS = 100  # per profile
MAX_PRESET_NAME_CHARS = 64
# A reward of the studio (lower-case id); `profile:NAME` entries are checked as profile names.
_REWARD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def profile_reward(profile: str) -> str:
    """The blend entry of a profile's taste."""
    return PROFILE_PREFIX + profile


def blended_profile(reward: str) -> str | None:
    """The profile a `profile:NAME` entry names, or None for any other reward."""
    return reward[len(PROFILE_PREFIX):] if reward.startswith(PROFILE_PREFIX) else None


def validate_reward_name(name) -> str:
    """A reward id or `profile:NAME` (NAME a valid profile name, kept as written)."""
    if not isinstance(name, str):
        raise InvalidInput(f"a reward name must be text, got {echo(name)}")
    profile = blended_profile(name)
    if profile is not None:
        if profile != profile.strip():
            raise InvalidInput(f"reward {echo(name)}: the profile name has spaces around it")
        validate_profile_name(profile)
        return name
    if not _REWARD_NAME.fullmatch(name):
        raise InvalidInput(f"unknown reward {echo(name)}: a reward is a lower-case id (user, prompt_consistency, "
                           "…) or profile:NAME for a fitted profile's taste")
    return name


def validate_blend(weights) -> dict[str, float]:
    """Weights of a blend, whatever the rewards of this studio: names well formed, each weight
    a finite number in [0, MAX_WEIGHT], at most MAX_BLEND_TERMS of them, not all zero."""
    if not isinstance(weights, Mapping):
        raise InvalidInput(f"a blend's weights must be a mapping of reward names to numbers, got {echo(weights)}")
    if not weights:
        raise InvalidInput("a blend needs at least one reward weight")
    if len(weights) > MAX_BLEND_TERMS:
        raise InvalidInput(f"a blend has {len(weights)} rewards; the limit is {MAX_BLEND_TERMS}")
    checked = {}
    for name, value in weights.items():
        name = validate_reward_name(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidInput(f"weight of {echo(name)} must be a number, got {echo(value)}")
        if not math.isfinite(value) or not 0.0 <= value <= MAX_WEIGHT:
            raise InvalidInput(f"weight of {echo(name)} is {echo(value)}; it must lie in [0, {MAX_WEIGHT:g}]")
        checked[name] = float(value)
    if not any(checked.values()):
        raise InvalidInput("all weights of the blend are zero: nothing to optimise")
    return checked


def validate_preset_name(name) -> str:
    """1-64 printable characters on one line, trimmed."""
    if not isinstance(name, str):
        raise InvalidInput(f"a preset name must be text, got {echo(name)}")
    name = name.strip()
    if not name:
        raise InvalidInput("the preset name is empty: type a name for this blend")
    if len(name) > MAX_PRESET_NAME_CHARS or not name.isprintable():
        raise InvalidInput(f"preset name {echo(name)} must be one line of 1-{MAX_PRESET_NAME_CHARS} "
                           "printable characters")
    return name
