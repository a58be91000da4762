"""Best-of-N: the cheap alternative to noise optimisation.

Render N seeds, score each under the same objective as guidance (guards measured against
the first seed, the baseline), keep the best. No gradients, so it works with any reward;
it explores rather than refines.
"""
import torch

from prefstudio.errors import InvalidInput
from prefstudio.generators.base import Generator, to_pil
from prefstudio.guidance.noise_optimization import GuidanceResult, objective
from prefstudio.rewards.base import Reward, score_all
from prefstudio.validation import validate_prompt, validate_seed, validate_weights

MAX_CANDIDATES = 64


def best_of_n(generator: Generator, prompt: str, seeds: list[int], rewards: dict[str, Reward],
              weights: dict[str, float], batch_size: int = 8) -> GuidanceResult:
    # A block, not the decorator: mutmut does not mutate decorated functions (docs/mutation.md).
    with torch.no_grad():
        prompt = validate_prompt(prompt)
        if len(seeds) > MAX_CANDIDATES:
            raise InvalidInput(f"{len(seeds)} candidates asked for; best-of-N takes at most {MAX_CANDIDATES}")
        seeds = [validate_seed(s) for s in seeds]
        weights = validate_weights(weights, set(rewards))
        active = {name: rewards[name] for name, w in weights.items() if w > 0}
        conditioning = generator.encode_prompt(prompt)
        contexts = {name: reward.prepare(prompt) for name, reward in active.items()}
        best, baseline = None, None
        for start in range(0, len(seeds), batch_size):
            noise = torch.cat([generator.initial_noise(s) for s in seeds[start:start + batch_size]])
            pixels = generator.render(noise, conditioning)
            raw, normalised = score_all(active, contexts, pixels)
            if baseline is None:
                baseline = {k: float(v[0]) for k, v in normalised.items()}
            totals = objective(normalised, weights, active, baseline)
            i = int(totals.argmax())
            if best is None or float(totals[i]) > best[0]:
                best = (float(totals[i]), start + i, noise[i:i + 1].clone(), to_pil(pixels[i:i + 1])[0],
                        {k: float(v[i]) for k, v in normalised.items()},
                        {k: float(v[i]) for k, v in raw.items()})
        total, index, noise, image, normalised, raw = best
        return GuidanceResult(image, noise, index, total, normalised, raw, len(seeds), False)
