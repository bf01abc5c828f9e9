#!/usr/bin/env bash
# Set up demseg on a fresh machine: a virtualenv in .venv with the CPU build of PyTorch first
# (a plain `torch` requirement would pull gigabytes of CUDA packages), then demseg and its test tools.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip show -q torch >/dev/null || { echo "setup.sh: torch==2.13.0 did not install" >&2; exit 1; }
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, demseg, rasterio, transformers" || { echo "setup.sh: demseg did not install" >&2; exit 1; }
