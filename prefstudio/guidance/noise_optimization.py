"""Reward-guided optimisation of a generator's initial noise (ReNO; 000 §4.2, app. D).

Maximise Σ wᵢ·normalised rewardᵢ(render(z)) over the initial noise z of a one-step
generator, starting from the seed's noise z₀. Guard rewards (prompt consistency) are not
raised: they only cost wⱼ·(drop below their value at z₀), so they keep the image on topic
without taking over the objective. Then:
  - SGD with Nesterov momentum 0.9, learning rate 5, gradient norm clipped to 0.1;
  - a regulariser keeping ‖z‖ where a standard normal's norm lives (the negative
    log-likelihood of the χ distribution with d degrees of freedom), so the
    optimised noise stays a plausible sample and the image stays an image;
  - a trust region: ‖z − z₀‖ ≤ radius·‖z₀‖ (the person's "strength"; None = unbounded);
  - the best iterate by the objective is kept (iteration 0 is the baseline itself, so
    the result never scores below it, and the rewards it raises never fall);
  - reward contexts (text features...) are computed once per run, not per iteration.
It yields a progress record every iteration and stops between iterations when asked,
returning the best so far.

Runs from one seed can share a `CandidatePool`: every iterate of every run, scored under
every reward weighed. Each weighting then takes the pool's pick for its weights, which makes
a sweep of weightings monotone (see `CandidatePool`), where independent runs each stop
in their own local optimum and the order of neighbouring weightings is left to chance.
"""
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from prefstudio.errors import InvalidInput
from prefstudio.generators.base import Generator, to_pil
from prefstudio.guidance.methods import DEFAULT_ITERATIONS  # noqa: F401  (imported from here too)
from prefstudio.rewards.base import Reward, score_all
from prefstudio.validation import validate_prompt, validate_seed, validate_weights, whole_number

MAX_ITERATIONS = 500


@dataclass
class GuidanceSettings:
    iterations: int = DEFAULT_ITERATIONS
    learning_rate: float = 5.0
    momentum: float = 0.9
    grad_clip: float = 0.1
    noise_regularisation: float = 0.01
    radius: float | None = None  # trust region, relative to the seed's noise norm
    preview_every: int = 5  # decode a preview image every k iterations (0: never)


@dataclass
class GuidanceProgress:
    iteration: int  # 0 = the baseline noise
    total: float  # Σ wᵢ·normalisedᵢ of this iterate
    normalised: dict[str, float]
    raw: dict[str, float]
    best_iteration: int
    best_total: float
    preview: Image.Image | None = None


@dataclass
class GuidanceResult:
    image: Image.Image
    noise: torch.Tensor
    best_iteration: int
    total: float
    normalised: dict[str, float]
    raw: dict[str, float]
    iterations_run: int
    stopped: bool
    trace: list[GuidanceProgress] = field(default_factory=list)


@dataclass
class Candidate:
    noise: torch.Tensor
    normalised: dict[str, float]  # the scores of its 8-bit pixels: what its PNG will score
    raw: dict[str, float]
    run: int  # which run of the pool found it
    iteration: int  # 0 = the seed's own noise


