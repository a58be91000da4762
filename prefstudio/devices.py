"""Which device and dtype models run on: explicit when asked, sensible otherwise.

CUDA runs bf16 where the GPU has it (no fp16 overflow, same speed), else fp16;
Apple's MPS runs fp16; the CPU runs fp32 (half precision is slow and lossy there).
"""
import torch

from prefstudio.errors import InvalidInput

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except RuntimeError:
            raise InvalidInput(f"unknown device {device!r}; use cpu, cuda, cuda:1, mps") from None
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
