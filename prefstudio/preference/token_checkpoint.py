"""The folder layout of a preference-token checkpoint, shared by both backbones (lite and VLM):
safetensors weights, a JSON config naming the backbone, and for the lite one the user bank
whose taste space it reads."""
import json
from pathlib import Path

from prefstudio.errors import InvalidInput, NotFound

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_BANK = "user_bank.safetensors"
FORMAT = "prefstudio-preference-tokens"


def read_checkpoint_config(directory: str | Path) -> dict:
    directory = Path(directory)
    config_file = directory / CHECKPOINT_CONFIG
    if not config_file.is_file():
        raise NotFound(f"no preference-token checkpoint at {directory} (missing {CHECKPOINT_CONFIG})")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{config_file} is not valid JSON: {err}") from None
    if config.get("format") != FORMAT or config.get("version") != 1:
        raise InvalidInput(f"{config_file} is not a PrefStudio preference-token checkpoint (version 1)")
    return config
