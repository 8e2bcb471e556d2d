#!/usr/bin/env bash
# The one-command demo (`make demo`): a regtest bcoin, three p2pool nodes peered on
# loopback, and a CPU test miner on each (getwork on one, Stratum on the others). Prints the
# dashboard URLs and where each log is, then a status line every few seconds, until Ctrl-C
# (or SIGTERM, or SIGHUP) stops everything.
#
# Environment: P2POOL_DEMO_DIR (default: a new temporary folder, removed at the end unless
# P2POOL_DEMO_KEEP=1), P2POOL_DEMO_NODES (2 or 3, default 3), P2POOL_DEMO_PORT (first worker
# port, default 19400; node i uses PORT+10i for web/getwork, +1 P2P, +2 Stratum),
# P2POOL_DEMO_HASHRATE (each miner's hashes per second, default 100; 0: as fast as it can),
# P2POOL_DEMO_BIN (a folder holding built `p2pool` and `p2pool-testminer`: skips the build).
#
# Exit status: 0 after Ctrl-C/SIGTERM (everything stopped and removed), 1 when a node cannot
# start, 2 when a port is taken or a knob is wrong (before anything starts).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
fail() { # status message
    printf 'demo: %s\n' "$2" >&2
    exit "$1"
}

NODES="${P2POOL_DEMO_NODES:-3}"
BASE="${P2POOL_DEMO_PORT:-19400}"
case "$NODES" in 2 | 3) ;; *) fail 2 "P2POOL_DEMO_NODES must be 2 or 3, not '$NODES'" ;; esac
case "$BASE" in
    '' | *[!0-9]*) fail 2 "P2POOL_DEMO_PORT must be a port number, not '$BASE'" ;;
esac
LAST=$((BASE + 10 * (NODES - 1) + 2))
if [ "$BASE" -lt 1024 ] || [ "$LAST" -gt 65535 ]; then
    fail 2 "P2POOL_DEMO_PORT=$BASE: the demo needs ports $BASE to $LAST, within 1024-65535"
fi

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Every port of every node must be free before anything starts: a node that cannot bind
# stops, and a dashboard URL would point at another program.
taken=()
for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    for p in "$w:web/getwork" "$((w + 1)):P2P" "$((w + 2)):Stratum"; do
        if port_open "${p%%:*}"; then taken+=("${p%%:*} (node $i ${p#*:})"); fi
    done
done
if [ "${#taken[@]}" -gt 0 ]; then
    list="$(printf '%s, ' "${taken[@]}")"
    what="port"
    if [ "${#taken[@]}" -gt 1 ]; then what="ports"; fi
    other=$((BASE + 1000))
    if [ $((LAST + 1000)) -gt 65535 ]; then other=$((BASE - 1000)); fi
    fail 2 "$what ${list%, } already in use by another program. The demo uses ports $BASE to $LAST (node i: PORT+10i web/getwork, +1 P2P, +2 Stratum); move them with P2POOL_DEMO_PORT, e.g. P2POOL_DEMO_PORT=$other make demo"
fi

DIR="${P2POOL_DEMO_DIR:-$(mktemp -d -t p2pool-demo.XXXXXX)}"
mkdir -p "$DIR"
PIDS=()
BCOIN_PID=""
BCOIN_DIR=""
SLEEP_PID=""

# True while process $1 exists and is not a zombie.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        case "$(cut -d')' -f2 2>/dev/null <"/proc/$1/stat")" in " Z"*) return 1 ;; esac
    fi
    return 0
}

