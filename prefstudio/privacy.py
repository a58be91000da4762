"""Private by default: no analytics, no telemetry, no Hub look-ups.

Imported first by the package so the variables are set before gradio or
huggingface_hub read them at import time. A user who asks for a Hub model
passes `allow_downloads=True` (the `--allow-downloads` flag) before any model code runs.
"""
import os

_DEFAULTS = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}


def apply_defaults(allow_downloads: bool = False) -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    if allow_downloads:
        os.environ["HF_HUB_OFFLINE"] = "0"
