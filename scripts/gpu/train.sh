#!/usr/bin/env bash
# Train on packed faces on a GPU machine with JAX (docs/gpu.md), in a copy of the project that holds
# the .pack/ folder scripts/gpu/prepare.sh wrote:
#   scripts/gpu/train.sh [--time-limit SECONDS] RUN_NAME [fer train options...]
# Trains on every .npz under .pack/ with KERAS_BACKEND=jax into the run folder runs/RUN_NAME
# (RUNS=DIR puts it under DIR instead; the log goes beside it, RUN_NAME.log) and prints each epoch
# as it finishes. Copy the run folder back to where the datasets are: `fer export` it there (which
# scores the test parts) or continue it with `fer train --resume`.
# - A pack in parts (NAME-K-of-N.npz) must have all N parts, or nothing is trained (exit code 3).
# - Wheels in .whl/ (prepare.sh --wheels) are installed into .whl/site first, once.
# - --time-limit SECONDS (or TIME_LIMIT=SECONDS) stops the run cleanly that long after it starts
#   (through the run's `cancel` file): its files are complete, and it can be resumed.
# - FER_LOADER_THREADS threads make the augmented batches (default: all cores but two, at most 64);
#   one thread cannot keep a GPU busy.
# - PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
time_limit=${TIME_LIMIT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --time-limit) time_limit=$2; shift 2 ;;
    -*) echo "error: unknown option $1 before RUN_NAME (see the top of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: $0 [--time-limit SECONDS] RUN_NAME [fer train options...]" >&2
  exit 2
fi
if [ -n "$time_limit" ] && ! [[ $time_limit =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --time-limit must be a positive number of seconds, got '$time_limit'" >&2
  exit 2
fi
name=$1
shift
python=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -f .whl/site/.installed ]; then
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target .whl/site .whl/*.whl
  touch .whl/site/.installed
fi
if [ -d .whl/site ]; then export PYTHONPATH=$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}; fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
threads=$(($(nproc) > 3 ? $(nproc) - 2 : 1))
export FER_LOADER_THREADS=${FER_LOADER_THREADS:-$((threads > 64 ? 64 : threads))}
run=${RUNS:-runs}/$name
mkdir -p "$run"
$python -c "import jax; print('devices:', jax.devices())"

mapfile -t packs < <(find .pack -name '*.npz' 2>/dev/null | sort)
if [ ${#packs[@]} -eq 0 ]; then
  echo "no .npz under .pack/: run scripts/gpu/prepare.sh DATASET... where the datasets are" >&2
  exit 2
fi
for p in "${packs[@]}"; do  # a pack in parts (NAME-K-of-N.npz) must have all N of them here
  if [[ $p =~ -([0-9]+)-of-([0-9]+)\.npz$ ]]; then
    for ((k = 1; k <= BASH_REMATCH[2]; k++)); do
      part=$(basename "${p%-*-of-*.npz}-$k-of-${BASH_REMATCH[2]}.npz")
      if [ -z "$(find .pack -name "$part")" ]; then
        echo "missing $part: copy every part of the pack into .pack/" >&2
        exit 3
      fi
    done
  fi
done
echo "training on ${packs[*]} with $FER_LOADER_THREADS loader threads"

started=$SECONDS
$python -u -m fer train "${packs[@]}" --run-dir "$run" "$@" > "$run.log" 2>&1 &
trainer=$!
shown=1
stopped=""
while kill -0 "$trainer" 2>/dev/null; do
  sleep 2
  # The cancel file is left only once the run is running: a new run clears any it finds at its start.
  if [ -n "$time_limit" ] && [ $((SECONDS - started)) -ge "$time_limit" ] && [ -z "$stopped" ] &&
     grep -q '"state": "running"' "$run/status.json" 2>/dev/null; then
    echo "stopping: the time limit of ${time_limit}s is reached"
    touch "$run/cancel"
    stopped=1
  fi
  if [ -f "$run/history.csv" ]; then
    lines=$(wc -l < "$run/history.csv")
    if [ "$lines" -gt "$shown" ]; then tail -n +"$((shown + 1))" "$run/history.csv"; shown=$lines; fi
  fi
done
status=0
wait "$trainer" || status=$?
tail -n 25 "$run.log"
if [ -n "$stopped" ] && [ "$status" -eq 1 ] && grep -q '"cancelled"' "$run/status.json" 2>/dev/null; then
  echo "run $run stopped at the time limit; continue it with: fer train --resume --run-dir $run"
  exit 0
fi
exit "$status"
