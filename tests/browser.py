"""What the browser tests share: Debian's Chromium driven by Playwright, and the app served on
a free loopback port. Never `playwright install`: it downloads a browser."""
import shutil
import socket
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect, sync_playwright

from prefstudio.ui.app import launch

# STACK.md: headless without a sandbox or GPU, and no background traffic of its own.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--disable-component-update", "--no-first-run"]
SLOW = 90_000  # ms: model work on a shared 2-core machine
VIEWPORT = {"width": 1280, "height": 900}


@contextmanager
def chromium():
    """A headless Debian Chromium; the test fails (it is part of the acceptance) without it."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: run `apt-get install -y chromium "
                    "fonts-noto-color-emoji` (.ci/run does); never `playwright install`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served(demo, **launch_options):
    """The app on a free 127.0.0.1 port; yields its URL and closes it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, **launch_options)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def set_slider(page, selector: str, value) -> None:
    """Type a value into a slider's number box, and wait until the slider shows it: a slider
    inside a just-opened accordion is still mounting, and a value typed into it then was reset
    to its default under load (a run then used 30 iterations where 24 were typed)."""
    slider = page.locator(f"{selector} input[type=range]")
    expect(slider).to_be_visible(timeout=SLOW)
    field = page.locator(f"{selector} input[type=number]")
    for _ in range(5):  # typed again if the mounting slider reset it (seen in CI under load)
        field.fill(str(value))
        field.press("Enter")
        try:
            expect(slider).to_have_value(str(value), timeout=5_000)
            return
        except AssertionError:
            continue
    expect(slider).to_have_value(str(value), timeout=SLOW)
