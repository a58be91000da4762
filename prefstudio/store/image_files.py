"""Image files: reading untrusted uploads safely, writing generated PNGs by content.

Uploads and profile files are data from outside: their byte size and pixel count
are bounded before anything is decoded, and only a few raster formats are read
(PIL's EPS plugin, for one, would run Ghostscript). Generated images are written
once, named by the SHA-256 of their PNG bytes, with every generation parameter in
the PNG's text chunks so the file alone says how to make it again.
"""
import hashlib
import io
import json
import os
import re
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from prefstudio import validation
from prefstudio.atomic_write import write_atomically
from prefstudio.provenance import PARAMETERS_KEY, a1111_parameters
from prefstudio.errors import InvalidInput, echo

READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# Enough of each format's header to name it when PIL cannot even open the data.
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
}
METADATA_KEY = "prefstudio"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP"


def open_regular_file(path: str | os.PathLike):
    """Open `path` for reading in binary, refusing (InvalidInput) anything but a regular
    file: opening a FIFO would wait forever for a writer, a device could be endless.
    O_NONBLOCK makes the open itself return at once; the fstat of what was opened decides."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{path} is not a regular file")
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bounded(source: str | os.PathLike | bytes, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            # O_NONBLOCK: opening a FIFO would otherwise wait forever for a writer; the
            # fstat of what was opened then refuses anything but a regular file.
            with open_regular_file(path) as file:
                size = os.fstat(file.fileno()).st_size
                if size > max_bytes:  # refused before reading a byte
                    raise InvalidInput(f"image file is {validation.size_over_limit(size, max_bytes)}")
                data = file.read(max_bytes + 1)  # +1: the file may have grown since fstat
        except OSError as error:
            raise InvalidInput(f"cannot read {echo(str(path))}: {error.strerror or error}") from None
    if len(data) > max_bytes:
        if isinstance(source, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"image is {validation.size_over_limit(len(data), max_bytes)}")
        # The file grew after stat: only max_bytes + 1 of it were read.
        raise InvalidInput(f"image file is over the limit of {max_bytes / 2**20:.0f} MB")
    if not data:
        raise InvalidInput("not an image: the data is empty")
    return data


def _format_of(data: bytes) -> str | None:
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WebP"
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode -> RGB; transparent pixels become white, as on a page."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: a plain convert would clip everything above 255 to white.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_untrusted_image(
    source: str | os.PathLike | bytes,
    max_bytes: int = validation.MAX_IMAGE_BYTES,
    max_pixels: int = validation.MAX_IMAGE_PIXELS,
    max_side: int = validation.MAX_IMAGE_SIDE,
) -> Image.Image:
    """Decode an upload into an RGB image, or raise InvalidInput saying what is wrong.

    Order matters: byte size, then the header's width×height and sides, and only then
    the pixels, so a decompression bomb (a few KB on disk, 100+ MP decoded) is refused
    without allocating it. Only regular files are opened.
    """
    data = _read_bounded(source, max_bytes)
    readable = ", ".join(READABLE_FORMATS[:-1]) + " or " + READABLE_FORMATS[-1]
    try:
        # PIL warns above MAX_IMAGE_PIXELS (89 MP) and raises above twice that, on open.
        # The warning is silenced here because the check below refuses those images
        # anyway, with their real size; the error is turned into InvalidInput.
        # (catch_warnings is process-wide; concurrent calls can at worst leave this
        # filter installed, and the check below does not depend on filters.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
    except Image.DecompressionBombError as error:
        # PIL says the image's pixel count ("Image size (N pixels) exceeds ..."); its bound if not.
        said = re.search(r"\((\d+) pixels\)", str(error))
        size = _megapixels(int(said[1])) if said else f"over {_megapixels(2 * Image.MAX_IMAGE_PIXELS)}"
        raise InvalidInput(f"image is {size} (a decompression bomb); the limit is {_megapixels(max_pixels)}") from None
    except UnidentifiedImageError:
        fmt = _format_of(data)
        if fmt:
            raise InvalidInput(f"truncated or corrupt {fmt}: its header cannot be read") from None
        raise InvalidInput(f"not an image: expected {readable} data") from None
    except Exception as error:  # PIL's plugins raise many types on malformed headers
        raise InvalidInput(f"truncated or corrupt {_format_of(data) or 'image'}: {error}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise InvalidInput(
            f"image is {width}×{height} = {_megapixels(width * height)}; "
            f"the limit is {_megapixels(max_pixels)}"
        )
    if width == 0 or height == 0:
        raise InvalidInput(f"image is {width}×{height}: it has no pixels")
    if max(width, height) > max_side:
        raise InvalidInput(f"image is {width}×{height}; no side may exceed {max_side:,} pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, zlib errors...
        raise InvalidInput(f"truncated or corrupt {image.format or 'image'}: {error}") from None


# --- content-addressed PNG files -------------------------------------------------


def make_private(path: Path, mode: int) -> None:
    """Take group and other access away from a file or folder of ours (one made by an older
    version, or under a loose umask); one owned by someone else is left as it is."""
    status = os.stat(path)
    if status.st_mode & 0o077 and status.st_uid == os.getuid():
        os.chmod(path, mode)


def png_path(sha256: str, images_dir: Path) -> Path:
    """images/ab/abcdef….png: two-letter folders keep directories small."""
    return Path(images_dir) / sha256[:2] / f"{sha256}.png"


def store_png_bytes(png: bytes, images_dir: Path) -> tuple[str, Path]:
    """Write PNG bytes under their SHA-256; the same bytes twice are written once."""
    sha256 = hashlib.sha256(png).hexdigest()
    path = png_path(sha256, images_dir)
    if not path.exists():
        write_atomically(path, png)
    return sha256, path


def encode_png(image: Image.Image, metadata: dict) -> bytes:
    """PNG bytes with `metadata` as one JSON iTXt chunk, plus plain `prompt`/`seed` chunks
    and an AUTOMATIC1111-style `parameters` chunk that other tools (image viewers, exiftool,
    Stable Diffusion UIs) show: every stored image, and so every exported one, says how it
    was made."""
    try:
        text = json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"image metadata must be plain JSON values: {error}") from None
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_KEY, text)
    for key in ("prompt", "seed", "generator"):
        if metadata.get(key) is not None:
            info.add_text(key, str(metadata[key]))  # falls back to iTXt for non-Latin-1
    if metadata.get("prompt") is not None:
        params = metadata.get("params") or {}
        fit = params.get("fit") if isinstance(params.get("fit"), dict) else {}
        described = {"prompt": metadata["prompt"], "seed": metadata.get("seed"),
                      "generator": metadata.get("generator", ""), "params": params,
                      "weights": params.get("weights"),
                      "fit": {"profile": params.get("personalized_for"), **fit} if params.get("personalized_for") else None}
        info.add_text(PARAMETERS_KEY, a1111_parameters(described, image.size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(image: Image.Image, metadata: dict, images_dir: Path) -> tuple[str, Path]:
    """Encode and store a PNG by content; returns (sha256 of the PNG bytes, its path)."""
    return store_png_bytes(encode_png(image, metadata), images_dir)


def read_png_metadata(path: str | os.PathLike) -> dict:
    """The `prefstudio` JSON chunk of a PNG written by `write_png`."""
    try:
        with Image.open(path, formats=("PNG",)) as image:
            # Text chunks before the pixel data are parsed on open, without decoding.
            text = image.info.get(METADATA_KEY)
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidInput(f"cannot read PNG metadata of {path}: {error}") from None
    if text is None:
        raise InvalidInput(f"{path} has no PrefStudio metadata (it was not written by PrefStudio)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # ValueError: a number of thousands of digits, too
        raise InvalidInput(f"PrefStudio metadata of {path} is not valid JSON: {error}") from None


def written_by_prefstudio(path: Path) -> bool:
    """Whether `path` is a PNG carrying PrefStudio's own record (a prompt and the generator that
    made it), which a command may replace: any chunk of that name is not enough."""
    try:
        record = read_png_metadata(path)
    except InvalidInput:
        return False
    return isinstance(record, dict) and all(isinstance(record.get(key), str) for key in ("prompt", "generator"))


# --- gallery thumbnails ------------------------------------------------------------


def thumbnail(path: str | os.PathLike, size: int = 192) -> Path:
    """A JPEG at most `size` px on its longer side, cached in thumbs/ beside the image.

    Images are content-addressed and never change, so an existing thumbnail is current.
    """
    path = Path(path)
    if not 16 <= size <= 1024:
        raise InvalidInput(f"thumbnail size {size} is outside [16, 1024] pixels")
    thumb = path.parent / "thumbs" / f"{path.stem}-{size}.jpg"
    if thumb.exists():
        return thumb
    image = load_untrusted_image(path)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    write_atomically(thumb, buffer.getvalue())
    return thumb
