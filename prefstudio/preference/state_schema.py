"""What a stored preference model may hold, per model type, checked before it is stored.

A profile file carries fitted models as tensors plus a JSON config; once stored, the
studio scores with them and the UI reads their config. A wrong shape, a NaN, a
missing field or a date of 1e300 would break that profile for good, so an import
checks every tensor and field here first. `CHECKERS` maps each stored model name to
its checker; `check_state` refuses unknown names. Each checker raises InvalidInput
with one line saying what is wrong, and returns nothing.

Kept free of the studio and the model classes: the layouts below are what the
`Taste.state()` of each model in `preference/models.py` writes (plus the fit fields
`Studio.fit` adds to the stored model), restated as data. An auto taste holds its
members' states under "<member>." prefixes and their configs in its own.
"""
import re
import time
from collections.abc import Callable, Mapping

import numpy as np

from prefstudio.errors import InvalidInput, echo

USER_EMBEDDING = "user-embedding"
PREFERENCE_TOKENS = "preference-tokens"
AUTO = "auto"
VLM_PROFILE = "vlm-profile"

# Generous bounds, far above what a fit writes (feature widths are 6 to 1,300 today, the
# taste space 32, a token history 8 pairs), that still keep a hostile file's cost small.
MAX_FEATURE_DIM = 16_384
MAX_TASTE_DIM = 1_024
MAX_HISTORY_PAIRS = 64
MAX_PAIRS = 10_000_000
# |value| above this is no fitted parameter (and could overflow float32 scores to inf);
# a standard deviation below the floor would divide features by ~0.
MAX_ABS_VALUE = 1e6
MIN_STD = 1e-7
# An auto member's spread: a fit writes one above 1e-6 (or 1); dividing by less makes scores inf.
MIN_SPREAD = 1e-6
# A day of slack for another machine's clock, as for judgments (store/profile_file.py).
CLOCK_SLACK_S = 86_400
MAX_TEXT_CHARS = 200
MAX_REASON_CHARS = 1_000
# fitted_at is seconds since 1970; the UI turns it into a date, which fails past year 9999.
LATEST_FIT_TIME = 4_102_444_800.0  # 2100-01-01
_SHA256 = re.compile(r"[0-9a-f]{64}")

# Fields every fit adds to its model's config (Studio.fit); "reason" (why this model and
# mode served) came later, so older files may lack it.
FIT_FIELDS = ("fitted_at", "mode", "n_pairs", "loo_accuracy", "loo_pairs", "reference_images")
OPTIONAL_FIT_FIELDS = ("reason", "imported_at")  # imported_at: written by an import, never read from a file


def _refuse(model: str, what: str) -> InvalidInput:
    return InvalidInput(f"{model} model: {what}")


def _tensor(model: str, tensors: Mapping[str, np.ndarray], key: str,
            shape: tuple) -> np.ndarray:
    """The float32 array `key`, finite and bounded; `shape` entries are sizes or None (any)."""
    tensor = tensors[key]
    if not isinstance(tensor, np.ndarray) or tensor.dtype != np.float32:
        raise _refuse(model, f"tensor {key!r} must be float32, got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.ndim != len(shape) or any(want is not None and got != want
                                        for got, want in zip(tensor.shape, shape)):
        expected = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise _refuse(model, f"tensor {key!r} has shape {list(tensor.shape)}, expected {expected}")
    if not np.isfinite(tensor).all():
        raise _refuse(model, f"tensor {key!r} holds NaN or infinite values")
    if tensor.size and np.abs(tensor).max() > MAX_ABS_VALUE:
        raise _refuse(model, f"tensor {key!r} holds values beyond ±{MAX_ABS_VALUE:g}")
    return tensor


def _exact_keys(model: str, what: str, found, required, optional=()) -> None:
    missing = sorted(set(required) - set(found))
    extra = sorted(set(found) - set(required) - set(optional))
    if missing:
        raise _refuse(model, f"missing {what} {', '.join(map(repr, missing))}")
    if extra:
        raise _refuse(model, f"unexpected {what} {', '.join(echo(k, 40) for k in extra[:3])}")


