"""The history store: SQLite history, content-addressed image files, profile files."""
from prefstudio.store.history import KINDS, HistoryStore, ImageRecord, Judgment, Profile
from prefstudio.store.image_files import (
    load_untrusted_image,
    read_png_metadata,
    thumbnail,
    write_png,
)

__all__ = [
    "KINDS", "HistoryStore", "ImageRecord", "Judgment", "Profile", "export_profile",
    "import_profile", "load_untrusted_image", "read_png_metadata", "thumbnail", "write_png",
]


def __getattr__(name: str):
    # Profile files need torch; importing the store for a judgment must not (CLI start-up).
    if name in ("export_profile", "import_profile"):
        from prefstudio.store import profile_file
        return getattr(profile_file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
