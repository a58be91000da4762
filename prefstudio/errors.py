"""Errors a person can read and act on. Anything else reaching the UI is a bug."""


class PrefStudioError(Exception):
    """Base class: the message is shown to the user as is."""


class InvalidInput(PrefStudioError, ValueError):
    """The input was refused; nothing was changed."""


class NotFound(PrefStudioError, LookupError):
    """A profile, image or judgment that does not exist."""


class ModelUnavailable(PrefStudioError, RuntimeError):
    """A model's weights are not on this machine; the message says how to get them."""
