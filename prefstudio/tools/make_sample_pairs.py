"""Write the small sample pair data set shipped in assets/sample_pairs/.

    python -m prefstudio.tools.make_sample_pairs assets/sample_pairs

Images: the embedded offline generator (4 prompts × 8 seeds, 256² rendered, saved at 96²
as PNG). Judgments: three simulated people with hidden tastes (ana: warm and dense,
ben: bright and colourful, cleo: dark and muted), 16 pairs each, every pair two images of
the same prompt, the liked one being the one with the higher hidden utility. Deterministic:
the same command writes the same files.
"""
import argparse
import json
import random
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.encoders.embedded import MiniLMTextEncoder
from prefstudio.eval.simulated_users import SimulatedUser
from prefstudio.generators.embedded import EmbeddedGenerator

PROMPTS = ["a fox in the snow", "a lighthouse at dusk", "a bowl of fruit", "a mountain village"]
SEEDS = range(8)
PEOPLE = [SimulatedUser("ana", {"warmth": 1.0, "density": 1.0}),
          SimulatedUser("ben", {"brightness": 1.0, "colourfulness": 1.0}),
          SimulatedUser("cleo", {"brightness": -1.0, "saturation": -1.0})]
PAIRS_PER_PERSON = 16
SIZE = 96


def write(out: Path) -> None:
    torch.manual_seed(0)
    generator = EmbeddedGenerator(resolution=256, text_encoder=MiniLMTextEncoder())
    (out / "images").mkdir(parents=True, exist_ok=True)
    by_prompt = {}
    for p, prompt in enumerate(PROMPTS):
        names = []
        for g in generator.generate(prompt, list(SEEDS)):
            name = f"images/p{p}-seed{g.seed}.png"
            g.image.resize((SIZE, SIZE), resample=3).save(out / name, format="PNG", optimize=True)
            names.append(name)
        by_prompt[prompt] = names
    rng = random.Random(0)
    lines = []
    for person in PEOPLE:
        candidates = [(prompt, a, b) for prompt, names in by_prompt.items() for a, b in combinations(names, 2)]
        for prompt, a, b in rng.sample(candidates, PAIRS_PER_PERSON):
            pixels = pil_to_tensor([Image.open(out / a).convert("RGB"), Image.open(out / b).convert("RGB")])
            u_a, u_b = person.utility(pixels).tolist()
            liked, disliked = (a, b) if u_a > u_b else (b, a)
            lines.append({"user_id": person.user_id, "prompt": prompt, "liked": liked, "disliked": disliked})
    (out / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
