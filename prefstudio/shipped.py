"""Where the files PrefStudio ships and reads at run time are: the prompt list and lexicon
(assets/), the cold-start user bank and the preference-token checkpoint (checkpoints/).

A checkout keeps them at the repository root, where the training commands write them (an
editable install, `pip install -e .`, reads them there). A wheel carries the ones the app
reads inside the package, under prefstudio/_shipped/ (pyproject.toml maps them there), since
site-packages has no repository root."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_ROOT = _PACKAGE / "_shipped" if (_PACKAGE / "_shipped").is_dir() else _PACKAGE.parent
ASSETS = _ROOT / "assets"
CHECKPOINTS = _ROOT / "checkpoints"
DEFAULT_BANK = CHECKPOINTS / "user_bank_embedded.safetensors"  # the cold-start user bank
