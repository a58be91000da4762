"""The history store: profiles, images, judgments, cached features and fitted models.

One SQLite database (`history.sqlite3`) beside a content-addressed `images/` folder.
WAL with synchronous=FULL: a judgment is on disk when `record_judgment` returns, so
a refresh, a crash or a killed server loses nothing that was acknowledged. One
connection guarded by a lock serves every thread of the Gradio server; each write
is one IMMEDIATE transaction, and other processes wait up to `timeout` seconds.
"""
from __future__ import annotations  # annotations name torch types without importing torch

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from prefstudio.blend import MAX_PRESETS, PROFILE_PREFIX, validate_blend, validate_preset_name
from prefstudio.errors import Busy, InvalidInput, NoSuchJudgment, NoSuchProfile, NotFound, echo
from prefstudio.store.image_files import (
    encode_png,
    load_untrusted_image,
    make_private,
    png_path,
    store_png_bytes,
    write_png,
)
from prefstudio.validation import (
    profile_name_as_stored,
    profile_name_keys,
    validate_profile_name,
    validate_prompt,
    validate_seed,
    whole_number,
)

if TYPE_CHECKING:  # torch is imported where tensors are handled: store-only commands start fast
    import torch

    from prefstudio.generators.base import GeneratedImage

SCHEMA_VERSION = 3  # 2: one current verdict per image and per unordered pair; 3: presets
KINDS = ("like", "dislike", "pair", "tie", "skip")
# like/dislike judge one image, pair (a ≻ b) and tie compare two, skip passes on either.
_IMAGES_PER_KIND = {"like": (1,), "dislike": (1,), "pair": (2,), "tie": (2,), "skip": (1, 2)}
IMPORTED = "import"  # the generator name of images a person uploaded
_MAX_SUBJECTS = 500  # images per verdict lookup: far more than a screen shows, under SQLite's bound
log = logging.getLogger(__name__)

# A verdict's subject: one image (subject_hi = ''), or an unordered pair as (smaller id, larger id).
_SUBJECT_LO = "min(image_a, coalesce(image_b, image_a))"
_SUBJECT_HI = "CASE WHEN image_b IS NULL THEN '' ELSE max(image_a, image_b) END"

# Version 1's tables; a new store is an empty version-1 store upgraded like any other.
_TABLES = """
CREATE TABLE profiles (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created TEXT NOT NULL
);
CREATE TABLE images (
    sha256    TEXT PRIMARY KEY,
    path      TEXT NOT NULL,          -- relative to the data folder
    prompt    TEXT NOT NULL,
    seed      INTEGER,                -- NULL for imported images
    generator TEXT NOT NULL,
    params    TEXT NOT NULL,          -- JSON
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    created   TEXT NOT NULL
);
-- AUTOINCREMENT: an id is never reused after undo, so a stale id in a browser tab
-- can never remove a newer judgment.
CREATE TABLE judgments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('like', 'dislike', 'pair', 'tie', 'skip')),
    image_a    TEXT NOT NULL REFERENCES images(sha256),
    image_b    TEXT REFERENCES images(sha256),
    created    TEXT NOT NULL
);
CREATE TABLE features (
    image_sha TEXT NOT NULL REFERENCES images(sha256) ON DELETE CASCADE,
    encoder   TEXT NOT NULL,
    dim       INTEGER NOT NULL,
    vector    BLOB NOT NULL,          -- float32, little-endian
    PRIMARY KEY (image_sha, encoder)
);
CREATE TABLE models (
    profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    weights    BLOB NOT NULL,         -- safetensors bytes
    config     TEXT NOT NULL,         -- JSON
    created    TEXT NOT NULL,
    PRIMARY KEY (profile_id, name)
)
"""
# Version 2's judgment columns, added to version 1's table.
_V2_COLUMNS = (
    # The verdict this one replaced (kept, inactive): undoing this one makes it current again.
    "replaces INTEGER REFERENCES judgments(id)",
    # 0 once a later verdict on the same subject replaced it.
    "active INTEGER NOT NULL DEFAULT 1",
    f"subject_lo TEXT AS ({_SUBJECT_LO}) VIRTUAL",
    f"subject_hi TEXT AS ({_SUBJECT_HI}) VIRTUAL",
)
# Version 2's indexes, counts and the triggers that keep the counts: every read a click
# needs is an index lookup, whatever the size of the history.
_V2_STATEMENTS = (
    "CREATE UNIQUE INDEX one_verdict ON judgments(profile_id, subject_lo, subject_hi) WHERE active = 1",
    "CREATE INDEX current_judgments ON judgments(profile_id, active, id)",
    # Deleting a judgment checks that no other one `replaces` it: without this, a scan.
    "CREATE INDEX replaced_judgments ON judgments(replaces)",
    """CREATE TABLE verdict_counts (
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        n          INTEGER NOT NULL,
        PRIMARY KEY (profile_id, kind)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER count_added AFTER INSERT ON judgments WHEN NEW.active = 1 BEGIN
        INSERT OR IGNORE INTO verdict_counts VALUES (NEW.profile_id, NEW.kind, 0);
        UPDATE verdict_counts SET n = n + 1 WHERE profile_id = NEW.profile_id AND kind = NEW.kind;
    END""",
    """CREATE TRIGGER count_removed AFTER DELETE ON judgments WHEN OLD.active = 1 BEGIN
        UPDATE verdict_counts SET n = n - 1 WHERE profile_id = OLD.profile_id AND kind = OLD.kind;
    END""",
    """CREATE TRIGGER count_switched AFTER UPDATE OF active ON judgments
        WHEN OLD.active != NEW.active BEGIN
        INSERT OR IGNORE INTO verdict_counts VALUES (NEW.profile_id, NEW.kind, 0);
        UPDATE verdict_counts SET n = n + (CASE WHEN NEW.active = 1 THEN 1 ELSE -1 END)
            WHERE profile_id = NEW.profile_id AND kind = NEW.kind;
    END""",
)
# Version 3: named blends of reward weights (prefstudio.blend), owned by a profile.
_V3_STATEMENTS = (
    """CREATE TABLE presets (
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        name       TEXT NOT NULL COLLATE NOCASE,
        weights    TEXT NOT NULL,     -- JSON: reward name -> weight
        created    TEXT NOT NULL,
        PRIMARY KEY (profile_id, name)
    )""",
)


