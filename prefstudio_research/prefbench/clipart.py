"""The image pool: Debian's openclipart-png drawings, rendered alike, with prompts and pools.

Every drawing is decoded through `load_untrusted_image` (the files are data from outside:
a few are 100+ megapixel "bombs" and are refused and counted, never decoded), put on
white, scaled to fit 256×256 with its aspect kept, and written as a PNG under the cache
folder. Its prompt comes from its folder and file name. Variants of one drawing
(numbered copies, colour and `_bw` versions) form a group; whole groups go to the
train, val or test pool, so no test image has a twin in training.
"""
import json
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from prefstudio.errors import InvalidInput, ModelUnavailable
from prefstudio.store.image_files import load_untrusted_image

PACKAGE = "openclipart-png"
SIZE = 256
MARGIN = 8  # white border so strokes at the edge of a drawing stay visible
INK_LEVEL = 12  # grey levels below white that count as drawn
BLANK_FRACTION = 0.002  # less drawn area than this is an empty canvas
MIN_SIDE = 16  # smaller sources (a few are 3×2 flag stubs) carry no drawing worth judging
POOL_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}

# Words that occur across many categories in file names but are real words, not
# fragments of author names (which openclipart appends, cut to ~24 characters).
_COMMON_WORDS = {
    "of", "in", "and", "with", "the", "for", "on", "as", "to", "up", "one", "two", "full",
    "blue", "black", "red", "green", "yellow", "purple", "pink", "orange", "brown", "white",
    "simple", "icon", "arrow", "sign", "cross", "left", "right", "symbol", "glass", "box",
    "man", "water", "double", "fire", "wooden", "star", "open", "cd", "cartoon", "tree",
    "umbrella", "flag", "stylized", "hand", "paper", "scissors", "design", "flower", "bar",
    "science", "print", "france",
}


@dataclass
class Drawing:
    path: str  # rendered PNG, relative to the cache folder
    source: str  # relative to the package's png folder
    category: str  # top-level folder
    subject: str  # folder the file sits in
    group: str  # variants of one drawing share it
    prompt: str
    split: str  # image pool: train / val / test


def installed_png_files() -> tuple[Path, list[Path]]:
    """The package's PNG folder and files, installing the package with apt when missing."""
    listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True)
    if listing.returncode != 0:
        if shutil.which("apt-get") is None:
            raise ModelUnavailable(f"the benchmark needs Debian's {PACKAGE}; install it with apt")
        install = "apt-get update && apt-get install -y " + PACKAGE
        done = subprocess.run(["sh", "-c", install], capture_output=True, text=True)
        if done.returncode != 0:
            raise ModelUnavailable(
                f"could not install {PACKAGE} ({done.stderr.strip()[-300:]}); run as root: {install}")
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=True)
    files = sorted(Path(line) for line in listing.stdout.splitlines()
                   if line.endswith(".png") and "/openclipart/png/" in line)
    if not files:
        raise ModelUnavailable(f"{PACKAGE} is installed but lists no PNG files")
    root = Path(str(files[0]).split("/openclipart/png/")[0]) / "openclipart" / "png"
    return root, files


def _tokens(stem: str) -> list[str]:
    return [t for t in re.split(r"[^a-z]+", stem.lower()) if len(t) > 1]


def author_fragments(sources: list[str], min_categories: int = 4) -> set[str]:
    """Tokens seen in file names of many categories that are not common words: author names."""
    seen = defaultdict(set)
    for source in sources:
        for token in _tokens(Path(source).stem):
            seen[token].add(source.split("/")[0])
    return {t for t, cats in seen.items() if len(cats) >= min_categories and t not in _COMMON_WORDS}


def title_words(stem: str, authors: set[str]) -> list[str]:
    """File name -> words of the title: no numbering, no `bw`, no author, no cut-off tail."""
    words = [t for t in _tokens(stem) if t != "bw" and t not in authors]
    # A cut-off author name leaves a prefix of a known author fragment at the end.
    while words and len(words) > 1 and any(a.startswith(words[-1]) for a in authors):
        words.pop()
    return words[:4]


def subject_words(subject: str) -> str:
    return subject.split("/")[-1].replace("_", " ").replace("-", " ")


def subject_prompt(subject: str) -> str:
    category = subject.split("/")[0]
    leaf = subject_words(subject)
    return f"clip art of {leaf}" if leaf == category.replace("_", " ") else f"clip art of {leaf} ({category.replace('_', ' ')})"


def category_prompt(category: str) -> str:
    return f"clip art of {category.replace('_', ' ')}"


