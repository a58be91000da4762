"""Seeded fuzzing of what PrefStudio imports from elsewhere: profile files and pair data sets.

Every mutated file must be either refused with a one-line PrefStudio error (and then the
store is exactly as before, rows and image files, and SQLite's integrity check passes),
or imported whole and usable: the studio fits it, scores with the stored model, and the
UI's date arithmetic works. Any other exception fails the test with the mutation that
caused it. The generator is seeded, so a failure reproduces; each run covers 1,500
profile files and 700 pair files.
"""
import hashlib
import json
import math
import os
import random
from datetime import datetime
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from pair_data_fixture import MeanColourEncoder
from prefstudio.blend import validate_blend
from prefstudio.encoders.base import pil_to_tensor
from prefstudio.errors import PrefStudioError, echo
from prefstudio.generators.embedded import EmbeddedGenerator
from prefstudio.preference.pair_data import read_judgments
from prefstudio.store.history import HistoryStore
from prefstudio.store.profile_file import content_digest, export_profile, import_profile
from prefstudio.studio import Studio
from test_image_files import encoded, noise_image
from test_profile_file import DIM, ENCODER, generated, snapshot

PROFILE_FILES = 1500
PAIR_FILES = 700
MAX_MESSAGE = 400


def one_line(error: Exception, what: str) -> str:
    text = str(error)
    assert text and "\n" not in text and len(text) <= MAX_MESSAGE, f"{what}: {text[:MAX_MESSAGE]!r}"
    return text


# --- hostile values ------------------------------------------------------------------


def deep(n: int):
    value = []
    for _ in range(n):
        value = [value]
    return value


HOSTILE = [
    None, True, False, 0, -1, 1, 2**31, 2**64, 10**30, 1e300, -1e-300, 0.5, "", " ", "x", "\n",
    "not a date", "2026-01-01T00:00:00", "2026-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00",
    "a" * 64, "f" * 64, "../../etc/passwd", "x" * 65, "x" * 1001, "x" * 70_000, "é🌸\u202e",
    [], {}, [1, 2], {"a": None}, deep(5), deep(50), deep(500), {"k": deep(20)},
    "like", "dislike", "pair", "tie", "skip", "user-embedding", "preference-tokens",
]


def hostile_value(rng: random.Random):
    return json.loads(json.dumps(rng.choice(HOSTILE)))  # a fresh copy: later edits may change it


