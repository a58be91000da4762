import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from prefstudio import validation
from prefstudio.errors import InvalidInput, NotFound, echo
from prefstudio.generators.base import GeneratedImage
from prefstudio.preference.user_embedding import UserEmbeddingModel
from prefstudio.store.history import HistoryStore
from prefstudio.store.profile_file import content_digest, export_profile, import_profile
from test_image_files import bomb_png, encoded, noise_image
from tests.accelerator_double import on_accelerator


def generated(seed: int) -> GeneratedImage:
    return GeneratedImage(noise_image(32, 32, seed), f"a kite, take {seed}", seed, "embedded",
                          {"resolution": 32, "guidance": 0.0})


# The store keeps any model's tensors (restore_profile below); an import checks them.
MODEL = {"embedding": torch.randn(8), "head.weight": torch.randn(3, 8).bfloat16(),
         "count": torch.tensor(5, dtype=torch.int64)}
ENCODER, DIM, TASTE = "test-mean-colour", 6, 4  # pair_data_fixture.MeanColourEncoder


def user_embedding_state(references=(), seed=0):
    """A user-embedding model's tensors and config as a studio fit stores them."""
    g = torch.Generator().manual_seed(seed)
    model = UserEmbeddingModel(ENCODER, torch.randn(DIM, generator=g), torch.rand(DIM, generator=g) + 0.5,
                               torch.randn(DIM, TASTE, generator=g), torch.randn(TASTE, generator=g),
                               torch.randn(TASTE, generator=g), 0.25, -0.5)
    tensors, config = model.state()
    config.update(fitted_at=1_790_000_000.5, mode="free", n_pairs=2, loo_accuracy=0.5, loo_pairs=2,
                  reference_images=list(references))
    return tensors, config


@pytest.fixture
def store(tmp_path):
    with HistoryStore(tmp_path / "home") as store:
        a, b, c, d = (store.add_image(generated(seed)).sha256 for seed in range(4))
        store.create_profile("Alice")
        store.record_judgment("Alice", "like", a)
        store.record_judgment("Alice", "dislike", b)
        store.record_judgment("Alice", "pair", c, a)
        store.record_judgment("Alice", "tie", a, b)
        store.record_judgment("Alice", "skip", c)
        store.save_model("Alice", "user-embedding", *user_embedding_state([a, b, c]))
        store.create_profile("Bob")
        store.record_judgment("Bob", "like", d)  # not Alice's: must stay out of her file
        yield store


@pytest.fixture
def exported(store, tmp_path):
    return export_profile(store, "Alice", tmp_path / "alice.prefstudio")


def history(store, name):
    """What a profile is, independent of ids and of where the store keeps files."""
    judgments = [(j.kind, j.image_a, j.image_b, j.created) for j in store.judgments(name)]
    shas = {sha for j in judgments for sha in j[1:3] if sha}
    images = {}
    for sha in shas:
        r = store.image_record(sha)
        images[sha] = (r.prompt, r.seed, r.generator, r.params, r.width, r.height, r.created,
                       r.path.read_bytes())
    models = {name_: store.load_model(name, name_) for name_ in store.model_names(name)}
    return judgments, images, models


def assert_same_models(left, right):
    assert left.keys() == right.keys()
    for name in left:
        (tensors_l, config_l), (tensors_r, config_r) = left[name], right[name]
        # An import stamps its own time on a fit (the Profile tab says its figures are the file's).
        config_l, config_r = ({k: v for k, v in c.items() if k != "imported_at"} for c in (config_l, config_r))
        assert config_l == config_r and tensors_l.keys() == tensors_r.keys()
        for key in tensors_l:
            assert tensors_l[key].dtype == tensors_r[key].dtype
            assert torch.equal(tensors_l[key], tensors_r[key])


def snapshot(store):
    """Everything an import could change: rows and files."""
    rows = {table: store._query(f"SELECT * FROM {table}")
            for table in ("profiles", "images", "judgments", "features", "models", "presets")}
    files = sorted(p.relative_to(store.data_dir).as_posix()
                   for p in store.images_dir.rglob("*") if p.is_file())
    return rows, files


