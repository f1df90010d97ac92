#!/usr/bin/env bash
# Set everything up (runtime + test tools) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh requirements-dev.txt
scripts/install_browser.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
