#!/usr/bin/env bash
# Run ON the borrowed GPU machine, from the repository root, by the `device` tool's last run of the
# ones scripts/gpu_prepare.sh lists (that call carries .whl and the last .pack/N folder; earlier
# calls, one right after the other on the warm machine, carried the other .pack/N folders):
#   bash scripts/gpu_train.sh RUN_NAME [fer train options...]   (trains on every .pack/*/*.npz)
# Installs the carried wheels, trains with KERAS_BACKEND=jax, prints each finished epoch as it
# comes, and keeps the run folder's files in $OUT/RUN_NAME all along, so a call stopped at its time
# limit still returns the best model and a resumable checkpoint. Back here the returned folder is
# a run folder: `python -m fer export` it (scoring the test parts here), or `--resume` it.
# STOP_AFTER_S=N cancels the run N seconds after it starts (the run's `cancel` file): it ends
# cleanly, its files complete, inside the call's time limit. FER_LOADER_THREADS (default: all
# cores but two) make the augmented batches: one thread cannot keep a GPU busy. KEEP_FILES names the
# run's files to keep in $OUT (default all seven; a call returns at most 8 files, 16 MiB each).
set -euo pipefail
name=$1
shift
python=${PYTHON:-python3}
out=${OUT:?OUT is the folder the device tool returns}/$name
if [ -z "${SKIP_WHEELS:-}" ]; then
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
threads=$(($(nproc) > 3 ? $(nproc) - 2 : 1))
export FER_LOADER_THREADS=${FER_LOADER_THREADS:-$((threads > 64 ? 64 : threads))}
run=${RUNS:-/tmp/fer-runs}/$name  # RUNS: where the run folders are made on that machine
mkdir -p "$run" "$out"
$python -c "import jax; print('devices:', jax.devices())"
mkdir -p .pack
for kept in "${KEPT:-/tmp/keep}"/*/; do  # what earlier calls carried and copied aside (gpu_prepare.sh)
  if [ -d "$kept" ] && [ ! -d ".pack/$(basename "$kept")" ]; then cp -r "$kept" .pack/; fi
done
mapfile -t packs < <(ls .pack/*/*.npz)
echo "training on ${packs[*]} with $FER_LOADER_THREADS loader threads"
for p in "${packs[@]}"; do  # a pack in parts (NAME-K-of-N.npz) must have all N of them here
  if [[ $p =~ -([0-9]+)-of-([0-9]+)\.npz$ ]]; then
    for ((k = 1; k <= BASH_REMATCH[2]; k++)); do
      part=${p%-*-of-*.npz}-$k-of-${BASH_REMATCH[2]}.npz
      if ! ls .pack/*/"$(basename "$part")" >/dev/null 2>&1; then
        echo "missing $(basename "$part"): an earlier call's .pack folder did not stay on the machine" >&2
        exit 3
      fi
    done
  fi
done
started=$SECONDS
$python -u -m fer train "${packs[@]}" --run-dir "$run" "$@" > "$run.log" 2>&1 &
trainer=$!
keep() {  # at most 8 files come back: these, and one copy on its way in; fer train writes each whole
  for f in ${KEEP_FILES:-best.keras last.keras state.json history.csv config.json status.json metrics.json}; do
    if [ -f "$run/$f" ]; then cp "$run/$f" "$out/.$f.part" && mv "$out/.$f.part" "$out/$f"; fi
  done
}
shown=1
while kill -0 "$trainer" 2>/dev/null; do
  sleep 5
  if [ -n "${STOP_AFTER_S:-}" ] && [ $((SECONDS - started)) -ge "$STOP_AFTER_S" ] && [ ! -f "$run/cancel" ]; then
    echo "stopping after ${STOP_AFTER_S}s (STOP_AFTER_S)"; touch "$run/cancel"
  fi
  if [ -f "$run/history.csv" ]; then
    lines=$(wc -l < "$run/history.csv")
    if [ "$lines" -gt "$shown" ]; then tail -n +"$((shown + 1))" "$run/history.csv"; shown=$lines; keep; fi
  fi
done
status=0
wait "$trainer" || status=$?
keep
tail -n 25 "$run.log"
exit "$status"
