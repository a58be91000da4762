"""The Label tab's judging logic, called as gradio calls it (no browser, no model needed:
the candidates are uploaded images)."""
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.studio import Studio
from prefstudio.ui.common import AppContext
from prefstudio.ui.label_tab import LabelSession, LabelTab


@pytest.fixture
def tab(tmp_path):
    studio = Studio(tmp_path / "data")
    studio.store.create_profile("me")
    with gr.Blocks():
        tab = LabelTab(AppContext(studio), gr.Dropdown(["me"], value="me"))
    return tab


@pytest.fixture
def shown(tab, tmp_path):
    """A session with four uploaded candidates on screen."""
    paths = []
    for i in range(4):
        path = tmp_path / f"upload-{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    session = LabelSession()
    tab.add_uploads(session, "me", paths, "a test picture")
    return session


def status(views) -> str:
    return views[6]


def pair_on_screen(views) -> str:
    return views[8]


def candidate_on_screen(views) -> str:
    return views[9]


def test_same_verdict_twice_is_a_no_op_and_a_new_one_replaces(tab, shown):
    store = tab.ctx.store
    first = shown.candidates[0]
    tab.like(shown, "me")
    assert shown.current == 1
    tab.previous(shown, "me")
    assert "nothing changed" in status(tab.like(shown, "me"))
    assert [(j.kind, j.image_a) for j in store.judgments("me")] == [("like", first)]
    assert len(shown.made) == 1
    assert "replaces 👍" in status(tab.dislike(shown, "me"))
    assert [(j.kind, j.image_a) for j in store.judgments("me")] == [("dislike", first)]
    assert "👍 again" in status(tab.undo(shown, "me"))
    assert [(j.kind, j.image_a) for j in store.judgments("me")] == [("like", first)]
    assert shown.current == 0
    tab.undo(shown, "me")
    assert store.judgments("me") == []


def test_undo_of_a_pair_goes_back_to_that_pair(tab, shown):
    store = tab.ctx.store
    tab.pick_left(shown, "me")
    tab.pick_right(shown, "me")
    assert shown.pair_index == 2 and store.counts("me")["pair"] == 2
    shown.pair_index = 0  # back to the first pair, already judged left ≻ right
    tab.pick_left(shown, "me")  # the same verdict: no second judgment, nothing new to undo
    assert store.counts("me")["pair"] == 2 and len(shown.made) == 2 and shown.pair_index == 1
    tab.undo(shown, "me")  # undoes the second pair's judgment, and shows that pair
    left, right = (shown.candidates[i] for i in shown.pairs[shown.pair_index])
    assert store.pair_verdicts("me", [left, right]) == {}
    assert shown.pair_index == 1 and store.counts("me")["pair"] == 1
    tab.undo(shown, "me")
    assert shown.pair_index == 0 and store.judgments("me") == []


def test_restore_lands_on_the_first_unjudged_candidate_and_pair(tab, shown):
    tab.like(shown, "me")
    tab.dislike(shown, "me")
    tab.pick_left(shown, "me")
    fresh = LabelSession()  # the page reloaded: a new session, the batch from localStorage
    tab.restore(fresh, "me", list(shown.candidates))
    assert fresh.candidates == shown.candidates
    assert fresh.current == 2 and fresh.pair_index == 1
    tab.restore(other := LabelSession(), "", list(shown.candidates))  # no profile: the first
    assert other.current == 0


def test_the_running_count_says_one_pair_and_one_tie_in_the_singular():
    from types import SimpleNamespace

    from prefstudio.ui.common import counts_line

    store = SimpleNamespace(counts=lambda profile: {"like": 1, "dislike": 0, "pair": 1, "tie": 1, "skip": 0})
    assert counts_line(SimpleNamespace(store=store), "ann") == (
        "**ann** · 3 judgments: 1 👍 · 0 👎 · 1 pair · 1 tie · 0 skipped")
    store = SimpleNamespace(counts=lambda profile: {"like": 0, "dislike": 0, "pair": 2, "tie": 0, "skip": 1})
    assert counts_line(SimpleNamespace(store=store), "ann") == (
        "**ann** · 3 judgments: 0 👍 · 0 👎 · 2 pairs · 0 ties · 1 skipped")


def test_undo_never_changes_another_profile_than_the_one_shown(tab, shown):
    """Found by a hostile review: judged as one profile, switched to another and pressed U: the
    first profile's judgment was undone while the page showed the second."""
    from prefstudio.errors import InvalidInput

    store = tab.ctx.store
    store.create_profile("other")
    tab.like(shown, "me")
    with pytest.raises(InvalidInput, match="your last judgment here was for me: switch back to me to undo it"):
        tab.undo(shown, "other")
    assert [j.kind for j in store.judgments("me")] == ["like"]  # nothing changed
    assert "Undone" in status(tab.undo(shown, "me"))  # still there to undo from its own profile
    assert store.judgments("me") == []


