"""Regenerate image_stats_reference.json: the spread of each image statistic, and the
total variance of the L2-normalised EfficientNet features, over a fixed reference set.

    python -m prefstudio.encoders.stats_reference

Regenerating changes the features of EmbeddedImageEncoder: bump its `name` with it,
since cached features are keyed by that name.

Reference set (deterministic; what a person sees in PrefStudio is flat illustrations
from the embedded generator and photo-like renders from diffusion models):
- every 20th of Debian openclipart-png's drawings (sorted paths, ~400 across all 22
  categories), composited on white and padded to a square (apt-get install openclipart-png);
- 12 random crops (and flips) of each real photo shipped with the installed packages
  or as test fixtures: gradio's lion, cheetahs and tower, matplotlib's Grace Hopper,
  scikit-image's Chelsea and coffee cup (tests/fixtures).
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from prefstudio.encoders import efficientnet_lite0, image_stats
from prefstudio.encoders.base import pil_to_tensor
from prefstudio.encoders.embedded import STATS_REFERENCE_FILE

CLIPART_DIR = Path("/usr/share/openclipart/png")
CLIPART_STRIDE = 20
CROPS_PER_PHOTO = 12
SIZE = 256
MIN_STD = 1e-3  # a statistic that barely varies is not blown up into noise


def _package_file(package: str, relative: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0]) / relative


def photo_paths() -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    return [
        _package_file("gradio", "media_assets/images/lion.jpg"),
        _package_file("gradio", "media_assets/images/cheetah.jpg"),
        _package_file("gradio", "media_assets/images/cheetah1.jpg"),
        _package_file("gradio", "media_assets/images/tower.jpg"),
        _package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        repo / "tests/fixtures/chelsea.jpg",
        repo / "tests/fixtures/coffee.jpg",
    ]


def clipart_images() -> list[Image.Image]:
    if not CLIPART_DIR.is_dir():
        raise SystemExit(f"{CLIPART_DIR} is missing: apt-get install openclipart-png")
    paths = sorted(CLIPART_DIR.rglob("*.png"))[::CLIPART_STRIDE]
    images = []
    for path in paths:
        with Image.open(path) as img:
            img.draft("RGB", (SIZE * 2, SIZE * 2))
            rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(white, rgba).convert("RGB")
        images.append(ImageOps.pad(flat, (SIZE, SIZE), color=(255, 255, 255)))
    return images


def photo_crops(generator: torch.Generator) -> list[Image.Image]:
    crops = []
    for path in photo_paths():
        with Image.open(path) as img:
            photo = img.convert("RGB")
        width, height = photo.size
        for _ in range(CROPS_PER_PHOTO):
            scale = float(torch.empty(1).uniform_(0.5, 1.0, generator=generator))
            side = int(min(width, height) * scale)
            left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            crop = photo.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
            if torch.rand(1, generator=generator) < 0.5:
                crop = ImageOps.mirror(crop)
            crops.append(crop)
    return crops


@torch.no_grad()
def compute_reference(images: list[Image.Image], batch_size: int = 32) -> dict:
    network = efficientnet_lite0.load_pretrained()
    stats, features = [], []
    for start in range(0, len(images), batch_size):
        pixels = pil_to_tensor(images[start : start + batch_size])
        stats.append(image_stats.image_statistics(pixels))
        features.append(F.normalize(network.features(efficientnet_lite0.preprocess(pixels)), dim=-1))
    stats, features = torch.cat(stats).double(), torch.cat(features).double()
    return {
        "stat_names": list(image_stats.STAT_NAMES),
        "stat_mean": stats.mean(0).tolist(),
        "stat_std": stats.std(0).clamp_min(MIN_STD).tolist(),
        "network_total_variance": float(features.var(0).sum()),
        "images": len(images),
    }


def main() -> None:
    torch.set_num_threads(1)
    images = clipart_images()
    n_clipart = len(images)
    images += photo_crops(torch.Generator().manual_seed(0))
    reference = compute_reference(images)
    reference["reference_set"] = (
        f"{n_clipart} openclipart-png drawings (every {CLIPART_STRIDE}th path) + "
        f"{len(images) - n_clipart} crops of {len(photo_paths())} real photos; see stats_reference.py"
    )
    STATS_REFERENCE_FILE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {STATS_REFERENCE_FILE} from {len(images)} images; "
          f"network total variance {reference['network_total_variance']:.4f}")
    spread = np.array(reference["stat_std"])
    print("smallest stat spreads:", sorted(zip(spread.round(4), image_stats.STAT_NAMES))[:5])


if __name__ == "__main__":
    main()
