#!/usr/bin/env bash
# Install faceanime for development into the active Python environment.
#
# torch is installed pinned FIRST, so that no dependency resolves torch on its own. What that pin
# gives depends on the index pip reads:
#   - the public PyPI index on Linux x86-64: the CUDA build (torch plus ~3 GB of nvidia-* wheels),
#     which also runs on CPU-only machines, just larger;
#   - for the CPU-only build (~200 MB) from the public indexes, point torch at PyTorch's CPU index:
#       FACEANIME_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash tools/install.sh
#   - macOS and Windows wheels on PyPI are CPU (or MPS) builds already;
#   - a machine whose pip is configured with a local index (as this project's CI) gets what that
#     index holds (there: the CPU wheel).
# FACEANIME_TORCH chooses another torch version; FACEANIME_EXTRAS adds optional extras
# (mediapipe, fan).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_INDEX=()
if [[ -n "${FACEANIME_TORCH_INDEX:-}" ]]; then
  TORCH_INDEX=(--index-url "$FACEANIME_TORCH_INDEX")
fi
"$PY" -m pip install ${TORCH_INDEX[@]+"${TORCH_INDEX[@]}"} "torch==${FACEANIME_TORCH:-2.13.0}"
"$PY" -m pip install -e ".[dev${FACEANIME_EXTRAS:+,$FACEANIME_EXTRAS}]"
