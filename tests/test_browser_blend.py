"""Blending a friend's taste, driven in Chromium as a person would: import their profile file,
add it to the blend, move its slider, generate, save the blend as a preset and see the
trade-off grid."""
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from playwright.sync_api import expect

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.eval.simulated_users import SimulatedUser
from prefstudio.provenance import read_provenance
from prefstudio.store.profile_file import import_profile
from prefstudio.studio import Studio
from prefstudio.ui.app import build_app
from tests.browser import SLOW, VIEWPORT, chromium, served, set_slider

pytestmark = pytest.mark.browser
ITERATIONS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """alice (bright, warm) is fitted here; bob (dark, cool) is a friend's exported profile file."""
    studio = Studio(tmp_path_factory.mktemp("blend-data"))
    images = studio.generate_candidates("a quiet landscape", seeds=list(range(12)))
    pixels = pil_to_tensor([studio.store.load_image(i.sha256) for i in images])
    for name, taste in (("alice", {"brightness": 1.0, "warmth": 1.0}), ("bob", {"brightness": -1.0, "warmth": -1.0})):
        utility = SimulatedUser(name, taste).utility(pixels)
        studio.store.create_profile(name)
        for image, value in zip(images, utility):
            studio.judge(name, "like" if value > utility.median() else "dislike", image.sha256)
        studio.fit(name)
    friend_file = studio.export_profile("bob", tmp_path_factory.mktemp("friend") / "bob.prefstudio")
    studio.store.delete_profile("bob")  # bob lives elsewhere: his file is all this studio gets
    with served(build_app(studio)) as url:
        yield studio, url, friend_file


@pytest.fixture(scope="module")
def page():
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


def choose(page, name):
    page.locator("#ps-profile input").click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(page.locator("#ps-label-status")).to_contain_text(f"{name} ·", timeout=SLOW)


def test_a_friends_imported_taste_joins_the_blend_and_the_grid(server, page):
    studio, url, friend_file = server
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#ps-generate", timeout=SLOW)

    # Import the friend's profile file.
    page.get_by_role("tab", name="Profile").click()
    page.locator("#ps-import-file input[type=file]").set_input_files(str(friend_file))
    page.get_by_role("button", name="Import profile").click()
    expect(page.get_by_text(re.compile(r"Imported profile \*?\*?bob"))).to_be_visible(timeout=SLOW)

    # Back to alice; add bob's taste to her blend and move its slider.
    choose(page, "alice")
    page.get_by_role("tab", name="Generate").click()
    page.click("#ps-advanced")
    set_slider(page, "#ps-iterations", ITERATIONS)
    page.locator("#ps-blend-choice input").click()
    page.get_by_role("option", name="bob", exact=True).click()
    page.click("#ps-blend-add")
    slot = page.locator("#ps-blend-0")
    expect(slot).to_be_visible(timeout=SLOW)
    expect(slot).to_contain_text("Taste of bob")
    expect(page.locator("#ps-blend-status")).to_contain_text("Added the taste of bob", timeout=SLOW)
    # The new slot starts at the weight the status names (a hostile review found its number box
    # empty, and Generate then refused the slider's value without a word).
    expect(page.locator("#ps-blend-0 input[type=number]")).to_have_value("0.5", timeout=SLOW)
    set_slider(page, "#ps-blend-0", 1.2)

    # Generate: bob's taste is one of the weighted rewards of the result.
    page.fill("#ps-gen-prompt textarea", "a lighthouse at dusk")
    page.click("#ps-personalize")
    expect(page.locator("#ps-gen-progress")).to_contain_text(f"Done: {ITERATIONS} iterations", timeout=SLOW)
    made = studio.store.personalized_images("alice", 1)[0]
    assert made.params["weights"]["profile:bob"] == 1.2
    expect(page.locator("#ps-personalized-scores")).to_contain_text("Taste of bob")

    # Save the blend as a preset of alice.
    page.fill("#ps-preset-name textarea", "with bob")
    page.locator("#ps-preset-name textarea").press("Enter")
    expect(page.locator("#ps-blend-status")).to_contain_text("Saved preset with bob", timeout=SLOW)
    assert studio.store.get_preset("alice", "with bob").weights["profile:bob"] == 1.2
    # A refused load leaves no line claiming the last success (found by a review: "Loaded preset …"
    # stayed under a toast saying the preset could not be loaded).
    page.locator("#ps-preset-choice input").fill("no such preset")
    page.locator("#ps-preset-choice input").press("Enter")
    page.click("#ps-preset-load")
    expect(page.get_by_text("has no preset named 'no such preset'")).to_be_visible(timeout=SLOW)
    expect(page.locator("#ps-blend-status")).not_to_contain_text("Saved preset", timeout=SLOW)

    # The trade-off grid between alice's own taste and bob's, from one seed.
    page.click("#ps-tradeoff")
    page.locator("#ps-grid-axes").get_by_label("Your taste (user model)").check()
    page.locator("#ps-grid-axes").get_by_label("Taste of bob").check()
    set_slider(page, "#ps-grid-steps", 2)
    page.click("#ps-grid-run")
    expect(page.locator("#ps-grid-status")).to_contain_text("Trade-off grid of 3 images", timeout=SLOW)
    grid = page.locator("#ps-grid img")
    expect(grid).to_be_visible(timeout=SLOW)
    # The grid's own title line is drawn in its PNG: no component label may sit over it.
    expect(page.locator("#ps-grid").get_by_text("Trade-off grid (same prompt")).to_have_count(0)
    source = unquote(grid.get_attribute("src"))
    path = Path(re.search(r"file=(.+\.png)", source).group(1))
    info = read_provenance(path)
    assert info["role"] == "trade-off-grid" and info["params"]["axes"] == ["user", "profile:bob"]
    assert [c["weights"]["profile:bob"] for c in info["params"]["cells"]] == [0.0, 0.5, 1.0]
    page.screenshot(path=Path(__file__).resolve().parents[1] / "docs" / "images" / "blend_grid.png", full_page=True)
    # alice's grid and its status line are not bob's
    choose(page, "bob")
    expect(page.locator("#ps-grid img")).to_have_count(0, timeout=SLOW)
    expect(page.locator("#ps-grid-status")).not_to_contain_text("Trade-off grid", timeout=SLOW)
    # bob has no side by side yet: the empty panel has no heading of alice's result (seen in a walkthrough:
    # "optimised for a blend of your taste and bob's" over bob's empty panel)
    expect(page.locator("#ps-gen-progress")).to_contain_text("bob", timeout=SLOW)
    expect(page.locator("#ps-personalized")).not_to_contain_text("optimised for", timeout=SLOW)


