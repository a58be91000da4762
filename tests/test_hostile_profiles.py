"""Profile files built to poison a store or to make refusing them expensive (issue #19).

Each file is forged here with a valid digest, as anyone can make one: the digest catches
damage, not malice. Every import must be refused with a one-line InvalidInput that says
what is wrong, and leave the store (rows and files) exactly as it was."""
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prefstudio import validation
from prefstudio.errors import InvalidInput
from prefstudio.preference import state_schema
from prefstudio.store import profile_file
from prefstudio.store.history import HistoryStore
from prefstudio.store.image_files import store_png_bytes
from prefstudio.store.profile_file import content_digest, export_profile, import_profile
from test_image_files import bomb_png
from test_profile_file import DIM, ENCODER, generated, snapshot, user_embedding_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path):
    """A store with one fitted profile to export, and a second store to import into."""
    with HistoryStore(tmp_path / "home") as store:
        shas = [store.add_image(generated(seed)).sha256 for seed in range(4)]
        store.create_profile("Alice")
        store.record_judgment("Alice", "like", shas[0])
        store.record_judgment("Alice", "dislike", shas[1])
        store.record_judgment("Alice", "pair", shas[2], shas[3])
        store.save_model("Alice", "user-embedding", *user_embedding_state(shas[:2]))
        yield store


@pytest.fixture
def exported(home, tmp_path):
    return export_profile(home, "Alice", tmp_path / "alice.prefstudio")


@pytest.fixture
def target(tmp_path):
    with HistoryStore(tmp_path / "target") as store:
        store.add_image(generated(0))  # shares an image with Alice's file
        yield store


def read(path):
    with safe_open(path, framework="pt") as file:
        return dict(file.metadata()), {key: file.get_tensor(key) for key in file.keys()}


def forge(path, metadata, tensors):
    """Save with a digest that matches, whatever the content."""
    metadata = {**metadata, "digest": content_digest(metadata["profile"], tensors)}
    save_file(tensors, path, metadata=metadata)
    return path


def edited(exported, tmp_path, edit):
    """A copy of the exported file after `edit(content, tensors)` on its JSON and tensors."""
    metadata, tensors = read(exported)
    content = json.loads(metadata["profile"])
    edit(content, tensors)
    metadata["profile"] = json.dumps(content)  # writes NaN as NaN, as a forger may
    return forge(tmp_path / "forged.prefstudio", metadata, tensors)


def refused(store, path, message, **kwargs) -> str:
    """Import must fail with a short one-line InvalidInput matching `message`, changing nothing."""
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=message) as caught:
        import_profile(store, path, **kwargs)
    text = str(caught.value)
    assert "\n" not in text and len(text) <= 300, text[:300]
    assert snapshot(store) == before
    assert store._query("PRAGMA integrity_check") == [("ok",)]
    return text


def _model(content):
    return content["models"][0]["config"]


def _set_tensor(key, value):
    def edit(content, tensors):
        tensors[f"model.user-embedding.{key}"] = value
    return edit


def _drop_tensor(key):
    def edit(content, tensors):
        del tensors[f"model.user-embedding.{key}"]
    return edit


def _config(**changes):
    def edit(content, tensors):
        _model(content).update(changes)
    return edit


def _drop_config(key):
    def edit(content, tensors):
        del _model(content)[key]
    return edit


def _nan_at(key, value):
    def edit(content, tensors):
        tensor = tensors[f"model.user-embedding.{key}"].clone()
        tensor.view(-1)[0] = value
        tensors[f"model.user-embedding.{key}"] = tensor
    return edit


def _judgment_created(value):
    def edit(content, tensors):
        content["judgments"][0]["created"] = value
    return edit


