"""Served beyond this computer only with logins; each session acts only on profiles it opened
(with logins: its own); exports not at guessable URLs; no secret in /config; uploads deleted
after use; the history on disk private to its owner.

Every server here listens on 127.0.0.1 only; a wider address is only ever checked, never bound.
"""
import inspect
import io
import os
import re
import socket
import stat
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError
from PIL import Image

import app as app_script
from prefstudio import privacy
from prefstudio.errors import InvalidInput
from prefstudio.store.history import HistoryStore
from prefstudio.store.image_files import thumbnail
from prefstudio.studio import Studio
from prefstudio.ui.access import _input_positions
from prefstudio.ui.app import build_app, launch

EVERYTHING = ["like", "dislike", "pair", "tie", "skip"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(data: Path, auth=None):
    demo = build_app(Studio(data))
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, **({"auth": auth} if auth else {}))
    return demo, f"http://127.0.0.1:{port}/"


def client(url: str, auth=None) -> Client:
    return Client(url, verbose=False, download_files=False, auth=auth)


def value(output):
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def _png_file(path: Path, colour=(10, 200, 30)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


# --- serving beyond this computer ---------------------------------------------------------


def test_a_non_local_host_without_logins_refuses_before_anything_is_built(monkeypatch, capsys, tmp_path):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the studio was built: the server would have bound a public address")

    monkeypatch.delenv("PREFSTUDIO_AUTH", raising=False)
    monkeypatch.setattr("prefstudio.studio.build_studio", must_not_run)
    monkeypatch.setattr("prefstudio.ui.app.launch", must_not_run)
    for host in ("0.0.0.0", "192.168.1.20", "::", "myhost.example"):
        assert app_script.main(["--host", host, "--data", str(tmp_path / "data")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith(f"error: --host {host} makes PrefStudio reachable")
        assert "--auth-file" in error and "PREFSTUDIO_AUTH" in error
    assert not (tmp_path / "data").exists()


def test_with_logins_a_non_local_host_uses_them_and_warns(monkeypatch, capsys, tmp_path):
    calls = {}

    class Demo:
        def block_thread(self):
            raise KeyboardInterrupt

    def fake_launch(demo, host, port, prevent_thread_lock=False, auth=None):
        calls.update(host=host, auth=auth)  # recorded, never bound

    monkeypatch.delenv("PREFSTUDIO_AUTH", raising=False)
    monkeypatch.setattr("prefstudio.studio.build_studio", lambda *args, **kwargs: object())
    monkeypatch.setattr("prefstudio.ui.app.build_app", lambda studio: Demo())
    monkeypatch.setattr("prefstudio.ui.app.launch", fake_launch)
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may log in\nann:correct horse battery\n\nben:staple-gun-42\n")
    logins.chmod(0o600)
    old_umask = os.umask(0o022)
    try:
        assert app_script.main(["--host", "0.0.0.0", "--auth-file", str(logins)]) == 0
    finally:
        os.umask(old_umask)
    assert calls == {"host": "0.0.0.0", "auth": [("ann", "correct horse battery"), ("ben", "staple-gun-42")]}
    assert "warning: PrefStudio is reachable from the network on 0.0.0.0" in capsys.readouterr().err


def test_a_taken_port_is_one_clear_line_and_a_clean_exit(tmp_path):
    # The process must end as it says it does: the model warm-up used to start before the port
    # was bound, and exiting under it aborted (exit status 134, "terminate called ..." on stderr).
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "app.py", "--port", str(port), "--data", str(tmp_path / "data")],
                              cwd=Path(app_script.__file__).parent, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: port {port} on 127.0.0.1 is in use (another PrefStudio, or another program): "
                     "choose another with --port"]


def test_credentials_are_checked_line_by_line_and_loopback_needs_none(tmp_path):
    env = {privacy.AUTH_VARIABLE: "cat:whiskers99"}
    assert privacy.read_credentials(None, env) == [("cat", "whiskers99")]
    assert privacy.read_credentials(None, {}) == []
    for host in ("127.0.0.1", "127.0.1.1", "::1", "localhost", "[::1]"):
        assert privacy.check_exposure(host, []) is None
    with pytest.raises(InvalidInput, match="--host 10.0.0.2 makes PrefStudio reachable"):
        privacy.check_exposure("10.0.0.2", [])
    bad = tmp_path / "bad.txt"
    for text, message in (("ann\n", "line 1 is not 'user:password'"),
                          ("ann:short\n", "password of 'ann' is shorter than 8"),
                          ("a n:long enough pw\n", "user names are"),
                          ("ann:long enough pw\nann:another one!\n", "'ann' is given twice")):
        bad.write_text(text)
        with pytest.raises(InvalidInput, match=message) as refused:
            privacy.read_credentials(bad, {})
        assert "long enough" not in str(refused.value) and "short\n" not in str(refused.value)
    bad.write_text("cat:other-password\n")
    bad.chmod(0o600)
    with pytest.raises(InvalidInput, match="'cat' is in both"):
        privacy.read_credentials(bad, env)
    with pytest.raises(InvalidInput, match="cannot read the auth file"):
        privacy.read_credentials(tmp_path / "missing.txt", {})


def test_privacy_defaults_stay():
    assert app_script.build_parser().parse_args([]).host == "127.0.0.1"
    keys = ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    saved = {k: os.environ.pop(k, None) for k in keys}
    try:
        privacy.apply_defaults()
        assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_OFFLINE"] == "1"
        # Found by a review: a shell that exported these turned Hub access and telemetry on, and the
        # page blamed --allow-downloads, which nobody gave. Only the flag turns downloads on.
        os.environ.update(GRADIO_ANALYTICS_ENABLED="True", HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="0")
        privacy.apply_defaults()
        assert [os.environ[k] for k in keys] == ["False", "1", "1"]
        privacy.apply_defaults(allow_downloads=True)
        assert os.environ["HF_HUB_OFFLINE"] == "0"
    finally:
        for key, old in saved.items():
            os.environ.pop(key, None)
            if old is not None:
                os.environ[key] = old


# --- one app without logins: sessions ------------------------------------------------------


@pytest.fixture(scope="module")
def local_app(tmp_path_factory):
    data = tmp_path_factory.mktemp("exposure-data")
    store = HistoryStore(data)
    store.create_profile("zebra private name")  # made before the app: must not be in /config
    store.close()
    demo, url = serve(data)
    yield demo, url, data
    demo.close()


@pytest.fixture(scope="module")
def victim(local_app):
    """A profile another session made and judged in."""
    demo, url, _ = local_app
    owner = client(url)
    owner.predict("victim", api_name="/create_profile")
    owner.predict("victim", "a red boat", 2, "1, 2", api_name="/generate_candidates")
    owner.predict("victim", api_name="/like")
    owner.predict("victim", api_name="/dislike")
    return owner


def test_a_session_cannot_touch_a_profile_it_never_opened(local_app, victim):
    demo, url, _ = local_app
    store = demo.prefstudio.store
    before = [(j.id, j.kind) for j in store.judgments("victim")]
    stranger = client(url)
    judgment = before[0][0]
    attempts = [
        (("victim", EVERYTHING, judgment), "/remove_judgment"),
        (("victim",), "/export_profile"),
        (("victim",), "/fit"),
        (("victim", EVERYTHING), "/history"),
        (("victim",), "/taste_summary"),
        (("victim", "a blue kite", 1, "3"), "/generate_candidates"),
    ]
    for args, api in attempts:
        with pytest.raises(AppError, match="^no profile named 'victim'$"):
            stranger.predict(*args, api_name=api)
    assert [(j.id, j.kind) for j in store.judgments("victim")] == before
    # A name that does not exist gets the same words, and no list of the names that do.
    with pytest.raises(AppError) as missing:
        stranger.predict("nobody", api_name="/fit")
    assert str(missing.value) == "no profile named 'nobody'"
    # The owner's session still can; the stranger can once it opens the profile (one local person).
    gallery, info, _ = victim.predict("victim", EVERYTHING, api_name="/history")
    assert len(value(gallery)) == 2
    assert stranger.predict("victim", api_name="/open_profile") == "victim"
    gallery, info, _ = stranger.predict("victim", EVERYTHING, api_name="/history")
    assert info.startswith("**victim** · 2 judgments")


def test_every_listener_that_reads_the_profile_is_guarded(local_app):
    demo, _, _ = local_app
    profile = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "ps-profile")
    readers = [f for f in demo.fns.values() if f.fn is not None and any(c is profile for c in f.inputs)]
    unguarded = sorted({f.name for f in readers if "guard_request" not in inspect.signature(f.fn).parameters})
    assert len(readers) > 20 and unguarded == ["profile_chosen"]  # the opener


