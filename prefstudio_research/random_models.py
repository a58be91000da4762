"""Full-size diffusers pipelines with random weights, from the configs in assets/model_configs/.

Timing and memory need the architecture, not trained weights: the GPU benches build their
pipelines here, so nothing downloads.
"""
import json
import platform

import torch

from prefstudio.shipped import ASSETS
from prefstudio.tools.make_tiny_pipeline import clip_tokenizer

CONFIGS = ASSETS / "model_configs"
PROMPT = "a watercolour painting of a lighthouse on a cliff at sunset"


def build_random_pipeline(name: str, device: torch.device, dtype: torch.dtype):
    """The pipeline class and components named by assets/model_configs/<name>, random weights."""
    import diffusers
    import transformers

    folder = CONFIGS / name
    index = json.loads((folder / "model_index.json").read_text())
    torch.manual_seed(0)
    components, flags = {}, {}
    for key, value in index.items():
        if key.startswith("_"):
            continue
        if not isinstance(value, list):
            flags[key] = value
            continue
        library, class_name = value
        if class_name is None:
            components[key] = None
        elif class_name == "CLIPTokenizer":
            components[key] = clip_tokenizer()
        elif key == "scheduler":
            config = json.loads((folder / key / "scheduler_config.json").read_text())
            components[key] = getattr(diffusers, class_name).from_config(config)
        elif library == "diffusers":
            config = json.loads((folder / key / "config.json").read_text())
            with torch.device(device):
                components[key] = getattr(diffusers, class_name).from_config(config).to(dtype)
        else:
            cls = getattr(transformers, class_name)
            with torch.device(device):
                components[key] = cls(cls.config_class.from_json_file(folder / key / "config.json")).to(dtype)
    return getattr(diffusers, index["_class_name"])(**components, **flags)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device, dtype: torch.dtype) -> str:
    import diffusers
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    return (f"{name} ({device.type}), {str(dtype).removeprefix('torch.')}; torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")