def paths(value, prefix=()):
    """Every (path, value) inside nested JSON, the root included."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


def mutate_json(content, rng: random.Random) -> str:
    """One structural or value edit somewhere in `content`; returns what was done."""
    where, value = rng.choice(list(paths(content))[1:])
    parent = content
    for key in where[:-1]:
        parent = parent[key]
    key = where[-1]
    action = rng.random()
    if action < 0.55:
        parent[key] = hostile_value(rng)
        return f"set {where} = {echo(parent[key], 40)}"
    if action < 0.7:
        del parent[key]
        return f"delete {where}"
    if action < 0.8 and isinstance(value, dict):
        value[rng.choice(["extra", "", "x" * 100])] = hostile_value(rng)
        return f"add a key at {where}"
    if action < 0.9 and isinstance(value, list) and value:
        value.append(json.loads(json.dumps(rng.choice(value))))
        return f"duplicate an item of {where}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[key] = rng.choice([value * -1, value + 1, value * 1e6, math.nan, math.inf, float(value)])
        return f"nudge {where} = {parent[key]}"
    parent[key] = str(value)[:100]
    return f"stringify {where}"


# --- profile files -------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile_source(tmp_path_factory):
    """An exported profile with images, every judgment kind, both model types and presets."""
    folder = tmp_path_factory.mktemp("source")
    studio = Studio(folder / "home", generator=EmbeddedGenerator(64), image_encoder=MeanColourEncoder(),
                    bank_path=None)
    store = studio.store
    shas = [store.add_image(generated(seed)).sha256 for seed in range(5)]
    store.create_profile("Alice")
    for kind, images in (("like", shas[:1]), ("dislike", shas[1:2]), ("like", shas[2:3]),
                         ("pair", shas[3:5]), ("tie", shas[:2]), ("skip", shas[4:])):
        store.record_judgment("Alice", kind, *images)
    studio.fit("Alice")
    tokens = {"liked": torch.randn(2, DIM), "disliked": torch.randn(2, DIM)}
    store.save_model("Alice", "preference-tokens", tokens, {
        "type": "preference-tokens", "version": 1, "checkpoint": "lite:0123456789abcdef", "encoder": ENCODER,
        "fitted_at": 1_790_000_000.0, "mode": "preference tokens", "n_pairs": 2, "loo_accuracy": 0.5,
        "loo_pairs": 2, "reference_images": shas[:4]})
    store.save_preset("Alice", "mix", {"user": 0.5, "profile:Bob": 0.5, "prompt_consistency": 0.5})
    store.save_preset("Alice", "solo", {"user": 1.0})
    path = export_profile(store, "Alice", folder / "alice.prefstudio")
    store.close()
    with safe_open(path, framework="pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    return path, metadata, tensors


def forge(path: Path, metadata: dict, tensors: dict, redigest: bool = True) -> None:
    if redigest:
        metadata = {**metadata, "digest": content_digest(metadata["profile"], tensors)}
    save_file(tensors, path, metadata=metadata)


def mutate_tensors(tensors: dict, content: dict, rng: random.Random) -> str:
    key = rng.choice(sorted(tensors))
    tensor = tensors[key]
    action = rng.random()
    if key.startswith("image."):
        if action < 0.3:
            tensors[key] = torch.frombuffer(bytearray(rng.randbytes(rng.randint(1, 400))), dtype=torch.uint8)
            return f"random bytes as {key[:20]}"
        if action < 0.6:
            data = bytearray(tensor.numpy().tobytes())
            del data[rng.randint(8, len(data) - 1):]
            tensors[key] = torch.frombuffer(data, dtype=torch.uint8)
            return f"truncate {key[:20]}"
        png = encoded(noise_image(rng.randint(1, 40), rng.randint(1, 40), rng.randint(0, 99)),
                      rng.choice(["PNG", "PNG", "JPEG", "GIF"]))
        sha = hashlib.sha256(png).hexdigest()
        old = key[6:]
        del tensors[key]
        tensors[f"image.{sha}"] = torch.frombuffer(bytearray(png), dtype=torch.uint8)
        text = json.dumps(content).replace(old, sha)
        content.clear()
        content.update(json.loads(text))
        return f"replace {key[:20]} by another image, renamed"
    if action < 0.2:
        del tensors[key]
        return f"drop {key}"
    if action < 0.35:
        tensors[key + "x"] = tensor.clone()
        return f"add {key}x"
    changed = tensor.clone().float()
    if action < 0.5 and changed.numel():
        changed.view(-1)[rng.randrange(changed.numel())] = rng.choice([math.nan, math.inf, -math.inf, 1e30, 0.0])
        tensors[key] = changed
        return f"poison a value of {key}"
    if action < 0.65:
        tensors[key] = changed.double()
        return f"float64 {key}"
    if action < 0.8:
        tensors[key] = torch.randn(*[max(0, s + rng.choice([-1, 1])) for s in changed.shape] or [1])
        return f"reshape {key}"
    tensors[key] = changed.reshape(-1) if changed.dim() != 1 else changed.reshape(1, -1)
    return f"flatten {key}"


def mutate_profile(source, target: Path, rng: random.Random) -> tuple[str, bool]:
    """Write one mutated copy of the source profile file; (what was done, name touched)."""
    path, metadata, tensors = source
    metadata, tensors = dict(metadata), dict(tensors)
    content = json.loads(metadata["profile"])
    kind = rng.random()
    if kind < 0.2:  # bytes: most fail the digest or the header
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[at] = rng.randrange(256)
            elif choice < 0.8:
                del data[at:at + rng.randint(1, 64)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 64))
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)):]
        target.write_bytes(bytes(data))
        return "byte edits", False
    if kind < 0.3:  # header-level edits, digest redone
        key = rng.choice(["format", "version", "profile", "digest"])
        metadata[key] = rng.choice(["", "1", "2", "01", "9" * 5000, "prefstudio-profile", "{}", "[" * 5000,
                                    json.dumps({**content, "name": "Z"}), "x" * 100_000])
        forge(target, metadata, tensors, redigest=key != "digest")
        return f"metadata {key}", key == "profile"
    if kind < 0.75:
        edits = [mutate_json(content, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        metadata["profile"] = json.dumps(content)
        forge(target, metadata, tensors)
        return "; ".join(edits), any("'name'" in e or e.startswith("delete ('name',)") for e in edits)
    edits = [mutate_tensors(tensors, content, rng) for _ in range(rng.choice([1, 1, 2]))]
    metadata["profile"] = json.dumps(content)
    forge(target, metadata, tensors)
    return "; ".join(edits), False


def check_usable(studio: Studio, name: str, what: str, fitted: set) -> None:
    """What the app does with a profile: list it, date its judgments against the fit, score
    with the stored model, fit again and score with the new fit. A fit depends only on
    the judgments (images are named by content), so each distinct history is fitted once:
    fitting every import would take most of the test's time."""
    store = studio.store
    judgments = store.judgments(name)
    for j in judgments:
        datetime.fromisoformat(j.created).timestamp()
        for sha in (j.image_a, j.image_b):
            if sha is not None:
                store.load_image(sha)
    status = studio.fit_status(name)
    if status is not None:
        datetime.fromtimestamp(status["fitted_at"]).strftime("%Y-%m-%d %H:%M")
        try:
            score(studio, name, judgments, what)
        except PrefStudioError as error:  # a fit made with another encoder: the app says so
            assert "fit again here" in one_line(error, what), what
    for preset in store.presets(name):  # each one a blend the studio can read, or refuses in one line
        validate_blend(preset.weights)
        try:
            studio.blend_weights(name, None, preset.name)
        except PrefStudioError as error:
            assert "is not a profile here" in one_line(error, what) or "does not offer" in str(error), what
    history = tuple((j.kind, j.image_a, j.image_b) for j in judgments)
    if history in fitted:
        return
    fitted.add(history)
    try:
        studio.fit(name)
    except PrefStudioError as error:  # no like/dislike pair among the judgments
        assert "no like/dislike pair" in one_line(error, what), what
        return
    score(studio, name, judgments, what)