def test_round_trip_into_a_new_store_is_exact(store, exported, tmp_path):
    with HistoryStore(tmp_path / "elsewhere") as other:
        profile = import_profile(other, exported)
        assert profile.name == "Alice"
        judgments, images, models = history(other, "Alice")
        expected_judgments, expected_images, expected_models = history(store, "Alice")
        assert judgments == expected_judgments
        assert images == expected_images  # metadata and the very PNG bytes
        assert_same_models(models, expected_models)
        assert len(other._query("SELECT * FROM images")) == 3  # Bob's image stayed home
        assert [p.name for p in other.list_profiles()] == ["Alice"]


def test_import_under_a_new_name_shares_the_images(store, exported):
    files_before = snapshot(store)[1]
    import_profile(store, exported, new_name="Alice at work")
    assert history(store, "Alice at work")[0] == history(store, "Alice")[0]
    assert snapshot(store)[1] == files_before  # content addressing: no copies


def test_existing_name_is_refused_and_nothing_changes(store, exported):
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="'Alice' already exists; import it under another"):
        import_profile(store, exported)
    assert snapshot(store) == before


# --- hostile or damaged files -------------------------------------------------------


def rewrite(source, target, edit_metadata=None, edit_tensors=None, redigest=True):
    """Copy a profile file with edits, optionally re-signing the digest as an attacker could."""
    with safe_open(source, framework="pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    content = json.loads(metadata["profile"])
    if edit_tensors:
        edit_tensors(tensors, content)
    if edit_metadata:
        edit_metadata(metadata, content)
    metadata["profile"] = json.dumps(content)
    if redigest:
        metadata["digest"] = content_digest(metadata["profile"], tensors)
    save_file(tensors, target, metadata=metadata)
    return target


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def swap_image(new_bytes, name_by_hash):
    """Replace the first image's bytes, keeping or renaming its sha everywhere."""
    def edit(tensors, content):
        old = content["images"][0]["sha256"]
        new = hashlib.sha256(new_bytes).hexdigest() if name_by_hash else old
        del tensors[f"image.{old}"]
        tensors[f"image.{new}"] = as_tensor(new_bytes)
        text = json.dumps(content).replace(old, new)
        content.clear()
        content.update(json.loads(text))
    return edit


def set_key(key, value):
    def edit(metadata, content):
        metadata[key] = value
    return edit


def edit_content(change):
    def edit(metadata, content):
        change(content)
    return edit


@pytest.mark.parametrize("edit, redigest, message", [
    (dict(edit_metadata=set_key("version", "7")), True,
     r"profile file version 7 is newer than this PrefStudio understands \(2\)"),
    (dict(edit_metadata=set_key("format", "comfyui-workflow")), True,
     "not a PrefStudio profile file"),
    (dict(edit_metadata=edit_content(lambda c: c["judgments"][0].update(kind="dislike"))), False,
     "does not match its digest"),
    (dict(edit_tensors=lambda t, c: t["model.user-embedding.like_vector"].mul_(2)), False,
     "does not match its digest"),
    (dict(edit_tensors=swap_image(encoded(noise_image(32, 32, 99)), name_by_hash=False)), True,
     "does not match its hash"),
    (dict(edit_tensors=swap_image(b"#!/bin/sh\nrm -rf ~\n", name_by_hash=True)), True,
     "in the profile file is not a PNG"),
    (dict(edit_tensors=swap_image(encoded(noise_image(), "JPEG"), name_by_hash=True)), True,
     "is not a PNG"),
    (dict(edit_tensors=swap_image(bomb_png(12000, 9000), name_by_hash=True)), True,
     "12000×9000 = 108 MP; the limit is 40 MP"),
    (dict(edit_metadata=edit_content(lambda c: c["judgments"][0].update(image_a="a" * 64))), True,
     "which is not in it"),
    (dict(edit_metadata=edit_content(lambda c: c["judgments"][0].update(kind="adore"))), True,
     "bad judgment \\(1 of 5\\): unknown kind 'adore'"),
    # A far-future date would pin a judgment at the top of the history and among the latest pairs.
    (dict(edit_metadata=edit_content(lambda c: c["judgments"][0].update(created="9999-12-31T00:00:00+00:00"))),
     True, "a judgment's created '9999-12-31T00:00:00\\+00:00' lies in the future"),
    (dict(edit_metadata=edit_content(lambda c: c["presets"].append({"name": "x", "weights": {"user": 1.0}}))),
     True, "a preset must have exactly the keys created, name, weights \\(missing 'created'\\)"),
], ids=["future-version", "wrong-format", "edited-judgment", "edited-model", "image-not-its-hash",
        "image-not-an-image", "image-jpeg", "image-bomb", "dangling-judgment", "bad-kind", "judged-in-the-future",
        "preset-missing-key"])
def test_suspect_profile_files_are_refused_without_changing_the_store(
        store, exported, tmp_path, edit, redigest, message):
    bad = rewrite(exported, tmp_path / "bad.prefstudio", redigest=redigest, **edit)
    with HistoryStore(tmp_path / "fresh") as fresh:
        for target in (store, fresh):
            before = snapshot(target)
            with pytest.raises(InvalidInput, match=message):
                import_profile(target, bad, new_name="Carol")
            assert snapshot(target) == before


def test_profile_name_in_the_file_is_validated(store, exported, tmp_path):
    bad = rewrite(exported, tmp_path / "bad.prefstudio",
                  edit_metadata=edit_content(lambda c: c.update(name="../../etc")))
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="profile name '../../etc' contains './'"):
        import_profile(store, bad)
    assert snapshot(store) == before


