"""Text encoders read a fixed number of tokens; say so when a prompt is longer.

CLIP reads 77 tokens, T5 in FLUX 256. Diffusers and transformers cut longer prompts
with at most a log line; PrefStudio reports what was dropped so the person can
rephrase: the note travels with the prompt features and is logged as a warning.
"""
import logging

log = logging.getLogger(__name__)
MAX_QUOTED_CHARS = 80


def truncation_note(tokenizer, prompt: str, window: int, reader: str) -> str | None:
    """None if `prompt` fits in `window` tokens (special tokens included), else what is ignored."""
    ids = tokenizer(prompt, truncation=False, verbose=False)["input_ids"]
    if len(ids) <= window:
        return None
    words = tokenizer(prompt, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    kept = window - (len(ids) - len(words))
    dropped = tokenizer.decode(words[kept:]).strip()
    if len(dropped) > MAX_QUOTED_CHARS:
        dropped = dropped[:MAX_QUOTED_CHARS] + "…"
    note = (
        f"the prompt is {len(ids)} tokens but {reader} reads {window}; "
        f"this end of it is ignored: {dropped!r}"
    )
    log.warning(note)
    return note