class CandidatePool:
    """Every iterate of the guidance runs from one seed, prompt and trust region, scored under
    every reward the runs weigh, for `pick` to choose each weighting's image from.

    `pick` weighs the rewards on the axes by their shortfall from the best the pool holds on
    each (weighted Tchebycheff: the largest weighted shortfall is made smallest), then takes off
    the other rewards' terms of the objective (a guard's price of a drop...). Why not the
    weighted sum the runs climb: two anti-correlated rewards rarely trade along a convex front,
    and a weighted sum only ever picks the front's convex corners, so most weightings in between
    get one of the two extremes. Why it is monotone, for two axes and no other term: let x be
    the pick for weights (a, b) and y for (a', b') with a' < a, b' > b. If y fell short of x on
    B, y's worst weighted shortfall under (a', b') would be no more than x's, which is then x's
    shortfall on A; scaling back to (a, b) makes y at least as good as x there too, and better
    unless they tie on A: so B never falls as its weight grows, and A likewise never rises."""

    def __init__(self):
        self.candidates: list[Candidate] = []
        self.runs = 0

    def add(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)

    def pick(self, weights: dict[str, float], rewards: dict[str, Reward], axes: list[str]) -> Candidate:
        """The candidate for `weights`, trading the `axes` against each other as above (the first
        found among equals). Guards are measured against the seed's own noise, iteration 0."""
        if not self.candidates:
            raise InvalidInput("the candidate pool is empty: run guidance into it first")
        baseline = next((c.normalised for c in self.candidates if c.iteration == 0), self.candidates[0].normalised)
        scores = {name: torch.tensor([c.normalised[name] for c in self.candidates], dtype=torch.float64)
                  for name in weights}
        shortfall = torch.stack([weights[a] * (scores[a].max() - scores[a]) for a in axes]).max(dim=0).values
        others = {n: w for n, w in weights.items() if n not in axes}
        rest = objective({n: scores[n] for n in others}, others, rewards, baseline) if others else 0.0
        return self.candidates[int(torch.argmin(shortfall - rest))]

    def binding_axis(self, candidate: Candidate, weights: dict[str, float], axes: list[str]) -> str:
        """The axis whose weighted shortfall from the pool's best is the largest for `candidate`:
        the one a better pick for `weights` would have to raise."""
        best = {a: max(c.normalised[a] for c in self.candidates) for a in axes}
        return max(axes, key=lambda a: weights[a] * (best[a] - candidate.normalised[a]))


def chi_negative_log_likelihood(noise: torch.Tensor) -> torch.Tensor:
    """−log p(‖z‖) for ‖z‖ ~ χ(d), up to a constant; per sample."""
    d = noise[0].numel()
    r = noise.flatten(1).norm(dim=1).clamp_min(1e-6)
    return -(d - 1) * torch.log(r) + 0.5 * r**2


def objective(normalised: dict[str, torch.Tensor], weights: dict[str, float], rewards: dict[str, Reward],
              baseline: dict[str, float]) -> torch.Tensor:
    """[B] Σ wᵢ·rewardᵢ over the rewards to raise, plus wⱼ·min(0, guardⱼ − its baseline
    value) over the guards."""
    total = 0.0
    for name, value in normalised.items():
        if rewards[name].guard:
            total = total + weights[name] * torch.clamp(value - baseline[name], max=0.0)
        else:
            total = total + weights[name] * value
    return total


def as_8_bit(pixels: torch.Tensor) -> torch.Tensor:
    """The pixels a PNG of them holds (`to_pil`'s rounding), back in [0, 1]."""
    return (pixels.clamp(0, 1) * 255).round() / 255


def _scalars(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()[0]) for k, v in scores.items()}


def validate_iterations(iterations) -> int:
    iterations = whole_number(iterations, "iterations")
    if not 0 <= iterations <= MAX_ITERATIONS:
        raise InvalidInput(f"iterations must lie in [0, {MAX_ITERATIONS}], got {iterations}")
    return iterations


