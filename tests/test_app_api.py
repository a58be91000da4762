"""The studio driven through its HTTP API with gradio_client, as a browser would drive it.

One app serves the whole module (data in a temporary folder); each gradio_client Client
is its own browser session.
"""
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from prefstudio.provenance import read_provenance
from prefstudio.studio import Studio
from prefstudio.ui.app import build_app, launch
from prefstudio.ui.common import markdown_text
from prefstudio.ui.evaluate_tab import win_rate

ITERATIONS = 3  # guidance steps per side by side: enough to exercise the loop, fast on a CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    studio = Studio(tmp_path_factory.mktemp("studio-data"))
    demo = build_app(studio)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def client(url: str) -> Client:
    # The server runs in this process, so the files it returns are read where they lie
    # (the path in each file reference) instead of being downloaded again on every call.
    return Client(url, verbose=False, download_files=False)


def local(file) -> str:
    """The server-side path of a file the app returned (as a value or inside an update)."""
    return file["value"]["path"] if file.get("__type__") == "update" else file["path"]


def store_of(app):
    return app[0].prefstudio.store


def image_count(store) -> int:
    return len([p for p in store.images_dir.rglob("*.png")])


def snapshot(store) -> dict:
    """Everything a bad input must leave as it was."""
    profiles = [p.name for p in store.list_profiles()]
    return {"profiles": profiles, "images": image_count(store),
            "judgments": {p: [(j.id, j.kind) for j in store.judgments(p)] for p in profiles}}


def candidate_ids(demo, prompt: str, seeds: list[int]) -> list[str]:
    """The ids of the candidates a session was shown: the generator is deterministic and the
    store content-addressed, so generating the same prompt and seeds again gives the same ids."""
    ctx = demo.prefstudio
    return [r.sha256 for r in ctx.run(ctx.studio.generate_candidates, prompt, seeds=seeds)]


