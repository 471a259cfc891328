#!/usr/bin/env bash
# Install the test identity provider (panva's oidc-provider, pinned in tests/oidc/package-lock.json) with npm ci
# into tests/oidc/node_modules, for the single sign-on tests. Idempotent: nothing to do once it is there.
set -euo pipefail
cd "$(dirname "$0")/oidc"
if [ -f node_modules/oidc-provider/package.json ] && [ -f node_modules/jose/package.json ] \
    && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "npm is missing: the single sign-on tests need Node.js and npm (apt-get install nodejs npm)" >&2
    exit 1
fi
started=$SECONDS
echo "==> test identity provider (npm ci in tests/oidc)"
npm ci --no-audit --no-fund --loglevel=error
echo "==> test identity provider installed in $((SECONDS - started)) s"
