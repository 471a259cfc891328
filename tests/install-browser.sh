#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser tests (never a downloaded browser build).
# Idempotent; needs root (as on CI and the developers' machines) the first time.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "chromium is missing and this user cannot apt-get install it; browser tests will not run" >&2
    exit 0
fi
started=$SECONDS
echo "==> installing Debian's chromium for browser tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
echo "==> chromium installed in $((SECONDS - started)) s"
