"""Personalized generation judged by the simulated users' hidden utilities.

For each test user and prompt, three images from one seed:
  - baseline: the generator's image for (prompt, seed), no personalization;
  - personalized: noise optimisation from that seed (`optimise_noise`, 30 iterations) against
    the user's fitted model at weight 0.75 and prompt consistency at 0.25 (the studio's
    defaults, 000 app. D);
  - best-of-N: the best of N seeds (the first being the baseline's) under the same rewards.
The fitted model is all the personalization sees. Then the judge — the user's hidden
utility, on the 8-bit images as a person would see them — compares them: a win is
u(personalized) > u(other). The Bradley–Terry chance that the (noisy) user would pick the
personalized image is reported beside it, and so is prompt consistency: the cosine of the
image's features to the mean features of unguided images of the prompt.
"""
import statistics
import time
from dataclasses import dataclass

import torch

from prefstudio.encoders.base import ImageEncoder, pil_to_tensor
from prefstudio.eval.simulated_users import SimulatedUser
from prefstudio.generators.base import Generator
from prefstudio.guidance.best_of_n import best_of_n
from prefstudio.guidance.noise_optimization import GuidanceSettings, run_guidance
from prefstudio.rewards.prompt_consistency import PromptConsistencyReward
from prefstudio.rewards.user_preference import TasteReward

USER_WEIGHT = 0.75
PROMPT_WEIGHT = 0.25
BEST_OF = 8


@dataclass
class GeneratedSet:
    """One (user, prompt, seed): the three images, made without the hidden utility."""

    user: str
    prompt: str
    seed: int
    baseline: torch.Tensor  # [1,3,H,W] 8-bit values in [0,1]
    personalized: torch.Tensor
    best_of_n: torch.Tensor
    guidance_seconds: float
    iterations: int


def personalize(generator: Generator, encoder: ImageEncoder, consistency: PromptConsistencyReward,
                user: str, model, reference_features: torch.Tensor, prompts: list[str], seed: int,
                iterations: int) -> list[GeneratedSet]:
    """The images for one user; `model` is the fitted preference model (features -> log-odds)."""
    rewards = {"user": TasteReward(model, encoder, reference_features),
               "prompt_consistency": consistency}
    weights = {"user": USER_WEIGHT, "prompt_consistency": PROMPT_WEIGHT}
    out = []
    for prompt in prompts:
        start = time.perf_counter()
        guided = run_guidance(generator, prompt, seed, rewards, weights, GuidanceSettings(iterations=iterations))
        seconds = time.perf_counter() - start
        seeds = [seed] + [(seed + 7919 * i) % 2**32 for i in range(1, BEST_OF)]
        best = best_of_n(generator, prompt, seeds, rewards, weights)
        baseline = generator.generate(prompt, [seed])[0].image
        pixels = pil_to_tensor([baseline, guided.image, best.image])
        out.append(GeneratedSet(user, prompt, seed, pixels[:1], pixels[1:2], pixels[2:3], seconds,
                                guided.iterations_run))
    return out


@torch.no_grad()
def judge(sets: list[GeneratedSet], users: dict[str, SimulatedUser], encoder: ImageEncoder,
          consistency: PromptConsistencyReward) -> dict:
    """Win rates under the hidden utilities, and prompt consistency of each kind of image."""
    wins_base, wins_best, best_over_base, p_pick, gains = [], [], [], [], []
    cos = {"baseline": [], "personalized": [], "best_of_n": []}
    for s in sets:
        user = users[s.user]
        u_base, u_pers, u_best = user.utility(torch.cat([s.baseline, s.personalized, s.best_of_n])).tolist()
        wins_base.append(u_pers > u_base)
        wins_best.append(u_pers > u_best)
        best_over_base.append(u_best > u_base)
        p_pick.append(float(torch.sigmoid(torch.tensor((u_pers - u_base) / user.temperature))))
        gains.append((u_pers - u_base) / user.temperature)
        anchor = consistency.prepare(s.prompt)
        for name, pixels in (("baseline", s.baseline), ("personalized", s.personalized),
                             ("best_of_n", s.best_of_n)):
            cos[name].append(float(consistency.score(pixels, anchor)))
    n = len(sets)
    return {
        "cases": n,
        "users": len({s.user for s in sets}),
        "prompts": len({s.prompt for s in sets}),
        "win_vs_baseline": sum(wins_base) / n,
        "win_vs_best_of_n": sum(wins_best) / n,
        "best_of_n_vs_baseline": sum(best_over_base) / n,
        "pick_probability_vs_baseline": statistics.mean(p_pick),
        "median_gain_in_temperatures": statistics.median(gains),
        "prompt_consistency": {k: statistics.mean(v) for k, v in cos.items()},
        "guidance_seconds_median": statistics.median(s.guidance_seconds for s in sets),
    }


def contact_sheet(sets: list[GeneratedSet], path) -> None:
    """Rows of (baseline | personalized | best-of-N), 128 px each, for the report."""
    from PIL import Image

    from prefstudio.generators.base import to_pil

    tile = 128
    sheet = Image.new("RGB", (3 * tile + 4, max(1, len(sets)) * (tile + 2)), (255, 255, 255))
    for row, s in enumerate(sets):
        for col, pixels in enumerate((s.baseline, s.personalized, s.best_of_n)):
            image = to_pil(pixels)[0].resize((tile, tile), Image.LANCZOS)
            sheet.paste(image, (col * (tile + 2), row * (tile + 2)))
    sheet.save(path)