def test_restore_is_all_or_nothing(store):
    """A failure half-way through the rows (here a judgment of an unknown image, which
    import_profile would have caught earlier) rolls back the profile and its judgments."""
    before = snapshot(store)
    good = store.judgments("Alice")[0]
    rows = [(good.kind, good.image_a, None, good.created), ("like", "f" * 64, None, good.created)]
    with pytest.raises(NotFound, match="no image 'f+'"):
        store.restore_profile("Carol", [], rows, [("m", MODEL, {})])
    assert snapshot(store) == before


def test_files_that_are_not_profile_files_are_refused(store, tmp_path):
    before = snapshot(store)
    text = tmp_path / "notes.txt"
    text.write_text("not a profile\n" * 20)
    with pytest.raises(InvalidInput, match="not a PrefStudio profile file: it is text"):
        import_profile(store, text)
    plain = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(InvalidInput, match="not a PrefStudio profile file"):
        import_profile(store, plain)
    assert snapshot(store) == before


def test_oversized_file_is_refused_before_reading(store, tmp_path):
    huge = tmp_path / "huge.prefstudio"
    with open(huge, "wb") as file:  # sparse: takes no disk space, and is never read
        file.truncate(validation.MAX_PROFILE_FILE_BYTES + 1)
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=r"profile file is 1,073,741,825 bytes; the limit is 1,073,741,824 bytes \(1,024 MB\)"):
        import_profile(store, huge)
    assert snapshot(store) == before


def test_exported_file_holds_the_pngs_and_no_foreign_data(store, exported):
    with safe_open(exported, framework="pt") as file:
        metadata = file.metadata()
        keys = set(file.keys())
    assert metadata["format"] == "prefstudio-profile" and metadata["version"] == "2"
    content = json.loads(metadata["profile"])
    shas = {image["sha256"] for image in content["images"]}
    assert keys == {f"image.{sha}" for sha in shas} | {
        f"model.user-embedding.{key}" for key in user_embedding_state()[0]}
    assert [j["kind"] for j in content["judgments"]] == ["like", "dislike", "pair", "tie", "skip"]
    for image in content["images"]:
        png = store.image_record(image["sha256"]).path.read_bytes()
        with safe_open(exported, framework="pt") as file:
            assert file.get_tensor(f"image.{image['sha256']}").numpy().tobytes() == png
    with Image.open(store.image_record(next(iter(shas))).path) as first:
        assert np.asarray(first).shape == (32, 32, 3)


