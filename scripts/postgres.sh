#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests: `start` creates it under target/postgres
# (initdb), with wal_level=logical, max_prepared_transactions=32 and max_replication_slots=20,
# on a free loopback port, and prints its URL; `url` prints the URL of the running one;
# `stop` stops it and deletes it. As root it runs the server as the `postgres` user (the
# server refuses to run as root).
#
#   eval "$(scripts/postgres.sh start)"   # sets ACTORFLOW_POSTGRES_URL
#   scripts/postgres.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/target/postgres"
DATA="$ROOT/data"
BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    if [ ! -x "$BIN/initdb" ]; then
        echo "scripts/postgres.sh: no PostgreSQL at $BIN (set PG_BIN)" >&2
        exit 1
    fi
    if [ -f "$ROOT/url" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "export ACTORFLOW_POSTGRES_URL=$(cat "$ROOT/url")"
        exit 0
    fi
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$ROOT"
    fi
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-sync -E UTF8 >"$ROOT/initdb.log" 2>&1
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$ROOT'
wal_level = logical
max_prepared_transactions = 32
max_replication_slots = 20
max_wal_senders = 10
max_connections = 100
fsync = off
CONF
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$ROOT/server.log" -w -t 60 start >/dev/null
    URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
    echo "$URL" >"$ROOT/url"
    echo "export ACTORFLOW_POSTGRES_URL=$URL"
    ;;
url)
    cat "$ROOT/url"
    ;;
stop)
    if [ -d "$DATA" ]; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$ROOT"
    ;;
*)
    echo "usage: scripts/postgres.sh start|url|stop" >&2
    exit 2
    ;;
esac
