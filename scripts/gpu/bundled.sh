#!/usr/bin/env bash
# Train the bundled model's first two runs on a GPU machine with JAX (docs/gpu.md,
# docs/training.md), in a copy of the project holding the packs that
# `scripts/gpu/prepare.sh DATA/fer2013 DATA/expw-sample` wrote where the datasets are:
#   scripts/gpu/bundled.sh [fer train options for both runs, e.g. --max-faces 500 for a trial]
#   1. runs/bundled-w48: vgg width 48 from fresh weights, augmented, batch 128, until early stopping;
#   2. runs/bundled-w48-noaug: its best model, a few epochs at learning rate 5e-5 without augmentation.
# About 3 minutes in all on one H200. Settings were chosen on the val parts. Copy
# runs/bundled-w48-noaug back, export it there and run the distillation step (docs/training.md,
# "Rebuilding it").
# TIME_LIMIT=SECONDS limits each run (scripts/gpu/train.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/gpu/train.sh bundled-w48 --arch vgg --width 48 --batch-size 128 --epochs 100 \
  --patience 15 --lr-patience 4 "$@"
scripts/gpu/train.sh bundled-w48-noaug --arch vgg --width 48 --batch-size 128 \
  --init-from "${RUNS:-runs}/bundled-w48/best.keras" --no-augment --learning-rate 5e-5 --epochs 4 \
  --patience 2 --lr-patience 1 "$@"
