"""The VLM backbone of the preference-token model (000 §3–4.1): IDEFICS2-8B as in the paper,
or a smaller Idefics3-class model, in 4-bit (bitsandbytes nf4) with LoRA on the language model.

One sequence per target: every history image is written as
"<image>The prompt is {prompt}. Score for this image? like|dislike", the target the same
without its label; P_v is prepended to the token embeddings ([P_v; x_u], §3.3). M⁺ and M⁻
are the language model's next-token logits at the last position for the first token of
"like" and of "dislike", ids looked up from the tokenizer in that very context.

Stage 1 trains the LoRA weights with L_all (no P_v yet); stage 2 adds P_v and trains it alone.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from prefstudio.errors import InvalidInput, ModelUnavailable, NotFound
from prefstudio.preference.losses import like_probability
from prefstudio.preference.token_checkpoint import (CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, FORMAT,
                                                    read_checkpoint_config)
from prefstudio.preference.token_stages import train_only_stage

TEMPLATE = "<image>The prompt is {prompt}. Score for this image?"
LABEL_WORDS = ("like", "dislike")
# LoRA on the language model only: plain ["q_proj", "v_proj"] would also adapt the vision tower.
LANGUAGE_MODEL_QV = r".*(text_model|language_model).*\.(q_proj|v_proj)"


@dataclass
class VLMConfig:
    model: str  # Hub id (e.g. HuggingFaceM4/idefics2-8b) or a local folder
    preference_tokens: int = 0  # L_p of this model; 0 = stage 1
    quantization: str = "nf4"  # "nf4" (QLoRA, as in the paper) or "none"
    compute_dtype: str = "bfloat16"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_prompt_tokens: int = 100  # 000 §4.1
    image_size: int = 512  # images are resized to image_size² first (000 §4.1)
    gradient_checkpointing: bool = True
    backbone: str = field(default="vlm", init=False)

    def __post_init__(self):
        if self.quantization not in ("nf4", "none"):
            raise InvalidInput(f"quantization must be 'nf4' or 'none', got {self.quantization!r}")
        if self.compute_dtype not in ("bfloat16", "float16", "float32"):
            raise InvalidInput(f"compute_dtype must be bfloat16, float16 or float32, got {self.compute_dtype!r}")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.compute_dtype)


def label_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the first token of " like" and " dislike" right after the template's "?"."""
    stem = TEMPLATE.replace("<image>", "").format(prompt="a photo")
    stem_ids = tokenizer(stem, add_special_tokens=False)["input_ids"]
    ids = []
    for word in LABEL_WORDS:
        full = tokenizer(f"{stem} {word}", add_special_tokens=False)["input_ids"]
        if full[: len(stem_ids)] != stem_ids or len(full) == len(stem_ids):
            raise InvalidInput(f"the tokenizer does not split the label {word!r} off the prompt template")
        ids.append(full[len(stem_ids)])
    if ids[0] == ids[1]:
        raise InvalidInput("'like' and 'dislike' start with the same token in this tokenizer")
    return ids[0], ids[1]


@dataclass
class ImagePair:
    """One judged pair of the history, as images."""

    liked: Image.Image
    disliked: Image.Image
    prompt: str


