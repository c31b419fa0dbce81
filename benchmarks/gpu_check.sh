#!/usr/bin/env bash
# GPU check of the hot path: epoch time and peak GPU memory of every backbone and method in fp32
# and bf16, one importance update per explainer, host-device syncs per training step, and a
# smoke study packing four trials on one GPU (--gpus-per-trial 0.25). Appends one section to
# BENCHMARKS.md (command, commit, machine, GPU, date). Python logic: benchmarks/gpu_check.py.
#
# On the GPU machine, from the repository root (under 8 minutes; Sports is read from --data-dir,
# else $EC4SREC_DATA_DIR, else ../shared/data, else downloaded):
#     bash benchmarks/gpu_check.sh
#     bash benchmarks/gpu_check.sh --data-dir /data --note "idle H200"
# Anywhere, on the CPU (same code paths, tiny generated data, 1 batch per measurement, no
# study; what tests/test_gpu_check.py runs; writes only the --output file):
#     bash benchmarks/gpu_check.sh --dry-run --output /tmp/gpu_check.md
#     EC4SREC_GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh --output /tmp/gpu_check.md
# Every other option goes to gpu_check.py: python benchmarks/gpu_check.py --help.
# It also writes results/costs/gpu-factor.json (one-thread CPU epoch / GPU epoch, the factor
# tune/paper_study.py --dry-run divides the measured CPU costs by). Through the device tool,
# bring both back and commit them:
#     bash benchmarks/gpu_check.sh && cp BENCHMARKS.md results/costs/gpu-factor.json "$OUT"/
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [[ -n "${EC4SREC_GPU_CHECK_DRY_RUN:-}" && " ${args[*]-} " != *" --dry-run "* ]]; then
    args+=(--dry-run)
fi
if [[ " ${args[*]-} " != *" --dry-run "* ]] \
        && ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "error: CUDA is not available here; run with --dry-run for the CPU check" >&2
    exit 2
fi
export EC4SREC_GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh ${args[*]-}"
# The driver keeps to --budget-s (450 s by default); this is the hard stop at 8 minutes.
exec timeout --signal=INT --kill-after=20 480 python benchmarks/gpu_check.py "${args[@]}"
