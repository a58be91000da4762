"""Noise optimisation: climbs the objective, keeps the best iterate, stops when asked,
and refuses bad settings before doing anything."""
import math
import threading

import pytest
import torch

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.errors import InvalidInput
from prefstudio.generators.base import to_pil
from prefstudio.generators.embedded import EmbeddedGenerator
from prefstudio.guidance.best_of_n import best_of_n
from prefstudio.guidance.noise_optimization import (
    MAX_ITERATIONS, Candidate, CandidatePool, as_8_bit, GuidanceProgress, GuidanceResult, GuidanceSettings,
    chi_negative_log_likelihood, optimise_noise,
    run_guidance,
)
from prefstudio.rewards.base import Reward


class Warmth(Reward):
    """mean(R − B): a differentiable reward with an obvious meaning."""
    name = "warmth"
    description = "test reward"
    scale = 0.1

    def score(self, pixels, context=None):
        return (pixels[:, 0] - pixels[:, 2]).flatten(1).mean(1)


@pytest.fixture(scope="module")
def generator():
    return EmbeddedGenerator(resolution=96)


def test_guidance_raises_the_reward_and_keeps_the_best(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=12))
    baseline = result.trace[0].total
    assert result.total > baseline + 0.5
    assert result.total == max(step.total for step in result.trace)
    assert result.best_iteration == max(result.trace, key=lambda s: s.total).iteration
    rendered = generator.render(result.noise, generator.encode_prompt("a cold blue ocean"))
    assert Warmth().normalise(Warmth().score(rendered)).item() == pytest.approx(result.total, abs=1e-4)


def test_stop_flag_ends_the_loop_with_the_best_so_far(generator):
    stop = threading.Event()
    seen = []
    for item in optimise_noise(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                               GuidanceSettings(iterations=30), stop):
        seen.append(item)
        if isinstance(item, GuidanceProgress) and item.iteration == 4:
            stop.set()
    result = seen[-1]
    assert isinstance(result, GuidanceResult) and result.stopped
    assert result.iterations_run == 4 and len(seen) == 6  # iterations 0..4, then the result
    assert result.total == max(s.total for s in seen[:-1])


class WarmthUntilNaN(Warmth):
    """Warmth whose gradient turns NaN after a few evaluations (sqrt at 0 in a degenerate image)."""

    def __init__(self, good_calls: int, pixels: int | None = None):
        self.calls, self.good_calls, self.pixels = 0, good_calls, pixels  # None: every pixel

    def score(self, pixels, context=None):
        self.calls += 1
        value = super().score(pixels, context)
        if self.calls > self.good_calls:  # value unchanged, gradient NaN
            value = value + torch.sqrt(pixels.flatten(1)[:, :self.pixels] * 0.0).sum(1)
        return value


def test_a_non_finite_gradient_ends_guidance_with_the_best_finite_iterate(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": WarmthUntilNaN(3)}, {"warmth": 1.0},
                          GuidanceSettings(iterations=12))
    assert 0 < result.iterations_run < 12  # it stopped at the NaN gradient instead of stepping along it
    assert all(math.isfinite(step.total) for step in result.trace)
    assert math.isfinite(result.total) and torch.isfinite(result.noise).all()
    assert result.total == max(step.total for step in result.trace)


def test_guidance_steps_past_a_few_non_finite_gradient_entries(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": WarmthUntilNaN(3, pixels=1)},
                          {"warmth": 1.0}, GuidanceSettings(iterations=12))
    assert result.iterations_run == 12  # the finite entries still give a direction
    assert all(math.isfinite(step.total) for step in result.trace)
    assert math.isfinite(result.total) and torch.isfinite(result.noise).all()
    assert result.total == max(step.total for step in result.trace)


@pytest.mark.parametrize("weights, message", [
    ({"warmth": float("nan")}, "finite"),
    ({"warmth": -1.0}, "must lie in"),
    ({"warmth": 0.0}, "all reward weights are zero"),
    ({"sharpness": 1.0}, "unknown reward"),
])
def test_bad_weights_are_refused(generator, weights, message):
    with pytest.raises(InvalidInput, match=message):
        run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, weights, GuidanceSettings(iterations=1))


