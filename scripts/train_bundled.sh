#!/usr/bin/env bash
# Rebuild the bundled model, models/default.keras, on the CPU with TensorFlow (docs/training.md):
#   scripts/train_bundled.sh [DATA_FOLDER]     (default data: DATA_FOLDER/fer2013, DATA_FOLDER/expw-sample)
# `vgg` at width 48 on FER2013's train split pooled with expw-sample's
# photo-grouped train part (settings chosen on the val parts), in two runs:
#   1. runs/bundled-w48: fresh weights, augmented, batch 128, until early stopping;
#   2. runs/bundled-w48-noaug: its best model, a few epochs at learning rate 5e-5 without augmentation;
# then the second run's best model is exported without optimizer state, set to read each face with
# its mirror image and calibrated on the val parts (`fer calibrate --flip`), and scored on each
# dataset's held-out test part, with the labelled boxes and, for expw-sample, with faces found by the
# default detector.
# The bundled file itself was trained with exactly these options on one H200 GPU with JAX
# (scripts/gpu/prepare.sh here, then scripts/gpu/bundled.sh there: about 3 minutes; docs/gpu.md).
# On 2 CPU cores the first run takes about 4 hours (2.5 minutes an epoch in bfloat16 with fused batch
# norm). A run that was stopped resumes where it left off: run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
data_folder=${1:-data}
export TF_CPP_MIN_LOG_LEVEL=2
data=("$data_folder/fer2013" "$data_folder/expw-sample")

resume_or() {  # resume a run that was started, else start it with the arguments given
  local run=$1
  shift
  if [ -f "$run/state.json" ]; then
    .venv/bin/python -m fer train --resume --run-dir "$run"
  else
    .venv/bin/python -m fer train "${data[@]}" --run-dir "$run" "$@"
  fi
}

resume_or runs/bundled-w48 --arch vgg --width 48 --batch-size 128 --epochs 100 --patience 15 \
  --lr-patience 4
resume_or runs/bundled-w48-noaug --arch vgg --width 48 --batch-size 128 \
  --init-from runs/bundled-w48/best.keras --no-augment --learning-rate 5e-5 --epochs 4 --patience 2 \
  --lr-patience 1
.venv/bin/python -m fer export runs/bundled-w48-noaug --out models/default.keras
.venv/bin/python -m fer calibrate models/default.keras "${data[@]}" --out models/default.keras --flip
.venv/bin/python -m fer export models/default.keras --out models/default.keras \
  --score "$data_folder/fer2013" --score "$data_folder/expw-sample" --detect "$data_folder/expw-sample"
