#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the locked dependency set plus facesr with all its extras (`.[all,test]`:
# the lock is that whole set). Idempotent: re-runs only when requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "facesr needs Python 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
stamp=.venv/.facesr-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/facesr ]; then
  exit 0
fi
# pip, minus one line a host's pip configuration can repeat hundreds of times (a find-links folder that is not
# there); every other warning and error still shows, and pip's exit status is kept
pip_() {
  local rc=0
  .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2) || rc=$?
  return $rc
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_ install -q --upgrade "pip==25.3"
echo "installing the locked dependency set (first time: a few minutes, ~6.6 GB with the CUDA build of torch)..." >&2
pip_ install -q -r requirements.lock
pip_ install -q --no-deps --no-build-isolation -e ".[all,test]"  # built with the locked setuptools
pip_ check
echo "$want" > "$stamp"