def test_import_under_a_look_alike_name_is_refused(store, exported):
    with pytest.raises(InvalidInput, match="'Ａｌｉｃｅ' is too like the existing 'Alice'.*import it under"):
        import_profile(store, exported, new_name="Ａｌｉｃｅ")
    assert [p.name for p in store.list_profiles()] == ["Alice", "Bob"]


def test_serialized_tensors_are_what_safetensors_writes_with_or_without_metadata(tmp_path):
    import numpy as np
    import safetensors.numpy
    from safetensors import safe_open

    from prefstudio.store.profile_file import RawTensor, raw_tensors, serialize

    tensors = {"b": RawTensor("U8", (3,), b"abc"), "a": RawTensor("F32", (2, 1), bytes(8))}
    arrays = {"b": np.frombuffer(b"abc", dtype=np.uint8), "a": np.zeros((2, 1), dtype=np.float32)}
    for metadata in (None, {"format": "x"}):
        data = serialize(tensors, metadata)
        # Byte for byte what the safetensors library writes (the same header, padded to 8 bytes).
        assert data == safetensors.numpy.save(arrays, metadata=metadata)
        assert raw_tensors(data) == tensors
        (tmp_path / "t.safetensors").write_bytes(data)
        with safe_open(tmp_path / "t.safetensors", framework="numpy") as file:
            assert file.metadata() == metadata and sorted(file.keys()) == ["a", "b"]


def test_a_tensor_on_a_gpu_has_the_digest_of_its_bytes(tmp_path):
    """A tool that forges or re-signs a profile file may hold its tensors on a GPU."""
    from prefstudio.store.profile_file import RawTensor

    tensor = torch.randn(3, 2).bfloat16()
    raw = RawTensor("BF16", (3, 2), tensor.view(torch.int16).numpy().tobytes())
    assert content_digest("{}", {"w": on_accelerator(tensor)}) == content_digest("{}", {"w": raw})


def test_export_refuses_a_profile_whose_image_file_is_missing_or_changed(store, tmp_path):
    record = store.image_record(store.judgments("Alice")[0].image_a)
    target = tmp_path / "alice.prefstudio"
    original = record.path.read_bytes()
    record.path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(InvalidInput) as caught:
        export_profile(store, "Alice", target)
    assert str(caught.value) == f"image file {record.path} is damaged: its bytes changed on disk"
    record.path.unlink()
    with pytest.raises(NotFound) as caught:
        export_profile(store, "Alice", target)
    assert str(caught.value) == f"image file {record.path} is missing: No such file or directory"
    assert not target.exists()


NOT_SAFETENSORS = "not a PrefStudio profile file (not a safetensors file: "


def _raw_file(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, message", [
    (b"\x00" * 7, "shorter than its header)"),
    (b"\x00" * 8, "its header is not JSON)"),  # a header of 0 bytes: 8 bytes are long enough to say so
    ((43).to_bytes(8, "little") + b"{}" + b" " * 40, "a header of 43 bytes in a file of 50)"),  # 1 past the end
    ((10).to_bytes(8, "little") + b'{"a": NaN}', "its header is not JSON)"),  # strict JSON only
], ids=["7-bytes", "8-bytes", "header-past-the-end", "nan-in-header"])
def test_a_file_whose_safetensors_header_cannot_be_read_gets_one_line_saying_why(store, tmp_path, data, message):
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, _raw_file(tmp_path / "odd.prefstudio", data))
    assert str(caught.value) == NOT_SAFETENSORS + message
    assert snapshot(store) == before


