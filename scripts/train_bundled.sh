#!/usr/bin/env bash
# Rebuild the bundled model, models/default.keras, in two runs on FER2013's train split pooled with
# expw-sample's photo-grouped train part (settings chosen on the val parts):
#   1. runs/bundled: the default architecture (vgg, width 16) from fresh weights;
#   2. runs/bundled-w24: that model grown to width 24 (--init-from keeps what it computes) and trained on;
# then the second run's best model is exported without optimizer state and scored on each dataset's
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
.venv/bin/python -m fer export runs/bundled-w24 --out models/default.keras \
  --score "$shared/fer2013" --score "$shared/expw-sample" --detect "$shared/expw-sample"
