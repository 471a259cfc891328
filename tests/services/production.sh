#!/usr/bin/env bash
# The production profile's services for tests and benchmarks: PostgreSQL and Redis from Debian, on loopback,
# in throw-away directories. Idempotent.
#   tests/services/production.sh start   installs if missing, starts both, prints `export DATABASE_URL=… REDIS_URL=…`
#   tests/services/production.sh stop    stops both
# Use: eval "$(tests/services/production.sh start)"
set -euo pipefail

PG_PORT=${PAM_PG_PORT:-5433}
REDIS_PORT=${PAM_REDIS_PORT:-6380}
STATE=${PAM_SERVICES_DIR:-/tmp/pam-services}
PG_DATA=$STATE/pg
PG_USER=pam
PG_PASSWORD=pam-test-only
PG_DB=pam

log() { echo "$*" >&2; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || return 1
    echo "$dir"
}

install_packages() {
    local missing=()
    pg_bin >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing ${missing[*]} and not root: cannot apt-get install them"
        exit 1
    fi
    log "==> installing ${missing[*]} from Debian"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    local bin
    bin=$(pg_bin)
    mkdir -p "$STATE"
    if [ "$(id -u)" = 0 ]; then chown postgres "$STATE" 2>/dev/null || true; chmod 755 "$STATE"; fi
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
            -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=400" \
            start >/dev/null
    fi
    as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qtAc \
        "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'" | grep -q 1 ||
        as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qc \
            "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >/dev/null
    as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1 ||
        as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
}

start_redis() {
    mkdir -p "$STATE/redis"
    if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
            --dir "$STATE/redis" --logfile "$STATE/redis/redis.log" --pidfile "$STATE/redis/redis.pid" >&2
        for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
}

case "${1:-start}" in
    start)
        install_packages
        start_postgres
        start_redis
        echo "export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
        echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
        ;;
    stop)
        bin=$(pg_bin) && as_postgres "$bin/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