def test_bad_prompt_and_iterations_are_refused(generator):
    with pytest.raises(InvalidInput, match="10,000 characters"):
        run_guidance(generator, "a" * 10_000, 1, {"warmth": Warmth()}, {"warmth": 1.0})
    with pytest.raises(InvalidInput, match="iterations"):
        run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0},
                     GuidanceSettings(iterations=10_000))


def test_chi_regulariser_is_smallest_at_the_typical_norm():
    d = 300
    norms = torch.tensor([0.5, 1.0, 2.0]) * math.sqrt(d - 1)
    noise = torch.nn.functional.normalize(torch.randn(3, d), dim=1) * norms[:, None]
    values = chi_negative_log_likelihood(noise)
    assert values[1] < values[0] and values[1] < values[2]


def test_best_of_n_picks_the_warmest_candidate(generator):
    seeds = list(range(6))
    result = best_of_n(generator, "a city street", seeds, {"warmth": Warmth()}, {"warmth": 1.0})
    conditioning = generator.encode_prompt("a city street")
    scores = [Warmth().normalise(Warmth().score(generator.render(generator.initial_noise(s), conditioning))).item()
              for s in seeds]
    assert result.best_iteration == max(range(6), key=scores.__getitem__)
    assert result.total == pytest.approx(max(scores), abs=1e-5)



def _candidates(generator, prompt, seeds, reward):
    """Raw and normalised scores of each seed's image, rendered one at a time."""
    conditioning = generator.encode_prompt(prompt)
    raw = torch.cat([reward.score(generator.render(generator.initial_noise(s), conditioning)) for s in seeds])
    return raw, reward.normalise(raw)


def test_best_of_n_in_batches_returns_the_best_candidate_its_place_noise_image_and_scores(generator):
    seeds = [7, 1, 4, 3, 2]  # seed 3 is the warmest: the second of the second batch
    result = best_of_n(generator, "a city street", seeds, {"warmth": Warmth()}, {"warmth": 1.0}, batch_size=2)
    raw, normalised = _candidates(generator, "a city street", seeds, Warmth())
    assert int(normalised.argmax()) == 3 and result.best_iteration == 3
    assert torch.equal(result.noise, generator.initial_noise(3))
    assert result.total == pytest.approx(float(normalised[3]), abs=1e-5)
    assert result.normalised == {"warmth": pytest.approx(float(normalised[3]), abs=1e-5)}
    assert result.raw == {"warmth": pytest.approx(float(raw[3]), abs=1e-6)} and result.raw != result.normalised
    from prefstudio.generators.base import to_pil

    rendered = to_pil(generator.render(result.noise, generator.encode_prompt("a city street")))[0]
    assert result.image.tobytes() == rendered.tobytes()
    assert (result.iterations_run, result.stopped, result.trace) == (5, False, [])
    first_of_its_batch = best_of_n(generator, "a city street", seeds, {"warmth": Warmth()}, {"warmth": 1.0},
                                   batch_size=3)
    assert first_of_its_batch.best_iteration == 3 and torch.equal(first_of_its_batch.noise, generator.initial_noise(3))


def test_best_of_n_keeps_the_first_of_equally_good_candidates(generator):
    result = best_of_n(generator, "a city street", [3, 3, 3], {"warmth": Warmth()}, {"warmth": 1.0}, batch_size=1)
    assert result.best_iteration == 0


def test_best_of_n_prepares_rewards_once_with_the_prompt_and_never_scores_a_zero_weight(generator):
    used, unused = Recording(), Recording()
    unused.name = "off"
    result = best_of_n(generator, "  a fox  ", [1, 2, 3], {"warmth": used, "off": unused},
                       {"warmth": 1.0, "off": 0.0}, batch_size=2)
    assert used.prompts == ["a fox"] and used.scored == 2  # one score per batch
    assert unused.prompts == [] and unused.scored == 0 and "off" not in result.normalised