@pytest.mark.parametrize("data, kind", [
    (b"PK\x03\x04" + b"\x00" * 200, "a ZIP archive"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "a PNG image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "a JPEG image"),
    (b"%PDF-1.7\n" + b"\x00" * 200, "a PDF document"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 200, "a gzip file"),
    (b'{"user_id": "ana", "liked": "a.png"}\n' * 4, "text"),
    (bytes(range(256)) * 4, None),
], ids=["zip", "png", "jpeg", "pdf", "gzip", "text", "unknown"])
def test_a_file_of_another_kind_is_named_for_what_it_is_not_by_its_header_bytes(store, tmp_path, data, kind):
    """Found by a hostile review: a ZIP chosen by mistake was refused with "a header of
    85,966,670,672 bytes in a file of 111", which tells a person nothing."""
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, _raw_file(tmp_path / "other.prefstudio", data))
    text = str(caught.value)
    assert text.startswith("not a PrefStudio profile file: ") and "bytes" not in text, text
    assert (f"it is {kind}" in text) if kind else ("it is " not in text), text
    assert "Export profile" in text
    assert snapshot(store) == before


def test_a_profile_with_nothing_judged_travels_as_a_header_alone(store, tmp_path):
    store.create_profile("Empty")
    path = export_profile(store, "Empty", tmp_path / "empty.prefstudio")
    length = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size == 8 + length  # no tensors: the header ends the file
    with HistoryStore(tmp_path / "elsewhere") as other:
        assert import_profile(other, path).name == "Empty"
        assert other.judgments("Empty") == [] and other.model_names("Empty") == []


@pytest.mark.parametrize("name, shown", [
    ("weights.bin", "'weights.bin'"),
    ("w" * 60, None),  # cut to 40 characters
])
def test_a_tensor_that_is_neither_an_image_nor_a_model_is_named_in_the_refusal(store, exported, tmp_path, name,
                                                                                shown):
    from prefstudio.errors import echo

    def add(tensors, content):
        tensors[name] = torch.zeros(2)
    forged = rewrite(exported, tmp_path / "extra.prefstudio", edit_tensors=add)
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, forged, "Other")
    assert str(caught.value) == f"profile file is malformed: unexpected tensor {shown or echo(name, 40)}"
    assert snapshot(store) == before


def _without(key):
    def edit(metadata, content):
        del metadata[key]
    return edit


@pytest.mark.parametrize("edit, message", [
    (set_key("version", "3"), "profile file version 3 is newer than this PrefStudio understands (2); upgrade PrefStudio"),
    (set_key("version", "0"), "profile file version 0 is not one this PrefStudio reads (1, 2)"),
    (set_key("version", "1234567890"), "profile file has an unreadable version '1234567890'"),
    (set_key("version", "2.0"), "profile file has an unreadable version '2.0'"),
    (_without("version"), "profile file has an unreadable version ''"),
    (set_key("format", "comfyui-workflow"),
     "not a PrefStudio profile file (format 'comfyui-workflow', expected 'prefstudio-profile')"),
    (_without("format"), "not a PrefStudio profile file (format None, expected 'prefstudio-profile')"),
    (set_key("signed-by", "me"),
     "profile file is malformed: its metadata must hold exactly digest, format, profile, version"),
    (set_key("version", "1"),  # version 1 had no presets
     "profile file is malformed: the profile must have exactly the keys images, judgments, models, name "
     "(not 'presets')"),
], ids=["newer", "zero", "ten-digits", "decimal", "no-version", "wrong-format", "no-format", "extra-metadata",
        "version-1-with-presets"])
def test_the_format_and_version_are_checked_first_with_one_exact_line(store, exported, tmp_path, edit, message):
    bad = rewrite(exported, tmp_path / "bad.prefstudio", edit_metadata=edit)
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, bad, new_name="Carol")
    assert str(caught.value) == message
    assert snapshot(store) == before


def test_version_1_files_without_presets_and_zero_padded_versions_are_read(store, exported, tmp_path):
    def version_1(metadata, content):
        metadata["version"] = "1"
        del content["presets"]
    old = rewrite(exported, tmp_path / "v1.prefstudio", edit_metadata=version_1)
    assert import_profile(store, old, new_name="Carol").name == "Carol"
    assert store.presets("Carol") == [] and len(store.judgments("Carol")) == len(store.judgments("Alice"))
    padded = rewrite(exported, tmp_path / "v2.prefstudio", edit_metadata=set_key("version", "000000002"))
    assert import_profile(store, padded, new_name="Dora").name == "Dora"