def _rename_model(name):
    def edit(content, tensors):
        content["models"][0]["name"] = name
        for key in [k for k in tensors if k.startswith("model.user-embedding.")]:
            tensors[key.replace("user-embedding", name, 1)] = tensors.pop(key)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_tensor("projection", torch.randn(DIM, 5)), r"tensor 'like_vector' has shape \[4\], expected \[5\]"),
    (_set_tensor("mean", torch.randn(DIM + 1)), r"tensor 'mean' has shape \[7\], expected \[6\]"),
    (_set_tensor("like_bias", torch.randn(1)), r"tensor 'like_bias' has shape \[1\], expected \[\]"),
    (_set_tensor("like_vector", torch.randn(4).double()), "tensor 'like_vector' must be float32"),
    (_drop_tensor("dislike_bias"), "missing tensor 'dislike_bias'"),
    (_set_tensor("extra", torch.zeros(2)), "unexpected tensor 'extra'"),
    (_nan_at("like_vector", math.nan), "tensor 'like_vector' holds NaN or infinite values"),
    (_nan_at("projection", math.inf), "tensor 'projection' holds NaN or infinite values"),
    (_nan_at("std", 0.0), "tensor 'std' holds values below"),
    (_nan_at("dislike_vector", 1e30), "tensor 'dislike_vector' holds values beyond"),
    (_drop_config("fitted_at"), "missing config field 'fitted_at'"),
    (_config(fitted_at=1e300), "config 'fitted_at' must be a time in seconds between 1970 and 2100"),
    (_config(loo_accuracy="0.9"), r"config 'loo_accuracy' must be null or a number in \[0, 1\]"),
    (_config(loo_accuracy=1.5), r"config 'loo_accuracy' must be null or a number in \[0, 1\]"),
    (_config(n_pairs=-1), r"config 'n_pairs' must be a whole number in \[0, "),
    (_config(loo_pairs=3), r"config 'loo_pairs' must be a whole number in \[0, 2\]"),
    (_config(reference_images=["../../etc/passwd"]), "config 'reference_images' must be a list of image ids"),
    (_config(version=2), "config 'version' 2 is not one this PrefStudio reads"),
    (_config(type="preference-tokens"), "config 'type' is 'preference-tokens', expected 'user-embedding'"),
    (_config(encoder=""), "config 'encoder' must be one line"),
    (_config(mode="x\ny"), "config 'mode' must be one line"),
    (_config(colour="red"), "unexpected config field 'colour'"),
    (_judgment_created("not a date"), "a judgment's created 'not a date' is not an ISO 8601 time"),
    (_judgment_created("2026-01-01T00:00:00"), "is not an ISO 8601 time with a zone"),
    (_rename_model("my-model"), "unknown preference model 'my-model'"),
], ids=["projection-shape", "mean-shape", "bias-shape", "float64", "missing-tensor", "extra-tensor",
        "nan", "inf", "zero-std", "huge-value", "no-fitted-at", "fitted-at-1e300", "loo-as-string",
        "loo-above-1", "negative-pairs", "loo-pairs-above-pairs", "reference-not-a-sha", "version-2",
        "type-mismatch", "empty-encoder", "two-line-mode", "extra-config", "created-not-a-date",
        "created-without-zone", "unknown-model"])
def test_poisoned_profiles_are_refused_whole(exported, target, tmp_path, edit, message):
    refused(target, edited(exported, tmp_path, edit), message, new_name="Carol")


def test_model_width_must_match_the_encoder_this_studio_runs(exported, target):
    refused(target, exported, "its tensors are 6-dimensional but encoder 'test-mean-colour' gives "
            "1280-dimensional features", encoder_dims={ENCODER: 1280})
    import_profile(target, exported, encoder_dims={ENCODER: DIM, "other": 3})


