#!/usr/bin/env bash
# Refresh the README's screenshots: the browser tests save one per page into docs/screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."
FER_SCREENSHOTS=docs/screenshots ./test.sh tests/test_browser.py "$@"
