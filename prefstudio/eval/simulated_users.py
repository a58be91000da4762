"""Simulated people with a hidden taste, for tests and the benchmark (002 §5.1 style).

A simulated user's utility is a weighted sum of interpretable image attributes
(warmth, brightness, colourfulness, contrast, line density, saturation, colour vs
black-and-white) plus affinities for content categories. They label pairs by a
Bradley–Terry draw: P(a ≻ b) = σ((u(a) − u(b)) / temperature), and pick one image
out of several by the Plackett–Luce first choice, softmax(u / temperature), which is
the same model for two images. Only the labeller and the judge may call `utility`
(or `utility_from_attributes`); the methods under test see the labelled pairs and
nothing else.

Populations (`sample_population`) share tastes the way people do: every user's taste
is a common taste + the taste of one of a few archetypes + a personal deviation, with
fixed shares of variance. That shared part is what knowledge across users (a bank of
known users, preference tokens) can exploit; the personal part only the user's own
history reveals.
"""
import math
from dataclasses import dataclass, field

import torch

ATTRIBUTES = ("warmth", "brightness", "colourfulness", "contrast", "density", "saturation",
              "colour")

# Rough spread of each attribute over natural and generated images, so that a
# weight of 1 means "one typical spread" for every attribute.
_CENTER = {"warmth": 0.0, "brightness": 0.5, "colourfulness": 0.25, "contrast": 0.2,
           "density": 0.08, "saturation": 0.35, "colour": 0.5}
_SPREAD = {"warmth": 0.15, "brightness": 0.15, "colourfulness": 0.15, "contrast": 0.08,
           "density": 0.05, "saturation": 0.2, "colour": 0.35}


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
    # Colour vs black-and-white: the share of the drawn (non-white) area that has a
    # visible hue. Weighting by "ink" keeps a white background from counting as grey.
    ink = (1.0 - minc).flatten(1)
    chromatic = torch.sigmoid(((maxc - minc) - 0.12) / 0.03).flatten(1)
    colour = (ink * chromatic).sum(1) / (ink.sum(1) + 1e-3)
    raw = {
        "warmth": (r - b).flatten(1).mean(1),
        "brightness": luminance.flatten(1).mean(1),
        "colourfulness": colourfulness,
        "contrast": luminance.flatten(1).std(1),
        "density": dx + dy,
        "saturation": saturation,
        "colour": colour,
    }
    return {k: (v - _CENTER[k]) / _SPREAD[k] for k, v in raw.items()}


@dataclass
class SimulatedUser:
    user_id: str
    attribute_weights: dict[str, float]
    category_affinity: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.5

    def utility(self, pixels: torch.Tensor, categories: list[str] | None = None) -> torch.Tensor:
        return self.utility_from_attributes(image_attributes(pixels), categories)

    def utility_from_attributes(self, attributes: dict[str, torch.Tensor],
                                categories: list[str] | None = None) -> torch.Tensor:
        """The same utility from precomputed `image_attributes` (the labeller caches them)."""
        n = next(iter(attributes.values())).shape[0]
        u = sum(w * attributes[name] for name, w in self.attribute_weights.items())
        u = u if torch.is_tensor(u) else torch.zeros(n)
        if categories is not None:
            u = u + torch.tensor([self.category_affinity.get(c, 0.0) for c in categories])
        return u

    def prefers_first(self, utility_a: float, utility_b: float, generator: torch.Generator) -> bool:
        """One Bradley–Terry draw: True when the user picks a over b."""
        p = torch.sigmoid(torch.tensor((utility_a - utility_b) / self.temperature))
        return bool(torch.rand((), generator=generator) < p)

    def choose(self, utilities: torch.Tensor, generator: torch.Generator) -> int:
        """One Plackett–Luce first choice among several images: index of the one picked."""
        probabilities = torch.softmax(utilities.double() / self.temperature, dim=0)
        return int(torch.multinomial(probabilities, 1, generator=generator))


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


# --- populations whose tastes cluster ------------------------------------------------

def bayes_accuracy(utility_gaps: torch.Tensor, temperature: float) -> torch.Tensor:
    """Expected accuracy of an oracle that knows the utilities on pairs with these gaps:
    mean of max(p, 1 − p), p = σ(Δu / T). Limited only by the labeller's noise."""
    p = torch.sigmoid(utility_gaps.double().abs() / temperature)
    return p.mean()


