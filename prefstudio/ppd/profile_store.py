"""The VLM profile kept with a studio profile: written from its judged pairs, read by the
Profile tab ("what the studio thinks you like") and by PPD generation as the user embedding.

Stored like a fitted model (history store, profile file), under the name "vlm-profile", and
checked by `state_schema.check_vlm_profile` whenever a profile file is imported.
"""
import time
from dataclasses import dataclass

import torch

from prefstudio.errors import InvalidInput
from prefstudio.ppd.vlm_profile import HISTORY_PAIRS, JudgedPair, VLMUserEncoder
from prefstudio.preference.state_schema import VLM_PROFILE, check_state


@dataclass
class StoredProfile:
    text: str
    embedding: torch.Tensor  # [D]
    vlm: str
    made_at: float
    pairs: list[list[str]]
    imported_at: float | None = None  # stored by an import: written elsewhere


def history_pairs(store, profile: str, count: int = HISTORY_PAIRS) -> list[tuple[str, str]]:
    """The person's `count` most recent (liked, disliked) pairs: their A ≻ B judgments first,
    then 👍/👎 images of the same prompt paired, then any 👍 with any 👎."""
    from prefstudio.preference.history_pairs import training_pairs

    judgments = store.judgments(profile)
    explicit = [(j.image_a, j.image_b) for j in reversed(judgments) if j.kind == "pair"]
    singles = [p for p in reversed(training_pairs(judgments)) if p not in explicit]
    prompt = {}
    for sha in {s for p in singles for s in p}:
        prompt[sha] = store.image_record(sha).prompt
    singles.sort(key=lambda p: prompt[p[0]] != prompt[p[1]])
    chosen = list(dict.fromkeys(explicit + singles))[:count]
    if len(chosen) < count:
        raise InvalidInput(f"the VLM reads {count} judged pairs and {profile} has {len(chosen)}: judge "
                           f"{count - len(chosen)} more (pick the better of two, or 👍 one and 👎 another)")
    return chosen


def write_vlm_profile(store, profile: str, encoder: VLMUserEncoder, seed: int = 0) -> StoredProfile:
    """Have the VLM read the person's recent pairs and store what it wrote and its embedding."""
    pairs = history_pairs(store, profile)
    history = [JudgedPair(store.image_record(liked).prompt, store.load_image(liked), store.load_image(disliked))
               for liked, disliked in pairs]
    written = encoder.profile(history, seed=seed)
    config = {"type": VLM_PROFILE, "version": 1, "vlm": encoder.settings.model[:200],
              "text": written.text or "(the VLM wrote no profile)", "pairs": [list(p) for p in pairs],
              "made_at": time.time()}
    tensors = {"embedding": written.embedding.float().contiguous()}
    check_state(VLM_PROFILE, tensors, config)  # what an import would accept, before it is stored
    store.save_model(profile, VLM_PROFILE, tensors, config)
    return read_vlm_profile(store, profile)


def read_vlm_profile(store, profile: str) -> StoredProfile | None:
    stored = store.load_model(profile, VLM_PROFILE)
    if stored is None:
        return None
    tensors, config = stored
    return StoredProfile(config["text"], tensors["embedding"], config["vlm"], config["made_at"], config["pairs"],
                         config.get("imported_at"))
