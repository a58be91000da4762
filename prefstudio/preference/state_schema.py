"""What a stored preference model may hold, per model type, checked before it is stored.

A profile file carries fitted models as tensors plus a JSON config; once stored, the
studio scores with them and the UI reads their config. A wrong shape, a NaN, a
missing field or a date of 1e300 would break that profile for good, so an import
checks every tensor and field here first. `CHECKERS` maps each stored model name to
its checker; `check_state` refuses unknown names. Each checker raises InvalidInput
with one line saying what is wrong, and returns nothing.

Kept free of the studio and the model classes: the layouts below are what
`UserEmbeddingModel.state()` and the studio's preference-token fit write (plus the
fit fields every fit adds), restated as data.
"""
import re
from collections.abc import Callable, Mapping

import torch

from prefstudio.errors import InvalidInput
from prefstudio.validation import shorten

USER_EMBEDDING = "user-embedding"
PREFERENCE_TOKENS = "preference-tokens"

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
MAX_TEXT_CHARS = 200
# fitted_at is seconds since 1970; the UI turns it into a date, which fails past year 9999.
LATEST_FIT_TIME = 4_102_444_800.0  # 2100-01-01
_SHA256 = re.compile(r"[0-9a-f]{64}")

# Fields every fit adds to its model's config (Studio._save_fit).
FIT_FIELDS = ("fitted_at", "mode", "n_pairs", "loo_accuracy", "loo_pairs", "reference_images")


def _refuse(model: str, what: str) -> InvalidInput:
    return InvalidInput(f"{model} model: {what}")


def _tensor(model: str, tensors: Mapping[str, torch.Tensor], key: str,
            shape: tuple) -> torch.Tensor:
    """The float32 tensor `key`, finite and bounded; `shape` entries are sizes or None (any)."""
    tensor = tensors[key]
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
        raise _refuse(model, f"tensor {key!r} must be float32, got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.dim() != len(shape) or any(want is not None and got != want
                                         for got, want in zip(tensor.shape, shape)):
        expected = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise _refuse(model, f"tensor {key!r} has shape {list(tensor.shape)}, expected {expected}")
    if not torch.isfinite(tensor).all():
        raise _refuse(model, f"tensor {key!r} holds NaN or infinite values")
    if tensor.numel() and tensor.abs().max() > MAX_ABS_VALUE:
        raise _refuse(model, f"tensor {key!r} holds values beyond ±{MAX_ABS_VALUE:g}")
    return tensor


def _exact_keys(model: str, what: str, found, required, optional=()) -> None:
    missing = sorted(set(required) - set(found))
    extra = sorted(set(found) - set(required) - set(optional))
    if missing:
        raise _refuse(model, f"missing {what} {', '.join(map(repr, missing))}")
    if extra:
        raise _refuse(model, f"unexpected {what} {', '.join(shorten(k, 40) for k in extra[:3])}")


def _int(model: str, config: Mapping, key: str, low: int, high: int) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _refuse(model, f"config {key!r} must be a whole number in [{low}, {high}], "
                             f"got {shorten(value)}")
    return value


def _text(model: str, config: Mapping, key: str) -> str:
    value = config[key]
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS \
            or not value.isprintable():
        raise _refuse(model, f"config {key!r} must be one line of 1-{MAX_TEXT_CHARS} printable "
                             f"characters, got {shorten(value)}")
    return value


def _check_header(model: str, config: Mapping, encoder_dims: Mapping[str, int] | None,
                  dim: int) -> None:
    """type, version and encoder; `dim` is the feature width the tensors imply."""
    if config["type"] != model:
        raise _refuse(model, f"config 'type' is {shorten(config['type'])}, expected {model!r}")
    if config["version"] != 1 or isinstance(config["version"], bool):
        raise _refuse(model, f"config 'version' {shorten(config['version'])} is not one this "
                             "PrefStudio reads (1)")
    encoder = _text(model, config, "encoder")
    known = (encoder_dims or {}).get(encoder)
    if known is not None and dim != known:
        raise _refuse(model, f"its tensors are {dim}-dimensional but encoder {encoder!r} gives "
                             f"{known}-dimensional features")


