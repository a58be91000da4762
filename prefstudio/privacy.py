"""Private by default: no analytics, no telemetry, no Hub look-ups, and no network exposure
without logins.

Imported first by the package so the variables are set before gradio or
huggingface_hub read them at import time. A user who asks for a Hub model
passes `allow_downloads=True` (the `--allow-downloads` flag) before any model code runs.

The app serves 127.0.0.1 (this computer) with no login. Any other address needs credentials,
`user:password` lines from `--auth-file` or the PREFSTUDIO_AUTH variable:

    credentials = read_credentials(auth_file, os.environ)
    warning = check_exposure(host, credentials)   # InvalidInput when exposed without logins
"""
import ipaddress
import os
from collections.abc import Mapping

from prefstudio.errors import InvalidInput

_DEFAULTS = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}
AUTH_VARIABLE = "PREFSTUDIO_AUTH"
MIN_PASSWORD_CHARS = 8
MAX_AUTH_FILE_BYTES = 1 << 20


def apply_defaults(allow_downloads: bool = False) -> None:
    # Set, not defaulted: a variable a shell profile exported must not turn on telemetry or the
    # Hub behind the person's back; --allow-downloads is the one way to the Hub.
    os.environ.update(_DEFAULTS)
    if allow_downloads:
        os.environ["HF_HUB_OFFLINE"] = "0"


def is_loopback(host: str) -> bool:
    """True for addresses only this computer can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def parse_credentials(text: str, source: str) -> list[tuple[str, str]]:
    """`user:password` per line; blank lines and lines starting with # are skipped. Errors name
    the source and line, never the password."""
    credentials, users = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        user, password = user.strip(), password.strip()  # `ann: pw` is ann's pw, not " pw"
        where = f"{source} line {number}"
        if not colon or not user:
            raise InvalidInput(f"{where} is not 'user:password'")
        if not (len(user) <= 64 and all(c.isascii() and (c.isalnum() or c in "._@-") for c in user)):
            raise InvalidInput(f"{where}: user names are 1-64 ASCII letters, digits, '.', '_', '@' or '-'")
        if len(password) < MIN_PASSWORD_CHARS:
            raise InvalidInput(f"{where}: the password of {user!r} is shorter than {MIN_PASSWORD_CHARS} characters")
        if user in users:
            raise InvalidInput(f"{where}: user {user!r} is given twice")
        users.add(user)
        credentials.append((user, password))
    return credentials


def read_credentials(auth_file: str | os.PathLike | None, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The logins from `auth_file` and the PREFSTUDIO_AUTH variable (empty: none given)."""
    credentials = []
    if auth_file is not None:
        try:
            with open(auth_file, "rb") as file:
                data = file.read(MAX_AUTH_FILE_BYTES + 1)
        except OSError as error:
            raise InvalidInput(f"cannot read the auth file {auth_file}: {error.strerror}") from None
        if len(data) > MAX_AUTH_FILE_BYTES:
            raise InvalidInput(f"the auth file {auth_file} is over 1 MB: it should hold user:password lines")
        try:
            from_file = parse_credentials(data.decode("utf-8"), str(auth_file))
        except UnicodeDecodeError:
            raise InvalidInput(f"the auth file {auth_file} is not UTF-8 text") from None
        if not from_file:
            raise InvalidInput(f"the auth file {auth_file} holds no user:password line (only blank lines or comments)")
        if os.stat(auth_file).st_mode & 0o077:  # as ssh treats a key others can read
            raise InvalidInput(f"the auth file {auth_file} can be read by other users of this computer: "
                               f"chmod 600 {auth_file}")
        credentials += from_file
    if environ.get(AUTH_VARIABLE, "").strip():
        credentials += parse_credentials(environ[AUTH_VARIABLE], AUTH_VARIABLE)
    users = [user for user, _ in credentials]
    twice = next((user for user in users if users.count(user) > 1), None)
    if twice is not None:
        raise InvalidInput(f"user {twice!r} is in both the auth file and {AUTH_VARIABLE}")
    return credentials


def check_exposure(host: str, credentials: list[tuple[str, str]]) -> str | None:
    """Refuse to serve beyond this computer without logins; with them, the warning to print."""
    if is_loopback(host):
        return None
    if not credentials:
        raise InvalidInput(
            f"--host {host} makes PrefStudio reachable from other computers, which needs logins: give "
            f"--auth-file FILE (user:password lines) or {AUTH_VARIABLE}, or serve on 127.0.0.1")
    return (f"warning: PrefStudio is reachable from the network on {host}; each of the {len(credentials)} "
            "login(s) sees only its own profiles. Traffic is not encrypted: put it behind HTTPS or reach it "
            "through an SSH tunnel.")
