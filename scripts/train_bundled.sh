#!/usr/bin/env bash
# Rebuild the bundled model, models/default.keras: the default architecture trained on FER2013's
# train split pooled with expw-sample's photo-grouped train part (settings chosen on the val parts),
# then exported without optimizer state and scored on each dataset's held-out test part, with the
# labelled boxes and, for expw-sample, with faces found by the detector.
# A run that was stopped resumes where it left off: run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared/datasets}
export TF_CPP_MIN_LOG_LEVEL=2
if [ -f runs/bundled/state.json ]; then resume=(--resume); else resume=(); fi
.venv/bin/python -m fer train "$shared/fer2013" "$shared/expw-sample" --run-dir runs/bundled \
  --arch vgg --width 16 --epochs 60 --patience 10 --lr-patience 3 "${resume[@]}"
.venv/bin/python -m fer export runs/bundled --out models/default.keras \
  --score "$shared/fer2013" --score "$shared/expw-sample" --detect "$shared/expw-sample"
