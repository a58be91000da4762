"""Soak: 8 browser sessions judging at once against `python app.py` (issue 19, durability).

    python bench/soak.py [--duration 300] [--sessions 8]

Starts `python app.py` on 127.0.0.1 with a fresh data folder, then runs `--sessions`
gradio_client sessions in threads for `--duration` seconds. Each session creates its own
profile (names chosen to be alike: "soak_1", "soak21", "SOAK_1x", … — a LIKE-pattern or
prefix bug would misfile them), generates batches of 16 candidates with seeds of its own and
clicks 👍 / 👎 / ⏭ on them, with an undo now and then. A judgment is acknowledged when the
app's reply says "recorded for <id>"; an undo when it says "Undone: … on <id>". After the
run the server is stopped and the store is read: every acknowledged judgment must be in its
session's profile with its verdict, and no profile may hold anything its session did not
acknowledge (misfiled or resurrected). Prints p50/p99 click latency and the check, and
rewrites the soak section of docs/benchmarks.md.
"""
import argparse
import os
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH = 16
MARKS = {"👍": "like", "👎": "dislike", "⏭": "skip"}
RECORDED = re.compile(r"(👍|👎|⏭) recorded for ([0-9a-f]{8})")
UNDONE = re.compile(r"Undone: (👍|👎|⏭) on ([0-9a-f]{8})")
ENDPOINTS = {"like": "/like", "dislike": "/dislike", "skip": "/skip"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(data: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--data", str(data), "--port", str(port), "--model", "embedded"],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("app.py did not start within 180 s")


class Session(threading.Thread):
    """One browser tab: its own gradio session (its own gr.State) and its own profile."""

    def __init__(self, index: int, name: str, url: str, stop_at: float):
        super().__init__(name=f"soak-{index}")
        self.index, self.profile, self.url, self.stop_at = index, name, url, stop_at
        self.acknowledged: Counter = Counter()  # (kind, image id prefix) -> count
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from gradio_client import Client

        rng = random.Random(self.index)
        try:
            client = Client(self.url, verbose=False, download_files=False)
            client.predict(self.profile, api_name="/create_profile")
            batch = 0
            while time.monotonic() < self.stop_at:
                seeds = ", ".join(str(10**6 * (self.index + 1) + batch * BATCH + k) for k in range(BATCH))
                client.predict(self.profile, f"soak session {self.index}", BATCH, seeds,
                               api_name="/generate_candidates")
                batch += 1
                made = []
                for _ in range(BATCH):
                    if time.monotonic() >= self.stop_at:
                        return
                    undo = made and rng.random() < 0.1
                    kind = rng.choice(["like", "like", "dislike", "dislike", "skip"])
                    start = time.perf_counter()
                    reply = client.predict(self.profile, api_name="/undo" if undo else ENDPOINTS[kind])
                    self.latencies.append(time.perf_counter() - start)
                    status = reply[6]
                    if undo:
                        mark, sha = UNDONE.search(status).groups()
                        self.acknowledged[(MARKS[mark], sha)] -= 1
                        made.pop()
                    else:
                        mark, sha = RECORDED.search(status).groups()
                        self.acknowledged[(MARKS[mark], sha)] += 1
                        made.append(sha)
        except Exception as error:  # reported in the result: a thread's exception is otherwise lost
            self.errors.append(f"{type(error).__name__}: {error}")


def verify(data: Path, sessions: list[Session]) -> dict:
    """Acknowledged judgments vs the store, profile by profile."""
    from prefstudio.store.history import HistoryStore

    lost = extra = 0
    with HistoryStore(data) as store:
        for session in sessions:
            expected = +session.acknowledged  # drops judgments undone again
            stored = Counter((j.kind, j.image_a[:8]) for j in store.judgments(session.profile))
            lost += sum((expected - stored).values())
            extra += sum((stored - expected).values())
        total = sum(sum(store.counts(s.profile).values()) for s in sessions)
    with sqlite3.connect(data / "history.sqlite3") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return {"lost": lost, "misfiled_or_extra": extra, "stored": total, "integrity": integrity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="seconds of judging (default 300)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions (default 8)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    names = ["soak_1", "soak21", "SOAK_1x", "soak", "soak_11", "soak 1", "soak-1", "soak1"]
    if not 1 <= args.sessions <= len(names):
        parser.error(f"--sessions must lie in [1, {len(names)}]")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "data", free_port()
        app = start_app(data, port)
        try:
            stop_at = time.monotonic() + args.duration
            sessions = [Session(i, names[i], f"http://127.0.0.1:{port}/", stop_at) for i in range(args.sessions)]
            for session in sessions:
                session.start()
            for session in sessions:
                session.join()
        finally:
            app.terminate()  # only the process started here, by its handle
            app.wait(timeout=60)
        load_after = os.getloadavg()[0]
        result = verify(data, sessions)
    latencies = [t for s in sessions for t in s.latencies]
    errors = [f"{s.profile}: {e}" for s in sessions for e in s.errors]
    acknowledged = sum(sum((+s.acknowledged).values()) for s in sessions)
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1000

    from prefstudio_research.report import machine, write_section

    markdown = "\n".join([
        "## Soak: 8 sessions judging at once (issue 19)",
        "",
        f"Machine: {machine()}. Load average (1 min, `uptime`): {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end (this run's own load included).",
        f"Command: `python bench/soak.py --duration {args.duration:g} --sessions {args.sessions}`",
        "",
        f"{args.sessions} gradio_client sessions against `python app.py` on 127.0.0.1 for {args.duration:g} s, "
        "each in its own profile (look-alike names), clicking 👍/👎/⏭ on its own candidates with an undo "
        "now and then; then the store is checked against every acknowledged reply.",
        "",
        "| clicks | judgments acknowledged (net of undos) | lost | misfiled or unacknowledged | "
        "errors | integrity_check | click p50 | click p99 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(latencies)} | {acknowledged} | {result['lost']} | {result['misfiled_or_extra']} | {len(errors)} | "
        f"{result['integrity']} | {p50:.0f} ms | {p99:.0f} ms |",
    ] + ([""] + [f"- error: {e}" for e in errors[:5]] if errors else []))
    print(markdown)
    if not args.no_write:
        write_section("soak", markdown)
    if result["lost"] or result["misfiled_or_extra"] or errors or result["integrity"] != "ok":
        sys.exit(1)


if __name__ == "__main__":
    main()
