import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.generators.base import GeneratedImage
from prefstudio.store.history import HistoryStore
from prefstudio.store.image_files import read_png_metadata

REPO = Path(__file__).resolve().parents[1]


def generated(seed: int, prompt: str = "a red boat on a calm lake") -> GeneratedImage:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return GeneratedImage(Image.fromarray(pixels, "RGB"), prompt, seed, "embedded",
                          {"resolution": 32, "steps": 1})


@pytest.fixture
def store(tmp_path):
    with HistoryStore(tmp_path / "data") as store:
        yield store


@pytest.fixture
def images(store):
    return [store.add_image(generated(seed)).sha256 for seed in range(4)]


def image_rows(store) -> int:
    return len(store._query("SELECT sha256 FROM images"))


# --- profiles -----------------------------------------------------------------------


def test_profiles_are_created_listed_and_found(store):
    store.create_profile("Bob")
    alice = store.create_profile("  Alice  ")
    assert alice.name == "Alice"
    assert [p.name for p in store.list_profiles()] == ["Alice", "Bob"]
    assert store.get_profile("alice") == alice  # names are case-insensitive


@pytest.mark.parametrize("name, message", [
    ("", "empty"), ("   ", "empty"), ("x" * 65, "65 characters"), ("a/b", "'/'"),
    ("Robert'); DROP TABLE profiles;--", "contains"),
])
def test_invalid_profile_names_are_refused(store, name, message):
    with pytest.raises(InvalidInput, match=message):
        store.create_profile(name)
    assert store.list_profiles() == []


def test_duplicate_profile_is_refused(store):
    store.create_profile("Alice")
    with pytest.raises(InvalidInput, match="already exists"):
        store.create_profile("ALICE")
    assert len(store.list_profiles()) == 1


def test_unknown_profile_names_the_existing_ones(store, images):
    with pytest.raises(NotFound, match="no profiles yet"):
        store.get_profile("Carol")
    store.create_profile("Alice")
    store.create_profile("Bob")
    with pytest.raises(NotFound, match="existing profiles: Alice, Bob"):
        store.record_judgment("Carol", "like", images[0])


# --- images -------------------------------------------------------------------------


def test_added_image_is_stored_with_its_parameters(store):
    record = store.add_image(generated(3))
    assert record.path.is_file()
    assert record.path.relative_to(store.data_dir).parts[:2] == ("images", record.sha256[:2])
    assert (record.prompt, record.seed, record.generator) == ("a red boat on a calm lake", 3,
                                                             "embedded")
    assert record.params == {"resolution": 32, "steps": 1}
    assert (record.width, record.height) == (32, 32)
    assert store.image_record(record.sha256) == record
    assert read_png_metadata(record.path) == {
        "prompt": record.prompt, "seed": 3, "generator": "embedded", "params": record.params}
    assert np.array_equal(np.asarray(store.load_image(record.sha256)),
                          np.asarray(generated(3).image))


def test_same_image_twice_is_stored_once(store):
    first = store.add_image(generated(5))
    again = store.add_image(generated(5))
    assert again == first
    assert image_rows(store) == 1
    assert len(list(store.images_dir.rglob("*.png"))) == 1


def test_generated_image_with_bad_prompt_or_seed_is_refused(store):
    bad_seed = generated(1)
    bad_seed.seed = -1
    for image in (GeneratedImage(generated(1).image, "   ", 1, "embedded"), bad_seed):
        with pytest.raises(InvalidInput):
            store.add_image(image)
    assert image_rows(store) == 0 and not list(store.images_dir.rglob("*.png"))


def test_imported_upload_is_stored_as_rgb_png(store):
    upload = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 0, 255, 0)).save(upload, "PNG")
    record = store.import_image(upload.getvalue(), "a blank sheet")
    assert (record.generator, record.seed, record.params) == ("import", None, {})
    assert np.asarray(store.load_image(record.sha256)).min() == 255  # transparent → white


def test_bad_upload_changes_nothing(store):
    with pytest.raises(InvalidInput, match="not an image"):
        store.import_image(b"GIF? no, just text", "anything")
    assert image_rows(store) == 0 and not list(store.images_dir.rglob("*.png"))


