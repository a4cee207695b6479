#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): run on a machine with CUDA, from the repository root, after
# `make venv`. bitsandbytes (QLoRA) is a GPU-only extra, installed here rather than in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || make venv >/dev/null
$PY -c "import bitsandbytes" 2>/dev/null || .venv/bin/pip install -q "bitsandbytes>=0.45"
exec $PY bench/gpu_check.py "$@"
