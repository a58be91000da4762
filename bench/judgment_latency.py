"""What one 👍/👎 costs through the app's API as a profile's history grows (issue 19, defect 5).

    python bench/judgment_latency.py [--sizes 0 10000 50000 200000] [--clicks 100]
                                     [--base DIR --base-clicks 10]

For each size: a fresh data folder whose profile "me" already holds that many judgments,
bulk-inserted as rows (half 👍/👎 on as many images, half A ≻ B on pairs of those images;
image rows only: a click never reads an old image's file), the app launched in this process
and `--clicks` alternating 👍/👎 sent with gradio_client, each timed from request to response.
Candidates come from the app's own /generate_candidates, 16 at a time with fresh seeds, so
every click is a new verdict on a candidate on screen (untimed). Prints median and p99 per
size and rewrites the judgment_latency section of docs/benchmarks.md.

`--base DIR` runs the same seeding and clicks against another checkout (e.g. `git worktree
add /tmp/base <commit>`) in a subprocess, for a side-by-side in one run (timings on this
shared machine drift by tens of percent within an hour).
"""
import argparse
import hashlib
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_history(db_path: Path, profile_id: int, n: int) -> None:
    """`n` judgments of one profile in one transaction: n - n//2 single verdicts on distinct
    images, n//2 A ≻ B on distinct pairs of them (so each is one verdict under either schema)."""
    singles, pairs = n - n // 2, n // 2
    images = max(singles, 3)
    shas = [hashlib.sha256(f"bench image {i}".encode()).hexdigest() for i in range(images)]
    created = "2026-01-01T00:00:00.000000+00:00"
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO images VALUES (?, ?, 'a seeded image', ?, 'embedded', '{}', 64, 64, ?)",
            ((sha, f"images/{sha[:2]}/{sha}.png", i, created) for i, sha in enumerate(shas)))
        db.executemany(
            "INSERT INTO judgments (profile_id, kind, image_a, image_b, created) VALUES (?, ?, ?, NULL, ?)",
            ((profile_id, "like" if i % 2 else "dislike", shas[i], created) for i in range(singles)))
        db.executemany(
            "INSERT INTO judgments (profile_id, kind, image_a, image_b, created) VALUES (?, 'pair', ?, ?, ?)",
            ((profile_id, shas[j], shas[(j + 1) % images], created) for j in range(pairs)))
    db.close()


def click_latencies(size: int, clicks: int) -> tuple[list[float], list[float]]:
    """Seconds per 👍/👎 through the API of an app over a history of `size` judgments, and
    seconds per call of the app's cheapest endpoint (/surprise: a prompt, no store, no profile)
    in between: the floor that gradio_client and the queue cost any call on this machine."""
    import torch
    from gradio_client import Client

    from prefstudio.store.history import HistoryStore
    from prefstudio.studio import Studio
    from prefstudio.ui.app import build_app, launch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as data:
        with HistoryStore(data) as store:
            profile_id = store.create_profile("me").id
        seed_history(Path(data) / "history.sqlite3", profile_id, size)
        demo = build_app(Studio(data))
        port = free_port()
        launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
        try:
            # Like a browser, which keeps the content-addressed thumbnails cached by URL.
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            client.predict("me", api_name="/open_profile")  # a session acts only on profiles it opened
            store = demo.prefstudio.store
            before = sum(store.counts("me").values())
            assert before == size, f"seeded {before} judgments, meant {size}"
            times, floor = [], []
            for i in range(clicks):
                if i % BATCH == 0:  # a fresh batch: every click below is a new verdict
                    seeds = ", ".join(str(1000 * size + i + k) for k in range(BATCH))
                    client.predict("me", "a bouquet of pink flowers", BATCH, seeds,
                                   api_name="/generate_candidates")
                start = time.perf_counter()
                client.predict("me", api_name="/like" if i % 2 == 0 else "/dislike")
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                client.predict(api_name="/surprise")
                floor.append(time.perf_counter() - start)
            assert sum(store.counts("me").values()) == size + clicks
            return times, floor
        finally:
            demo.close()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def measure(sizes: list[int], clicks: int) -> dict[int, tuple[list[float], list[float]]]:
    return {size: click_latencies(size, clicks) for size in sizes}


def run_base(base: Path, sizes: list[int], clicks: int) -> dict[int, tuple[list[float], list[float]]]:
    """The same measurement importing PrefStudio from another checkout, in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--code", str(base), "--json", "--clicks", str(clicks),
         "--sizes", *map(str, sizes)],
        cwd=base, check=True, capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 50_000, 200_000],
                        help="judgments already in the profile (default 0 10000 50000 200000)")
    parser.add_argument("--clicks", type=int, default=100, help="timed clicks per size (default 100)")
    parser.add_argument("--base", type=Path, help="another checkout to measure side by side")
    parser.add_argument("--base-clicks", type=int, default=10, help="timed clicks per size for --base (default 10)")
    parser.add_argument("--base-name", help="what --base is, for the report (e.g. its commit)")
    parser.add_argument("--code", type=Path, default=REPO, help=argparse.SUPPRESS)  # used by --base
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # used by --base
    args = parser.parse_args()
    if args.clicks < 2:
        parser.error("--clicks must be at least 2 (a p99 needs two values)")
    sys.path.insert(0, str(args.code.resolve()))
    from prefstudio import privacy

    privacy.apply_defaults()
    load_before = os.getloadavg()[0]
    results = measure(args.sizes, args.clicks)
    if args.json:
        print(json.dumps(results))
        return
    base = run_base(args.base, args.sizes, args.base_clicks) if args.base else {}
    load_after = os.getloadavg()[0]

    command = f"python bench/judgment_latency.py --sizes {' '.join(map(str, args.sizes))} --clicks {args.clicks}"
    if args.base:
        command += f" --base {args.base} --base-clicks {args.base_clicks}"
        if args.base_name:
            command += f" --base-name '{args.base_name}'"
    from prefstudio_research.report import machine, write_section

    lines = [
        "## One judgment as the history grows (issue 19, defect 5)",
        "",
        f"Machine: {machine()}. Load average (1 min, `uptime`): {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end. torch threads: 1.",
        f"Command: `{command}`",
        "",
        "One 👍/👎 through the app's API (gradio_client → queue → store write on disk → Label tab "
        "re-rendered → response), on a profile that already holds the judgments in the first column. "
        "Target: < 150 ms at 200k.",
        "",
        "The floor column is the app's cheapest endpoint (/surprise: no store, no profile) timed between "
        "the clicks: what gradio_client and the queue cost any call here, and what the load moves.",
        "",
        "| judgments in the profile | median | p99 | clicks | floor median |"
        + (" before (base) median | before p99 | clicks |" if base else ""),
        "|---|---|---|---|---|" + ("---|---|---|" if base else ""),
    ]
    for size in args.sizes:
        times, floor = results[size]
        row = (f"| {size:,} | {statistics.median(times) * 1000:.0f} ms | {p99(times) * 1000:.0f} ms | {len(times)} |"
               f" {statistics.median(floor) * 1000:.0f} ms |")
        if base:
            row += (f" {statistics.median(base[size][0]) * 1000:.0f} ms | {p99(base[size][0]) * 1000:.0f} ms |"
                    f" {len(base[size][0])} |")
        lines.append(row)
    if args.base:
        lines += ["", f"Base: {args.base_name or 'the checkout'} at `{args.base}`, same seeding, same kind of "
                      "clicks, measured in the same run."]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("judgment_latency", markdown)


if __name__ == "__main__":
    main()
