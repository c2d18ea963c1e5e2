#!/usr/bin/env bash
# Create .venv-checkov (Python 3.11) with the pinned static-scan tools from infra/requirements-scan.txt.
# Kept out of .venv because checkov's pins conflict with requirements.lock. Idempotent: re-installs only when
# infra/requirements-scan.txt changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "infra scan venv needs Python 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
venv=.venv-checkov
stamp=$venv/.facesr-scan-installed
want=$(sha256sum infra/requirements-scan.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/checkov" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade "pip==25.3"
echo "installing checkov into $venv (first time: about a minute)..." >&2
"$venv/bin/python" -m pip install -q -r infra/requirements-scan.txt
"$venv/bin/python" -m pip check
"$venv/bin/checkov" --version >/dev/null
echo "$want" > "$stamp"
