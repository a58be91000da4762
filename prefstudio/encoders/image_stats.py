"""Differentiable colour and texture statistics of an image.

Taste often rides on things an ImageNet classifier is trained to ignore: warm or cool,
bright or moody, muted or vivid, busy or calm, where the light and colour sit in the
frame. These 81 numbers describe them directly. Colour is measured in CIELAB (L*
lightness, a* green-red, b* blue-yellow, each divided by 100), which is close to how
differences are perceived. Everything is smooth in the pixels (soft histograms and
soft thresholds, no argmax or atan2), so guidance can push an image along any of them.

Images are first resized to 128x128, so the numbers do not depend on resolution.
"""
import math

import torch
import torch.nn.functional as F

WORK_SIZE = 128
HUE_BINS = 12  # CIELAB hue angle: 0 red-magenta (+a*), 90 yellow (+b*), 180 green, 270 blue
LAYOUT_GRID = 4
# Soft threshold of "an edge": Sobel gradient of lightness (per pixel, L in [0,1]).
# A step of 0.1 in lightness gives 0.05; blur and gentle gradients stay below.
EDGE_THRESHOLD, EDGE_SOFTNESS = 0.05, 0.015
# The warm direction in the a*b* plane: between red (a*) and yellow (b*), hue 60 degrees.
WARM_HUE = math.radians(60.0)

STAT_NAMES = (
    ("lightness_mean", "lightness_std", "a_mean", "a_std", "b_mean", "b_std",
     "chroma_mean", "chroma_std", "saturation_mean", "chromatic_fraction",
     "warmth", "dark_fraction", "bright_fraction", "colourfulness", "hue_diversity")
    + tuple(f"hue_{round(360 * k / HUE_BINS)}" for k in range(HUE_BINS))
    + tuple(f"{s}_{m}" for s in ("fine", "coarse") for m in ("gradient", "edge_density", "vertical_vs_horizontal"))
    + tuple(f"layout_{c}_{i}{j}" for c in ("L", "a", "b")
            for i in range(LAYOUT_GRID) for j in range(LAYOUT_GRID))
)
DIM = len(STAT_NAMES)

_RGB_TO_XYZ = torch.tensor([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] sRGB in [0,1] -> CIELAB (D65) / 100: L in [0,1], a and b roughly in [-1,1]."""
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = _RGB_TO_XYZ.to(rgb) / _WHITE_D65.to(rgb)[:, None]
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    delta = 6.0 / 29.0
    # Cube root only on its own branch's domain: torch.where would send the infinite
    # slope of t^(1/3) at 0 into the gradient as NaN.
    f = torch.where(
        xyz > delta**3, xyz.clamp_min(delta**3) ** (1.0 / 3.0), xyz / (3 * delta**2) + 4.0 / 29.0
    )
    fx, fy, fz = f.unbind(1)
    return torch.stack([1.16 * fy - 0.16, 5.0 * (fx - fy), 2.0 * (fy - fz)], dim=1)


def _colour_stats(rgb: torch.Tensor, lab: torch.Tensor) -> list[torch.Tensor]:
    lightness, a, b = lab.flatten(2).unbind(1)
    chroma = (a**2 + b**2 + 1e-6).sqrt()
    maxc, minc = rgb.amax(1).flatten(1), rgb.amin(1).flatten(1)
    # Hasler & Suesstrunk (2003) colourfulness, on sRGB opponent channels.
    rg = (rgb[:, 0] - rgb[:, 1]).flatten(1)
    yb = (0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]).flatten(1)
    colourfulness = (rg.var(1) + yb.var(1) + 1e-8).sqrt() + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2 + 1e-8).sqrt()
    warm = a * math.cos(WARM_HUE) + b * math.sin(WARM_HUE)
    return [
        lightness.mean(1), lightness.std(1), a.mean(1), a.std(1), b.mean(1), b.std(1),
        chroma.mean(1), chroma.std(1),
        ((maxc - minc) / (maxc + 1e-2)).mean(1),
        torch.sigmoid((chroma - 0.10) / 0.02).mean(1),  # share of visibly coloured pixels
        warm.mean(1),
        torch.sigmoid((0.25 - lightness) / 0.04).mean(1),
        torch.sigmoid((lightness - 0.80) / 0.04).mean(1),
        colourfulness,
    ]


def _hue_histogram(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chroma-weighted soft histogram of hue angle [B,HUE_BINS], and its diversity in (0,1].

    Each pixel votes for every bin by a von Mises kernel on the hue circle, weighted by
    its chroma, so greys barely vote and a small hue change moves votes smoothly.
    Counted at 64x64: hue needs no fine detail, and this is the costliest statistic.
    """
    a, b = F.avg_pool2d(lab[:, 1:], 2).flatten(2).unbind(1)
    chroma = (a**2 + b**2 + 1e-6).sqrt()
    cos_h, sin_h = a / chroma, b / chroma
    centres = torch.arange(HUE_BINS, device=lab.device, dtype=lab.dtype) * (2 * math.pi / HUE_BINS)
    cos_diff = cos_h[..., None] * centres.cos() + sin_h[..., None] * centres.sin()  # [B,N,K]
    votes = torch.softmax(4.0 * cos_diff, dim=-1) * chroma[..., None]
    histogram = votes.sum(1) / (votes.sum((1, 2))[:, None] + 1e-6)
    entropy = -(histogram * (histogram + 1e-8).log()).sum(1)
    return histogram, entropy.exp() / HUE_BINS


def _sobel(lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kx = lightness.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernels = torch.stack([kx, kx.T])[:, None]
    # Replicate padding: the frame's border is not an edge of the picture.
    grads = F.conv2d(F.pad(lightness, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads[:, 0], grads[:, 1]


def _edge_stats(lightness: torch.Tensor) -> list[torch.Tensor]:
    """Mean gradient, soft share of edge pixels, and vertical-vs-horizontal line energy."""
    gx, gy = _sobel(lightness)
    magnitude = (gx**2 + gy**2 + 1e-6).sqrt().flatten(1)
    ex, ey = (gx**2).flatten(1).sum(1), (gy**2).flatten(1).sum(1)
    return [
        magnitude.mean(1),
        torch.sigmoid((magnitude - EDGE_THRESHOLD) / EDGE_SOFTNESS).mean(1),
        (ex - ey) / (ex + ey + 1e-6),  # >0: vertical lines (horizontal gradients) dominate
    ]


def image_statistics(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB in [0,1], any size -> [B, DIM] statistics named by STAT_NAMES."""
    if pixels.shape[-2:] != (WORK_SIZE, WORK_SIZE):
        pixels = F.interpolate(
            pixels, size=(WORK_SIZE, WORK_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    lab = srgb_to_lab(pixels)
    histogram, diversity = _hue_histogram(lab)
    lightness = lab[:, :1]
    coarse = F.avg_pool2d(lightness, 4)  # 32x32: the composition's big strokes
    layout = F.adaptive_avg_pool2d(lab, LAYOUT_GRID).flatten(1)  # L cells, then a, then b
    columns = _colour_stats(pixels.clamp(0.0, 1.0), lab) + [diversity]
    columns += _edge_stats(lightness) + _edge_stats(coarse)
    stats = torch.cat([torch.stack(columns[:15], 1), histogram, torch.stack(columns[15:], 1), layout], 1)
    return stats
