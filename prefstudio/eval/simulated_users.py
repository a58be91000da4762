"""Simulated people with a hidden taste, for tests and the benchmark (002 §5.1 style).

A simulated user's utility is a weighted sum of interpretable image attributes plus
affinities for content categories. The attributes cover the taste families people have
(`FAMILIES`): colour (warmth, colourfulness, saturation, colour vs black-and-white, green
vs magenta), light (overall brightness, the drawing's own tone), contrast (global and
within the drawing), detail (edge density, fine texture), composition (how much of the
canvas is filled, mass spread out or compact, off-centre mass, left-right symmetry,
top-heavy vs bottom-heavy) and subject (the category affinities). Every attribute is
computed from pixels and differentiable. They label pairs by a
Bradley–Terry draw: P(a ≻ b) = σ((u(a) − u(b)) / temperature), and pick one image
out of several by the Plackett–Luce first choice, softmax(u / temperature), which is
the same model for two images. Only the labeller and the judge may call `utility`
(or `utility_from_attributes`); the methods under test see the labelled pairs and
nothing else.

Populations (`sample_population`) share tastes the way people do: every user's taste
is a common taste + the taste of one of a few archetypes + a personal deviation, with
fixed shares of variance. Each of the three parts puts its weight on the families by a
Dirichlet draw (`TasteMix.family_concentration`; every family has the same expected
share), so some people care mostly about one family and others about a mixture. That
shared part is what knowledge across users (a bank of known users, preference tokens)
can exploit; the personal part only the user's own history reveals.
"""
import math
from dataclasses import dataclass, field

import torch

# Taste families and the pixel attributes each one is about; "subject" is the category affinities.
FAMILIES = {
    "colour": ("warmth", "colourfulness", "saturation", "colour", "green"),
    "light": ("brightness", "tone"),
    "contrast": ("contrast", "ink_contrast"),
    "detail": ("density", "fine_detail"),
    "composition": ("fill", "spread", "offcentre", "symmetry", "top_heavy"),
    "subject": (),
}
ATTRIBUTES = ("warmth", "brightness", "colourfulness", "contrast", "density", "saturation",
              "colour", "green", "tone", "ink_contrast", "fine_detail", "fill", "spread", "offcentre",
              "symmetry", "top_heavy")

# Rough centre and spread of each attribute over clip art and generated images, so that a
# weight of 1 means "one typical spread" for every attribute (the benchmark rescales by
# the spread of its own pool).
_CENTER = {"warmth": 0.0, "brightness": 0.5, "colourfulness": 0.25, "contrast": 0.2,
           "density": 0.08, "saturation": 0.35, "colour": 0.5, "green": 0.0, "tone": 0.45,
           "ink_contrast": 0.2, "fine_detail": 0.03, "fill": 0.4, "spread": 0.3, "offcentre": 0.05,
           "symmetry": 0.75, "top_heavy": 0.0}
_SPREAD = {"warmth": 0.15, "brightness": 0.15, "colourfulness": 0.15, "contrast": 0.08,
           "density": 0.05, "saturation": 0.2, "colour": 0.35, "green": 0.1, "tone": 0.15,
           "ink_contrast": 0.08, "fine_detail": 0.02, "fill": 0.2, "spread": 0.05, "offcentre": 0.04,
           "symmetry": 0.12, "top_heavy": 0.04}


