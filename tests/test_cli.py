"""The CLI on bad input, full disks and odd paths: one line, exit 2, nothing changed."""
import argparse
import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from prefstudio import cli
from prefstudio.errors import DiskFull, InvalidInput, disk_full, echo
from prefstudio.store.history import HistoryStore
from prefstudio.validation import validate_device_name, validate_prompt

REPO = Path(__file__).resolve().parent.parent
ENV = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_cli(capsys, data, *argv) -> tuple[int, str, str]:
    code = cli.main(["--data", str(data), "--model", "embedded", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, data, *argv) -> str:
    """The command exits 2 with one line on stderr and nothing on stdout; returns the line."""
    code, out, err = run_cli(capsys, data, *argv)
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def add_images(data: Path, n: int) -> list[str]:
    """n distinct stored images (uploads: no models needed)."""
    with HistoryStore(data) as store:
        return [store.import_image(_png(i), "a test image").sha256 for i in range(n)]


def _png(i: int) -> bytes:
    import io
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 40 % 256, 90, 200 - i)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- prompts ------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, message", [
    ("a fox \ud800 in snow", "lone surrogate"),
    ("a fox\x00", "control character"),
    ("a\x07fox", "control character"),
    ("\x1b[31mred", "control character"),
    ("a fox \u202e wons eht ni", "text-direction override"),
    ("\u2066a fox", "text-direction override"),
    ("\u200b", "only invisible characters"),
    ("\u200b\u200d \ufeff", "only invisible characters"),
])
def test_prompts_with_hidden_characters_are_refused(prompt, message):
    with pytest.raises(InvalidInput, match=message):
        validate_prompt(prompt)


def test_the_library_refuses_a_lone_surrogate_before_any_work():
    from prefstudio.studio import Studio

    studio = Studio.__new__(Studio)  # no models: the prompt is refused before they are used
    with pytest.raises(InvalidInput, match="lone surrogate"):
        studio.generate_candidates("\ud800")


def test_ordinary_prompts_still_pass():
    assert validate_prompt("  a fox in the snow\n") == "a fox in the snow"
    assert validate_prompt("un renard dans la neige 🦊\tà l'aube") == "un renard dans la neige 🦊\tà l'aube"
    assert validate_prompt("שועל בשלג") == "שועל בשלג"  # right-to-left text is fine, overrides are not
    assert validate_prompt("family 👨\u200d👩\u200d👧") == "family 👨\u200d👩\u200d👧"  # joiners inside text


def test_undecodable_prompt_bytes_on_the_command_line_exit_2(tmp_path):
    # $'\xff' from a shell: Python hands it over as a lone surrogate.
    proc = subprocess.run([sys.executable, "-m", "prefstudio", "--data", str(tmp_path), "--model", "embedded",
                           "generate", b"a fox \xff".decode("utf-8", "surrogateescape")],
                          capture_output=True, env=ENV, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr.decode(errors="replace")
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1 and "not valid UTF-8" in lines[0], lines


# --- echoed input is cut ------------------------------------------------------------------

def test_echo_cuts_long_input():
    assert echo("fox") == "'fox'"
    assert len(echo("x" * 2**20)) < 120 and "1,048,576 characters" in echo("x" * 2**20)


def test_a_megabyte_argument_is_not_echoed_whole(tmp_path, capsys):
    huge = "%s" * (2**19)  # a 1 MB format string
    add_images(tmp_path, 1)
    for argv in (["judge", "alice", "like", huge], ["profile", "create", huge], ["judge", huge, "like", "abcdef"],
                 ["--device", huge, "profile", "list"]):
        line = refused(capsys, tmp_path, *argv)
        assert len(line) < 400, (argv[:2], len(line))
    with pytest.raises(InvalidInput) as caught:
        cli._weights([huge])
    assert len(str(caught.value)) < 400


def test_megabyte_names_and_paths_are_not_echoed_whole(tmp_path, capsys):
    huge = "%s" * (2**19)
    pairs = str(REPO / "assets" / "sample_pairs" / "pairs.jsonl")
    assert run_cli(capsys, tmp_path, "profile", "create", "alice")[0] == 0
    for argv in (["import-pairs", "alice", pairs, "--user", huge], ["import", huge], ["export", "alice", huge],
                 ["evaluate", huge], ["--preference-model", huge, "fit", "alice"],
                 ["personalize", "alice", "a fox", "--weight", huge + "=1"], ["generate", huge]):
        line = refused(capsys, tmp_path, *argv)
        assert len(line) < 400, (argv[0], line[:200])


def test_a_profile_file_with_a_huge_format_field_is_refused_briefly(tmp_path, capsys):
    import safetensors.torch
    import torch

    path = tmp_path / "evil.prefstudio"
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "%n" * 2**19})
    line = refused(capsys, tmp_path / "data", "import", str(path))
    assert "not a PrefStudio profile file" in line and len(line) < 400