def test_best_of_n_takes_at_most_64_valid_seeds_and_refuses_before_rendering(generator):
    small = EmbeddedGenerator(resolution=64)
    assert best_of_n(small, "a fox", list(range(64)), {"warmth": Warmth()}, {"warmth": 1.0}).iterations_run == 64
    reward = Recording()
    for seeds, message in [(list(range(65)), "65 candidates asked for; best-of-N takes at most 64"),
                           ([1, 2**32], "seed 4294967296 is out of range [0, 2^32)"),
                           ([1, "two"], "seed must be a whole number, got 'two'")]:
        with pytest.raises(InvalidInput) as caught:
            best_of_n(small, "a fox", seeds, {"warmth": reward}, {"warmth": 1.0})
        assert str(caught.value) == message
    with pytest.raises(InvalidInput, match="all reward weights are zero"):
        best_of_n(small, "a fox", [1], {"warmth": reward}, {"warmth": 0.0})
    with pytest.raises(InvalidInput, match="10,000 characters"):
        best_of_n(small, "a" * 10_000, [1], {"warmth": reward}, {"warmth": 1.0})
    assert reward.prompts == [] and reward.scored == 0

class Coolness(Reward):
    """mean(B − R) on a narrow scale: its normalised gradient outweighs Warmth's."""
    name = "prompt_consistency"
    description = "test guard"
    scale = 0.02
    guard = True

    def score(self, pixels, context=None):
        return (pixels[:, 2] - pixels[:, 0]).flatten(1).mean(1)


def test_a_guard_is_never_raised_at_the_cost_of_the_taste(generator):
    """A consistency term pulling the other way must not make the taste fall (it did when
    it was a reward to maximise): it may only hold the image back."""
    rewards = {"user": Warmth(), "prompt_consistency": Coolness()}
    result = run_guidance(generator, "a cold blue ocean", 3, rewards, {"user": 1.0, "prompt_consistency": 0.5},
                          GuidanceSettings(iterations=12))
    assert result.normalised["user"] >= result.trace[0].normalised["user"]
    # A light guard lets the taste climb while the guard's drop is paid for.
    light = run_guidance(generator, "a cold blue ocean", 3, rewards, {"user": 1.0, "prompt_consistency": 0.01},
                         GuidanceSettings(iterations=12))
    assert light.normalised["user"] > light.trace[0].normalised["user"] + 0.5



def test_best_of_n_measures_a_guard_against_the_first_candidate(generator):
    """A guard costs what it drops below the first seed's image (the baseline), as in guidance."""
    seeds, weights = [5, 2, 3, 4], {"user": 1.0, "prompt_consistency": 0.1}
    result = best_of_n(generator, "a city street", seeds, {"user": Warmth(), "prompt_consistency": Coolness()},
                       weights, batch_size=3)
    warm = _candidates(generator, "a city street", seeds, Warmth())[1]
    cool = _candidates(generator, "a city street", seeds, Coolness())[1]
    totals = warm + 0.1 * torch.clamp(cool - cool[0], max=0.0)
    assert result.best_iteration == int(totals.argmax())
    assert result.total == pytest.approx(float(totals.max()), abs=1e-5) and result.total < float(warm.max()) - 0.1
    assert result.normalised["prompt_consistency"] == pytest.approx(float(cool[result.best_iteration]), abs=1e-5)

@pytest.mark.parametrize("radius", [0.0, 0.05, 0.2])
def test_the_trust_region_bounds_how_far_the_noise_moves(generator, radius):
    start = generator.initial_noise(3)
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=10, radius=radius))
    assert float((result.noise - start).norm()) <= radius * float(start.norm()) * (1 + 1e-5)
    if radius == 0.0:
        assert result.best_iteration == 0 and torch.equal(result.noise, start)
    else:
        assert result.total > result.trace[0].total


class Peaked(Reward):
    """Rises with warmth up to a point, then falls: guidance overshoots the peak."""
    name = "warmth"
    description = "test reward"

    def score(self, pixels, context=None):
        w = (pixels[:, 0] - pixels[:, 2]).flatten(1).mean(1)
        return -((w - 0.05) / 0.02) ** 2