def value(output):
    """A component's value, whether it came back bare or inside a property update."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def generate(c: Client, profile: str, prompt: str, seeds: list[int]):
    gallery, *rest = c.predict(profile, prompt, len(seeds), ", ".join(map(str, seeds)),
                               api_name="/generate_candidates")
    return value(gallery), *rest


def test_whole_loop_generate_judge_fit_personalize_export_import(app):
    demo, url = app
    studio: Studio = demo.prefstudio.studio
    store = studio.store
    c = client(url)
    c.predict("alice", api_name="/create_profile")

    gallery, *_, status, _ = generate(c, "alice", "sunset over the desert", list(range(1, 17)))
    assert [item["caption"] for item in gallery] == [f"seed {s}" for s in range(1, 17)]
    shown = candidate_ids(demo, "sunset over the desert", list(range(1, 17)))
    # Galleries carry thumbnails, never the full image.
    assert max(max(Image.open(local(item["image"])).size) for item in gallery) <= 192

    for i in range(16):
        status = c.predict("alice", api_name="/like" if i % 2 == 0 else "/dislike")[6]  # the Label tab's status line
    assert "16 judgments: 8 👍 · 8 👎" in status
    judged = store.judgments("alice")
    assert [j.kind for j in judged] == ["like", "dislike"] * 8
    assert sorted(j.image_a for j in judged) == sorted(shown)  # each candidate judged once, in turn
    gallery, *_ = c.predict("alice", api_name="/next")
    assert [item["caption"] for item in value(gallery)[:2]] == ["👍 seed 1", "👎 seed 2"]

    # Better of two: left, right, tie, skip; each names two different images on screen.
    for api in ("/pick_left", "/pick_right", "/tie", "/skip_pair"):
        c.predict("alice", api_name=api)
    compared = store.judgments("alice", ("pair", "tie", "skip"))
    assert [j.kind for j in compared] == ["pair", "pair", "tie", "skip"]
    assert all(j.image_a in shown and j.image_b in shown and j.image_a != j.image_b for j in compared)

    fitted = c.predict("alice", api_name="/fit")
    assert "Fitted" in fitted and "Leave-one-out accuracy" in fitted
    from prefstudio.ui.common import markdown_text
    reason = markdown_text(app[0].prefstudio.studio.fit_status("alice")["reason"])
    assert fitted.count(reason) == 1 and fitted.count("Leave-one-out accuracy") == 1  # said once

    pairs_before = len(store.judgments("alice", ("pair",)))
    progress, seed, baseline, personalized, base_scores, pers_scores, _, past = c.predict(
        "alice", "a dense green forest", "Fixed seed", 7, 0.5, ITERATIONS, 0.75, 0.5, api_name="/personalize")
    assert seed == 7 and progress.startswith(f"Done: {ITERATIONS} iterations")
    assert Path(local(baseline)).is_file() and Path(local(personalized)).is_file()
    assert "Your taste" in base_scores and "Your taste" in pers_scores
    assert len(past["value"]) == 1 and "seed 7" in past["value"][0]["caption"]  # listed with past side by sides
    # What the download buttons give carries how it was made, and a dropped copy reuses it.
    made = read_provenance(local(personalized))
    assert made["prompt"] == "a dense green forest" and made["seed"] == 7 and made["role"] == "personalized"
    assert made["weights"] == {"user": 0.75, "prompt_consistency": 0.5} and made["fit"]["model"] == "auto"
    prompt, mode, seed, strength, iterations, *weights, note = c.predict(
        handle_file(local(personalized)), api_name="/reuse_png")
    assert (prompt, mode, seed, strength, iterations, weights) == (
        "a dense green forest", "Fixed seed", 7, 0.5, ITERATIONS, [0.75, 0.5])
    assert note.startswith("Settings of “a dense green forest” loaded, seed 7")
    c.predict("alice", api_name="/prefer_personalized")  # the loop closes: the result joins the history
    again = c.predict("alice", api_name="/prefer_personalized")  # a second click is not a second verdict
    assert again.startswith("Already recorded") and len(store.judgments("alice", ("pair",))) == pairs_before + 1
    last = store.judgments("alice")[-1]
    assert last.kind == "pair"
    assert store.image_record(last.image_a).params["personalized_for"] == "alice"
    assert store.image_record(last.image_b).seed == 7
    assert "personalized_for" not in store.image_record(last.image_b).params

    exported = c.predict("alice", api_name="/export_profile")
    message, profile = c.predict(handle_file(local(exported)), "alice copy", api_name="/import_profile")
    assert "Imported profile **alice copy** with 21 judgments and its fitted model" in message
    assert value(profile) == "alice copy"
    assert [(j.kind, j.image_a, j.image_b) for j in store.judgments("alice copy")] == \
        [(j.kind, j.image_a, j.image_b) for j in store.judgments("alice")]

    # The imported profile scores the same images identically, through the app and the library.
    original = c.predict("alice", api_name="/taste_summary")
    copied = c.predict("alice copy", api_name="/taste_summary")
    assert original[0] == copied[0] and "Scores highest" in original[0]
    for ours, theirs in zip(original[1:], copied[1:]):
        assert len(ours) == 4 and [i["caption"] for i in ours] == [i["caption"] for i in theirs]
    assert studio.score_images("alice", shown) == studio.score_images("alice copy", shown)

    # The method is a named parameter (after the weights and the blend's): Instant is one pass
    # of the preference adapter.
    progress, seed, _, instant, *_ = c.predict(
        "alice", "a dense green forest", "Fixed seed", 7, 0.5, ITERATIONS, 0.75, 0.5, method="Instant",
        api_name="/personalize")
    assert seed == 7 and progress.startswith("Done in one pass of the preference adapter")
    assert read_provenance(local(instant))["params"]["method"] == "instant"


@pytest.fixture(scope="module")
def fitted(app):
    """A profile with a fitted model, made through the library (the UI's way is tested above)."""
    return fitted_through_the_library(app, "fitted", "a cold blue ocean at night", range(100, 108))


def fitted_through_the_library(app, name: str, prompt: str, seeds) -> str:
    """A new profile that liked every other candidate of `prompt`, fitted."""
    ctx = app[0].prefstudio
    ctx.store.create_profile(name)
    records = ctx.run(ctx.studio.generate_candidates, prompt, seeds=list(seeds))
    for i, record in enumerate(records):
        ctx.studio.judge(name, "like" if i % 2 else "dislike", record.sha256)
    ctx.run(ctx.studio.fit, name)
    return name


def test_a_leave_one_out_accuracy_at_or_below_chance_is_flagged():
    from prefstudio.ui.profile_tab import leave_one_out_line

    assert "chance" not in leave_one_out_line(0.75, 8).split("(")[0]
    for accuracy in (0.0, 0.5):
        line = leave_one_out_line(accuracy, 8)
        assert line.startswith(f"Leave-one-out accuracy **{accuracy:.0%}**") and "no better than chance" in line
    assert leave_one_out_line(None, 0) == "Too few pairs for a leave-one-out accuracy yet."
    # Found by a hostile review: auto's figure over the pairs both models held out read as if it
    # were over the whole history, beside each model's own figure.
    assert "of the combination **75%** over the 4 pairs every model held out" in leave_one_out_line(0.75, 4, True)
    # Found by a review: 1 of 3 held-out pairs was called "no better than chance" (beside 87 % over
    # 23 pairs for the user embedding alone). 3 pairs cannot tell: it says so, and no verdict.
    few = leave_one_out_line(1 / 3, 3, True)
    assert "no better than chance" not in few and "3 pairs are too few" in few
    assert "3 pairs are too few" in leave_one_out_line(1.0, 3)
    assert "too few" not in leave_one_out_line(0.75, 8)


def test_stop_really_stops_and_keeps_the_best_so_far(app, fitted):
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")  # made through the library: this session opens it
    job = c.submit(fitted, "a cold blue ocean at night", "Fixed seed", 3, 1.0, 100, 0.75, 0.5,
                   api_name="/personalize")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 3 and not job.done() and time.monotonic() < deadline:  # a few iterations in
        time.sleep(0.05)
    assert c.predict(fitted, api_name="/stop").startswith("Stop asked")
    progress, seed, baseline, personalized, *_ = job.result(timeout=120)
    ran = int(re.search(r"Stopped after (\d+) of 100 iterations", progress).group(1))
    best = re.search(r"the best was iteration (\d+)", progress)
    assert 1 <= ran < 100 and (best is None or int(best.group(1)) <= ran)
    assert seed == 3 and Path(local(baseline)).is_file() and Path(local(personalized)).is_file()
    assert c.predict(fitted, api_name="/stop") == "Nothing is running."
    # Read back later (a reload, the past list), it still says it was stopped, and where.
    from prefstudio.ui.generate_tab import record_how

    stored = store_of(app).personalized_images(fitted, 1)[0]
    baseline_seed = store_of(app).image_record(stored.params["baseline"]).seed
    assert f"stopped after {ran} of 100 iterations" in record_how(stored.params, stored.seed, baseline_seed)


def test_an_export_is_named_after_the_profile_in_its_own_letters(app):
    """Found by a review: "José 日本語" downloaded as "Jos.prefstudio", and "ΑΒΓ" as "profile.prefstudio"."""
    store = store_of(app)
    c = client(app[1])
    for name, file_name in (("José 日本語", "José-日本語.prefstudio"), ("ΑΒΓ", "ΑΒΓ.prefstudio"),
                            ("नमस्ते", "नमस्ते.prefstudio"), ("ann_1", "ann_1.prefstudio")):
        store.create_profile(name)
        c.predict(name, api_name="/open_profile")
        assert Path(c.predict(name, api_name="/export_profile")["path"]).name == file_name


def test_a_seed_with_a_fraction_is_refused_not_rounded(app, fitted):
    """Found by a review: "1.5" typed as the Generate tab's fixed seed ran seed 2, with no word."""
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")
    before = store_of(app).personalized_images(fitted, 100)
    with pytest.raises(AppError, match=r"seed must be a whole number, got 1\.5"):
        c.predict(fitted, "a cold blue ocean at night", "Fixed seed", 1.5, 0.5, 2, 0.75, 0.5, api_name="/personalize")
    with pytest.raises(AppError, match=r"seed must be a whole number, got 2\.5"):
        c.predict(fitted, "a dense green forest", 4, 2, 2.5, api_name="/evaluate")
    assert store_of(app).personalized_images(fitted, 100) == before


def test_evaluate_reports_win_rate_and_score_distributions(app, fitted):
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")
    result, plot, table = c.predict(fitted, "a dense green forest\nportrait of a cat", 4, 2, 5, api_name="/evaluate")
    rows = table["data"]
    assert [r[:2] for r in rows] == [["a dense green forest", 5], ["portrait of a cat", 6]]
    wins = sum(r[5] == "personalized" for r in rows)
    assert re.search(rf"Win rate \d+%\*\* \(95% interval \d+%–\d+%\): personalized beat the baseline on "
                     rf"{wins} of 2 prompts", result)
    assert all(abs(r[3] - r[2] - r[4]) < 2e-3 for r in rows)
    assert plot["type"] == "matplotlib"


def test_two_sessions_on_two_profiles_judge_concurrently(app):
    demo, url = app
    store = store_of(app)
    bob, carol = client(url), client(url)
    bob.predict("bob", api_name="/create_profile")
    carol.predict("carol", api_name="/create_profile")
    generate(bob, "bob", "portrait of a cat", [11, 12, 13, 14, 15, 16])
    generate(carol, "carol", "neon city at night", [21, 22, 23, 24, 25, 26])
    expected = {"bob": set(candidate_ids(demo, "portrait of a cat", [11, 12, 13, 14, 15, 16])),
                "carol": set(candidate_ids(demo, "neon city at night", [21, 22, 23, 24, 25, 26]))}
    assert not expected["bob"] & expected["carol"]

    errors = []

    def judge(c: Client, profile: str):
        try:
            for i in range(6):
                c.predict(profile, api_name="/like" if i % 3 else "/dislike")
            c.predict(profile, api_name="/undo")  # undoes this session's own last judgment
        except Exception as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=judge, args=(c, p)) for c, p in ((bob, "bob"), (carol, "carol"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for profile, candidates in expected.items():
        judged = store.judgments(profile)
        assert len(judged) == 5
        assert {j.image_a for j in judged} <= candidates
        assert [j.kind for j in judged] == ["dislike", "like", "like", "dislike", "like"]
    # Each session's history shows only its own profile, and removes only from it.
    everything = ["like", "dislike", "pair", "tie", "skip"]
    gallery, info, _ = bob.predict("bob", everything, api_name="/history")
    assert len(value(gallery)) == 5 and info.startswith("**bob** · 5 judgments")
    carols = store.judgments("carol")[0].id
    with pytest.raises(AppError, match=f"profile 'bob' has no judgment {carols}"):
        bob.predict("bob", everything, carols, api_name="/remove_judgment")
    assert len(store.judgments("carol")) == 5
    bobs = store.judgments("bob")[0].id
    gallery, info, _ = bob.predict("bob", everything, bobs, api_name="/remove_judgment")
    assert info.startswith(f"Removed judgment #{bobs}") and len(value(gallery)) == 4
    assert bobs not in [j.id for j in store.judgments("bob")]


def _png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_inputs_get_specific_messages_and_change_nothing(app, tmp_path, capfd):
    demo, url = app
    store = store_of(app)
    c = client(url)
    c.predict("dora", api_name="/create_profile")
    before = snapshot(store)

    def refused(expected: str, *args, api_name: str):
        with pytest.raises(AppError, match=expected):
            c.predict(*args, api_name=api_name)
        assert snapshot(store) == before

    refused("prompt is empty", "dora", "   ", 4, "", api_name="/generate_candidates")
    refused("seeds are whole numbers", "dora", "a red boat", 4, "7, x", api_name="/generate_candidates")
    refused("nothing to judge yet", "dora", api_name="/like")
    refused("no fitted taste yet", "dora", "a red boat", "Fixed seed", 1, 0.5, ITERATIONS, 0.75, 0.5,
            api_name="/personalize")
    refused("no profile named 'nobody'", "nobody", api_name="/fit")
    refused("already exists", "Dora", api_name="/create_profile")
    refused("contains", "a/b", api_name="/create_profile")

    text = tmp_path / "notes.png"
    text.write_text("these are my notes, not a picture")
    refused("notes.png: not an image", "dora", [handle_file(text)], "a red square", api_name="/add_images")
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png()[:60])
    refused("broken.png: truncated or corrupt PNG", "dora", [handle_file(broken)], "a red square",
            api_name="/add_images")
    good = tmp_path / "good.png"
    good.write_bytes(_png())
    # One bad file refuses the whole batch: the good one is not added either.
    refused("broken.png", "dora", [handle_file(good), handle_file(broken)], "a red square", api_name="/add_images")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png((7000, 7000)))  # a few KB on disk, 49 MP decoded
    refused("huge.png: image is 7000×7000 = 49 MP; the limit is 40 MP", "dora", [handle_file(huge)], "red",
            api_name="/add_images")
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(_png() + bytes(65 * 2**20))
    refused("heavy.png: image file is 65.0 MB; the limit is 64 MB", "dora", [handle_file(heavy)], "red",
            api_name="/add_images")
    refused("prompt is empty", "dora", [handle_file(good)], "", api_name="/add_images")

    newer = tmp_path / "newer.prefstudio"
    safetensors.torch.save_file({"x": torch.zeros(1)}, newer,
                                metadata={"format": "prefstudio-profile", "version": "3"})
    refused("profile file version 3 is newer than this PrefStudio understands", handle_file(newer), "",
            api_name="/import_profile")
    garbage = tmp_path / "garbage.prefstudio"
    garbage.write_bytes(b"PK\x03\x04 not what it says it is")
    refused("not a PrefStudio profile file", handle_file(garbage), "", api_name="/import_profile")
    # A refused input is the person's mistake, not a bug: the server log gets no traceback for it.
    # (Gradio's own file-type check below still prints one; that is gradio's.)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    refused("Invalid file type", handle_file(text), "", api_name="/import_profile")

    # And the good image goes in once everything is right.
    gallery, *_ = c.predict("dora", [handle_file(good)], "a red square", api_name="/add_images")
    gallery = value(gallery)
    assert len(gallery) == 1 and gallery[0]["caption"] == "uploaded"


