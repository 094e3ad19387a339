#!/usr/bin/env bash
# The fused path's checks on a CUDA GPU (issue 8), for a machine where python3 has PyTorch with CUDA
# and pytest (pytest-timeout) installed; the package is used from src/, nothing is installed.
#
#   bash benchmarks/gpu_checks.sh tests   # tests/optim/test_fused.py -m cuda: every fused optimizer's
#                                         # trajectory on CUDA against the per-tensor path there
#   bash benchmarks/gpu_checks.sh table [step_time.py args]   # benchmarks/step_time.py --device cuda
#   bash benchmarks/gpu_checks.sh all [step_time.py args]     # both (the default)
#
# Each part compiles Triton kernels for every fused optimizer (seconds per graph): on a lease with a
# 10-minute limit per command, run `tests` and `table` as two commands. Logs go to $OUT (the device
# tool's folder) or ./gpu-checks; the exit status is non-zero if a part failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
part="${1:-all}"
shift || true
out="${OUT:-gpu-checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())" 2>&1 | tee "$out/device.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

status=0
if [ "$part" = tests ] || [ "$part" = all ]; then
    python3 -m pytest tests/optim/test_fused.py -m cuda -q -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ "$part" = table ] || [ "$part" = all ]; then
    python3 benchmarks/step_time.py --device cuda "$@" 2>&1 | tee "$out/step_time_cuda.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
exit "$status"
