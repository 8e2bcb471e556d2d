#!/usr/bin/env bash
# A real regtest Bitcoin node for tests and demos: bcoin 1.0.2 from npm.
#
#   scripts/bcoin.sh install
#       Install bcoin once into the cache folder ($P2POOL_BCOIN_DIR, by default
#       $HOME/.cache/p2pool-bcoin). Idempotent and safe to run concurrently.
#   scripts/bcoin.sh start [--datadir DIR] [--rpc-port N] [--p2p-port N] [--watch-pid PID]
#       Install if needed, then start a regtest node with RPC and P2P on 127.0.0.1 (free ports
#       unless given) and a fresh data dir (a new temporary one unless given). Waits until both
#       ports accept connections, then prints `key=value` lines: pid, rpc_port, p2p_port,
#       datadir, cookie, log. The RPC password is in the cookie file (`__cookie__:<key>`, mode
#       0600, at <datadir>/regtest/.cookie, where Bitcoin Core keeps it); it is never printed.
#       With --watch-pid, the node is also stopped when process PID exits.
#   scripts/bcoin.sh stop PID
#       Stop the node started with that pid (TERM, then KILL after 10 s).
#
# bcoin 1.0.2's leveldown 4 does not build on Node 20; npm `overrides` pin leveldown 5.6.0,
# which ships a prebuilt Linux binary. Nothing is downloaded from outside the npm registry.
set -euo pipefail

BCOIN_VERSION=1.0.2
LEVELDOWN_VERSION=5.6.0
CACHE_DIR="${P2POOL_BCOIN_DIR:-${HOME:-/tmp}/.cache/p2pool-bcoin}"
PKG_DIR="$CACHE_DIR/bcoin-$BCOIN_VERSION"
NODE_BIN="$PKG_DIR/node_modules/bcoin/bin/node"
START_TIMEOUT=60

die() {
    echo "bcoin.sh: $*" >&2
    exit 1
}

installed() {
    [ -f "$PKG_DIR/.complete" ] && [ -f "$NODE_BIN" ]
}

# Take the install lock on fd 9 (flock), or a mkdir lock where flock is missing.
lock() {
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE_DIR/.lock"
        flock -w 900 9 || die "timed out waiting for the install lock $CACHE_DIR/.lock"
        return
    fi
    local dir="$CACHE_DIR/.lock.d" waited=0 owner
    until mkdir "$dir" 2>/dev/null; do
        owner="$(cat "$dir/pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            rm -rf "$dir"
            continue
        fi
        waited=$((waited + 1))
        [ "$waited" -lt 900 ] || die "timed out waiting for the install lock $dir"
        sleep 1
    done
    echo $$ >"$dir/pid"
    trap 'rm -rf "$CACHE_DIR/.lock.d"' EXIT
}

install() {
    installed && return 0
    command -v node >/dev/null 2>&1 || die "node not found: bcoin needs Node.js (20 or later)"
    command -v npm >/dev/null 2>&1 || die "npm not found: bcoin is installed from the npm registry"
    lock
    # Another process may have finished the install while we waited for the lock.
    installed && return 0
    local tmp="$CACHE_DIR/tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cat >"$tmp/package.json" <<EOF
{
  "private": true,
  "dependencies": { "bcoin": "$BCOIN_VERSION" },
  "overrides": { "leveldown": "$LEVELDOWN_VERSION" }
}
EOF
    echo "bcoin.sh: installing bcoin $BCOIN_VERSION into $PKG_DIR" >&2
    if ! (cd "$tmp" && npm install --no-audit --no-fund --loglevel=error >&2); then
        rm -rf "$tmp"
        die "npm install of bcoin $BCOIN_VERSION failed"
    fi
    if ! (cd "$tmp" && node -e 'require("leveldown"); require("bcoin")' >&2); then
        rm -rf "$tmp"
        die "bcoin $BCOIN_VERSION installed but does not load (leveldown $LEVELDOWN_VERSION)"
    fi
    touch "$tmp/.complete"
    rm -rf "$PKG_DIR"
    mv "$tmp" "$PKG_DIR"
}

free_port() {
    node -e 'const s = require("net").createServer();
s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True while process $1 exists and is not a zombie.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        case "$(cut -d')' -f2 2>/dev/null <"/proc/$1/stat")" in " Z"*) return 1 ;; esac
    fi
    return 0
}

# TERM, then KILL if the process is still there after 10 s.
terminate() {
    local pid="$1" waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while alive "$pid"; do
        waited=$((waited + 1))
        if [ "$waited" -gt 100 ]; then
            kill -KILL "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
}