def test_win_rate_interval_stays_honest_at_the_edges():
    rows = [("p", 0, 0.0, 1.0)] * 4  # personalized higher on 4 of 4
    rate, low, high = win_rate(rows)
    assert rate == 1.0 and high == 1.0 and low == pytest.approx(0.510, abs=1e-3)
    rate, low, high = win_rate([("p", 0, 1.0, 0.0), ("p", 1, 0.5, 0.5)])  # a loss and a tie
    assert rate == 0.25 and 0.0 < low < 0.25 < high < 1.0


def test_removing_a_judgment_that_replaced_another_says_the_earlier_verdict_is_back(app):
    """Judging an image again replaces its verdict; removing the new one brings the old one
    back. The Profile tab must say so, or the person believes the image has no verdict now."""
    demo, url = app
    store = store_of(app)
    c = client(url)
    c.predict("remy", api_name="/create_profile")
    generate(c, "remy", "a red kite over a beach", [1, 2])
    c.predict("remy", api_name="/like")  # candidate 1
    c.predict("remy", api_name="/previous")
    c.predict("remy", api_name="/dislike")  # candidate 1 again: 👎 replaces 👍
    replacing = store.judgments("remy")[-1]
    assert replacing.kind == "dislike" and len(store.judgments("remy")) == 1
    everything = ["like", "dislike", "pair", "tie", "skip"]
    # Found by a review: the number box rounded 1.5 to 2 and removed judgment 2.
    with pytest.raises(AppError, match=r"a judgment number must be a whole number, got %s\.5" % (replacing.id - 1)):
        c.predict("remy", everything, replacing.id - 0.5, api_name="/remove_judgment")
    assert store.judgments("remy") == [replacing]
    _, info, _ = c.predict("remy", everything, replacing.id, api_name="/remove_judgment")
    assert [j.kind for j in store.judgments("remy")] == ["like"]
    assert info.startswith(f"Removed judgment #{replacing.id} (👎 on")
    assert "The 👍 it had replaced is this image's verdict again." in info
    # A judgment that replaced nothing leaves the image without a verdict, and says no more.
    back = store.judgments("remy")[0]
    _, info, _ = c.predict("remy", everything, back.id, api_name="/remove_judgment")
    assert store.judgments("remy") == [] and "replaced" not in info


