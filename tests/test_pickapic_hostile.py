"""Pickles built to break the Pick-a-Pic converter's restricted unpickler (issue #19):
each is refused with one short line, nothing is written, and Python does not crash."""
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from prefstudio.errors import InvalidInput
from prefstudio_research.preference import pickapic_convert
from prefstudio_research.preference.pickapic_convert import UnsafePickle, convert, load_plain_pickle

REPO = Path(__file__).resolve().parents[1]


def png(colour, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def record(user_id="7", image=None):
    image = image or png((200, 0, 0))
    other = png((0, 0, 200))
    return {"user_id": user_id, "reference_list": [image, image], "reference_list_bad": [other, other],
            "reference_prompt_list": ["a", "b"], "image0": image, "image1": other, "prompt": "p",
            "label0": 1.0}


def refused(call, message, error=InvalidInput) -> str:
    with pytest.raises(error, match=message) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text and len(text) <= 400, text[:400]
    return text


def with_user_id(raw_user_id: bytes) -> bytes:
    """A protocol-2 pickle of [record] whose user_id is the given raw opcodes."""
    data = pickle.dumps([record(user_id="PLACEHOLDER-UID")], protocol=2)
    marker = b"X\x0f\x00\x00\x00PLACEHOLDER-UID"
    assert data.count(marker) == 1
    return data.replace(marker, raw_user_id)


def test_build_on_an_allowed_set_is_refused(tmp_path):
    path = tmp_path / "build.pkl"
    path.write_bytes(b"\x80\x02cbuiltins\nset\n]\x85R}X\x01\x00\x00\x00aK\x01sb.")  # set().__dict__ = {a: 1}
    refused(lambda: load_plain_pickle(path), "is not a readable pickle of plain data")


def test_a_list_nested_a_million_deep_as_user_id_is_refused(tmp_path):
    depth = 10**6
    path, plain = tmp_path / "deep.pkl", tmp_path / "plain.pkl"
    path.write_bytes(with_user_id(b"]" * depth + b"a" * (depth - 1)))
    plain.write_bytes(pickle.dumps([record()]))
    before = set(tmp_path.iterdir())
    refused(lambda: convert(path, plain, plain, tmp_path / "out"),
            "deep.pkl record 0: user_id must be text or a whole number, got list")
    assert set(tmp_path.iterdir()) == before


def test_tuples_nested_a_million_deep_do_not_crash_python(tmp_path):
    """Hashing such a tuple (as a dict key) recursed in C without a guard: a segfault."""
    path = tmp_path / "tuples.pkl"
    path.write_bytes(b"\x80\x02}N" + b"\x85" * 10**6 + b"Ns.")
    script = ("import sys\nfrom prefstudio_research.preference.pickapic_convert import load_plain_pickle\n"
              "from prefstudio.errors import InvalidInput\n"
              "try:\n    load_plain_pickle(sys.argv[1])\nexcept InvalidInput as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-500:]}"
    assert "nests tuples or sets more than 100 deep" in result.stdout


def test_a_long_global_name_is_not_echoed_whole(tmp_path):
    path = tmp_path / "long.pkl"
    path.write_bytes(b"\x80\x02c" + b"m" * 2**20 + b"\nname\n.")
    refused(lambda: load_plain_pickle(path), r"refused: the pickle needs 'mmmm.*\.name, ", UnsafePickle)


def test_a_label_is_not_echoed_whole(tmp_path):
    path = tmp_path / "label.pkl"
    bad = record()
    bad["label0"] = "x" * 2**20
    path.write_bytes(pickle.dumps([bad]))
    refused(lambda: convert(path, path, path, tmp_path / "out"), "label0 must be 1, 0 or 0.5, got 'xxx")


def test_each_distinct_image_is_decoded_once(tmp_path, monkeypatch):
    """One image referenced many times used to be decoded every time (0.3 s each at 40 MP)."""
    big = png((10, 20, 30), size=(64, 64))
    path = tmp_path / "repeat.pkl"
    path.write_bytes(pickle.dumps([record(image=big) for _ in range(10)]))
    decoded = []
    real = pickapic_convert.load_untrusted_image
    monkeypatch.setattr(pickapic_convert, "load_untrusted_image", lambda data: decoded.append(data) or real(data))
    convert(path, path, path, tmp_path / "out")
    assert len(decoded) == len(set(decoded)) == 2  # the liked image and the other one


def test_frozensets_nested_through_calls_are_bounded_too(tmp_path):
    """frozenset([frozenset([...])]) built by REDUCE, 200 deep, as a dict key."""
    inner = b"N"
    for _ in range(200):
        inner = b"cbuiltins\nfrozenset\n]" + inner + b"a\x85R"
    path = tmp_path / "frozen.pkl"
    path.write_bytes(b"\x80\x02}" + inner + b"Ns.")
    refused(lambda: load_plain_pickle(path), "nests tuples or sets more than 100 deep", UnsafePickle)
    shallow = tmp_path / "shallow.pkl"
    shallow.write_bytes(pickle.dumps({frozenset([frozenset([1])]): (1, (2, (3,)))}, protocol=2))
    assert load_plain_pickle(shallow) == {frozenset([frozenset([1])]): (1, (2, (3,)))}
