"""What refusing (or reading) hostile imports costs, this tree against a base (issue 19).

    python bench/import_refusal_cost.py --base-src /tmp/base-src [--runs 3]

`--base-src` is a folder holding the base's `prefstudio` package (e.g. from
`git archive <commit> prefstudio prefstudio_research | tar -x -C /tmp/base-src`; trees from before
the research split have no prefstudio_research). Every case runs in a fresh
process per run (peak memory is per process), on files built once here:
- a 1 GB profile file (just under the limit) whose 16 images of 63-64 MB do not match their
  hashes (its digest is valid);
- a profile file with 30 distinct 40 MP images (1-bit PNGs, a few KB each);
- one 1×40,000,000 PNG read as an upload;
- a Pick-a-Pic pickle whose records reference one 40 MP PNG 20 times.
"""
import argparse
import hashlib
import json
import os
import pickle
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from prefstudio_research.report import machine, write_section  # noqa: E402

WORKER = """
import json, resource, sys, time
import importlib
case, path, scratch, converter = sys.argv[1:5]
from prefstudio.errors import PrefStudioError
convert = importlib.import_module(converter).convert
from prefstudio.store.history import HistoryStore
from prefstudio.store.image_files import load_untrusted_image
from prefstudio.store.profile_file import import_profile
store = HistoryStore(scratch + "/store")
start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    if case == "upload":
        load_untrusted_image(path)
    elif case == "pickle":
        convert(path, path, path, scratch + "/out")
    else:
        import_profile(store, path)
    outcome = "accepted"
except PrefStudioError as error:
    outcome = "refused: " + str(error)[:70]
seconds = time.perf_counter() - start
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
print(json.dumps({"seconds": seconds, "mib": growth, "outcome": outcome}))
"""
# Memory is measured from after the imports (torch alone is ~200 MiB).


def bilevel_png(width: int, height: int) -> bytes:
    """An all-black 1-bit PNG of any size, compressed a megabyte of rows at a time."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    per_block = max(1, 2**20 // len(row))
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row * min(per_block, height - start))
                    for start in range(0, height, per_block)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def write_profile(path: Path, images: list[tuple[str, int, bytes]]) -> None:
    """A digest-valid profile file of images given as (name, size, one repeated block)."""
    content = {"name": "Bench", "judgments": [], "models": [],
               "images": [{"sha256": sha, "prompt": "p", "seed": None, "generator": "import", "params": {},
                           "created": "2026-01-01T00:00:00+00:00"} for sha, _, _ in images]}
    profile = json.dumps(content)
    digest = hashlib.sha256(profile.encode())
    for sha, size, block in sorted(images):
        digest.update(f"\nimage.{sha}\ntorch.uint8\n[{size}]\n".encode())
        for _ in range(size // len(block)):
            digest.update(block)
    header, offset = {"__metadata__": {"format": "prefstudio-profile", "version": "1", "profile": profile,
                                       "digest": digest.hexdigest()}}, 0
    for sha, size, _ in images:
        header[f"image.{sha}"] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        for _, size, block in images:
            for _ in range(size // len(block)):
                file.write(block)


def build(folder: Path) -> dict[str, tuple[str, Path]]:
    block = b"\x89PNG\r\n\x1a\n" + bytes(2**20 - 8)
    big = folder / "1gb.prefstudio"
    write_profile(big, [(f"{i:064x}", 64 * 2**20, block) for i in range(15)] + [("f" * 64, 63 * 2**20, block)])
    pngs = [bilevel_png(6300 + i, 6300) for i in range(30)]
    many = folder / "40mp.prefstudio"
    write_profile(many, [(hashlib.sha256(png).hexdigest(), len(png), png) for png in pngs])
    tall = folder / "tall.png"
    tall.write_bytes(bilevel_png(1, 40_000_000))
    image = bilevel_png(6324, 6324)
    record = {"user_id": "7", "reference_list": [image] * 8, "reference_list_bad": [image] * 8,
              "reference_prompt_list": ["p"] * 8, "image0": image, "image1": image, "prompt": "p", "label0": 1.0}
    pickled = folder / "repeat.pkl"
    pickled.write_bytes(pickle.dumps([record]))  # 18 references, x3 splits = 54 uses of one image
    return {"1 GB profile file, 16 images not matching their hashes": ("profile", big),
            "profile file with 30 distinct 40 MP images": ("profile", many),
            "1×40,000,000 PNG upload": ("upload", tall),
            "Pick-a-Pic pickles referencing one 40 MP PNG 54 times": ("pickle", pickled)}


def converter(src: Path) -> str:
    """The Pick-a-Pic converter's module in that tree: trees from before the research split
    keep it inside prefstudio."""
    if (src / "prefstudio_research").is_dir():
        return "prefstudio_research.preference.pickapic_convert"
    return "prefstudio.preference.pickapic_convert"


def measure(src: Path, case: str, path: Path, runs: int) -> dict:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            # cwd: `python -c` puts it first on sys.path, ahead of PYTHONPATH.
            done = subprocess.run([sys.executable, "-c", WORKER, case, str(path), scratch, converter(src)],
                                  capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"},
                                  cwd=scratch, timeout=1200)
        if done.returncode:
            results.append({"seconds": float("nan"), "mib": float("nan"),
                            "outcome": f"crashed ({done.returncode}): {done.stderr.strip().splitlines()[-1][:60]}"})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in results),
            "mib": statistics.median(r["mib"] for r in results), "outcome": results[-1]["outcome"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-src", required=True, type=Path, help="folder holding the base's prefstudio package")
    parser.add_argument("--base-name", default="base", help="how the table names the base")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cases = build(Path(folder))
        for label, (case, path) in cases.items():
            base = measure(args.base_src, case, path, args.runs)
            this = measure(ROOT, case, path, args.runs)
            print(label, base, this, flush=True)
            rows.append(f"| {label} | {base['seconds']:.2f} s, {base['mib']:,.0f} MiB ({base['outcome']}) | "
                        f"{this['seconds']:.2f} s, {this['mib']:,.0f} MiB ({this['outcome']}) |")
    load = os.getloadavg()[0]
    command = f"python bench/import_refusal_cost.py --base-src {args.base_src} --base-name " \
              f"{shlex.quote(args.base_name)} --runs {args.runs}"
    write_section("import_refusal_cost", f"""
## The cost of hostile imports (issue 19)

Machine: {machine()}. Load average at the end: {load:.1f}.
Command: `{command}`

Median wall time and peak-memory growth of a fresh process per run ({args.runs} runs), with the outcome.

| input | {args.base_name} | this tree |
|---|---|---|
""" + "\n".join(rows))


if __name__ == "__main__":
    main()
