#!/usr/bin/env bash
# Rebuild the bundled model, models/default.keras, in four runs on FER2013's train split pooled with
# expw-sample's photo-grouped train part (settings chosen on the val parts):
#   1. runs/bundled: the default architecture (vgg, width 16) from fresh weights;
#   2. runs/bundled-w24: that model grown to width 24 (--init-from keeps what it computes) and trained on;
#   3. runs/bundled-w32: that one grown to width 32 and trained on at a lower learning rate;
#   4. runs/bundled-w32-noaug: a few epochs more at a low rate without augmentation;
# then the last run's best model is exported without optimizer state and scored on each dataset's
# held-out test part, with the labelled boxes and, for expw-sample, with faces found by the detector.
# A run that was stopped resumes where it left off: run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared/datasets}
export TF_CPP_MIN_LOG_LEVEL=2
data=("$shared/fer2013" "$shared/expw-sample")

resume_or() {  # resume a run that was started, else start it with the arguments given
  local run=$1
  shift
  if [ -f "$run/state.json" ]; then
    .venv/bin/python -m fer train --resume --run-dir "$run"
  else
    .venv/bin/python -m fer train "${data[@]}" --run-dir "$run" "$@"
  fi
}

resume_or runs/bundled --arch vgg --width 16 --epochs 60 --patience 10 --lr-patience 3
resume_or runs/bundled-w24 --arch vgg --width 24 --init-from runs/bundled/best.keras \
  --learning-rate 5e-4 --epochs 40 --patience 8 --lr-patience 2
resume_or runs/bundled-w32 --arch vgg --width 32 --init-from runs/bundled-w24/best.keras \
  --learning-rate 2.5e-4 --epochs 30 --patience 6 --lr-patience 2
resume_or runs/bundled-w32-noaug --arch vgg --width 32 --init-from runs/bundled-w32/best.keras \
  --no-augment --learning-rate 5e-5 --epochs 4 --patience 2 --lr-patience 1
.venv/bin/python -m fer export runs/bundled-w32-noaug --out models/default.keras \
  --score "$shared/fer2013" --score "$shared/expw-sample" --detect "$shared/expw-sample"