def test_guarded_arguments_skip_what_gradio_injects():
    def listener(session, event: gr.SelectData, profile, request: gr.Request, files, progress=gr.Progress()):
        pass

    assert _input_positions(listener) == [0, 2, 4]


def test_config_holds_no_secret_and_no_profile_names(local_app, victim):
    demo, url, data = local_app
    config = httpx.get(url + "config").text
    assert "zebra private name" not in config and "victim" not in config
    for path in data.rglob("*"):
        if path.is_file() and path.stat().st_size <= 4096:
            content = path.read_bytes().strip()
            assert len(content) < 16 or content.decode("latin-1") not in config, f"{path.name} is in /config"
    # The browser keeps one opaque token; a token the server never issued restores nothing.
    states = re.findall(r'"storage_key":\s*"([^"]+)"', config)
    assert states == ["prefstudio-browser"]
    assert demo.prefstudio.access.profiles.chosen_profile("x" * 43, None) is None


def test_an_export_is_not_served_at_a_guessable_path(local_app, victim):
    demo, url, data = local_app
    stranger = client(url)
    with pytest.raises(AppError, match="no profile named 'victim'"):
        stranger.predict("victim", api_name="/export_profile")
    first = Path(victim.predict("victim", api_name="/export_profile")["path"])
    profile_id = demo.prefstudio.store.get_profile("victim").id
    guessable = data / "ui-cache" / "exports" / str(profile_id) / "victim.prefstudio"
    assert httpx.get(f"{url}gradio_api/file={guessable}").status_code in (403, 404)
    assert len(first.parent.name) >= 32 and first.is_file()
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    second = Path(victim.predict("victim", api_name="/export_profile")["path"])
    assert second.parent != first.parent and second.is_file()
    assert not first.exists() and not first.parent.exists()  # the previous export is gone


