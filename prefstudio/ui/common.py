"""What every tab shares: the studio, one lock for model work, user-facing errors, thumbnails."""
import functools
import hashlib
import html
import io
import inspect
import logging
import math
import re
import secrets
import shutil
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from prefstudio.errors import InvalidInput, PrefStudioError, disk_full, served
from prefstudio.store.image_files import thumbnail, write_atomically
from prefstudio.store.profile_access import ProfileAccess
from prefstudio.studio import Studio
from prefstudio.ui.access import EXPORT_FOLDER_PREFIX, SessionAccess, refusal

GALLERY_THUMB = 192  # px, the longer side of a gallery thumbnail
VIEW_SIZE = 512  # px, the single image being judged or compared
PROMPT_LINES = 3  # a prompt box grows to this, then scrolls

KIND_MARKS = {"like": "👍", "dislike": "👎", "pair": "≻", "tie": "=", "skip": "⏭"}


@dataclass
class AppContext:
    studio: Studio
    # The models are not thread-safe (lazy loads, the encoder's shared-forward memo) and the
    # CPU has no cores to spare: model work runs one step at a time. Store reads and
    # judgments do not take it, so a click is recorded while an optimisation runs.
    compute: threading.Lock = field(default_factory=threading.Lock)
    access: SessionAccess = field(init=False)
    # What goes on for a profile in the background, one check per kind of work: each says what
    # (as "a Generate run") or None. Such work is stored under the name it started with.
    under_way: list[Callable[[str], str | None]] = field(default_factory=list, init=False)
    _streaming: Counter = field(default_factory=Counter, init=False)  # (profile key, what) -> streams
    _streaming_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _exports: dict[int, Path] = field(default_factory=dict, init=False)
    _exports_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self):
        self.access = SessionAccess(ProfileAccess(self.store))
        self.under_way.append(self._streaming_for)

    @contextmanager
    def streaming(self, name: str, what: str):
        """Marks work that a page's stream does for a profile (as "a trade-off grid") while it runs;
        it ends with the stream, closed by the page going away too."""
        key = (name.casefold(), what)
        with self._streaming_lock:
            self._streaming[key] += 1
        try:
            yield
        finally:
            with self._streaming_lock:
                self._streaming[key] -= 1
                if not self._streaming[key]:
                    del self._streaming[key]

    def _streaming_for(self, name: str) -> str | None:
        with self._streaming_lock:
            return next((what for key, what in self._streaming if key == name.casefold()), None)

    @property
    def store(self):
        return self.studio.store

    def export_path(self, profile_id: int, file_name: str) -> Path:
        """Where to write a profile's export: a new folder with an unguessable name in gradio's
        upload folder, so gradio serves it as it is (no copy) to the session it is returned
        to, and its cache cleaning deletes it. The profile's previous export goes now."""
        with self._exports_lock:
            previous = self._exports.pop(profile_id, None)
            if previous is not None:
                shutil.rmtree(previous.parent, ignore_errors=True)
            folder = Path(gr.utils.get_upload_folder()) / f"{EXPORT_FOLDER_PREFIX}{secrets.token_urlsafe(24)}"
            folder.mkdir(mode=0o700, parents=True)  # private, as the file written in it
            self._exports[profile_id] = path = folder / file_name
        return path

    def check_nothing_under_way(self, name: str) -> None:
        """Before a rename or a delete: refused while work for the profile goes on."""
        for check in self.under_way:
            going = check(name)
            if going:
                raise InvalidInput(f"{name} has {going} going: stop it or let it finish first")

    @property
    def ui_cache(self) -> Path:
        return self.store.data_dir / "ui-cache"

    def picture_file(self, picture: Image.Image) -> str:
        """A picture as a PNG file named by its pixels, written once. A live view hands gradio
        the same pictures update after update: handed as pictures, gradio would write each again
        in place while the page may still be fetching it."""
        rgb = picture.convert("RGB")
        digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        path = self.ui_cache / "pictures" / f"{digest[:32]}.png"
        if not path.exists():
            buffer = io.BytesIO()
            rgb.save(buffer, format="PNG")
            write_atomically(path, buffer.getvalue())
        return str(path)

    def run(self, fn, *args, **kwargs):
        with self.compute:
            return fn(*args, **kwargs)

    def steps(self, iterator: Iterator) -> Iterator:
        """Iterate a long computation, holding the lock for each step only (never across a
        yield to the browser, so an abandoned run cannot keep it)."""
        while True:
            with self.compute:
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item


log = logging.getLogger(__name__)