def test_a_profile_file_that_cannot_be_opened_or_read_is_named_in_one_line(store, exported, tmp_path, monkeypatch):
    from prefstudio.errors import echo
    from prefstudio.store import profile_file

    before = snapshot(store)
    with pytest.raises(NotFound) as caught:
        import_profile(store, tmp_path / "nope.prefstudio")
    assert str(caught.value) == f"no profile file {tmp_path / 'nope.prefstudio'}"
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    inside_a_file = tmp_path / "notes.txt" / "x.prefstudio"
    with pytest.raises(NotFound) as caught:
        import_profile(store, inside_a_file)
    assert str(caught.value) == f"cannot read profile file {echo(str(inside_a_file))}: Not a directory"
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, tmp_path)
    assert str(caught.value) == f"{tmp_path} is not a regular file"

    def failing_disk(*args):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(profile_file, "_stream_digest", failing_disk)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, exported, new_name="Carol")
    assert str(caught.value) == f"cannot read profile file {echo(str(exported))}: Input/output error"
    assert snapshot(store) == before


def test_the_profile_in_a_file_is_canonical_json_so_equal_profiles_give_equal_text(store, tmp_path):
    store.save_preset("Alice", "café au lait", {"user": 1.0})  # non-ASCII stays as it is
    with safe_open(export_profile(store, "Alice", tmp_path / "a.prefstudio"), framework="pt") as file:
        text = file.metadata()["profile"]
    assert "café au lait" in text
    assert text == json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def test_export_refuses_a_model_tensor_type_the_file_cannot_carry(store, tmp_path):
    import safetensors.numpy

    store.save_model_weights("Alice", "user-embedding", safetensors.numpy.save({"w": np.zeros(2, np.uint16)}), {})
    with pytest.raises(InvalidInput) as caught:
        export_profile(store, "Alice", tmp_path / "u16.prefstudio")
    assert str(caught.value) == "profile file holds a tensor of unsupported type 'U16'"
    assert not (tmp_path / "u16.prefstudio").exists()


def _safetensors_bytes(header, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


F32 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
WRONG = "tensor 'x' is described wrongly)"


@pytest.mark.parametrize("header, message", [
    ([], "its header is not a JSON object)"),
    ({"__metadata__": {"format": 1}}, "its metadata is not text)"),
    ({"__metadata__": ["prefstudio-profile"]}, "its metadata is not text)"),
    ({"x": [1]}, WRONG),
    ({"x": {**F32, "extra": 1}}, WRONG),
    ({"x": {"dtype": "F32", "shape": [1]}}, WRONG),
    ({"x": {**F32, "dtype": "U16"}}, WRONG),
    ({"x": {**F32, "shape": "1"}}, WRONG),
    ({"x": {**F32, "shape": [1, 1, 1, 1, 1]}}, WRONG),
    ({"x": {**F32, "shape": [1.0]}}, WRONG),
    ({"x": {**F32, "shape": [True]}}, WRONG),
    ({"x": {**F32, "shape": [-1]}}, WRONG),
    ({"x": {**F32, "data_offsets": "0-4"}}, WRONG),
    ({"x": {**F32, "data_offsets": [0, 4, 4]}}, WRONG),
    ({"x": {**F32, "data_offsets": [0]}}, WRONG),
    ({"x": {**F32, "data_offsets": [-4, 0]}}, WRONG),
    ({"x": {**F32, "shape": [2]}}, "tensor 'x' has 4 bytes for shape [2])"),
], ids=["list", "metadata-number", "metadata-list", "info-list", "extra-key", "no-offsets", "dtype-u16",
        "shape-text", "shape-5-dims", "shape-float", "shape-bool", "shape-negative", "offsets-text",
        "offsets-3", "offsets-1", "offsets-negative", "bytes-not-shape"])
def test_a_safetensors_header_that_describes_its_tensors_wrongly_is_refused_saying_what(
        store, tmp_path, header, message):
    path = _raw_file(tmp_path / "odd.prefstudio", _safetensors_bytes(header, bytes(4)))
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, path)
    assert str(caught.value) == NOT_SAFETENSORS + message



