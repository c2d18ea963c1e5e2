#!/usr/bin/env bash
# The README's main command: the whole facesr pipeline through DVC on the embedded default - the bundled sample faces,
# the profile named in params.yaml (demo), a local MLflow SQLite store (mlflow.db, unless MLFLOW_TRACKING_URI is set)
# and a local DVC remote folder (.dvc-remote/). Then it prints where the results are.
# Idempotent: a second run finds every stage up to date, runs nothing, and prints the results again.
# Extra arguments go to `dvc repro` (e.g. `bash scripts/main.sh --force`, or a stage name).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1

# DVC keeps dvc.lock next to git; a source archive without .git runs DVC without an SCM (this checkout only).
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  dvc config --local core.no_scm true
fi
# a default remote: the committed one (.dvc/config: 'local' -> .dvc-remote/), else a local folder for this checkout
if [ -z "$(dvc remote default 2>/dev/null)" ]; then
  dvc remote add --local --default --force local "$PWD/.dvc-remote"
fi

param() { facesr params --flat 2>/dev/null | sed -n "s/^$1=//p"; }
echo "== dvc repro (profile: $(param profile))"
dvc repro "$@"
echo "== dvc push (remote: $(dvc remote default))"
dvc push

echo
echo "== results"
# a partial run (`bash scripts/main.sh evaluate`) prints what its stages made and says what they did not
show() { if [ -e "$1" ]; then return 0; else echo "   (no $1: its stage has not run)"; return 1; fi; }
echo "-- outputs/eval/table.md"
if show outputs/eval/table.md; then cat outputs/eval/table.md; fi
echo
# the models are psnr and the keys of loss.variants (evaluate's order: its metrics.json)
models=$(facesr params --flat 2>/dev/null | sed -n 's/^loss\.variants\.\([a-z0-9_]*\)\.pixel=.*/\1/p' | tr '\n' ' ')
echo "-- comparison grids (LR | bicubic | psnr | ${models// / | }HR)"
if show outputs/eval/grids; then ls -1 outputs/eval/grids/*.png; fi
echo
echo "-- metrics: outputs/eval/metrics.json (dvc metrics show), per image: outputs/eval/per_image.csv"
echo "-- models: outputs/train/psnr/model (the shared L1 stage) and outputs/train/<variant>/model for: $models"
echo "-- training curves: outputs/train/*/plots/train_log.csv (dvc plots show)"
echo
echo "-- quality against bicubic and the profile's targets (facesr quality; figures, not a gate)"
if show data/prepared/manifest.json && show outputs/eval/metrics.json; then
  facesr quality --data data/prepared --models-from outputs/train --json outputs/quality.json
fi
echo
echo "-- registry: model $(param registry.model_name), tracking ${MLFLOW_TRACKING_URI:-$(param registry.tracking_uri)}"
for receipt in outputs/registry/register.txt outputs/registry/promote.txt; do
  echo "   $receipt:"
  if show "$receipt"; then sed 's/^/     /' "$receipt"; fi
done
if [ -e outputs/registry/register.txt ]; then
  name=$(param registry.model_name)
  for alias in champion challenger; do
    if facesr lineage "models:/$name@$alias" 2>/dev/null; then break; fi
  done
fi