def _check_fit_fields(model: str, config: Mapping, max_pairs: int) -> None:
    fitted_at = config["fitted_at"]
    if not isinstance(fitted_at, (int, float)) or isinstance(fitted_at, bool) \
            or not 0 <= fitted_at < LATEST_FIT_TIME:  # NaN fails the comparison too
        raise _refuse(model, f"config 'fitted_at' must be a time in seconds between 1970 and "
                             f"2100, got {shorten(fitted_at)}")
    _text(model, config, "mode")
    n_pairs = _int(model, config, "n_pairs", 0, max_pairs)
    _int(model, config, "loo_pairs", 0, n_pairs)
    accuracy = config["loo_accuracy"]
    if accuracy is not None and (not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool)
                                 or not 0.0 <= accuracy <= 1.0):
        raise _refuse(model, f"config 'loo_accuracy' must be null or a number in [0, 1], "
                             f"got {shorten(accuracy)}")
    references = config["reference_images"]
    if not isinstance(references, list) or not all(
            isinstance(sha, str) and _SHA256.fullmatch(sha) for sha in references):
        raise _refuse(model, "config 'reference_images' must be a list of image ids (SHA-256)")


def check_user_embedding(tensors: Mapping[str, torch.Tensor], config: Mapping,
                         encoder_dims: Mapping[str, int] | None = None) -> None:
    """UserEmbeddingModel.state(): mean, std [D]; projection [D, k]; like_vector,
    dislike_vector [k]; like_bias, dislike_bias scalars; all float32."""
    model = USER_EMBEDDING
    _exact_keys(model, "tensor", tensors, ("mean", "std", "projection", "like_vector",
                                                 "dislike_vector", "like_bias", "dislike_bias"))
    _exact_keys(model, "config field", config, ("type", "version", "encoder") + FIT_FIELDS)
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
    _check_fit_fields(model, config, MAX_PAIRS)


def check_preference_tokens(tensors: Mapping[str, torch.Tensor], config: Mapping,
                            encoder_dims: Mapping[str, int] | None = None) -> None:
    """The history a preference-token model reads: liked, disliked [N, D] image features
    and optionally prompts [N, T] text features; n_pairs is N."""
    model = PREFERENCE_TOKENS
    _exact_keys(model, "tensor", tensors, ("liked", "disliked"), ("prompts",))
    _exact_keys(model, "config field", config, ("type", "version", "checkpoint", "encoder") + FIT_FIELDS)
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
    _check_header(model, config, encoder_dims, dim)
    _text(model, config, "checkpoint")
    _check_fit_fields(model, config, MAX_HISTORY_PAIRS)
    if config["n_pairs"] != pairs:
        raise _refuse(model, f"config 'n_pairs' is {config['n_pairs']} but the history holds {pairs} pairs")


Checker = Callable[..., None]
CHECKERS: dict[str, Checker] = {
    USER_EMBEDDING: check_user_embedding,
    PREFERENCE_TOKENS: check_preference_tokens,
}


def check_state(name: str, tensors: Mapping[str, torch.Tensor], config: Mapping,
                encoder_dims: Mapping[str, int] | None = None) -> None:
    """Refuse (InvalidInput) a stored model `name` whose tensors or config do not fit its
    type. `encoder_dims` maps encoder names to their feature width, where known."""
    checker = CHECKERS.get(name)
    if checker is None:
        raise InvalidInput(f"unknown preference model {shorten(name)}; this PrefStudio stores "
                           f"{', '.join(CHECKERS)}")
    if not isinstance(config, Mapping):
        raise InvalidInput(f"{name} model: its config must be a JSON object")
    checker(tensors, config, encoder_dims)