def score(studio, name, judgments, what):
    reward = studio.user_reward(name)
    for sha in list(dict.fromkeys(j.image_a for j in judgments))[:3]:  # images may differ in size
        values = reward.normalise(reward.score(pil_to_tensor([studio.store.load_image(sha)]), None))
        assert torch.isfinite(values).all(), f"{what}: scores {values}"


def test_mutated_profile_files_are_refused_cleanly_or_imported_whole(profile_source, tmp_path):
    rng = random.Random(19)
    studio = Studio(tmp_path / "target", generator=EmbeddedGenerator(64), image_encoder=MeanColourEncoder(),
                    bank_path=None)
    store = studio.store
    store.add_image(generated(0))  # one image in common with the file
    outcomes = {"refused": 0, "imported": 0}
    fitted = set()
    encoder_dims = {ENCODER: DIM}
    for attempt in range(PROFILE_FILES):
        path = tmp_path / "mutated.prefstudio"
        what, name_touched = mutate_profile(profile_source, path, rng)
        what = f"attempt {attempt}: {what}"
        before = snapshot(store)
        new_name = None if name_touched else f"F{attempt}"
        try:
            profile = import_profile(store, path, new_name, encoder_dims=encoder_dims)
        except PrefStudioError as error:
            one_line(error, what)
            assert snapshot(store) == before, what
            assert store._query("PRAGMA integrity_check") == [("ok",)], what
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the point: anything else is a bug
            pytest.fail(f"{what}: {type(error).__name__}: {str(error)[:300]}")
        else:
            check_usable(studio, profile.name, what, fitted)
            outcomes["imported"] += 1
    # The mix must exercise both sides, or the fuzzing proves little.
    assert outcomes["refused"] > PROFILE_FILES // 2 and outcomes["imported"] > PROFILE_FILES // 20, outcomes


