"""Auto's stacking rows: read as data, validated, chosen by history length, and weighing the
members by how well each predicted the person's own held-out pairs."""
import json

import pytest

from prefstudio.errors import InvalidInput
from prefstudio.preference.models import AutoPreference, StackingRow, read_auto_weights, stacking_weights

MEMBERS = ["user-embedding", "preference-tokens"]


def _write(tmp_path, data):
    path = tmp_path / "auto_weights.json"
    path.write_text(json.dumps(data))
    return path


def _file(rows):
    return {"format": "prefstudio-auto-weights", "version": 2, "by_history": rows}


def _row(min_pairs, ue, tokens, by_fit=(0.0, 0.0), calibration=(1.0, 1.0)):
    return {"min_pairs": min_pairs, "calibration": dict(zip(MEMBERS, calibration)),
            "weight": {"user-embedding": ue, "preference-tokens": tokens}, "by_fit": dict(zip(MEMBERS, by_fit))}


def test_rows_follow_the_history_length(tmp_path):
    rows = read_auto_weights(_write(tmp_path, _file([_row(8, 1.0, 3.0), _row(1, 0.8, 0.2)])), MEMBERS)
    assert [r.min_pairs for r in rows] == [1, 8]
    auto = AutoPreference([], rows)
    assert auto.row_for(5).weight == {"user-embedding": 0.8, "preference-tokens": 0.2}
    assert auto.row_for(32).weight == {"user-embedding": 1.0, "preference-tokens": 3.0}
    assert auto.row_for(0).min_pairs == 1  # shorter than every row: the first


def test_the_member_that_predicted_the_persons_own_pairs_weighs_more():
    row = StackingRow(8, {"user-embedding": 2.0, "preference-tokens": 0.5},
                      {"user-embedding": 1.0, "preference-tokens": 1.0}, {"user-embedding": 0.5, "preference-tokens": 0.5})
    # No held-out pair: the row's weights times the calibrations.
    assert stacking_weights(row, {}) == pytest.approx({"user-embedding": 2.0, "preference-tokens": 0.5})
    # The token model called every held-out pair right, the user embedding every one wrong.
    held_out = {"user-embedding": [-1.0, -2.0, -1.5], "preference-tokens": [3.0, 4.0, 2.0]}
    weights = stacking_weights(row, held_out)
    assert weights["preference-tokens"] / 0.5 > 1.0 > weights["user-embedding"] / 2.0
    # A large enough penalty clips a member to zero, never below.
    strict = StackingRow(8, row.calibration, row.weight, {"user-embedding": 50.0, "preference-tokens": 50.0})
    assert stacking_weights(strict, held_out)["user-embedding"] == 0.0


@pytest.mark.parametrize("row", [
    _row(1, -1.0, 1.0),
    {"min_pairs": 1, "calibration": {"user-embedding": 1.0}, "weight": {"user-embedding": 1.0},
     "by_fit": {"user-embedding": 0.0}},
    {**_row(1, 1.0, 1.0), "min_pairs": "1"},
    _row(1, 0.0, 0.0),
    _row(1, float("nan"), 1.0),
    _row(1, 1.0, 1.0, calibration=(0.0, 1.0)),
    _row(1, 1.0, 1.0, by_fit=(float("inf"), 0.0)),
    {k: v for k, v in _row(1, 1.0, 1.0).items() if k != "by_fit"},
])
def test_bad_rows_are_refused(tmp_path, row):
    with pytest.raises(InvalidInput, match="min_pairs"):
        read_auto_weights(_write(tmp_path, _file([row])), MEMBERS)


def test_not_a_weights_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="not a prefstudio-auto-weights file"):
        read_auto_weights(_write(tmp_path, {"format": "something else", "by_history": []}), MEMBERS)
    with pytest.raises(InvalidInput, match="version 2"):  # the version-1 rows had no calibration
        read_auto_weights(_write(tmp_path, {**_file([_row(1, 1.0, 1.0)]), "version": 1}), MEMBERS)
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(InvalidInput, match="not JSON"):
        read_auto_weights(path, MEMBERS)