def test_unknown_image_is_not_found(store):
    with pytest.raises(NotFound, match="no image"):
        store.image_record("0" * 64)


# --- judgments ----------------------------------------------------------------------


def test_judgments_are_recorded_in_order_and_counted(store, images):
    store.create_profile("Alice")
    a, b, c, d = images
    made = [
        store.record_judgment("Alice", "like", a),
        store.record_judgment("Alice", "dislike", b),
        store.record_judgment("Alice", "pair", c, a),
        store.record_judgment("Alice", "tie", a, d),
        store.record_judgment("Alice", "skip", d),
        store.record_judgment("Alice", "skip", b, c),
    ]
    assert store.judgments("Alice") == made
    assert [(j.kind, j.image_a, j.image_b) for j in store.judgments("Alice", kinds=["pair"])] \
        == [("pair", c, a)]
    assert store.counts("Alice") == {"like": 1, "dislike": 1, "pair": 1, "tie": 1, "skip": 2}


@pytest.mark.parametrize("kind, pick, error, message", [
    ("love", (0,), InvalidInput, "unknown judgment kind 'love'; use one of like, dislike"),
    ("like", (0, 1), InvalidInput, "about one image; got two"),
    ("pair", (0,), InvalidInput, "compares two images; got one"),
    ("pair", (0, 0), InvalidInput, "two different images"),
    ("tie", (1, None), InvalidInput, "compares two images"),
])
def test_wrong_judgments_are_refused(store, images, kind, pick, error, message):
    store.create_profile("Alice")
    shas = [None if i is None else images[i] for i in pick]
    with pytest.raises(error, match=message):
        store.record_judgment("Alice", kind, *shas)
    assert store.judgments("Alice") == []


def test_judgment_of_unknown_image_is_refused(store, images):
    store.create_profile("Alice")
    with pytest.raises(NotFound, match="no image 'f+'"):
        store.record_judgment("Alice", "pair", images[0], "f" * 64)
    assert store.judgments("Alice") == []


def test_undo_removes_the_latest_and_ids_are_never_reused(store, images):
    store.create_profile("Alice")
    first = store.record_judgment("Alice", "like", images[0])
    second = store.record_judgment("Alice", "dislike", images[1])
    assert store.undo_last("Alice") == second
    assert store.judgments("Alice") == [first]
    third = store.record_judgment("Alice", "like", images[2])
    assert third.id > second.id
    store.undo_last("Alice")
    store.undo_last("Alice")
    with pytest.raises(NotFound, match="no judgments to undo"):
        store.undo_last("Alice")


def test_remove_judgment_only_within_its_profile(store, images):
    store.create_profile("Alice")
    store.create_profile("Bob")
    alices = store.record_judgment("Alice", "like", images[0])
    bobs = store.record_judgment("Bob", "like", images[0])
    with pytest.raises(NotFound, match=f"profile 'Bob' has no judgment {alices.id}"):
        store.remove_judgment("Bob", alices.id)
    assert store.judgments("Alice") == [alices] and store.judgments("Bob") == [bobs]
    assert store.remove_judgment("Alice", alices.id) == alices
    assert store.judgments("Alice") == [] and store.judgments("Bob") == [bobs]