def _uploads_named(name: str) -> list[Path]:
    return list(Path(get_upload_folder()).rglob(name))


def test_uploads_are_deleted_once_used(local_app, victim, tmp_path):
    demo, url, _ = local_app
    image = _png_file(tmp_path / "upload-probe-7f3a.png")
    gallery, *_ = victim.predict("victim", [handle_file(image)], "a green square", api_name="/add_images")
    assert len(value(gallery)) == 1
    assert _uploads_named(image.name) == []
    exported = Path(victim.predict("victim", api_name="/export_profile")["path"])
    copy = tmp_path / "upload-probe-7f3a.prefstudio"
    copy.write_bytes(exported.read_bytes())
    message, _ = victim.predict(handle_file(copy), "victim copy", api_name="/import_profile")
    assert "Imported profile **victim copy**" in message
    assert _uploads_named(copy.name) == []
    assert demo.delete_cache is not None  # and gradio sweeps what was uploaded but never used


# --- logins -------------------------------------------------------------------------------------

ANN, BEN = ("ann", "ann-password-1"), ("ben", "ben-password-2")


def test_with_logins_each_sees_and_changes_only_its_own_profiles(tmp_path):
    data = tmp_path / "data"
    demo, url = serve(data, auth=[ANN, BEN])
    try:
        with pytest.raises(AuthenticationError):
            client(url)
        with pytest.raises(ValueError, match="Could not login"):
            client(url, ("ann", "ben-password-2"))
        assert httpx.get(url + "config").status_code == 401
        ann, ben = client(url, ANN), client(url, BEN)
        choices = ann.predict("ann taste", api_name="/create_profile")[0]["choices"]
        assert [c[0] for c in choices] == ["ann taste"]  # not "me", made without a login
        ann.predict("ann taste", "a red boat", 1, "5", api_name="/generate_candidates")
        ann.predict("ann taste", api_name="/like")
        for name in ("ann taste", "me"):
            with pytest.raises(AppError, match=f"^no profile named '{name}'$"):
                ben.predict(name, api_name="/open_profile")
        with pytest.raises(AppError, match="^no profile named 'ann taste'$"):
            ben.predict("ann taste", EVERYTHING, 1, api_name="/remove_judgment")
        choices = ben.predict("ben taste", api_name="/create_profile")[0]["choices"]
        assert [c[0] for c in choices] == ["ben taste"]
        # An import never replaces a profile, another login's included.
        exported = tmp_path / "ben.prefstudio"
        exported.write_bytes(Path(ben.predict("ben taste", api_name="/export_profile")["path"]).read_bytes())
        # Nor says what another login's profile is called (a review read "too like the existing
        # 'ann taste'" as ben): a clash is refused without naming the profile it clashed with.
        for typed in ("ann taste", "ANN taste"):
            with pytest.raises(AppError, match=f"^the name '{typed}' is taken in this studio: choose another"):
                ben.predict(handle_file(exported), typed, api_name="/import_profile")
        for typed in ("ANN taste", "me"):
            with pytest.raises(AppError, match=f"^the name '{typed}' is taken in this studio: choose another$"):
                ben.predict(typed, api_name="/create_profile")
            with pytest.raises(AppError, match=f"^the name '{typed}' is taken in this studio: choose another$"):
                ben.predict("ben taste", typed, api_name="/rename_profile")
        assert len(demo.prefstudio.store.judgments("ann taste")) == 1
    finally:
        demo.close()
    # Ownership is on disk: a restarted server knows it.
    demo, url = serve(data, auth=[ANN, BEN])
    try:
        ann, ben = client(url, ANN), client(url, BEN)
        assert ann.predict("ann taste", api_name="/open_profile") == "ann taste"
        assert ann.predict("ann taste", EVERYTHING, api_name="/history")[1].startswith("**ann taste** · 1 judgment")
        with pytest.raises(AppError, match="^no profile named 'ann taste'$"):
            ben.predict("ann taste", api_name="/open_profile")
    finally:
        demo.close()


