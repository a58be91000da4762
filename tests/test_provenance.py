"""Images that leave the studio carry how they were made; reading a PNG trusts nothing in it."""
import io
import json
import zlib
import struct

import pytest
from PIL import Image, PngImagePlugin

from prefstudio import cli
from prefstudio.errors import InvalidInput
from prefstudio.provenance import (
    KEY, MAX_CHUNK_CHARS, PARAMETERS_KEY, read_provenance, write_png_with_provenance,
)

INFO = {"prompt": "a fox in the snow", "seed": 7, "generator": "embedded", "params": {"iterations": 30},
        "weights": {"user": 0.75, "prompt_consistency": 0.25}, "role": "personalized",
        "fit": {"profile": "alice", "model": "user-embedding", "mode": "bank posterior", "n_pairs": 16,
                "loo_accuracy": 0.8, "fitted_at": 1700000000.5},
        "scores": {"user": 0.41, "prompt_consistency": 0.12}}


def picture() -> Image.Image:
    return Image.new("RGB", (16, 12), (200, 80, 40))


def png_with_text(**chunks) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    picture().save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_round_trip_keeps_every_field(tmp_path):
    path = write_png_with_provenance(picture(), tmp_path / "fox.png", INFO)
    read = read_provenance(path)
    assert read == INFO | {"version": 1}
    assert read_provenance(path.read_bytes()) == read
    with Image.open(path) as image:
        parameters = image.info[PARAMETERS_KEY]
        assert image.size == (16, 12) and json.loads(image.info[KEY])["seed"] == 7
    first, settings = parameters.split("\n")
    assert first == "a fox in the snow"
    assert settings.startswith("Steps: 30, Seed: 7, Size: 16x12, Model: embedded")
    assert 'Reward weights: "user=0.75, prompt_consistency=0.25"' in settings and "Profile: alice" in settings


def test_an_a1111_png_gives_prompt_and_seed():
    text = "a castle, highly detailed\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1234, Size: 512x512"
    read = read_provenance(png_with_text(parameters=text))
    assert read["prompt"] == "a castle, highly detailed" and read["seed"] == 1234


def test_a_stored_history_image_reads_as_a_subset(tmp_path):
    from prefstudio.store.image_files import write_png

    _, path = write_png(picture(), {"prompt": "a kite", "seed": 3, "generator": "embedded", "params": {}}, tmp_path)
    assert read_provenance(path) == {"version": 1, "prompt": "a kite", "seed": 3, "generator": "embedded",
                                     "params": {}}


@pytest.mark.parametrize("chunk, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"prompt": "a fox", "generator": "x", "seed": NaN}', "not valid JSON"),
    ('{"prompt": "a fox", "generator": "x", "seed": -1}', "out of range"),
    ('{"prompt": "a fox", "generator": "x", "seed": "7"}', "whole number"),
    ('{"prompt": "a fox\\u202e", "generator": "x"}', "text-direction"),
    ('{"prompt": "", "generator": "x"}', "empty"),
    ('{"prompt": "a fox", "generator": "x", "weights": {"user": 1e999}}', "not valid JSON|finite"),
    ('{"prompt": "a fox", "generator": "x", "weights": {"user": "0.7"}}', "finite number"),
    ('{"prompt": "a fox", "generator": "x", "fit": {"profile": {"nested": 1}}}', "printable text"),
    ('{"prompt": "a fox", "generator": "x", "role": "admin"}', "role must be"),
    ('{"prompt": "a fox", "generator": "x\\u0000"}', "printable text"),
    ("[" * 100_000 + "]" * 100_000, "over"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "not valid JSON"),
    # Found by a review: a huge whole number raised OverflowError (int too large to convert to float)
    ('{"prompt": "a fox", "generator": "x", "weights": {"user": 1' + "0" * 400 + '}}', "finite number"),
    ('{"prompt": "a fox", "generator": "x", "seed": 1' + "0" * 5000 + '}', "not valid JSON|out of range"),
])
def test_hostile_chunks_are_refused_with_a_message(chunk, message):
    with pytest.raises(InvalidInput, match=message):
        read_provenance(png_with_text(prefstudio=chunk))


def test_unknown_fields_are_dropped():
    chunk = json.dumps({"prompt": "a fox", "generator": "x", "__class__": "os.system", "command": "rm -rf /"})
    assert read_provenance(png_with_text(prefstudio=chunk)) == {"version": 1, "prompt": "a fox", "generator": "x"}


def test_non_pngs_and_plain_pngs_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="not a PNG"):
        read_provenance(b"GIF89a....")
    with pytest.raises(InvalidInput, match="no generation settings"):
        read_provenance(png_with_text())
    with pytest.raises(InvalidInput, match="not a regular file"):
        read_provenance(tmp_path)
    with pytest.raises(InvalidInput, match="not a regular file"):
        read_provenance("/dev/zero")
    broken = png_with_text(prefstudio='{"prompt": "a", "generator": "x"}')[:40]
    with pytest.raises(InvalidInput):
        read_provenance(broken)


def test_a_compressed_chunk_bomb_is_not_inflated():
    # A zTXt chunk that inflates to 50 MB from a few KB: PIL refuses it above 1 MB, we above 64 KB.
    body = KEY.encode() + b"\0\0" + zlib.compress(b"a" * 50_000_000, 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + body) & 0xFFFFFFFF)
    plain = png_with_text()
    data = plain[:33] + chunk + plain[33:]  # after the 8-byte signature and the IHDR chunk
    with pytest.raises(InvalidInput):
        read_provenance(data)