def test_preference_token_histories_are_checked(home, tmp_path, target):
    pairs, text_dim = 3, 16

    def tokens(liked=(pairs, DIM), disliked=(pairs, DIM), prompts=(pairs, text_dim), **changes):
        config = {"type": "preference-tokens", "version": 1, "checkpoint": "lite:0123456789abcdef",
                  "encoder": ENCODER, "fitted_at": 1_790_000_000.0, "mode": "preference tokens",
                  "n_pairs": pairs, "loo_accuracy": 2 / 3, "loo_pairs": 3, "reference_images": []}
        config.update(changes)
        tensors = {"liked": torch.randn(liked), "disliked": torch.randn(disliked)}
        if prompts is not None:
            tensors["prompts"] = torch.randn(prompts)
        return tensors, config

    home.save_model("Alice", "preference-tokens", *tokens())
    good = export_profile(home, "Alice", tmp_path / "good.prefstudio")
    import_profile(target, good, new_name="Good", encoder_dims={ENCODER: DIM})
    for name, (tensors, config), message in [
        ("bad-disliked", tokens(disliked=(pairs, DIM + 1)), r"tensor 'disliked' has shape \[3, 7\], expected \[3, 6\]"),
        ("bad-prompts", tokens(prompts=(2, text_dim)), r"tensor 'prompts' has shape \[2, 16\], expected \[3, \?\]"),
        ("too-long", tokens(liked=(65, DIM), disliked=(65, DIM), prompts=None, n_pairs=65),
         r"liked \[65, 6\] is outside"),
        ("pairs-mismatch", tokens(n_pairs=2, loo_pairs=2), "config 'n_pairs' is 2 but the history holds 3 pairs"),
        ("no-checkpoint", tokens(checkpoint=None), "config 'checkpoint' must be one line"),
    ]:
        home.save_model("Alice", "preference-tokens", tensors, config)
        path = export_profile(home, "Alice", tmp_path / f"{name}.prefstudio")
        refused(target, path, message, new_name="Carol")


def test_a_refused_import_leaves_no_image_files_behind(exported, target, tmp_path):
    """NaN in an image's params passed every check, then failed as the rows were written,
    after the PNGs had been: they stayed, referenced by nothing."""
    def nan_params(content, tensors):
        for image in content["images"]:
            image["params"]["guidance"] = math.nan
    text = refused(target, edited(exported, tmp_path, nan_params), "the profile is not valid JSON",
                   new_name="Carol")
    assert "NaN" in text


def test_a_failed_restore_removes_the_files_it_wrote(exported, target, monkeypatch):
    before = snapshot(target)

    def fail_after_the_files(name, images, judgments, models, presets=()):
        for _, png in images:
            store_png_bytes(png, target.images_dir)
        raise InvalidInput(f"a profile named {name!r} already exists")  # e.g. created meanwhile

    monkeypatch.setattr(target, "restore_profile", fail_after_the_files)
    with pytest.raises(InvalidInput, match="already exists"):
        import_profile(target, exported, new_name="Carol")
    assert snapshot(target) == before  # the shared image stayed, the three new ones went


@pytest.mark.parametrize("make, message", [
    (lambda m: {**m, "profile": "[" * 100_000 + "]" * 100_000}, "the profile is nested too deeply"),
    (lambda m: {**m, "version": "9" * 5000}, "profile file has an unreadable version '9999"),
    (lambda m: {**m, "format": "x" * 2**20}, "not a PrefStudio profile file"),
    (lambda m: {**m, "profile": json.dumps({"name": "y" * 2**20, "images": [], "judgments": [],
                                            "models": [], "presets": []})},
     "profile name is 1048576 characters; the limit is 64"),
    (lambda m: {**m, "profile": '{"name": "Z", "images": [], "judgments": [], "models": [], "n": '
                + "1" * 5000 + "}"}, "the profile is not valid JSON"),
], ids=["json-100000-deep", "version-5000-digits", "format-1MB", "name-1MB", "number-5000-digits"])
def test_hostile_metadata_gets_a_short_one_line_error(exported, target, tmp_path, make, message):
    metadata, tensors = read(exported)
    refused(target, forge(tmp_path / "forged.prefstudio", make(metadata), tensors), message)


def test_long_fields_are_not_echoed_whole(exported, target, tmp_path):
    huge = "k" * 2**20

    def kind(content, tensors):
        content["judgments"][0]["kind"] = huge
    text = refused(target, edited(exported, tmp_path, kind), "unknown judgment kind 'kkk")
    assert len(text) < 200

    def model_name(content, tensors):
        content["models"][0]["name"] = huge
    refused(target, edited(exported, tmp_path, model_name), "model name 'kkk.*is over 64 characters")


def _forge_images(path: Path, images: dict[str, bytes]) -> Path:
    content = {"name": "Bomb", "judgments": [], "models": [],
               "images": [{"sha256": sha, "prompt": "p", "seed": None, "generator": "import",
                           "params": {}, "created": "2026-01-01T00:00:00+00:00"} for sha in images]}
    metadata = {"format": "prefstudio-profile", "version": "1", "profile": json.dumps(content)}
    tensors = {f"image.{sha}": torch.frombuffer(bytearray(png), dtype=torch.uint8)
               for sha, png in images.items()}
    return forge(path, metadata, tensors)