# The node and the data dir of a start not finished yet: a failure or a signal (Ctrl-C)
# before the node is handed over stops the node and removes a data dir start created.
STARTING_PID=""
STARTING_DIR=""
abort_start() {
    if [ -n "$STARTING_PID" ]; then kill -KILL "$STARTING_PID" 2>/dev/null || true; fi
    if [ -n "$STARTING_DIR" ]; then rm -rf "$STARTING_DIR"; fi
    # The mkdir install lock, if this process holds it (see lock).
    if [ "$(cat "$CACHE_DIR/.lock.d/pid" 2>/dev/null || true)" = $$ ]; then
        rm -rf "$CACHE_DIR/.lock.d"
    fi
}

start() {
    local datadir="" rpc_port="" p2p_port="" watch_pid="" own_datadir=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --datadir) datadir="${2:?--datadir needs a value}"; shift 2 ;;
            --rpc-port) rpc_port="${2:?--rpc-port needs a value}"; shift 2 ;;
            --p2p-port) p2p_port="${2:?--p2p-port needs a value}"; shift 2 ;;
            --watch-pid) watch_pid="${2:?--watch-pid needs a value}"; shift 2 ;;
            *) die "unknown option to start: $1" ;;
        esac
    done
    install
    trap abort_start EXIT
    trap 'exit 1' INT TERM HUP
    if [ -z "$datadir" ]; then
        datadir="$(mktemp -d "${TMPDIR:-/tmp}/p2pool-bcoin.XXXXXX")"
        own_datadir=1
        STARTING_DIR="$datadir"
    elif [ -e "$datadir" ] && [ -n "$(ls -A "$datadir")" ]; then
        die "data dir $datadir is not empty; start needs a fresh one"
    fi
    mkdir -p "$datadir/regtest"
    [ -n "$rpc_port" ] || rpc_port="$(free_port)"
    [ -n "$p2p_port" ] || p2p_port="$(free_port)"
    [ "$rpc_port" != "$p2p_port" ] || p2p_port="$(free_port)"

    local key cookie="$datadir/regtest/.cookie" log="$datadir/bcoin.log"
    key="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && printf '__cookie__:%s' "$key" >"$cookie")

    # --api-key on the command line would show the password in `ps`; bcoin also reads
    # BCOIN_API_KEY from the environment.
    BCOIN_API_KEY="$key" nohup node "$NODE_BIN" \
        --network=regtest --prefix="$datadir" --no-wallet --workers=false \
        --listen=true --host=127.0.0.1 --port="$p2p_port" --only=127.0.0.1:1 --public-host=240.0.0.1 \
        --http-host=127.0.0.1 --http-port="$rpc_port" \
        --log-level=info --log-console=false \
        </dev/null >"$log" 2>&1 &
    local pid=$!
    STARTING_PID=$pid

    local waited=0
    until port_open "$rpc_port" && port_open "$p2p_port"; do
        if ! alive "$pid"; then
            echo "bcoin.sh: the node exited during start-up; its output:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        waited=$((waited + 1))
        if [ "$waited" -gt $((START_TIMEOUT * 10)) ]; then
            kill -KILL "$pid" 2>/dev/null || true
            tail -n 20 "$log" >&2 || true
            die "the node did not open ports $rpc_port and $p2p_port within ${START_TIMEOUT}s (its log's end above)"
        fi
        sleep 0.1
    done

    if [ -n "$watch_pid" ]; then
        # Stops the node when the watched process (a test binary, say) exits, however it exits,
        # and removes a data dir this script created once the node is gone.
        # It ignores SIGINT and SIGHUP: a Ctrl-C or a closed terminal reaches the whole
        # process group, and the watchdog must outlive the watched process to clean up.
        (
            trap '' INT HUP
            while alive "$watch_pid" && alive "$pid"; do
                sleep 0.5
            done
            terminate "$pid"
            if [ -n "$own_datadir" ]; then rm -rf "$datadir"; fi
        ) </dev/null >/dev/null 2>&1 &
    fi

    STARTING_PID=""
    STARTING_DIR=""
    trap - EXIT INT TERM HUP
    echo "pid=$pid"
    echo "rpc_port=$rpc_port"
    echo "p2p_port=$p2p_port"
    echo "datadir=$datadir"
    echo "cookie=$cookie"
    echo "log=$log"
}

stop() {
    local pid="${1:?stop needs the pid printed by start}"
    case "$pid" in *[!0-9]*) die "not a pid: $pid" ;; esac
    alive "$pid" || return 0
    # Refuse to signal a process that is not a bcoin node (the pid may have been reused).
    # bcoin sets its process title to "bcoin".
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q bcoin; then
        die "process $pid is not a bcoin node; not stopping it"
    fi
    terminate "$pid"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 install | start [--datadir DIR] [--rpc-port N] [--p2p-port N] [--watch-pid PID] | stop PID" ;;
esac
