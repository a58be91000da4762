"""Errors a person can read and act on. Anything else reaching the UI is a bug."""
import errno
import reprlib
import sqlite3

# Echoed input is cut to this many characters: a 1 MB argument must not become a 1 MB message.
MAX_ECHO_CHARS = 80


class PrefStudioError(Exception):
    """Base class: the message is shown to the user as is."""


class InvalidInput(PrefStudioError, ValueError):
    """The input was refused; nothing was changed."""


class NotFound(PrefStudioError, LookupError):
    """A profile, image or judgment that does not exist."""


class NoSuchProfile(NotFound):
    """A profile name the history does not hold. The message lists the profiles it does hold
    (the CLI's and the library's, on one's own machine); a served page shows `public`, which names
    none of them: they may be other logins' (`served`)."""

    def __init__(self, name, existing: list[str], context: str = ""):
        self.name, self.existing = name, existing
        self.public = context + no_profile_named(name)
        listed = f"; existing profiles: {', '.join(existing)}" if existing else ": there are no profiles yet; create one"
        super().__init__(self.public + listed)


class NoSuchJudgment(NotFound):
    """A judgment id the profile's history does not hold (never did, or it was removed)."""


def no_profile_named(name) -> str:
    """The words for a profile that is missing, or that is not this person's: the same for both."""
    return f"no profile named {str(name)[:64]!r}"


def served(error: PrefStudioError) -> str:
    """What a page may be told of `error`: its message, less the names of other profiles."""
    return error.public if isinstance(error, NoSuchProfile) else str(error)


class ModelUnavailable(PrefStudioError, RuntimeError):
    """A model's weights are not on this machine; the message says how to get them."""


class Busy(PrefStudioError):
    """Another process held the history longer than the store waits; nothing was changed."""


class DiskFull(PrefStudioError):
    """A write failed for lack of space; the write was rolled back, nothing saved before was lost."""


def echo(value, limit: int = MAX_ECHO_CHARS) -> str:
    """A repr of user input for an error message, of at most about `limit` characters: a 1 MB
    string or a list nested a million deep must not come back whole (reprlib cuts long
    strings and long or deep containers without building their whole repr)."""
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring = 3, limit
    shortener.maxother = shortener.maxlong = limit
    try:
        text = shortener.repr(value)
    except (RecursionError, ValueError):  # ValueError: an int of more than 4,300 digits
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if isinstance(value, str) and len(value) > limit:  # cut: say how long it was
        text += f" ({len(value):,} characters)"
    return text


DISK_FULL_MESSAGE = ("the disk is full: this action was not saved, and nothing saved before was lost; "
                     "free some space and try again")


def disk_full(error: BaseException) -> DiskFull | None:
    """The DiskFull equivalent of a low-level write error caused by a full disk, else None.

    SQLite rolls back a transaction that hits SQLITE_FULL and files are written to a temporary
    name first, so in both cases what was stored before is intact."""
    if isinstance(error, sqlite3.OperationalError) and (
            getattr(error, "sqlite_errorname", "") == "SQLITE_FULL" or "database or disk is full" in str(error)):
        return DiskFull(DISK_FULL_MESSAGE)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(DISK_FULL_MESSAGE)
    return None
