"""Pair data set files from elsewhere (issue #19): only regular files inside the data set's
folder are read, and every refusal is one line naming the file and line."""
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.preference.pair_data import Judgment, PairDataSet, read_groups_1v3, read_judgments
from pair_data_fixture import write_pair_data


def judgment(liked, disliked, user="u1", prompt="a red square"):
    return {"user_id": user, "prompt": prompt, "liked": liked, "disliked": disliked}


@pytest.fixture
def root(tmp_path):
    """<root>/images/{a,b}.png and <root>/pairs/, as the documented layout has them."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "pairs").mkdir()
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        Image.new("RGB", (8, 8), colour).save(root / "images" / f"{name}.png")
    return root


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def refused(call, message, error=InvalidInput) -> str:
    with pytest.raises(error, match=message) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text and len(text) <= 400, text[:400]
    return text


def test_images_in_the_data_set_are_read(root):
    pairs = write_lines(root / "pairs" / "train.jsonl", [judgment("../images/a.png", "../images/b.png")])
    [read] = read_judgments(pairs)
    assert read.liked == (root / "images" / "a.png").resolve()


def test_a_fifo_as_an_image_is_refused_at_once_naming_file_and_line(root):
    """It used to be opened later (by the image reader), which blocked forever."""
    os.mkfifo(root / "images" / "pipe.png")
    pairs = write_lines(root / "pairs" / "train.jsonl", [judgment("../images/a.png", "../images/b.png"),
                                                         judgment("../images/pipe.png", "../images/b.png")])
    outcome = []

    def read():
        try:
            from prefstudio.store.image_files import load_untrusted_image
            for j in read_judgments(pairs):
                load_untrusted_image(j.liked)  # what Studio.import_pairs does next
        except InvalidInput as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(root / "images" / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("a FIFO in the data set blocked the reader")
    assert outcome == [f"{pairs}:2: liked image '../images/pipe.png' is not a regular file"]


def test_a_fifo_as_a_pair_file_is_refused(root):
    os.mkfifo(root / "pairs" / "train.jsonl")
    refused(lambda: read_judgments(root / "pairs" / "train.jsonl"), "train.jsonl is not a regular file")


@pytest.mark.parametrize("liked, message", [
    ("../../outside.png", "liked image '../../outside.png' lies outside the data set's folder"),
    ("../images/../../outside.png", "lies outside the data set's folder"),
    ("../images/link.png", "liked image '../images/link.png' lies outside the data set's folder"),
    ("/etc/passwd", "liked must be a path relative to the file, got '/etc/passwd'"),
    ("../images/missing.png", "liked image '../images/missing.png' does not exist"),
    ("../images", "liked image '../images' is not a regular file"),
    ("../images/a\0.png", "liked image .* is not a usable path"),
], ids=["dotdot", "dotdot-inside", "symlink-out", "absolute", "missing", "folder", "nul"])
def test_images_outside_the_data_set_or_not_files_are_refused(root, liked, message):
    outside = root.parent / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    (root / "images" / "link.png").symlink_to(outside)
    pairs = write_lines(root / "pairs" / "train.jsonl",
                        [judgment("../images/a.png", "../images/b.png"), judgment(liked, "../images/b.png")])
    text = refused(lambda: read_judgments(pairs), message)
    assert text.startswith(f"{pairs}:2: ")


def test_a_symlink_inside_the_data_set_is_fine(root):
    (root / "images" / "alias.png").symlink_to(root / "images" / "a.png")
    pairs = write_lines(root / "pairs" / "train.jsonl", [judgment("../images/alias.png", "../images/b.png")])
    assert read_judgments(pairs)[0].liked == (root / "images" / "a.png").resolve()


def test_a_pair_file_outside_the_layout_keeps_its_images_beside_it(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "y.png")
    (tmp_path / "sub").mkdir()
    pairs = write_lines(tmp_path / "sub" / "mine.jsonl", [judgment("../x.png", "../y.png")])
    refused(lambda: read_judgments(pairs), "lies outside the data set's folder")
    assert len(read_judgments(pairs, root=tmp_path)) == 1


@pytest.mark.parametrize("line, message", [
    (b"[" * 10_000 + b"]" * 10_000, "not JSON \\(nested too deeply\\)"),
    (b'{"user_id": ' + b"9" * 5000 + b"}", "not JSON"),
    (json.dumps(judgment("../images/a.png", "../images/b.png", user="u" * 300)).encode(),
     "user_id is over 256 characters"),
    (json.dumps(judgment("../images/a.png", "../images/b.png", prompt="p" * 5000)).encode(),
     "prompt is 5,000 characters"),
    (b"x" * 70_000, "line is over 65,536 bytes"),
    (b"\xff\xfe{}", "not UTF-8 text"),
], ids=["deep", "huge-number", "long-user", "long-prompt", "long-line", "not-utf8"])
def test_hostile_lines_get_a_one_line_error_with_file_and_line(root, line, message):
    pairs = root / "pairs" / "train.jsonl"
    good = json.dumps(judgment("../images/a.png", "../images/b.png")).encode()
    pairs.write_bytes(good + b"\n" + line + b"\n")
    text = refused(lambda: read_judgments(pairs), message)
    assert text.startswith(f"{pairs}:2: ")


def test_a_pair_file_saved_with_a_byte_order_mark_reads_as_without(root):
    """Found by a review: a file saved by Windows Notepad (UTF-8 with a byte-order mark) was refused
    as "not JSON ('Unexpected UTF-8 BOM')". The mark opens the file only: one later is refused."""
    pairs = root / "pairs" / "train.jsonl"
    line = json.dumps(judgment("../images/a.png", "../images/b.png")).encode()
    pairs.write_bytes(b"\xef\xbb\xbf" + line + b"\n" + line + b"\n")
    assert len(read_judgments(pairs)) == 2
    pairs.write_bytes(line + b"\n\xef\xbb\xbf" + line + b"\n")
    assert refused(lambda: read_judgments(pairs), "not JSON").startswith(f"{pairs}:2: ")


def test_the_data_set_reader_applies_the_same_rules(tmp_path):
    root = write_pair_data(tmp_path / "data")
    data = PairDataSet.read(root)
    assert data.image_paths() and all(p.is_relative_to(root.resolve()) for p in data.image_paths())
    index = root / "images.jsonl"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:3] + [json.dumps({"path": "../outside.png"})] + lines[3:]) + "\n")
    refused(data.image_paths, f"{index}:4: path '../outside.png' lies outside the data set's folder")
    (root / "pairs" / "users.json").unlink()
    os.mkfifo(root / "pairs" / "users.json")
    refused(lambda: PairDataSet.read(root), "users.json is not a regular file")
    (root / "pairs" / "users.json").unlink()
    refused(lambda: PairDataSet.read(root), "users.json is missing", NotFound)
    (root / "pairs" / "users.json").write_text('{"train": [1], "val": [], "test_seen": [], "test_unseen": []}')
    refused(lambda: PairDataSet.read(root), "'train' must be a list of user ids")


def test_a_fifo_as_the_feature_cache_is_refused(tmp_path):
    """It is not a file, so it used to be written to: safetensors blocked on the FIFO."""
    from pair_data_fixture import MeanColourEncoder
    from prefstudio.preference.pair_data import image_features

    root = write_pair_data(tmp_path / "data")
    (root / "features").mkdir()
    os.mkfifo(root / "features" / f"{MeanColourEncoder.name}.safetensors")
    refused(lambda: image_features(PairDataSet.read(root), MeanColourEncoder()), "is not a regular file")


def test_features_are_encoded_once_cached_beside_the_data_and_checked_when_read(tmp_path):
    from pair_data_fixture import CharacterCountText, MeanColourEncoder
    from prefstudio.preference.pair_data import image_features, prompt_features

    class Counted(CharacterCountText):
        calls: list = []

        def encode(self, prompts):
            self.calls.append(list(prompts))
            return super().encode(prompts)

    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=4)
    data = PairDataSet.read(root)
    prompts = data.prompts()
    assert len(prompts) == len(set(prompts)) and set(prompts) <= {"a flat colour", "a coloured square", "paint swatch"}
    assert prompts[0] == data.train[0].prompt  # the training prompts first, in file order
    text = Counted()
    rows, features = prompt_features(data, text)
    assert list(rows) == prompts and rows == {p: i for i, p in enumerate(prompts)}
    assert torch.equal(features, CharacterCountText().encode(prompts))
    assert text.calls == [prompts]
    assert prompt_features(data, text)[0] == rows and len(text.calls) == 1  # read back, not encoded again
    # A prompt new to the data set is encoded and added after the known ones.
    data.train.append(Judgment("u9", "a new prompt", data.train[0].liked, data.train[0].disliked))
    rows, features = prompt_features(data, text)
    assert text.calls[1] == ["a new prompt"] and rows["a new prompt"] == len(prompts)
    assert torch.equal(features[-1], CharacterCountText().encode(["a new prompt"])[0])
    # Images: encoded once, one row per line of images.jsonl.
    image_rows, image_feats = image_features(data, MeanColourEncoder(), batch_size=7)
    paths = data.image_paths()
    assert image_rows == {p: i for i, p in enumerate(paths)} and image_feats.shape == (len(paths), 6)
    assert torch.equal(image_features(data, MeanColourEncoder())[1], image_feats)
    cache = root / "features" / f"{MeanColourEncoder.name}.safetensors"
    save_file({"features": image_feats[:-1].contiguous()}, str(cache))
    refused(lambda: image_features(data, MeanColourEncoder()),
            f"has {len(paths) - 1} rows but images.jsonl {len(paths)} lines: delete it")
    text_cache = root / "features" / f"{CharacterCountText.name}.safetensors"
    save_file({"features": features.contiguous()}, str(text_cache), metadata={"encoder": "x"})
    refused(lambda: prompt_features(data, text), "has no prompt list: it is not a text-feature file")
    save_file({"features": features[:-1].contiguous()}, str(text_cache), metadata={"prompts": json.dumps(list(rows))})
    refused(lambda: prompt_features(data, text), "is inconsistent: delete it")


def test_an_empty_data_set_has_no_features_of_the_right_width_and_caches_name_their_encoder(tmp_path):
    from safetensors import safe_open

    from pair_data_fixture import CharacterCountText, MeanColourEncoder
    from prefstudio.preference.pair_data import image_features, prompt_features

    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=2)
    data = PairDataSet.read(root)
    empty = PairDataSet(tmp_path / "empty", data.users, [], {}, {}, {})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "images.jsonl").write_text("")
    rows, features = image_features(empty, MeanColourEncoder())
    assert rows == {} and features.shape == (0, 6)
    rows, features = prompt_features(empty, CharacterCountText())
    assert rows == {} and features.shape == (0, 16)
    # Many prompts at once are encoded in chunks, each exactly once.
    for i in range(300):
        data.train.append(Judgment("u9", f"prompt number {i}", data.train[0].liked, data.train[0].disliked))
    rows, features = prompt_features(data, CharacterCountText())
    assert list(rows) == data.prompts() and torch.equal(features, CharacterCountText().encode(data.prompts()))
    image_features(data, MeanColourEncoder())
    for encoder, extra in ((MeanColourEncoder, {}), (CharacterCountText, {"prompts": json.dumps(list(rows))})):
        with safe_open(str(root / "features" / f"{encoder.name}.safetensors"), framework="pt") as f:
            assert f.metadata() == {"encoder": encoder.name, **extra}


def test_one_versus_three_groups_are_read_whole_and_checked(tmp_path, root):
    for name in ("c", "d", "e"):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{name}.png")
    img = "../images/{}.png".format
    rows = [judgment(img("a"), img(x), user="u1", prompt=p) for x, p in (("b", "p1"), ("c", "p2"), ("d", "p3"))]
    rows += [judgment(img("e"), img(x), user="u2") for x in ("a", "b", "c")]
    groups_file = write_lines(root / "pairs" / "val_1v3.jsonl", rows)
    first, second = read_groups_1v3(groups_file)
    images = (root / "images").resolve()
    assert (first.user_id, first.prompt, first.liked) == ("u1", "p1", images / "a.png")  # the first line's prompt
    assert first.disliked == (images / "b.png", images / "c.png", images / "d.png")
    assert (second.user_id, second.liked, second.disliked[0]) == ("u2", images / "e.png", images / "a.png")
    text = refused(lambda: read_groups_1v3(write_lines(root / "pairs" / "four.jsonl", rows[:4])), "not a multiple")
    assert text == f"{root / 'pairs' / 'four.jsonl'}: 4 lines is not a multiple of 3 (1 liked vs 3 disliked)"
    mixed = rows[:3] + rows[3:5] + [judgment(img("a"), img("d"), user="u2")]
    text = refused(lambda: read_groups_1v3(write_lines(root / "pairs" / "mixed.jsonl", mixed)), "do not share")
    assert text == f"{root / 'pairs' / 'mixed.jsonl'}: lines 4-6 do not share one user and one liked image"
    # Another root: images are looked for inside it, not beside the pairs folder.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "x.png")
    far = write_lines(root / "pairs" / "far.jsonl", [judgment(img("a"), "../../elsewhere/x.png")] * 3)
    refused(lambda: read_groups_1v3(far), "lies outside the data set's folder")
    assert read_groups_1v3(far, root=tmp_path)[0].disliked[0] == (outside / "x.png").resolve()


def test_the_users_file_is_bounded_utf8_and_an_object(monkeypatch, tmp_path):
    from prefstudio.preference import pair_data

    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=2)
    users = root / "pairs" / "users.json"
    text = users.read_text()
    monkeypatch.setattr(pair_data, "MAX_USERS_FILE_BYTES", len(text.encode()))
    assert PairDataSet.read(root).users["train"] == ["u0", "u1"]  # exactly the limit: read
    users.write_text(text + " ")
    assert refused(lambda: PairDataSet.read(root), "is over") == f"{users} is over 0 MB"
    monkeypatch.undo()
    with open(users, "wb") as file:  # sparse: no disk used
        file.truncate(64 * 2**20 + 1)
    assert refused(lambda: PairDataSet.read(root), "is over") == f"{users} is over 64 MB"
    users.write_bytes(b'{"train": "\xff"}')
    assert refused(lambda: PairDataSet.read(root), "UTF-8") == f"{users}: not UTF-8 text"
    users.write_text("[1, 2]")
    assert refused(lambda: PairDataSet.read(root), "JSON object") == f"{users}: expected a JSON object of user id lists"
    users.write_text("{nope")
    assert refused(lambda: PairDataSet.read(root), "not JSON") == (
        f"{users}: not JSON ('Expecting property name enclosed in double quotes')")  # what the parser said


def test_one_versus_three_files_are_optional_and_image_lines_need_a_path(tmp_path):
    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=2)
    data = PairDataSet.read(root)
    assert len(data.targets_1v3["val"]) == 8 and len(data.targets_1v3["test"]) == 12  # 2 groups per user
    (root / "pairs" / "val_1v3.jsonl").unlink()
    assert PairDataSet.read(root).targets_1v3["val"] == []
    index = root / "images.jsonl"
    for line in ('{"path": ""}', '{"path": 3}', '["images/000.png"]', '{"file": "images/000.png"}'):
        index.write_text(line + "\n")
        assert refused(data.image_paths, "needs a relative") == f'{index}:1: needs a relative "path"'


def test_each_refusal_of_a_pair_file_says_exactly_what_is_wrong(root):
    from prefstudio.errors import echo

    pairs = root / "pairs" / "train.jsonl"
    good = judgment("../images/a.png", "../images/b.png")

    def message(*rows) -> str:
        write_lines(pairs, rows)
        with pytest.raises(InvalidInput) as caught:
            read_judgments(pairs)
        return str(caught.value)

    assert message(good, {**good, "extra": "x"}) == (
        f"{pairs}:2: a judgment has exactly the keys user_id, prompt, liked, disliked")
    assert message(["user_id", "prompt", "liked", "disliked"]) == (
        f"{pairs}:1: a judgment has exactly the keys user_id, prompt, liked, disliked")
    for field, value in (("user_id", 5), ("prompt", ""), ("liked", ["../images/a.png"])):
        assert message({**good, field: value}) == f"{pairs}:1: every field must be a non-empty string"
    assert message(judgment("../images/a.png", "../images/a.png")) == (
        f"{pairs}:1: liked and disliked are the same image")
    assert message(judgment("../images/a.png/x.png", "../images/b.png")) == (
        f"{pairs}:1: liked image '../images/a.png/x.png' cannot be read (Not a directory)")
    huge = '{"user_id": ' + "9" * 5000 + "}"
    try:
        json.loads(huge)
    except ValueError as error:  # Python's own words, cut to 80 characters
        said = echo(str(error), 80)
    assert message(good, huge) == f"{pairs}:2: not JSON ({said})"
    # A user id of 256 characters and a line of exactly 65,536 bytes are read.
    longest = {**good, "user_id": "u" * 256}
    line = json.dumps(longest)
    pairs.write_text(json.dumps(good) + "\n" + line + " " * (65_535 - len(line)) + "\n")
    assert [j.user_id for j in read_judgments(pairs)] == ["u1", "u" * 256]
    # The file itself: missing, or not openable.
    with pytest.raises(NotFound) as missing:
        read_judgments(root / "pairs" / "none.jsonl")
    assert str(missing.value) == f"{root / 'pairs' / 'none.jsonl'} does not exist"
    inside_a_file = root / "images" / "a.png" / "pairs.jsonl"
    with pytest.raises(InvalidInput) as unreadable:
        read_judgments(inside_a_file, root)
    assert str(unreadable.value) == f"cannot read {echo(str(inside_a_file))}: Not a directory"


def test_files_far_over_their_limits_are_refused_without_being_read_into_memory(tmp_path):
    # A hostile data set may hold a users.json or a pair line of gigabytes (sparse here: no disk
    # used); the reader reads one byte past the limit and stops, so memory stays bounded.
    import tracemalloc

    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=2)
    users = root / "pairs" / "users.json"
    pairs = root / "pairs" / "train.jsonl"
    for path, read in ((users, lambda: PairDataSet.read(root)), (pairs, lambda: read_judgments(pairs))):
        original = path.read_bytes()
        with open(path, "wb") as file:
            file.truncate(2**30)
        tracemalloc.start()
        try:
            refused(read, "over")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 256 * 2**20, f"{path.name}: {peak:,} bytes allocated to refuse it"
        path.write_bytes(original)


def test_evaluate_names_the_image_that_is_not_one(root):
    """Found by a review: `evaluate` on a file whose image was text saved as .png said "not an image: …"
    without saying which file; import-pairs names it."""
    from types import SimpleNamespace

    from prefstudio.eval.pair_file import evaluate_pair_file

    fake = root / "images" / "fake.png"
    fake.write_text("just text")
    pairs = write_lines(root / "pairs" / "train.jsonl", [judgment("../images/fake.png", "../images/b.png")])
    encoder = SimpleNamespace(encode_images=lambda images: pytest.fail("an image that is not one was encoded"))
    assert refused(lambda: evaluate_pair_file(pairs, 1, encoder, None), "not an image").startswith(f"{fake.resolve()}: ")
