import hashlib
import io
import os
import stat
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from prefstudio.errors import InvalidInput, echo
from prefstudio.store.image_files import (
    load_untrusted_image,
    read_png_metadata,
    thumbnail,
    write_png,
)

REPO = Path(__file__).resolve().parents[1]


def bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, built row by row so the test itself
    never holds the pixels: 12000×9000 is 108 MP decoded but ~13 KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    rows_per_block = max(1, 2**20 // len(row))  # ~1 MB at a time: tall images build fast
    blocks = [compressor.compress(row * min(rows_per_block, height - start))
              for start in range(0, height, rows_per_block)]
    pixels = b"".join(blocks) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise_image(width=64, height=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# --- reading untrusted images -------------------------------------------------------


def test_png_from_bytes_and_path_decodes_to_identical_rgb(tmp_path):
    image = noise_image()
    data = encoded(image)
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        loaded = load_untrusted_image(source)
        assert loaded.mode == "RGB" and loaded.size == (64, 48)
        assert np.array_equal(np.asarray(loaded), np.asarray(image))


def test_transparent_palette_and_rgba_are_composited_on_white():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)  # one red pixel, the rest transparent black
    loaded = np.asarray(load_untrusted_image(encoded(palette, transparency=0)))
    assert loaded[0, 0].tolist() == [255, 0, 0]
    assert loaded[1, 1].tolist() == [255, 255, 255]

    half_blue = Image.new("RGBA", (4, 4), (0, 0, 255, 128))
    loaded = np.asarray(load_untrusted_image(encoded(half_blue)))
    assert loaded[0, 0].tolist() == pytest.approx([127, 127, 255], abs=1)


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    loaded = load_untrusted_image(encoded(wide, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256)
    loaded = np.asarray(load_untrusted_image(encoded(Image.fromarray(ramp))))
    assert loaded[:, :, 0].ravel().tolist() == list(range(256))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello, I am a text file\n" * 10, "not an image"),
        (b"", "not an image"),
        (os.urandom(4096), "not an image"),
        (encoded(noise_image())[:40], "truncated or corrupt PNG"),
        (encoded(noise_image())[: len(encoded(noise_image())) // 2], "truncated or corrupt PNG"),
        (encoded(noise_image(), "JPEG")[:300], "truncated or corrupt JPEG"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
    ],
    ids=["text", "empty", "random", "png-header-only", "png-half", "jpeg-cut", "eps"],
)
def test_non_images_and_damaged_images_are_refused(data, message):
    with pytest.raises(InvalidInput, match=message):
        load_untrusted_image(data)


def test_size_bounds_are_checked(tmp_path):
    data = encoded(noise_image(100, 100))
    with pytest.raises(InvalidInput, match="the limit is"):
        load_untrusted_image(data, max_bytes=len(data) - 1)
    with pytest.raises(InvalidInput, match="100×100 = 0 MP; the limit is 0 MP"):
        load_untrusted_image(data, max_pixels=9_999)
    # A file over the byte limit is refused from its size alone (sparse: no disk used).
    big = tmp_path / "huge.png"
    with open(big, "wb") as file:
        file.truncate(65 * 2**20)
    with pytest.raises(InvalidInput, match="65.0 MB; the limit is 64 MB"):
        load_untrusted_image(big)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_untrusted_image(tmp_path / "missing.png")


def test_decompression_bombs_are_refused_by_their_header():
    data = bomb_png(12000, 9000)
    assert len(data) < 50_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidInput, match="image is 12000×9000 = 108 MP; the limit is 40 MP"):
            load_untrusted_image(data)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    # Beyond PIL's own hard bound (2 × 89 MP) PIL refuses on open; still InvalidInput, with the
    # image's own size (a hostile review found "over 179 MP" said of a 400 MP image).
    with pytest.raises(InvalidInput, match=r"^image is 200 MP \(a decompression bomb\); the limit is 40 MP$"):
        load_untrusted_image(bomb_png(20000, 10000))
    with pytest.raises(InvalidInput, match=r"^image is 400 MP \(a decompression bomb\); the limit is 40 MP$"):
        load_untrusted_image(bomb_png(20000, 20000))


def test_decompression_bomb_is_refused_without_allocating_its_pixels(tmp_path):
    """Peak memory of a fresh process grows by far less than the 108 MB the pixels need."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(12000, 9000))
    script = (
        "import resource, sys\n"
        "from prefstudio.store.image_files import load_untrusted_image\n"
        "from prefstudio.errors import InvalidInput\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_untrusted_image(sys.argv[1])\n"
        "except InvalidInput:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('accepted')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    growth_kb = int(result.stdout.split()[-1])
    assert growth_kb < 20_000, f"peak memory grew by {growth_kb} KB"


def test_a_very_long_side_is_refused_from_the_header_before_decoding():
    """1×40,000,000 is within the 40 MP bound, yet PIL takes ~13 s and 1 GB to decode it."""
    data = bomb_png(1, 40_000_000)
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match="1×40000000; no side may exceed 16,384 pixels"):
        load_untrusted_image(data)
    assert time.perf_counter() - start < 1.0


def test_only_regular_files_are_opened(tmp_path):
    """A FIFO used to block open() forever (waiting for a writer); a folder is no image."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            load_untrusted_image(fifo)
        except InvalidInput as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the stuck open() so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("reading a FIFO blocked")
    assert outcome == [f"{fifo} is not a regular file"]
    with pytest.raises(InvalidInput, match="is not a regular file"):
        load_untrusted_image(tmp_path)


# --- content-addressed PNGs ---------------------------------------------------------


METADATA = {
    "prompt": "a lighthouse at dusk, café 🌸",
    "seed": 7,
    "generator": "embedded",
    "params": {"resolution": 64, "steps": 1, "guidance": 0.0},
}


def test_write_png_names_the_file_by_its_bytes_and_keeps_metadata(tmp_path):
    image = noise_image()
    sha, path = write_png(image, METADATA, tmp_path / "images")
    data = path.read_bytes()
    assert sha == hashlib.sha256(data).hexdigest()
    assert path == tmp_path / "images" / sha[:2] / f"{sha}.png"
    assert read_png_metadata(path) == METADATA
    with Image.open(path) as reopened:  # plain chunks for other tools
        assert reopened.text["prompt"] == METADATA["prompt"]
        assert reopened.text["seed"] == "7"
        assert reopened.text["generator"] == "embedded"
        assert np.array_equal(np.asarray(reopened.convert("RGB")), np.asarray(image))


def test_writing_the_same_content_twice_is_a_no_op(tmp_path):
    images_dir = tmp_path / "images"
    sha, path = write_png(noise_image(), METADATA, images_dir)
    written_at = path.stat().st_mtime_ns
    assert write_png(noise_image(), METADATA, images_dir) == (sha, path)
    assert path.stat().st_mtime_ns == written_at
    other, _ = write_png(noise_image(), {**METADATA, "seed": 8}, images_dir)
    assert other != sha  # the metadata is part of the content
    files = sorted(p.name for p in images_dir.rglob("*") if p.is_file())
    assert files == sorted([f"{sha}.png", f"{other}.png"])  # no temporary files left


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(InvalidInput, match="JSON"):
        write_png(noise_image(), {**METADATA, "params": {"x": object()}}, tmp_path)
    assert not list(tmp_path.rglob("*.png"))


def test_png_without_prefstudio_metadata_is_reported(tmp_path):
    path = tmp_path / "plain.png"
    noise_image().save(path)
    with pytest.raises(InvalidInput, match="no PrefStudio metadata"):
        read_png_metadata(path)


def test_thumbnail_is_small_cached_and_beside_the_image(tmp_path):
    _, path = write_png(noise_image(600, 400), METADATA, tmp_path / "images")
    thumb = thumbnail(path)
    assert thumb.parent == path.parent / "thumbs"
    with Image.open(thumb) as small:
        assert small.size == (192, 128)
    made_at = thumb.stat().st_mtime_ns
    assert thumbnail(path) == thumb and thumb.stat().st_mtime_ns == made_at
    with Image.open(thumbnail(path, size=64)) as smaller:
        assert smaller.size == (64, 43)


def test_a_damaged_webp_is_named_and_other_riff_files_are_not_images():
    webp = encoded(noise_image(), "WEBP")
    with pytest.raises(InvalidInput, match="^truncated or corrupt WebP"):
        load_untrusted_image(webp[:20])
    wave = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + bytes(28)  # a sound file, also RIFF
    with pytest.raises(InvalidInput, match="^not an image: expected PNG, JPEG, WEBP, GIF or BMP data$"):
        load_untrusted_image(wave)
    with pytest.raises(InvalidInput, match="^not an image"):
        load_untrusted_image(b"NOT-RIFFWEBP" + bytes(40))  # "WEBP" where WebP has it, without RIFF


def test_the_limits_are_inclusive_and_megapixels_are_rounded(tmp_path):
    data = encoded(noise_image(100, 100))
    path = tmp_path / "exact.png"
    path.write_bytes(data)
    assert load_untrusted_image(path, max_bytes=len(data)).size == (100, 100)  # exactly the limit: read
    assert load_untrusted_image(data, max_bytes=len(data), max_pixels=100 * 100).size == (100, 100)
    wide = encoded(Image.new("RGB", (1500, 1000), (10, 20, 30)))
    with pytest.raises(InvalidInput, match="^image is 1500×1000 = 2 MP; the limit is 1 MP$"):  # 1.5 MP
        load_untrusted_image(wide, max_pixels=1_000_000)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_every_sixteen_bit_grey_layout_is_scaled_not_clipped(mode):
    from prefstudio.store.image_files import _to_rgb

    grey = Image.new(mode, (2, 2), 200 * 256)  # 78 % grey in 16 bits
    assert _to_rgb(grey).getpixel((0, 0)) == (200, 200, 200)


@pytest.mark.parametrize("mode, clear", [("LA", (0, 0)), ("PA", (0, 0)), ("RGBa", (0, 0, 0, 0)), ("RGBA", (0, 0, 0, 0))])
def test_every_transparent_mode_turns_clear_pixels_white(mode, clear):
    from prefstudio.store.image_files import _to_rgb

    image = Image.new(mode, (1, 1), clear)
    assert _to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_png_metadata_is_read_from_pngs_only_with_one_line_errors(tmp_path):
    jpeg = tmp_path / "photo.png"  # a JPEG, whatever its name says
    noise_image().save(jpeg, format="JPEG")
    with pytest.raises(InvalidInput, match=f"^cannot read PNG metadata of {jpeg}: "):
        read_png_metadata(jpeg)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("prefstudio", "{not json")
    broken = tmp_path / "broken.png"
    noise_image().save(broken, pnginfo=info)
    with pytest.raises(InvalidInput, match=f"^PrefStudio metadata of {broken} is not valid JSON: "):
        read_png_metadata(broken)


def test_thumbnail_sizes_and_quality(tmp_path):
    _, path = write_png(noise_image(600, 400), METADATA, tmp_path / "images")
    with Image.open(thumbnail(path, size=16)) as tiny, Image.open(thumbnail(path, size=1024)) as large:
        assert tiny.size == (16, 11) and large.size == (600, 400)  # never enlarged
    for size in (15, 1025):
        with pytest.raises(InvalidInput, match=rf"^thumbnail size {size} is outside \[16, 1024\] pixels$"):
            thumbnail(path, size=size)
    # A Lanczos reduction saved as a JPEG of quality 88: sharp, and small enough for a gallery.
    reference = Image.open(path).convert("RGB")
    reference.thumbnail((192, 192), Image.Resampling.LANCZOS)
    expected = io.BytesIO()
    reference.save(expected, format="JPEG", quality=88)
    assert thumbnail(path).read_bytes() == expected.getvalue()


def test_an_image_file_of_exactly_the_byte_limit_is_read_to_its_last_byte(tmp_path):
    """A BMP ends with its pixels: a byte short, its last pixel would be lost."""
    image = Image.new("RGB", (4, 2), (10, 20, 30))
    image.putpixel((3, 0), (250, 1, 2))  # BMP rows run bottom-up: this pixel's bytes end the file
    data = encoded(image, "BMP")
    path = tmp_path / "exact.bmp"
    path.write_bytes(data)
    assert load_untrusted_image(path, max_bytes=len(data)).getpixel((3, 0)) == (250, 1, 2)


def test_a_file_that_grew_after_its_size_was_checked_is_refused_having_read_one_byte_past_the_limit(
        tmp_path, monkeypatch):
    import tracemalloc
    from types import SimpleNamespace

    path = tmp_path / "growing.png"
    with open(path, "wb") as file:  # sparse: 64 MB that take no disk space
        file.write(encoded(noise_image()))
        file.truncate(64 * 2**20)
    limit, real_fstat = 2**20, os.fstat
    # The size the file had when it was checked, before it grew.
    monkeypatch.setattr(os, "fstat", lambda fd: SimpleNamespace(st_mode=real_fstat(fd).st_mode, st_size=limit))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput) as caught:
            load_untrusted_image(path, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == "image file is over the limit of 1 MB"
    assert peak < 4 * limit, f"{peak:,} bytes allocated"  # not the 64 MB the file holds now


def test_a_file_that_cannot_be_opened_is_named_with_the_reason(tmp_path):
    gone = tmp_path / "gone.png"
    with pytest.raises(InvalidInput) as caught:
        load_untrusted_image(gone)
    # A long path is cut as every echoed input is: the temporary folder's length varies.
    assert str(caught.value) == f"cannot read {echo(str(gone))}: No such file or directory"
    with pytest.raises(InvalidInput) as short:
        load_untrusted_image(Path("gone.png"))
    assert str(short.value) == "cannot read 'gone.png': No such file or directory"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_empty_data_and_an_empty_file_are_refused_as_empty(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for source in (b"", empty):
        with pytest.raises(InvalidInput) as caught:
            load_untrusted_image(source)
        assert str(caught.value) == "not an image: the data is empty"


def test_pils_other_warnings_about_an_upload_are_not_silenced():
    """Only the decompression-bomb warning is muted (that image is refused anyway, with its
    real size); PIL's word on a malformed file still reaches the log."""
    bad_apng = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
                + png_chunk(b"acTL", struct.pack(">II", 0, 0))  # an animation of 0 frames
                + png_chunk(b"IDAT", zlib.compress(b"\0\x80\x80" * 2)) + png_chunk(b"IEND", b""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_untrusted_image(bad_apng)
    assert loaded.getpixel((1, 1)) == (128, 128, 128)  # read as the still PNG it also is
    assert ["Invalid APNG" in str(w.message) for w in caught] == [True]


def test_a_paletted_png_with_more_transparency_entries_than_colours_is_refused_in_one_line():
    """PIL opens it and fails only on converting to RGB; the refusal is still InvalidInput."""
    png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 3, 0, 0, 0))
           + png_chunk(b"PLTE", bytes([16, 32, 48]) * 2) + png_chunk(b"tRNS", b"\x80" * 300)
           + png_chunk(b"IDAT", zlib.compress(b"\0\1")) + png_chunk(b"IEND", b""))
    with pytest.raises(InvalidInput) as caught:
        load_untrusted_image(png)
    # "image", not "PNG": the failing image is exif_transpose's copy, which has no format.
    assert str(caught.value) == "truncated or corrupt image: palette index out of range"


# --- the provenance every stored (and so every exported) PNG carries ----------------


def png_text(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as image:
        return dict(image.text)


PERSONALIZED = {
    "prompt": "a lighthouse at dusk, café 🌸",
    "seed": 7,
    "generator": "embedded",
    "params": {"personalized_for": "alice", "method": "guidance", "iterations": 12,
               "weights": {"aesthetic": 1.0, "profile": 0.5},
               "fit": {"model": "bradley-terry", "fitted_at": "2026-12-01T10:00:00", "n_pairs": 24,
                       "mode": "full"}},
}


def test_the_prefstudio_chunk_is_sorted_json_keeping_non_ascii_text_as_is():
    """Sorted keys: the same image and settings give the same bytes, so the same file, in
    whatever order the settings were gathered; non-ASCII stays readable in any tool."""
    from prefstudio.store.image_files import encode_png

    metadata = {"seed": 7, "prompt": "café 🌸", "params": {"b": 1, "a": "é"}, "generator": "embedded"}
    png = encode_png(noise_image(), metadata)
    assert png_text(png)["prefstudio"] == (
        '{"generator": "embedded", "params": {"a": "é", "b": 1}, "prompt": "café 🌸", "seed": 7}')
    reordered = {"generator": "embedded", "params": {"a": "é", "b": 1}, "prompt": "café 🌸", "seed": 7}
    assert encode_png(noise_image(), reordered) == png


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_metadata_holding_nan_or_infinity_is_refused_in_one_line(tmp_path, value):
    """NaN is not JSON: a chunk holding it could not be read back by strict readers."""
    with pytest.raises(InvalidInput) as caught:
        write_png(noise_image(), {**METADATA, "params": {"guidance": value}}, tmp_path)
    message = str(caught.value)
    assert message.startswith("image metadata must be plain JSON values: Out of range float values")
    assert "\n" not in message
    assert not list(tmp_path.rglob("*.png"))


def test_the_parameters_chunk_tells_other_tools_how_a_personalized_image_was_made():
    from prefstudio.store.image_files import encode_png

    text = png_text(encode_png(noise_image(), PERSONALIZED))
    assert text["parameters"] == (
        "a lighthouse at dusk, café 🌸\n"
        'Steps: 12, Seed: 7, Size: 64x48, Model: embedded, Method: guidance, Reward weights: "aesthetic=1, profile=0.5", '
        'Profile: alice, Fit: "full, 24 pairs"')
    assert (text["prompt"], text["seed"], text["generator"]) == ("a lighthouse at dusk, café 🌸", "7", "embedded")


def test_an_image_without_generator_or_params_claims_no_model():
    from prefstudio.store.image_files import encode_png

    text = png_text(encode_png(noise_image(4, 2), {"prompt": "a red door", "seed": 3}))
    assert text["parameters"] == "a red door\nSeed: 3, Size: 4x2, Model: "
    assert "generator" not in text


def test_a_fit_is_described_only_for_an_image_made_for_a_profile():
    """A baseline carries no profile: a stray fit record in its params names none."""
    from prefstudio.store.image_files import encode_png

    params = {"fit": {"mode": "full", "n_pairs": 24}}
    text = png_text(encode_png(noise_image(4, 2), {"prompt": "a red door", "seed": 3, "generator": "embedded",
                                                   "params": params}))
    assert text["parameters"] == "a red door\nSeed: 3, Size: 4x2, Model: embedded"


def test_metadata_without_a_prompt_is_stored_without_a_parameters_chunk():
    from prefstudio.store.image_files import encode_png

    text = png_text(encode_png(noise_image(4, 2), {"seed": 3, "generator": "embedded"}))
    assert text == {"prefstudio": '{"generator": "embedded", "seed": 3}', "seed": "3", "generator": "embedded"}


# --- keeping a history private ------------------------------------------------------


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_make_private_takes_group_and_other_access_from_our_files_and_folders(tmp_path):
    """A history made by an older version, or under a loose umask, becomes owner-only."""
    from prefstudio.store.image_files import make_private

    database, images = tmp_path / "history.sqlite3", tmp_path / "images"
    database.write_bytes(b"")
    images.mkdir()
    os.chmod(database, 0o644)
    os.chmod(images, 0o755)
    make_private(database, 0o600)
    make_private(images, 0o700)
    assert (file_mode(database), file_mode(images)) == (0o600, 0o700)


def test_make_private_leaves_a_file_that_is_already_private_as_its_owner_set_it(tmp_path):
    from prefstudio.store.image_files import make_private

    read_only = tmp_path / "history.sqlite3"
    read_only.write_bytes(b"")
    os.chmod(read_only, 0o400)
    make_private(read_only, 0o600)
    assert file_mode(read_only) == 0o400


def test_make_private_leaves_a_file_owned_by_someone_else_alone(tmp_path, monkeypatch):
    from prefstudio.store.image_files import make_private

    shared = tmp_path / "history.sqlite3"
    shared.write_bytes(b"")
    os.chmod(shared, 0o644)
    monkeypatch.setattr(os, "getuid", lambda: shared.stat().st_uid + 1)  # we are not its owner
    make_private(shared, 0o600)
    assert file_mode(shared) == 0o644