def test_pixels_are_bounded_per_side_and_per_file_before_decoding(target, tmp_path, monkeypatch):
    tall = bomb_png(1, 40_000_000)
    path = _forge_images(tmp_path / "tall.prefstudio", {hashlib.sha256(tall).hexdigest(): tall})
    start = time.perf_counter()
    refused(target, path, "is 1×40000000; no side may exceed 16,384 pixels")
    assert time.perf_counter() - start < 2.0

    pngs = [bomb_png(100 + i, 100) for i in range(3)]
    path = _forge_images(tmp_path / "many.prefstudio",
                         {hashlib.sha256(png).hexdigest(): png for png in pngs})
    decoded = []
    monkeypatch.setattr(profile_file, "load_untrusted_image",
                        lambda data: decoded.append(data) or pytest.fail("decoded an image"))
    monkeypatch.setattr(validation, "MAX_PROFILE_PIXELS", 25_000)
    refused(target, path, "the profile file's images hold 0 MP together; the limit is 0 MP")
    assert decoded == []


# --- the cost of a refusal ------------------------------------------------------------


def _write_big_profile(path: Path, n_images: int, image_bytes: int) -> None:
    """A digest-valid profile of `n_images` images whose bytes do not match their names,
    written a megabyte at a time so this process never holds it."""
    shas = [f"{i:064x}" for i in range(n_images)]
    content = {"name": "Big", "judgments": [], "models": [],
               "images": [{"sha256": sha, "prompt": "p", "seed": None, "generator": "import",
                           "params": {}, "created": "2026-01-01T00:00:00+00:00"} for sha in shas]}
    profile = json.dumps(content)
    chunk = b"\x89PNG\r\n\x1a\n" + bytes(2**20 - 8)
    digest = hashlib.sha256(profile.encode())
    for sha in shas:
        digest.update(f"\nimage.{sha}\ntorch.uint8\n[{image_bytes}]\n".encode())
        for _ in range(image_bytes // len(chunk)):
            digest.update(chunk)
    header = {"__metadata__": {"format": "prefstudio-profile", "version": "1", "profile": profile,
                               "digest": digest.hexdigest()}}
    for i, sha in enumerate(shas):
        header[f"image.{sha}"] = {"dtype": "U8", "shape": [image_bytes],
                                  "data_offsets": [i * image_bytes, (i + 1) * image_bytes]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        for _ in range(n_images * image_bytes // len(chunk)):
            file.write(chunk)


def test_refusing_a_big_profile_file_needs_little_memory(tmp_path):
    """A 256 MB file whose images do not match their hashes is refused with a peak memory
    growth far below its size (it was twice its size: every tensor loaded, then copied)."""
    path = tmp_path / "big.prefstudio"
    _write_big_profile(path, n_images=4, image_bytes=64 * 2**20)
    script = (
        "import resource, sys\n"
        "from prefstudio.store.history import HistoryStore\n"
        "from prefstudio.store.profile_file import import_profile\n"
        "from prefstudio.errors import InvalidInput\n"
        "store = HistoryStore(sys.argv[2])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    import_profile(store, sys.argv[1])\n"
        "except InvalidInput as error:\n"
        "    print(error)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "store")],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    message, growth_kb = result.stdout.strip().splitlines()
    assert "does not match its hash" in message
    assert int(growth_kb) < 32_000, f"peak memory grew by {growth_kb} KB"


def test_state_schema_names_every_stored_model_type():
    assert set(state_schema.CHECKERS) == {"user-embedding", "preference-tokens", "auto", "vlm-profile"}
    tensors, config = user_embedding_state()
    state_schema.check_state("user-embedding", tensors, config, {ENCODER: DIM})
    with pytest.raises(InvalidInput, match="unknown preference model 'x'; this PrefStudio stores"):
        state_schema.check_state("x", tensors, config)
    with pytest.raises(InvalidInput, match="its config must be a JSON object"):
        state_schema.check_state("user-embedding", tensors, ["not", "a", "dict"])