def _ink_weighted(values: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    return (values * ink).sum(1) / (ink.sum(1) + 1e-3)


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
    # "Ink": how far a pixel is from blank white. Weighting by it keeps a white background
    # from counting as grey, as dark, or as mass.
    ink_map = 1.0 - minc
    ink = ink_map.flatten(1)
    chromatic = torch.sigmoid(((maxc - minc) - 0.12) / 0.03).flatten(1)
    colour = (ink * chromatic).sum(1) / (ink.sum(1) + 1e-3)
    # Fine texture: what a 3×3 box blur removes (edges at the finest scale only).
    blurred = torch.nn.functional.avg_pool2d(luminance[:, None], 3, stride=1, padding=1,
                                             count_include_pad=False)[:, 0]
    fine = (luminance - blurred).abs().flatten(1).mean(1)
    # Composition: the ink's centre of mass and its spread, in units of the image side.
    h, w = luminance.shape[-2:]
    ys = (torch.arange(h, dtype=pixels.dtype) + 0.5) / h - 0.5
    xs = (torch.arange(w, dtype=pixels.dtype) + 0.5) / w - 0.5
    mass = ink_map / (ink_map.sum((1, 2), keepdim=True) + 1e-3)
    cy, cx = (mass.sum(2) * ys).sum(1), (mass.sum(1) * xs).sum(1)
    spread = ((mass * ((ys[:, None] - cy[:, None, None]) ** 2 + (xs[None, :] - cx[:, None, None]) ** 2))
              .sum((1, 2)) + 1e-6).sqrt()
    mirrored = ink_map.flip(-1)
    symmetry = 1.0 - (ink_map - mirrored).abs().sum((1, 2)) / ((ink_map + mirrored).sum((1, 2)) + 1e-3)
    raw = {
        "warmth": (r - b).flatten(1).mean(1),
        "brightness": luminance.flatten(1).mean(1),
        "colourfulness": colourfulness,
        "contrast": luminance.flatten(1).std(1),
        "density": dx + dy,
        "saturation": saturation,
        "colour": colour,
        "green": _ink_weighted((g - 0.5 * (r + b)).flatten(1), ink),
        "tone": _ink_weighted(luminance.flatten(1), ink),
        "ink_contrast": (_ink_weighted(luminance.flatten(1) ** 2, ink)
                         - _ink_weighted(luminance.flatten(1), ink) ** 2).clamp_min(0.0).add(1e-6).sqrt(),
        "fine_detail": fine,
        "fill": ink.mean(1),
        "spread": spread,
        "offcentre": (cy**2 + cx**2 + 1e-6).sqrt(),
        "symmetry": symmetry,
        "top_heavy": -cy,
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
    # Dirichlet concentration of a taste's weight over FAMILIES: below 1, most tastes lean on
    # one or two families; every family has the same expected share.
    family_concentration: float = 0.5

    @property
    def personal_share(self) -> float:
        return 1.0 - self.common_share - self.archetype_share


@dataclass
class Population:
    users: list[SimulatedUser]
    archetype: dict[str, int]  # user id -> archetype index (hidden, for analysis only)


def _family_emphasis(rng: torch.Generator, concentration: float, lead: str | None = None) -> dict[str, float]:
    """Shares of a taste's variance per family: a symmetric Dirichlet draw (normalised
    Gamma(α) draws; Gamma(α) by Marsaglia–Tsang with the boost for α < 1), times the number
    of families so that an even mix gives every family a share of 1. With `lead`, the largest
    share goes to that family (the draw's shares are only permuted)."""
    d = concentration + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    draws = []
    for _ in FAMILIES:
        while True:
            x = float(torch.randn((), generator=rng, dtype=torch.float64))
            v = (1.0 + c * x) ** 3
            u = float(torch.rand((), generator=rng, dtype=torch.float64))
            if v > 0 and math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
                break
        boost = float(torch.rand((), generator=rng, dtype=torch.float64)) ** (1.0 / concentration)
        draws.append(d * v * max(boost, 1e-12))
    if lead is not None:
        top, at = max(draws), list(FAMILIES).index(lead)
        i = draws.index(top)
        draws[i], draws[at] = draws[at], top
    total = sum(draws)
    return {family: len(FAMILIES) * g / total for family, g in zip(FAMILIES, draws)}


def _random_taste(rng: torch.Generator, categories: list[str], groups: dict[str, str],
                  mix: TasteMix, lead: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribute weights and category affinities of one taste. Each family gets a share of
    the variance (`_family_emphasis`), split evenly over its attributes; within it, weights
    are N(0, share). Category affinities: a group-level effect plus a smaller per-category
    one, so related categories (same top-level folder) are liked alike."""
    emphasis = _family_emphasis(rng, mix.family_concentration, lead)
    scale = torch.ones(len(ATTRIBUTES), dtype=torch.float64)
    for family, members in FAMILIES.items():
        for name in members:
            scale[ATTRIBUTES.index(name)] = math.sqrt(emphasis[family] / len(members))
    weights = torch.randn(len(ATTRIBUTES), generator=rng, dtype=torch.float64) * scale
    group_names = sorted(set(groups.values()))
    group_effect = dict(zip(group_names, torch.randn(len(group_names), generator=rng,
                                                     dtype=torch.float64).tolist()))
    own = torch.randn(len(categories), generator=rng, dtype=torch.float64)
    affinity = torch.tensor([group_effect[groups[c]] for c in categories], dtype=torch.float64)
    affinity = (mix.category_scale * math.sqrt(emphasis["subject"])
                * (affinity + 0.7 * own) / math.sqrt(1 + 0.7**2))
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
    # The first archetypes are led by one family each, in an order drawn from the seed, so
    # every family has people who care mostly about it; the rest lean wherever they fall.
    order = [list(FAMILIES)[i] for i in torch.randperm(len(FAMILIES), generator=rng).tolist()]
    archetypes = [_random_taste(rng, categories, groups, mix, order[k] if k < len(order) else None)
                  for k in range(mix.n_archetypes)]
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