@dataclass(frozen=True)
class Profile:
    id: int
    name: str
    created: str


@dataclass(frozen=True)
class ImageRecord:
    sha256: str
    path: Path  # absolute
    prompt: str
    seed: int | None
    generator: str
    params: dict
    width: int
    height: int
    created: str


@dataclass(frozen=True)
class Preset:
    name: str
    weights: dict[str, float]  # reward name (or profile:NAME) -> weight
    created: str
    # On the preset `save_preset` returns: the one of the same name (in any case) it replaced.
    replaced: "Preset | None" = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Judgment:
    id: int
    profile: str
    kind: str
    image_a: str
    image_b: str | None
    created: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _to_json(values: Mapping) -> str:
    try:
        return json.dumps(dict(values), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"parameters must be plain JSON values: {error}") from None


def validate_model_name(name: str) -> str:
    # No dots: profile files name tensors "model.<name>.<tensor>".
    if not (isinstance(name, str) and 0 < len(name) <= 64
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)):
        raise InvalidInput(f"model name {name!r} must be 1-64 ASCII letters, digits, '-' or '_'")
    return name


def check_judgment(kind: str, image_a: str, image_b: str | None) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"unknown judgment kind {kind!r}; use one of {', '.join(KINDS)}")
    count = 1 if image_b is None else 2
    if count not in _IMAGES_PER_KIND[kind]:
        if kind in ("pair", "tie"):
            raise InvalidInput(f"a {kind} judgment compares two images; got one")
        raise InvalidInput(f"a {kind} judgment is about one image; got two")
    for image in (image_a,) if image_b is None else (image_a, image_b):
        if not isinstance(image, str):
            raise InvalidInput(f"an image id must be text (64 hexadecimal characters), got {echo(image)}")
    if image_a == image_b:
        raise InvalidInput(f"a {kind} judgment needs two different images; got the same twice")


def _is_busy(error: sqlite3.Error) -> bool:
    """SQLite gave up waiting for another connection's lock (SQLITE_BUSY)."""
    return error.sqlite_errorname == "SQLITE_BUSY"


# What the studio itself writes into a data folder besides history.sqlite3, and what the
# repository's benchmark scripts put in the default ./data: a folder holding only these
# (`python -m prefstudio bank`, or PrefBench, run before any profile) may still become a history.
DATA_FOLDER_ENTRIES = {"ui-cache", "user_banks", "reward_calibration.json", "browser-secret",
                       "bench", "bench-fresh", "bench-tiny", "studio_images"}


def _named(presets: list[Preset], name: str) -> Preset | None:
    """The preset of this name, in any case of any script (casefold: "STRASSE" is "straße")."""
    return next((p for p in presets if p.name.casefold() == name.casefold()), None)