def test_writing_refuses_what_reading_would_refuse(tmp_path):
    with pytest.raises(InvalidInput):
        write_png_with_provenance(picture(), tmp_path / "x.png", INFO | {"seed": 2**40})
    with pytest.raises(InvalidInput, match="plain JSON"):
        write_png_with_provenance(picture(), tmp_path / "x.png", INFO | {"params": {"x": float("nan")}})
    with pytest.raises(InvalidInput, match="limit"):
        write_png_with_provenance(picture(), tmp_path / "x.png", INFO | {"params": {"x": "y" * MAX_CHUNK_CHARS}})
    assert not (tmp_path / "x.png").exists()


# --- the CLI's images ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def personalized(tmp_path_factory):
    """A fitted profile and one personalize run through the CLI (embedded models, 2 iterations)."""
    root = tmp_path_factory.mktemp("cli")
    base = ["--data", str(root / "data"), "--model", "embedded"]
    pairs = cli.Path(__file__).resolve().parent.parent / "assets" / "sample_pairs" / "pairs.jsonl"
    assert cli.main(base + ["profile", "create", "alice"]) == 0
    assert cli.main(base + ["import-pairs", "alice", str(pairs), "--user", "ana"]) == 0
    assert cli.main(base + ["fit", "alice"]) == 0
    assert cli.main(base + ["personalize", "alice", "a lighthouse at dusk", "--seed", "7", "--iterations", "2",
                            "--out", str(root / "out")]) == 0
    assert cli.main(base + ["generate", "a fox in the snow", "--seeds", "3", "4", "--out", str(root / "cand")]) == 0
    return root


def test_personalize_writes_pngs_with_provenance(personalized):
    out = personalized / "out"
    for side in ("baseline", "personalized", "side-by-side"):
        info = read_provenance(out / f"seed7-{side}.png")
        assert info["prompt"] == "a lighthouse at dusk" and info["seed"] == 7 and info["generator"] == "embedded"
        assert info["role"] == side and info["weights"] == {"user": 0.75, "prompt_consistency": 0.5}
        assert info["fit"]["profile"] == "alice" and info["fit"]["n_pairs"] == 16
        assert info["fit"]["model"] == "auto" and "fitted_at" in info["fit"]
    assert set(read_provenance(out / "seed7-personalized.png")["scores"]) == {"user", "prompt_consistency"}
    assert read_provenance(out / "seed7-personalized.png")["params"]["iterations"] == 2


def test_the_side_by_side_is_labelled(personalized):
    out = personalized / "out"
    sheet = Image.open(out / "seed7-side-by-side.png").convert("L")
    baseline = Image.open(out / "seed7-baseline.png")
    assert sheet.height > baseline.height  # a caption band under the images
    band = sheet.crop((0, baseline.height, sheet.width, sheet.height))
    dark = sum(band.histogram()[:128])
    assert dark > 200, "the caption band has no text drawn on it"


def test_generate_out_writes_pngs_with_provenance(personalized):
    files = sorted((personalized / "cand").glob("*.png"))
    assert len(files) == 2
    seeds = sorted(read_provenance(f)["seed"] for f in files)
    assert seeds == [3, 4] and all(read_provenance(f)["role"] == "candidate" for f in files)


def test_personalize_and_generate_never_write_over_a_file_of_the_persons(personalized, capsys):
    """Found by a review: `personalize --out out2` replaced out2/seed7-baseline.png, a file of
    the person's, where `grid --out` and `export` refuse."""
    base = ["--data", str(personalized / "data"), "--model", "embedded"]
    mine = personalized / "mine"
    mine.mkdir()
    (mine / "seed7-side-by-side.png").write_text("my notes")
    capsys.readouterr()
    assert cli.main(base + ["personalize", "alice", "a lighthouse at dusk", "--seed", "7", "--iterations", "1",
                            "--out", str(mine)]) == 2
    assert "is not an image PrefStudio wrote" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["seed7-side-by-side.png"]  # nothing written beside it either
    assert (mine / "seed7-side-by-side.png").read_text() == "my notes"
    # a run's own files are PrefStudio's: running the same command again replaces them
    again = ["personalize", "alice", "a lighthouse at dusk", "--seed", "7", "--iterations", "1",
             "--out", str(personalized / "out")]
    assert cli.main(base + again) == 0
    cand = sorted(p.name for p in (personalized / "cand").iterdir())  # generate's names for seeds 3 and 4
    mine_too = personalized / "mine-too"
    mine_too.mkdir()
    (mine_too / cand[0]).write_text("my notes")
    capsys.readouterr()
    assert cli.main(base + ["generate", "a fox in the snow", "--seeds", "3", "4", "--out", str(mine_too)]) == 2
    assert "is not an image PrefStudio wrote" in capsys.readouterr().err
    assert [p.name for p in mine_too.iterdir()] == [cand[0]] and (mine_too / cand[0]).read_text() == "my notes"


def test_only_a_png_with_prefstudios_own_record_counts_as_written_by_it(tmp_path):
    """Found by a review: a PNG whose prefstudio chunk was just `null` counted as PrefStudio's,
    so `generate --out` wrote over it; one of 5,000 digits crashed the check."""
    from prefstudio.store.image_files import write_png, written_by_prefstudio

    for chunk in ("null", "9" * 5000, '{"x": 1}'):
        path = tmp_path / f"forged-{len(chunk)}.png"
        path.write_bytes(png_with_text(prefstudio=chunk))
        assert not written_by_prefstudio(path)
    _, stored = write_png(picture(), {"prompt": "a kite", "seed": 3, "generator": "embedded", "params": {}}, tmp_path)
    made = write_png_with_provenance(picture(), tmp_path / "made.png", INFO)
    assert written_by_prefstudio(stored) and written_by_prefstudio(made)
