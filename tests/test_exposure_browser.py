"""With logins, in a real browser: each person logs in, sees only their own profiles in the
menu, keeps their choice across a refresh, and cannot open another person's profile by
typing its name. Needs Debian's chromium, as tests/test_browser.py does; serves 127.0.0.1 only.
"""

import pytest
from playwright.sync_api import expect

from prefstudio.store.history import HistoryStore
from prefstudio.studio import Studio
from prefstudio.ui.app import build_app
from tests.browser import SLOW, chromium, served

pytestmark = pytest.mark.browser

ANN, BEN = ("ann", "ann-password-1"), ("ben", "ben-password-2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("login-data")
    with HistoryStore(data) as store:
        store.create_profile("made at this computer")  # no login owns it
    demo = build_app(Studio(data))
    with served(demo, auth=[ANN, BEN]) as url:
        yield demo, url + "/"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def logged_in(browser, url, user):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(url, wait_until="load")
    page.get_by_label("username").fill(user[0])
    page.get_by_label("password").fill(user[1])
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    return page


def menu_options(page) -> list[str]:
    page.locator("#ps-profile input").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [o.replace("✓", "").strip() for o in options]  # the chosen one is ticked


def test_each_login_sees_and_opens_only_its_own_profiles(server, browser):
    demo, url = server
    ann = logged_in(browser, url, ANN)
    status = ann.locator("#ps-label-status")
    expect(status).to_contain_text("No profile chosen", timeout=SLOW)
    assert menu_options(ann) == []  # not the profile made at this computer
    ann.fill("#ps-new-profile textarea", "ann taste")
    ann.keyboard.press("Enter")
    expect(status).to_contain_text("ann taste · 0 judgments")
    ann.reload(wait_until="load")
    expect(ann.locator("#ps-profile input")).to_have_value("ann taste", timeout=SLOW)
    expect(status).to_contain_text("ann taste · 0 judgments")

    ben = logged_in(browser, url, BEN)
    expect(ben.locator("#ps-label-status")).to_contain_text("No profile chosen", timeout=SLOW)
    assert menu_options(ben) == []
    menu = ben.locator("#ps-profile input")
    menu.fill("ann taste")
    menu.press("Enter")
    expect(ben.get_by_text("no profile named 'ann taste'").first).to_be_visible(timeout=SLOW)
    ben.fill("#ps-new-profile textarea", "ben taste")
    ben.keyboard.press("Enter")
    expect(ben.locator("#ps-label-status")).to_contain_text("ben taste · 0 judgments")
    assert menu_options(ben) == ["ben taste"]
    assert menu_options(ann) == ["ann taste"]
