"""The Studio facade: judgments to pairs, fitting errors, side by side from one seed."""
import pytest
from PIL import Image

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.store.history import Judgment
from prefstudio.studio import Studio, training_pairs


def j(i, kind, a, b=None):
    return Judgment(i, "p", kind, a, b, "")


def test_training_pairs_from_singles_pairs_and_changed_minds():
    history = [j(1, "like", "a"), j(2, "dislike", "b"), j(3, "pair", "c", "d"), j(4, "tie", "e", "f"),
               j(5, "like", "g"), j(6, "dislike", "g")]  # g: changed their mind
    assert training_pairs(history) == [("c", "d"), ("a", "b"), ("a", "g")]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    studio = Studio(tmp_path_factory.mktemp("data"), bank_path=None, preference_model="user-embedding")
    studio.store.create_profile("ann")
    return studio


def test_fit_without_history_or_bank_is_a_clear_message(studio):
    with pytest.raises(InvalidInput, match="ann has nothing judged yet: a fit learns from pairs"):
        studio.fit("ann")
    with pytest.raises(NotFound):
        studio.fit("nobody")


def test_a_fit_needs_a_pair_even_with_a_bank(tmp_path):
    """Found by a review: Fit on a profile with nothing judged said "Fitted … on 0 pairs", gave it a
    taste summary, and the profile then counted as fitted (Generate "ready", offered for blends):
    the bank's average person passed for the person's taste. A fit now needs a pair."""
    studio = Studio(tmp_path)  # the default model, with the user bank's cold start
    studio.store.create_profile("me")
    with pytest.raises(InvalidInput, match=r"^me has nothing judged yet: a fit learns from pairs"):
        studio.fit("me")
    image = studio.generate_candidates("a fox in the snow", n=1, seeds=[3])[0]
    studio.judge("me", "like", image.sha256)
    with pytest.raises(InvalidInput, match=r"^me has 1 judgment but no pair yet: a fit learns from pairs"):
        studio.fit("me")
    assert studio.fit_status("me") is None and studio.blendable_profiles(None) == []


def test_personalize_side_by_side_shares_the_seed(studio):
    images = studio.generate_candidates("a fox in the snow", seeds=[1, 2, 3, 4])
    for image, kind in zip(images, ["like", "dislike", "like", "dislike"]):
        studio.judge("ann", kind, image.sha256)
    report = studio.fit("ann")
    assert report.mode == "free" and report.n_pairs == 4
    with pytest.raises(InvalidInput, match="prompt is empty"):
        studio.personalize_once("ann", "   ", seed=1)
    result = studio.personalize_once("ann", "a fox in the snow", seed=5, iterations=3)
    assert result.baseline.record.seed == result.personalized.record.seed == 5
    assert set(result.baseline.normalised) == {"user", "prompt_consistency"}
    assert result.personalized.record.params["personalized_for"] == "ann"
    # Both images are in the history, so they can be judged right away.
    studio.judge("ann", "pair", result.personalized.record.sha256, result.baseline.record.sha256)
    assert studio.store.counts("ann") == {"like": 2, "dislike": 2, "pair": 1, "tie": 0, "skip": 0}


def test_best_of_n_names_the_seed_it_picked_and_strength_0_is_the_baseline(studio):
    """Found by a hostile review: Best of N's image came from another seed while its record and
    provenance said the baseline's, and strength 0 still changed the image."""
    if not studio.store.model_names("ann"):
        test_personalize_side_by_side_shares_the_seed(studio)
    side = studio.personalize_once("ann", "a fox in the snow", seed=7, method="best_of_n", strength=0.5)
    picked = side.personalized.record.seed
    assert side.baseline.record.seed == 7
    again = studio.generator.generate("a fox in the snow", [picked])[0].image
    assert again.tobytes() == Image.open(side.personalized.record.path).convert("RGB").tobytes()
    assert side.personalized.record.params["baseline"] == side.baseline.record.sha256
    if side.improved:
        assert picked != 7
    still = studio.personalize_once("ann", "a fox in the snow", seed=7, method="best_of_n", strength=0.0)
    assert still.personalized.record.seed == 7 and not still.improved
    baseline = Image.open(still.baseline.record.path).convert("RGB").tobytes()
    assert Image.open(still.personalized.record.path).convert("RGB").tobytes() == baseline