class HistoryStore:
    def __init__(self, data_dir: str | Path, timeout: float = 30.0):
        if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
            raise InvalidInput(f"the data folder must be a path, got {echo(data_dir)}")
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.db_path = self.data_dir / "history.sqlite3"
        in_the_way = next((p for p in (self.data_dir, *self.data_dir.parents) if p.exists()), None)
        if in_the_way is not None and not in_the_way.is_dir():
            raise InvalidInput(f"the data folder {self.data_dir} cannot be made: {in_the_way} is a file, not a folder")
        home = next((p for p in self.data_dir.absolute().parents if (p / "history.sqlite3").is_file()
                     and self.data_dir.absolute().relative_to(p).parts[0] in ("images", "ui-cache")), None)
        if home is not None:  # the studio's own folders hold its files only
            raise InvalidInput(f"{self.data_dir} is inside the PrefStudio data folder {home}: name that folder, "
                               "or a new one outside it")
        if in_the_way == self.data_dir and not self.db_path.exists():
            others = sorted(set(os.listdir(self.data_dir)) - DATA_FOLDER_ENTRIES)
            if others:  # a typo'd --data must not turn someone's folder into a history
                raise InvalidInput(f"{self.data_dir} is not a PrefStudio data folder (it holds {echo(others[0])} and "
                                   "no history.sqlite3): name a new or empty folder, or an existing data folder")
        # Owner only (0700 folders, 0600 files): a history is one person's taste. SQLite gives
        # its -wal and -shm files the database file's mode.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.images_dir.mkdir(mode=0o700, exist_ok=True)
        os.close(os.open(self.db_path, os.O_CREAT | os.O_RDWR, 0o600))
        for path, mode in ((self.data_dir, 0o700), (self.images_dir, 0o700), (self.db_path, 0o600)):
            make_private(path, mode)
        self._lock = threading.RLock()
        self.timeout = timeout
        # isolation_level=None: transactions are exactly the BEGIN/COMMIT written below.
        self._db = sqlite3.connect(
            self.db_path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._open_schema()
        except sqlite3.DatabaseError as error:
            self._db.close()
            if _is_busy(error):
                raise self._busy() from None
            raise InvalidInput(f"{self.db_path} is not a PrefStudio history: {error}") from None
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        db = self._db
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise InvalidInput(f"{self.db_path}: SQLite refused WAL mode on this file system")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        self.folded_on_open = 0  # judgments an upgrade folded into a later verdict on the same subject
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InvalidInput(
                    f"{self.db_path} was written by a newer PrefStudio (history schema "
                    f"version {version}; this one understands {SCHEMA_VERSION}): upgrade PrefStudio"
                )
            if version == 0:
                # One statement at a time: executescript would commit the open transaction.
                for statement in _TABLES.split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < 2:
                self.folded_on_open = self._upgrade_to_one_verdict_each(db)
            if version < 3:
                for statement in _V3_STATEMENTS:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if self.folded_on_open:
            log.warning("%s: upgraded the history to one verdict per image and pair; %d earlier "
                        "judgments were replaced by a later verdict on the same image or pair",
                        self.db_path, self.folded_on_open)

    @staticmethod
    def _upgrade_to_one_verdict_each(db) -> int:
        """Version 1 -> 2: keep each profile's latest verdict per image and unordered pair
        (what the person said last; training already read only the latest 👍/👎 of an
        image); returns how many earlier ones were removed."""
        for column in _V2_COLUMNS:
            db.execute(f"ALTER TABLE judgments ADD COLUMN {column}")
        folded = db.execute(
            "DELETE FROM judgments WHERE id NOT IN (SELECT max(id) FROM judgments "
            "GROUP BY profile_id, subject_lo, subject_hi)"
        ).rowcount
        db.execute("DROP INDEX IF EXISTS judgments_by_profile")
        for statement in _V2_STATEMENTS:
            db.execute(statement)
        db.execute("INSERT INTO verdict_counts SELECT profile_id, kind, COUNT(*) FROM judgments "
                   "GROUP BY profile_id, kind")
        return folded

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _transaction(self):
        """All writes inside happen together or not at all; nested uses join the outer one."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                if _is_busy(error):
                    raise self._busy() from None
                raise
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _busy(self) -> Busy:
        return Busy(f"{self.data_dir} is busy: another PrefStudio process has been writing to it for "
                    f"{self.timeout:g} s; nothing was saved, try again when it is done")

    def _query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- profiles ------------------------------------------------------------------

    def create_profile(self, name: str, visible: Callable[[Profile], bool] | None = None) -> Profile:
        """A new profile; `visible` (see `check_name_free`) says which profiles a clash may name."""
        name = validate_profile_name(name)
        created = _now()
        with self._transaction() as db:
            self.check_name_free(name, visible=visible)
            cursor = db.execute("INSERT INTO profiles (name, created) VALUES (?, ?)", (name, created))
        return Profile(cursor.lastrowid, name, created)

    def check_name_free(self, name: str, keep: Profile | None = None, hint: str = "",
                        visible: Callable[[Profile], bool] | None = None) -> None:
        """Refuse a name that an existing profile (other than `keep`) has, or one that a menu
        shows alike (`profile_name_keys`). A clash with a profile that `visible` says the asker
        may not see (another login's) is refused without naming that profile."""
        keys = profile_name_keys(name)
        for other in self.list_profiles():
            if other.id != getattr(keep, "id", None) and profile_name_keys(other.name) & keys:
                if visible is not None and not visible(other):
                    raise InvalidInput(f"the name {name!r} is taken in this studio: choose another{hint}")
                if other.name.casefold() == name.casefold():
                    same = "" if other.name == name else " (names ignore upper/lower case)"
                    raise InvalidInput(f"a profile named {other.name!r} already exists{same}{hint}")
                raise InvalidInput(f"profile name {name!r} is too like the existing {other.name!r} "
                                   f"(they differ only in letter case, spacing or look-alike characters){hint}")

    def rename_profile(self, old: str, new: str, visible: Callable[[Profile], bool] | None = None) -> Profile:
        """Give a profile a new name; its judgments and models stay with it."""
        new = validate_profile_name(new)
        with self._transaction() as db:
            stored = self.get_profile(old)
            self.check_name_free(new, keep=stored, visible=visible)
            db.execute("UPDATE profiles SET name = ? WHERE id = ?", (new, stored.id))
            # Personalized images name the profile they were made for (its past side by sides).
            db.execute("UPDATE images SET params = json_set(params, '$.personalized_for', ?) "
                       "WHERE json_extract(params, '$.personalized_for') = ?", (new, stored.name))
            # Presets that blend this profile's taste follow it to its new name.
            old_key, new_key = PROFILE_PREFIX + stored.name, PROFILE_PREFIX + new
            for profile_id, name, weights in db.execute(
                    "SELECT profile_id, name, weights FROM presets").fetchall():
                if not any(k.casefold() == old_key.casefold() for k in json.loads(weights)):
                    continue
                renamed = {new_key if k.casefold() == old_key.casefold() else k: v for k, v in json.loads(weights).items()}
                db.execute("UPDATE presets SET weights = ? WHERE profile_id = ? AND name = ?",
                           (json.dumps(renamed), profile_id, name))
        return Profile(stored.id, new, stored.created)

    def delete_profile(self, name: str) -> Profile:
        """Remove a profile with its judgments and models. Images stay: another profile
        may have judged them, and their files are shared by content; those made for it no
        longer name it, so that a new profile of the same name starts without its past."""
        with self._transaction() as db:
            stored = self.get_profile(name)
            db.execute("DELETE FROM profiles WHERE id = ?", (stored.id,))
            db.execute("UPDATE images SET params = json_remove(params, '$.personalized_for') "
                       "WHERE json_extract(params, '$.personalized_for') = ?", (stored.name,))
        return stored

    def list_profiles(self) -> list[Profile]:
        rows = self._query("SELECT id, name, created FROM profiles ORDER BY name COLLATE NOCASE")
        return [Profile(*row) for row in rows]

    def find_profile(self, name: str) -> Profile | None:
        """The profile of that name, read as creation stores names ("Jose" + U+0301 and "  bob  "
        are "José" and "bob"), or None."""
        if not isinstance(name, str):
            return None
        rows = self._query("SELECT id, name, created FROM profiles WHERE name = ?", (profile_name_as_stored(name),))
        return Profile(*rows[0]) if rows else None

    def get_profile(self, name: str) -> Profile:
        found = self.find_profile(name)
        if found is None:
            raise NoSuchProfile(name, [p.name for p in self.list_profiles()])
        return found

    # --- images --------------------------------------------------------------------

    def image_path(self, sha256: str) -> Path:
        return png_path(sha256, self.images_dir)

    def _insert_image(self, db, record: ImageRecord) -> None:
        db.execute(
            "INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.sha256, self.image_path(record.sha256).relative_to(self.data_dir).as_posix(),
             record.prompt, record.seed, record.generator, _to_json(record.params), record.width,
             record.height, record.created),
        )

    def _add(self, image: Image.Image, prompt: str, seed: int | None, generator: str,
             params: dict) -> ImageRecord:
        metadata = {"prompt": prompt, "seed": seed, "generator": generator, "params": params}
        sha256, path = write_png(image, metadata, self.images_dir)  # file first, row after
        record = ImageRecord(sha256, path, prompt, seed, generator, dict(params),
                             image.width, image.height, _now())
        with self._transaction() as db:
            self._insert_image(db, record)
        return self.image_record(sha256)  # the first record wins when content repeats

    def add_image(self, generated: GeneratedImage) -> ImageRecord:
        """Store a generated image with its prompt, seed and parameters (in the PNG and here)."""
        if not isinstance(generated.image, Image.Image) or generated.image.mode != "RGB":
            raise InvalidInput("a generated image must be an RGB PIL image")
        return self._add(
            generated.image, validate_prompt(generated.prompt), validate_seed(generated.seed),
            str(generated.generator), generated.params,
        )

    def import_image(self, source: str | Path | bytes, prompt: str) -> ImageRecord:
        """Store an uploaded image (checked by load_untrusted_image) under a describing prompt."""
        prompt = validate_prompt(prompt)
        return self._add(load_untrusted_image(source), prompt, None, IMPORTED, {})

    def import_pairs(self, profile: str, pairs: list[tuple[str | Path, str | Path, str]]) -> list[Judgment]:
        """A ≻ B judgments between uploaded images ((liked, disliked, prompt) each), all or
        nothing: each image is checked and its file written first, then one transaction records
        the images and the judgments; on any failure the files this call wrote are removed."""
        stored = self.get_profile(profile).name
        records, shas = [], []
        stored_as = {}  # (source, prompt) -> sha256: a file names an image in many of its pairs
        with self._images_ahead_of_rows() as ahead:
            for liked, disliked, prompt in pairs:
                prompt = validate_prompt(prompt)
                for source in (liked, disliked):
                    if (source, prompt) not in stored_as:
                        try:
                            image = load_untrusted_image(source)
                        except InvalidInput as error:
                            raise InvalidInput(f"{source}: {error}") from None
                        metadata = {"prompt": prompt, "seed": None, "generator": IMPORTED, "params": {}}
                        sha256, path = ahead(encode_png(image, metadata))
                        records.append(ImageRecord(sha256, path, prompt, None, IMPORTED, {}, image.width,
                                                   image.height, _now()))
                        stored_as[source, prompt] = sha256
                    shas.append(stored_as[source, prompt])
            with self._transaction() as db:
                for record in records:
                    self._insert_image(db, record)
                return [self.record_judgment(stored, "pair", a, b) for a, b in zip(shas[::2], shas[1::2])]

    def personalized_images(self, profile: str, limit: int = 24) -> list[ImageRecord]:
        """The profile's personalized images, newest first (each names its baseline in params);
        a blind test's and those made for a trade-off grid (params listed false) are left out."""
        name = self.get_profile(profile).name
        rows = self._query("SELECT sha256 FROM images WHERE json_extract(params, '$.personalized_for') = ? "
                           "AND NOT coalesce(json_extract(params, '$.blind'), 0) AND coalesce(json_extract(params, '$.listed'), 1) "
                           "ORDER BY created DESC LIMIT ?",
                           (name, int(limit)))
        return [self.image_record(sha) for (sha,) in rows]

    def image_record(self, sha256: str) -> ImageRecord:
        rows = self._query("SELECT * FROM images WHERE sha256 = ?", (sha256,))
        if not rows:
            raise NotFound(f"no image {sha256!r} in the history")
        sha, path, prompt, seed, generator, params, width, height, created = rows[0]
        return ImageRecord(sha, self.data_dir / path, prompt, seed, generator,
                           json.loads(params), width, height, created)

    def resolve_image_id(self, ref: str) -> str:
        """A full image id from the id or a unique prefix of at least 6 characters."""
        ref = str(ref).strip().lower()
        if len(ref) < 6 or any(c not in "0123456789abcdef" for c in ref):
            raise InvalidInput(f"{echo(ref)} is not an image id (6 to 64 hexadecimal characters)")
        rows = self._query("SELECT sha256 FROM images WHERE sha256 >= ? AND sha256 < ? LIMIT 2",
                           (ref, ref + "g"))
        if not rows:
            raise NotFound(f"no image {ref!r} in the history")
        if len(rows) > 1:
            raise InvalidInput(f"image id prefix {ref!r} is ambiguous: give more characters")
        return rows[0][0]

    def load_image(self, sha256: str) -> Image.Image:
        return load_untrusted_image(self.image_record(sha256).path)

    # --- judgments -----------------------------------------------------------------

    def _require_images(self, db, shas: Iterable[str | None]) -> None:
        for sha in shas:
            if sha is not None and not db.execute(
                "SELECT 1 FROM images WHERE sha256 = ?", (sha,)
            ).fetchone():
                raise NotFound(f"no image {sha!r} in the history")

    def record_judgment(self, profile: str, kind: str, image_a: str,
                        image_b: str | None = None) -> Judgment:
        """Record and commit; once this returns the judgment survives a killed process.

        A profile holds one verdict per image and per unordered pair: a different verdict
        replaces the current one (undoing it brings that back), the same verdict again
        changes nothing and returns the existing judgment.
        """
        check_judgment(kind, image_a, image_b)
        created = _now()
        with self._transaction() as db:
            stored = self.get_profile(profile)
            self._require_images(db, (image_a, image_b))
            return self._record(db, stored, kind, image_a, image_b, created)

    def _record(self, db, profile: Profile, kind: str, image_a: str, image_b: str | None,
                created: str) -> Judgment:
        current = self._current_verdict(db, profile, image_a, image_b)
        if current is not None:
            if current.kind == kind and (kind != "pair" or current.image_a == image_a):
                return current
            db.execute("UPDATE judgments SET active = 0 WHERE id = ?", (current.id,))
        cursor = db.execute(
            "INSERT INTO judgments (profile_id, kind, image_a, image_b, created, replaces) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (profile.id, kind, image_a, image_b, created, current and current.id),
        )
        return Judgment(cursor.lastrowid, profile.name, kind, image_a, image_b, created)

    @staticmethod
    def _current_verdict(db, profile: Profile, image_a: str, image_b: str | None) -> Judgment | None:
        lo, hi = (image_a, "") if image_b is None else sorted((image_a, image_b))
        row = db.execute(
            "SELECT id, kind, image_a, image_b, created FROM judgments INDEXED BY one_verdict "
            "WHERE profile_id = ? AND subject_lo = ? AND subject_hi = ? AND active = 1",
            (profile.id, lo, hi),
        ).fetchone()
        return None if row is None else Judgment(row[0], profile.name, *row[1:])

    def record_judgments(self, profile: str, kind: str,
                         images: list[tuple[str, str | None]]) -> list[Judgment]:
        """Several judgments of one kind in one transaction: all are recorded or none."""
        for image_a, image_b in images:
            check_judgment(kind, image_a, image_b)
        with self._transaction():
            return [self.record_judgment(profile, kind, a, b) for a, b in images]

    def judgments(self, profile: str, kinds: Iterable[str] | None = None) -> list[Judgment]:
        """The profile's current verdicts, oldest first."""
        kinds = KINDS if kinds is None else (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise InvalidInput(
                f"unknown judgment kind {unknown[0]!r}; use one of {', '.join(KINDS)}"
            )
        stored = self.get_profile(profile)
        marks = ", ".join("?" * len(kinds))
        rows = self._query(
            "SELECT id, kind, image_a, image_b, created FROM judgments "
            f"WHERE profile_id = ? AND active = 1 AND kind IN ({marks}) ORDER BY id",
            (stored.id, *kinds),
        )
        return [Judgment(id, stored.name, kind, a, b, created) for id, kind, a, b, created in rows]

    def verdicts(self, profile: str, shas: Iterable[str]) -> dict[str, str]:
        """The current like/dislike/skip of each of these images that has one."""
        shas = list(dict.fromkeys(shas))[:_MAX_SUBJECTS]
        if not shas:
            return {}
        rows = self._query(
            # INDEXED BY: without statistics SQLite would scan the profile's whole history.
            "SELECT subject_lo, kind FROM judgments INDEXED BY one_verdict WHERE profile_id = ? "
            f"AND active = 1 AND subject_hi = '' AND subject_lo IN ({', '.join('?' * len(shas))})",
            (self.get_profile(profile).id, *shas),
        )
        return dict(rows)

    def pair_verdicts(self, profile: str, shas: Iterable[str]) -> dict[frozenset, Judgment]:
        """The current pair/tie/skip judgment of each pair among these images that has one."""
        shas = list(dict.fromkeys(shas))[:_MAX_SUBJECTS]
        if len(shas) < 2:
            return {}
        stored = self.get_profile(profile)
        marks = ", ".join("?" * len(shas))
        rows = self._query(
            # INDEXED BY: without statistics SQLite would scan the profile's whole history.
            "SELECT id, kind, image_a, image_b, created FROM judgments INDEXED BY one_verdict "
            f"WHERE profile_id = ? AND active = 1 AND subject_lo IN ({marks}) "
            f"AND subject_hi IN ({marks})",
            (stored.id, *shas, *shas),
        )
        return {frozenset((a, b)): Judgment(id, stored.name, kind, a, b, created)
                for id, kind, a, b, created in rows}

    def counts(self, profile: str) -> dict[str, int]:
        """Current verdicts per kind (kept by triggers: no scan of the history)."""
        counts = dict.fromkeys(KINDS, 0)
        counts.update(self._query("SELECT kind, n FROM verdict_counts WHERE profile_id = ?",
                                  (self.get_profile(profile).id,)))
        return counts

    def remove_judgments(self, profile: str, judgment_ids: Iterable[int]) -> list[Judgment]:
        """Undo several current judgments of this profile together: all of them, or none."""
        judgment_ids = list(judgment_ids)
        twice = next((n for n in judgment_ids if judgment_ids.count(n) > 1), None)
        if twice is not None:  # the second would read as "no such judgment", the first being gone
            raise InvalidInput(f"judgment {echo(twice)} is given twice")
        with self._transaction():
            return [self.remove_judgment(profile, judgment_id) for judgment_id in judgment_ids]

    def _remove(self, profile: str, judgment_id: int | None) -> Judgment:
        with self._transaction() as db:
            stored = self.get_profile(profile)
            name = stored.name
            columns = "id, kind, image_a, image_b, created, replaces, active"
            if judgment_id is None:
                row = db.execute(
                    f"SELECT {columns} FROM judgments WHERE profile_id = ? AND active = 1 "
                    "ORDER BY id DESC LIMIT 1", (stored.id,),
                ).fetchone()
                if row is None:
                    raise NotFound(f"profile {name!r} has no judgments to undo")
            else:
                row = db.execute(f"SELECT {columns} FROM judgments WHERE profile_id = ? AND id = ?",
                                 (stored.id, judgment_id)).fetchone()
                if row is None:
                    raise NoSuchJudgment(f"profile {name!r} has no judgment {judgment_id}")
            judgment = Judgment(row[0], name, *row[1:5])
            replaces, active = row[5:]
            if not active:
                newer = self._current_verdict(db, stored, judgment.image_a, judgment.image_b)
                raise NotFound(f"judgment {judgment.id} was replaced by judgment {newer.id}: "
                               "remove that one to bring it back")
            db.execute("DELETE FROM judgments WHERE id = ?", (judgment.id,))
            if replaces is not None:  # the verdict it replaced is current again
                db.execute("UPDATE judgments SET active = 1 WHERE id = ?", (replaces,))
        return judgment

    def undo_last(self, profile: str) -> Judgment:
        """Remove and return the profile's most recent judgment (bringing back the
        verdict it replaced, if any)."""
        return self._remove(profile, None)

    def remove_judgment(self, profile: str, judgment_id: int) -> Judgment:
        """Undo one current judgment of this profile; another profile's id is NotFound."""
        judgment_id = whole_number(judgment_id, "a judgment number")
        if not 1 <= judgment_id < 2**63:  # SQLite's integers: anything beyond is no judgment's
            raise NoSuchJudgment(f"profile {self.get_profile(profile).name!r} has no judgment {echo(judgment_id)}")
        return self._remove(profile, judgment_id)

    # --- feature cache -------------------------------------------------------------

    def get_features(self, encoder: str, shas: Iterable[str]) -> dict[str, torch.Tensor]:
        """Cached float32 vectors of those images that have one for this encoder."""
        import torch

        shas = list(dict.fromkeys(shas))
        found = {}
        for start in range(0, len(shas), 500):  # stay under SQLite's bound on parameters
            chunk = shas[start:start + 500]
            rows = self._query(
                f"SELECT image_sha, dim, vector FROM features WHERE encoder = ? "
                f"AND image_sha IN ({', '.join('?' * len(chunk))})",
                (encoder, *chunk),
            )
            for sha, dim, blob in rows:
                vector = torch.frombuffer(bytearray(blob), dtype=torch.float32)
                if vector.numel() != dim:
                    raise InvalidInput(f"cached {encoder} features of {sha} are damaged")
                found[sha] = vector
        return found

    def put_features(self, encoder: str, features: Mapping[str, torch.Tensor]) -> None:
        import torch

        rows = []
        for sha, vector in features.items():
            if vector.dim() != 1:
                raise InvalidInput(f"features of {sha} must be one vector, got shape "
                                   f"{tuple(vector.shape)}")
            vector = vector.detach().to("cpu", torch.float32).contiguous()
            rows.append((sha, encoder, vector.numel(), vector.numpy().tobytes()))
        with self._transaction() as db:
            self._require_images(db, features)
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)

    # --- fitted preference models --------------------------------------------------

    def save_model(self, profile: str, name: str, tensors: Mapping[str, torch.Tensor],
                   config: Mapping) -> None:
        """Store (or replace) a profile's fitted model as safetensors bytes and JSON config."""
        import safetensors.torch

        self.save_model_weights(profile, name, safetensors.torch.save(
            {key: t.detach().to("cpu").contiguous() for key, t in tensors.items()}
        ), config)

    def save_model_weights(self, profile: str, name: str, weights: bytes, config: Mapping) -> None:
        """`save_model` for weights already serialised as safetensors bytes (no torch needed)."""
        name = validate_model_name(name)
        config = _to_json(config)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
                (self.get_profile(profile).id, name, weights, config, _now()),
            )

    def load_model(self, profile: str, name: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        import safetensors.torch

        stored = self.load_model_weights(profile, name)
        return None if stored is None else (safetensors.torch.load(stored[0]), stored[1])

    def load_model_weights(self, profile: str, name: str) -> tuple[bytes, dict] | None:
        """The stored safetensors bytes and config (no torch needed), or None."""
        rows = self._query(
            "SELECT weights, config FROM models WHERE profile_id = ? AND name = ?",
            (self.get_profile(profile).id, name),
        )
        if not rows:
            return None
        weights, config = rows[0]
        return bytes(weights), json.loads(config)

    def model_names(self, profile: str) -> list[str]:
        rows = self._query("SELECT name FROM models WHERE profile_id = ? ORDER BY name",
                           (self.get_profile(profile).id,))
        return [name for (name,) in rows]

    # --- presets (named blends) ----------------------------------------------------

    def save_preset(self, profile: str, name: str, weights: Mapping[str, float]) -> Preset:
        """Store (or replace) a named blend of `profile`; checked as an imported one is."""
        name = validate_preset_name(name)
        weights = validate_blend(weights)
        created = _now()
        with self._transaction() as db:
            stored = self.get_profile(profile)
            existing = self.presets(stored.name)
            old = _named(existing, name)
            if old is None and len(existing) >= MAX_PRESETS:
                raise InvalidInput(f"{stored.name} already has {MAX_PRESETS} presets: delete one first")
            if old is not None:
                db.execute("DELETE FROM presets WHERE profile_id = ? AND name = ?", (stored.id, old.name))
            db.execute("INSERT INTO presets VALUES (?, ?, ?, ?)", (stored.id, name, json.dumps(weights), created))
        return Preset(name, weights, created, old)

    def presets(self, profile: str) -> list[Preset]:
        """A profile's presets by name; names ignore case in every script (casefold: "STRASSE"
        is "straße"), as the profile file's check does, where SQLite's NOCASE knows ASCII only."""
        rows = self._query("SELECT name, weights, created FROM presets WHERE profile_id = ?",
                           (self.get_profile(profile).id,))
        return sorted((Preset(name, json.loads(weights), created) for name, weights, created in rows),
                      key=lambda p: unicodedata.normalize("NFKD", p.name.casefold()))  # é beside e

    def get_preset(self, profile: str, name: str) -> Preset:
        stored = self.get_profile(profile)
        existing = self.presets(stored.name)
        found = _named(existing, name.strip()) if isinstance(name, str) else None
        if found is not None:
            return found
        existing = [p.name for p in existing]
        raise NotFound(f"{stored.name} has no preset named {echo(name)}; "
                       + (f"its presets: {', '.join(existing)}" if existing else "it has no presets yet"))

    def delete_preset(self, profile: str, name: str) -> Preset:
        with self._transaction() as db:
            preset = self.get_preset(profile, name)
            db.execute("DELETE FROM presets WHERE profile_id = ? AND name = ?",
                       (self.get_profile(profile).id, preset.name))
        return preset

    # --- whole profiles (import) ---------------------------------------------------

    @contextmanager
    def _images_ahead_of_rows(self):
        """For an import, which writes its image files before the transaction that adds their rows:
        `ahead(png)` stores a PNG, first noting it in a journal named for this process when the
        file is new. If the import fails, the files it wrote that no row refers to are removed
        here; if its process is killed, the journal stays and the next import removes them
        (`_remove_what_killed_imports_left`). Either way an import that did not happen leaves nothing."""
        self._remove_what_killed_imports_left()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        journal = self.images_dir / f".import-{os.getpid()}-{secrets.token_hex(8)}.txt"
        written = []
        try:
            with open(journal, "a", encoding="utf-8") as notes:
                def ahead(png: bytes) -> tuple[str, Path]:
                    sha256 = hashlib.sha256(png).hexdigest()
                    if not png_path(sha256, self.images_dir).exists():  # another's file is not this import's
                        notes.write(f"{sha256}\n")  # noted before it exists
                        notes.flush()
                        written.append(sha256)
                    return store_png_bytes(png, self.images_dir)
                yield ahead
        except BaseException:
            self._remove_unreferenced(written)
            raise
        finally:
            journal.unlink(missing_ok=True)

    def _remove_unreferenced(self, shas: Iterable[str]) -> None:
        """Remove these image files where no row refers to them (another writer may have added one since)."""
        for sha in shas:
            if len(sha) == 64 and not self._query("SELECT 1 FROM images WHERE sha256 = ?", (sha,)):
                png_path(sha, self.images_dir).unlink(missing_ok=True)

    def _remove_what_killed_imports_left(self) -> None:
        for journal in self.images_dir.glob(".import-*.txt"):
            try:
                os.kill(int(journal.name.split("-")[1]), 0)
                continue  # its process still runs: its transaction may yet come
            except ProcessLookupError:
                pass
            except (PermissionError, ValueError, OSError):
                continue  # another user's process, or not a journal of ours: left alone
            self._remove_unreferenced(journal.read_text(encoding="utf-8").split())
            journal.unlink(missing_ok=True)
        # A write cut off mid-file leaves its temporary file; any a minute old is no live write's.
        for leftover in [*self.images_dir.glob("*/.tmp-*"), *self.images_dir.glob("*/thumbs/.tmp-*")]:
            if time.time() - leftover.stat().st_mtime > 60:
                leftover.unlink(missing_ok=True)

    def restore_profile(
        self,
        name: str,
        images: list[tuple[ImageRecord, bytes]],
        judgments: list[tuple[str, str, str | None, str]],
        models: list[tuple[str, bytes, dict]],
        presets: list[tuple[str, dict[str, float], str]] = (),
    ) -> Profile:
        """Add a profile with its history in one transaction: all of it or nothing.

        `images` pairs checked records (their path is ignored: the store puts each
        file at `image_path(sha256)`) with their PNG bytes; the files are written
        first and the rows after (`_images_ahead_of_rows`: a failure or a crash between
        the two leaves no file behind). `judgments` are (kind, image_a, image_b, created), oldest first;
        `models` are (name, safetensors bytes, config); `presets` (name, weights, created).
        """
        with self._images_ahead_of_rows() as ahead:
            for record, png in images:
                ahead(png)
            return self._restore_rows(name, images, judgments, models, presets)

    def _restore_rows(self, name, images, judgments, models, presets) -> Profile:
        with self._transaction() as db:
            profile = self.create_profile(name)
            for record, _ in images:
                self._insert_image(db, record)
            for kind, image_a, image_b, created in judgments:  # a later verdict replaces an earlier
                check_judgment(kind, image_a, image_b)
                self._require_images(db, (image_a, image_b))
                self._record(db, profile, kind, image_a, image_b, created)
            for model_name, weights, config in models:
                self.save_model_weights(profile.name, model_name, weights, config)
            for preset_name, weights, created in presets:
                db.execute("INSERT INTO presets VALUES (?, ?, ?, ?)", (
                    profile.id, validate_preset_name(preset_name), json.dumps(validate_blend(weights)), created))
        return profile
