"""Bounds on everything a user can type or upload, checked before anything changes."""
import json
import math
import numbers
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

from prefstudio.errors import InvalidInput, echo

MAX_PROMPT_CHARS = 1000
# Larger than any screen (8K UHD is 33 MP) yet far below clip-art "bombs" of 100+ MP.
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 * 2**20
# Each side too: a 1×40,000,000 PNG is within the pixel bound yet takes PIL seconds and a
# gigabyte to decode (docs/design_figures.md).
MAX_IMAGE_SIDE = 16_384
MAX_PROFILE_FILE_BYTES = 1 * 2**30
# All images of one profile file together (decoding time grows with the pixels): 1,000 SDXL images.
MAX_PROFILE_PIXELS = 1_000_000_000
# The safetensors header of a profile file: tensor index plus the profile JSON (a profile
# of 10,000 judgments and 5,000 images needs about 5 MB).
MAX_PROFILE_HEADER_BYTES = 16 * 2**20
MAX_WEIGHT = 10.0
MAX_PROFILE_NAME_CHARS = 64


# Characters that reorder how text is displayed (the "Trojan Source" trick): a stored prompt
# would read differently from what it is.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
LINE_CONTROLS = frozenset("\t\n\r")
# Letters and symbols that draw as nothing: Hangul fillers (letters to Unicode) and the blank
# Braille pattern. A name or prompt of them shows as blank, or as another name with a gap.
BLANK_SYMBOLS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
MAX_MARKS_PER_LETTER = 3  # accents on accents beyond this hide which letter is under them


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON text, but no number a studio can write back
        raise ValueError(f"{text} is beyond a float's range")
    return value