def test_the_best_iterate_is_returned_not_the_last(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Peaked()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=25, learning_rate=20.0))
    last = result.trace[-1]
    assert last.total < max(s.total for s in result.trace)  # it did overshoot
    assert result.best_iteration != last.iteration and result.total == max(s.total for s in result.trace)


def test_every_step_respects_the_gradient_clip(generator, monkeypatch):
    clipped = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        original(parameters, max_norm, *args, **kwargs)
        clipped.append(float(parameters[0].grad.norm()))
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                 GuidanceSettings(iterations=6, grad_clip=0.1))
    assert len(clipped) == 6 and max(clipped) <= 0.1 + 1e-6


def test_settings_and_stop_given_by_name_are_used(generator):
    result = run_guidance(generator, "a fox", 1, rewards={"warmth": Warmth()}, weights={"warmth": 1.0},
                          settings=GuidanceSettings(iterations=2, preview_every=0))
    assert result.iterations_run == 2 and [s.iteration for s in result.trace] == [0, 1, 2]
    assert all(s.preview is None for s in result.trace)
    stop = threading.Event()
    stop.set()
    stopped = run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0}, stop=stop)
    assert stopped.stopped and stopped.trace == [] and stopped.iterations_run == 0


def test_zero_iterations_return_the_baseline_and_the_maximum_is_accepted(generator):
    baseline = run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0},
                            GuidanceSettings(iterations=0))
    assert baseline.iterations_run == 0 and baseline.best_iteration == 0 and len(baseline.trace) == 1
    assert torch.equal(baseline.noise, generator.initial_noise(1))
    stop = threading.Event()
    for item in optimise_noise(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0},
                               GuidanceSettings(iterations=MAX_ITERATIONS, preview_every=0), stop):
        stop.set()  # accepted: stop after the baseline rather than run them all
    assert item.stopped and item.iterations_run == 0
    with pytest.raises(InvalidInput, match=f"iterations must lie in \\[0, {MAX_ITERATIONS}\\], got {MAX_ITERATIONS + 1}"):
        run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0},
                     GuidanceSettings(iterations=MAX_ITERATIONS + 1))


@pytest.mark.parametrize("radius", [-0.1, math.inf, math.nan])
def test_a_trust_region_radius_that_is_not_a_finite_number_at_least_zero_is_refused(generator, radius):
    with pytest.raises(InvalidInput) as caught:
        run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0},
                     GuidanceSettings(iterations=1, radius=radius))
    assert str(caught.value) == f"the trust region's radius must be a number ≥ 0, got {radius}"


def test_the_noise_goes_to_the_edge_of_a_small_trust_region(generator):
    """Warmth keeps rising, so the best iterate lies on the region's boundary, not inside it."""
    start = generator.initial_noise(3)
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=10, radius=0.02, preview_every=0))
    assert float((result.noise - start).norm()) == pytest.approx(0.02 * float(start.norm()), rel=1e-3)
    # ...and it moved where the reward pulls, not merely along the seed's own noise.
    step = (result.noise - start).flatten()
    assert float(torch.nn.functional.cosine_similarity(step, start.flatten(), dim=0)) < 0.5
    assert result.total > result.trace[0].total + 0.3


class Recording(Warmth):
    """Warmth that records the prompt it was prepared with and how often it scored."""
    def __init__(self):
        self.prompts, self.scored = [], 0

    def prepare(self, prompt):
        self.prompts.append(prompt)
        return prompt

    def score(self, pixels, context=None):
        assert context == self.prompts[-1]
        self.scored += 1
        return super().score(pixels, context)


def test_rewards_are_prepared_once_with_the_prompt_and_a_zero_weight_costs_nothing(generator):
    used, unused = Recording(), Recording()
    unused.name = "off"
    result = run_guidance(generator, "  a fox  ", 1, {"warmth": used, "off": unused}, {"warmth": 1.0, "off": 0.0},
                          GuidanceSettings(iterations=3, preview_every=0))
    assert used.prompts == ["a fox"] and used.scored == 4  # the baseline and three iterates
    assert unused.prompts == [] and unused.scored == 0 and "off" not in result.normalised


