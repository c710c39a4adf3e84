#!/usr/bin/env bash
# The check a maintainer runs on a machine with an NVIDIA GPU before a release: the CUDA tests,
# then the CUDA benchmarks with their tables. It installs nothing (run it in the environment
# faceanime is installed in) and is sized to finish in under 5 minutes on one GPU.
#
#     bash tools/gpu_check.sh [OUT_DIR]          # logs and tables in OUT_DIR (default gpu_check/)
#
# FACEANIME_TEST_DATA points at the shared data (default ../shared/data); GPU_CHECK_DEVICE=cpu
# runs the same steps on the CPU (a dry run of the script itself, on a machine without a GPU).
# Exit status: 0 when every step passed, 1 when one failed (each step's log says which), 2 when
# torch sees no CUDA device. Paste the tables into docs/performance.md with the machine.

set -u
cd "$(dirname "$0")/.."
out=${1:-gpu_check}
device=${GPU_CHECK_DEVICE:-cuda}
export FACEANIME_TEST_DATA=${FACEANIME_TEST_DATA:-../shared/data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"

if [ "$device" = cuda ] && ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch sees no CUDA device here (torch $(python -c 'import torch; print(torch.__version__)')); nothing run" >&2
    exit 2
fi
python - <<'EOF' | tee "$out/machine.txt"
import os, platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"{platform.node()}: {os.cpu_count()} cores, torch {torch.__version__} (CUDA {torch.version.cuda}), GPU {gpu}")
EOF

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember a failure
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name"
    start=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc in $(( $(date +%s) - start )) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

# Every test with a cuda parameter or a CUDA-only body (the CPU ones run in CI).
step tests 150 python -m pytest -q -p no:cacheprovider -rs -k cuda tests/
step bench_render 60 python tools/bench_render.py --device "$device" --repeat 3
step bench_generator 40 python tools/bench_generator.py --device "$device" --repeat 3
step bench_dynamics 60 python tools/bench_dynamics.py --device "$device" --repeat 3
step bench_fit 60 python tools/bench_fit.py --device "$device" --video d6 --eos-frames 0 --repeat 3
step bench_tasks 150 python tools/bench_tasks.py --device "$device" --sizes 512 --repeat 1

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: failed: ${failed[*]} (logs in $out/)" >&2
    exit 1
fi
echo "gpu_check: all steps passed (logs in $out/)"
