#!/usr/bin/env bash
# Rebuild the bundled model, models/default.keras, on the CPU with TensorFlow (docs/training.md):
#   scripts/train_bundled.sh [DATA_FOLDER]     (default data: DATA_FOLDER/fer2013, DATA_FOLDER/expw-sample)
# `vgg` at width 48 on FER2013's train split pooled with expw-sample's
# photo-grouped train part (settings chosen on the val parts), in three runs:
#   1. runs/bundled-w48: fresh weights, augmented, batch 128, until early stopping;
#   2. runs/bundled-w48-noaug: its best model, a few epochs at learning rate 5e-5 without augmentation;
#      exported, set to read each face with its mirror image and calibrated on the val parts
#      (`fer calibrate --flip`): runs/teacher-vgg.keras;
#   3. runs/distill-self: the teacher's network, four augmented epochs at learning rate 1e-4 with
#      half of each face's target taken from the teacher's calibrated answer on that face
#      (`--teachers`, distillation);
# then the third run's best model is exported without optimizer state, calibrated the same way and
# scored on each dataset's held-out test part, with the labelled boxes and, for expw-sample, with
# faces found by the default detector.
# The first two runs of the bundled file were trained with exactly these options on one H200 GPU with
# JAX (scripts/gpu/prepare.sh here, then scripts/gpu/bundled.sh there: about 3 minutes; docs/gpu.md),
# the third on 2 CPU cores (about 20 minutes).
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

calibrate() {  # read mirrored, calibrated on the val parts
  .venv/bin/python -m fer calibrate "$1" "${data[@]}" --out "$1" --flip
}

resume_or runs/bundled-w48 --arch vgg --width 48 --batch-size 128 --epochs 100 --patience 15 \
  --lr-patience 4
resume_or runs/bundled-w48-noaug --arch vgg --width 48 --batch-size 128 \
  --init-from runs/bundled-w48/best.keras --no-augment --learning-rate 5e-5 --epochs 4 --patience 2 \
  --lr-patience 1
if [ ! -f runs/teacher-vgg.keras ]; then
  .venv/bin/python -m fer export runs/bundled-w48-noaug --out runs/teacher-vgg-part.keras
  calibrate runs/teacher-vgg-part.keras
  mv runs/teacher-vgg-part.keras runs/teacher-vgg.keras
fi
resume_or runs/distill-self --arch vgg --width 48 --batch-size 128 --epochs 4 --learning-rate 1e-4 \
  --patience 4 --lr-patience 2 --init-from runs/teacher-vgg.keras --teachers runs/teacher-vgg.keras
.venv/bin/python -m fer export runs/distill-self --out models/default.keras
calibrate models/default.keras
.venv/bin/python -m fer export models/default.keras --out models/default.keras \
  --score "$data_folder/fer2013" --score "$data_folder/expw-sample" --detect "$data_folder/expw-sample"
