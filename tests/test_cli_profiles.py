"""`python -m prefstudio profile rename|delete`: the store's rules, said in one line."""
import json

import numpy as np
import pytest
from PIL import Image

from prefstudio.cli import main
from prefstudio.generators.base import GeneratedImage
from prefstudio.store.history import HistoryStore


def cli(capsys, data, *args):
    code = main(["--data", str(data), "--model", "embedded", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_rename_and_delete_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "data"
    with HistoryStore(data) as store:
        for name in ("Ann", "Bob"):
            store.create_profile(name)
        pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        sha = store.add_image(GeneratedImage(Image.fromarray(pixels, "RGB"), "a kite", 1, "embedded", {})).sha256
        store.record_judgment("Ann", "like", sha)
        store.record_judgment("Bob", "dislike", sha)

    assert cli(capsys, data, "profile", "rename", "ann", "Anna")[:2] == (0, {"renamed": "Ann", "to": "Anna"})
    code, _, err = cli(capsys, data, "profile", "rename", "Anna", "ＢＯＢ")
    assert code == 2 and err == "error: profile name 'ＢＯＢ' is too like the existing 'Bob' " \
                                "(they differ only in letter case, spacing or look-alike characters)\n"
    code, _, err = cli(capsys, data, "profile", "rename", "Anna", "n" * 65)
    assert code == 2 and "65 characters; the limit is 64" in err
    code, _, err = cli(capsys, data, "profile", "rename", "Anna")
    assert code == 2 and "needs the current name and the new one" in err

    code, _, err = cli(capsys, data, "profile", "delete", "Anna")  # no --yes: refused, nothing removed
    assert code == 2 and "add --yes to confirm" in err
    assert cli(capsys, data, "profile", "list")[1] == {"profiles": ["Anna", "Bob"]}
    assert cli(capsys, data, "profile", "delete", "Anna", "--yes")[:2] == (0, {"deleted": "Anna"})
    code, _, err = cli(capsys, data, "profile", "delete", "Anna", "--yes")
    assert code == 2 and "no profile named 'Anna'; existing profiles: Bob" in err
    with HistoryStore(data) as store:
        assert [p.name for p in store.list_profiles()] == ["Bob"]
        assert [(j.kind, j.image_a) for j in store.judgments("Bob")] == [("dislike", sha)]
        assert store.image_path(sha).exists()


def test_an_unreadable_user_bank_in_the_data_folder_is_named_in_one_line(tmp_path, capsys):
    # A bank `python -m prefstudio bank` left half-written (or any file in its place) is refused
    # with its path and what to do, not a traceback.
    from prefstudio.encoders.embedded import EmbeddedImageEncoder
    from prefstudio.studio import user_bank_path

    bank = user_bank_path(tmp_path, EmbeddedImageEncoder().name)
    bank.parent.mkdir(parents=True)
    bank.write_bytes(b"half a bank")
    code, out, err = cli(capsys, tmp_path, "fit", "me")
    assert code == 2 and out is None
    assert err.strip().splitlines() == [
        f"error: {bank} is not a readable PrefStudio user bank (safetensors: Error while deserializing "
        "header: header too large); delete it or rebuild it with python -m prefstudio bank"]


def test_profile_show_lists_the_current_judgments(tmp_path, capsys):
    """A review had to open the database to check what the studio recorded: no command said.
    `profile show NAME` gives the counts, the fitted models and every current judgment."""
    data = tmp_path / "data"
    with HistoryStore(data) as store:
        store.create_profile("Ann")
        shas = []
        for seed in (1, 2):
            pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            shas.append(store.add_image(GeneratedImage(Image.fromarray(pixels, "RGB"), "a kite", seed, "embedded", {})).sha256)
        liked = store.record_judgment("Ann", "like", shas[0])
        store.record_judgment("Ann", "dislike", shas[1])
        store.record_judgment("Ann", "like", shas[1])  # replaces the dislike: not current any more
        pair = store.record_judgment("Ann", "pair", shas[0], shas[1])
    code, shown, _ = cli(capsys, data, "profile", "show", "ann")
    assert code == 0 and shown["profile"] == "Ann" and shown["models"] == []
    assert shown["counts"] == {"like": 2, "dislike": 0, "pair": 1, "tie": 0, "skip": 0}
    assert [(j["kind"], j["image_a"], j["image_b"]) for j in shown["judgments"]] == [
        ("like", shas[0], None), ("like", shas[1], None), ("pair", shas[0], shas[1])]
    assert shown["judgments"][0]["id"] == liked.id and shown["judgments"][-1]["created"] == pair.created
    code, _, err = cli(capsys, data, "profile", "show")
    assert code == 2 and err == "error: profile show needs a name\n"


def test_a_judgment_is_removed_by_its_number_and_the_verdict_before_it_comes_back(tmp_path, capsys):
    """Found by a review: the CLI could record a judgment but not take one back, where the page
    has Undo and Remove judgment."""
    from tests.test_cli import add_images

    data = tmp_path / "data"
    shas = add_images(data, 2)
    cli(capsys, data, "profile", "create", "alice")
    first = cli(capsys, data, "judge", "alice", "like", shas[0])[1]["judgments"][0]["id"]
    changed = cli(capsys, data, "judge", "alice", "dislike", shas[0])[1]["judgments"][0]["id"]
    other = cli(capsys, data, "judge", "alice", "like", shas[1])[1]["judgments"][0]["id"]
    code, out, err = cli(capsys, data, "remove-judgment", "alice", str(changed), str(other))
    assert code == 0, err
    assert [r["id"] for r in out["removed"]] == [changed, other]
    shown = cli(capsys, data, "profile", "show", "alice")[1]
    assert [(j["id"], j["kind"]) for j in shown["judgments"]] == [(first, "like")]  # the 👍 it replaced is back
    code, _, err = cli(capsys, data, "remove-judgment", "alice", str(changed))
    assert code == 2 and f"has no judgment {changed}" in err
    code, _, err = cli(capsys, data, "remove-judgment", "alice", str(first), str(first))
    assert code == 2 and f"judgment {first} is given twice" in err
    with pytest.raises(SystemExit) as refused:
        cli(capsys, data, "remove-judgment", "alice", str(first), "x")
    assert refused.value.code == 2 and "invalid int value: 'x'" in capsys.readouterr().err
    code, _, err = cli(capsys, data, "remove-judgment", "alice", str(first), str(changed))  # all or nothing
    assert code == 2 and f"has no judgment {changed}" in err
    assert [j["id"] for j in cli(capsys, data, "profile", "show", "alice")[1]["judgments"]] == [first]