def test_guided_with_no_iterations_is_refused_before_any_work(studio):
    """Found by a review: Guided with Iterations 0 ran, stored a side by side that was not
    personalized, and advised more iterations."""
    if not studio.store.model_names("ann"):
        test_personalize_side_by_side_shares_the_seed(studio)
    before = len(studio.store.personalized_images("ann"))
    with pytest.raises(InvalidInput, match=r"^Guided with 0 iterations is the baseline itself: give it at least "
                                           r"1 iteration \(Instant is the one-pass method\)$"):
        studio.personalize_once("ann", "a fox in the snow", seed=9, iterations=0, method="guidance")
    assert len(studio.store.personalized_images("ann")) == before


@pytest.mark.parametrize("method", ["guidance", "best_of_n", "instant+guidance"])
def test_a_run_whose_only_weight_is_a_guard_is_refused_before_any_work(studio, method):
    """Found by a hostile review: with Your taste at 0 and prompt consistency at 0.5 a run went
    ahead, raised nothing, and then advised a higher strength or more iterations. A guard is only
    kept from falling; it is never raised, so there was nothing to personalize for."""
    if not studio.store.model_names("ann"):
        test_personalize_side_by_side_shares_the_seed(studio)
    before = len(studio.store.personalized_images("ann"))
    with pytest.raises(InvalidInput) as caught:
        studio.personalize_once("ann", "a fox in the snow", seed=9, weights={"user": 0.0, "prompt_consistency": 0.5},
                                iterations=2, method=method)
    assert str(caught.value) == ("nothing to personalize for: every reward that is raised has weight 0 (prompt "
                                 "consistency only guards, it is never raised); give your taste a weight above 0")
    assert len(studio.store.personalized_images("ann")) == before


@pytest.fixture(scope="module")
def fitted_library(tmp_path_factory):
    """A studio used as README's "Library in 15 lines" uses it: a profile judged and fitted."""
    studio = Studio(tmp_path_factory.mktemp("library"))
    studio.store.create_profile("alice")
    images = studio.generate_candidates("a fox in the snow", seeds=list(range(8)))
    for image in images:
        studio.judge("alice", "like" if image.seed % 2 else "dislike", image.sha256)
    studio.fit("alice")
    return studio, [image.sha256 for image in images]


def _rows(studio) -> dict:
    query = studio.store._query
    tables = [t for (t,) in query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: query(f"SELECT count(*) FROM {t}")[0][0] for t in tables} | {
        "files": sorted(p.name for p in studio.store.data_dir.rglob("*") if p.is_file())}


