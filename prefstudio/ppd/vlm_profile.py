"""A VLM reads a person's judged pairs and writes their profile (002 §4.2, app. B.2, Table 2).

The VLM (LLaVA-OneVision as in the paper, or an Idefics3/SmolVLM-class model) is shown N = 4
pairs, each with its caption, both images and which one the person preferred, and is asked
to reason step by step (zero-shot chain of thought): describe each image, explain how the
two differ, then summarise what sets the preferred images apart as a user profile. It
samples at temperature 0.7 without nucleus truncation (top-p 1.0), as in app. B.2.

The user embedding is the language model's last hidden state at the final token it wrote
(end-of-text tokens excluded): the text written is fed back once, whole, so that this state
is the one the model computes for that token.

As a judge (app. B.3) the same prompt gains a fifth, unlabelled pair and a request to
predict the person's choice; `judge.py` asks it with both image orders.
"""
import math
import random
import re
from dataclasses import dataclass

import torch
from PIL import Image

from prefstudio import hub
from prefstudio.errors import InvalidInput, ModelUnavailable

DEFAULT_VLM = "llava-hf/llava-onevision-qwen2-7b-ov-hf"  # 002 app. B.2
SMALL_VLM = "HuggingFaceTB/SmolVLM-Instruct"  # Idefics3 class, about 4.5 GB
VLM_SIZES = {DEFAULT_VLM: "about 16 GB", SMALL_VLM: "about 4.5 GB"}
HISTORY_PAIRS = 4  # N of 002 §4.2
MAX_PROFILE_CHARS = 4_000

# Our wording of 002 Table 2 (system prompt, chain-of-thought prompt, prediction prompt).
SYSTEM_PROMPT = ("You are an expert on image aesthetics. From examples of the choices one person made, "
                 "you work out which image that person would prefer.")
INTRODUCTION = "Here are a few pairs of images that one person has judged; in each pair they preferred one image."
PAIR_HEADER = "Pair {n}. The caption is: {prompt}"
INSTRUCTIONS = (
    "1. Describe every image in terms of its style, visual quality and aesthetics.\n"
    "2. For every pair, explain how the two images differ in style, visual quality and aesthetics.\n"
    "3. When all images are described, sum up what sets the preferred images apart from the others, "
    "as a profile of this person's taste.\n"
    "Answer in this form, for the {count} pairs:\n"
    "Pair 1: Image 1: [description] Image 2: [description] Differences: [description]\n"
    "[...]\n"
    "Pair {count}: Image 1: [description] Image 2: [description] Differences: [description]\n"
    "User Profile: [description]"
)
PREDICTION_REQUEST = (
    "Finally, here is a new pair of images that this person has not judged. The caption is: {prompt}\n"
    "Predict which image they would prefer, judging from the examples above. End your answer with "
    "the line:\nPrediction of user preference: [1 or 2]"
)
PROFILE_MARK = re.compile(r"user\s*profile\s*:", re.IGNORECASE)
PREDICTION = re.compile(r"prediction of user preference\s*:\s*\[?\s*([12])\b", re.IGNORECASE)


@dataclass
class JudgedPair:
    """One pair of the history: the person preferred `liked` over `disliked`."""

    prompt: str
    liked: Image.Image
    disliked: Image.Image


@dataclass
class VLMSettings:
    model: str = DEFAULT_VLM  # hub id or local folder
    image_size: int = 384  # each image is scaled to image_size² (the SigLIP towers' native size)
    max_new_tokens: int = 768  # room for 4 pairs of descriptions and the profile
    temperature: float = 0.7  # 002 app. B.2
    judge_temperature: float = 1.0  # 002 app. B.3
    dtype: str = "bfloat16"

    def __post_init__(self):
        if not 16 <= self.image_size <= 2048:
            raise InvalidInput(f"image size must lie in [16, 2048], got {self.image_size}")
        if not 1 <= self.max_new_tokens <= 8192:
            raise InvalidInput(f"max new tokens must lie in [1, 8192], got {self.max_new_tokens}")
        for name in ("temperature", "judge_temperature"):
            value = getattr(self, name)
            if not (0 < value <= 5 and math.isfinite(value)):
                raise InvalidInput(f"{name.replace('_', ' ')} must lie in (0, 5], got {value}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise InvalidInput(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")


@dataclass
class UserProfile:
    text: str  # the profile the VLM wrote (the whole answer if it wrote no "User Profile:")
    answer: str  # everything it wrote
    embedding: torch.Tensor  # [hidden size] float32: last hidden state of its final token


def clean_text(text: str, limit: int = MAX_PROFILE_CHARS) -> str:
    """Printable characters and newlines only, at most `limit`: what the profile stores."""
    kept = "".join(c if c.isprintable() or c == "\n" else " " for c in text).strip()
    return kept[:limit]


def profile_section(answer: str) -> str:
    marks = list(PROFILE_MARK.finditer(answer))
    return answer[marks[-1].end():].strip() if marks else answer.strip()


