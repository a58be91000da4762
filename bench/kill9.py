"""kill -9 during judge / fit / import / export: nothing acknowledged is lost (issue 19).

    python bench/kill9.py [--trials 60] [--seed 0]

One data folder lives through every trial, as a person's would. Its profile "me" starts with
200 judgments on real images. Each trial starts one process and SIGKILLs it at a random
moment, then checks the store:
  judge   `python app.py`; a gradio_client session clicks 👍/👎 on fresh candidates until the
          kill. Every click the app answered ("recorded for <id>") must be in the store.
  fit     `python -m prefstudio fit me`.
  import  `python -m prefstudio import me.prefstudio --name imported-K`: the profile is then
          either absent or complete (all its judgments), never partial.
  export  `python -m prefstudio export me OUT`: OUT is then absent or a whole, valid profile
          file (imported into a scratch store to prove it).
After every trial: `PRAGMA integrity_check` is ok, the store opens, and every judgment
acknowledged so far (the seeded ones, the clicks, completed imports) is there.
The kill moment is uniform over the operation's duration measured once beforehand, so
some kills land before the work starts and some after it ends; both are counted.
Prints a table and rewrites the kill9 section of docs/benchmarks.md.
"""
import argparse
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
from prefstudio.errors import PrefStudioError  # noqa: E402
from prefstudio.generators.base import GeneratedImage  # noqa: E402
from prefstudio.store.history import HistoryStore  # noqa: E402
from prefstudio.store.profile_file import import_profile  # noqa: E402

