#!/usr/bin/env bash
# The GPU check for issue "Performance", as ONE short prepared run on a device machine (see docs/performance.md):
#   here:   bash benchmarks/gpu/fetch-wheels.sh
#   device: run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=540)
# It benchmarks both variants at the paper's size against the eager fp32 reference (facesr bench: training step,
# inference and upscale MP/s), trains the ci profile for a few steps on CUDA with bf16 autocast (the CUDA code path of
# facesr train), then runs 1,500 steps of the shared PSNR stage at the paper's model size on the colour sample and its
# quality report (gain over bicubic). Figures land in $OUT.
# FACESR_GPU_DEVICE=cpu runs the same script on a CPU (smaller), to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
DEV=${FACESR_GPU_DEVICE:-cuda}
PY=${PYTHON:-python3}
# the wheels fetched for the device's Python, only where this Python lacks them (a local venv has them already)
if ! "$PY" -c 'import pydantic' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/facesr-site .whl/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/facesr-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
FACESR=("$PY" -m facesr --params params.yaml)
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } | tee "$OUT/env.txt"
# no pretrained weights on the device: random VGG19/PieAPP cost the same per step (speed, not quality, is measured)
if [ "$DEV" = cuda ]; then size=(--profile paper --set allow_untrained_weights=true); steps=(--steps 10 --warmup 3 --infer-size 128)
else size=(--profile ci); steps=(--steps 1 --warmup 1 --infer-size 32); fi
rc=0
# 1. eager fp32 reference vs optimised (channels_last, bf16 autocast, fused Adam, cudnn.benchmark, uint8 transfer)
"${FACESR[@]}" "${size[@]}" --set train.device=$DEV bench "${steps[@]}" --json "$OUT/bench.json" 2>&1 \
  | grep -v 'RANDOM weights' | tee "$OUT/bench.txt" || rc=1
# 2. the same with torch.compile (optimised only; compile time is not in the figures)
if [ "$DEV" = cuda ]; then
  timeout 240 "${FACESR[@]}" "${size[@]}" --set train.device=$DEV --set train.compile=true bench "${steps[@]}" \
    --no-reference --json "$OUT/bench-compile.json" 2>&1 | grep -v 'RANDOM weights' | tee "$OUT/bench-compile.txt" || rc=1
fi
# 3. facesr train on the device: ingest + prepare the bundled sample, a few ci-profile steps with bf16 autocast
work=$(mktemp -d)
{ "${FACESR[@]}" --profile ci ingest --source sample --out "$work/raw" \
  && "${FACESR[@]}" --profile ci prepare --raw "$work/raw" --out "$work/prep" \
  && "${FACESR[@]}" --profile ci --set train.device=$DEV --set train.amp=auto train --data "$work/prep" \
       --variant l1_vgg_pieapp --out "$work/train" --no-progress \
  && cp "$work/train/train_summary.json" "$OUT/train_summary.json"; } 2>&1 | grep -v 'RANDOM weights' \
  | tee "$OUT/train.txt" || rc=1
# 4. a few minutes of the shared PSNR stage at the paper's model size (23 x 64) on the colour sample, then the quality
#    report (psnr vs bicubic on the test crops and whole faces); on a CPU: the ci model, a few steps
if [ "$DEV" = cuda ]; then pre=(--profile paper --set pretrain.steps=1500 --set train.checkpoint_every=500)
else pre=(--profile ci --set pretrain.steps=5); fi
{ "${FACESR[@]}" "${pre[@]}" prepare --raw "$work/raw" --out "$work/prep-pre" \
  && timeout 200 "${FACESR[@]}" "${pre[@]}" --set train.device=$DEV --set data.num_workers=4 pretrain \
       --data "$work/prep-pre" --out "$work/psnr" --no-progress \
  && cp "$work/psnr/train_summary.json" "$OUT/pretrain_summary.json" \
  && "${FACESR[@]}" "${pre[@]}" --set evaluate.device=$DEV quality --data "$work/prep-pre" --model psnr="$work/psnr" \
       --json "$OUT/quality.json"; } 2>&1 | tee "$OUT/pretrain.txt" || rc=1
echo "figures in $OUT (rc=$rc)"
exit $rc