# Stops every process the demo started, bcoin last, and removes bcoin's data directory (its
# cookie too) and, unless kept, the demo's folder. Runs once, on every way out.
cleanup() {
    trap - INT TERM HUP EXIT
    # A second Ctrl-C while stopping must not cut the cleanup short.
    trap '' INT HUP
    say "stopping"
    if [ -n "$SLEEP_PID" ]; then kill -TERM "$SLEEP_PID" 2>/dev/null || true; fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Each process has 10 s to stop after TERM, then it is killed.
    for pid in "${PIDS[@]}"; do
        waited=0
        while alive "$pid" && [ "$waited" -lt 100 ]; do
            waited=$((waited + 1))
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$BCOIN_PID" ]; then scripts/bcoin.sh stop "$BCOIN_PID" >/dev/null 2>&1 || true; fi
    if [ -n "$BCOIN_DIR" ]; then rm -rf "$BCOIN_DIR"; fi
    if [ "${P2POOL_DEMO_KEEP:-0}" != 1 ] && [ -z "${P2POOL_DEMO_DIR:-}" ]; then
        rm -rf "$DIR"
        say "stopped; removed $DIR"
    else
        say "stopped; data and logs kept in $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

if [ -n "${P2POOL_DEMO_BIN:-}" ]; then
    BIN="$P2POOL_DEMO_BIN"
    [ -x "$BIN/p2pool" ] && [ -x "$BIN/p2pool-testminer" ] ||
        fail 2 "P2POOL_DEMO_BIN=$BIN holds no p2pool and p2pool-testminer binaries"
else
    say "building p2pool and the test miner (release)"
    # The test miner is a development binary: only the `testminer` feature builds it.
    cargo build --release --features testminer --bin p2pool --bin p2pool-testminer
    BIN=target/release
fi

say "starting a regtest bitcoin node (bcoin from npm; installed once into a cache)"
scripts/bcoin.sh start --watch-pid $$ > "$DIR/bcoin.env"
# shellcheck disable=SC1091
. "$DIR/bcoin.env"
BCOIN_PID="$pid"
BCOIN_DIR="$datadir"
say "bcoin: rpc 127.0.0.1:$rpc_port, p2p 127.0.0.1:$p2p_port, log $log"

# Payout addresses of the demo miners: regtest P2WPKH addresses of made-up key hashes
# (sha256("p2pool demo miner N")[:20]); nobody can spend them, it is a demo.
ADDRS=(
    bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8
    bcrt1qznsphatcaskf5p6utw6xpem987un8wkefvlryz
    bcrt1qxpljmypl3w45e6gyuf56wwaswzfcddwta655x9
)

# Each node's whole output (its log, and any error before logging starts) goes to
# $DIR/nodeN.log.
NODE_PIDS=()
for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    args=(--net regtest -w "$w" --p2pool-port $((w + 1)) --stratum-port $((w + 2))
          --bitcoind-rpc-port "$rpc_port" --bitcoind-p2p-port "$p2p_port"
          --bitcoind-datadir "$datadir" --datadir "$DIR/node$i")
    if [ "$i" -gt 0 ]; then args+=(-n "127.0.0.1:$((BASE + 1))"); fi
    "$BIN/p2pool" "${args[@]}" > "$DIR/node$i.log" 2>&1 &
    PIDS+=($!)
    NODE_PIDS+=($!)
done

# Wait for each node's web port; a node that exits (a port taken meanwhile, say) stops
# the demo with its log's last lines.
for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    waited=0
    until port_open "$w"; do
        if ! kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
            tail -n 5 "$DIR/node$i.log" >&2 || true
            fail 1 "node $i exited during start-up (its log: $DIR/node$i.log, above)"
        fi
        waited=$((waited + 1))
        if [ "$waited" -gt 300 ]; then
            fail 1 "node $i did not open its web port $w within 30 s (its log: $DIR/node$i.log)"
        fi
        sleep 0.1
    done
done

# The nodes' JSON API, read with bash alone.
get() { # port path
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    # A node that does not answer within 3 s leaves a blank, never a stuck demo.
    reply="$(timeout 3 cat <&3 || true)"
    exec 3<&-
    sed '1,/^\r$/d' <<<"$reply"
}
field() { # json key -> value (numbers and strings; enough for a status line)
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"' || true
}
peers() { # json -> incoming + outgoing peers
    local p
    p="$(grep -o '"peers":{[^}]*}' <<<"$1" | head -1 || true)"
    echo $(( $(field "$p" incoming || true)+0 + $(field "$p" outgoing || true)+0 ))
}

# The miners start once the nodes have peered (node 0 with every other node): a node
# mining alone first builds a chain of its own, and the others' first shares are
# orphaned when they join it.
waited=0
until {
    ok=1
    for i in $(seq 0 $((NODES - 1))); do
        want=1
        if [ "$i" -eq 0 ]; then want=$((NODES - 1)); fi
        n="$(peers "$(get $((BASE + 10 * i)) /api/stats 2>/dev/null || true)")"
        if [ "${n:-0}" -lt "$want" ]; then ok=0; fi
    done
    [ "$ok" -eq 1 ]
}; do
    waited=$((waited + 1))
    if [ "$waited" -gt 300 ]; then
        fail 1 "the nodes did not peer within 30 s (their logs: $DIR/node*.log)"
    fi
    sleep 0.1
done
say "the $NODES nodes have peered; starting the miners"

for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    if [ "$i" -eq 0 ]; then
        url="http://127.0.0.1:$w/"; proto=getwork
    else
        url="stratum+tcp://127.0.0.1:$((w + 2))"; proto=stratum
    fi
    # On regtest a share takes ~256 hashes at first and nearly every share is a block: a
    # throttled miner keeps the demo readable (P2POOL_DEMO_HASHRATE=0: unthrottled). The
    # miners run niced, as miners on their own hardware would: unthrottled on every core,
    # they would otherwise slow the nodes they mine for.
    nice -n 19 "$BIN/p2pool-testminer" --url "$url" --user "${ADDRS[$i]}" --protocol "$proto" \
        --hashrate "${P2POOL_DEMO_HASHRATE:-100}" > "$DIR/miner$i.log" 2>&1 &
    PIDS+=($!)
done

echo
for i in $(seq 0 $((NODES - 1))); do
    say "node $i dashboard: http://127.0.0.1:$((BASE + 10 * i))/   (log: $DIR/node$i.log, miner: $DIR/miner$i.log)"
done
if [ "${P2POOL_DEMO_KEEP:-0}" != 1 ] && [ -z "${P2POOL_DEMO_DIR:-}" ]; then
    say "Ctrl-C stops everything and removes $DIR (P2POOL_DEMO_KEEP=1 keeps it)"
else
    say "Ctrl-C stops everything; $DIR is kept"
fi
echo

# A status line every 5 s from each node's JSON API.
while true; do
    # `sleep & wait`: a signal runs its trap at once, not after the sleep.
    sleep 5 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    line=""
    for i in $(seq 0 $((NODES - 1))); do
        if ! kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
            # A Ctrl-C reaches the nodes too: give its trap the time to run first.
            sleep 1
            tail -n 5 "$DIR/node$i.log" >&2 || true
            fail 1 "node $i stopped (its log: $DIR/node$i.log, above)"
        fi
        s="$(get $((BASE + 10 * i)) /api/stats 2>/dev/null || true)"
        line+="node$i: chain $(field "$s" best_height) shares, "
        # Accepted (in bitcoind's chain) of found: every node counts the pool's blocks,
        # stale ones too, so found alone may exceed bitcoind's height.
        line+="blocks $(field "$s" accepted) accepted of $(field "$s" blocks_found) found | "
    done
    echo "bitcoin height $(field "$(get "$BASE" /api/stats 2>/dev/null || true)" block_height) | $line"
done
