#!/usr/bin/env bash
# Installs PrefStudio, its test tools and the Debian packages the tests drive, then runs
# the whole test suite. Debian packages: chromium for the browser test (never
# `playwright install`: it downloads a browser), openclipart-png for the benchmark smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium fonts-noto-color-emoji)
dpkg -s openclipart-png >/dev/null 2>&1 || missing+=(openclipart-png)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need these Debian packages: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/install.sh
.venv/bin/pip install -q -r requirements-dev.txt
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python -m pytest -q