OPERATIONS = ("judge", "fit", "import", "export")
RECORDED = re.compile(r"(👍|👎) recorded for ([0-9a-f]{8})")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(data: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prefstudio", "--data", str(data), "--model", "embedded", *args],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL the process started here (by its handle); True if it was still running."""
    running = process.poll() is None
    if running:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return running


def seed_store(data: Path, n: int = 200) -> None:
    with HistoryStore(data) as store:
        store.create_profile("me")
        for i in range(n):
            pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            sha = store.add_image(GeneratedImage(Image.fromarray(pixels, "RGB"), f"a seeded image {i}", i,
                                                 "embedded", {})).sha256
            store.record_judgment("me", "like" if i % 2 else "dislike", sha)


def snapshot(data: Path) -> dict[str, Counter]:
    """Every profile's current verdicts (kind, image id)."""
    with HistoryStore(data) as store:
        return {p.name: Counter((j.kind, j.image_a, j.image_b) for j in store.judgments(p.name))
                for p in store.list_profiles()}


def integrity(data: Path) -> str:
    with sqlite3.connect(data / "history.sqlite3") as db:
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return result


class Clicker(threading.Thread):
    """One browser session judging fresh candidates until the server dies under it."""

    def __init__(self, url: str, batch_seed: int):
        super().__init__(daemon=True)
        self.url, self.batch_seed = url, batch_seed
        self.acknowledged: list[tuple[str, str]] = []  # (kind, image id prefix)
        self.started = threading.Event()

    def run(self) -> None:
        from gradio_client import Client

        try:
            client = Client(self.url, verbose=False, download_files=False)
            batch = 0
            while True:
                seeds = ", ".join(str(self.batch_seed + 16 * batch + k) for k in range(16))
                client.predict("me", "a fox in the snow", 16, seeds, api_name="/generate_candidates")
                batch += 1
                for i in range(16):  # every click a new verdict on a candidate on screen
                    self.started.set()
                    reply = client.predict("me", api_name="/like" if i % 2 else "/dislike")
                    mark, sha = RECORDED.search(reply[6]).groups()
                    self.acknowledged.append(("like" if mark == "👍" else "dislike", sha))
        except Exception:  # the server was killed: what was acknowledged is in self.acknowledged
            self.started.set()


def start_app(data: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--data", str(data), "--port", str(port),
                                "--model", "embedded"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return process, url
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}")
            time.sleep(0.2)
    kill(process)
    raise RuntimeError("app.py did not start within 180 s")


def judge_trial(data: Path, rng: random.Random, trial: int) -> tuple[bool, int, int]:
    """(killed mid-run, acknowledged clicks missing from the store, clicks acknowledged)."""
    process, url = start_app(data)
    clicker = Clicker(url, batch_seed=10**6 * (trial + 1))
    clicker.start()
    clicker.started.wait(timeout=300)
    time.sleep(rng.uniform(0.0, 3.0))
    during = kill(process)
    clicker.join(timeout=60)
    with HistoryStore(data) as store:
        stored = {(j.kind, j.image_a[:8]) for j in store.judgments("me")}
    lost = sum((kind, sha) not in stored for kind, sha in clicker.acknowledged)
    return during, lost, len(clicker.acknowledged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=60, help="kills in all, spread over the 4 operations (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0]
    results = {op: Counter() for op in OPERATIONS}
    problems: list[str] = []
    lost_total = 0
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = folder / "data"
        seed_store(data)
        # Durations to draw kill moments from; these complete runs are not trials.
        durations = {}
        for op, args_ in (("fit", ("fit", "me")), ("export", ("export", "me", str(folder / "me.prefstudio"))),
                          ("import", ("import", str(folder / "me.prefstudio"), "--name", "imported-0"))):
            start = time.perf_counter()
            if cli(data, *args_).wait() != 0:
                raise RuntimeError(f"{op} failed before any kill")
            durations[op] = time.perf_counter() - start
        acknowledged = snapshot(data)  # everything that must survive from now on

        schedule = [OPERATIONS[i % len(OPERATIONS)] for i in range(args.trials)]
        rng.shuffle(schedule)
        for trial, op in enumerate(schedule, 1):
            clicks = 0
            if op == "judge":
                during, lost, clicks = judge_trial(data, rng, trial)
                if lost:
                    lost_total += lost
                    problems.append(f"trial {trial} (judge): {lost} acknowledged clicks are not in the store")
            else:
                target = folder / f"out-{trial}.prefstudio"
                command = {"fit": ("fit", "me"), "export": ("export", "me", str(target)),
                           "import": ("import", str(folder / "me.prefstudio"), "--name", f"imported-{trial}")}[op]
                process = cli(data, *command)
                time.sleep(rng.uniform(0.0, durations[op]))
                during = kill(process)
            check = integrity(data)
            if check != "ok":
                problems.append(f"trial {trial} ({op}): integrity_check says {check}")
            now = snapshot(data)  # also proves the store opens after the kill
            for name, verdicts in acknowledged.items():
                missing = verdicts - now.get(name, Counter())
                if missing:
                    lost_total += sum(missing.values())
                    problems.append(f"trial {trial} ({op}): {sum(missing.values())} acknowledged judgments "
                                    f"of {name!r} are gone")
            if op == "import":
                imported = now.get(f"imported-{trial}")
                if imported is not None and imported != acknowledged["imported-0"]:
                    problems.append(f"trial {trial}: a partial import ({sum(imported.values())} judgments)")
            if op == "export" and target.exists():
                with HistoryStore(folder / f"scratch-{trial}") as scratch:
                    try:
                        import_profile(scratch, target)  # refuses a partial or damaged file
                        results[op]["valid files left"] += 1
                    except PrefStudioError as error:
                        problems.append(f"trial {trial}: the export left a bad file ({error})")
            acknowledged = now  # the new state (new clicks, a completed import) must survive too
            results[op]["trials"] += 1
            results[op]["killed mid-run" if during else "finished before the kill"] += 1
            results[op]["clicks acknowledged"] += clicks
            print(f"trial {trial:>3} {op:<6} {'killed mid-run' if during else 'finished first':<15} "
                  f"integrity {check}", flush=True)
    load_after = os.getloadavg()[0]

    from prefstudio_research.report import machine, write_section

    lines = [
        "## kill -9 during judge / fit / import / export (issue 19)",
        "",
        f"Machine: {machine()}. Load average (1 min, `uptime`): {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end.",
        f"Command: `python bench/kill9.py --trials {args.trials} --seed {args.seed}`",
        "",
        "One data folder through all trials; each trial SIGKILLs `python app.py` while a client clicks "
        "(judge) or `python -m prefstudio fit|import|export` at a random moment, then checks "
        "`PRAGMA integrity_check`, that every acknowledged judgment is still there, that an import is "
        "all or nothing and that an export left no file or a whole valid one.",
        "",
        "| operation | trials | killed mid-run | finished before the kill | clicks acknowledged | "
        "valid export files left |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPERATIONS:
        r = results[op]
        lines.append(f"| {op} | {r['trials']} | {r['killed mid-run']} | {r['finished before the kill']} | "
                     f"{r['clicks acknowledged'] if op == 'judge' else '–'} | "
                     f"{r['valid files left'] if op == 'export' else '–'} |")
    integrity_ok = not any("integrity_check" in p for p in problems)
    lines += ["", f"Acknowledged judgments lost: **{lost_total}**. integrity_check ok after every trial: "
                  f"**{'yes' if integrity_ok else 'no'}**. Problems: {'; '.join(problems[:5]) or 'none'}."]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("kill9", markdown)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
