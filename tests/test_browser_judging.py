"""One verdict per candidate, in a real browser (Debian's Chromium driven by Playwright).

Pressing L on a candidate already liked changes nothing; liking then disliking keeps one
dislike, and undo brings the like back; after a reload the view lands on the first
candidate not judged yet. Needs Debian's `chromium`, as tests/test_browser.py does.
"""

import pytest
from playwright.sync_api import expect

from prefstudio.studio import Studio
from prefstudio.ui.app import build_app
from tests.browser import SLOW, VIEWPORT, chromium, served

pytestmark = pytest.mark.browser



@pytest.fixture
def app(tmp_path):
    demo = build_app(Studio(tmp_path / "data"))
    with served(demo) as url:
        yield demo, url


@pytest.fixture
def page():
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


def open_batch(page, url):
    """The page with four fresh candidates on screen, keys going to the page."""
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    page.fill("#ps-label-prompt textarea", "a bouquet of pink flowers")
    page.fill("#ps-label-seeds textarea", "21, 22, 23, 24")
    page.click("#ps-generate")
    expect(page.locator("#ps-candidates button.thumbnail-item")).to_have_count(4, timeout=SLOW)
    page.locator("body").click(position={"x": 5, "y": 5})  # keys go to the page, not a text box
    return page.locator("#ps-label-status"), page.locator("#ps-view-info")


def test_pressing_like_again_on_a_liked_candidate_adds_nothing(app, page):
    demo, url = app
    status, info = open_batch(page, url)
    page.keyboard.press("l")
    expect(status).to_contain_text("1 judgment: 1 👍")
    expect(info).to_contain_text("Candidate 2 of 4")
    page.keyboard.press("ArrowLeft")
    expect(info).to_contain_text("Candidate 1 of 4")
    expect(info).to_contain_text("Judged: 👍")
    page.keyboard.press("l")  # the same verdict again
    expect(status).to_contain_text("nothing changed")
    expect(status).to_contain_text("1 judgment: 1 👍")
    assert [j.kind for j in demo.prefstudio.store.judgments("me")] == ["like"]


def test_liking_then_disliking_keeps_one_dislike_and_undo_brings_the_like_back(app, page):
    demo, url = app
    store = demo.prefstudio.store
    status, info = open_batch(page, url)
    page.keyboard.press("l")
    expect(status).to_contain_text("1 judgment: 1 👍")
    liked = store.judgments("me")
    page.keyboard.press("ArrowLeft")
    expect(info).to_contain_text("Candidate 1 of 4")
    page.keyboard.press("d")  # a change of mind replaces the like
    expect(status).to_contain_text("1 judgment: 0 👍 · 1 👎")
    assert [(j.kind, j.image_a) for j in store.judgments("me")] == [("dislike", liked[0].image_a)]
    page.keyboard.press("u")
    expect(status).to_contain_text("1 judgment: 1 👍 · 0 👎")
    assert store.judgments("me") == liked


def test_a_reload_lands_on_the_first_candidate_not_judged_yet(app, page):
    demo, url = app
    status, info = open_batch(page, url)
    page.keyboard.press("l")
    expect(status).to_contain_text("1 judgment: 1 👍")
    page.keyboard.press("d")
    expect(status).to_contain_text("2 judgments: 1 👍 · 1 👎")
    page.reload(wait_until="load")
    expect(page.locator("#ps-candidates button.thumbnail-item")).to_have_count(4, timeout=SLOW)
    expect(status).to_contain_text("2 judgments: 1 👍 · 1 👎")
    expect(info).to_contain_text("Candidate 3 of 4", timeout=SLOW)
    expect(info).to_contain_text("Not judged yet.")
    # The prompt the batch was made from comes back with it (a hostile review found the box empty).
    expect(page.locator("#ps-label-prompt textarea")).to_have_value("a bouquet of pink flowers", timeout=SLOW)


def test_keys_pressed_faster_than_the_server_answers_each_judge_their_own_candidate(app, page):
    """Found by a review: L, L, D pressed with no pause recorded two verdicts, the second L was
    lost and the D landed on the candidate meant to be liked. Every press counts, in order."""
    demo, url = app
    store = demo.prefstudio.store
    status, info = open_batch(page, url)
    for key in ("l", "l", "d", "ArrowRight"):
        page.keyboard.press(key, delay=0)
    expect(status).to_contain_text("3 judgments: 2 👍 · 1 👎", timeout=SLOW)
    expect(info).to_contain_text("Candidate 1 of 4")  # D moved to the 4th, → wrapped round to the 1st
    seeds = [store.image_record(j.image_a).seed for j in store.judgments("me")]
    assert [(j.kind, seed) for j, seed in zip(store.judgments("me"), seeds)] == [
        ("like", 21), ("like", 22), ("dislike", 23)], seeds


def test_a_pair_key_pressed_before_the_next_pair_shows_records_nothing(app, page):
    """Found by a review (with keys pressed faster than the server answers): 1 then 2 judged the
    first pair and then the next one, which the person had not seen yet."""
    demo, url = app
    store = demo.prefstudio.store
    open_batch(page, url)
    page.get_by_label("Better of two").check()
    expect(page.locator("#ps-pair-info")).to_contain_text("Pair 1 of", timeout=SLOW)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("1", delay=0)
    page.keyboard.press("2", delay=0)
    expect(page.get_by_text("the pair on screen changed before this choice reached the studio").first).to_be_visible(
        timeout=SLOW)
    expect(page.locator("#ps-pair-info")).to_contain_text("Pair 2 of")
    assert [j.kind for j in store.judgments("me")] == ["pair"]
    page.keyboard.press("2")  # now the second pair is on screen
    expect(page.locator("#ps-pair-info")).to_contain_text("Pair 3 of", timeout=SLOW)
    assert [j.kind for j in store.judgments("me")] == ["pair", "pair"]


def test_a_press_whose_request_arrives_late_still_judges_the_candidate_it_was_meant_for(app, page):
    """Found by a review: L D L D pressed with no pause stored seeds 1-8 as 👎 👍 👎 👍 …: each
    press is its own request, and one that reached the studio late judged the candidate after its
    own. Here the first press's request is held back on its way, as a slow connection would."""
    demo, url = app
    store = demo.prefstudio.store
    status, info = open_batch(page, url)
    held = []

    def hold_the_first_verdict(route):
        if not held:
            held.append(route)  # sent on only after the presses that follow it
        else:
            route.continue_()

    page.route("**/queue/join*", hold_the_first_verdict)
    for key in ("l", "d", "l"):
        page.keyboard.press(key, delay=0)
    page.wait_for_timeout(800)
    held[0].continue_()
    expect(status).to_contain_text("3 judgments: 2 👍 · 1 👎", timeout=SLOW)
    judged = sorted((store.image_record(j.image_a).seed, j.kind) for j in store.judgments("me"))
    assert judged == [(21, "like"), (22, "dislike"), (23, "like")], judged
