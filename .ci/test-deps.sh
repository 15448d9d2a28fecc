#!/usr/bin/env bash
# What the tests need beyond Python's packages, installed with apt-get when missing: chromium for
# tests/test_browser.py, and a redis-server built with TLS for the TLS test (installed, never started).
set -euo pipefail
cd "$(dirname "$0")"
bash browser-setup.sh
bash tls-setup.sh