def test_a_reload_during_a_run_brings_its_blend_back(server, page, monkeypatch):
    """Found by a hostile review: after a reload in the middle of a run the sliders showed the run's
    weights but the blend slots were empty, so the screen no longer said that bob's taste was in it."""
    studio, url, _ = server
    personalize = studio.personalize

    def slowly(*args, **kwargs):  # the run must still be going when the page comes back
        for item in personalize(*args, **kwargs):
            time.sleep(0.1)
            yield item

    monkeypatch.setattr(studio, "personalize", slowly)
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    choose(page, "alice")
    page.get_by_role("tab", name="Generate").click()
    page.click("#ps-advanced")
    set_slider(page, "#ps-iterations", 100)
    page.locator("#ps-blend-choice input").click()
    page.get_by_role("option", name="bob", exact=True).click()
    page.click("#ps-blend-add")
    expect(page.locator("#ps-blend-0")).to_contain_text("Taste of bob", timeout=SLOW)
    set_slider(page, "#ps-blend-0", 1.3)
    page.fill("#ps-gen-prompt textarea", "a harbour in fog")
    page.click("#ps-personalize")
    expect(page.locator("#ps-gen-progress")).to_contain_text("Optimising", timeout=SLOW)
    page.reload(wait_until="load")
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    page.get_by_role("tab", name="Generate").click()
    expect(page.locator("#ps-gen-progress")).to_contain_text("Optimising", timeout=SLOW)  # following the run
    expect(page.locator("#ps-gen-prompt textarea")).to_have_value("a harbour in fog", timeout=SLOW)
    page.click("#ps-advanced")
    slot = page.locator("#ps-blend-0")
    expect(slot).to_be_visible(timeout=SLOW)
    expect(slot).to_contain_text("Taste of bob")
    expect(page.locator("#ps-blend-0 input[type=number]")).to_have_value("1.3", timeout=SLOW)
    page.click("#ps-tradeoff")
    expect(page.locator("#ps-grid-axes").get_by_label("Taste of bob")).to_be_visible(timeout=SLOW)
    page.click("#ps-stop")
    # The run's own last view ("Stopped after …"), or, when the stream ended before the page got it
    # (seen once in CI under load), the stored side by side ("…, stopped after 7 of 100 iterations").
    expect(page.locator("#ps-gen-progress")).to_contain_text(re.compile("[Ss]topped after"), timeout=SLOW)


def test_each_profile_shown_gets_its_own_blend_back(server, page):
    """Seen in a walkthrough: with bob in alice's blend, switching to bob left "Taste of bob" on
    bob's own sliders, and Generate then refused bob's own taste as a blend. Each profile has the
    blend it had on the page; alice's comes back with its weight."""
    studio, url, friend_file = server
    if "bob" not in [p.name for p in studio.store.list_profiles()]:  # (run on its own)
        import_profile(studio.store, friend_file)
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#ps-generate", timeout=SLOW)
    choose(page, "alice")
    page.get_by_role("tab", name="Generate").click()
    page.click("#ps-advanced")
    # A page just opened shows alice's last side by side with its settings, blend included (the
    # tests before this one ran with bob in it): start from an empty blend.
    page.click("#ps-blend-clear")
    expect(page.locator("#ps-blend-0")).to_be_hidden(timeout=SLOW)
    page.locator("#ps-blend-choice input").click()
    page.get_by_role("option", name="bob", exact=True).click()
    page.click("#ps-blend-add")
    expect(page.locator("#ps-blend-0")).to_contain_text("Taste of bob", timeout=SLOW)
    set_slider(page, "#ps-blend-0", 0.8)
    expect(page.locator("#ps-blend-status")).to_contain_text("Added the taste of bob", timeout=SLOW)
    choose(page, "bob")
    expect(page.locator("#ps-blend-0")).to_be_hidden(timeout=SLOW)
    # alice's status line ("Added the taste of bob to the blend…") is not bob's
    expect(page.locator("#ps-blend-status")).not_to_contain_text("Added the taste of bob", timeout=SLOW)
    choose(page, "alice")
    expect(page.locator("#ps-blend-0")).to_contain_text("Taste of bob", timeout=SLOW)
    expect(page.locator("#ps-blend-0 input[type=number]")).to_have_value("0.8", timeout=SLOW)
