"""How fast the studio answers: start-up of `python app.py` and one judgment click.

    python bench/app_latency.py [--starts 5] [--clicks 40]

Start-up is timed from launching `python app.py` (a fresh process, a fresh data folder)
to the first HTTP 200 of its page, and on to the first 8 candidates generated through
the app's API (that includes loading the prompt encoder, which the app warms up in the
background). A click is a 👍 or 👎 through the API as a browser sends it: HTTP request,
queue, store write (on disk when it returns), the label tab re-rendered, response.
Prints a markdown table; medians, with the spread.
"""
import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"app.py did not serve {url} within {limit} s")


def one_start(first_batch: bool) -> tuple[float, float | None]:
    """Seconds to the page being served, and (optionally) to the first 8 candidates."""
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as data:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--data", data, "--port", str(port),
                                    "--model", "embedded"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_page(url, process, STARTUP_LIMIT_S)
            served = time.perf_counter() - start
            batch = None
            if first_batch:
                client = Client(url, verbose=False)
                client.predict("me", api_name="/open_profile")  # a session acts only on profiles it opened
                client.predict("me", "sunset over the desert", 8, "", api_name="/generate_candidates")
                batch = time.perf_counter() - start
            return served, batch
        finally:
            process.terminate()  # only the process started here, by its handle
            process.wait(timeout=30)


def click_latencies(clicks: int) -> tuple[list[float], list[float]]:
    """Seconds per judgment click through the API of an app served in this process, and per
    call of an endpoint that does next to nothing (🎲 Surprise me), for scale."""
    import torch
    from gradio_client import Client

    torch.set_num_threads(1)
    from prefstudio.studio import Studio
    from prefstudio.ui.app import build_app, launch

    with tempfile.TemporaryDirectory() as data:
        demo = build_app(Studio(data))
        port = free_port()
        launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
        try:
            # Like a browser, which has the thumbnails cached by URL (content-addressed): the
            # client does not fetch the returned image files again.
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            client.predict("me", api_name="/open_profile")
            client.predict("me", "a bouquet of pink flowers", 16, "", api_name="/generate_candidates")
            judge, noop = [], []
            for i in range(clicks):
                start = time.perf_counter()
                client.predict("me", api_name="/like" if i % 2 == 0 else "/dislike")
                judge.append(time.perf_counter() - start)
                start = time.perf_counter()
                client.predict(api_name="/surprise")
                noop.append(time.perf_counter() - start)
            assert sum(demo.prefstudio.store.counts("me").values()) == clicks
            return judge, noop
        finally:
            demo.close()


def spread(values: list[float], scale: float, unit: str, digits: int) -> str:
    return f"{min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5, help="fresh starts of app.py to time (default 5)")
    parser.add_argument("--clicks", type=int, default=40, help="judgment clicks to time (default 40)")
    args = parser.parse_args()
    from prefstudio import privacy

    privacy.apply_defaults()

    starts = [one_start(first_batch=i == 0) for i in range(args.starts)]
    served = [s for s, _ in starts]
    first_batch = starts[0][1]
    clicks, noop = click_latencies(args.clicks)

    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} during the run. "
          f"torch threads: 1 (clicks), app default (starts).")
    print(f"Command: `python bench/app_latency.py --starts {args.starts} --clicks {args.clicks}`\n")
    print("| measure | median | spread | runs | target |")
    print("|---|---|---|---|---|")
    print(f"| `python app.py` to its page served | {statistics.median(served):.1f} s | "
          f"{spread(served, 1, 's', 1)} | {len(served)} | < 10 s |")
    print(f"| `python app.py` to the first 8 candidates through the API | {first_batch:.1f} s | – | 1 | |")
    print(f"| one 👍/👎 click through the API (round trip, stored on disk) | {statistics.median(clicks) * 1000:.0f} ms | "
          f"{spread(clicks, 1000, 'ms', 0)} | {len(clicks)} | |")
    print(f"| for scale: an API call that does next to nothing (🎲 Surprise me) | {statistics.median(noop) * 1000:.0f} ms | "
          f"{spread(noop, 1000, 'ms', 0)} | {len(noop)} | |")


if __name__ == "__main__":
    main()
