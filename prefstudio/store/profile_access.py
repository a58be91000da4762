"""Who may use a profile, kept durably beside the history.

    access = ProfileAccess(store)
    access.set_owner("alice-profile", "alice")        # the login that created it
    access.may_use("alice-profile", "alice")          # True
    access.may_use("alice-profile", "bob")            # False
    access.may_use("alice-profile", None)             # True: the person at this computer

A profile made with no login (on 127.0.0.1 without credentials, or by the CLI) has no owner
row: it belongs to the person at this computer, who may use every profile when serving
without credentials. With credentials each login uses only the profiles it owns.

Each browser keeps one random token (gradio's BrowserState); what it chose last (a profile,
the batch on screen) is kept here under the token's hash, never in the browser.
"""
import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone

from prefstudio.errors import InvalidInput, NotFound, echo, no_profile_named
from prefstudio.store.history import HistoryStore, Profile

_TABLES = (
    """CREATE TABLE IF NOT EXISTS profile_owners (
        profile_id INTEGER PRIMARY KEY REFERENCES profiles(id) ON DELETE CASCADE,
        owner      TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS browser_choices (
        browser    TEXT PRIMARY KEY,      -- sha256 of the browser's token
        owner      TEXT NOT NULL,         -- the login that chose ('' = no login)
        profile_id INTEGER REFERENCES profiles(id) ON DELETE SET NULL,
        batch      TEXT NOT NULL,         -- JSON list of image ids on screen
        touched    TEXT NOT NULL
    )""",
)
TOKEN_CHARS = 43  # secrets.token_urlsafe(32)
MAX_BATCH = 64


def no_such_profile(name) -> NotFound:
    """The one answer for a profile that is missing or not this person's: it never says which."""
    return NotFound(no_profile_named(name))


def _browser_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def valid_token(token) -> bool:
    return (isinstance(token, str) and len(token) == TOKEN_CHARS
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in token))


class ProfileAccess:
    def __init__(self, store: HistoryStore):
        self.store = store
        with store._transaction() as db:
            for statement in _TABLES:
                db.execute(statement)

    # --- owners --------------------------------------------------------------------

    def create(self, name: str, owner: str | None) -> Profile:
        """A new profile and its owner, in one transaction."""
        with self.store._transaction():
            created = self.store.create_profile(name, visible=self.shown_to(owner))
            self.set_owner(created.name, owner)
        return created

    def shown_to(self, login: str | None) -> Callable[[Profile], bool] | None:
        """Which profiles a refusal may name to `login`: its own (None: every one, for the person
        at this computer)."""
        if login is None:
            return None
        return lambda profile: self.owner(profile.id) == login

    def set_owner(self, profile: str, owner: str | None) -> None:
        """Record who created (or imported) a profile; None (no login) records nothing."""
        if owner is None:
            return
        with self.store._transaction() as db:
            db.execute("INSERT OR REPLACE INTO profile_owners VALUES (?, ?)",
                       (self.store.get_profile(profile).id, owner))

    def owner(self, profile_id: int) -> str | None:
        rows = self.store._query("SELECT owner FROM profile_owners WHERE profile_id = ?", (profile_id,))
        return rows[0][0] if rows else None

    def lookup(self, name, login: str | None) -> Profile:
        """The profile if `login` may use it, else NotFound worded as for a missing one."""
        if not isinstance(name, str):  # None is no profile named 'None'
            raise InvalidInput(f"a profile name must be text, got {echo(name)}")
        profile = self.store.find_profile(name)
        if profile is None:
            raise no_such_profile(name)
        if login is not None and self.owner(profile.id) != login:
            raise no_such_profile(name)
        return profile

    def may_use(self, name, login: str | None) -> bool:
        try:
            self.lookup(name, login)
            return True
        except NotFound:
            return False

    def visible(self, login: str | None) -> list[str]:
        """The profile names `login` may use (all of them for the person at this computer)."""
        if login is None:
            return [p.name for p in self.store.list_profiles()]
        rows = self.store._query(
            "SELECT p.name FROM profiles p JOIN profile_owners o ON o.profile_id = p.id "
            "WHERE o.owner = ? ORDER BY p.name COLLATE NOCASE", (login,))
        return [name for (name,) in rows]

    # --- what each browser chose -------------------------------------------------------

    def _choice(self, token: str, login: str | None) -> tuple[int | None, list[str]] | None:
        if not valid_token(token):
            return None
        rows = self.store._query("SELECT owner, profile_id, batch FROM browser_choices WHERE browser = ?",
                                 (_browser_key(token),))
        if not rows or rows[0][0] != (login or ""):
            return None  # another login in the same browser sees nothing of the first one's
        return rows[0][1], json.loads(rows[0][2])

    def chosen_profile(self, token: str, login: str | None) -> str | None:
        choice = self._choice(token, login)
        return None if choice is None or choice[0] is None else self.usable_name(choice[0], login)

    def usable_name(self, profile_id: int, login: str | None) -> str | None:
        """The profile's name now, if it still exists and `login` may use it."""
        rows = self.store._query("SELECT name FROM profiles WHERE id = ?", (profile_id,))
        return rows[0][0] if rows and self.may_use(rows[0][0], login) else None

    def saved_batch(self, token: str, login: str | None) -> list[str]:
        choice = self._choice(token, login)
        return [] if choice is None else choice[1]

    def remember(self, token: str, login: str | None, profile: str | None = None,
                 batch: list[str] | None = None) -> None:
        """Keep this browser's chosen profile and/or batch on screen (None leaves it as it was)."""
        if not valid_token(token):
            raise InvalidInput("this browser has no valid PrefStudio token: reload the page")
        old = self._choice(token, login) or (None, [])
        profile_id = old[0] if profile is None else self.lookup(profile, login).id
        batch = old[1] if batch is None else [s for s in batch if isinstance(s, str)][:MAX_BATCH]
        with self.store._transaction() as db:
            db.execute("INSERT OR REPLACE INTO browser_choices VALUES (?, ?, ?, ?, ?)",
                       (_browser_key(token), login or "", profile_id, json.dumps(batch),
                        datetime.now(timezone.utc).isoformat(timespec="seconds")))
