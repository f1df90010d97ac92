#!/usr/bin/env bash
# Pack datasets' faces to train on a GPU machine (docs/gpu.md). Run it where the datasets are:
#   scripts/gpu/prepare.sh [--max-bytes N] [--wheels] [--python-version V] DATASET...
# Each dataset's train and val parts go into .pack/NAME-train.npz and .pack/NAME-val.npz
# (`fer pack`); .pack/ is emptied first. The test parts are not packed: they stay here, to be
# scored once on the trained model. Copy the project with its .pack/ folder to the GPU machine and
# run scripts/gpu/train.sh there.
#   --max-bytes N (or MAX_BYTES=N)  write a pack bigger than N bytes as K smaller parts instead,
#                                   NAME-train-1-of-K.npz ... (`fer pack --part k/K`: every K-th
#                                   face), each at most N bytes, for a transfer that limits the size
#                                   of a file. Default: no split.
#   --wheels                        also download the wheels of keras and of the two packages it
#                                   needs (namex, optree) into .whl/, for a GPU machine that has JAX
#                                   but no Keras and no internet access; train.sh installs them.
#   --python-version V              that machine's Python, for --wheels (default 3.12).
# PYTHON names the interpreter that packs (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
max_bytes=${MAX_BYTES:-}
wheels=""
python_version=3.12
while [ $# -gt 0 ]; do
  case $1 in
    --max-bytes) max_bytes=$2; shift 2 ;;
    --wheels) wheels=1; shift ;;
    --python-version) python_version=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "error: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: $0 [--max-bytes N] [--wheels] [--python-version V] DATASET..." >&2
  exit 2
fi
if [ -n "$max_bytes" ] && ! [[ $max_bytes =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --max-bytes must be a positive number of bytes, got '$max_bytes'" >&2
  exit 2
fi
export TF_CPP_MIN_LOG_LEVEL=2
python=${PYTHON:-.venv/bin/python}
version() { $python -c "import importlib.metadata as m; print(m.version('$1'))"; }

if [ -n "$wheels" ]; then
  mkdir -p .whl
  rm -rf .whl/*.whl .whl/site
  platforms=()
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  $python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl \
    "keras==$(version keras)" "namex==$(version namex)" "optree==$(version optree)"
fi

rm -rf .pack
mkdir -p .pack
for dataset in "$@"; do
  name=$(basename "${dataset%.csv}")
  for split in train val; do
    whole=".pack/$name-$split.npz"
    $python -m fer pack "$dataset" --splits "$split" --out "$whole"
    size=$(stat -c %s "$whole")
    if [ -z "$max_bytes" ] || [ "$size" -le "$max_bytes" ]; then continue; fi
    # Too big: K packs of every K-th face, K the smallest count whose parts all fit.
    rm "$whole"
    parts=$(((size * 21 / 20 + max_bytes - 1) / max_bytes))
    while :; do
      fits=1
      for ((k = 1; k <= parts; k++)); do
        part=".pack/$name-$split-$k-of-$parts.npz"
        $python -m fer pack "$dataset" --splits "$split" --part "$k/$parts" --out "$part"
        if [ "$(stat -c %s "$part")" -gt "$max_bytes" ]; then fits=""; fi
      done
      if [ -n "$fits" ]; then break; fi
      rm -f ".pack/$name-$split"-*-of-"$parts".npz
      parts=$((parts + 1))
      if [ "$parts" -gt 1000 ]; then
        echo "error: $name's $split part does not fit in parts of $max_bytes bytes" >&2
        exit 1
      fi
    done
  done
done
echo "packs:"
ls -l .pack | tail -n +2
echo "Next: copy the project with .pack/${wheels:+ and .whl/} to the GPU machine and run there"
echo "  scripts/gpu/train.sh RUN_NAME [fer train options]"