def _int(model: str, config: Mapping, key: str, low: int, high: int) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _refuse(model, f"config {key!r} must be a whole number in [{low}, {high}], "
                             f"got {echo(value)}")
    return value


def _text(model: str, config: Mapping, key: str) -> str:
    value = config[key]
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS \
            or not value.isprintable():
        raise _refuse(model, f"config {key!r} must be one line of 1-{MAX_TEXT_CHARS} printable "
                             f"characters, got {echo(value)}")
    return value


def _check_header(model: str, config: Mapping, encoder_dims: Mapping[str, int] | None,
                  dim: int) -> None:
    """type, version and encoder; `dim` is the feature width the tensors imply."""
    if config["type"] != model:
        raise _refuse(model, f"config 'type' is {echo(config['type'])}, expected {model!r}")
    if config["version"] != 1 or isinstance(config["version"], bool):
        raise _refuse(model, f"config 'version' {echo(config['version'])} is not one this "
                             "PrefStudio reads (1)")
    encoder = _text(model, config, "encoder")
    known = (encoder_dims or {}).get(encoder)
    if known is not None and dim != known:
        raise _refuse(model, f"its tensors are {dim}-dimensional but encoder {encoder!r} gives "
                             f"{known}-dimensional features")


def _config_keys(model: str, config: Mapping, own: tuple, fitted: bool) -> None:
    """A stored model's config is its taste's own fields plus the fit fields; a member of an
    auto taste carries its own fields only."""
    _exact_keys(model, "config field", config, own + (FIT_FIELDS if fitted else ()),
                OPTIONAL_FIT_FIELDS if fitted else ())


def _time(model: str, config: Mapping, key: str) -> None:
    """A time in seconds between 1970 and now (a day of clock slack). A fit dated later than now
    would hide "fit again to include them" for ever."""
    value = config[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not 0 <= value <= min(time.time() + CLOCK_SLACK_S, LATEST_FIT_TIME):  # NaN fails too
        raise _refuse(model, f"config {key!r} must be a time in seconds between 1970 and now, got {echo(value)}")


def _check_fit_fields(model: str, config: Mapping, max_pairs: int) -> None:
    _time(model, config, "fitted_at")
    if "imported_at" in config:  # when an import stored it (an import writes it with its own clock)
        _time(model, config, "imported_at")
    _text(model, config, "mode")
    n_pairs = _int(model, config, "n_pairs", 0, max_pairs)
    _int(model, config, "loo_pairs", 0, n_pairs)
    accuracy = config["loo_accuracy"]
    if accuracy is not None and (not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool)
                                 or not 0.0 <= accuracy <= 1.0):
        raise _refuse(model, f"config 'loo_accuracy' must be null or a number in [0, 1], "
                             f"got {echo(accuracy)}")
    reason = config.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS
                               or not reason.isprintable()):
        raise _refuse(model, f"config 'reason' must be one line of at most {MAX_REASON_CHARS} printable characters")
    references = config["reference_images"]
    if not isinstance(references, list) or not all(
            isinstance(sha, str) and _SHA256.fullmatch(sha) for sha in references):
        raise _refuse(model, "config 'reference_images' must be a list of image ids (SHA-256)")


def check_user_embedding(tensors: Mapping[str, np.ndarray], config: Mapping,
                         encoder_dims: Mapping[str, int] | None = None, fitted: bool = True) -> None:
    """UserEmbeddingModel.state(): mean, std [D]; projection [D, k]; like_vector,
    dislike_vector [k]; like_bias, dislike_bias scalars; all float32."""
    model = USER_EMBEDDING
    _exact_keys(model, "tensor", tensors, ("mean", "std", "projection", "like_vector",
                                                 "dislike_vector", "like_bias", "dislike_bias"))
    _config_keys(model, config, ("type", "version", "encoder"), fitted)
    projection = _tensor(model, tensors, "projection", (None, None))
    dim, taste = projection.shape
    if not (1 <= dim <= MAX_FEATURE_DIM and 1 <= taste <= MAX_TASTE_DIM):
        raise _refuse(model, f"projection {list(projection.shape)} is outside [1..{MAX_FEATURE_DIM}, "
                             f"1..{MAX_TASTE_DIM}]")
    _tensor(model, tensors, "mean", (dim,))
    if _tensor(model, tensors, "std", (dim,)).min() < MIN_STD:
        raise _refuse(model, f"tensor 'std' holds values below {MIN_STD:g}")
    for key in ("like_vector", "dislike_vector"):
        _tensor(model, tensors, key, (taste,))
    for key in ("like_bias", "dislike_bias"):
        _tensor(model, tensors, key, ())
    _check_header(model, config, encoder_dims, dim)
    if fitted:
        _check_fit_fields(model, config, MAX_PAIRS)