# --- full disk ----------------------------------------------------------------------------

class FullDatabase:
    """A connection on a full disk: reads work, every write fails as SQLite reports it."""

    def __init__(self, db):
        self._db = db

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, *args):
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql, *args):
        self._check(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


@pytest.fixture
def full_database(monkeypatch):
    real_connect = sqlite3.connect
    return lambda: monkeypatch.setattr("prefstudio.store.history.sqlite3.connect",
                                       lambda *a, **k: FullDatabase(real_connect(*a, **k)))


def test_sqlite_reports_a_full_database_as_disk_full(tmp_path):
    """The real error, not a stand-in: a database that may not grow by a page (SQLITE_FULL)."""
    with HistoryStore(tmp_path) as store:
        store.create_profile("alice")
        store._db.execute(f"PRAGMA max_page_count = {store._db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError) as caught:
            for i in range(1000):
                store.create_profile(f"p{i}")
        assert isinstance(disk_full(caught.value), DiskFull)
        assert len(store.list_profiles()) == i + 1  # every profile created before is still there


@pytest.fixture
def full_files(monkeypatch):
    """Writing a file fails with ENOSPC, as on a full disk."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return lambda: monkeypatch.setattr(os, "fsync", no_space)


def test_disk_full_errors_are_recognised():
    assert isinstance(disk_full(sqlite3.OperationalError("database or disk is full")), DiskFull)
    assert isinstance(disk_full(OSError(errno.ENOSPC, "No space left on device")), DiskFull)
    assert disk_full(sqlite3.OperationalError("no such table: x")) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


def _assert_disk_full(line: str) -> None:
    assert "disk is full" in line and "nothing saved before was lost" in line, line


def test_every_store_command_on_a_full_disk_says_so_in_one_line(tmp_path, capsys, full_database, full_files):
    data = tmp_path / "data"
    shas = add_images(data, 3)
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    assert run_cli(capsys, data, "judge", "alice", "like", shas[0])[0] == 0
    assert run_cli(capsys, data, "export", "alice", str(tmp_path / "alice.prefstudio"))[0] == 0
    full_database()
    _assert_disk_full(refused(capsys, data, "profile", "create", "bob"))
    _assert_disk_full(refused(capsys, data, "judge", "alice", "like", shas[1], shas[2]))
    _assert_disk_full(refused(capsys, data, "import", str(tmp_path / "alice.prefstudio"), "--name", "alice2"))
    full_files()
    _assert_disk_full(refused(capsys, data, "export", "alice", str(tmp_path / "again.prefstudio")))
    assert not (tmp_path / "again.prefstudio").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    with HistoryStore(data) as store:  # nothing lost
        assert [p.name for p in store.list_profiles()] == ["alice"]
        assert [j.image_a for j in store.judgments("alice")] == [shas[0]]


def test_several_judgments_are_recorded_together_or_not_at_all(tmp_path, capsys, monkeypatch):
    shas = add_images(tmp_path, 3)
    assert run_cli(capsys, tmp_path, "profile", "create", "alice")[0] == 0
    real_connect, inserts = sqlite3.connect, []

    class FullAfterTwo(FullDatabase):  # the disk fills up during the third judgment
        def _check(self, sql):
            if sql.lstrip().upper().startswith("INSERT"):
                inserts.append(sql)
                if len(inserts) > 2:
                    super()._check(sql)

    monkeypatch.setattr("prefstudio.store.history.sqlite3.connect", lambda *a, **k: FullAfterTwo(real_connect(*a, **k)))
    _assert_disk_full(refused(capsys, tmp_path, "judge", "alice", "like", *shas))
    assert len(inserts) == 3
    with HistoryStore(tmp_path) as store:
        assert store.judgments("alice") == []


def test_imported_pairs_are_recorded_together_or_not_at_all(tmp_path, monkeypatch):
    from prefstudio.studio import Studio

    studio = Studio.__new__(Studio)  # import_pairs needs only the store
    studio.store = HistoryStore(tmp_path)
    studio.store.create_profile("alice")
    pairs = REPO / "assets" / "sample_pairs" / "pairs.jsonl"
    recorded = []
    real_record = HistoryStore.record_judgment

    def record_until_full(self, *args):
        if len(recorded) == 5:
            raise sqlite3.OperationalError("database or disk is full")
        recorded.append(args)
        return real_record(self, *args)

    monkeypatch.setattr(HistoryStore, "record_judgment", record_until_full)
    with pytest.raises(sqlite3.OperationalError):
        studio.import_pairs("alice", pairs, "ana")
    assert len(recorded) == 5 and studio.store.judgments("alice") == []


def test_model_commands_on_a_full_disk_say_so_in_one_line(tmp_path, capsys, full_database, full_files):
    data = tmp_path / "data"
    liked, disliked = add_images(data, 2)
    pairs = REPO / "assets" / "sample_pairs" / "pairs.jsonl"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    assert run_cli(capsys, data, "judge", "alice", "like", liked[:12])[0] == 0
    assert run_cli(capsys, data, "judge", "alice", "dislike", disliked[:12])[0] == 0
    full_files()  # generated and imported images are files first
    _assert_disk_full(refused(capsys, data, "generate", "a fox in the snow", "--seeds", "1"))
    _assert_disk_full(refused(capsys, data, "import-pairs", "alice", str(pairs), "--user", "ana"))
    full_database()  # fit writes no file, only the model's row
    _assert_disk_full(refused(capsys, data, "fit", "alice"))
    with HistoryStore(data) as store:
        assert len(store.judgments("alice")) == 2 and store.model_names("alice") == []


def test_the_ui_shows_a_full_disk_as_one_message(caplog):
    import gradio as gr

    from prefstudio.ui.common import user_errors

    @user_errors
    def judge():
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(gr.Error) as caught:
        judge()
    assert "disk is full" in caught.value.message
    assert any("disk is full" in r.getMessage() for r in caplog.records)

    @user_errors
    def bug():
        raise sqlite3.OperationalError("no such table: judgments")

    with pytest.raises(sqlite3.OperationalError):  # anything else is still a bug
        bug()


def test_a_refusal_shows_what_was_typed_as_text_not_markup():
    """Found by a review: a profile name typed as `<a href=//e.co>c</a><i>i</i>` came back in the
    refusal toast as a live link and italics (the toast renders HTML)."""
    import gradio as gr

    from prefstudio.ui.common import user_errors

    @user_errors
    def create():
        raise InvalidInput("profile name '<a href=//e.co>c</a><i>i</i> & co' is too long")

    with pytest.raises(gr.Error) as caught:
        create()
    assert caught.value.message == ("profile name '&lt;a href=//e.co&gt;c&lt;/a&gt;&lt;i&gt;i&lt;/i&gt; &amp; co' "
                                    "is too long")


# --- output paths -------------------------------------------------------------------------

def test_export_refuses_folders_missing_parents_and_proc(tmp_path, capsys):
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    assert "is a folder" in refused(capsys, data, "export", "alice", str(tmp_path))
    line = refused(capsys, data, "export", "alice", str(tmp_path / "no" / "such" / "alice.prefstudio"))
    assert "does not exist" in line
    assert not (tmp_path / "no").exists()
    refused(capsys, data, "export", "alice", "/proc")
    refused(capsys, data, "export", "alice", "/proc/alice.prefstudio")
    assert run_cli(capsys, data, "export", "alice", str(tmp_path / "alice.prefstudio"))[0] == 0


def test_export_replaces_only_a_profile_file(tmp_path, capsys):
    # Seen in a review: `export alice notes.txt` replaced the person's notes with the profile.
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("important notes")
    line = refused(capsys, data, "export", "alice", str(notes))
    assert "exists and is not a PrefStudio profile file" in line
    assert notes.read_text() == "important notes"
    # Exporting again to the profile file it wrote is how a person refreshes a backup.
    target = tmp_path / "alice.prefstudio"
    assert run_cli(capsys, data, "export", "alice", str(target))[0] == 0
    assert run_cli(capsys, data, "profile", "create", "bob")[0] == 0
    assert run_cli(capsys, data, "export", "bob", str(target))[0] == 0
    assert run_cli(capsys, data, "import", str(target), "--name", "bob2")[0] == 0


def test_grid_replaces_only_an_image_prefstudio_wrote(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    before = photo.read_bytes()
    line = refused(capsys, tmp_path, "grid", "me", "a fox", "--axis", "user", "--axis", "prompt_consistency",
                   "--out", str(photo))
    assert "exists and is not an image PrefStudio wrote" in line
    assert photo.read_bytes() == before


def test_reading_a_folder_or_a_missing_file_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    refused(capsys, data, "import", str(tmp_path))
    refused(capsys, data, "import", str(tmp_path / "missing.prefstudio"))
    refused(capsys, data, "import-pairs", "alice", str(tmp_path))
    refused(capsys, data, "import-pairs", "alice", str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "TMP"], "is not a regular file"),
    (["evaluate", "TMP/missing.jsonl"], "does not exist"),
    (["evaluate", "SAMPLE", "--n-ref", "0"], "--n-ref must lie in"),
    (["import-pairs", "alice", "TMP/bad.jsonl"], "not JSON"),
    (["import-pairs", "alice", "SAMPLE", "--user", "nobody"], "no judgments of user 'nobody'"),
    (["import-pairs", "bob", "SAMPLE"], "no profile named 'bob'"),
    (["import", "/dev/zero"], "not a regular file"),
    (["export", "alice", "/dev/null"], "not a regular file"),
    (["generate", "a fox", "-n", "0"], "number of candidates"),
    (["personalize", "alice", "a fox", "--weight", "user=abc"], "not a number"),
    (["personalize", "alice", "a fox", "--weight", "user=1_0"], "not a number"),  # float() reads it as 10
    (["personalize", "alice", "a fox", "--seed", "-1"], "out of range"),
    (["profile", "create"], "needs a name"),
    (["profile", "create", "a/b"], "contains '/'"),
])
def test_ordinary_input_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert run_cli(capsys, tmp_path / "data", "profile", "create", "alice")[0] == 0
    argv = [a.replace("TMP", str(tmp_path)).replace("SAMPLE", str(REPO / "assets/sample_pairs/pairs.jsonl"))
            for a in argv]
    assert message in refused(capsys, tmp_path / "data", *argv)


def test_an_output_folder_needs_an_existing_parent(tmp_path, capsys):
    line = refused(capsys, tmp_path / "data", "generate", "a fox", "--seeds", "1", "--out",
                   str(tmp_path / "no" / "such"))
    assert "does not exist" in line and not (tmp_path / "no").exists()


# --- silent changes -----------------------------------------------------------------------

def test_forty_seeds_are_refused_not_cut_to_32(tmp_path, capsys):
    line = refused(capsys, tmp_path, "generate", "a fox", "--seeds", *map(str, range(40)))
    assert "40 seeds" in line and "at most 32" in line


def test_too_many_best_of_n_candidates_are_refused():
    from prefstudio.guidance.best_of_n import MAX_CANDIDATES, best_of_n

    with pytest.raises(InvalidInput, match="at most"):
        best_of_n(None, "a fox", list(range(MAX_CANDIDATES + 1)), {}, {})


def test_seventeen_uploads_are_refused_not_cut_to_16(tmp_path):
    from prefstudio.studio import Studio
    from prefstudio.ui.common import AppContext
    from prefstudio.ui.label_tab import MAX_CANDIDATES, LabelSession, LabelTab

    files = []
    for i in range(MAX_CANDIDATES + 1):
        path = tmp_path / f"{i}.png"
        path.write_bytes(_png(i))
        files.append(str(path))
    tab = LabelTab.__new__(LabelTab)  # its actions need only the context, not the widgets
    studio = Studio.__new__(Studio)
    studio.store = HistoryStore(tmp_path / "data")
    tab.ctx = AppContext(studio)
    with pytest.raises(InvalidInput, match=f"{MAX_CANDIDATES + 1} files"):
        tab.add_uploads(LabelSession(), None, files, "uploads")
    assert tab.ctx.store._query("SELECT COUNT(*) FROM images") == [(0,)]


@pytest.mark.parametrize("device", ["bogus", "cuda:x", "gpu", "cpu:0:1", ""])
def test_an_unknown_device_is_refused_with_the_valid_ones(tmp_path, capsys, device):
    line = refused(capsys, tmp_path, "--device", device, "profile", "list")
    assert "unknown device" in line and "cpu, cuda" in line and "mps" in line


def test_valid_device_names_pass():
    assert [validate_device_name(d) for d in ("cpu", "cuda", "cuda:1", "MPS")] == ["cpu", "cuda", "cuda:1", "mps"]


def test_a_device_this_machine_lacks_is_refused(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    line = refused(capsys, tmp_path, "--device", "cuda", "generate", "a fox", "--seeds", "1")
    assert "no usable CUDA GPU" in line


def test_personalizing_a_missing_profile_says_it_does_not_exist(tmp_path, capsys):
    assert run_cli(capsys, tmp_path, "profile", "create", "alice")[0] == 0
    line = refused(capsys, tmp_path, "personalize", "bob", "a fox", "--iterations", "1")
    assert "no profile named 'bob'" in line and "fitted" not in line
    assert "has no fitted taste yet" in refused(capsys, tmp_path, "personalize", "alice", "a fox", "--iterations", "1")


def test_a_duplicate_name_names_the_existing_spelling(tmp_path, capsys):
    assert run_cli(capsys, tmp_path, "profile", "create", "me")[0] == 0
    line = refused(capsys, tmp_path, "profile", "create", "ME")
    assert "a profile named 'me' already exists" in line and "upper/lower case" in line


def test_dev_zero_is_not_a_regular_file(tmp_path):
    from prefstudio.store.image_files import load_untrusted_image

    with pytest.raises(InvalidInput, match="not a regular file"):
        load_untrusted_image("/dev/zero")
    with pytest.raises(InvalidInput, match="not a regular file"):
        load_untrusted_image(tmp_path)


def test_an_oversized_file_gets_a_true_size_message(tmp_path):
    from prefstudio.store.image_files import load_untrusted_image

    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * (2**20 + 1))
    with pytest.raises(InvalidInput) as caught:
        load_untrusted_image(path, max_bytes=2**20)
    assert "1,048,577 bytes; the limit is 1,048,576 bytes" in str(caught.value)


# --- judge --------------------------------------------------------------------------------

def test_judge_takes_several_ids(tmp_path, capsys):
    shas = add_images(tmp_path, 4)
    assert run_cli(capsys, tmp_path, "profile", "create", "alice")[0] == 0
    code, out, _ = run_cli(capsys, tmp_path, "judge", "alice", "like", shas[0][:8], shas[1])
    assert code == 0 and out.count('"kind": "like"') == 2
    assert run_cli(capsys, tmp_path, "judge", "alice", "pair", shas[2], shas[3])[0] == 0
    with HistoryStore(tmp_path) as store:
        assert [(j.kind, j.image_a, j.image_b) for j in store.judgments("alice")] == [
            ("like", shas[0], None), ("like", shas[1], None), ("pair", shas[2], shas[3])]


def test_judge_checks_every_id_before_recording_any(tmp_path, capsys):
    shas = add_images(tmp_path, 3)
    assert run_cli(capsys, tmp_path, "profile", "create", "alice")[0] == 0
    assert "no image 'abcdef12'" in refused(capsys, tmp_path, "judge", "alice", "dislike", shas[0], shas[1], "abcdef12")
    assert "not an image id" in refused(capsys, tmp_path, "judge", "alice", "like", shas[0], "zz")
    assert "more than once" in refused(capsys, tmp_path, "judge", "alice", "like", shas[0], shas[0][:10])
    assert "exactly two" in refused(capsys, tmp_path, "judge", "alice", "pair", *shas)
    assert "exactly two" in refused(capsys, tmp_path, "judge", "alice", "tie", shas[0])
    assert "no profile named 'bob'" in refused(capsys, tmp_path, "judge", "bob", "like", shas[0])
    with HistoryStore(tmp_path) as store:
        assert store.judgments("alice") == []


# --- start-up -----------------------------------------------------------------------------

STORE_ONLY = [["profile", "list"], ["judge", "alice", "like", "IMAGE"], ["export", "alice", "alice.prefstudio"],
              ["import", "alice.prefstudio", "--name", "alice2"]]


def test_store_only_commands_import_no_torch(tmp_path):
    sha = add_images(tmp_path / "data", 1)[0]
    with HistoryStore(tmp_path / "data") as store:
        store.create_profile("alice")
    for argv in STORE_ONLY:
        argv = [sha if a == "IMAGE" else a for a in argv]
        code = ("import sys; from prefstudio import cli; "
                f"code = cli.main(['--data', 'data', *{argv!r}]); "
                "heavy = sorted(m for m in ('torch', 'transformers', 'diffusers', 'gradio') if m in sys.modules); "
                "print('HEAVY', heavy); sys.exit(code)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "HEAVY []" in proc.stdout, (argv, proc.stdout)


def test_converted_third_party_prompts_are_cleaned_not_refused():
    from prefstudio_research.preference.pickapic_convert import _prompt

    cleaned = _prompt("a fox\x07 in\u202e snow\ud800", "row 1")
    assert cleaned == "a fox  in snow" and validate_prompt(cleaned) == cleaned


def test_a_refused_pair_file_leaves_no_images_behind(tmp_path, capsys):
    """A damaged image on the last line is found after the earlier lines' images were read:
    the refusal must leave the store as it was, images included."""
    import shutil

    folder = tmp_path / "pairs"
    shutil.copytree(REPO / "assets" / "sample_pairs" / "images", folder / "images")
    lines = (REPO / "assets" / "sample_pairs" / "pairs.jsonl").read_text().splitlines()[:3]
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    broken = json.loads(lines[-1]) | {"disliked": "images/broken.png"}
    (folder / "pairs.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(broken)]) + "\n")
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    with HistoryStore(data) as store:
        before = sorted(p.name for p in store.images_dir.rglob("*.png"))
    line = refused(capsys, data, "import-pairs", "alice", str(folder / "pairs.jsonl"))
    assert "broken.png: " in line and line.count("\n") == 0
    with HistoryStore(data) as store:
        assert sorted(p.name for p in store.images_dir.rglob("*.png")) == before
        assert store._query("SELECT count(*) FROM images")[0][0] == len(before)
        assert store.judgments("alice") == []


def test_import_pairs_reports_what_changed_not_how_many_lines_it_read(tmp_path, capsys):
    """Found by a hostile review: a file judging one pair both ways said "imported": 2, and so
    did importing it again, which changed nothing."""
    data = tmp_path / "data"
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.png").write_bytes(_png(i))
    a, b, c = (f"images/{i}.png" for i in range(3))
    lines = [{"user_id": "ana", "prompt": "a lighthouse at dusk", "liked": x, "disliked": y}
             for x, y in ((a, b), (b, a), (a, c))]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(pairs))
    assert code == 0 and json.loads(out) == {"lines": 3, "recorded": 2, "already_recorded": 0,
                                             "judged_both_ways": 1, "repeated_lines": 1}
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(pairs))
    assert code == 0 and json.loads(out)["recorded"] == 0 and json.loads(out)["already_recorded"] == 2
    # Found by a review: the same line three times read "lines 3, recorded 1" and no word of the other two.
    pairs.write_text(3 * (json.dumps({**lines[0], "liked": b, "disliked": c}) + "\n"))
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(pairs))
    assert code == 0 and json.loads(out) == {"lines": 3, "recorded": 1, "already_recorded": 0,
                                             "judged_both_ways": 0, "repeated_lines": 2}


def test_import_pairs_is_bounded_and_reads_each_image_once(tmp_path, capsys, monkeypatch):
    """Found by a review: 200,000 lines naming the same two images ran past 5 minutes with no
    word (each line decoded and wrote both images again). One import takes at most
    MAX_IMPORTED_PAIRS judgments, refused before any image is read, and each image is read once."""
    from prefstudio.store import history
    from prefstudio.studio import MAX_IMPORTED_PAIRS

    data = tmp_path / "data"
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.png").write_bytes(_png(i))
    a, b, c = (f"images/{i}.png" for i in range(3))
    line = {"user_id": "ana", "prompt": "a lighthouse at dusk"}
    pairs = tmp_path / "pairs.jsonl"
    # A later review fed 300,000 lines: all were read and checked (24 s, +230 MB) before the
    # refusal. Reading stops at the first judgment over the bound: the broken line after it is never reached.
    pairs.write_text("".join(json.dumps({**line, "liked": x, "disliked": y}) + "\n"
                             for x, y in [(a, b), (b, c)] * (MAX_IMPORTED_PAIRS // 2) + [(a, c)]) + "not json\n")
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    assert refused(capsys, data, "import-pairs", "alice", str(pairs)) == (
        f"error: {pairs} holds more than {MAX_IMPORTED_PAIRS:,} judgments; one import takes at most "
        f"{MAX_IMPORTED_PAIRS:,}: split the file, or import one user at a time")
    with HistoryStore(data) as store:
        assert store.judgments("alice") == [] and not list((data / "images").rglob("*.png"))
    read = []
    real = history.load_untrusted_image
    monkeypatch.setattr(history, "load_untrusted_image", lambda source: read.append(source) or real(source))
    pairs.write_text("".join(json.dumps({**line, "liked": x, "disliked": y}) + "\n" for x, y in [(a, b), (b, c)] * 50))
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(pairs))
    assert code == 0 and json.loads(out)["recorded"] == 2
    assert sorted(Path(p).name for p in read) == ["0.png", "1.png", "2.png"]
    # Only the chosen user's lines count towards the bound.
    crowded = tmp_path / "crowded.jsonl"
    crowded.write_text("".join(json.dumps({**line, "user_id": "ben", "liked": x, "disliked": y}) + "\n"
                               for x, y in [(a, b), (b, c)] * (MAX_IMPORTED_PAIRS // 2 + 1))
                       + json.dumps({**line, "liked": a, "disliked": c}) + "\n")
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(crowded), "--user", "ana")
    assert code == 0 and json.loads(out)["recorded"] == 1


def test_output_into_a_closed_pipe_is_quiet_and_keeps_the_work(tmp_path):
    # `prefstudio rewards | head -1`: the reader may go before the JSON is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([sys.executable, "-m", "prefstudio", "--data", str(tmp_path), "--model", "embedded",
                           "profile", "create", "piped"],
                          stdout=write_end, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path, timeout=120)
    os.close(write_end)
    assert proc.stderr.decode() == "" and proc.returncode == 1
    with HistoryStore(tmp_path) as store:  # the work itself stands
        assert "piped" in [p.name for p in store.list_profiles()]


def test_grid_refuses_a_weight_for_one_of_its_axes(tmp_path, capsys):
    # The grid sets each axis's weight itself: a --weight for an axis would be dropped unseen.
    line = refused(capsys, tmp_path, "grid", "me", "a fox", "--axis", "user", "--axis", "prompt_consistency",
                   "--weight", "user=0.7", "--out", str(tmp_path / "grid.png"))
    assert "user" in line and "axis" in line and "--total" in line, line
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("argv", [["profile", "list"], ["export", "alice", "alice.prefstudio"], ["fit", "alice"],
                                  ["judge", "alice", "like", "abc"]])
def test_a_mistyped_data_folder_is_refused_and_not_created(tmp_path, capsys, argv):
    # A command that needs an existing history must not start an empty one at a typo.
    missing = tmp_path / "no" / "such" / "folder"
    code = cli.main(["--data", str(missing), "--model", "embedded", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and f"'{missing}' does not exist" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "no").exists()


def test_creating_a_profile_still_starts_a_new_data_folder(tmp_path, capsys):
    code, out, _ = run_cli(capsys, tmp_path / "new", "profile", "create", "alice")
    assert code == 0 and (tmp_path / "new").is_dir()


def test_an_unknown_reward_name_is_one_line_and_makes_nothing(tmp_path, capsys):
    # Seen in a review: personalize --weight nonsense=1 and grid --axis nonsense ended in a
    # KeyError traceback, where preset save already named the rewards on offer.
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    shas = add_images(data, 4)
    for i, sha in enumerate(shas):
        assert run_cli(capsys, data, "judge", "alice", "like" if i % 2 else "dislike", sha)[0] == 0
    assert run_cli(capsys, data, "fit", "alice")[0] == 0
    with HistoryStore(data) as store:
        before = len(store.personalized_images("alice", 100))
    for argv in (["personalize", "alice", "a fox", "--seed", "1", "--weight", "nonsense=1"],
                 ["grid", "alice", "a fox", "--seed", "1", "--axis", "nonsense", "--axis", "user",
                  "--out", str(tmp_path / "grid.png")]):
        line = refused(capsys, data, *argv)
        assert "unknown reward 'nonsense'" in line and "prompt_consistency" in line and "user" in line, line
    assert not (tmp_path / "grid.png").exists()
    with HistoryStore(data) as store:
        assert len(store.personalized_images("alice", 100)) == before


def test_import_names_and_an_unfitted_profile_speak_the_clis_language(tmp_path, capsys):
    # Seen in a review: `import FILE --name ""` and a file whose own name is empty both said
    # "profile name is empty" (nothing about --name), and personalize on a profile with no fit
    # said "press Fit", a button the CLI does not have.
    data = tmp_path / "data"
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    exported = tmp_path / "alice.prefstudio"
    assert run_cli(capsys, data, "export", "alice", str(exported))[0] == 0
    line = refused(capsys, data, "import", str(exported), "--name", "")
    assert "--name is empty" in line and "file's name" in line, line
    line = refused(capsys, data, "personalize", "alice", "a fox", "--seed", "1")
    assert "no fitted taste yet" in line and "press Fit" not in line and "prefstudio fit alice" in line, line


def test_a_profile_fitted_by_another_model_says_so_in_the_profile_tab_and_on_import(capsys, tmp_path):
    """Found by a review: a file exported from a studio serving the user embedding, imported into
    one serving auto, read "Not fitted yet. Judge at least one image 👍 and one 👎" beside its
    judgments, and the CLI's import did not say that the file's fit is not the one served here."""
    import gradio as gr

    from prefstudio.studio import Studio
    from prefstudio.ui.common import AppContext
    from prefstudio.ui.profile_tab import describe_fit

    data = tmp_path / "data"
    shas = add_images(data, 6)
    run_cli(capsys, data, "profile", "create", "alice")
    run_cli(capsys, data, "judge", "alice", "like", *shas[:3])
    run_cli(capsys, data, "judge", "alice", "dislike", *shas[3:])
    code, _, err = run_cli(capsys, data, "--preference-model", "user-embedding", "fit", "alice")
    assert code == 0, err
    run_cli(capsys, data, "export", "alice", str(tmp_path / "alice.prefstudio"))
    elsewhere = tmp_path / "elsewhere"
    code, out, err = run_cli(capsys, elsewhere, "import", str(tmp_path / "alice.prefstudio"), "--name", "carol")
    assert code == 0, err
    # the command to paste names this history (found by a review: it named ./data, and the default model)
    assert ("the file's fit is by user-embedding; auto serves here: run "
            f"`python -m prefstudio --data {elsewhere} fit carol` to fit it with auto") in out
    code, out, err = run_cli(capsys, data, "--preference-model", "preference-tokens", "import",
                             str(tmp_path / "alice.prefstudio"), "--name", "dave")
    assert code == 0, err
    assert (f"`python -m prefstudio --data {data} --preference-model preference-tokens fit dave` "
            "to fit it with preference-tokens") in out
    with gr.Blocks():
        text = describe_fit(AppContext(Studio(elsewhere)), "carol")
    assert "Judge at least one" not in text
    assert "fitted by **user-embedding**" in text and "this studio serves **auto**" in text
    assert "press **Fit my taste**" in text


def test_suggest_with_too_few_new_candidates_is_refused_before_any_is_made(capsys, tmp_path):
    """Found by a review: `suggest --prompt P -n 1` stored a new image, then said a pair needs
    two candidates."""
    data = tmp_path / "data"
    run_cli(capsys, data, "profile", "create", "alice")
    for n in ("1", "100000"):  # one range, said the same way at both ends (a review saw [1, 32] and "at least 2")
        line = refused(capsys, data, "suggest", "alice", "--prompt", "a fox", "-n", n)
        assert f"-n must lie in [2, 32] with --prompt (a pair needs two candidates), got {n}" in line
    assert not (data / "images").exists() or not any((data / "images").rglob("*.png"))


@pytest.mark.parametrize("argv, message", [
    (["personalize", "alice", "a fox", "--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    (["preset", "load", "alice", "p1"], "argument action: invalid choice: 'load'"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_arguments_argparse_refuses_are_one_error_line_too(capsys, tmp_path, argv, message):
    """Found by a review: README promises one `error: …` line, but argparse's own refusals printed
    its usage first (10 lines for a bad --seed)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["--data", str(tmp_path / "data"), *argv])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err


def test_every_commands_help_says_what_it_does(capsys):
    """Found by a review: `evaluate --help` had no description and a bare `file` argument."""
    from prefstudio.cli import build_parser

    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    yield path + (name,), command
                    yield from commands(command, path + (name,))

    found = dict(commands(build_parser()))
    assert {("evaluate",), ("judge",), ("export",), ("ppd", "winrate")} <= set(found)
    for path, command in found.items():
        assert command.description, path
    evaluate = " ".join(found[("evaluate",)].format_help().split())
    assert "PAIRS_JSONL" in evaluate and "one judgment a line" in evaluate
    assert "pair A B: A is the better of the two" in " ".join(found[("judge",)].format_help().split())


def test_import_pairs_of_several_people_asks_whose(tmp_path, capsys):
    """Found by a review: a file of three user_ids imported into one profile without --user mixed
    three people's tastes into one, with no word of it. A profile is one person's."""
    data = tmp_path / "data"
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.png").write_bytes(_png(i))
    a, b, c = (f"images/{i}.png" for i in range(3))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"user_id": user, "prompt": "a fox", "liked": x, "disliked": y}) + "\n"
                             for user, x, y in (("u0", a, b), ("u1", b, a), ("u2", a, c), ("u0", b, c))))
    assert run_cli(capsys, data, "profile", "create", "alice")[0] == 0
    assert refused(capsys, data, "import-pairs", "alice", str(pairs)) == (
        f"error: {pairs} holds several people's judgments ('u0', 'u1', 'u2'): a profile is one person's; "
        "choose whose with --user")
    code, out, _ = run_cli(capsys, data, "import-pairs", "alice", str(pairs), "--user", "u0")
    assert code == 0 and json.loads(out)["recorded"] == 2