def test_a_right_to_left_name_keeps_to_itself_on_the_status_line():
    """Found by a review: for "José 日本語 مرحبا" the line showed as "José 日本語 20 · مرحبا judgments",
    the count drawn inside the name. A name holding right-to-left letters is isolated."""
    from types import SimpleNamespace

    from prefstudio.ui.common import counts_line

    store = SimpleNamespace(counts=lambda profile: {"like": 20, "dislike": 0, "pair": 0, "tie": 0, "skip": 0})
    ctx = SimpleNamespace(store=store)
    assert counts_line(ctx, "José 日本語 مرحبا").startswith("**\u2068José 日本語 مرحبا\u2069** · 20 judgments")
    assert counts_line(ctx, "ann").startswith("**ann** · 20 judgments")  # nothing added where nothing is needed


def test_a_seed_given_twice_is_refused_it_would_make_the_same_candidate_twice():
    """Found by a hostile review: seeds "1,1,1" made three identical candidates to judge."""
    from prefstudio.errors import InvalidInput
    from prefstudio.ui.label_tab import parse_seeds

    assert parse_seeds("7, 42 1234") == [7, 42, 1234]
    with pytest.raises(InvalidInput, match="seed 1 is given 3 times: each seed makes one candidate"):
        parse_seeds("1,1,1")


def test_undoing_a_pair_names_both_images(tab, shown):
    tab.pick_left(shown, "me")
    judged = tab.ctx.store.judgments("me")[-1]
    first, second = judged.image_a, judged.image_b
    text = status(tab.undo(shown, "me"))
    assert first[:8] in text and second[:8] in text, text


def test_an_undo_refused_because_another_page_judged_again_is_still_there_to_undo(tab, shown):
    """Found by a review: page 1 liked an image, page 2 disliked it (replacing the like), page 1
    pressed U: refused, yet the like was gone from page 1's undo list, so a second U undid an
    older judgment of page 1's instead of saying the same again."""
    store = tab.ctx.store
    other_page = LabelSession()
    other_page.candidates, other_page.current = list(shown.candidates), 1
    tab.like(shown, "me")  # page 1: its first judgment, on the first candidate
    tab.like(shown, "me")  # page 1: on the second
    tab.dislike(other_page, "me")  # page 2 replaces page 1's like of the second
    for _ in range(2):  # refused each time, and nothing of page 1's is undone
        with pytest.raises(NotFound, match="was replaced by judgment"):
            tab.undo(shown, "me")
    assert [(j.kind, j.image_a) for j in store.judgments("me")] == [("like", shown.candidates[0]),
                                                                     ("dislike", shown.candidates[1])]
    assert len(shown.made) == 2


def test_an_undo_of_a_judgment_removed_elsewhere_says_so_and_moves_on_to_the_one_before(tab, shown):
    store = tab.ctx.store
    tab.like(shown, "me")
    tab.like(shown, "me")
    store.remove_judgment("me", shown.made[-1][1])  # from the Profile tab's history, say
    with pytest.raises(NotFound, match=r"already removed elsewhere; press Undo again for the one before it"):
        tab.undo(shown, "me")
    assert "Undone" in status(tab.undo(shown, "me"))
    assert store.judgments("me") == []


@pytest.mark.parametrize("pick", ["pick_left", "pick_right", "tie", "pair_skip"])
def test_a_pick_sent_for_a_pair_no_longer_on_screen_records_nothing(tab, shown, pick):
    """Found by a review: keys pressed faster than the server answered (1 then 2) judged the next
    pair before it was on screen. Each pick says which pair the page showed; a pick for another
    one is refused in words, and the person sees the pair it would have judged first."""
    store = tab.ctx.store
    first = pair_on_screen(tab.render(shown, "me"))  # as the page holds it
    tab.pick_left(shown, "me", first)
    after = store.judgments("me")
    with pytest.raises(InvalidInput, match="the pair on screen changed before this choice reached the studio"):
        getattr(tab, pick)(shown, "me", first)  # sent before the answer showed the second pair
    assert store.judgments("me") == after and shown.pair_index == 1
    second = pair_on_screen(tab.render(shown, "me"))
    assert second != first
    getattr(tab, pick)(shown, "me", second)
    assert shown.pair_index == 2