def test_concurrent_judging_into_two_profiles(store, images):
    """Several browser sessions write at once: every judgment lands in its own profile."""
    store.create_profile("Alice")
    store.create_profile("Bob")
    start = threading.Barrier(3)
    failures = []

    def judge(profile, kind, sha):
        try:
            start.wait()
            for _ in range(60):
                store.record_judgment(profile, kind, sha)
                store.counts(profile)
        except Exception as error:  # reported below: a thread's exception is otherwise lost
            failures.append(error)

    def read():
        start.wait()
        for _ in range(60):
            store.judgments("Alice")

    threads = [threading.Thread(target=judge, args=("Alice", "like", images[0])),
               threading.Thread(target=judge, args=("Bob", "dislike", images[1])),
               threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert {(j.kind, j.image_a) for j in store.judgments("Alice")} == {("like", images[0])}
    assert {(j.kind, j.image_a) for j in store.judgments("Bob")} == {("dislike", images[1])}
    assert store.counts("Alice")["like"] == 60 and store.counts("Bob")["dislike"] == 60


WRITER = """
import sys
from prefstudio.store.history import HistoryStore
store = HistoryStore(sys.argv[1])
a, b = sys.argv[2], sys.argv[3]
while True:
    judgment = store.record_judgment("Writer", "pair", a, b)
    print(judgment.id, flush=True)
"""


def test_acknowledged_judgments_survive_a_killed_writer(tmp_path):
    data = tmp_path / "data"
    with HistoryStore(data) as store:
        store.create_profile("Writer")
        a, b = (store.add_image(generated(s)).sha256 for s in (1, 2))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data), a, b], stdout=subprocess.PIPE, text=True,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    printed = []
    try:
        for line in writer.stdout:
            printed.append(int(line))
            if len(printed) == 150:
                writer.send_signal(signal.SIGKILL)  # mid-run: it is already writing the next
                break
    finally:
        writer.kill()
        printed += [int(line) for line in writer.stdout]
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert len(printed) >= 150
    with HistoryStore(data) as store:
        stored = {j.id for j in store.judgments("Writer")}
        assert set(printed) <= stored
    with sqlite3.connect(data / "history.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- the database file --------------------------------------------------------------


def test_history_survives_reopening(tmp_path):
    with HistoryStore(tmp_path) as store:
        store.create_profile("Alice")
        sha = store.add_image(generated(1)).sha256
        judgment = store.record_judgment("Alice", "like", sha)
    with HistoryStore(tmp_path) as store:
        assert store.judgments("Alice") == [judgment]


def test_database_from_a_newer_prefstudio_is_refused(tmp_path):
    HistoryStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        db.execute("PRAGMA user_version=2")
    with pytest.raises(InvalidInput, match="newer PrefStudio .*version 2; this one understands 1"):
        HistoryStore(tmp_path)


def test_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "history.sqlite3").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(InvalidInput, match="not a PrefStudio history"):
        HistoryStore(tmp_path)


# --- feature cache and fitted models ------------------------------------------------


def test_features_round_trip_exactly(store, images):
    vectors = {sha: torch.randn(16, dtype=torch.float64) for sha in images[:2]}
    store.put_features("efficientnet-lite0", vectors)
    found = store.get_features("efficientnet-lite0", images)
    assert set(found) == set(images[:2])
    for sha, vector in vectors.items():
        assert found[sha].dtype == torch.float32
        assert torch.equal(found[sha], vector.float())
    assert store.get_features("clip-vit-l-14", images) == {}
    with pytest.raises(NotFound, match="no image"):
        store.put_features("efficientnet-lite0", {"e" * 64: torch.zeros(16)})
    with pytest.raises(InvalidInput, match="one vector"):
        store.put_features("efficientnet-lite0", {images[2]: torch.zeros(2, 8)})
    assert set(store.get_features("efficientnet-lite0", images)) == set(images[:2])


def test_models_round_trip_exactly(store):
    store.create_profile("Alice")
    assert store.load_model("Alice", "user_embedding") is None
    tensors = {"embedding": torch.randn(8), "head.weight": torch.randn(3, 8).bfloat16()}
    store.save_model("Alice", "user_embedding", tensors, {"dim": 8, "encoder": "lite0"})
    loaded, config = store.load_model("Alice", "user_embedding")
    assert config == {"dim": 8, "encoder": "lite0"}
    assert loaded.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor)
    store.save_model("Alice", "user_embedding", {"embedding": torch.zeros(8)}, {"dim": 8})
    assert torch.equal(store.load_model("Alice", "user_embedding")[0]["embedding"], torch.zeros(8))
    assert store.model_names("Alice") == ["user_embedding"]
    with pytest.raises(InvalidInput, match="model name"):
        store.save_model("Alice", "a.b", tensors, {})