# --- pair data sets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_root(tmp_path_factory):
    """<root>/images/*.png, a FIFO and a symlink out among them, and <root>/pairs/."""
    base = tmp_path_factory.mktemp("pairs")
    root = base / "data"
    (root / "images").mkdir(parents=True)
    (root / "pairs").mkdir()
    for i in range(4):
        Image.new("RGB", (6, 6), (60 * i, 0, 200 - 40 * i)).save(root / "images" / f"{i}.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    os.mkfifo(root / "images" / "pipe.png")
    Image.new("RGB", (4, 4)).save(base / "secret.png")
    (root / "images" / "out.png").symlink_to(base / "secret.png")
    (root / "images" / "alias.png").symlink_to(root / "images" / "0.png")
    return root


PAIR_PATHS = ["../images/0.png", "../images/1.png", "../images/2.png", "../images/3.png",
              "../images/alias.png", "../images/pipe.png", "../images/out.png", "../images/broken.png",
              "../images/missing.png", "../images", "../../secret.png", "/etc/passwd", "..",
              "../images/./0.png", "../images/../images/1.png", "../images/0.png\0", "~/x.png", ""]


def pair_line(rng: random.Random) -> dict:
    return {"user_id": f"u{rng.randrange(3)}", "prompt": rng.choice(["a red square", "blue", "a b c"]),
            "liked": rng.choice(PAIR_PATHS[:5]), "disliked": rng.choice(PAIR_PATHS[1:4])}


def mutated_pair_file(rng: random.Random) -> bytes:
    rows = [pair_line(rng) for _ in range(rng.randint(1, 6))]
    lines = []
    for row in rows:
        roll = rng.random()
        if roll < 0.35:
            row[rng.choice(["liked", "disliked"])] = rng.choice(PAIR_PATHS)
        elif roll < 0.6:
            mutate_json(row, rng)
        elif roll < 0.65:
            row = hostile_value(rng)
        text = json.dumps(row).encode()
        if rng.random() < 0.1:
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.randbytes(rng.randint(1, 8)) + text[at:]
        lines.append(text)
    if rng.random() < 0.05:
        lines.append(b"[" * 20_000)
    if rng.random() < 0.05:
        lines.append(b"x" * 70_000)
    return b"\n".join(lines) + rng.choice([b"\n", b"", b"\n\n"])


def test_mutated_pair_files_are_refused_cleanly_or_read_whole(pair_root, tmp_path):
    """Each file is read, then what was read is imported into a profile (as `import-pairs`
    does): refused with one line and the store as it was, images included, or imported whole."""
    rng = random.Random(19)
    root = pair_root.resolve()
    path = pair_root / "pairs" / "train.jsonl"
    store = HistoryStore(tmp_path / "target")
    store.create_profile("p")
    outcomes = {"refused": 0, "read": 0, "import refused": 0, "imported": 0}
    for attempt in range(PAIR_FILES):
        data = mutated_pair_file(rng)
        path.write_bytes(data)
        what = f"attempt {attempt}: {data[:200]!r}"
        try:
            judgments = read_judgments(path)
        except PrefStudioError as error:
            text = one_line(error, what)
            assert text.startswith(str(path)), what  # names the file (and line, where one is at fault)
            outcomes["refused"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - anything else is a bug
            pytest.fail(f"{what}: {type(error).__name__}: {str(error)[:300]}")
        for j in judgments:  # the images are regular files inside the data set
            for image in (j.liked, j.disliked):
                assert image.is_relative_to(root) and image.is_file() and not image.is_symlink(), what
        outcomes["read"] += 1
        before = snapshot(store)
        try:
            recorded = store.import_pairs("p", [(j.liked, j.disliked, j.prompt) for j in judgments])
        except PrefStudioError as error:
            assert one_line(error, what).startswith(str(root)), what  # names the image at fault
            assert snapshot(store) == before, what
            assert store._query("PRAGMA integrity_check") == [("ok",)], what
            outcomes["import refused"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - anything else is a bug
            pytest.fail(f"{what}: {type(error).__name__}: {str(error)[:300]}")
        current = {frozenset((j.image_a, j.image_b)) for j in store.judgments("p")}
        assert len(recorded) == len(judgments) and {frozenset((r.image_a, r.image_b)) for r in recorded} <= current
        outcomes["imported"] += 1
    store.close()
    assert outcomes["refused"] > PAIR_FILES // 4 and outcomes["read"] > PAIR_FILES // 10, outcomes
    assert outcomes["import refused"] > 0 and outcomes["imported"] > PAIR_FILES // 20, outcomes
