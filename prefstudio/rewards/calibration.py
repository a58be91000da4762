"""Measured normalisation: each reward's offset and spread on the person's own generator.

    python -m prefstudio --model sd-turbo calibrate --prompts 24 --seeds 4

scores N prompts × M seeds of unguided images (as PNG pixels, the way the studio scores
them) with every catalogued reward that is ready, and writes the mean (offset) and standard
deviation (spread) of its raw scores to `<data>/reward_calibration.json`. The studio reads
that file when it starts and uses the constants for the same generator, resolution, reward
and reward weights; anything not calibrated keeps its shipped estimate, which says so.

Why the data folder and not beside the weights: the constants depend on the generator's
images as much as on the reward (CLIP scores of SD-Turbo and FLUX images differ), so they are
keyed by both; a Hugging Face cache snapshot is content-addressed and not ours to write
into, and a reward folder may be read-only or shared by several generators.

The file is data a person (or anything else) could edit: it is read bounded, as JSON, and
every field is checked; a file that fails is refused with a message naming the problem.
"""
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prefstudio.errors import InvalidInput
from prefstudio.rewards.base import Reward

CALIBRATION_FILE = "reward_calibration.json"
FORMAT = "prefstudio-reward-calibration"
VERSION = 1
MAX_FILE_BYTES = 1 << 20
MAX_ENTRIES = 1000
MAX_TEXT = 2000
MAX_PROMPTS, MAX_SEEDS = 200, 64
MIN_IMAGES = 4
BATCH = 8  # images rendered at once: a 512² batch of 64 would not fit a small GPU


@dataclass(frozen=True)
class Calibration:
    generator: str
    resolution: int
    reward: str
    weights: str  # what the reward read (folder, hub id, head file)
    offset: float
    spread: float
    images: int
    prompts: int
    seeds: int
    measured_at: float
    command: str

    @property
    def key(self) -> tuple[str, int, str, str]:
        return self.generator, self.resolution, self.reward, self.weights

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d", time.gmtime(self.measured_at))
        return (f"measured on {self.images} unguided images of {self.generator} at {self.resolution}px "
                f"({self.prompts} prompts × {self.seeds} seeds), {when}")


_FIELDS = {"generator": str, "resolution": int, "reward": str, "weights": str, "offset": float, "spread": float,
           "images": int, "prompts": int, "seeds": int, "measured_at": float, "command": str}


def _entry(row, path: Path, index: int) -> Calibration:
    where = f"{path}: entry {index}"
    if not isinstance(row, dict) or set(row) != set(_FIELDS):
        raise InvalidInput(f"{where} must have exactly the fields {', '.join(_FIELDS)}")
    values = {}
    for name, kind in _FIELDS.items():
        value = row[name]
        if kind is str:
            if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
                raise InvalidInput(f"{where}: {name} must be a non-empty string of at most {MAX_TEXT} characters")
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1_000_000:
                raise InvalidInput(f"{where}: {name} must be a whole number in [1, 1000000]")
        else:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidInput(f"{where}: {name} must be a finite number")
            value = float(value)
        values[name] = value
    if values["spread"] <= 0:
        raise InvalidInput(f"{where}: spread must be positive")
    if values["images"] < MIN_IMAGES:
        raise InvalidInput(f"{where}: a spread from {values['images']} images is no measurement "
                           f"(at least {MIN_IMAGES})")
    return Calibration(**values)


def read_calibrations(path: str | Path) -> list[Calibration]:
    """The entries of a calibration file, each checked; [] when there is no file."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path} is {path.stat().st_size:,} bytes; a calibration file is at most {MAX_FILE_BYTES:,}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not JSON ({error}); delete it or run calibrate again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION \
            or not isinstance(data.get("entries"), list):
        raise InvalidInput(f"{path} is not a {FORMAT} file (version {VERSION}); delete it or run calibrate again")
    if len(data["entries"]) > MAX_ENTRIES:
        raise InvalidInput(f"{path} has {len(data['entries'])} entries; at most {MAX_ENTRIES}")
    entries = [_entry(row, path, i) for i, row in enumerate(data["entries"])]
    if len({e.key for e in entries}) != len(entries):
        raise InvalidInput(f"{path} lists the same generator, reward and weights twice")
    return entries


def write_calibrations(path: str | Path, new: list[Calibration]) -> None:
    """Add or replace entries (same generator, resolution, reward and weights), keeping the rest."""
    path = Path(path)
    kept = {e.key: e for e in read_calibrations(path)}
    kept.update({e.key: e for e in new})
    text = json.dumps({"format": FORMAT, "version": VERSION, "entries": [asdict(e) for e in kept.values()]},
                      indent=2, ensure_ascii=False)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def apply_calibrations(rewards: dict[str, Reward], sources: dict[str, str], generator,
                       entries: list[Calibration]) -> dict[str, Calibration]:
    """Set offset and spread of each reward that has an entry for this generator and its weights."""
    by_key = {e.key: e for e in entries}
    applied = {}
    for name, reward in rewards.items():
        entry = by_key.get((generator.name, int(generator.resolution), name, sources.get(name, "")))
        if entry is not None:
            reward.offset, reward.scale = entry.offset, entry.spread
            reward.normalisation_source = entry.describe()
            applied[name] = entry
    return applied


@torch.no_grad()
def measure(generator, rewards: dict[str, Reward], sources: dict[str, str], prompts: list[str],
            seeds: list[int], command: str) -> list[Calibration]:
    """Raw scores of every reward on len(prompts) × len(seeds) unguided images → offset and spread."""
    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.generators.base import to_pil

    if not rewards:
        raise InvalidInput("no reward to calibrate: none of the catalogued rewards is on this machine")
    if not 1 <= len(prompts) <= MAX_PROMPTS or not 1 <= len(seeds) <= MAX_SEEDS:
        raise InvalidInput(f"calibrate takes 1–{MAX_PROMPTS} prompts and 1–{MAX_SEEDS} seeds")
    if len(prompts) * len(seeds) < MIN_IMAGES:
        raise InvalidInput(f"calibrating on {len(prompts) * len(seeds)} images gives no spread: "
                           f"use at least {MIN_IMAGES} (prompts × seeds)")
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in rewards}
    for prompt in prompts:
        conditioning = generator.encode_prompt(prompt)
        contexts = {name: reward.prepare(prompt) for name, reward in rewards.items()}
        for start in range(0, len(seeds), BATCH):
            noise = torch.cat([generator.initial_noise(s) for s in seeds[start:start + BATCH]])
            # Scored from 8-bit pixels, as the studio scores stored images.
            pixels = pil_to_tensor(to_pil(generator.render(noise, conditioning)))
            for name, reward in rewards.items():
                scores[name].append(reward.score(pixels, contexts[name]).float().cpu())
    now = time.time()
    out = []
    for name, parts in scores.items():
        values = torch.cat(parts)
        spread = float(values.std())
        if not math.isfinite(spread) or spread <= 0:
            raise InvalidInput(f"{name} gave the same score to every image: no spread to calibrate with")
        out.append(Calibration(generator.name, int(generator.resolution), name, sources[name], float(values.mean()),
                               spread, len(values), len(prompts), len(seeds), now, command))
    return out
