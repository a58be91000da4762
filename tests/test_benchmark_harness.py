"""PrefBench: the tiny benchmark end to end, the pair data set format, and the rule that
methods see judgments and features only — never a simulated user's hidden utility."""
import json
import shutil
import traceback
from pathlib import Path

import pytest
import torch

from prefstudio_research.prefbench import evaluate, generation
from prefstudio_research.prefbench.clipart import read_image_pool
from prefstudio_research.prefbench.data import Split
from prefstudio_research.prefbench.features import cache_attributes
from prefstudio_research.prefbench.methods import History, Method
from prefstudio_research.prefbench.pairs import build_pairs, ceilings_1v1, ceilings_1v3
from prefstudio_research.prefbench.run import TINY, main
from prefstudio.eval.simulated_users import SimulatedUser

PAIR_FIELDS = {"user_id", "prompt", "liked", "disliked"}


class UtilitySpy:
    """Counts calls of the hidden utilities, and fails any made while method code runs."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.inside_methods = False
        self.violations = []
        for name in ("utility", "utility_from_attributes"):
            original = getattr(SimulatedUser, name)
            monkeypatch.setattr(SimulatedUser, name, self._wrap(original))

    def _wrap(self, original):
        def spied(user, *args, **kwargs):
            self.calls += 1
            if self.inside_methods:
                self.violations.append("".join(traceback.format_stack(limit=8)))
            return original(user, *args, **kwargs)

        return spied

    def phase(self, function):
        def guarded(*args, **kwargs):
            self.inside_methods = True
            try:
                return function(*args, **kwargs)
            finally:
                self.inside_methods = False

        return guarded


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefbench")
    monkeypatch = pytest.MonkeyPatch()
    spy = UtilitySpy(monkeypatch)
    seen_inputs = []
    original_run_methods = evaluate.run_methods

    def run_methods(methods, train_users, val, test, n_refs, prompts, log=print):
        seen_inputs.append((train_users, val, test))
        return original_run_methods(methods, train_users, val, test, n_refs, prompts, log)

    # Method code: training and fitting every method, and personalizing images.
    monkeypatch.setattr(evaluate, "run_methods", spy.phase(run_methods))
    monkeypatch.setattr(generation, "personalize", spy.phase(generation.personalize))
    try:
        assert main(["--tiny", "--cache", str(root / "cache"), "--out", str(root / "out" / "results.md")]) == 0
    finally:
        monkeypatch.undo()
    return {"root": root, "cache": root / "cache", "spy": spy, "inputs": seen_inputs}


def test_methods_never_read_hidden_utilities(tiny_run):
    spy = tiny_run["spy"]
    assert spy.calls > 0, "the labeller and the judge should have used the utilities (spy not wired)"
    assert not spy.violations, "method code read a hidden utility:\n" + spy.violations[0]


def test_methods_are_given_feature_pairs_only(tiny_run):
    (train_users, val, test), = tiny_run["inputs"]
    assert all(isinstance(h, History) for h in train_users)
    for h in train_users:
        assert torch.is_tensor(h.liked) and torch.is_tensor(h.disliked)
        assert h.liked.shape == h.disliked.shape
    for split in (val, test):
        assert isinstance(split, Split)
        # A split is features and row indices: no users, utilities or oracle inside.
        for value in vars(split).values():
            assert not isinstance(value, SimulatedUser)
            if isinstance(value, dict):
                assert not any(isinstance(v, SimulatedUser) for v in value.values())


def test_report_has_every_table_and_the_ceiling(tiny_run):
    report = (tiny_run["root"] / "out" / "results.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 5", "Fig. 6", "Acceptance",
                    "Personalized generation", "Speed and scaling"):
        assert heading in report
    assert report.count("Bayes ceiling") >= 5
    assert "python bench/run_benchmark.py --tiny" in report and " cores" in report
    for image in ("benchmark_nref_tiny.png", "benchmark_speed_tiny.png", "benchmark_generation_tiny.png"):
        assert (tiny_run["root"] / "out" / "images" / image).stat().st_size > 1000
    results = json.loads((tiny_run["cache"] / "results_tiny.json").read_text())
    for name, by_nref in results["scores"].items():
        expected = {"0"} if not results["methods"][name]["uses_history"] else {str(n) for n in TINY.n_refs}
        assert set(by_nref) == expected, name
        for subset in ("all", "seen", "unseen"):
            assert 0.0 <= by_nref[max(by_nref)][subset]["1v1"] <= 1.0
    for subset in ("all", "seen", "unseen"):
        assert 0.5 < results["ceiling"][subset]["1v1"] <= 1.0
        c = results["ceiling"][subset]
        assert c["1v3@1"] <= c["1v3@2"] <= c["1v3@3"] <= 1.0


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pair_files_follow_the_documented_format(tiny_run):
    cache = tiny_run["cache"]
    pairs = cache / "pairs"
    users = json.loads((pairs / "users.json").read_text())
    assert set(users["test_seen"]) <= set(users["train"])
    assert not set(users["test_unseen"]) & (set(users["train"]) | set(users["val"]))
    pools = {"../" + json.loads(line)["path"]: json.loads(line)["split"]
             for line in (cache / "images.jsonl").read_text().splitlines()}
    for name in ("train", "val_references", "val_1v1", "val_1v3", "test_references", "test_1v1", "test_1v3"):
        for item in _lines(pairs / f"{name}.jsonl"):
            assert set(item) == PAIR_FIELDS
            for key in ("liked", "disliked"):
                assert (pairs / item[key]).is_file()  # relative to the file
            pool = "train" if name == "train" else name.split("_")[0]
            assert pools[item["liked"]] == pools[item["disliked"]] == pool
    refs = _lines(pairs / "test_references.jsonl")
    for user in users["test_seen"] + users["test_unseen"]:
        assert sum(item["user_id"] == user for item in refs) == users["n_ref"]
    groups = _lines(pairs / "test_1v3.jsonl")
    assert len(groups) % 3 == 0
    for g in range(0, len(groups), 3):
        group = groups[g : g + 3]
        assert len({(x["user_id"], x["liked"]) for x in group}) == 1
        assert len({x["disliked"] for x in group}) == 3


def test_pairs_are_reproducible_from_the_seed(tiny_run, tmp_path):
    cache = tiny_run["cache"]
    copy = tmp_path / "cache"
    copy.mkdir()
    for name in ("images.jsonl", "labeller"):
        (shutil.copytree if (cache / name).is_dir() else shutil.copy)(cache / name, copy / name)
    drawings = read_image_pool(copy)
    build_pairs(copy, drawings, cache_attributes(copy, drawings), TINY.pairs, log=lambda *a: None)
    for name in ("train.jsonl", "test_references.jsonl", "test_1v1.jsonl", "test_1v3.jsonl"):
        assert (copy / "pairs" / name).read_text() == (cache / "pairs" / name).read_text()


def test_bayes_ceilings_by_hand():
    # p = 0.9 and p = 0.3: the oracle is right with 0.9 and 0.7.
    assert ceilings_1v1([0.9, 0.3]).tolist() == pytest.approx([0.9, 0.7])
    # Plackett–Luce probabilities of the four columns; the oracle's top-2 holds 0.5 + 0.3.
    groups = [[0.2, 0.5, 0.3, 0.0]]
    assert ceilings_1v3(groups, 1).tolist() == pytest.approx([0.5])
    assert ceilings_1v3(groups, 2).tolist() == pytest.approx([0.8])
    assert ceilings_1v3(groups, 4).tolist() == pytest.approx([1.0])


class _OracleCheat(Method):
    """A method that prefers whatever it is told is liked — if the harness leaked labels of
    the targets, it would score 100 %; given only references it is at chance."""

    name = "cheat"
    description = "scores by feature sum"

    def fit_user(self, history):
        self.histories = getattr(self, "histories", []) + [history]
        return lambda features, prompts=None: torch.zeros(features.shape[0], dtype=torch.float64)


def test_predict_hands_each_method_only_the_first_n_ref_reference_pairs():
    features = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    refs = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    split = Split("test", features, {"u": refs}, {"u": torch.tensor([[8, 9], [10, 11]])},
                  {"u": torch.tensor([[12, 13, 14, 15]])},
                  {"u": {"references": ["p"] * 4, "1v1": ["p"] * 2, "1v3": ["p"]}}, ["u"], set())
    method = _OracleCheat()
    out = evaluate.predict(method, split, 2, evaluate.PromptFeatures(None, None))
    (history,), = [method.histories]
    torch.testing.assert_close(history.liked, features[[0, 2]])
    torch.testing.assert_close(history.disliked, features[[1, 3]])
    # Constant scores are ties: counted in expectation, exactly chance.
    assert evaluate.score(out, split)["all"]["1v1"] == pytest.approx(0.5)
    assert evaluate.score(out, split)["all"]["1v3@1"] == pytest.approx(0.25)