def check_preference_tokens(tensors: Mapping[str, np.ndarray], config: Mapping,
                            encoder_dims: Mapping[str, int] | None = None, fitted: bool = True) -> None:
    """The history a preference-token model reads: liked, disliked [N, D] image features
    and optionally prompts [N, T] text features (the liked images'), with disliked_prompts
    [N, T] (the disliked images' own); n_pairs is N."""
    model = PREFERENCE_TOKENS
    _exact_keys(model, "tensor", tensors, ("liked", "disliked"), ("prompts", "disliked_prompts"))
    _config_keys(model, config, ("type", "version", "checkpoint", "encoder"), fitted)
    liked = _tensor(model, tensors, "liked", (None, None))
    pairs, dim = liked.shape
    if not (pairs <= MAX_HISTORY_PAIRS and 1 <= dim <= MAX_FEATURE_DIM):
        raise _refuse(model, f"liked {list(liked.shape)} is outside [0..{MAX_HISTORY_PAIRS}, "
                             f"1..{MAX_FEATURE_DIM}]")
    _tensor(model, tensors, "disliked", (pairs, dim))
    if "prompts" in tensors:
        prompts = _tensor(model, tensors, "prompts", (pairs, None))
        if not 1 <= prompts.shape[1] <= MAX_FEATURE_DIM:
            raise _refuse(model, f"prompts {list(prompts.shape)} has no valid feature width")
        if "disliked_prompts" in tensors:
            _tensor(model, tensors, "disliked_prompts", tuple(prompts.shape))
    elif "disliked_prompts" in tensors:
        raise _refuse(model, "disliked_prompts without prompts")
    _check_header(model, config, encoder_dims, dim)
    _text(model, config, "checkpoint")
    if fitted:
        _check_fit_fields(model, config, MAX_HISTORY_PAIRS)
        if config["n_pairs"] != pairs:
            raise _refuse(model, f"config 'n_pairs' is {config['n_pairs']} but the history holds {pairs} pairs")


MEMBERS: dict[str, Callable[..., None]] = {
    USER_EMBEDDING: check_user_embedding,
    PREFERENCE_TOKENS: check_preference_tokens,
}


