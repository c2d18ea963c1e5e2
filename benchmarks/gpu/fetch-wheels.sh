#!/usr/bin/env bash
# Run HERE (a machine with PyPI access), in the repository root, before the device run: downloads the few pure-Python
# packages the GPU image lacks (it has torch, numpy, pillow, pyyaml, click, tqdm, safetensors) into .whl/ for its
# Python 3.12. The versions are those of requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() {  # the lock's line for a package, whatever its spelling there (pydantic-core / pydantic_core)
  local want line; want=$(echo "$1" | tr '_A-Z' '-a-z')
  while IFS= read -r line; do
    [ "$(echo "${line%%==*}" | tr '_A-Z' '-a-z')" = "$want" ] && { echo "$line"; return 0; }
  done < requirements.lock
  echo "requirements.lock has no pin for $1" >&2; return 1
}
mkdir -p .whl
for pkg in pydantic pydantic-core annotated-types typing-inspection; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$(pin "$pkg")"
done
ls -1 .whl
