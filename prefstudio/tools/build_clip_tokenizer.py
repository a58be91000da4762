"""Write CLIP's real tokenizer (vocab.json + merges.txt) from open_clip's bundled BPE file.

The Hub is out of reach here, but the open_clip_torch wheel carries CLIP's BPE merges
(`open_clip/bpe_simple_vocab_16e6.txt.gz`, MIT licence). The vocabulary is derived from
the merges exactly as open_clip's SimpleTokenizer does, so transformers' CLIPTokenizer
built from the output gives the same ids as openai/clip-vit-large-patch14.

    pip download --no-deps open_clip_torch==3.3.0 -d /tmp/oc
    python -m prefstudio.tools.build_clip_tokenizer /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl assets/clip_tokenizer
"""
import argparse
import gzip
import json
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (line 0 is a header).
N_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def read_bpe(source: Path) -> str:
    """The BPE text from the wheel (a .whl) or from the .txt.gz file itself."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(BPE_MEMBER)
    else:
        data = source.read_bytes()
    return gzip.decompress(data).decode("utf-8")


def build(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def write(out_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    vocab, merges = build(read_bpe(args.source))
    write(args.out_dir, vocab, merges)
    print(f"wrote {len(vocab):,} tokens and {len(merges):,} merges to {args.out_dir}")


if __name__ == "__main__":
    main()
