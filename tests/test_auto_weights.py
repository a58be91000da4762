"""Auto's stacking weights: read as data, validated, chosen by history length."""
import json

import pytest

from prefstudio.errors import InvalidInput
from prefstudio.preference.models import AutoPreference, read_auto_weights

MEMBERS = ["user-embedding", "preference-tokens"]


def _write(tmp_path, data):
    path = tmp_path / "auto_weights.json"
    path.write_text(json.dumps(data))
    return path


def _file(rows):
    return {"format": "prefstudio-auto-weights", "version": 1, "by_history": rows}


def test_weights_follow_the_history_length(tmp_path):
    path = _write(tmp_path, _file([
        {"min_pairs": 8, "weights": {"user-embedding": 1.0, "preference-tokens": 3.0}},
        {"min_pairs": 1, "weights": {"user-embedding": 0.8, "preference-tokens": 0.2}},
    ]))
    rows = read_auto_weights(path, MEMBERS)
    assert [r[0] for r in rows] == [1, 8]
    auto = AutoPreference([], rows)
    weights, how = auto._weights(5)
    assert weights == pytest.approx({"user-embedding": 0.8, "preference-tokens": 0.2})
    weights, how = auto._weights(32)
    assert weights == pytest.approx({"user-embedding": 0.25, "preference-tokens": 0.75})
    assert "validation users" in how


@pytest.mark.parametrize("row", [
    {"min_pairs": 1, "weights": {"user-embedding": -1.0, "preference-tokens": 1.0}},
    {"min_pairs": 1, "weights": {"user-embedding": 1.0}},
    {"min_pairs": "1", "weights": {"user-embedding": 1.0, "preference-tokens": 1.0}},
    {"min_pairs": 1, "weights": {"user-embedding": 0.0, "preference-tokens": 0.0}},
    {"min_pairs": 1, "weights": {"user-embedding": float("nan"), "preference-tokens": 1.0}},
])
def test_bad_rows_are_refused(tmp_path, row):
    with pytest.raises(InvalidInput, match="min_pairs"):
        read_auto_weights(_write(tmp_path, _file([row])), MEMBERS)


def test_not_a_weights_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="not a prefstudio-auto-weights file"):
        read_auto_weights(_write(tmp_path, {"format": "something else", "by_history": []}), MEMBERS)
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(InvalidInput, match="not JSON"):
        read_auto_weights(path, MEMBERS)
