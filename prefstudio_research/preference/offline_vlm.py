"""Random-init Idefics2/Idefics3 models and their processors, built offline from configs.

The Hugging Face Hub is unreachable on the machines PrefStudio is developed and tested on,
so tests and memory benchmarks build the same classes a real checkpoint loads into: a
tokenizer trained here with the `tokenizers` BpeTrainer (with the special tokens the
processors need), an image processor, and a model with random weights. Nothing here is
used to serve a person; real weights come from `vlm.load_hf_vlm`.
"""
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from prefstudio.preference.vlm import LABEL_WORDS, TEMPLATE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<fake_token_around_image>", "<image>",
                  "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]  # Idefics3's crop tags

# SmolVLM-Instruct's chat template (Idefics3 class): what `apply_chat_template` formats with.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_CORPUS = [TEMPLATE.replace("<image>", "").format(prompt=p) + f" {label}"
           for p in ("a cat on a mat", "a red car at night", "a watercolor landscape with mountains",
                     "portrait of an astronaut", "a bowl of fruit, still life", "a photo")
           for label in LABEL_WORDS]


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """A byte-level BPE tokenizer trained on the template sentences (so " like" and " dislike"
    are single tokens), padded to vocab_size entries, as a PreTrainedTokenizerFast."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator((corpus or _CORPUS) * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def tiny_idefics3(directory: str | Path, image_size: int = 32, patch_size: int = 8) -> Path:
    """Save a tiny random Idefics3 (vision 2 layers, Llama text 2 layers) and its processor.

    Widths are multiples of 64: bitsandbytes' CPU 4-bit kernels work in blocks of 64."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = train_tokenizer(1000)
    config = Idefics3Config(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False)
    image_seq_len = (image_size // patch_size) ** 2 // config.scale_factor**2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    directory = Path(directory)
    Idefics3ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def idefics2_from_config(config_file: str | Path, device, dtype):
    """Full-size Idefics2 with random weights built from a config.json (no weights file), on
    `device` in `dtype`, and a processor whose tokenizer has the config's vocabulary size."""
    import torch
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2Processor
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    fields = {k: v for k, v in json.loads(Path(config_file).read_text()).items() if not k.startswith("_")}
    config = Idefics2Config(**fields)
    tokenizer = train_tokenizer(config.text_config.vocab_size - 8)
    processor = Idefics2Processor(image_processor=Idefics2ImageProcessorPil(do_image_splitting=False),
                                  tokenizer=tokenizer, image_seq_len=config.perceiver_config.resampler_n_latents)
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(processor.tokenizer)} tokens, the config {config.text_config.vocab_size}")
    config.image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    with torch.device(device):  # initialised where it runs, in dtype: no 32 GB float32 detour
        model = Idefics2ForConditionalGeneration._from_config(config, dtype=dtype)
    return model, processor
