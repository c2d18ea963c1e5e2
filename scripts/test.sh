#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), then run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash infra/scripts/setup-scan.sh   # checkov in its own .venv-checkov, for the infra scan tests
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
