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
# The Surrey Face Model into the package (faceanime/data/sfm, never committed), so the jobs run
# with no model folder to set: copied from FACEANIME_SFM_FROM, else from the project's data
# folder (FACEANIME_TEST_DATA, default ../shared/data) when it holds one, else downloaded from
# the eos release; every file checked against its pinned SHA-256 either way. Offline with no
# local copy the install still succeeds and says how to get the model later.
SFM_FROM=${FACEANIME_SFM_FROM:-${FACEANIME_TEST_DATA:-../shared/data}/sfm}
if [[ -f "$SFM_FROM/sfm_shape_3448.bin" ]]; then
  "$PY" -m faceanime model download sfm --bundle --from "$SFM_FROM" --no-progress
elif ! "$PY" -m faceanime model download sfm --bundle --no-progress; then
  echo "install.sh: the Surrey Face Model is not installed; later run" \
       "'faceanime model download sfm --bundle [--from DIR]' or set FACEANIME_MODEL_DIR" >&2
fi
