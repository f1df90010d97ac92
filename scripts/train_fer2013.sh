#!/usr/bin/env bash
# Reproduce the first two rows of the FER2013 table in docs/training.md: the report's CNN ("seed") and
# `vgg` (width 16), trained on FER2013's train split, settings chosen on val, scored once on test:
#   scripts/train_fer2013.sh [FER2013 folder]     (default data/fer2013)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/fer2013}
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m fer train "$data" --run-dir runs/fer2013-seed --arch seed --no-augment \
  --epochs 30 --patience 4 --lr-patience 100
.venv/bin/python -m fer train "$data" --run-dir runs/fer2013-vgg --arch vgg --width 16 \
  --epochs 24 --patience 6