def render(source: Path) -> Image.Image:
    """One drawing on white, fitted into SIZE×SIZE with its aspect kept; raises InvalidInput."""
    image = load_untrusted_image(source)  # RGB, transparency composited on white
    if min(image.size) < MIN_SIDE:
        raise InvalidInput(f"image is {image.size[0]}×{image.size[1]}: too small to show a drawing")
    # Crop to the drawing: many files carry wide transparent margins, which would make
    # the same kind of drawing tiny in one file and full-size in the next.
    ink = ImageOps.invert(image.convert("L")).point(lambda v: 255 if v > INK_LEVEL else 0)
    box = ink.getbbox()
    if box is None or ink.histogram()[255] < BLANK_FRACTION * image.size[0] * image.size[1]:
        raise InvalidInput("the drawing is blank on white (white or transparent strokes only)")
    image = image.crop(box)
    inner = SIZE - 2 * MARGIN
    scale = inner / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    image = image.resize(size, Image.LANCZOS)
    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    canvas.paste(image, ((SIZE - size[0]) // 2, (SIZE - size[1]) // 2))
    return canvas


def _choose_sources(root: Path, files: list[Path], seed: int, per_subject: int,
                    categories: list[str] | None) -> list[str]:
    """A seeded sample of at most `per_subject` files per folder (shapes/stars alone has
    1,378 files; uncapped, stars and computer icons would be half of every pool)."""
    by_subject = defaultdict(list)
    for file in files:
        rel = file.relative_to(root).as_posix()
        if categories is None or rel.split("/")[0] in categories:
            by_subject[rel.rsplit("/", 1)[0] if "/" in rel else ""].append(rel)
    rng = torch.Generator().manual_seed(seed)
    chosen = []
    for subject in sorted(by_subject):
        if not subject:  # files directly in png/ have no category
            continue
        rels = by_subject[subject]
        order = torch.randperm(len(rels), generator=rng).tolist()
        chosen += [rels[i] for i in sorted(order[:per_subject])]
    return chosen


def _assign_pools(groups: dict[str, str], seed: int) -> dict[str, str]:
    """Group -> pool, whole groups, stratified by subject so every pool spans the subjects."""
    by_subject = defaultdict(set)
    for group, subject in groups.items():
        by_subject[subject].add(group)
    rng = torch.Generator().manual_seed(seed + 1)
    pool_of = {}
    for subject in sorted(by_subject):
        names = sorted(by_subject[subject])
        order = torch.randperm(len(names), generator=rng).tolist()
        # Deal groups round-robin over a 10-slot pattern (7 train, 1 val, 2 test), from a
        # random phase, so small subjects still reach the test pool.
        pattern = ["train"] * 7 + ["val"] + ["test"] * 2
        phase = int(torch.randint(len(pattern), (), generator=rng))
        for rank, i in enumerate(order):
            pool_of[names[i]] = pattern[(phase + rank) % len(pattern)]
    return pool_of


def build_image_pool(cache: Path, seed: int, per_subject: int,
                     categories: list[str] | None = None, log=print) -> list[Drawing]:
    """Render the sampled drawings into `cache`, write images.jsonl and render_report.json."""
    root, files = installed_png_files()
    sources = _choose_sources(root, files, seed, per_subject, categories)
    authors = author_fragments([f.relative_to(root).as_posix() for f in files])
    drawings, refused = [], {}
    for n, source in enumerate(sources):
        subject = source.rsplit("/", 1)[0]
        stem = Path(source).stem
        words = title_words(stem, authors)
        # Variants differ only in numbering, `bw` or colour words.
        key = " ".join(w for w in words if w not in {"red", "green", "blue", "yellow", "black",
                                                      "white", "purple", "pink", "orange", "brown"})
        title = " ".join(words)
        prompt = f"{title} ({subject_words(subject)})" if title else subject_prompt(subject)
        group = f"{subject}/{key or stem}"
        target = Path("images") / subject / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}.png"
        out = cache / target
        if not out.exists():
            try:
                image = render(root / source)
            except InvalidInput as error:
                refused[source] = str(error)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            image.save(tmp, format="PNG", compress_level=1)
            tmp.replace(out)
        # The group prompt is the prompt of its first member, so variants share one.
        drawings.append(Drawing(target.as_posix(), source, subject.split("/")[0], subject,
                                group, prompt, ""))
        if (n + 1) % 500 == 0:
            log(f"  rendered {n + 1}/{len(sources)}")
    group_prompt = {}
    for d in drawings:
        d.prompt = group_prompt.setdefault(d.group, d.prompt)
    pools = _assign_pools({d.group: d.subject for d in drawings}, seed)
    for d in drawings:
        d.split = pools[d.group]
    with open(cache / "images.jsonl", "w") as f:
        for d in drawings:
            f.write(json.dumps(asdict(d)) + "\n")
    report = {"package": PACKAGE, "files_in_package": len(files), "sampled": len(sources),
              "per_subject_cap": per_subject, "rendered": len(drawings),
              "refused": len(refused), "refusals": refused,
              "pools": {p: sum(d.split == p for d in drawings) for p in POOL_FRACTIONS}}
    (cache / "render_report.json").write_text(json.dumps(report, indent=1))
    return drawings


def read_image_pool(cache: Path) -> list[Drawing]:
    with open(cache / "images.jsonl") as f:
        return [Drawing(**json.loads(line)) for line in f]
