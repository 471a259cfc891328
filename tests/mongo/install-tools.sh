#!/usr/bin/env bash
# Install the MongoDB test tools: FerretDB v1.24.2 (built with Go into $PAM_TOOLS_CACHE/bin, default
# var/cache/bin) and the JS clients (mongosh, Node driver) into tests/js/node_modules.
# Idempotent: a step whose result is already present takes well under a second.
# Usage: tests/mongo/install-tools.sh [ferretdb] [clients]   (no argument: both)
set -euo pipefail

cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3

step() {
    local name=$1 started=$SECONDS
    shift
    echo "==> $name"
    "$python" -m tests.mongo "$@"
    echo "==> $name took $((SECONDS - started)) s"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(ferretdb clients)
for s in "${steps[@]}"; do
    case "$s" in
        ferretdb) step "FerretDB (go install)" install-ferretdb ;;
        clients) step "JS clients (npm ci)" install-clients ;;
        *) echo "unknown step: $s (expected ferretdb or clients)" >&2; exit 2 ;;
    esac
done
