"""The README's examples run as written: its python blocks, and its sample-data CLI commands."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from prefstudio.provenance import read_provenance
from prefstudio.store.history import HistoryStore

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
ENV = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_library_example_runs_verbatim(tmp_path):
    (code,) = blocks("python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leave-one-out" in proc.stdout or "too few pairs" in proc.stdout
    info = read_provenance(tmp_path / "out" / "seed7-side-by-side.png")
    assert info["seed"] == 7 and info["fit"]["profile"] == "alice" and "mode" in info["fit"]
    assert (tmp_path / "alice.prefstudio").is_file()


def test_the_sample_data_commands_run_verbatim(tmp_path):
    """The README's sample-data block, run from a folder that sees the repository's assets."""
    (tmp_path / "assets").symlink_to(REPO / "assets")
    block = next(b for b in blocks("bash") if "assets/sample_pairs" in b)
    outputs = []
    for line in block.strip().splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[:3] == ["python", "-m", "prefstudio"], line
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        outputs.append(json.loads(proc.stdout))
    assert outputs[1] == {"lines": 16, "recorded": 16, "already_recorded": 0, "judged_both_ways": 0,
                          "repeated_lines": 0}
    assert outputs[-1]["users"] == 3 and outputs[-1]["targets"] == 24 and 0 <= outputs[-1]["top1_1v1"] <= 1
    with HistoryStore(tmp_path / "data") as store:
        assert len(store.judgments("ana")) == 16


def test_the_sample_data_set_is_small_and_licensed():
    from prefstudio.preference.pair_data import by_user, read_judgments

    folder = REPO / "assets" / "sample_pairs"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 2 * 2**20, size
    assert "CC0" in (folder / "README.md").read_text()
    users = by_user(read_judgments(folder / "pairs.jsonl"))
    assert {u: len(js) for u, js in users.items()} == {"ana": 16, "ben": 16, "cleo": 16}