class VLMUserEncoder:
    """A loaded VLM and its processor; profiles, embeddings and preference predictions."""

    def __init__(self, model, processor, settings: VLMSettings):
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.settings = settings

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    # -- prompt ------------------------------------------------------------------------------

    def _image(self, image: Image.Image) -> Image.Image:
        size = self.settings.image_size
        return image.convert("RGB").resize((size, size), Image.BICUBIC)

    def messages(self, history: list[JudgedPair], query: tuple[str, Image.Image, Image.Image] | None = None,
                 order_seed: int = 0) -> tuple[list[dict], list[Image.Image]]:
        """Chat messages (Table 2) and their images in order. Which side the preferred image of
        a history pair is shown on is drawn from `order_seed`, so position tells nothing."""
        if not history:
            raise InvalidInput("the VLM needs at least one judged pair")
        rng = random.Random(order_seed)
        content, images = [{"type": "text", "text": INTRODUCTION}], []
        for n, pair in enumerate(history, 1):
            first, second, preferred = ((pair.liked, pair.disliked, 1) if rng.random() < 0.5
                                        else (pair.disliked, pair.liked, 2))
            content += [{"type": "text", "text": "\n" + PAIR_HEADER.format(n=n, prompt=pair.prompt) + "\nImage 1:"},
                        {"type": "image"}, {"type": "text", "text": "\nImage 2:"}, {"type": "image"},
                        {"type": "text", "text": f"\nPrediction of user preference: {preferred}"}]
            images += [self._image(first), self._image(second)]
        content.append({"type": "text", "text": "\n" + INSTRUCTIONS.format(count=len(history))})
        if query is not None:
            prompt, first, second = query
            content += [{"type": "text", "text": "\n" + PREDICTION_REQUEST.format(prompt=prompt) + "\nImage 1:"},
                        {"type": "image"}, {"type": "text", "text": "\nImage 2:"}, {"type": "image"}]
            images += [self._image(first), self._image(second)]
        messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                    {"role": "user", "content": content}]
        return messages, images

    def _inputs(self, messages, images) -> dict:
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        batch = self.processor(text=[text], images=[images], return_tensors="pt")
        dtype = self.model.dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in batch.items()}

    # -- generation --------------------------------------------------------------------------

    def _written_ids(self, sequence: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """The tokens the model wrote, without trailing end-of-text / padding tokens."""
        ids = sequence[prompt_length:]
        stop = set(self.processor.tokenizer.all_special_ids)
        end = len(ids)
        while end and int(ids[end - 1]) in stop:
            end -= 1
        return ids[:end]

    @torch.no_grad()
    def _write(self, inputs: dict, temperature: float, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        tokenizer = self.processor.tokenizer
        out = self.model.generate(**inputs, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                  max_new_tokens=self.settings.max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return self._written_ids(out[0], inputs["input_ids"].shape[1])

    @torch.no_grad()
    def profile(self, history: list[JudgedPair], seed: int = 0) -> UserProfile:
        """The profile text and user embedding from the history (002 uses 4 pairs)."""
        inputs = self._inputs(*self.messages(history, order_seed=seed))
        written = self._write(inputs, self.settings.temperature, seed)
        if len(written) == 0:
            raise InvalidInput("the VLM wrote nothing for this history; try another seed")
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], written.unsqueeze(0)], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        hidden = self.model(**full, output_hidden_states=True, use_cache=False).hidden_states[-1]
        answer = self.processor.tokenizer.decode(written, skip_special_tokens=True)
        return UserProfile(clean_text(profile_section(answer)), clean_text(answer, 4 * MAX_PROFILE_CHARS),
                           hidden[0, -1].float().cpu())

    @torch.no_grad()
    def predict(self, history: list[JudgedPair], prompt: str, image_1: Image.Image, image_2: Image.Image,
                seed: int = 0) -> int | None:
        """1 or 2: which image the person would prefer, as the VLM judges; None when its
        answer names neither."""
        inputs = self._inputs(*self.messages(history, (prompt, image_1, image_2), order_seed=seed))
        written = self._write(inputs, self.settings.judge_temperature, seed)
        return read_prediction(self.processor.tokenizer.decode(written, skip_special_tokens=True))


def read_prediction(answer: str) -> int | None:
    """The image (1 or 2) named on the answer's last "Prediction of user preference:" line."""
    found = PREDICTION.findall(answer)
    return int(found[-1]) if found else None


def load_vlm_user_encoder(settings: VLMSettings, device) -> VLMUserEncoder:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    size = VLM_SIZES.get(settings.model, "size unknown")
    source = hub.resolve(settings.model, size)
    with hub.loading(settings.model, size):
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=not hub.downloads_allowed())
        except (ImportError, AttributeError) as err:
            # transformers 5.23 builds LLaVA-OneVision's video processor with torchvision, even for images.
            raise ModelUnavailable(
                f"the processor of {settings.model} could not be built ({err.__class__.__name__}: {err}); "
                "LLaVA-OneVision's needs torchvision: `pip install torchvision==0.28.0` (built for torch 2.13.0)") from None
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=getattr(torch, settings.dtype), device_map={"": torch.device(device)},
            local_files_only=not hub.downloads_allowed())
    if getattr(processor, "chat_template", None) is None:
        raise ModelUnavailable(f"{settings.model} has no chat template: it is not an instruction-tuned VLM")
    return VLMUserEncoder(model, processor, settings)
