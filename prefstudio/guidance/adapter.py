"""The preference adapter: one pass from (user embedding, prompt conditioning) to a
personalized image (Premier, 003 §4.1; PPD, 002 §4.3, conditions on user embeddings too).

    offsets = adapter(user embedding [B, E], conditioning tokens [T, D])    # [B, T, D]
    image   = generator.render(noise, generator.modulate(conditioning, scale · offsets))

As in Premier, the prompt's tokens are the queries of a cross-attention whose keys and
values come from the user (the embedding is split into a few user tokens, so a prompt can
attend to the parts of a taste that concern it), and the output is a modulation direction
per token. Premier has a block-shared and a block-distinct adapter for FLUX's blocks; the
generators here have one conditioning, so there is one adapter. Every layer the user's
signal passes through is bias-free, so a user embedding of zeros (no taste) modulates
nothing, and scale 0 returns the conditioning untouched: the baseline, bit for bit.

The user embedding is a person's like − dislike direction in a user bank's taste space
(prefstudio/preference/user_embedding.py); an adapter is trained for one generator and one
bank (prefstudio_research/train/preference_adapter.py) and its config names both.
"""
import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from prefstudio.errors import InvalidInput
from prefstudio.generators.base import Generator
from prefstudio.preference.user_embedding import UserBank

FORMAT = "prefstudio-preference-adapter"
VERSION = 1
WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "config.json"
# The user bank whose embeddings the adapter reads: it travels with the adapter, so the studio's
# own bank (the user embedding's cold start) can change without retraining Instant.
BANK_FILE = "user_bank.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 256 << 20


@dataclass(frozen=True)
class AdapterShape:
    user_dim: int  # E: the bank's taste-space width
    token_dim: int  # D: the generator's conditioning token width
    hidden: int = 64
    user_tokens: int = 4  # the user embedding is read as this many key/value tokens

    def validated(self) -> "AdapterShape":
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
                raise InvalidInput(f"adapter config: {name} must be an integer in [1, 65536], got {value!r}")
        return self