def test_a_refusal_names_a_long_tensor_by_its_first_40_characters(store, tmp_path):
    long = "t" * 50
    cut = echo(long, 40)
    # The second tensor begins at byte 4 of the data: its size is end − begin, not end + begin.
    for header, message in (({long: [1]}, f"tensor {cut} is described wrongly)"),
                            ({"a": F32, long: {**F32, "shape": [2], "data_offsets": [4, 8]}},
                             f"tensor {cut} has 4 bytes for shape [2])")):
        path = _raw_file(tmp_path / "odd.prefstudio", _safetensors_bytes(header, bytes(8)))
        with pytest.raises(InvalidInput) as caught:
            import_profile(store, path)
        assert str(caught.value) == NOT_SAFETENSORS + message


@pytest.mark.parametrize("offsets, data", [([0, 4], 4), ([8, 12], 12)], ids=["overlap", "gap"])
def test_tensors_that_overlap_or_leave_a_gap_are_refused(store, tmp_path, offsets, data):
    header = {"a": F32, "b": {**F32, "data_offsets": offsets}}
    path = _raw_file(tmp_path / "odd.prefstudio", _safetensors_bytes(header, bytes(data)))
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, path)
    assert str(caught.value) == NOT_SAFETENSORS + "its tensors overlap or leave gaps)"


def test_bytes_after_the_last_tensor_are_refused_saying_where_the_tensors_end(store, tmp_path):
    header = {"a": F32}
    base = 8 + len(json.dumps(header).encode())
    path = _raw_file(tmp_path / "odd.prefstudio", _safetensors_bytes(header, bytes(8)))
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, path)
    assert str(caught.value) == NOT_SAFETENSORS + f"its tensors end at byte {base + 4:,} of {base + 8:,})"


def test_a_file_of_exactly_the_size_limit_is_read_not_refused_for_its_size(store, tmp_path):
    edge = tmp_path / "edge.prefstudio"
    with open(edge, "wb") as file:  # sparse, and only its first bytes are read
        file.truncate(validation.MAX_PROFILE_FILE_BYTES)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, edge)
    assert str(caught.value) == NOT_SAFETENSORS + "its header is not JSON)"

def test_a_header_without_metadata_or_with_4_dimensional_tensors_is_read_and_then_not_a_profile(store, tmp_path):
    for shape in ([1], [1, 1, 1, 1]):
        path = _raw_file(tmp_path / "plain.safetensors", _safetensors_bytes({"x": {**F32, "shape": shape}}, bytes(4)))
        with pytest.raises(InvalidInput) as caught:
            import_profile(store, path)
        assert str(caught.value) == "not a PrefStudio profile file (format None, expected 'prefstudio-profile')"


# --- found by a hostile review ----------------------------------------------------------------


def _rewrite_text(source, target, change_text):
    """Copy a profile file with its profile JSON edited as text (numbers json.dumps never writes)."""
    with safe_open(source, framework="pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    metadata["profile"] = change_text(metadata["profile"])
    metadata["digest"] = content_digest(metadata["profile"], tensors)
    save_file(tensors, target, metadata=metadata)
    return target


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_number_beyond_a_floats_range_is_refused_in_one_line(store, exported, tmp_path, number):
    bad = _rewrite_text(exported, tmp_path / "big.prefstudio",
                        lambda text: text.replace('"resolution":32', f'"resolution":{number}', 1))
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=f"not valid JSON.*{number}.*range"):
        import_profile(store, bad, new_name="Carol")
    assert snapshot(store) == before