def calibrate_temperature(utility_gaps: torch.Tensor, target_accuracy: float) -> float:
    """The labeller temperature at which the Bayes ceiling on these pairs is `target_accuracy`."""
    if not 0.5 < target_accuracy < 1.0:
        raise ValueError(f"target accuracy must lie in (0.5, 1), got {target_accuracy}")
    if not bool((utility_gaps != 0).any()):
        raise ValueError("every utility gap is zero: no temperature reaches the target")
    lo, hi = -12.0, 12.0  # bisection on log T: accuracy falls as T grows
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if bayes_accuracy(utility_gaps, math.exp(mid)) > target_accuracy:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


@dataclass(frozen=True)
class TasteMix:
    """How a population's tastes are built; shares are fractions of utility variance."""

    n_archetypes: int = 8
    common_share: float = 0.15  # taste everyone shares: what a generic scorer can learn
    archetype_share: float = 0.55  # taste shared within a cluster of users
    # the personal deviation takes the rest (0.30 by default)
    category_scale: float = 1.0  # spread of category affinities relative to one attribute's

    @property
    def personal_share(self) -> float:
        return 1.0 - self.common_share - self.archetype_share


@dataclass
class Population:
    users: list[SimulatedUser]
    archetype: dict[str, int]  # user id -> archetype index (hidden, for analysis only)


def _random_taste(rng: torch.Generator, categories: list[str], groups: dict[str, str],
                  mix: TasteMix) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attribute weights ~ N(0, 1) and category affinities: a group-level effect
    plus a smaller per-category one, so related categories (same top-level folder) are liked alike."""
    weights = torch.randn(len(ATTRIBUTES), generator=rng, dtype=torch.float64)
    group_names = sorted(set(groups.values()))
    group_effect = dict(zip(group_names, torch.randn(len(group_names), generator=rng,
                                                     dtype=torch.float64).tolist()))
    own = torch.randn(len(categories), generator=rng, dtype=torch.float64)
    affinity = torch.tensor([group_effect[groups[c]] for c in categories], dtype=torch.float64)
    affinity = mix.category_scale * (affinity + 0.7 * own) / math.sqrt(1 + 0.7**2)
    return weights, affinity


def sample_population(user_ids: list[str], seed: int, categories: list[str],
                      category_groups: dict[str, str] | None = None,
                      attribute_spread: dict[str, float] | None = None,
                      mix: TasteMix = TasteMix()) -> Population:
    """Users whose tastes cluster: common + archetype + personal, with `mix`'s variance shares.

    `attribute_spread` is the standard deviation of each `image_attributes` value over the
    image pool; weights are divided by it so a weight of 1 moves the utility by one
    spread *of this pool* (clip art on white spans a different range than photos).
    Temperatures are left at 1: calibrate them on each user's own pairs
    (`calibrate_temperature`). User i's archetype is drawn from the seed, not from i, so
    the order of `user_ids` does not change who is who beyond their position.
    """
    groups = category_groups or {c: c for c in categories}
    spread = attribute_spread or {}
    rng = torch.Generator().manual_seed(seed)
    common = _random_taste(rng, categories, groups, mix)
    archetypes = [_random_taste(rng, categories, groups, mix) for _ in range(mix.n_archetypes)]
    a, c, p = math.sqrt(mix.archetype_share), math.sqrt(mix.common_share), math.sqrt(mix.personal_share)
    users, membership = [], {}
    for user_id in user_ids:
        k = int(torch.randint(mix.n_archetypes, (), generator=rng))
        personal = _random_taste(rng, categories, groups, mix)
        weights = c * common[0] + a * archetypes[k][0] + p * personal[0]
        affinity = c * common[1] + a * archetypes[k][1] + p * personal[1]
        users.append(SimulatedUser(
            user_id,
            {name: float(w) / spread.get(name, 1.0) for name, w in zip(ATTRIBUTES, weights)},
            {cat: float(v) for cat, v in zip(categories, affinity)},
            temperature=1.0,
        ))
        membership[user_id] = k
    return Population(users, membership)
