"""Start-up of the CLI's store-only commands (profile, judge, export, import): wall time of the
whole `python -m prefstudio …` process, median over runs, and which heavy modules it loaded.

    python bench/cli_startup.py --runs 10

For scale it also times `python -c "import torch"`: what every one of these commands paid
before they stopped importing torch. Writes the `cli_startup` section of docs/benchmarks.md.
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from PIL import Image  # noqa: E402

from prefstudio_research.report import machine, write_section  # noqa: E402
from prefstudio.store.history import HistoryStore  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 1.5
HEAVY = ("torch", "transformers", "diffusers", "gradio")


def prepare(folder: Path) -> str:
    """A history with one profile, 8 judged images and one stored fit-sized model."""
    with HistoryStore(folder / "data") as store:
        store.create_profile("alice")
        shas = []
        for i in range(8):
            buffer = io.BytesIO()
            Image.new("RGB", (256, 256), (i * 30, 120, 200 - i * 20)).save(buffer, format="PNG")
            shas.append(store.import_image(buffer.getvalue(), f"image {i}").sha256)
        for sha in shas[:4]:
            store.record_judgment("alice", "like", sha)
    return shas[4]


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr}")
    return elapsed


def heavy_modules(argv: list[str], cwd: Path, env: dict) -> list[str]:
    code = ("import runpy, sys; sys.argv = ['prefstudio', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('prefstudio', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"print('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *argv[3:]], cwd=cwd, env=env, capture_output=True, text=True)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY"))
    return [m for m in line[len("HEAVY "):].split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sha = prepare(folder)
        py = [sys.executable, "-m", "prefstudio", "--data", "data"]
        commands = {
            "profile list": py + ["profile", "list"],
            "judge (one 👎)": py + ["judge", "alice", "dislike", sha[:10]],
            "export": py + ["export", "alice", "alice.prefstudio"],
            "import": py + ["import", "alice.prefstudio", "--name", "NAME"],
        }
        rows = []
        for label, argv in commands.items():
            times = []
            for run in range(args.runs):
                times.append(timed([a.replace("NAME", f"copy{run}") for a in argv], folder, env))
            heavy = heavy_modules([a.replace("NAME", "probe") for a in argv], folder, env)
            rows.append((label, statistics.median(times), min(times), max(times), heavy))
        torch_times = [timed([sys.executable, "-c", "import torch"], folder, env) for _ in range(max(3, args.runs // 2))]
    load = os.getloadavg()[0]
    command = f"python bench/cli_startup.py --runs {args.runs}"
    lines = [
        "## CLI start-up of store-only commands (issue 14)",
        "",
        f"Machine: {machine()}. Load average (1 min) at the end: {load:.1f}.",
        f"Command: `{command}` — wall time of the whole `python -m prefstudio …` process on a history of "
        "one profile and 8 images; heavy modules checked in a separate run of the same command.",
        "",
        "| command | median | spread | runs | heavy modules loaded | target |",
        "|---|---|---|---|---|---|",
    ]
    for label, median, low, high, heavy in rows:
        lines.append(f"| `{label}` | {median:.2f} s | {low:.2f}–{high:.2f} s | {args.runs} | "
                     f"{', '.join(heavy) or 'none'} | < {TARGET_S} s |")
    lines.append(f"| for scale: `python -c \"import torch\"` | {statistics.median(torch_times):.2f} s | "
                 f"{min(torch_times):.2f}–{max(torch_times):.2f} s | {len(torch_times)} | torch | |")
    report = "\n".join(lines)
    print(report)
    write_section("cli_startup", report)
    worst = max(median for _, median, *_ in rows)
    if worst >= TARGET_S or any(heavy for *_, heavy in rows):
        raise SystemExit(f"store-only start-up misses the target: {worst:.2f} s or heavy imports")


if __name__ == "__main__":
    main()