def check_auto(tensors: Mapping[str, np.ndarray], config: Mapping,
               encoder_dims: Mapping[str, int] | None = None) -> None:
    """A combined taste: each member's state under "<member>." plus its config, weight and
    scale (a positive spread) in config["members"]."""
    model = AUTO
    _config_keys(model, config, ("type", "version", "members"), fitted=True)
    if config["type"] != model or config["version"] != 1 or isinstance(config["version"], bool):
        raise _refuse(model, "config 'type' / 'version' are not auto / 1")
    members = config["members"]
    if not isinstance(members, Mapping) or not members or set(members) - set(MEMBERS):
        raise _refuse(model, f"config 'members' must name some of {', '.join(MEMBERS)}")
    owned = set()
    for name, entry in members.items():
        if not isinstance(entry, Mapping):
            raise _refuse(model, f"member {name!r} must be an object")
        _exact_keys(model, f"field of member {name!r}", entry, ("config", "weight", "scale"))
        for key, low, interval in (("weight", 0.0, "("), ("scale", MIN_SPREAD, "[")):
            value = entry[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not (value > low if interval == "(" else value >= low) or not value <= MAX_ABS_VALUE:
                raise _refuse(model, f"member {name!r}: {key} must be a number in {interval}{low:g}, "
                                     f"{MAX_ABS_VALUE:g}], got {echo(value)}")
        if not isinstance(entry["config"], Mapping):
            raise _refuse(model, f"member {name!r}: its config must be an object")
        prefix = f"{name}."
        own = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        owned |= {prefix + k for k in own}
        MEMBERS[name](own, entry["config"], encoder_dims, fitted=False)
    if set(tensors) - owned:
        raise _refuse(model, f"tensors of no member: {', '.join(echo(k, 40) for k in sorted(set(tensors) - owned)[:3])}")
    _check_fit_fields(model, config, MAX_PAIRS)


MAX_PROFILE_TEXT_CHARS = 4_000
MAX_EMBEDDING_DIM = 16_384


def check_vlm_profile(tensors: Mapping[str, np.ndarray], config: Mapping,
                      encoder_dims: Mapping[str, int] | None = None) -> None:
    """What a VLM wrote about a person (prefstudio.ppd.vlm_profile, 002 §4.2): "embedding" [D]
    (the last hidden state of its final token) and, in the config, the VLM, the profile
    text, the judged pairs (liked, disliked image ids) it read and when."""
    model = VLM_PROFILE
    _exact_keys(model, "tensor", tensors, ("embedding",))
    _exact_keys(model, "config field", config, ("type", "version", "vlm", "text", "pairs", "made_at"),
                ("imported_at",))
    embedding = _tensor(model, tensors, "embedding", (None,))
    if not 1 <= embedding.shape[0] <= MAX_EMBEDDING_DIM:
        raise _refuse(model, f"embedding has {embedding.shape[0]} values, outside [1, {MAX_EMBEDDING_DIM}]")
    if config["type"] != model or config["version"] != 1 or isinstance(config["version"], bool):
        raise _refuse(model, "config 'type' / 'version' are not vlm-profile / 1")
    _text(model, config, "vlm")
    text = config["text"]
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PROFILE_TEXT_CHARS \
            or not all(c.isprintable() or c == "\n" for c in text):
        raise _refuse(model, f"config 'text' must be 1-{MAX_PROFILE_TEXT_CHARS} printable characters "
                             "(newlines allowed)")
    pairs = config["pairs"]
    if not isinstance(pairs, list) or not 1 <= len(pairs) <= MAX_HISTORY_PAIRS or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and _SHA256.fullmatch(s) for s in p)
            for p in pairs):
        raise _refuse(model, f"config 'pairs' must be 1-{MAX_HISTORY_PAIRS} [liked, disliked] image ids")
    _time(model, config, "made_at")
    if "imported_at" in config:
        _time(model, config, "imported_at")


Checker = Callable[..., None]
CHECKERS: dict[str, Checker] = MEMBERS | {AUTO: check_auto, VLM_PROFILE: check_vlm_profile}


def other_models_fits(stored: list[str], served: str) -> list[str]:
    """Of a profile's stored model names, the fitted tastes of preference models other than `served`
    (made elsewhere, or under another `--preference-model`): they are kept, and not served here."""
    return [name for name in stored if name in (*MEMBERS, AUTO) and name != served]


def check_state(name: str, tensors: Mapping[str, np.ndarray], config: Mapping,
                encoder_dims: Mapping[str, int] | None = None) -> None:
    """Refuse (InvalidInput) a stored model `name` whose tensors or config do not fit its
    type. `encoder_dims` maps encoder names to their feature width, where known."""
    checker = CHECKERS.get(name)
    if checker is None:
        raise InvalidInput(f"unknown preference model {echo(name)}; this PrefStudio stores "
                           f"{', '.join(CHECKERS)}")
    if not isinstance(config, Mapping):
        raise InvalidInput(f"{name} model: its config must be a JSON object")
    # numpy arrays (the import path needs no torch); torch tensors are read as arrays too.
    checker({key: np.asarray(value) for key, value in tensors.items()}, config, encoder_dims)