def optimise_noise(
    generator: Generator,
    prompt: str,
    seed: int,
    rewards: dict[str, Reward],
    weights: dict[str, float],
    settings: GuidanceSettings = GuidanceSettings(),
    stop: threading.Event | None = None,
    conditioning: Any = None,
    pool: CandidatePool | None = None,
    from_noise: torch.Tensor | None = None,
) -> Iterator[GuidanceProgress | GuidanceResult]:
    """Yields GuidanceProgress per iteration, then one GuidanceResult (the last item).

    `pool`: every finite iterate joins it, scored under every reward `weights` names, weight 0
    included (so that any weighting of them can pick from it).

    `conditioning`: render with this instead of the prompt's own (Instant's modulated one,
    prefstudio/guidance/instant.py, when Instant is the starting point of a short guidance);
    iteration 0 is then that image, and the guards hold at its values.

    `from_noise`: begin at this noise instead of the seed's, inside the same trust region around
    the seed's noise (a trade-off grid's bridge run starts from a candidate of its pool); the
    guards hold at its values."""
    prompt = validate_prompt(prompt)
    seed = validate_seed(seed)
    weights = validate_weights(weights, set(rewards))
    validate_iterations(settings.iterations)
    if settings.radius is not None and not (math.isfinite(settings.radius) and settings.radius >= 0):
        raise InvalidInput(f"the trust region's radius must be a number ≥ 0, got {settings.radius}")
    active = {name: rewards[name] for name, w in weights.items() if w > 0 or pool is not None}

    if conditioning is None:
        conditioning = generator.encode_prompt(prompt)
    contexts = {name: reward.prepare(prompt) for name, reward in active.items()}
    start = generator.initial_noise(seed).detach().clone()
    if from_noise is not None and from_noise.shape != start.shape:
        raise InvalidInput(f"the starting noise has shape {tuple(from_noise.shape)}, the seed's {tuple(start.shape)}")
    noise = (start if from_noise is None else from_noise.detach()).clone().requires_grad_(True)
    reach = None if settings.radius is None else settings.radius * float(start.norm())
    baseline: dict[str, float] = {}
    optimiser = torch.optim.SGD([noise], lr=settings.learning_rate,
                                momentum=settings.momentum, nesterov=True)
    # Keep the regulariser on the same footing whatever the noise size.
    reg_scale = settings.noise_regularisation / math.sqrt(noise[0].numel())

    best = None  # (total, iteration, noise, normalised, raw)
    trace: list[GuidanceProgress] = []
    stopped = False
    for iteration in range(settings.iterations + 1):
        if stop is not None and stop.is_set():
            stopped = True
            break
        optimiser.zero_grad(set_to_none=True)
        pixels = generator.render(noise, conditioning)
        raw, normalised = score_all(active, contexts, pixels)
        if iteration == 0:
            baseline = _scalars(normalised)
        total = objective(normalised, weights, active, baseline)
        value = float(total.detach()[0])
        if best is not None and not math.isfinite(value):
            break  # a degenerate iterate (NaN/inf scores): the best one so far stands, and no NaN is recorded
        if best is None or value > best[0]:
            best = (value, iteration, noise.detach().clone(), _scalars(normalised), _scalars(raw))
        if pool is not None and math.isfinite(value):
            with torch.no_grad():  # picked by the scores its PNG will show, not those of its float pixels
                png_raw, png_normalised = score_all(active, contexts, as_8_bit(pixels.detach()))
            pool.add(Candidate(noise.detach().clone(), _scalars(png_normalised), _scalars(png_raw), pool.runs,
                               iteration))
        preview = None
        if settings.preview_every and iteration % settings.preview_every == 0:
            preview = to_pil(pixels[:1])[0]
        progress = GuidanceProgress(iteration, value, _scalars(normalised), _scalars(raw),
                                    best[1], best[0], preview)
        trace.append(progress)
        yield progress
        if iteration == settings.iterations:
            break  # the last iterate is scored, not stepped from
        loss = -total.sum() + reg_scale * chi_negative_log_likelihood(noise).sum()
        loss.backward()
        # A render's gradient can be non-finite at a few entries (a distance field's 0/0 at a
        # sharp edge): those entries are dropped, not the step. With no finite entry left there is
        # nothing to step along, and a step would make every later iterate NaN: stop.
        finite = torch.isfinite(noise.grad)
        if not bool(finite.any()):
            break
        noise.grad.masked_fill_(~finite, 0.0)
        torch.nn.utils.clip_grad_norm_([noise], settings.grad_clip)
        optimiser.step()
        if reach is not None:
            with torch.no_grad():
                step = noise - start
                length = float(step.norm())
                if length > reach:
                    noise.copy_(start + step * (reach / length))

    if best is None:  # stopped before the baseline was even scored
        with torch.no_grad():
            pixels = generator.render(noise.detach(), conditioning)
            raw, normalised = score_all(active, contexts, pixels)
        total = objective(normalised, weights, active, _scalars(normalised))
        best = (float(total[0]), 0, noise.detach().clone(), _scalars(normalised), _scalars(raw))
    if pool is not None:
        pool.runs += 1
    with torch.no_grad():
        image = to_pil(generator.render(best[2], conditioning))[0]
    yield GuidanceResult(image, best[2], best[1], best[0], best[3], best[4],
                         max(0, len(trace) - 1), stopped, trace)


def run_guidance(*args, **kwargs) -> GuidanceResult:
    """optimise_noise, consumed to its result (for scripts and tests)."""
    result = None
    for result in optimise_noise(*args, **kwargs):
        pass
    return result