def test_each_progress_report_says_the_iterate_the_best_so_far_and_shows_a_preview_every_k(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=7, preview_every=3))
    assert [p.iteration for p in result.trace] == list(range(8)) and result.iterations_run == 7
    assert [p.preview is not None for p in result.trace] == [i % 3 == 0 for i in range(8)]
    assert result.trace[3].preview.size == (96, 96)
    best = -math.inf
    raw = Warmth().score(generator.render(generator.initial_noise(3), generator.encode_prompt("a cold blue ocean")))
    for p in result.trace:
        assert set(p.raw) == {"warmth"} and p.normalised["warmth"] == pytest.approx(Warmth().normalise(
            torch.tensor(p.raw["warmth"])).item(), abs=1e-5)
        if p.total > best:
            best, best_iteration = p.total, p.iteration
        assert (p.best_iteration, p.best_total) == (best_iteration, best)
    assert result.trace[0].raw["warmth"] == pytest.approx(float(raw[0]), abs=1e-6)
    assert result.stopped is False


def test_the_chi_regulariser_is_the_negative_log_density_of_the_noise_norm():
    d = 4 * 8 * 8
    for r in (0.5, 4.0, math.sqrt(d)):
        noise = torch.full((1, 4, 8, 8), r / math.sqrt(d))
        expected = -(d - 1) * math.log(r) + 0.5 * r**2
        assert float(chi_negative_log_likelihood(noise)[0]) == pytest.approx(expected, rel=1e-4)


def test_scores_that_turn_nan_end_guidance_with_the_best_finite_iterate(generator):
    class Fading(Warmth):
        calls = 0

        def score(self, pixels, context=None):
            Fading.calls += 1
            value = super().score(pixels, context)
            return value if Fading.calls <= 3 else value * float("nan")

    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Fading()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=10))
    assert isinstance(result, GuidanceResult)
    assert len(result.trace) == 3 and all(math.isfinite(p.total) for p in result.trace)
    assert math.isfinite(result.total) and result.best_iteration < 3


def test_the_result_is_the_best_iterate_rendered_with_its_scores_even_when_stopped_at_once(generator):
    result = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=4))
    best = result.trace[result.best_iteration]
    assert (result.normalised, result.raw) == (best.normalised, best.raw) and result.raw != result.normalised
    conditioning = generator.encode_prompt("a cold blue ocean")
    from prefstudio.generators.base import to_pil

    assert result.image.tobytes() == to_pil(generator.render(result.noise, conditioning))[0].tobytes()
    stop = threading.Event()
    stop.set()
    at_once = run_guidance(generator, "a cold blue ocean", 3, {"warmth": Warmth()}, {"warmth": 1.0},
                           GuidanceSettings(iterations=4), stop)
    assert (at_once.stopped, at_once.best_iteration, at_once.trace) == (True, 0, [])
    assert at_once.raw == result.trace[0].raw and at_once.image is not None


# --- the candidate pool of a trade-off grid -----------------------------------------------

def pool_of(points: list[tuple[float, float, float]]) -> CandidatePool:
    """A pool whose candidates score (a, b, guard) = each point; the first is the seed's noise."""
    pool = CandidatePool()
    for i, (a, b, g) in enumerate(points):
        pool.add(Candidate(torch.zeros(1), {"a": a, "b": b, "g": g}, {}, 0, i))
    return pool


class Guard(Warmth):
    guard = True


def test_a_sweep_of_the_pool_moves_along_a_front_that_is_not_convex_one_candidate_at_a_time():
    # Every point in between lies under the chord of the two ends: a weighted sum would give each
    # weighting one of the two ends.
    front = [(1.0, 0.0, 0.0), (0.7, 0.1, 0.0), (0.35, 0.35, 0.0), (0.1, 0.7, 0.0), (0.0, 1.0, 0.0)]
    pool = pool_of(front + [(0.1, 0.1, 0.0), (0.5, 0.05, 0.0)])  # two dominated ones
    rewards = {"a": Warmth(), "b": Coolness()}
    picks = [pool.pick({"a": 1 - t / 4, "b": t / 4}, rewards, ["a", "b"]) for t in range(5)]
    assert [(p.normalised["a"], p.normalised["b"]) for p in picks] == [f[:2] for f in front]
    assert [p.iteration for p in picks] == [0, 1, 2, 3, 4]


