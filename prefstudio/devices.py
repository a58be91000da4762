"""Which device and dtype models run on: explicit when asked, sensible otherwise.

CUDA runs bf16 where the GPU has it (no fp16 overflow, same speed), else fp16;
Apple's MPS runs fp16; the CPU runs fp32 (half precision is slow and lossy there).
"""
import torch

from prefstudio.errors import InvalidInput
from prefstudio.validation import validate_device_name

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device is not None:
        chosen = torch.device(validate_device_name(device))
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInput(f"device {chosen} was asked for, but this machine has no usable CUDA GPU; use cpu")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InvalidInput(f"device {chosen} was asked for, but this machine has "
                               f"{torch.cuda.device_count()} CUDA GPU(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise InvalidInput("device mps was asked for, but Apple's MPS is not available here; use cpu")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if dtype not in _DTYPES:
            raise InvalidInput(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
