"""The history store: SQLite history, content-addressed image files, profile files."""
from prefstudio.store.history import KINDS, HistoryStore, ImageRecord, Judgment, Profile
from prefstudio.store.image_files import (
    load_untrusted_image,
    read_png_metadata,
    thumbnail,
    write_png,
)
from prefstudio.store.profile_file import export_profile, import_profile

__all__ = [
    "KINDS", "HistoryStore", "ImageRecord", "Judgment", "Profile", "export_profile",
    "import_profile", "load_untrusted_image", "read_png_metadata", "thumbnail", "write_png",
]