def test_a_guard_off_the_axes_still_prices_a_drop_below_the_seeds_own_noise():
    rewards = {"a": Warmth(), "b": Coolness(), "g": Guard()}
    # The second candidate is best on both axes but falls 2 spreads on the guard.
    pool = pool_of([(0.0, 0.0, 0.0), (1.0, 1.0, -2.0), (0.5, 0.5, 0.0)])
    assert pool.pick({"a": 0.5, "b": 0.5, "g": 0.5}, rewards, ["a", "b"]).iteration == 2
    assert pool.pick({"a": 0.5, "b": 0.5, "g": 0.1}, rewards, ["a", "b"]).iteration == 1
    # A rise of the guard is not paid for.
    pool = pool_of([(0.0, 0.0, 0.0), (0.5, 0.5, 3.0), (0.5, 0.5, 0.0)])
    assert pool.pick({"a": 0.5, "b": 0.5, "g": 1.0}, rewards, ["a", "b"]).iteration == 1


def test_the_pick_compares_shortfalls_exactly_not_at_the_scores_own_precision():
    """Scores are float32 values, their differences are not: two candidates whose shortfalls
    differ by less than float32 resolves near 0.9 must still be told apart, or a sweep's order
    between neighbouring cells falls to whichever candidate came first."""
    low = float(torch.tensor(0.1))
    just_above = float(torch.nextafter(torch.tensor(0.1), torch.tensor(1.0)))
    pool = pool_of([(1.0, low, 0.0), (just_above, 1.0, 0.0)])  # shortfalls 1 − low > 1 − just_above
    rewards = {"a": Warmth(), "b": Coolness()}
    for weight in (1.0, 0.5):
        assert pool.pick({"a": weight, "b": weight}, rewards, ["a", "b"]).iteration == 1


def test_an_empty_pool_is_refused():
    with pytest.raises(InvalidInput) as refused:
        CandidatePool().pick({"a": 1.0}, {"a": Warmth()}, ["a"])
    assert str(refused.value) == "the candidate pool is empty: run guidance into it first"


def test_without_the_seeds_own_noise_guards_are_measured_against_the_pools_first_candidate():
    # The seed's noise joins only if its objective is finite; then the first finite iterate,
    # not any later one, is what a guard must not fall below.
    rewards = {"a": Warmth(), "b": Coolness(), "g": Guard()}
    pool = pool_of([(0.0, 0.0, 0.0), (0.0, 0.0, -5.0), (1.0, 1.0, -1.0), (0.6, 0.6, 0.0)])
    for c in pool.candidates:
        c.iteration += 1
    weights = {"a": 0.5, "b": 0.5, "g": 1.0}
    # Against the first (guard 0) the third pays 1 for its drop and loses to the fourth;
    # against the second (guard -5) it would pay nothing and win.
    assert pool.pick(weights, rewards, ["a", "b"]).normalised["a"] == 0.6


def test_the_pool_scores_the_pixels_a_png_of_them_holds():
    pixels = torch.tensor([-0.3, 0.0, 0.2, 0.50001, 1.0, 1.7]).reshape(1, 3, 1, 2)
    png = torch.tensor(list(to_pil(pixels)[0].getdata()), dtype=torch.float32).T.reshape(1, 3, 1, 2) / 255
    assert torch.equal(as_8_bit(pixels), png) and as_8_bit(pixels).min() == 0 and as_8_bit(pixels).max() == 1


