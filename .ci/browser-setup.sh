#!/usr/bin/env bash
# Installs Debian's chromium for tests/test_browser.py (driven by Playwright's driver only).
# Never runs `playwright install`: the test uses this system browser, not a downloaded one.
# Does nothing when chromium is already on PATH; fails when it cannot install it.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
# shellcheck source=as-root.sh
source "$(dirname "$0")/as-root.sh" "browser-setup: chromium is missing and installing it needs root (apt-get install chromium)"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-setup: chromium is missing and there is no apt-get; install chromium by hand" >&2
    exit 1
fi

started=$SECONDS
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "browser-setup: installed $(chromium --version 2>/dev/null || echo chromium) in $((SECONDS - started)) s"
