"""Prompt -> style for the embedded generator.

Two sources, added together in an unconstrained style space:
- a small lexicon (assets/prompt_lexicon.json) that maps words to palette hues,
  saturation/brightness, motifs (shape kinds), layout and texture: "sunset" is warm
  with a horizon, "city" is towers, "night" is dark with stars;
- a continuous prompt vector projected by a fixed seeded matrix, so that any prompt,
  also one without lexicon words, gets its own consistent look and prompts that mean
  similar things look related. With a `TextEncoder` the vector is its embedding (and
  lexicon entries close in meaning join in, so "volcano eruption" also borrows from
  "lava"); without one it is a hashed bag of words (shared words -> related images).
"""
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from prefstudio.encoders.base import TextEncoder
from prefstudio.shipped import ASSETS

LEXICON_PATH = ASSETS / "prompt_lexicon.json"

# Lexicon scalars, all in [0, 1] in the file.
SCALARS = ("sat", "val", "contrast", "density", "size", "softness", "grain", "stripes", "dots",
           "stars", "glow", "gradient", "rotation", "vignette", "horizon", "horizon_y")
KINDS = ("circle", "box", "ring", "band", "blob", "line", "petal", "tower", "triangle", "tree")
LAYOUTS = ("center", "thirds", "scatter", "horizon")
# The style vector: scalars as logits, kind and layout logits, and a palette rotation in turns.
STYLE_NAMES = SCALARS + tuple(f"kind_{k}" for k in KINDS) + tuple(f"layout_{l}" for l in LAYOUTS) \
    + ("hue_shift",)

_STOPWORDS = frozenset(
    "a an the of in on at over under above below by with and or to from into for is are "
    "its it this that my your their his her some very".split()
)
_MAX_ANCHOR_HUES = 4
_PRIOR_WEIGHT = 0.3      # the defaults count as 0.3 of a word
_HASH_DIM = 64
_PROJECTION_SEED = 20261123
# How far the prompt vector moves the style (logit units per unit of vector length).
_VECTOR_GAIN = 0.6
# Lexicon entries whose meaning is close to the prompt's join in (text encoder only):
# weight 0.5 * clamp((similarity - 0.4) / 0.3, 0, 1), for the 3 closest entries.
_SEMANTIC_FLOOR, _SEMANTIC_RANGE, _SEMANTIC_WEIGHT, _SEMANTIC_TOP = 0.4, 0.3, 0.5, 3


@dataclass(frozen=True)
class PromptStyle:
    """The conditioning `EmbeddedGenerator.render` takes."""
    mean: torch.Tensor          # [len(STYLE_NAMES)] style the seeds vary around
    hues: torch.Tensor          # [A] palette anchor hues in turns (0 red, 1/3 green, 2/3 blue)
    hue_spread: float           # how far the palette may fan out from the anchors
    words: tuple[str, ...]      # lexicon entries that matched, strongest first


def words_of(prompt: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w not in _STOPWORDS]


class Lexicon:
    def __init__(self, path: Path = LEXICON_PATH):
        data = json.loads(Path(path).read_text())
        self.version: str = data["version"]
        self.defaults: dict = data["defaults"]
        self.entries: dict[str, dict] = data["words"]
        self.aliases: dict[str, str] = data["aliases"]
        for word, target in self.aliases.items():
            if target not in self.entries:
                raise ValueError(f"{path}: alias {word!r} points to unknown word {target!r}")
        for word, entry in self.entries.items():
            unknown = set(entry) - set(SCALARS) - {"hue", "kinds", "layout"}
            unknown |= set(entry.get("kinds", {})) - set(KINDS)
            unknown |= set(entry.get("layout", {})) - set(LAYOUTS)
            if unknown:
                raise ValueError(f"{path}: entry {word!r} has unknown fields {sorted(unknown)}")

    def lookup(self, word: str) -> str | None:
        """The entry a word names, directly, as an alias, or after stripping a suffix."""
        candidates = [word]
        for suffix, replacement in (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ed", ""),
                                    ("ly", ""), ("y", ""), ("ish", "")):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                candidates.append(word[: -len(suffix)] + replacement)
        for candidate in candidates:
            if candidate in self.entries:
                return candidate
            if candidate in self.aliases:
                return self.aliases[candidate]
        return None


