#!/usr/bin/env bash
# Install Debian's redis-server for the tests of the Redis channel layer (the scale-out configuration).
# Idempotent; needs root (as on CI and the developers' machines) the first time.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "redis-server is missing and this user cannot apt-get install it; Redis tests will not run" >&2
    exit 0
fi
started=$SECONDS
echo "==> installing Debian's redis-server for the Redis channel-layer tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
echo "==> redis-server installed in $((SECONDS - started)) s"