class VLMPreferenceModel(nn.Module):
    """Wraps a loaded Idefics2/Idefics3 model (quantized or not) with LoRA and P_v."""

    def __init__(self, hf_model, processor, config: VLMConfig):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = config
        self.processor = processor
        self.processor.tokenizer.padding_side = "right"  # the label position is the last real token
        image_processor = processor.image_processor
        if getattr(image_processor, "do_image_splitting", False):
            # 17 images per sequence at N_ref = 8: splitting each into crops would multiply that by 5.
            image_processor.do_image_splitting = False
        self.like_id, self.dislike_id = label_token_ids(processor.tokenizer)
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=LANGUAGE_MODEL_QV, bias="none")
        self.model = get_peft_model(hf_model, lora)
        if config.gradient_checkpointing:
            # Non-reentrant: the frozen embeddings need no requires_grad hack for LoRA to get gradients.
            self.model.get_base_model().activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        self.preference_tokens = None
        if config.preference_tokens:
            self._new_preference_tokens(config.preference_tokens)

    # ---- stages ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._base().get_input_embeddings().weight.device

    def _base(self):
        return self.model.get_base_model()

    def _new_preference_tokens(self, count: int, generator=None):
        embed = self._base().get_input_embeddings().weight
        # Start from the spread of real token embeddings so P_v is in the LM's input range.
        std = float(embed.float().std())
        init = torch.randn(count, embed.shape[1], generator=generator) * std
        self.preference_tokens = nn.Parameter(init.to(embed.device, torch.float32))

    def add_preference_tokens(self, count: int, generator=None) -> None:
        if self.preference_tokens is not None:
            raise InvalidInput("this model already has preference tokens")
        if count < 1:
            raise InvalidInput(f"the number of preference tokens must be at least 1, got {count}")
        self._new_preference_tokens(count, generator)
        self.config.preference_tokens = count

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """Stage 1: the LoRA weights (and P_v, if any); stage 2: P_v alone. Everything else is frozen."""
        lora = [p for n, p in self.model.named_parameters() if "lora_" in n]
        return train_only_stage(self, stage, lora, self.preference_tokens)

    # ---- inputs ------------------------------------------------------------------------
    def _prompt(self, prompt: str) -> str:
        tokenizer = self.processor.tokenizer
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > self.config.max_prompt_tokens:
            prompt = tokenizer.decode(ids[: self.config.max_prompt_tokens])
        return prompt

    def _image(self, image: Image.Image) -> Image.Image:
        size = self.config.image_size
        return image.convert("RGB").resize((size, size), Image.BICUBIC)

    def sequence(self, history: list[ImagePair], image: Image.Image, prompt: str) -> tuple[str, list]:
        """Text and images of one sequence: the history (liked and disliked of each pair, labelled)
        and the target, unlabelled."""
        parts, images = [], []
        for pair in history:
            text = TEMPLATE.format(prompt=self._prompt(pair.prompt))
            parts += [f"{text} {LABEL_WORDS[0]}", f"{text} {LABEL_WORDS[1]}"]
            images += [self._image(pair.liked), self._image(pair.disliked)]
        parts.append(TEMPLATE.format(prompt=self._prompt(prompt)))
        images.append(self._image(image))
        return "\n".join(parts), images

    def encode(self, sequences: list[tuple[str, list]]) -> dict:
        texts = [text for text, _ in sequences]
        images = [imgs for _, imgs in sequences]
        batch = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in batch.items()}

    # ---- forward -----------------------------------------------------------------------
    def _image_features(self, pixel_values, pixel_attention_mask):
        """[B, n, 3, H, W] -> [(B·n·tokens per image), D] in sequence order."""
        features = self._base().model.get_image_features(pixel_values, pixel_attention_mask).pooler_output
        return torch.cat(list(features), dim=0)

    def _embeddings(self, batch: dict, shared_history: bool):
        """Token embeddings with the images merged in and P_v prepended; and the attention mask.

        With shared_history (every sequence holds the same history images, only its last image,
        the target, differs), the history images go through the vision tower once, not once per
        sequence: half the vision work of a training pair, and far less when scoring many targets."""
        base = self._base()
        ids, pixels = batch["input_ids"], batch["pixel_values"]
        masks = batch.get("pixel_attention_mask")
        embeds = base.get_input_embeddings()(ids)
        if shared_history and pixels.shape[0] > 1:
            first = self._image_features(pixels[:1], None if masks is None else masks[:1])
            targets = self._image_features(pixels[1:, -1:], None if masks is None else masks[1:, -1:])
            per_image = first.shape[0] // pixels.shape[1]
            history = first[: first.shape[0] - per_image]
            image_features = torch.cat([first] + [torch.cat([history, t]) for t in targets.split(per_image)])
        else:
            image_features = self._image_features(pixels, masks)
        embeds = base.model.inputs_merger(ids, embeds, image_features)
        mask = batch["attention_mask"]
        if self.preference_tokens is not None:
            pv = self.preference_tokens.to(embeds.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
            embeds = torch.cat([pv, embeds], dim=1)
            mask = torch.cat([mask.new_ones(ids.shape[0], pv.shape[1]), mask], dim=1)
        return embeds, mask

    def forward(self, batch: dict, shared_history: bool = False, output_attentions: bool = False):
        """-> (m_like [B], m_dislike [B]) in float32 (and the text model's attentions)."""
        base = self._base()
        embeds, mask = self._embeddings(batch, shared_history)
        out = base.model.text_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                    output_attentions=output_attentions)
        last = mask.sum(1) - 1  # right padding: the last real token precedes the label
        hidden = out.last_hidden_state[torch.arange(embeds.shape[0], device=embeds.device), last]
        logits = base.lm_head(hidden).float()
        m_like, m_dislike = logits[:, self.like_id], logits[:, self.dislike_id]
        return (m_like, m_dislike, out.attentions) if output_attentions else (m_like, m_dislike)

    def pair_logits(self, history: list[ImagePair], liked: Image.Image, disliked: Image.Image, prompt: str):
        """Training example: the liked and the disliked target under the same history (same order).
        -> pos_like, pos_dislike, neg_like, neg_dislike, each [1]."""
        m_like, m_dislike = self(self.encode([self.sequence(history, liked, prompt),
                                              self.sequence(history, disliked, prompt)]), shared_history=True)
        return m_like[:1], m_dislike[:1], m_like[1:], m_dislike[1:]

    def score(self, history: list[ImagePair], images: list[Image.Image], prompts: list[str],
              batch_size: int = 4):
        """(m_like, m_dislike) [T] for each target image given the history."""
        if len(images) != len(prompts):
            raise InvalidInput(f"{len(images)} images but {len(prompts)} prompts")
        likes, dislikes = [], []
        for start in range(0, len(images), batch_size):
            seqs = [self.sequence(history, img, p)
                    for img, p in zip(images[start:start + batch_size], prompts[start:start + batch_size])]
            m_like, m_dislike = self(self.encode(seqs), shared_history=True)
            likes.append(m_like)
            dislikes.append(m_dislike)
        return torch.cat(likes), torch.cat(dislikes)

    def like_probability(self, history, images, prompts) -> torch.Tensor:
        return like_probability(*self.score(history, images, prompts))

    @torch.no_grad()
    def preference_token_attention(self, history: list[ImagePair], image: Image.Image, prompt: str):
        """Attention from the target image's tokens to P_v: [layers, heads, n_image_tokens, L_p]."""
        if self.preference_tokens is None:
            raise InvalidInput("this model has no preference tokens (a stage-1 model)")
        base = self._base()
        previous = base.config._attn_implementation
        base.set_attn_implementation("eager")  # sdpa returns no attention weights
        try:
            batch = self.encode([self.sequence(history, image, prompt)])
            _, _, attentions = self(batch, output_attentions=True)
        finally:
            base.set_attn_implementation(previous)
        n_pv = self.preference_tokens.shape[0]
        is_image = (batch["input_ids"][0] == base.config.image_token_id).nonzero().flatten()
        # The target's image is the last run of image tokens.
        per_image = len(is_image) // (2 * len(history) + 1)
        target = is_image[-per_image:] + n_pv
        return torch.stack([a[0][:, target, :n_pv].float().cpu() for a in attentions])

    # ---- checkpoints -------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = {f"lora.{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        if self.preference_tokens is not None:
            state["preference_tokens"] = self.preference_tokens.detach().float().cpu().contiguous()
        return state

    def save(self, directory: str | Path, provenance: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trained_state(), str(directory / CHECKPOINT_WEIGHTS), metadata={"format": FORMAT})
        config = {"format": FORMAT, "version": 1, "model": asdict(self.config), "provenance": provenance or {}}
        (directory / CHECKPOINT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        lora = {k[len("lora."):]: v for k, v in state.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(self.model, lora)
        if getattr(result, "unexpected_keys", None):
            raise InvalidInput(f"LoRA weights that fit no layer of this model: {result.unexpected_keys[:5]}")
        if "preference_tokens" in state:
            pv = state["preference_tokens"]
            if self.preference_tokens is None or self.preference_tokens.shape != pv.shape:
                raise InvalidInput(f"checkpoint has {pv.shape[0]} preference tokens, the config says "
                                   f"{self.config.preference_tokens}")
            with torch.no_grad():
                self.preference_tokens.copy_(pv)


def load_hf_vlm(config: VLMConfig, device: torch.device | str):
    """The Hugging Face model and processor named by config.model, quantized as configured."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    device = torch.device(device)
    quantization = None
    if config.quantization == "nf4":
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=config.dtype)
    try:
        processor = AutoProcessor.from_pretrained(config.model)
        model = AutoModelForImageTextToText.from_pretrained(
            config.model, quantization_config=quantization, dtype=config.dtype, device_map={"": device})
    except OSError as err:
        raise ModelUnavailable(
            f"the VLM {config.model!r} is not on this machine ({err.__class__.__name__}). Download it once "
            f"with `huggingface-cli download {config.model}` (about 16 GB for idefics2-8b) or pass a local "
            f"folder; PrefStudio never downloads on its own."
        ) from None
    return model, processor


def load_vlm(config: VLMConfig, device: torch.device | str) -> VLMPreferenceModel:
    model, processor = load_hf_vlm(config, device)
    return VLMPreferenceModel(model, processor, config)


def load_vlm_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> VLMPreferenceModel:
    config = read_checkpoint_config(directory)
    fields = {k: v for k, v in config["model"].items() if k != "backbone"}
    model = load_vlm(VLMConfig(**fields), device)
    weights = Path(directory) / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise NotFound(f"{weights} is missing")
    model.load_trained_state(load_file(str(weights)))
    return model.eval()