class PromptStyler:
    """Turns prompts into `PromptStyle`s; deterministic for (prompt, lexicon, text encoder)."""

    def __init__(self, text_encoder: TextEncoder | None = None, lexicon: Lexicon | None = None):
        self.lexicon = lexicon or Lexicon()
        self.text_encoder = text_encoder
        dim = text_encoder.dim if text_encoder is not None else _HASH_DIM
        rng = torch.Generator().manual_seed(_PROJECTION_SEED)
        # Rows: one per style entry, plus two that give a hue angle when no word names a colour.
        self._projection = torch.randn(len(STYLE_NAMES) + 2, dim, generator=rng)
        self._entry_names = list(self.lexicon.entries)
        self._entry_features: torch.Tensor | None = None   # text features of the entry words
        self._reference: torch.Tensor | None = None        # features of a generic prompt

    @property
    def vector_name(self) -> str:
        return self.text_encoder.name if self.text_encoder is not None else f"hashed-words-{_HASH_DIM}"

    def __call__(self, prompt: str) -> PromptStyle:
        matched: dict[str, float] = {}
        for word in words_of(prompt):
            entry = self.lexicon.lookup(word)
            if entry is not None and entry not in matched:
                matched[entry] = 1.0
        vector = self._prompt_vector(prompt, matched)
        return self._style(list(matched.items()), vector)

    def _prompt_vector(self, prompt: str, matched: dict[str, float]) -> torch.Tensor:
        """A prompt vector; with a text encoder, also adds lexicon entries close in meaning."""
        if self.text_encoder is None:
            return _hashed_bag_of_words([self.lexicon.lookup(w) or w for w in words_of(prompt)])
        if self._entry_features is None:
            features = self.text_encoder.encode(self._entry_names + ["a picture"]).float().cpu()
            self._entry_features, self._reference = features[:-1], features[-1]
        embedding = self.text_encoder.encode([prompt])[0].float().cpu()
        similarity = self._entry_features @ embedding
        added = 0
        for index in similarity.argsort(descending=True).tolist():
            strength = (float(similarity[index]) - _SEMANTIC_FLOOR) / _SEMANTIC_RANGE
            if added == _SEMANTIC_TOP or strength <= 0:
                break
            name = self._entry_names[index]
            if name not in matched:
                matched[name] = _SEMANTIC_WEIGHT * min(strength, 1.0)
                added += 1
        # Centred on a generic prompt: what all prompts share must not move the style.
        return embedding - self._reference

    def _style(self, matched: list[tuple[str, float]], vector: torch.Tensor) -> PromptStyle:
        defaults, entries = self.lexicon.defaults, self.lexicon.entries
        mean = torch.zeros(len(STYLE_NAMES))
        for i, name in enumerate(SCALARS):
            total, weight = _PRIOR_WEIGHT * defaults[name], _PRIOR_WEIGHT
            for word, w in matched:
                if name in entries[word]:
                    # Decisive values (far from 0.5) weigh more: "city at night" is dark.
                    value = entries[word][name]
                    w = w * (1.0 + 4.0 * abs(value - 0.5))
                    total, weight = total + w * value, weight + w
            mean[i] = torch.logit(torch.tensor(total / weight).clamp(0.02, 0.98))
        for group, names, offset in (("kinds", KINDS, len(SCALARS)),
                                     ("layout", LAYOUTS, len(SCALARS) + len(KINDS))):
            for j, name in enumerate(names):
                w = _PRIOR_WEIGHT * defaults[group][name]
                w += sum(wt * entries[word].get(group, {}).get(name, 0.0) for word, wt in matched)
                mean[offset + j] = 2.0 * torch.log(torch.tensor(w + 0.1))

        # The more lexicon words speak, the less the prompt vector adds (it fills in the rest).
        gain = _VECTOR_GAIN / (1.0 + 2.0 * sum(w for _, w in matched))
        projected = self._projection @ vector
        mean = mean + gain * projected[: len(STYLE_NAMES)]
        hues = _anchor_hues(matched, entries)
        if hues:
            # Words chose the colours: the prompt vector only nudges them (a few degrees).
            mean[-1] = 0.04 * gain * projected[len(STYLE_NAMES) - 1]
            anchors, spread = torch.tensor(hues) / 360.0, 1.0 if len(hues) == 1 else 0.35
        else:
            # No colour words: the prompt vector picks the hue, the same one every time.
            mean[-1] = 0.0
            angle = torch.atan2(projected[-1], projected[-2]) / (2 * torch.pi)
            anchors, spread = angle.reshape(1) % 1.0, 1.0
        return PromptStyle(mean, anchors.float(), spread, tuple(w for w, _ in matched))


def _anchor_hues(matched: list[tuple[str, float]], entries: dict) -> list[float]:
    """Each word's first hue, then each word's second, ...: every named colour shows up."""
    lists = [entries[w]["hue"] for w, _ in matched if "hue" in entries[w]]
    hues = []
    for rank in range(max((len(h) for h in lists), default=0)):
        hues += [h[rank] for h in lists if rank < len(h)]
    return hues[:_MAX_ANCHOR_HUES]


def _hashed_bag_of_words(words: list[str]) -> torch.Tensor:
    """Sum of one fixed random vector per word (stable across runs), unit length."""
    total = torch.zeros(_HASH_DIM)
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        rng = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        total += torch.randn(_HASH_DIM, generator=rng)
    norm = total.norm()
    return total / norm if norm > 0 else total
