"""A tiny pair data set on disk (bench/README.md layout) with a planted, learnable taste.

Images are flat colours with a little noise. Users belong to one of two archetypes, "likes
red" or "likes blue", and label every pair by that taste without noise, so a model that
reads the history can tell which archetype a user is and predict their choices.
"""
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prefstudio.encoders.base import ImageEncoder, TextEncoder


class MeanColourEncoder(ImageEncoder):
    """Per-channel mean and standard deviation of the pixels: 6 features."""

    name = "test-mean-colour"
    dim = 6

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([pixels.mean((2, 3)), pixels.std((2, 3))], dim=1)


class CharacterCountText(TextEncoder):
    """Counts of the letters a–p in the prompt, normalised: 16 features."""

    name = "test-letter-counts"
    dim = 16

    def encode(self, prompts: list[str]) -> torch.Tensor:
        rows = [[p.count(chr(ord("a") + i)) for i in range(16)] for p in prompts]
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32) + 1e-3, dim=-1)


def _utility(rgb, archetype):
    return rgb[0] - rgb[2] if archetype == "red" else rgb[2] - rgb[0]


def write_pair_data(root: Path, n_train_users=16, judgments_per_user=24, seed=0) -> Path:
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "pairs").mkdir()
    images = []
    for i in range(80):
        rgb = np_rng.random(3)
        pixels = np.clip(rgb + 0.05 * np_rng.standard_normal((12, 12, 3)), 0, 1)
        path = f"images/{i:03d}.png"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(root / path)
        images.append((path, rgb))
    (root / "images.jsonl").write_text("".join(json.dumps({"path": p}) + "\n" for p, _ in images))
    train_pool, reference_pool, target_pool = images[:40], images[40:60], images[60:]
    prompts = ["a flat colour", "a coloured square", "paint swatch"]

    def judgment(user, archetype, pool):
        (a, rgb_a), (b, rgb_b) = rng.sample(pool, 2)
        if _utility(rgb_a, archetype) < _utility(rgb_b, archetype):
            a, b = b, a
        return {"user_id": user, "prompt": rng.choice(prompts), "liked": f"../{a}", "disliked": f"../{b}"}

    archetype = {}
    users = {"train": [], "val": [], "test_seen": [], "test_unseen": []}
    for i in range(n_train_users):
        users["train"].append(f"u{i}")
        archetype[f"u{i}"] = "red" if i % 2 else "blue"
    for kind, count in (("val", 4), ("test_unseen", 4)):
        for i in range(count):
            user = f"{kind}{i}"
            users[kind].append(user)
            archetype[user] = "red" if i % 2 else "blue"
    users["test_seen"] = users["train"][:4]

    def write(name, rows):
        (root / "pairs" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("train.jsonl", [judgment(u, archetype[u], train_pool) for u in users["train"]
                          for _ in range(judgments_per_user)])
    for split, evaluated in (("val", users["val"]), ("test", users["test_seen"] + users["test_unseen"])):
        write(f"{split}_references.jsonl", [judgment(u, archetype[u], reference_pool) for u in evaluated
                                            for _ in range(8)])
        write(f"{split}_1v1.jsonl", [judgment(u, archetype[u], target_pool) for u in evaluated for _ in range(6)])
        groups = []
        for u in evaluated:
            for _ in range(2):
                four = sorted(rng.sample(target_pool, 4), key=lambda im: -_utility(im[1], archetype[u]))
                groups += [{"user_id": u, "prompt": "a flat colour", "liked": f"../{four[0][0]}",
                            "disliked": f"../{d[0]}"} for d in four[1:]]
        write(f"{split}_1v3.jsonl", groups)
    (root / "pairs" / "users.json").write_text(json.dumps({"seed": seed, "n_ref": 8, **users}))
    return root