@pytest.mark.parametrize("verdict", ["like", "dislike", "skip"])
def test_a_verdict_sent_for_a_candidate_no_longer_on_screen_records_nothing(tab, shown, verdict):
    """Found by a review: L D L D pressed with no pause stored 👎 👍 … on the candidates, and a
    double click on 👍 liked the next candidate unseen. Each verdict says which candidate the page
    showed; one for another candidate is refused in words and changes nothing."""
    store = tab.ctx.store
    first = candidate_on_screen(tab.render(shown, "me"))
    tab.like(shown, "me", first)
    after = store.judgments("me")
    with pytest.raises(InvalidInput, match="the candidate on screen changed before this verdict reached the studio"):
        getattr(tab, verdict)(shown, "me", first)  # the second click, sent before the answer to the first
    assert store.judgments("me") == after and shown.current == 1
    second = candidate_on_screen(tab.render(shown, "me"))
    assert second.split("@")[0] == shown.candidates[1]
    getattr(tab, verdict)(shown, "me", second)
    assert [j.image_a for j in store.judgments("me", ("like", "dislike", "skip"))] == shown.candidates[:2]


def test_suggest_says_when_pairs_judged_elsewhere_leave_the_queue(tab, shown):
    """Found by a review: after 💡 Suggest, "Pair 4 of 6" became "Pair 5 of 5" with no word. A pair
    of the batch judged meanwhile (here, as another page would) leaves the queue, and it is said."""
    a, b = (shown.candidates[i] for i in shown.pairs[3])
    tab.ctx.store.record_judgment("me", "pair", a, b)
    total = len(shown.pairs)
    views = tab.suggest(shown, "me")
    assert len(shown.pairs) == total - 1
    assert "1 pair of this batch was judged already: it left the queue" in status(views)
    assert f"Pair 1 of {total - 1}" in views[5]


def test_a_pick_sent_after_the_last_pair_says_the_batch_is_compared(tab, tmp_path):
    """Found by a review: a fast second pick on a batch's only pair was told "no pair to compare:
    generate at least two candidates", with two candidates on screen."""
    paths = []
    for i in range(2):
        path = tmp_path / f"two-{i}.png"
        Image.fromarray(np.random.default_rng(10 + i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    session = LabelSession()
    tab.add_uploads(session, "me", paths, "a test picture")
    only = pair_on_screen(tab.render(session, "me"))
    tab.pick_left(session, "me", only)
    with pytest.raises(InvalidInput) as late:
        tab.pick_right(session, "me", only)
    assert str(late.value) == ("the pair on screen changed before this choice reached the studio: nothing was "
                               "recorded, and every pair of this batch is compared now")
    with pytest.raises(InvalidInput, match="every pair of this batch is compared: generate new candidates"):
        tab.pick_right(session, "me")  # an API client, which sends no pair
    assert len(tab.ctx.store.judgments("me")) == 1


def test_undo_follows_a_renamed_profile_and_forgets_a_deleted_one(tab, shown):
    """Found by a review: judged as tester, renamed it to "Tester Renamed", pressed U: "your last
    judgment here was for tester: switch back to tester to undo it", a profile that no longer
    existed, so that judgment and every earlier one of the session could never be undone."""
    from prefstudio.errors import NotFound

    store = tab.ctx.store
    tab.like(shown, "me")
    store.rename_profile("me", "Me Renamed")
    assert "Undone" in status(tab.undo(shown, "Me Renamed"))
    assert store.judgments("Me Renamed") == []
    store.create_profile("gone")
    tab.dislike(shown, "gone")
    tab.like(shown, "Me Renamed")
    store.delete_profile("Me Renamed")
    with pytest.raises(NotFound, match="your last judgment here was for a profile deleted since"):
        tab.undo(shown, "gone")
    assert "Undone" in status(tab.undo(shown, "gone"))  # the one before it, the shown profile's
    assert store.judgments("gone") == []


def test_candidates_of_a_prompt_longer_than_the_models_read_say_what_is_ignored(tab):
    """Found by a review: a prompt of 337 tokens was cut to the text encoder's 256 with a line in
    the server log only; the page said nothing, and the images followed the cut prompt."""
    views = tab.generate(LabelSession(), "me", "a castle, a hill, a stormy sky; " * 29 + "a red dragon", 2, "")
    shown = status(views).replace("\\", "")  # as the page renders the Markdown
    assert "reads 256; this end of it is ignored: 'hill, a stormy sky" in shown
    views = tab.generate(LabelSession(), "me", "a castle on a hill", 2, "")
    assert "ignored" not in status(views)
