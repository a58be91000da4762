"""Durable file writes: a reader sees the old file or the whole new one, never a part, even
after a crash. Below the store and provenance, which both write files this way."""
import os
import tempfile
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """mkdir -p that also makes each new directory entry durable; new folders are owner-only
    (files are too: mkstemp makes them 0600)."""
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    directory.mkdir(mode=0o700, exist_ok=True)
    _fsync_dir(directory.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part, even after a crash."""
    path = Path(path)
    _make_dirs(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
