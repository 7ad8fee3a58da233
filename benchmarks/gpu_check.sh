#!/usr/bin/env bash
# The GPU check in one go (under 8 minutes on one H100/H200): seconds per epoch of SimCLR
# ResNet-18 at batch 512 (bf16, eager and compiled), of the scratch ResNet-18 recipe (eager and
# compiled) and of the cached probe's feature extraction, on synthetic uint8 data of CIFAR-100's
# shape; host-device syncs per training step; peak memory. One table on stdout, one JSON file.
#
#   benchmarks/gpu_check.sh                      # writes benchmarks/results/gpu_check.json
#   benchmarks/gpu_check.sh --out /tmp/g.json    # any further arguments go to gpu_check.py
#   benchmarks/gpu_check.sh --device cpu --tiny  # the same code on a CPU, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
# 8 minutes for the whole check; a hang (a compile that never ends) fails instead of waiting.
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT_S:-480}" "$PY" benchmarks/gpu_check.py --device cuda "$@"
