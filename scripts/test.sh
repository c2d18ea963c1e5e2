#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), then run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