def test_every_finite_iterate_of_every_run_joins_the_pool_scored_under_every_weighted_reward(generator):
    pool = CandidatePool()
    rewards = {"warmth": Warmth(), "cool": Coolness()}
    first = run_guidance(generator, "a cold blue ocean", 3, rewards, {"warmth": 1.0, "cool": 0.0},
                         GuidanceSettings(iterations=4), pool=pool)
    run_guidance(generator, "a cold blue ocean", 3, rewards, {"warmth": 0.0, "cool": 1.0},
                 GuidanceSettings(iterations=3), pool=pool)
    assert pool.runs == 2
    assert [(c.run, c.iteration) for c in pool.candidates] == [(0, i) for i in range(5)] + [(1, i) for i in range(4)]
    # The weight-0 reward is scored too, and each candidate's scores are its noise's.
    conditioning = generator.encode_prompt("a cold blue ocean")
    for candidate in pool.candidates:
        assert set(candidate.normalised) == {"warmth", "cool"}
        assert candidate.raw["cool"] == pytest.approx(-candidate.raw["warmth"], abs=1e-6)
        # ... as its PNG will score them (8-bit pixels), not its float pixels.
        png = pil_to_tensor(to_pil(generator.render(candidate.noise, conditioning)))
        assert Warmth().normalise(Warmth().score(png)).item() == pytest.approx(
            candidate.normalised["warmth"], abs=1e-6)
    best = pool.candidates[first.best_iteration]
    assert torch.equal(best.noise, first.noise)
    assert best.normalised["warmth"] != first.total  # the float pixels' score is not the PNG's
    # Both runs start from the seed's noise.
    assert torch.equal(pool.candidates[0].noise, pool.candidates[5].noise)


def test_the_binding_axis_is_the_one_a_candidate_falls_short_on_most_under_the_weights():
    pool = pool_of([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.6, 0.5, 0.0)])
    middle = pool.candidates[2]
    # Shortfalls from the best: 0.4 on a, 0.5 on b.
    assert pool.binding_axis(middle, {"a": 0.5, "b": 0.5}, ["a", "b"]) == "b"
    assert pool.binding_axis(middle, {"a": 0.75, "b": 0.25}, ["a", "b"]) == "a"


def test_guidance_can_start_from_a_given_noise_inside_the_seeds_trust_region(generator):
    rewards = {"warmth": Warmth()}
    seed_noise = generator.initial_noise(3)
    elsewhere = seed_noise + 0.05 * torch.randn(seed_noise.shape, generator=torch.Generator().manual_seed(0))
    pool = CandidatePool()
    radius = 0.1
    run_guidance(generator, "a cold blue ocean", 3, rewards, {"warmth": 1.0},
                 GuidanceSettings(iterations=6, radius=radius), pool=pool, from_noise=elsewhere)
    assert torch.equal(pool.candidates[0].noise, elsewhere)
    # Every later iterate stays within the radius of the seed's noise, not of the start.
    reach = radius * float(seed_noise.norm())
    assert all(float((c.noise - seed_noise).norm()) <= reach * (1 + 1e-5) for c in pool.candidates[1:])
    assert any(float((c.noise - elsewhere).norm()) > 0 for c in pool.candidates[1:])
    with pytest.raises(InvalidInput, match=r"the starting noise has shape \(1, 2\)"):
        run_guidance(generator, "a cold blue ocean", 3, rewards, {"warmth": 1.0},
                     GuidanceSettings(iterations=1), from_noise=torch.zeros(1, 2))


def test_a_guard_costs_its_weighted_drop_below_its_baseline_and_earns_nothing_above_it():
    from prefstudio.guidance.noise_optimization import objective

    rewards = {"user": Warmth(), "prompt_consistency": Coolness()}
    normalised = {"user": torch.tensor([0.5, 0.5, 0.5]), "prompt_consistency": torch.tensor([2.0, 1.0, 0.25])}
    totals = objective(normalised, {"user": 2.0, "prompt_consistency": 0.5}, rewards,
                       {"user": 9.0, "prompt_consistency": 1.0})  # a reward's own baseline plays no part
    assert totals.tolist() == [1.0, 1.0, 1.0 - 0.5 * 0.75]


class Flat(Warmth):
    """A reward that no noise changes: the objective's gradient is zero."""

    def score(self, pixels, context=None):
        return pixels.flatten(1).mean(1) * 0.0


def _rendered_noise(generator, monkeypatch, start):
    """Start guidance from `start` and record every noise the generator renders."""
    seen = []
    render = generator.render
    monkeypatch.setattr(generator, "initial_noise", lambda seed: start.clone())
    monkeypatch.setattr(generator, "render", lambda noise, c: seen.append(noise.detach().clone()) or render(noise, c))
    return seen


