#!/usr/bin/env bash
# Run ON the borrowed GPU machine, as the last device call of the ones scripts/gpu_prepare.sh lists
# (it carries .whl and the last .pack/N; the calls before it carried the other .pack/N folders):
#   bash scripts/gpu_bundled.sh [fer train options for both runs, e.g. --max-faces 500 for a trial]
# Trains the bundled model's two runs one after the other (about 3 minutes in all on an H200) and
# returns both run folders in $OUT; back here, export the second (README, "The bundled model"):
#   1. bundled-w48: vgg width 48 from fresh weights, augmented, batch 128, until early stopping;
#   2. bundled-w48-noaug: its best model, a few epochs at learning rate 5e-5 without augmentation.
# Settings were chosen on the val parts. At most 8 files come back from a call, so each run keeps
# only what export and the README need (its last.keras, 34 MB with optimizer state, could not).
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP_FILES="best.keras history.csv config.json metrics.json" \
  bash scripts/gpu_train.sh bundled-w48 --arch vgg --width 48 --batch-size 128 --epochs 100 \
  --patience 15 --lr-patience 4 "$@"
KEEP_FILES="best.keras history.csv metrics.json" SKIP_WHEELS=1 PYTHONPATH=/tmp/site \
  bash scripts/gpu_train.sh bundled-w48-noaug --arch vgg --width 48 --batch-size 128 \
  --init-from "${RUNS:-/tmp/fer-runs}/bundled-w48/best.keras" --no-augment --learning-rate 5e-5 --epochs 4 \
  --patience 2 --lr-patience 1 "$@"
