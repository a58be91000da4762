"""The profile menu keeps the person's choice when a refresh of its list answers late.

Opening the menu asks the server for the current list of profiles. On a busy machine that
answer can arrive after the person already picked another profile; it must not put the old
choice back (the judgments that follow would go to the profile no longer shown as chosen).
Needs Debian's `chromium`, as tests/test_browser.py does.
"""
import functools
import time

import pytest
from playwright.sync_api import expect

from prefstudio.studio import Studio
from prefstudio.ui.app import build_app
from tests.browser import SLOW, VIEWPORT, chromium, served

pytestmark = pytest.mark.browser
LATE = 2.0  # seconds the list refresh is held back, as a loaded server would


def test_a_late_profile_list_does_not_undo_the_choice(tmp_path):
    studio = Studio(tmp_path / "data")
    for name in ("me", "guest"):
        studio.store.create_profile(name)
    demo = build_app(studio)
    refresh = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "refresh_choices")
    slow = refresh.fn

    @functools.wraps(slow)
    def late(*args, **kwargs):
        time.sleep(LATE)
        return slow(*args, **kwargs)

    refresh.fn = late
    with served(demo) as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url + "/", wait_until="load")
        status, menu = page.locator("#ps-label-status"), page.locator("#ps-profile input")
        expect(status).to_contain_text(" · 0 judgments", timeout=SLOW)
        other = "me" if menu.input_value() == "guest" else "guest"
        menu.click()  # asks for the list; the answer comes late
        page.get_by_role("option", name=other, exact=True).click()
        expect(status).to_contain_text(f"{other} ·", timeout=SLOW)
        time.sleep(LATE + 1.5)  # the late answer has arrived
        expect(menu).to_have_value(other)
        expect(status).to_contain_text(f"{other} ·")
