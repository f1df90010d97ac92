#!/usr/bin/env bash
# Run HERE, before asking for a GPU machine (the `device` tool; see "Training on a borrowed GPU
# machine" in the README). Fills ignored folders that device calls carry:
#   .whl/       keras and the two packages that machine lacks, for its Python 3.12
#   .pack/N/    the faces to train on, each dataset's train and val parts packed here
#               (python -m fer pack; a part too big for one call in --part K/N pieces), shared out
#               over as few calls as fit 64 MiB each
#   scripts/gpu_prepare.sh [DATASET...]        (default: FER2013 and expw-sample from ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- ../shared/datasets/fer2013 ../shared/datasets/expw-sample; fi
export TF_CPP_MIN_LOG_LEVEL=2
python=.venv/bin/python
version() { $python -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
if ! ls .whl/keras-"$(version keras)"-*.whl >/dev/null 2>&1; then
  rm -f .whl/*.whl
  platforms=()
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  $python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl \
    "keras==$(version keras)" "namex==$(version namex)" "optree==$(version optree)"
fi
rm -rf .pack
mkdir -p .pack/all
# Room for packs in one call: 63 MiB less the repository's tracked files (which every call carries).
room=$($python -c "
import subprocess
from pathlib import Path
files = subprocess.run(['git', 'ls-files'], capture_output=True, text=True, check=True).stdout.split()
print(63 * 2**20 - sum(Path(p).stat().st_size for p in files))")
for dataset in "$@"; do
  for split in train val; do
    out=".pack/all/$(basename "$dataset")-$split.npz"
    $python -m fer pack "$dataset" --splits "$split" --out "$out"
    size=$(stat -c %s "$out")
    if [ "$size" -gt "$room" ]; then  # too big for one call: N packs of every N-th face instead
      parts=$(( (size * 21 / 20 + room - 1) / room ))
      rm "$out"
      for ((k = 1; k <= parts; k++)); do
        $python -m fer pack "$dataset" --splits "$split" --part "$k/$parts" --out "${out%.npz}-$k-of-$parts.npz"
      done
    fi
  done
done
# Share the packs out over calls: the biggest first, each call under 63 MiB with the repository;
# the last call also carries .whl and trains.
$python - <<'PY'
import subprocess
from pathlib import Path

limit = 63 * 2**20  # a call carries at most 64 MiB in all
tracked = sum(Path(p).stat().st_size for p in subprocess.run(
    ["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split())
wheels = sum(p.stat().st_size for p in Path(".whl").glob("*.whl"))
sizes = {p: p.stat().st_size for p in Path(".pack/all").glob("*.npz")}
calls: list[list[Path]] = []
for pack in sorted(sizes, key=lambda p: -sizes[p]):
    for call in calls:
        if tracked + sum(sizes[p] for p in call) + sizes[pack] <= limit:
            call.append(pack)
            break
    else:
        if tracked + sizes[pack] > limit:
            raise SystemExit(f"{pack} alone is too big for a device call: pack it at a lower --quality")
        calls.append([pack])
# The call that trains carries the wheels too: the one with the most room goes last.
calls.sort(key=lambda call: -sum(sizes[p] for p in call))
if tracked + wheels + sum(sizes[p] for p in calls[-1]) > limit:
    calls.append([])
for number, call in enumerate(calls, start=1):
    folder = Path(f".pack/{number}")
    folder.mkdir()
    for pack in call:
        pack.rename(folder / pack.name)
    last = number == len(calls)
    size = tracked + sum(sizes[p] for p in call) + (wheels if last else 0)
    carry = [str(folder)] + ([".whl"] if last else [])
    print(f"call {number}: carry {carry} ({size / 2**20:.1f} MiB with the repository)")
Path(".pack/all").rmdir()
PY
echo "Calls before the last one only keep what they carried, while the machine is warm (make them one"
echo "right after the other): call N runs  mkdir -p /tmp/keep && cp -r .pack/N /tmp/keep/"
echo "The last one runs  bash scripts/gpu_bundled.sh  (the bundled model's two runs), or"
echo "  bash scripts/gpu_train.sh RUN_NAME --epochs N [fer train options]"
