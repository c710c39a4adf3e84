#!/usr/bin/env bash
# Install faceanime for development into the active Python environment.
# torch is installed pinned FIRST: an unpinned torch (ours or a dependency's) would pull the
# multi-GB CUDA build. Set FACEANIME_TORCH to choose another version (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install "torch==${FACEANIME_TORCH:-2.13.0}"
"$PY" -m pip install -e ".[dev${FACEANIME_EXTRAS:+,$FACEANIME_EXTRAS}]"