class PreferenceAdapter(torch.nn.Module):
    def __init__(self, shape: AdapterShape, user_scale: float = 1.0):
        super().__init__()
        self.shape = shape.validated()
        h, m = shape.hidden, shape.user_tokens
        # User path: bias-free throughout (zero embedding -> zero offsets).
        self.user_in = torch.nn.Linear(shape.user_dim, m * h, bias=False)
        self.key = torch.nn.Linear(h, h, bias=False)
        self.value = torch.nn.Linear(h, h, bias=False)
        self.expand = torch.nn.Linear(h, 2 * h, bias=False)
        self.out = torch.nn.Linear(2 * h, shape.token_dim, bias=False)
        # Prompt path: queries, and a per-token gain on the user's message (FiLM).
        self.token_norm = torch.nn.LayerNorm(shape.token_dim, elementwise_affine=False)
        self.query = torch.nn.Linear(shape.token_dim, h)
        self.gain = torch.nn.Linear(shape.token_dim, 2 * h)
        torch.nn.init.zeros_(self.gain.weight)
        torch.nn.init.zeros_(self.gain.bias)
        torch.nn.init.normal_(self.out.weight, std=0.1 / math.sqrt(2 * h))
        # A typical training user's embedding norm: inputs are divided by it.
        self.register_buffer("user_scale", torch.tensor(float(user_scale)))

    def forward(self, user: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """user [B, E], tokens [T, D] (one prompt) or [B, T, D] (one per user) -> offsets [B, T, D]."""
        if user.dim() != 2 or user.shape[1] != self.shape.user_dim:
            raise InvalidInput(f"user embeddings must be [batch, {self.shape.user_dim}], got {list(user.shape)}")
        if tokens.dim() not in (2, 3) or tokens.shape[-1] != self.shape.token_dim \
                or (tokens.dim() == 3 and tokens.shape[0] != user.shape[0]):
            raise InvalidInput(f"conditioning tokens must be [T, {self.shape.token_dim}] or "
                               f"[{user.shape[0]}, T, {self.shape.token_dim}], got {list(tokens.shape)}")
        weight = self.out.weight
        user = user.to(weight.device, weight.dtype) / self.user_scale
        tokens = self.token_norm(tokens.to(weight.device, weight.dtype))
        batch, h = user.shape[0], self.shape.hidden
        user_tokens = self.user_in(user).view(batch, self.shape.user_tokens, h)          # [B, m, h]
        query = self.query(tokens)                                                       # [(B,) T, h]
        attention = torch.softmax(query @ self.key(user_tokens).transpose(1, 2) / math.sqrt(h), -1)  # [B, T, m]
        message = attention @ self.value(user_tokens)                                    # [B, T, h]
        return self.out(F.gelu(self.expand(message)) * (1 + self.gain(tokens)))

    def offsets(self, generator: Generator, conditioning: Any, user: torch.Tensor) -> torch.Tensor:
        return self(user, generator.conditioning_tokens(conditioning))

    def apply(self, generator: Generator, conditioning: Any, user: torch.Tensor, scale: float = 1.0) -> Any:
        """The conditioning modulated for these users ([B, E]); scale 0 is the conditioning itself."""
        if not math.isfinite(scale) or scale < 0:
            raise InvalidInput(f"the adapter's scale must be a number ≥ 0, got {scale}")
        if scale == 0:
            return conditioning
        return generator.modulate(conditioning, scale * self.offsets(generator, conditioning, user))


# -- files ------------------------------------------------------------------------------------

def bank_digest(path: str | Path) -> str:
    """Which user bank an adapter was trained with: its embeddings only mean something there."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def generator_signature(generator: Generator, conditioning: Any) -> dict:
    """What an adapter must match in a generator: its name and its conditioning tokens' width."""
    return {"generator": generator.name, "token_dim": int(generator.conditioning_tokens(conditioning).shape[1])}


def save_adapter(adapter: PreferenceAdapter, folder: str | Path, config: dict, bank_path: str | Path) -> Path:
    """Weights, config and a copy of the user bank the adapter was trained with."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
    if Path(bank_path).resolve() != (folder / BANK_FILE).resolve():
        shutil.copyfile(bank_path, folder / BANK_FILE)
    full = {"format": FORMAT, "version": VERSION, "shape": asdict(adapter.shape), **config,
            "bank": bank_digest(folder / BANK_FILE)}
    (folder / CONFIG_FILE).write_text(json.dumps(full, indent=1) + "\n")
    return folder


def read_adapter_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise InvalidInput(f"{folder} holds no preference adapter ({CONFIG_FILE} is missing)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{path} is too large to be an adapter config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("version") != VERSION:
        raise InvalidInput(f"{path} is not a PrefStudio preference adapter (version {VERSION})")
    for key in ("generator", "bank"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise InvalidInput(f"{path}: {key!r} must be a non-empty string")
    if not isinstance(config.get("shape"), dict) or set(config["shape"]) != set(AdapterShape.__dataclass_fields__):
        raise InvalidInput(f"{path}: 'shape' must give {', '.join(AdapterShape.__dataclass_fields__)}")
    return config


def load_adapter(folder: str | Path) -> tuple[PreferenceAdapter, dict, UserBank]:
    """The adapter, its config (every tensor checked against the config's shape) and the user
    bank it reads embeddings of (checked against the digest it was trained with)."""
    folder = Path(folder)
    config = read_adapter_config(folder)
    bank_path = folder / BANK_FILE
    if not bank_path.is_file() or bank_digest(bank_path) != config["bank"]:
        raise InvalidInput(f"{folder} lacks the user bank its adapter was trained with ({BANK_FILE}, digest "
                           f"{config['bank']}): copy that bank there, or train the adapter again")
    bank = UserBank.load(bank_path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise InvalidInput(f"{weights} is missing or too large to be an adapter's weights")
    adapter = PreferenceAdapter(AdapterShape(**config["shape"]))
    expected = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    try:
        tensors = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for malformed files
        raise InvalidInput(f"{weights} is not a readable safetensors file: {error}") from None
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        raise InvalidInput(f"{weights} does not match its config's shape (expected tensors {expected}, found {found})")
    if not all(torch.isfinite(v).all() for v in tensors.values()) or float(tensors["user_scale"]) <= 0:
        raise InvalidInput(f"{weights} holds non-finite values or a non-positive user scale")
    adapter.load_state_dict(tensors)
    if bank.user_embeddings.shape[1] != adapter.shape.user_dim:
        raise InvalidInput(f"{bank_path} has {bank.user_embeddings.shape[1]}-d user embeddings; the adapter reads "
                           f"{adapter.shape.user_dim}-d ones")
    return adapter.eval().requires_grad_(False), config, bank
