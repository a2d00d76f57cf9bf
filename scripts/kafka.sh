#!/usr/bin/env bash
# A Kafka-protocol broker for the tests: Tansu (crates.io `tansu`, Apache-2.0), built once per
# machine into a cache outside the clone (~12 minutes on 2 cores) and reused after that.
#
#   eval "$(scripts/kafka.sh start)"   # sets ACTORFLOW_KAFKA_BROKERS (memory storage)
#   scripts/kafka.sh install            # only build (or find) the broker binary
#   scripts/kafka.sh bin                # the binary's path
#   scripts/kafka.sh stop
#   ACTORFLOW_KAFKA_STORAGE=memory scripts/kafka.sh start   # the in-memory engine (benchmarks)
#
# `start` runs the broker on a free loopback port with the SQLite storage engine, in
# target/kafka. (Tansu 0.6.0's in-memory engine answers a ListOffsets "latest" with the base
# offset of the newest batch plus one, not the end of the partition, so end offsets and lag
# would be wrong; the SQL engines answer correctly.) Tests that restart a broker start their
# own the same way, from the binary `bin` prints; they find it through ACTORFLOW_TANSU_BIN,
# which `start` sets too.
#
# The cache is $ACTORFLOW_CACHE (default ~/.cache/actorflow); the build's target directory is
# deleted after a successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.6.0
CACHE="${ACTORFLOW_CACHE:-$HOME/.cache/actorflow}"
PREFIX="$CACHE/tansu-$VERSION"
BIN="$PREFIX/bin/tansu"
ROOT="$PWD/target/kafka"

install() {
    if [ -x "$BIN" ]; then
        return 0
    fi
    echo "scripts/kafka.sh: building the Tansu $VERSION broker into $PREFIX (once per machine, ~12 min)" >&2
    mkdir -p "$CACHE"
    local target="$CACHE/tansu-target"
    if ! CARGO_TARGET_DIR="$target" cargo install tansu --version "$VERSION" --locked \
        --features dynostore,libsql --root "$PREFIX" >"$CACHE/tansu-install.log" 2>&1; then
        echo "scripts/kafka.sh: cargo install tansu failed; the end of $CACHE/tansu-install.log:" >&2
        tail -30 "$CACHE/tansu-install.log" >&2
        exit 1
    fi
    rm -rf "$target"
}

wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "scripts/kafka.sh: the broker exited; its log:" >&2
            tail -30 "$ROOT/broker.log" >&2
            exit 1
        fi
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
            return 0
        fi
        sleep 0.1
    done
    echo "scripts/kafka.sh: the broker did not listen on $port within 30 s" >&2
    exit 1
}

case "${1:-}" in
install)
    install
    ;;
bin)
    install
    echo "$BIN"
    ;;
start)
    install
    if [ -f "$ROOT/pid" ] && kill -0 "$(cat "$ROOT/pid")" 2>/dev/null; then
        echo "export ACTORFLOW_KAFKA_BROKERS=$(cat "$ROOT/brokers")"
        echo "export ACTORFLOW_TANSU_BIN=$BIN"
        exit 0
    fi
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    case "${ACTORFLOW_KAFKA_STORAGE:-sqlite}" in
    sqlite) STORAGE="sqlite://broker.db" ;; # relative to the broker's working directory
    memory) STORAGE="memory://tansu/" ;;
    *)
        echo "scripts/kafka.sh: ACTORFLOW_KAFKA_STORAGE is sqlite or memory" >&2
        exit 2
        ;;
    esac
    # setsid: the broker outlives this script, in its own session (so `stop` can end it).
    (cd "$ROOT" && exec setsid "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "$STORAGE" \
        >"$ROOT/broker.log" 2>&1 </dev/null) &
    PID=$!
    echo "$PID" >"$ROOT/pid"
    wait_port "$PORT" "$PID"
    echo "127.0.0.1:$PORT" >"$ROOT/brokers"
    echo "export ACTORFLOW_KAFKA_BROKERS=127.0.0.1:$PORT"
    echo "export ACTORFLOW_TANSU_BIN=$BIN"
    ;;
stop)
    if [ -f "$ROOT/pid" ]; then
        kill "$(cat "$ROOT/pid")" 2>/dev/null || true
    fi
    rm -rf "$ROOT"
    ;;
*)
    echo "usage: scripts/kafka.sh install|bin|start|stop" >&2
    exit 2
    ;;
esac