def _png_with_record(path: Path, record_text: str) -> Path:
    """A PNG whose provenance chunk holds `record_text` as written (any JSON a file may carry)."""
    from PIL import PngImagePlugin

    from prefstudio.provenance import KEY

    info = PngImagePlugin.PngInfo()
    info.add_itxt(KEY, record_text)
    Image.new("RGB", (8, 8), (200, 40, 40)).save(path, format="PNG", pnginfo=info)
    return path


@pytest.mark.parametrize("params, kept", [
    ('{"strength": "strong", "iterations": 12}', "iterations"),
    ('{"strength": 7, "iterations": 12}', "iterations"),
    ('{"strength": 0.25, "iterations": -3}', "strength"),
    ('{"strength": 0.25, "iterations": 2.5}', "strength"),
    ('{"strength": 0.25, "iterations": 1000000000}', "strength"),
    ('{"strength": 1e999, "iterations": 12}', None),
])
def test_reusing_a_png_loads_only_settings_the_sliders_can_hold(app, tmp_path, params, kept):
    c = client(app[1])
    record = '{"version": 1, "prompt": "a red kite", "generator": "embedded", "seed": 5, "params": %s}' % params
    dropped = _png_with_record(tmp_path / "made elsewhere.png", record)
    if kept is None:  # a number JSON cannot hold back: the record is refused in one line
        with pytest.raises(AppError, match="provenance chunk is not valid JSON"):
            c.predict(handle_file(dropped), api_name="/reuse_png")
        return
    prompt, mode, seed, strength, iterations, *_, note = c.predict(handle_file(dropped), api_name="/reuse_png")
    assert (prompt, seed) == ("a red kite", 5)
    loaded = {"strength": strength, "iterations": iterations}
    assert loaded[kept] == json.loads(params)[kept]
    other = "iterations" if kept == "strength" else "strength"
    assert not isinstance(loaded[other], (int, float)) or isinstance(loaded[other], bool)  # left as it was
    assert f"its {other} " in note and "not loaded" in note


