"""PrefStudio: learn one person's visual taste and generate images for it."""
from prefstudio import privacy

privacy.apply_defaults()

__version__ = "0.1.0"
