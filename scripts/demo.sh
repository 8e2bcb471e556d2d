#!/usr/bin/env bash
# The one-command demo (`make demo`): a regtest bcoin, three p2pool nodes peered on
# loopback, and a CPU test miner on each (getwork on one, Stratum on the others). Prints the
# dashboard URLs, then a status line every few seconds, until Ctrl-C stops everything.
#
# Environment: P2POOL_DEMO_DIR (default: a new temporary folder, removed at the end unless
# P2POOL_DEMO_KEEP=1), P2POOL_DEMO_NODES (2 or 3, default 3), P2POOL_DEMO_PORT (first worker
# port, default 19400; node i uses PORT+10i for web/getwork, +1 P2P, +2 Stratum),
# P2POOL_DEMO_HASHRATE (each miner's hashes per second, default 100; 0: as fast as it can).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES="${P2POOL_DEMO_NODES:-3}"
BASE="${P2POOL_DEMO_PORT:-19400}"
DIR="${P2POOL_DEMO_DIR:-$(mktemp -d -t p2pool-demo.XXXXXX)}"
mkdir -p "$DIR"
PIDS=()
BCOIN_PID=""

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }

cleanup() {
    trap - INT TERM EXIT
    say "stopping"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$BCOIN_PID" ]; then scripts/bcoin.sh stop "$BCOIN_PID" >/dev/null 2>&1 || true; fi
    if [ "${P2POOL_DEMO_KEEP:-0}" != 1 ] && [ -z "${P2POOL_DEMO_DIR:-}" ]; then rm -rf "$DIR"; fi
    say "stopped"
}
trap cleanup INT TERM EXIT

say "building p2pool and the test miner (release)"
# The test miner is a development binary: only the `testminer` feature builds it.
cargo build --release --features testminer --bin p2pool --bin p2pool-testminer
BIN=target/release

say "starting a regtest bitcoin node (bcoin from npm; installed once into a cache)"
scripts/bcoin.sh start --watch-pid $$ > "$DIR/bcoin.env"
# shellcheck disable=SC1091
. "$DIR/bcoin.env"
BCOIN_PID="$pid"
say "bcoin: rpc 127.0.0.1:$rpc_port, p2p 127.0.0.1:$p2p_port, log $log"

# Payout addresses of the demo miners: regtest P2WPKH addresses of made-up key hashes
# (sha256("p2pool demo miner N")[:20]); nobody can spend them, it is a demo.
ADDRS=(
    bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8
    bcrt1qznsphatcaskf5p6utw6xpem987un8wkefvlryz
    bcrt1qxpljmypl3w45e6gyuf56wwaswzfcddwta655x9
)

for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    args=(--net regtest -w "$w" --p2pool-port $((w + 1)) --stratum-port $((w + 2))
          --bitcoind-rpc-port "$rpc_port" --bitcoind-p2p-port "$p2p_port"
          --bitcoind-datadir "$datadir" --datadir "$DIR/node$i" --logfile "$DIR/node$i.log")
    if [ "$i" -gt 0 ]; then args+=(-n "127.0.0.1:$((BASE + 1))"); fi
    "$BIN/p2pool" "${args[@]}" 2>/dev/null &
    PIDS+=($!)
done

# Wait for each node's web port.
for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$w") 2>/dev/null; then break; fi
        sleep 0.1
    done
done

for i in $(seq 0 $((NODES - 1))); do
    w=$((BASE + 10 * i))
    if [ "$i" -eq 0 ]; then
        url="http://127.0.0.1:$w/"; proto=getwork
    else
        url="stratum+tcp://127.0.0.1:$((w + 2))"; proto=stratum
    fi
    # On regtest a share takes ~256 hashes at first and nearly every share is a block: a
    # throttled miner keeps the demo readable (P2POOL_DEMO_HASHRATE=0: unthrottled).
    "$BIN/p2pool-testminer" --url "$url" --user "${ADDRS[$i]}" --protocol "$proto" \
        --hashrate "${P2POOL_DEMO_HASHRATE:-100}" > "$DIR/miner$i.log" 2>&1 &
    PIDS+=($!)
done

echo
for i in $(seq 0 $((NODES - 1))); do
    say "node $i dashboard: http://127.0.0.1:$((BASE + 10 * i))/   (log: $DIR/node$i.log)"
done
say "Ctrl-C stops everything"
echo

# A status line every 5 s from each node's JSON API.
get() { # port path
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}
field() { # json key -> value (numbers and strings; enough for a status line)
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'
}
while sleep 5; do
    line=""
    for i in $(seq 0 $((NODES - 1))); do
        s="$(get $((BASE + 10 * i)) /api/stats 2>/dev/null || true)"
        line+="node$i: chain $(field "$s" best_height) shares, "
        # Accepted (in bitcoind's chain) of found: every node counts the pool's blocks,
        # stale ones too, so found alone may exceed bitcoind's height.
        line+="blocks $(field "$s" accepted) accepted of $(field "$s" blocks_found) found | "
    done
    echo "bitcoin height $(field "$(get "$BASE" /api/stats 2>/dev/null || true)" block_height) | $line"
done
