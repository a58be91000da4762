"""Writes one bench script's section into docs/benchmarks.md, leaving the others as they are."""
import os
import platform
import re
import shlex
import time
from datetime import date
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure below names the command that produced it. Sections are rewritten by their scripts.
Other reports, each written by its own script with its command inside:
- [benchmarks_gpu.md](benchmarks_gpu.md): guided generation with full-size SD-Turbo / SDXL-Turbo on an H100 (`bench/gpu_guidance.py`).
- [benchmark_results.md](benchmark_results.md): PrefBench — preference accuracy, generation win rates, speed and scaling (`bench/run_benchmark.py`).
- [preference_tokens.md](preference_tokens.md): the preference-token model, its training and the IDEFICS2-8B step memory (`bench/vlm_step_memory.py`, `bench/preference_tokens_speed.py`).
"""


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    cores = os.cpu_count() or "?"
    return f"{cpu}, {cores} cores, {platform.system()} — {date.today().isoformat()}"


def how_it_ran(script: str, argv: list[str], load_start: tuple, start: float) -> str:
    """The line a section opens with: the command, the machine, the load and the time it took."""
    command = " ".join([f"python {script}", shlex.join(argv)]) if argv else f"python {script}"
    return (f"`{command}` — {machine()}; load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at "
            f"the end; {time.perf_counter() - start:.0f} s.")


def write_section(name: str, markdown: str, path: Path = BENCHMARKS) -> None:
    """Replaces (or appends) the section `name` of `path` (docs/benchmarks.md by default)."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {name} -->\n{markdown.strip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