@pytest.mark.parametrize("params, message", [
    ('{"method": ["x"]}', "provenance: params.method must be printable text"),
    ('{"weights": ["user", 1]}', "provenance: params.weights must be an object"),
    ('{"weights": {"user": "lots"}}', "provenance: params.weights[user] must be a finite number"),
])
def test_a_png_whose_params_are_of_the_wrong_kind_is_refused_in_one_line(app, tmp_path, params, message):
    """Found by a review: hand-edited params reached the page as Python's own words
    ("unhashable type: 'list'", "'list' object has no attribute 'items'")."""
    record = '{"version": 1, "prompt": "a red kite", "generator": "embedded", "seed": 5, "params": %s}' % params
    dropped = _png_with_record(tmp_path / "edited.png", record)
    with pytest.raises(AppError, match=re.escape(message)):
        client(app[1]).predict(handle_file(dropped), api_name="/reuse_png")


def test_a_dropped_pngs_prompt_and_names_are_shown_as_text_never_as_markup(app, tmp_path):
    """Found by a review: a dropped PNG's prompt went into the status line as Markdown, so an
    <img> in it made the page fetch an address and a [link] became clickable."""
    hostile = "**bold** <img src=x> [link](http://evil.example)"
    record = json.dumps({"version": 1, "prompt": hostile, "generator": "embedded", "seed": 5,
                         "params": {"strength": "[s](http://evil.example)", "method": "[m](http://evil.example)"},
                         "weights": {"user": 1.0, "profile:[bob](http://evil.example)": 0.5}})
    dropped = _png_with_record(tmp_path / "hostile.png", record)
    prompt, *_, note = client(app[1]).predict(handle_file(dropped), api_name="/reuse_png")
    assert prompt == hostile  # the prompt box gets it as written: it is plain text there
    assert "**bold**" not in note and "<img" not in note and "](http" not in note
    assert markdown_text(hostile) in note and markdown_text("profile:[bob](http://evil.example)") in note