def test_a_missing_image_tensor_is_named_as_missing(store, exported, tmp_path):
    def drop_first_image(tensors, content):
        del tensors[f"image.{content['images'][0]['sha256']}"]
    first = json.loads(safe_open(exported, framework="pt").metadata()["profile"])["images"][0]["sha256"]
    bad = rewrite(exported, tmp_path / "missing.prefstudio", edit_tensors=drop_first_image)
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=f"missing tensors.*image.{first[:12]}"):
        import_profile(store, bad, new_name="Carol")
    assert snapshot(store) == before


# Found by a review: a name that looks like the profile's (fullwidth letters) passed, and the
# studio then said to import a profile 'ＣＡＲＯＬ' that it would refuse as too like 'Carol'; the
# refusal named the file's own name where the preset named the name it is imported under.
@pytest.mark.parametrize("blended", ["Alice", "carol", "ＣＡＲＯＬ", "ａｌｉｃｅ"])
def test_an_imported_preset_that_blends_the_profile_itself_is_refused(store, exported, tmp_path, blended):
    bad = rewrite(exported, tmp_path / "self.prefstudio", edit_metadata=edit_content(
        lambda c: c["presets"].append({"name": "me", "weights": {"user": 1.0, f"profile:{blended}": 0.5},
                                       "created": "2026-01-01T00:00:00+00:00"})))
    before = snapshot(store)
    with pytest.raises(InvalidInput) as refused:
        import_profile(store, bad, new_name="Carol")
    assert str(refused.value) == (f"profile file has a bad preset: 'me' blends the profile itself (profile:{blended}); "
                                  "its own taste is the 'user' weight")
    assert snapshot(store) == before


def test_an_imported_image_never_joins_another_profiles_generate_history(store, exported, tmp_path):
    def mark(content):
        content["images"][0]["params"]["personalized_for"] = "Bob"    # another profile here
        content["images"][1]["params"]["personalized_for"] = "Alice"  # the file's own profile
    made = rewrite(exported, tmp_path / "made.prefstudio", edit_metadata=edit_content(mark))
    with HistoryStore(tmp_path / "fresh") as fresh:
        fresh.create_profile("Bob")
        import_profile(fresh, made, new_name="Carol")
        assert fresh.personalized_images("Bob") == []
        shas = [r.sha256 for r in fresh.personalized_images("Carol")]
        content = json.loads(safe_open(made, framework="pt").metadata()["profile"])
        assert shas == [content["images"][1]["sha256"]]  # its own images follow it to its new name
        assert "personalized_for" not in fresh.image_record(content["images"][0]["sha256"]).params


def test_a_file_cut_short_says_it_is_incomplete(store, exported, tmp_path):
    # Found by a hostile review: half a download was refused as "its tensors end at byte X of Y".
    data = exported.read_bytes()
    half = _raw_file(tmp_path / "half.prefstudio", data[: len(data) // 2])
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        import_profile(store, half, new_name="Carol")
    message = str(caught.value)
    assert "cut short" in message and f"{len(data):,} bytes" in message and len(message.splitlines()) == 1, message
    assert snapshot(store) == before


def test_export_never_writes_a_file_that_import_would_refuse_and_import_says_why(store, tmp_path, monkeypatch):
    """Found by a review: a profile of 105,570 judgments exported to a 25 MB file whose header
    was over import's limit; importing it then said "not a PrefStudio profile file"."""
    exported = export_profile(store, "Alice", tmp_path / "alice.prefstudio")
    header_bytes = int.from_bytes(exported.read_bytes()[:8], "little")
    monkeypatch.setattr(validation, "MAX_PROFILE_HEADER_BYTES", header_bytes - 8)
    with pytest.raises(InvalidInput, match=r"header of .* over the .* a profile file may have") as caught:
        export_profile(store, "Alice", tmp_path / "too-big.prefstudio")
    assert "5 judgments" in str(caught.value)
    assert not (tmp_path / "too-big.prefstudio").exists()
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=r"its header is .* over the .* a profile file may have"):
        import_profile(store, exported, new_name="Alice again")
    assert snapshot(store) == before
