"""Cached per-image encoder features, per-prompt text features and the labeller's attributes.

All three are safetensors files keyed by the image list they were computed for (its
SHA-256 is in the metadata), so a rebuilt pool never meets stale features.
"""
import hashlib
import json
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from prefstudio_research.prefbench.clipart import Drawing, category_prompt, subject_prompt
from prefstudio_research.prefbench.data import feature_file
from prefstudio.encoders.base import ImageEncoder, TextEncoder, pil_to_tensor
from prefstudio.eval.simulated_users import ATTRIBUTES, image_attributes

BATCH = 32


def pool_digest(cache: Path) -> str:
    return hashlib.sha256((Path(cache) / "images.jsonl").read_bytes()).hexdigest()


def _fresh(path: Path, digest: str) -> bool:
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("images_sha256") == digest


def _batches(cache: Path, drawings: list[Drawing]):
    for start in range(0, len(drawings), BATCH):
        yield [Image.open(Path(cache) / d.path).convert("RGB") for d in drawings[start : start + BATCH]]


def cache_image_features(cache: Path, drawings: list[Drawing], encoder: ImageEncoder, log=print) -> Path:
    path = feature_file(cache, encoder.name)
    digest = pool_digest(cache)
    if _fresh(path, digest):
        return path
    chunks = []
    for n, images in enumerate(_batches(cache, drawings)):
        chunks.append(encoder.encode_images(images).float().cpu())
        if (n + 1) % 20 == 0:
            log(f"  encoded {(n + 1) * BATCH}/{len(drawings)} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": torch.cat(chunks).contiguous()}, str(path),
              metadata={"encoder": encoder.name, "images_sha256": digest})
    return path


def all_prompts(drawings: list[Drawing]) -> list[str]:
    """Every prompt a pair line can carry: image prompts, subject and category prompts."""
    prompts = {d.prompt for d in drawings} | {subject_prompt(d.subject) for d in drawings} \
        | {category_prompt(d.category) for d in drawings}
    return sorted(prompts)


def cache_text_features(cache: Path, drawings: list[Drawing], encoder: TextEncoder) -> Path:
    path = feature_file(cache, encoder.name)
    digest = pool_digest(cache)
    if _fresh(path, digest):
        return path
    prompts = all_prompts(drawings)
    features = torch.cat([encoder.encode(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.float().cpu().contiguous()}, str(path),
              metadata={"encoder": encoder.name, "images_sha256": digest,
                        "prompts": json.dumps(prompts)})
    return path


def _same_attributes(path: Path) -> bool:
    """The cached attributes are today's list (widening the simulated tastes adds some)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("attributes", "[]")) == list(ATTRIBUTES)


def cache_attributes(cache: Path, drawings: list[Drawing]) -> dict[str, torch.Tensor]:
    """`image_attributes` of every image, for the labeller (derived from pixels alone)."""
    path = Path(cache) / "labeller" / "attributes.safetensors"
    digest = pool_digest(cache)
    if not _fresh(path, digest) or not _same_attributes(path):
        chunks = {name: [] for name in ATTRIBUTES}
        with torch.no_grad():
            for images in _batches(cache, drawings):
                for name, values in image_attributes(pil_to_tensor(images)).items():
                    chunks[name].append(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: torch.cat(v).contiguous() for k, v in chunks.items()}, str(path),
                  metadata={"images_sha256": digest, "attributes": json.dumps(ATTRIBUTES)})
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
