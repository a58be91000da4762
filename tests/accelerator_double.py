"""A CPU tensor that behaves, where it matters here, as one on a GPU: NumPy refuses it
until it is moved to the CPU. CI has no GPU, yet a CLIP encoder on one hands the store its
features on the GPU; this lets a test check that whatever reaches NumPy is moved first."""
import torch


def _moves_to_cpu(args, kwargs) -> bool:
    device = kwargs.get("device", args[0] if args else None)
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cpu"


class OnAccelerator(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. "
                            "Use Tensor.cpu() to copy the tensor to host memory first.")
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _moves_to_cpu(args[1:], kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).as_subclass(torch.Tensor)
        return super().__torch_function__(func, types, args, kwargs)


def on_accelerator(tensor: torch.Tensor) -> OnAccelerator:
    return tensor.clone().as_subclass(OnAccelerator)