def finite_json(text: str | bytes):
    """json.loads of untrusted text holding finite numbers only: NaN and ±Infinity, written or
    overflowing (1e999), raise ValueError as any other malformed JSON does."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"


def validate_prompt(prompt: str) -> str:
    if not isinstance(prompt, str):
        raise InvalidInput(f"prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:  # first: the scan below is per character
        raise InvalidInput(
            f"prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}"
        )
    for position, char in enumerate(prompt, 1):
        category = unicodedata.category(char)
        if category == "Cs":  # from undecodable bytes ($'\xff' on a command line) or a broken string
            raise InvalidInput(f"prompt has an invalid character at position {position} "
                               f"({_codepoint(char)}, a lone surrogate): it is not valid UTF-8 text")
        if category == "Cc" and char not in LINE_CONTROLS:
            raise InvalidInput(f"prompt has a control character at position {position} "
                               f"({_codepoint(char)}); type plain text")
        if char in BIDI_CONTROLS:
            raise InvalidInput(f"prompt has a text-direction override at position {position} "
                               f"({_codepoint(char)}): it would display differently from what is stored")
    # Zero-width and other format characters (U+200B, U+FEFF, …) are invisible on their own.
    if not any(not c.isspace() and unicodedata.category(c) != "Cf" and c not in BLANK_SYMBOLS for c in prompt):
        if prompt:
            raise InvalidInput("prompt has only invisible characters (zero-width or format characters): "
                               "type what the image should show")
        raise InvalidInput("prompt is empty: type what the image should show")
    return prompt


def strip_hidden_characters(text: str) -> str:
    """Third-party text (a converted data set's prompts) without what validate_prompt refuses:
    control characters become spaces; surrogates and direction overrides are dropped."""
    return "".join(" " if unicodedata.category(c) == "Cc" and c not in LINE_CONTROLS else c
                   for c in text if unicodedata.category(c) != "Cs" and c not in BIDI_CONTROLS)


def profile_name_as_stored(name: str) -> str:
    """A profile name as a menu shows it and the store keeps it: composed accents ("e" + U+0301
    is "é"), no spaces around it, runs of spaces as one. Every lookup reads a name so."""
    return re.sub(" {2,}", " ", unicodedata.normalize("NFC", name).strip())


def validate_profile_name(name: str) -> str:
    """1-64 letters (with their accents and vowel marks), digits, spaces, '-' or '_': safe in
    menus and file names."""
    if not isinstance(name, str):
        raise InvalidInput(f"profile name must be text, got {type(name).__name__}")
    name = profile_name_as_stored(name)
    if not name:
        raise InvalidInput("profile name is empty")
    if name.startswith("-"):
        raise InvalidInput(f"profile name {echo(name)} starts with '-', which a command line reads as an option; "
                           "start it otherwise")
    if len(name) > MAX_PROFILE_NAME_CHARS:
        raise InvalidInput(
            f"profile name is {len(name)} characters; the limit is {MAX_PROFILE_NAME_CHARS}"
        )
    blank = sorted({_codepoint(c) for c in name if c in BLANK_SYMBOLS})
    if blank:
        raise InvalidInput(f"profile name {echo(name)} contains an invisible character ({', '.join(blank)}); "
                           "use letters, digits, spaces, '-' or '_'")
    bad, marks = set(), 0
    for previous, char in zip(" " + name, name):
        if unicodedata.category(char) in ("Mn", "Mc"):  # an accent or vowel sign: of the letter before it
            marks += 1
            if not (previous.isalnum() or unicodedata.category(previous) in ("Mn", "Mc")):
                bad.add(char)
            elif marks > MAX_MARKS_PER_LETTER:
                raise InvalidInput(f"profile name {echo(name)} piles more than {MAX_MARKS_PER_LETTER} marks on one "
                                   "letter; use letters, digits, spaces, '-' or '_'")
        else:
            marks = 0
            if not (char.isalnum() or char in " -_"):
                bad.add(char)
    if bad:
        raise InvalidInput(
            f"profile name {echo(name)} contains {echo(''.join(sorted(bad)))}; "
            "use letters, digits, spaces, '-' or '_'"
        )
    return name


# Cyrillic and Greek letters that the menu's fonts draw as these Latin ones (a name may use
# either script, but not pass for another person's name by mixing them in).
_LATIN_LOOK_ALIKES = str.maketrans(
    "аеорсухіјѕԁһԛԝӏАВЕКМНОРСТХУІЈЅαονρΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhqwlABEKMHOPCTXYIJSaovpABEZHIKMNOPTYX")


def profile_name_keys(name: str) -> frozenset[str]:
    """Two names that share a key are one name to a menu: equal after Unicode compatibility
    folding (fullwidth forms, ligatures, superscripts), Latin look-alikes of other scripts'
    letters, case folding and runs of spaces. Look-alikes are read before case folding (Greek
    "ΡΟΡΕ" passes for Latin "POPE") and after it ("ΑΒΓ" and "αβγ" differ only in case), so a
    name has two keys."""
    compatible = unicodedata.normalize("NFKC", name)
    keys = set()
    for read in (compatible, compatible.casefold()):
        folded = unicodedata.normalize("NFKC", read.translate(_LATIN_LOOK_ALIKES).casefold())
        keys.add(" ".join(folded.split()))
    return frozenset(keys)


def weight_mapping(weights) -> dict:
    """Reward weights as given to the library: a mapping of names to numbers, checked later."""
    if not isinstance(weights, Mapping):
        raise InvalidInput(f"weights must be a mapping of reward names to numbers, got {echo(weights)}")
    return dict(weights)


def validate_weights(weights: Mapping[str, float], known: set[str]) -> dict[str, float]:
    """Reward weights: finite, in [0, MAX_WEIGHT], names the backend offers, not all zero."""
    checked = {}
    for name, value in weight_mapping(weights).items():
        if name not in known:
            raise InvalidInput(f"unknown reward {echo(name)}; available: {', '.join(sorted(known))}")
        try:
            if isinstance(value, bool):  # True is no weight, though float(True) is 1
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"weight of {echo(name)} must be a number, got {echo(value)}") from None
        if not math.isfinite(value):
            raise InvalidInput(f"weight of {name!r} is {value}; it must be a finite number")
        if not 0.0 <= value <= MAX_WEIGHT:
            raise InvalidInput(f"weight of {name!r} is {value}; it must lie in [0, {MAX_WEIGHT:g}]")
        checked[name] = value
    if not any(checked.values()):
        raise InvalidInput("all reward weights are zero: nothing to optimise")
    return checked


def size_over_limit(size: int, limit: int) -> str:
    """'65.0 MB; the limit is 64 MB', in bytes where rounding would make the two look equal."""
    if round(size / 2**20, 1) > round(limit / 2**20, 1):
        return f"{size / 2**20:,.1f} MB; the limit is {limit / 2**20:,.0f} MB"
    return f"{size:,} bytes; the limit is {limit:,} bytes ({limit / 2**20:,.0f} MB)"


DEVICE_NAMES = "cpu, cuda, cuda:N (N = 0, 1, …), mps"


def validate_device_name(device: str) -> str:
    """A device name torch understands and PrefStudio runs on; whether this machine has it is
    checked where models load (prefstudio.devices.pick_device)."""
    kind, sep, index = str(device).strip().lower().partition(":")
    if kind in ("cpu", "mps") and not sep or kind == "cuda" and (not sep or index.isdigit() and len(index) < 4):
        return f"{kind}{sep}{index}"
    raise InvalidInput(f"unknown device {echo(device)}; use one of {DEVICE_NAMES}")


def whole_number(value, what: str) -> int:
    """An int, or a float with nothing after the point (what a number box sends); not a bool or text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number, got {echo(value)}")
    return value


def validate_seed(seed) -> int:
    """A whole number (an integer of any kind, a float with nothing after the point, or text of
    digits) in [0, 2^32); never rounded: 1.5 is refused, not run as seed 1."""
    given = seed
    if isinstance(seed, str):
        seed = seed.strip()
        seed = int(seed) if seed.isascii() and seed.lstrip("+-").isdigit() else None
    elif isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        seed = None
    if seed is None:
        raise InvalidInput(f"seed must be a whole number, got {echo(given)}")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise InvalidInput(f"seed {seed} is out of range [0, 2^32)")
    return seed


def validate_output_file(path: str | os.PathLike, replaceable: Callable[[Path], bool], kind: str) -> Path:
    """A file to write: not a folder, in a folder that exists (a typo is not a new tree), and
    not a file of the person's: an existing file is replaced only when `replaceable` says
    PrefStudio wrote it (`kind` names what that is, for the refusal)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput(f"a file name must be a string or a path, got {echo(path)}")
    path = Path(path)
    parent = path.absolute().parent
    if path.is_dir():
        raise InvalidInput(f"{echo(str(path))} is a folder; give a file name inside it")
    if not parent.is_dir():
        raise InvalidInput(f"cannot write {echo(str(path))}: the folder {echo(str(parent))} does not exist")
    if path.exists() and not path.is_file():
        raise InvalidInput(f"{echo(str(path))} exists and is not a regular file")
    if path.exists() and not replaceable(path):
        raise InvalidInput(f"{echo(str(path))} exists and is not {kind}: choose another name (or delete it "
                           "first), so that nothing of yours is written over")
    if not os.access(parent, os.W_OK):
        raise InvalidInput(f"cannot write {echo(str(path))}: the folder {echo(str(parent))} is not writable")
    return path


def validate_output_folder(path: str | os.PathLike) -> Path:
    """A folder to write into: it may be new, but its parent must exist."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{echo(str(path))} is a file, not a folder")
    parent = path.absolute().parent
    if not path.exists() and not parent.is_dir():
        raise InvalidInput(f"cannot create {echo(str(path))}: the folder {echo(str(parent))} does not exist")
    return path