def test_reusing_a_png_leaves_out_weights_the_sliders_cannot_hold_and_says_so(app, tmp_path):
    """Found by a hostile review: weights of 1000, -50 and 1e308 were put on 0-2 sliders without a
    word, and Generate then failed; a Best of N image loaded as if Guided had made it."""
    c = client(app[1])
    record = ('{"version": 1, "prompt": "a red kite", "generator": "embedded", "seed": 5, '
              '"params": {"method": "best_of_n", "picked_seed": 5}, '
              '"weights": {"user": 1000, "prompt_consistency": 0.5}}')
    dropped = _png_with_record(tmp_path / "odd weights.png", record)
    prompt, mode, seed, strength, iterations, *weights, note = c.predict(handle_file(dropped), api_name="/reuse_png")
    assert weights[1] == 0.5 and not isinstance(weights[0], (int, float))  # user left as it was
    assert "its user weight 1000 is not one this studio's slider holds, not loaded" in note
    assert "it was made by Best of N: choose that under Method" in note


def test_the_gain_said_names_what_it_sums_and_what_the_guards_did():
    """Found by a hostile review: "raised your weighted rewards by +0.51" sat above a chart whose
    objective rose 0.38, because the gain leaves guards out. The sentence says what it sums."""
    from prefstudio.ui.generate_tab import gain_text as markdown_gain_text

    def gain_text(*args, **kwargs):  # as the page shows it: Markdown's escapes rendered
        return re.sub(r"\\(.)", r"\1", markdown_gain_text(*args, **kwargs))

    text = gain_text({"user": 0.75, "prompt_consistency": 0.5, "aesthetic": 0.0}, 0.51,
                     guards={"prompt_consistency"}, deltas={"user": 0.68, "prompt_consistency": -0.29})
    assert "raised your taste (user model) by **+0.51**" in text and "weighted" in text
    # Found by a hostile review: "held" was said of a guard that fell.
    assert "prompt consistency fell 0.29 below the baseline (a guard, not raised)" in text and "held" not in text
    kept = gain_text({"user": 1.0, "prompt_consistency": 0.5}, 0.4, guards={"prompt_consistency"},
                     deltas={"prompt_consistency": 0.12})
    assert "prompt consistency held (+0.12; a guard, not raised)" in kept
    assert "aesthetic" not in text.lower()  # weight 0: not pursued, not named
    both = gain_text({"user": 1.0, "profile:bob": 0.5}, 0.8, guards=set(), deltas=None)
    assert "raised the weighted sum of your taste (user model) and taste of bob by **+0.80**" in both
    assert "guard" not in both


def test_reuse_brings_back_the_method_and_the_baselines_seed(app, fitted):
    """Found by a hostile review: Reuse set Guided after an Instant or Best of N run (Instant's
    0 iterations then made a Guided run of none), and Best of N's picked seed is not the one asked for."""
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")
    for method in ("Best of N", "Instant"):
        made = c.predict(fitted, "a cold blue ocean at night", "Fixed seed", 11, 0.5, 8, 0.75, 0.5, method=method,
                         api_name="/personalize")
        prompt, mode, seed, *rest = c.predict(api_name="/reuse_settings")
        assert (prompt, mode, seed) == ("a cold blue ocean at night", "Fixed seed", 11)
        assert value(rest[-1]) == method
        # Found by a review: dropping Best of N's PNG loaded the seed it picked, so the same method
        # from there tried other seeds. Its baseline is in this history: the seed asked for is loaded.
        prompt, mode, seed, *_ = c.predict(handle_file(local(made[3])), api_name="/reuse_png")
        assert seed == 11


def test_a_gain_that_rounds_to_zero_reads_plus_zero_not_minus_zero():
    from prefstudio.ui.generate_tab import gain_text

    text = gain_text({"user": 1.0, "prompt_consistency": 0.5}, -0.001, guards={"prompt_consistency"},
                     deltas={"prompt_consistency": -0.004})
    assert "-0.00" not in text and "**+0.00**" in text and "held (+0.00" in text, text


