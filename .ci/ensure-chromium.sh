#!/usr/bin/env bash
# Installs Chromium from Debian's packages when /usr/bin/chromium is
# missing, then the browser tests' npm packages (tests/browser: the pinned
# playwright-core that drives it) when missing or out of date. Playwright's
# own browser download is never used: the tests launch /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  .ci/apt-install.sh chromium
fi
dir=tests/browser
stamp=$dir/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
  echo "installing $dir's packages (npm ci)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
fi