def test_with_a_flat_reward_the_regulariser_pulls_a_too_long_noise_towards_the_typical_norm(monkeypatch):
    generator = EmbeddedGenerator(resolution=64)
    start = generator.initial_noise(1) * 1.5
    seen = _rendered_noise(generator, monkeypatch, start)
    run_guidance(generator, "a fox", 1, {"warmth": Flat()}, {"warmth": 1.0},
                 GuidanceSettings(iterations=5, preview_every=0))
    norms = [float(noise.norm()) for noise in seen[:6]]
    typical = math.sqrt(start[0].numel() - 1)  # the mode of the χ distribution of ‖z‖
    assert norms[0] == float(start.norm()) > 1.4 * typical
    assert all(later < earlier for earlier, later in zip(norms, norms[1:])) and norms[-1] > typical


def test_non_finite_gradient_entries_give_no_direction(monkeypatch):
    """A reward whose gradient is NaN at a few noise entries and zero at the rest: the NaN
    entries are dropped (set to zero), so the noise does not move at all."""
    class NaNAtOnePixel(Warmth):
        def score(self, pixels, context=None):
            return torch.sqrt(pixels.flatten(1)[:, :1] * 0.0).sum(1)

    generator = EmbeddedGenerator(resolution=64)
    start = generator.initial_noise(1)
    seen = _rendered_noise(generator, monkeypatch, start)
    result = run_guidance(generator, "a fox", 1, {"warmth": NaNAtOnePixel()}, {"warmth": 1.0},
                          GuidanceSettings(iterations=3, noise_regularisation=0.0, preview_every=0))
    assert result.iterations_run == 3  # some entries were finite: it went on
    assert len(seen) == 5 and all(torch.equal(noise, start) for noise in seen)


def test_guidance_stopped_before_it_began_measures_the_guards_at_its_own_image(generator):
    stop = threading.Event()
    stop.set()
    rewards = {"user": Warmth(), "prompt_consistency": Coolness()}
    result = run_guidance(generator, "a city street", 3, rewards, {"user": 1.0, "prompt_consistency": 0.5},
                          GuidanceSettings(iterations=4), stop)
    assert result.stopped and result.best_iteration == 0
    assert result.total == pytest.approx(result.normalised["user"], abs=1e-6)  # the guard costs nothing
    assert result.normalised["prompt_consistency"] < -0.5  # though it is low


def test_each_step_is_renos_nesterov_sgd_step_with_the_regulariser_scaled_to_the_noise_size(monkeypatch):
    """ReNO's optimiser (DESIGN.md): SGD with Nesterov momentum 0.9 and learning rate 5 on the
    clipped gradient. From rest, Nesterov's first step is lr·(1 + momentum)·gradient (plain
    momentum's is lr·gradient). A flat reward leaves only the noise regulariser, whose gradient
    (0.01/√d)·∇NLL(z) stays under the clip, so its step is exactly that."""
    generator = EmbeddedGenerator(resolution=64)
    start = generator.initial_noise(1) * 1.5
    settings = GuidanceSettings(iterations=1, preview_every=0)
    seen = _rendered_noise(generator, monkeypatch, start)
    run_guidance(generator, "a fox", 1, {"warmth": Flat()}, {"warmth": 1.0}, settings)
    noise = start.clone().requires_grad_(True)
    chi_negative_log_likelihood(noise).sum().backward()
    gradient = settings.noise_regularisation / math.sqrt(start[0].numel()) * noise.grad
    assert float(gradient.norm()) < settings.grad_clip
    step = -settings.learning_rate * (1 + settings.momentum) * gradient
    torch.testing.assert_close(seen[1] - seen[0], step, rtol=1e-4, atol=1e-6)

    seen.clear()  # a steep reward: the gradient is clipped to 0.1, so the first step is 5·1.9·0.1 long
    run_guidance(generator, "a fox", 1, {"warmth": Warmth()}, {"warmth": 1.0}, settings)
    assert float((seen[1] - seen[0]).norm()) == pytest.approx(
        settings.learning_rate * (1 + settings.momentum) * settings.grad_clip, rel=1e-4)
