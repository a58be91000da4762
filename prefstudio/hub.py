"""Where model weights come from: a local folder, or the Hugging Face cache.

PrefStudio runs offline by default (HF_HUB_OFFLINE=1, see privacy.py). Then a hub id
loads only if its files are already in the local Hugging Face cache; otherwise the
person gets a `ModelUnavailable` naming the model, its size and how to get it,
at once: nothing waits on the network and no stack trace reaches them.
"""
import os
import re
from contextlib import contextmanager
from pathlib import Path

from prefstudio.errors import ModelUnavailable, NotFound

# "org/name", as the Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "ON", "YES", "TRUE"}


def downloads_allowed() -> bool:
    """Read at call time: the CLI may set it after import (`--allow-downloads`)."""
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return offline.upper() not in _TRUE


def is_local(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def how_to_get(hub_id: str, size: str) -> str:
    return (
        f"{hub_id} ({size}) is not on this machine and downloads are off. Either fetch it once "
        f"with `hf download {hub_id}` (older huggingface_hub: `huggingface-cli download {hub_id}`) "
        f"and run again (it then loads offline from the Hugging Face cache), or run with "
        f"--allow-downloads to fetch it on first use, or pass a local folder that holds it."
    )


def resolve(spec: str, size: str = "size unknown") -> str:
    """A local folder path, or a hub id whose files can be read now.

    Offline, a hub id resolves to its snapshot folder in the local cache, so loading never
    touches the network; a partial snapshot still fails later, inside `loading`.
    """
    if is_local(spec):
        return str(Path(spec).expanduser())
    if not _HUB_ID.match(spec):
        raise NotFound(
            f"no model folder at {spec!r}, and it is not a Hugging Face id of the form org/name"
        )
    if downloads_allowed():
        return spec
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(spec, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ModelUnavailable(how_to_get(spec, size)) from None


def hub_file(spec: str, size: str) -> Path:
    """A single file: a local path, or "org/name/path/in/repo" from the cache or the Hub."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    parts = spec.split("/")
    if len(parts) < 3 or not _HUB_ID.match("/".join(parts[:2])):
        raise NotFound(f"no file at {spec!r}, and it is not of the form org/name/file on the Hub")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=not downloads_allowed()))
    except LocalEntryNotFoundError:
        raise ModelUnavailable(how_to_get(spec, size)) from None
    except OSError as err:
        raise ModelUnavailable(f"could not fetch {spec} ({size}): {err}") from None


@contextmanager
def loading(spec: str, size: str):
    """Turn the loaders' OSError (missing or incomplete files, no network) into a readable error."""
    try:
        yield
    except OSError as err:
        if is_local(spec):
            raise ModelUnavailable(
                f"the model folder {spec} could not be loaded: {err}".strip()
            ) from None
        if not downloads_allowed():
            raise ModelUnavailable(
                how_to_get(spec, size) + " (The local cache holds only part of it.)"
            ) from None
        raise ModelUnavailable(f"could not download {spec} ({size}): {err}") from None
