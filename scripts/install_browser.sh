#!/usr/bin/env bash
# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
# Installs it with apt when it is missing and we may; otherwise says so and the browser tests skip
# (or fail, where FER_REQUIRE_BROWSER is set, as .ci/run does).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (once)" >&2
  log=$(mktemp)
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$log" 2>&1; then
    rm -f "$log"
    exit 0
  fi
  tail -20 "$log" >&2
  echo "warning: could not install chromium with apt-get (see above); browser tests will not run" >&2
else
  echo "warning: /usr/bin/chromium is missing; install Debian's chromium package" \
       "(apt-get install chromium) to run the browser tests" >&2
fi
