"""The studio in a real browser: Debian's Chromium driven by Playwright, as a person uses it.

Needs Debian's `chromium` (apt-get install -y chromium fonts-noto-color-emoji; .ci/run
installs it). Without it this test fails, saying so: it is part of the acceptance.
The screenshot it takes is the one in the README (docs/images/studio.png).
"""
from pathlib import Path

import pytest
from playwright.sync_api import expect

from prefstudio.studio import Studio
from prefstudio.ui.app import build_app
from tests.browser import SLOW, VIEWPORT, chromium, served, set_slider

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "studio.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo = build_app(Studio(tmp_path_factory.mktemp("browser-data")))
    with served(demo) as url:
        yield demo, url


@pytest.fixture(scope="module")
def page():
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


def test_label_fit_generate_in_the_browser(server, page):
    demo, url = server
    store = demo.prefstudio.store
    outside = []
    page.on("request", lambda request: None if request.url.startswith(url) else outside.append(request.url))

    page.goto(url + "/", wait_until="load")  # "networkidle" never fires on a Gradio page
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    expect(page.locator("#ps-models")).to_contain_text("embedded offline generator")
    expect(page.locator("body")).to_contain_text("L like")  # the shortcuts are documented

    page.click("#ps-generate")  # no prompt yet: refused, with the reason in view
    expect(page.get_by_text("prompt is empty: type what the image should show").first).to_be_visible()
    expect(page.locator("#ps-candidates button.thumbnail-item")).to_have_count(0)

    page.fill("#ps-label-prompt textarea", "a bouquet of pink flowers")
    page.fill("#ps-label-seeds textarea", "11, 12, 13, 14, 15, 16")
    page.click("#ps-generate")
    expect(page.locator("#ps-candidates button.thumbnail-item")).to_have_count(6, timeout=SLOW)
    status = page.locator("#ps-label-status")

    page.click("#ps-like")  # by click
    expect(status).to_contain_text("1 judgment: 1 👍")
    page.click("#ps-dislike")
    expect(status).to_contain_text("2 judgments: 1 👍 · 1 👎")
    page.locator("body").click(position={"x": 5, "y": 5})  # keys go to the page, not a text box
    for key, expected in (("l", "3 judgments: 2 👍 · 1 👎"), ("d", "4 judgments: 2 👍 · 2 👎"),
                          ("u", "3 judgments: 2 👍 · 1 👎"), ("d", "4 judgments: 2 👍 · 2 👎"),
                          ("l", "5 judgments: 3 👍 · 2 👎"), ("d", "6 judgments: 3 👍 · 3 👎")):
        page.keyboard.press(key)  # by keyboard shortcut
        expect(status).to_contain_text(expected)
    singles = store.judgments("me")
    assert [j.kind for j in singles] == ["like", "dislike"] * 3
    assert len({j.image_a for j in singles}) == 6  # each candidate once, in turn

    # A refresh loses nothing: the judgments are stored, the batch on screen comes back.
    page.reload(wait_until="load")
    expect(page.locator("#ps-candidates button.thumbnail-item")).to_have_count(6, timeout=SLOW)
    expect(status).to_contain_text("6 judgments: 3 👍 · 3 👎")
    # A second profile: created here, kept across a refresh, its own (empty) history.
    page.fill("#ps-new-profile textarea", "guest")
    page.keyboard.press("Enter")
    expect(status).to_contain_text("guest · 0 judgments")
    page.reload(wait_until="load")
    expect(page.locator("#ps-profile input")).to_have_value("guest", timeout=SLOW)
    expect(status).to_contain_text("guest · 0 judgments")
    page.locator("#ps-profile input").click()
    page.get_by_role("option", name="me", exact=True).click()
    expect(status).to_contain_text("me · 6 judgments")

    page.get_by_label("Better of two").check()
    expect(page.locator("#ps-left img")).to_be_visible()
    page.locator("body").click(position={"x": 5, "y": 5})
    pair_status = page.locator("#ps-pair-status")
    for key, expected in (("1", "1 pair ·"), ("ArrowRight", "2 pairs"), ("t", "1 tie ·")):
        page.keyboard.press(key)
        expect(pair_status).to_contain_text(expected)
    assert store.counts("me") == {"like": 3, "dislike": 3, "pair": 2, "tie": 1, "skip": 0}

    page.get_by_role("tab", name="Profile").click()
    expect(page.locator("#ps-history button.thumbnail-item")).to_have_count(9, timeout=SLOW)
    page.click("#ps-fit")
    expect(page.locator("#ps-fit-status")).to_contain_text("Leave-one-out accuracy", timeout=SLOW)

    page.get_by_role("tab", name="Generate").click()
    page.fill("#ps-gen-prompt textarea", "a bouquet of pink flowers")
    page.get_by_label("Fixed seed").check()
    page.fill("#ps-seed input", "12")
    page.click("#ps-advanced")  # iterations and weights sit under Advanced
    set_slider(page, "#ps-iterations", 4)
    page.click("#ps-personalize")
    expect(page.locator("#ps-gen-progress")).to_contain_text("Done: 4 iterations", timeout=SLOW)
    for side in ("#ps-baseline", "#ps-personalized"):
        image = page.locator(f"{side} img")
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator("body")).to_contain_text("Your taste (user model)")
    page.get_by_role("button", name="Personalized is better ▶").click()
    expect(page.get_by_text("Recorded personalized ≻ the other")).to_be_visible()
    assert store.counts("me")["pair"] == 3

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    assert outside == []  # the page fetched nothing from outside this machine
