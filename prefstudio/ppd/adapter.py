"""Decoupled cross-attention for a user embedding in an SD / SDXL UNet (002 §4.3, eq. 7).

Every cross-attention layer keeps its text attention and gains a second one whose keys and
values come from user tokens: Z' = softmax(QKᵀ/√d)V + s·softmax(QK'ᵀ/√d)V'. This is exactly
diffusers' IP-Adapter processor (`IPAdapterAttnProcessor2_0`), which takes precomputed
embeddings through `added_cond_kwargs["image_embeds"]`; here the "image embedding" is the
user embedding u [D_u], turned into `tokens` cross-attention tokens by a small projection
(diffusers' `ImageProjection`: linear + LayerNorm). The scale s is the adapter scale: at 0
the processors skip the user branch, so the UNet computes what the base model computes.

W'_k starts as a copy of the layer's text W_k (as IP-Adapter training does) and W'_v at
zero, so an untrained adapter adds nothing at any scale: the DPO policy starts equal to the
reference, with loss log 2.

Checkpoint: a folder with `adapter.safetensors` (projection and W'_k, W'_v per layer) and
`adapter.json` (sizes, the base model it was trained on, training provenance).
"""
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prefstudio.errors import InvalidInput, NotFound

FORMAT = "prefstudio-ppd-adapter"
WEIGHTS = "adapter.safetensors"
CONFIG = "adapter.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_USER_DIM = 16_384
MAX_TOKENS = 64


@dataclass
class AdapterConfig:
    user_dim: int  # width of the user embedding u
    tokens: int = 4  # user tokens each cross-attention layer attends to
    base_model: str = ""  # what it was trained on (hub id or folder name), for the person to see
    user_embedding: str = ""  # where u comes from: "vlm:<model>", "onehot:clip,aesthetic,pickscore", ...
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, value, high in (("user_dim", self.user_dim, MAX_USER_DIM), ("tokens", self.tokens, MAX_TOKENS)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
                raise InvalidInput(f"adapter {name} must be a whole number in [1, {high}], got {value!r}")
        for name in ("base_model", "user_embedding"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"adapter {name} must be text")
        if not isinstance(self.provenance, dict):
            raise InvalidInput("adapter provenance must be a JSON object")


def cross_attention_layers(unet) -> dict[str, nn.Module]:
    """{processor name: Attention module} of the UNet's cross-attention layers (attn2)."""
    layers = {}
    for name in unet.attn_processors:
        if not name.endswith("attn1.processor"):
            layers[name] = unet.get_submodule(name.removesuffix(".processor"))
    if not layers:
        raise InvalidInput("this UNet has no cross-attention layers to condition on a user")
    return layers


def _key(processor_name: str) -> str:
    return processor_name.removesuffix(".processor").replace(".", "__")


class UserAdapter(nn.Module):
    """The trainable part: the user projection and W'_k, W'_v of every cross-attention layer.

    `install(unet)` puts the processors into the UNet; afterwards the UNet needs
    `added_cond_kwargs["image_embeds"] = adapter.image_embeds(u)` on every call."""

    def __init__(self, unet, config: AdapterConfig):
        super().__init__()
        from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
        from diffusers.models.embeddings import ImageProjection

        self.config = config
        cross_dim = unet.config.cross_attention_dim
        if isinstance(cross_dim, (list, tuple)):
            cross_dim = cross_dim[0]
        self.projection = ImageProjection(image_embed_dim=config.user_dim, cross_attention_dim=cross_dim,
                                          num_image_text_embeds=config.tokens)
        self.layers = nn.ModuleDict()
        self._names = {}
        for name, attn in cross_attention_layers(unet).items():
            processor = IPAdapterAttnProcessor2_0(attn.to_k.out_features, attn.to_k.in_features,
                                                  num_tokens=(config.tokens,), scale=1.0)
            with torch.no_grad():
                processor.to_k_ip[0].weight.copy_(attn.to_k.weight)
                processor.to_v_ip[0].weight.zero_()
            self.layers[_key(name)] = processor
            self._names[name] = _key(name)
        # The base model's dtype: the processors mix text and user attention outputs.
        self.to(device=unet.device, dtype=unet.dtype)

    @property
    def scale(self) -> float:
        return next(iter(self.layers.values())).scale[0]

    def set_scale(self, scale: float) -> None:
        scale = float(scale)
        if not scale == scale or abs(scale) > 100:  # NaN or absurd
            raise InvalidInput(f"adapter scale must be a number in [-100, 100], got {scale}")
        for processor in self.layers.values():
            processor.scale = [scale]

    def install(self, unet) -> None:
        """Replace the UNet's cross-attention processors with this adapter's, and make the UNet
        read user embeddings (as diffusers does when it loads an IP-Adapter)."""
        from diffusers.models.attention_processor import AttnProcessor2_0
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        if set(cross_attention_layers(unet)) != set(self._names):
            raise InvalidInput("this adapter was made for a UNet with other cross-attention layers")
        processors = {name: self.layers[self._names[name]] if name in self._names else AttnProcessor2_0()
                      for name in unet.attn_processors}
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([self.projection])
        unet.config.encoder_hid_dim_type = "ip_image_proj"

    @contextmanager
    def applied(self, unet, scale: float):
        """The adapter installed at `scale` for the block's length, then the UNet as it was: the
        studio's other runs (candidates, guidance) call the base UNet, which reads no user."""
        processors, projection = unet.attn_processors, unet.encoder_hid_proj
        kind = unet.config.encoder_hid_dim_type
        self.set_scale(scale)
        self.install(unet)
        try:
            yield
        finally:
            unet.set_attn_processor(processors)
            unet.encoder_hid_proj = projection
            unet.config.encoder_hid_dim_type = kind

    def image_embeds(self, user: torch.Tensor, batch: int | None = None) -> list[torch.Tensor]:
        """`added_cond_kwargs["image_embeds"]` for user embeddings [B, D_u] (or [D_u] for all)."""
        if user.shape[-1] != self.config.user_dim:
            raise InvalidInput(f"user embedding has {user.shape[-1]} values, the adapter reads {self.config.user_dim}")
        if user.ndim == 1:
            user = user.unsqueeze(0).expand(batch or 1, -1)
        return [user.to(self.projection.image_embeds.weight).unsqueeze(1)]  # [B, 1 "image", D_u]

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS), metadata={"format": FORMAT})
        (directory / CONFIG).write_text(json.dumps({"format": FORMAT, "version": 1, **asdict(self.config)},
                                                   indent=2) + "\n")
        return directory