def test_each_method_is_named_for_what_it_did_and_never_claims_a_seed_it_did_not_use(app):
    """Found by a hostile review: Best of N's image was headed "same seed" from another seed, and
    after a reload nothing said Instant or Best of N (only "0 iterations")."""
    from prefstudio.ui.generate_tab import method_name, result_label

    best = {"method": "best_of_n", "picked_seed": 31753}
    assert "same seed" not in result_label(best, True) and "31753" in result_label(best, True)
    # Beside Best of N's image from another seed the baseline's heading cannot say "same seed".
    baseline = next(block for block in app[0].blocks.values() if getattr(block, "elem_id", None) == "ps-baseline")
    assert "same seed" not in baseline.label and "your seed" in baseline.label
    assert "iterat" not in result_label({"method": "instant"}, False)
    assert "adapter" in result_label({"method": "instant"}, True)
    assert "Instant" in result_label({"method": "instant+guidance"}, True)
    assert result_label({}, True) == result_label({"method": "guidance"}, True)  # runs stored before methods
    # Found by a review: a run that blended bob's taste was headed "optimised for your taste" while
    # alice's own taste fell. A blend is named for what it blends.
    blended = {"method": "guidance", "weights": {"user": 1.0, "profile:bob": 1.2, "prompt_consistency": 0.5}}
    assert result_label(blended, True) == "Personalized (same seed, optimised for a blend of your taste and bob's)"
    only_bob = {"method": "best_of_n", "picked_seed": 7, "weights": {"user": 0.0, "profile:bob": 1.0}}
    assert "for bob's taste" in result_label(only_bob, True) and "your" not in result_label(only_bob, True)
    assert result_label({"method": "guidance", "weights": {"user": 1.0, "profile:bob": 0.0}}, True) == \
        "Personalized (same seed, optimised for your taste)"
    assert [method_name({"method": m}) for m in ("guidance", "best_of_n", "instant", "instant+guidance")] == \
        ["Guided", "Best of N", "Instant", "Instant → short guidance"]


def test_the_score_chart_gives_each_series_one_colour_whatever_order_the_scores_come_in():
    """Found by a hostile review: the live chart and the same run after a reload swapped the
    colours of "Your taste" and "Prompt consistency"."""
    from prefstudio.guidance.noise_optimization import GuidanceProgress
    from prefstudio.ui.generate_tab import GenerateTab

    live = [GuidanceProgress(i, 0.1 * i, {"user": 0.1, "prompt_consistency": 0.2}, {}, 0, 0.1 * i) for i in range(3)]
    stored = [GuidanceProgress(i, 0.1 * i, {"prompt_consistency": 0.2, "user": 0.1}, {}, 0, 0.1 * i) for i in range(3)]
    first, second = GenerateTab._trace(live, 3).color_map, GenerateTab._trace(stored, 3).color_map
    assert first and first == second and len(set(first.values())) == len(first)


def test_text_from_a_file_is_shown_literally_never_as_a_link_an_image_or_html():
    """Found by a hostile review: an imported fit's reason holding Markdown and HTML made the page
    load an outside address (a tracking pixel) and show a live link."""
    from types import SimpleNamespace

    from prefstudio.ui.profile_tab import describe_fit

    hostile = ("verified: see [details](http://127.0.0.1:9999/phish) ![x](http://127.0.0.1:9999/t.png) "
               "<img src='http://127.0.0.1:9999/i.png'>")
    status = {"fitted_at": time.time(), "n_pairs": 3, "mode": "free", "reason": hostile,
              "loo_accuracy": 0.75, "loo_pairs": 3}
    ctx = SimpleNamespace(studio=SimpleNamespace(fit_status=lambda profile: status,
                                                 preference=SimpleNamespace(name="auto", description="both")),
                          store=SimpleNamespace(judgments=lambda profile: [], counts=lambda profile: {}))
    text = describe_fit(ctx, "ana")
    assert "<img" not in text and "](http" not in text and "![" not in text
    from prefstudio.ui.common import markdown_text
    assert markdown_text("a fox (red) & <b>bold</b> *x*") == r"a fox \(red\) &amp; &lt;b&gt;bold&lt;/b&gt; \*x\*"



def test_a_profile_with_a_run_going_is_not_renamed_or_deleted_under_it(app):
    """Found by a review: renaming a profile from another page while its run went on lost the
    run's work (it is stored under the name it started with) and showed the store's list of every
    profile. The rename and the delete are refused until the run ends; the run is stored."""
    fitted_through_the_library(app, "mover", "a red barn in a field", range(200, 206))
    runner, other = client(app[1]), client(app[1])
    runner.predict("mover", api_name="/open_profile")
    other.predict("mover", api_name="/open_profile")
    job = runner.submit("mover", "a red barn in a field", "Fixed seed", 3, 1.0, 100, 0.75, 0.5,
                        api_name="/personalize")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 2 and not job.done() and time.monotonic() < deadline:  # under way
        time.sleep(0.05)
    for refused_call in (lambda: other.predict("mover", "moved", api_name="/rename_profile"),
                         lambda: other.predict("mover", api_name="/delete_profile")):
        with pytest.raises(AppError, match="mover has a Generate run going: stop it or let it finish first"):
            refused_call()
    assert [p.name for p in store_of(app).list_profiles() if p.name in ("mover", "moved")] == ["mover"]
    assert runner.predict("mover", api_name="/stop").startswith("Stop asked")
    job.result(timeout=120)
    assert store_of(app).personalized_images("mover", 1)[0].prompt == "a red barn in a field"
    assert "Renamed" in other.predict("mover", "moved", api_name="/rename_profile")[0]  # once it ended


