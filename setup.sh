#!/usr/bin/env bash
# Set up demseg on a fresh machine: a virtualenv in .venv with the CPU build of PyTorch first
# (a plain `torch` requirement would pull gigabytes of CUDA packages), then demseg and its test tools.
# --dev also installs Debian's qgis (as root, with apt-get) for the QGIS provider's tests, and records
# in .venv/demseg-dev.json whether it could: where it did, those tests must run, never skip.
set -euo pipefail
cd "$(dirname "$0")"
DEV=0
case "${1:-}" in
  --dev) DEV=1 ;;
  "") ;;
  *) echo "setup.sh: unknown option $1 (use --dev for the test set-up)" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip show -q torch >/dev/null || { echo "setup.sh: torch==2.13.0 did not install" >&2; exit 1; }
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, demseg, rasterio, transformers" || { echo "setup.sh: demseg did not install" >&2; exit 1; }
if [ "$DEV" = 1 ]; then
  QGIS=false
  if command -v qgis_process.bin >/dev/null || command -v qgis_process >/dev/null; then
    QGIS=true
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing Debian's qgis for the QGIS provider tests (about 2 minutes, once)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qgis python3-qgis >/dev/null
    QGIS=true
  else
    echo "setup.sh: QGIS is not installed and cannot be here (needs root and apt-get): its tests will skip"
  fi
  echo "{\"qgis\": $QGIS}" > .venv/demseg-dev.json
fi