def test_deleting_a_profile_that_does_not_exist_is_said_before_any_confirmation(capsys, tmp_path):
    """Found by a review: `profile delete nobody` asked to confirm deleting a profile that does not exist."""
    data = tmp_path / "data"
    run_cli(capsys, data, "profile", "create", "alice")
    assert refused(capsys, data, "profile", "delete", "nobody").startswith("error: no profile named 'nobody'")
    assert "add --yes to confirm" in refused(capsys, data, "profile", "delete", "alice")


def test_a_data_folder_of_other_files_is_refused_even_for_a_listing(tmp_path, capsys):
    """Found by a review: `--data pics profile list` turned a folder of photos into a history."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "photo.jpg").write_bytes(b"a photo")
    for argv in (["profile", "list"], ["profile", "create", "alice"]):
        assert "is not a PrefStudio data folder" in refused(capsys, pictures, *argv)
    assert os.listdir(pictures) == ["photo.jpg"]
    code, out, err = cli_in(tmp_path, "--data", "", "profile", "list")
    assert code == 2 and "--data is empty" in err, err
    assert sorted(os.listdir(tmp_path)) == ["pictures"]


def cli_in(folder: Path, *argv) -> tuple[int, str, str]:
    """The CLI as a separate process started in `folder`."""
    done = subprocess.run([sys.executable, "-m", "prefstudio", *argv], cwd=folder, env=ENV,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_options_may_come_between_a_commands_words():
    """Found by a review: `suggest alice --top 2 ID ID ID`, the order the usage line shows, was
    refused ("unrecognized arguments"), while the ids before --top worked."""
    for argv in (["suggest", "alice", "--top", "2", "a1b2c3", "d4e5f6", "0a0b0c"],
                 ["suggest", "alice", "a1b2c3", "--top", "2", "d4e5f6", "0a0b0c"]):
        args = cli.build_parser().parse_args(argv)
        assert (args.profile, args.ids, args.top) == ("alice", ["a1b2c3", "d4e5f6", "0a0b0c"], 2)
    args = cli.build_parser().parse_args(["judge", "alice", "like", "a1b2c3", "d4e5f6"])
    assert (args.profile, args.images) == ("alice", ["a1b2c3", "d4e5f6"])


def test_generate_says_which_end_of_a_long_prompt_is_not_read(tmp_path, capsys):
    long_prompt = "a castle, a hill, a stormy sky; " * 29 + "a red dragon"
    code, out, err = run_cli(capsys, tmp_path / "data", "generate", long_prompt, "--seeds", "1")
    assert code == 0, err
    (note,) = json.loads(out)["prompt_notes"]
    assert "reads 256; this end of it is ignored: 'hill, a stormy sky" in note  # where the cut begins
    code, out, err = run_cli(capsys, tmp_path / "data", "generate", "a castle", "--seeds", "1")
    assert "prompt_notes" not in json.loads(out)