def test_a_page_is_told_a_profile_is_missing_without_the_names_of_those_that_exist(tmp_path):
    """Found by a review: a run whose profile went away (renamed or deleted by the CLI, say) showed
    the store's message, which lists every profile in the data folder, other logins' too. The
    CLI and the library on one's own machine still list them."""
    from prefstudio.errors import NotFound
    from prefstudio.store.history import HistoryStore
    from prefstudio.ui.common import _shown
    from prefstudio.ui.jobs import GenerationJob, GenerationJobs

    store = HistoryStore(tmp_path)
    for name in ("ann-private", "ben-private"):
        store.create_profile(name)
    with pytest.raises(NotFound) as missing:
        store.get_profile("gone")
    assert "ann-private, ben-private" in str(missing.value)
    assert _shown(missing.value).message == "no profile named 'gone'"

    def run():
        store.get_profile("gone")
        yield

    job = GenerationJob("gone", "a prompt", 1, 1)
    GenerationJobs(lambda steps: steps).start("gone", job, run())
    assert job.done.wait(10) and job.error == "no profile named 'gone'"


def test_an_api_client_adds_a_profile_to_the_blend_and_loads_a_preset_it_did_not_save(app, fitted):
    """Found by a review: both endpoints are public, yet a client that had not focused the page's
    menus first was refused by gradio ("Value: dave is not in the list of choices: []")."""
    fitted_through_the_library(app, "blendee", "a yellow kite on a beach", range(300, 306))
    app[0].prefstudio.studio.save_preset(fitted, "saved elsewhere", {"user": 0.25, "prompt_consistency": 0.5})
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")
    assert "Added the taste of **blendee**" in c.predict(fitted, "blendee", api_name="/add_to_blend")[-1]
    assert "Loaded preset **saved elsewhere**" in c.predict(fitted, "saved elsewhere", api_name="/load_preset")[-1]
    with pytest.raises(AppError, match="no profile named 'nobody'"):
        c.predict(fitted, "nobody", api_name="/add_to_blend")
    with pytest.raises(AppError, match="no preset named 'nothing'"):
        c.predict(fitted, "nothing", api_name="/load_preset")


def test_a_preset_name_shows_as_text_never_as_a_link_or_markup(app, fitted):
    """Found by a review: a preset named <a href="https://evil.example/">click me</a>, typed or in
    an imported profile file, showed on the status line as a live link, and <img …> as an image."""
    name = '<a href="//e.example/">click me</a> *bold* [x](//e.example)'
    c = client(app[1])
    c.predict(fitted, api_name="/open_profile")
    weights = (0.25, 0.5, 0, 0, 0, 0)
    saved = c.predict(fitted, name, *weights, api_name="/save_preset")[-1]
    app[0].prefstudio.studio.save_preset(fitted, "<img src=//127.0.0.1:9/p>", {"user": 1.0})
    loaded = c.predict(fitted, "<img src=//127.0.0.1:9/p>", api_name="/load_preset")[-1]
    for line in (saved, loaded):
        assert "<a" not in line and "<img" not in line and "](" not in line and "*bold*" not in line, line
    from prefstudio.ui.common import markdown_text

    assert markdown_text(name) in saved and markdown_text("<img src=//127.0.0.1:9/p>") in loaded  # shown as typed


def test_stop_on_a_method_that_makes_its_image_in_one_step_says_it_cannot_stop_midway(app):
    """Found by a review: Stop during Best of N answered "Stopping after this iteration; the best
    image so far is kept", but Best of N renders its seeds in one step and never stops early."""
    import threading

    import gradio as gr

    from prefstudio.ui.common import AppContext
    from prefstudio.ui.generate_tab import GenerateTab
    from prefstudio.ui.jobs import GenerationJob

    ctx = app[0].prefstudio
    with gr.Blocks():
        tab = GenerateTab(AppContext(ctx.studio), gr.Dropdown(["fitted"], value="fitted"))
    ctx.store.create_profile("one step")
    release = threading.Event()

    def run():
        release.wait(10)
        yield from ()

    for method, said in (("Best of N", "makes its image in one step"), ("Guided", "Stop asked: the run ends after its current iteration")):
        job = GenerationJob("one step", "a prompt", 1, 8, {"method": method})
        tab.jobs.start("one step", job, run())
        assert said in tab.stop("one step")
        release.set()
        assert job.done.wait(10)
        release.clear()
