"""Simulated people with a hidden taste, for tests and the benchmark (002 §5.1 style).

A simulated user's utility is a weighted sum of interpretable image attributes
(warmth, brightness, colourfulness, contrast, line density, saturation) plus
affinities for content categories. They label pairs by a Bradley–Terry draw:
P(a ≻ b) = σ((u(a) − u(b)) / temperature). Only the labeller and the judge may
call `utility`; the methods under test see the labelled pairs and nothing else.
"""
from dataclasses import dataclass, field

import torch

ATTRIBUTES = ("warmth", "brightness", "colourfulness", "contrast", "density", "saturation")

# Rough spread of each attribute over natural and generated images, so that a
# weight of 1 means "one typical spread" for every attribute.
_CENTER = {"warmth": 0.0, "brightness": 0.5, "colourfulness": 0.25, "contrast": 0.2,
           "density": 0.08, "saturation": 0.35}
_SPREAD = {"warmth": 0.15, "brightness": 0.15, "colourfulness": 0.15, "contrast": 0.08,
           "density": 0.05, "saturation": 0.2}


def image_attributes(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B,3,H,W] in [0,1] -> standardised attributes, each [B]; differentiable."""
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    # Hasler & Süsstrunk colourfulness on opponent channels.
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = (rg.flatten(1).std(1) ** 2 + yb.flatten(1).std(1) ** 2).sqrt() + 0.3 * (
        rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2
    ).sqrt()
    maxc, minc = pixels.max(1).values, pixels.min(1).values
    saturation = ((maxc - minc) / (maxc + 1e-3)).flatten(1).mean(1)
    dx = (luminance[:, :, 1:] - luminance[:, :, :-1]).abs().flatten(1).mean(1)
    dy = (luminance[:, 1:, :] - luminance[:, :-1, :]).abs().flatten(1).mean(1)
    raw = {
        "warmth": (r - b).flatten(1).mean(1),
        "brightness": luminance.flatten(1).mean(1),
        "colourfulness": colourfulness,
        "contrast": luminance.flatten(1).std(1),
        "density": dx + dy,
        "saturation": saturation,
    }
    return {k: (v - _CENTER[k]) / _SPREAD[k] for k, v in raw.items()}


@dataclass
class SimulatedUser:
    user_id: str
    attribute_weights: dict[str, float]
    category_affinity: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.5

    def utility(self, pixels: torch.Tensor, categories: list[str] | None = None) -> torch.Tensor:
        attrs = image_attributes(pixels)
        u = sum(w * attrs[name] for name, w in self.attribute_weights.items())
        u = u if torch.is_tensor(u) else torch.zeros(pixels.shape[0])
        if categories is not None:
            u = u + torch.tensor([self.category_affinity.get(c, 0.0) for c in categories])
        return u

    def prefers_first(self, utility_a: float, utility_b: float, generator: torch.Generator) -> bool:
        """One Bradley–Terry draw: True when the user picks a over b."""
        p = torch.sigmoid(torch.tensor((utility_a - utility_b) / self.temperature))
        return bool(torch.rand((), generator=generator) < p)


def random_user(user_id: str, seed: int, categories: list[str] = (), temperature: float = 0.5,
                n_attributes: int = 2) -> SimulatedUser:
    """A user who cares about a few attributes (signs random) and has random category tastes."""
    rng = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(ATTRIBUTES), generator=rng)[:n_attributes].tolist()
    weights = {}
    for i in chosen:
        sign = 1.0 if torch.rand((), generator=rng) < 0.5 else -1.0
        weights[ATTRIBUTES[i]] = sign * float(0.5 + torch.rand((), generator=rng))
    affinity = {c: float(torch.randn((), generator=rng)) for c in categories}
    return SimulatedUser(user_id, weights, affinity, temperature)