@pytest.mark.parametrize("call, message", [
    (lambda s, shas: s.personalize_once("alice", "a fox", seed=1, iterations=1, weights={"user": "lots"}),
     "weight of 'user' must be a number, got 'lots'"),
    (lambda s, shas: s.judge("alice", "like", [shas[0]]), r"an image id must be text \(64 hexadecimal characters\), got \["),
    (lambda s, shas: s.export_profile("alice", s.store.data_dir), "is a folder; give a file name inside it"),
    (lambda s, shas: s.export_profile("alice", 5), "a file name must be a string or a path, got 5"),
    (lambda s, shas: s.score_images("nobody", shas[:1]), "no profile named 'nobody'"),
    (lambda s, shas: s.rewards("nobody"), "no profile named 'nobody'"),
    (lambda s, shas: s.generate_candidates("a fox", n=2.5), "number of candidates must be a whole number, got 2.5"),
    (lambda s, shas: s.generate_candidates("a fox", n="2"), "number of candidates must be a whole number, got '2'"),
    (lambda s, shas: s.generate_candidates("a fox", n=True), "number of candidates must be a whole number, got True"),
    (lambda s, shas: s.suggest("alice", shas, top=0), r"top must be a whole number ≥ 1, got 0"),
    # Found by a second review: a TypeError, ValueError or AttributeError from deep inside, or accepted.
    (lambda s, shas: s.personalize_once("alice", "a fox", seed=1, iterations=1, weights="user=1"),
     "weights must be a mapping of reward names to numbers, got 'user=1'"),
    (lambda s, shas: s.personalize_once("alice", "a fox", seed=1, iterations=1, weights={"user": True}),
     "weight of 'user' must be a number, got True"),
    (lambda s, shas: s.personalize_once("alice", "a fox", seed=1, iterations=1, strength=True),
     r"strength must be a number in \[0, 1\], got True"),
    (lambda s, shas: s.personalize_once("alice", "a fox", seed=1, iterations=1, stop="yes"),
     "stop must be a threading.Event or None, got 'yes'"),
    (lambda s, shas: s.judge("alice", "like", None), r"an image id must be text \(64 hexadecimal characters\), got None"),
    (lambda s, shas: s.save_preset("alice", "p", None), "weights must be a mapping of reward names to numbers, got None"),
    (lambda s, shas: s.features(None), "image ids must be a list of ids, got None"),
    (lambda s, shas: s.features(shas[0]), "image ids must be a list of ids, got '"),
    # Found by a third review: one id read as its letters ("no image 'e'"), and pathlib's TypeError.
    (lambda s, shas: s.suggest("alice", shas[0]), "candidate image ids must be a list of ids, got '"),
    (lambda s, shas: s.import_profile(None), "a profile file must be a path, got None"),
])
def test_the_library_refuses_wrong_inputs_in_one_line_and_changes_nothing(fitted_library, call, message):
    """Found by a review of the library as README shows it: these raised a TypeError or a sqlite
    error from deep inside, or went through (a mistyped profile name scored without its taste,
    2.5 candidates made two)."""
    studio, shas = fitted_library
    before = _rows(studio)
    with pytest.raises((InvalidInput, NotFound), match=message):
        call(studio, shas)
    assert _rows(studio) == before


def test_a_fit_summary_over_few_held_out_pairs_says_they_are_too_few():
    """Found by a review: the CLI's `fit` said "leave-one-out 67% over 6 pairs" with no caveat,
    where the Profile tab says 6 pairs are too few for the figure to say much."""
    from prefstudio.studio import FitReport

    few = FitReport("alice", "auto", "bank", "why", 6, 4 / 6, 6, 0.1).summary()
    assert "67% over 6 pairs (too few to say much yet)" in few
    assert "too few" not in FitReport("alice", "auto", "bank", "why", 20, 0.8, 20, 0.1).summary()


def test_seeds_must_be_a_list_of_whole_numbers(studio):
    """Found by a review: seeds="123" made and stored three images from seeds 1, 2 and 3, and
    seeds=5 failed with "object of type 'int' has no len()"."""
    before = len(studio.store._query("SELECT sha256 FROM images"))
    for seeds in ("123", 5, b"12", {"a": 1}):
        with pytest.raises(InvalidInput, match=r"^seeds must be a list of whole numbers"):
            studio.generate_candidates("a fox in the snow", seeds=seeds)
    assert len(studio.store._query("SELECT sha256 FROM images")) == before
    # Found by a review: `generate --seeds 1 1` stored one image and listed it twice.
    with pytest.raises(InvalidInput, match=r"^seed 1 is given twice"):
        studio.generate_candidates("a fox in the snow", seeds=[1, 2, 1])
    assert len(studio.store._query("SELECT sha256 FROM images")) == before
    made = studio.generate_candidates("a fox in the snow", seeds=(s for s in (4, 5)))  # any iterable of numbers
    assert [r.seed for r in made] == [4, 5]


def test_a_data_folder_must_be_a_path(tmp_path):
    """Found by a review: Studio(123) failed with pathlib's TypeError."""
    with pytest.raises(InvalidInput, match=r"^the data folder must be a path, got 123$"):
        Studio(123)