def _shown(error: Exception) -> gr.Error:
    """The gr.Error for a PrefStudio error or a full disk; anything else is re-raised."""
    full = disk_full(error)
    if full is not None:
        log.error("%s (%s)", full, error)  # one line in the server log too, not a traceback
        return refusal(str(full), title="Not saved")
    if isinstance(error, PrefStudioError):
        # The person's mistake, not a bug: a line in the log, no traceback.
        log.info("refused: %s", error)
        return refusal(served(error))
    raise error


# Markdown's own punctuation, and what the renderer makes links of by itself: ':' of a scheme
# (http://…), '.' of www.…, '@' of an e-mail address. Escaped, each shows as it is.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~:.@=-])")


def markdown_text(text: str) -> str:
    """Text from a person or a file (a prompt, an imported fit's reason) as Markdown that shows
    it literally: no link, image or HTML of its own, so a profile file cannot make the page load
    an outside address."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(str(text), quote=False))


def notes_text(notes: list[str]) -> str:
    """Notes on a prompt (what of it a model does not read), said after a status line."""
    return "".join(f" Note: {markdown_text(note)}." for note in notes)


def user_errors(fn):
    """PrefStudio errors and a full disk become a visible gr.Error with a message a person
    can act on; nothing else is caught (anything else is a bug and gradio reports it as one)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (PrefStudioError, OSError, sqlite3.OperationalError) as error:
                raise _shown(error) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PrefStudioError, OSError, sqlite3.OperationalError) as error:
            raise _shown(error) from None
    return call


def empty_after(event, upload_box) -> None:
    """Empty an upload box once its event ends, refused or not: the upload is deleted after
    each call (ui/access.py), so a retry must upload the file again, not name a lost one.
    (`then` runs after a success only here, so `failure` is listened to as well.)"""
    for after in (event.then, event.failure):
        after(lambda: None, None, upload_box, api_visibility="private")


def thumb(path: Path, size: int = GALLERY_THUMB) -> str:
    return str(thumbnail(path, size))


def pair_thumb(ctx: AppContext, sha_a: str, sha_b: str, size: int = GALLERY_THUMB) -> str:
    """A ≻ B as one gallery item: the two thumbnails side by side (cached by content)."""
    path = ctx.ui_cache / "pairs" / f"{sha_a[:20]}-{sha_b[:20]}-{size}.jpg"
    if not path.exists():
        left, right = (Image.open(thumbnail(ctx.store.image_record(s).path, size)).convert("RGB")
                       for s in (sha_a, sha_b))
        gap = max(4, size // 32)
        sheet = Image.new("RGB", (left.width + right.width + gap, max(left.height, right.height)), "white")
        sheet.paste(left, (0, 0))
        sheet.paste(right, (left.width + gap, 0))
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=88)
        write_atomically(path, buffer.getvalue())
    return str(path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def counts_line(ctx: AppContext, profile: str | None) -> str:
    """The running count of a profile's judgments, for the status lines."""
    if not profile:
        return "No profile chosen: create one at the top of the page."
    counts = ctx.store.counts(profile)
    total = sum(counts.values())
    parts = [f"{counts['like']} 👍", f"{counts['dislike']} 👎", _count(counts["pair"], "pair"),
             _count(counts["tie"], "tie"), f"{counts['skip']} skipped"]
    return f"**{isolated(profile)}** · {_count(total, 'judgment')}: " + " · ".join(parts)


def isolated(name: str) -> str:
    """A name holding right-to-left letters, isolated from the text around it (U+2068 … U+2069):
    else the line's order mixes with the name's and a count reads as part of it."""
    if any(unicodedata.bidirectional(c) in ("R", "AL") for c in name):
        return f"\u2068{name}\u2069"
    return name


def prompt_table_widths(columns: int) -> list[str]:
    """Column widths of a per-prompt table: a long prompt wraps in its own column instead of
    pushing the numbers out of view. Fixed, not shares of the page: on a phone the table
    scrolls sideways rather than squeezing each heading to a letter a line."""
    return ["320px"] + ["100px"] * (columns - 1)


def gallery_height(items: int, columns: int, width: int = 1180) -> int:
    """Pixels for a gallery that shows `items` square thumbnails with no empty band below."""
    rows = max(1, math.ceil(items / columns))
    return rows * (width // columns + 6) + 12


def random_seed() -> int:
    """Seeds a person can read and type again: a million of them is variety enough."""
    return secrets.randbelow(10**6)


def short(sha: str) -> str:
    return sha[:8]