# --- files on disk ------------------------------------------------------------------------------


def test_history_files_are_private_to_their_owner(tmp_path):
    old_umask = os.umask(0o022)  # the usual umask: new files would be world-readable
    try:
        data = tmp_path / "data"
        with HistoryStore(data) as store:
            record = store.import_image(_png_file(tmp_path / "in.png"), "a green square")
            small = thumbnail(record.path, 64)
            store.create_profile("p")
            paths = [data, store.images_dir, store.db_path, record.path, record.path.parent, small,
                     small.parent, *data.glob("history.sqlite3-*")]
            modes = {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}
        assert modes == {k: ("0o700" if (tmp_path / k).is_dir() else "0o600") for k in modes}
        # A history made before (world-readable) is made private when opened.
        os.chmod(data, 0o755)
        os.chmod(data / "history.sqlite3", 0o644)
        HistoryStore(data).close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "history.sqlite3").stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)


def test_a_served_export_is_no_upload_for_any_listener(tmp_path):
    """Found by a review: another login who had an export's address passed it to /import_profile as
    if uploaded: the profile was imported as theirs, and the file deleted as a used upload."""
    from types import SimpleNamespace

    import gradio as gr

    from prefstudio.store.history import HistoryStore
    from prefstudio.store.profile_access import ProfileAccess
    from prefstudio.ui.access import SessionAccess, guard_listeners
    from prefstudio.ui.access import EXPORT_FOLDER_PREFIX

    export = Path(get_upload_folder()) / f"{EXPORT_FOLDER_PREFIX}probe-{tmp_path.name}" / "ann.prefstudio"
    export.parent.mkdir(parents=True)
    export.write_bytes(b"an export served to ann's page")
    used = []
    with gr.Blocks() as demo:
        box, shown, profile = gr.File(), gr.Textbox(), gr.Dropdown()
        box.upload(lambda file: used.append(file) or "read", box, shown)
    with HistoryStore(tmp_path / "data") as store:
        guard_listeners(demo, profile, SessionAccess(ProfileAccess(store)))
        listener = next(block.fn for block in demo.fns.values())
        request = SimpleNamespace(session_hash="ben-session", username="ben")
        with pytest.raises(gr.Error, match="is a profile export this studio serves, not an upload"):
            listener(request, str(export))
    assert used == [] and export.read_bytes() == b"an export served to ann's page"
    export.unlink()
    export.parent.rmdir()



def test_an_auth_file_is_private_its_passwords_trimmed_and_never_empty(tmp_path):
    """Found by a review: a 0644 auth file was accepted; `ann: password` kept the space as part of
    the password (the login then failed without a hint); a file of comments only was answered with
    advice to give --auth-file, which had been given."""
    logins = tmp_path / "logins.txt"
    logins.write_text("ann: a long password  \n")
    logins.chmod(0o644)
    with pytest.raises(InvalidInput, match=r"can be read by other users of this computer: chmod 600"):
        privacy.read_credentials(logins, {})
    logins.chmod(0o600)
    assert privacy.read_credentials(logins, {}) == [("ann", "a long password")]
    logins.write_text("# nobody yet\n\n")
    with pytest.raises(InvalidInput, match="holds no user:password line"):
        privacy.read_credentials(logins, {})


def test_a_profile_name_that_is_not_text_is_refused_not_read_as_its_repr(tmp_path):
    """Found by a review: /open_profile with null answered "no profile named 'None'" (a profile
    really named None would have opened), and a list was read as its Python text."""
    from prefstudio.store.history import HistoryStore
    from prefstudio.store.profile_access import ProfileAccess

    with HistoryStore(tmp_path / "data") as store:
        store.create_profile("None")
        access = ProfileAccess(store)
        for name in (None, ["None"], {"a": 1}):
            with pytest.raises(InvalidInput, match="a profile name must be text"):
                access.lookup(name, None)
        assert access.lookup("None", None).name == "None"