def read_config(directory: str | Path) -> AdapterConfig:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise NotFound(f"{directory} is not a PPD adapter: {CONFIG} is missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{path} is too large to be an adapter config")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{path} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != 1:
        raise InvalidInput(f"{path} is not a PrefStudio PPD adapter config (format {FORMAT}, version 1)")
    fields = {k: v for k, v in raw.items() if k not in ("format", "version")}
    unknown = set(fields) - set(AdapterConfig.__dataclass_fields__)
    if unknown or "user_dim" not in fields:
        raise InvalidInput(f"{path}: unexpected or missing fields ({', '.join(sorted(unknown)) or 'user_dim'})")
    return AdapterConfig(**fields)


def load_adapter(directory: str | Path, unet, install: bool = True) -> UserAdapter:
    """The adapter saved in `directory`, built for `unet` and installed in it (or, with
    `install` False, ready for `applied`); every tensor's name and shape must match (a
    checkpoint of another base model is refused)."""
    config = read_config(directory)
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise NotFound(f"{weights} is missing")
    adapter = UserAdapter(unet, config)
    state = load_file(str(weights))
    expected = adapter.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise InvalidInput(f"{weights} does not fit this UNet (missing {missing[:2]}, unexpected {extra[:2]}): "
                           f"was it trained on another base model than {config.base_model or 'this one'}?")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise InvalidInput(f"{weights}: {key} has shape {list(tensor.shape)}, this UNet needs "
                               f"{list(expected[key].shape)}")
        if not torch.isfinite(tensor).all():
            raise InvalidInput(f"{weights}: {key} holds NaN or infinite values")
    adapter.load_state_dict(state)
    if install:
        adapter.install(unet)
    return adapter
