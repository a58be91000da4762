"""Each browser session acts only on the profiles it opened, and only on its login's own.

A session opens a profile by choosing it in the profile menu (the browser), by creating or
importing it, or through the `/open_profile` endpoint (an API client). Every listener whose
inputs include the profile menu is wrapped by `guard_listeners`: a profile this session did
not open, or that its login does not own, is answered "no profile named …", the same words
as for a profile that does not exist, and the handler never runs. Files a listener received
as uploads are deleted once it returns, so uploads do not pile up in gradio's temp folder.
"""
import html
import inspect
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from gradio.utils import get_type_hints, get_upload_folder, is_special_typed_parameter

from prefstudio.errors import NotFound, PrefStudioError, served
from prefstudio.store.profile_access import ProfileAccess, no_such_profile

MAX_SESSIONS = 10_000  # sessions remembered at once; the oldest are forgotten first


# Exports are served from gradio's upload folder, in folders named so; never taken as uploads.
EXPORT_FOLDER_PREFIX = "prefstudio-export-"


def refusal(message: str, title: str = "Not done") -> gr.Error:
    """A refusal for the page. The toast renders HTML, and a message may quote what was typed:
    it is escaped, so that it shows as text and never becomes a link or markup."""
    return gr.Error(html.escape(message, quote=False), title=title, print_exception=False)


def login(request: gr.Request | None) -> str | None:
    """The authenticated user name, or None when serving without credentials."""
    return getattr(request, "username", None) or None


def _session(request: gr.Request | None) -> str:
    session = getattr(request, "session_hash", None)
    if not session:
        raise NotFound("this request has no session: open the page in a browser or use gradio_client")
    return session


class SessionAccess:
    """The profiles each session opened, in memory, for the newest MAX_SESSIONS sessions (a
    page that sleeps and wakes keeps its session, so nothing is dropped when one goes quiet)."""

    def __init__(self, profiles: ProfileAccess):
        self.profiles = profiles
        self._opened: OrderedDict[str, dict[int, None]] = OrderedDict()  # profile ids, the latest last
        self._lock = threading.Lock()

    def open(self, request: gr.Request | None, name) -> str:
        profile = self.profiles.lookup(name, login(request))
        session = _session(request)
        with self._lock:
            opened = self._opened.setdefault(session, {})
            opened.pop(profile.id, None)
            opened[profile.id] = None
            self._opened.move_to_end(session)
            while len(self._opened) > MAX_SESSIONS:
                self._opened.popitem(last=False)
        return profile.name

    def latest(self, request: gr.Request | None) -> str | None:
        """The profile this session opened last, if it is still one its login may use."""
        with self._lock:
            opened = list(self._opened.get(getattr(request, "session_hash", None) or "", {}))
        return self.profiles.usable_name(opened[-1], login(request)) if opened else None

    def adopt(self, request: gr.Request | None, name: str) -> str:
        """A profile this session just made (an import): its login owns it and it is open."""
        self.profiles.set_owner(name, login(request))
        return self.open(request, name)

    def require(self, request: gr.Request | None, name) -> None:
        """NotFound unless this session opened the profile and its login may still use it."""
        profile = self.profiles.lookup(name, login(request))
        session = getattr(request, "session_hash", None) or ""
        with self._lock:
            opened = self._opened.get(session, {})
            if opened:
                self._opened.move_to_end(session)  # in use: the last to be forgotten
        if profile.id not in opened:
            raise no_such_profile(name)


def _input_positions(fn) -> list[int]:
    """Argument positions that gradio fills from components, in input order (the others are
    gr.Progress, gr.Request, gr.SelectData… that gradio injects itself)."""
    hints = get_type_hints(fn)
    positions = []
    for i, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            break
        if isinstance(param.default, gr.Progress) or is_special_typed_parameter(param.name, hints):
            continue
        positions.append(i)
    return positions


def _uploaded_paths(value) -> list[Path]:
    """Paths inside gradio's upload folder among a File input's value(s)."""
    values = value if isinstance(value, list) else [value]
    folder = Path(get_upload_folder()).resolve()
    paths = []
    for item in values:
        item = getattr(item, "name", item)
        if isinstance(item, str) and Path(item).resolve().is_relative_to(folder):
            paths.append(Path(item))
    return paths


def _served_exports(value) -> list[Path]:
    """Among a File input's value(s), exports this studio serves to a page: gradio takes any path
    in its folder as an input, so an export's address would pass for an upload of it."""
    return [path for path in _uploaded_paths(value)
            if path.resolve().parent.name.startswith(EXPORT_FOLDER_PREFIX)]


def _delete_uploads(values) -> None:
    for value in values:
        for path in set(_uploaded_paths(value)) - set(_served_exports(value)):
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # gradio keeps each upload in a folder of its own
            except OSError:
                pass


def _guarded(fn, access: SessionAccess, profile_arg: int | None, file_args: list[int]):
    def check(request, args):
        for i in file_args:
            served_export = _served_exports(args[i]) if i < len(args) else []
            if served_export:
                raise refusal(f"{served_export[0].name} is a profile export this studio serves, not an upload: "
                              "upload the file itself")
        if profile_arg is not None and profile_arg < len(args) and args[profile_arg]:
            try:
                access.require(request, args[profile_arg])
            except PrefStudioError as error:
                # As ui/common.user_errors shows a person's mistake: no traceback in the log.
                raise refusal(served(error)) from None

    if inspect.isgeneratorfunction(fn):
        def wrapper(request, *args, **kwargs):
            try:
                check(request, args)
                yield from fn(*args, **kwargs)
            finally:
                _delete_uploads(args[i] for i in file_args if i < len(args))
    elif inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"{fn.__name__}: async listeners are not guarded; write it as a plain function")
    else:
        def wrapper(request, *args, **kwargs):
            try:
                check(request, args)
                return fn(*args, **kwargs)
            finally:
                _delete_uploads(args[i] for i in file_args if i < len(args))

    params = list(inspect.signature(fn).parameters.values())
    # A name of its own: the handler may take a gr.Request as well.
    request = inspect.Parameter("guard_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapper.__signature__ = inspect.Signature([request, *params])
    wrapper.__annotations__ = {"guard_request": gr.Request, **get_type_hints(fn)}
    wrapper.__name__ = getattr(fn, "__name__", "listener")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper


def guard_listeners(demo: gr.Blocks, profile: gr.components.Component, access: SessionAccess,
                    openers: tuple = ()) -> None:
    """Wrap every listener that reads `profile` (except `openers`, which open it) so that it
    runs only for a profile this session opened, and every listener that receives uploads so
    that they are deleted after use. Call once, after all tabs are built."""
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is None or fn in openers:
            continue
        inputs = list(block_fn.inputs)
        positions = _input_positions(fn)
        profile_arg = next((positions[k] for k, c in enumerate(inputs)
                            if c is profile and k < len(positions)), None)
        file_args = [positions[k] for k, c in enumerate(inputs)
                     if isinstance(c, (gr.File, gr.UploadButton)) and k < len(positions)]
        if profile_arg is None and not file_args:
            continue
        block_fn.fn = _guarded(fn, access, profile_arg, file_args)
