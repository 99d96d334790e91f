#!/usr/bin/env bash
# GPU check for the issue "Audit at the scale of real post-training sets" (the work is in
# benchmarks/gpu_check.py): encode tokens/s through prefaudit vs the bare truncated forward on a
# 1B-class model, and paired_tests at 65,536 x 260,000. Prints rows of the Measured table (docs/MEASURED.md).
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine; extra arguments go to gpu_check.py
#   bash benchmarks/gpu_check.sh --cpu-smoke     # tiny sizes on the CPU
#
# Exits 2 with a message when no CUDA device is present (and --cpu-smoke is not given).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
  echo "gpu_check: no Python at $PY (create the virtualenv first, or set PYTHON=...)" >&2
  exit 2
fi

echo "== environment"
echo "host: $(uname -srm); python: $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv,noheader \
    || echo "nvidia-smi: present but failed (no driver loaded?)"
else
  echo "nvidia-smi: not found"
fi

echo "== gpu_check.py"
exec "$PY" benchmarks/gpu_check.py "$@"
