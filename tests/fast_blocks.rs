//! Fast blocks: `p2pool` processes on the built-in regtest network against a real bcoin,
//! each with the test miner unthrottled (as fast as it hashes). On regtest a share takes
//! 256 hashes at first and every share is also a block; bitcoind must never be flooded
//! (one `submitblock` in flight, no sibling of an accepted block submitted, one block per
//! previous block over the P2P link) and blocks must keep landing; the best chain reaches
//! the share period within the minute (modern change 9); one node keeps most of its
//! shares in the chain, and three nodes paced while their young chain races (node policy
//! #38) most of theirs; three nodes' best chains agree below their newest 3 shares. The
//! miners run at the lowest CPU priority, as miners on their own hardware would: hashing
//! on every core, they would otherwise slow the nodes they are testing.
//!
//! One node, then three peered nodes, 60 s each (the two tests take turns on bcoin).
//! `P2POOL_FAST_BLOCKS_DUMP=1` prints each node's figures every 2 s and its best chain
//! (timestamp, work, finder) at the end.

mod support {
    pub mod bcoin;
    pub mod procs;
}

use std::time::Duration;

use serde_json::Value;

use support::bcoin::Bcoin;
use support::procs::{MinerProc, NodeProc, bcoin_args, wait_until};

const ADDRS: [&str; 3] = [
    "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8",
    "bcrt1qznsphatcaskf5p6utw6xpem987un8wkefvlryz",
    "bcrt1qxpljmypl3w45e6gyuf56wwaswzfcddwta655x9",
];
/// Whether to print each node's figures every 2 s and its best chain at the end.
fn dumping() -> bool {
    std::env::var_os("P2POOL_FAST_BLOCKS_DUMP").is_some()
}

/// How long the miners run: 60 s, or `P2POOL_FAST_BLOCKS_SECS` (doc/performance.md's
/// five-minute figures).
fn run_for() -> Duration {
    let secs = std::env::var("P2POOL_FAST_BLOCKS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn start_nodes(bcoin: &Bcoin, dir: &std::path::Path, n: usize) -> Vec<NodeProc> {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let mut nodes: Vec<NodeProc> = Vec::new();
    for name in NAMES.iter().take(n) {
        let mut args = vec!["--net".to_string(), "regtest".to_string()];
        args.extend(bcoin_args(bcoin));
        if let Some(first) = nodes.first() {
            args.extend(["-n".to_string(), format!("127.0.0.1:{}", first.p2p)]);
        }
        let node = NodeProc::start(name, &dir.join(name), &args);
        assert!(node.wait_http(Duration::from_secs(20)), "{}", node.dump());
        nodes.push(node);
    }
    if n > 1 {
        let peered = wait_until(Duration::from_secs(20), || {
            nodes.iter().all(|node| peers(node) >= 1)
        });
        assert!(peered, "the nodes never peered\n{}", dumps(&nodes));
    }
    nodes
}

/// An unthrottled miner on each node: getwork on the first, Stratum on the others.
fn start_miners(nodes: &[NodeProc]) -> Vec<MinerProc> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (url, protocol) = if i == 0 {
                (format!("http://127.0.0.1:{}/", node.worker), "getwork")
            } else {
                (
                    format!("stratum+tcp://127.0.0.1:{}", node.stratum),
                    "stratum",
                )
            };
            MinerProc::start_niced(&[
                "--url".into(),
                url,
                "--user".into(),
                ADDRS[i].into(),
                "--protocol".into(),
                protocol.into(),
                "--hashrate".into(),
                "0".into(),
            ])
        })
        .collect()
}

fn stats(node: &NodeProc) -> Value {
    node.json("/api/stats").unwrap_or(Value::Null)
}

fn peers(node: &NodeProc) -> u64 {
    stats(node)["peers"]["total"].as_u64().unwrap_or(0)
}

fn dumps(nodes: &[NodeProc]) -> String {
    nodes
        .iter()
        .map(NodeProc::dump)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The best chain's newest shares (hash, time), newest first.
fn newest_shares(node: &NodeProc) -> Vec<(String, u64)> {
    node.json("/api/shares")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Some((s["hash"].as_str()?.to_string(), s["time"].as_u64()?)))
        .collect()
}

/// Mean seconds between the newest 11 shares of the node's best chain.
fn mean_interval(node: &NodeProc) -> Option<f64> {
    let shares = newest_shares(node);
    let (newest, oldest) = (shares.first()?.1, shares.get(10)?.1);
    Some(newest.saturating_sub(oldest) as f64 / 10.0)
}

/// Runs the miners for [`run_for`], sampling bitcoind's height at the start, half way and at
/// the end; returns the samples.
fn mine_for_a_while(bcoin: &Bcoin, nodes: &[NodeProc]) -> Vec<u64> {
    let _miners = start_miners(nodes);
    let mut heights = vec![bcoin.height()];
    let dump = dumping();
    let start = std::time::Instant::now();
    for half in 1..=2u32 {
        while dump && start.elapsed() < run_for() * half / 2 {
            std::thread::sleep(Duration::from_secs(2));
            for node in nodes {
                let s = stats(node);
                eprintln!(
                    "sample {:.1} {} height {} diff {} local_rate {} pool_rate {} load {}",
                    start.elapsed().as_secs_f64(),
                    node.name,
                    s["best_height"],
                    s["share_difficulty"],
                    s["local_hashrate"],
                    s["pool_hashrate"],
                    std::fs::read_to_string("/proc/loadavg")
                        .unwrap_or_default()
                        .trim()
                );
            }
        }
        std::thread::sleep((run_for() * half / 2).saturating_sub(start.elapsed()));
        heights.push(bcoin.height());
    }
    heights
}

/// Bounds on the mean interval of the best chain's newest 10 shares after a minute
/// (regtest: 5 s), the issue's: the chain has left its 256-hash start and is not stuck.
/// Modern change 9 lets the target climb at most 10 % a share, so the climb to the period
/// takes some ten periods of hashing (the sum of a geometric series), and the minute ends
/// near its top: measured 2.4-4.2 s in a debug build (doc/performance.md).
const INTERVAL: (f64, f64) = (2.0, 15.0);
/// The most of one node's own shares that may be stale (orphaned or dead on arrival), alone
/// or one of three paced nodes (doc/protocol.md #38). Each of three has some 30 shares, so
/// one orphan is 3 % of its own: measured 0-9.7 % per node (doc/performance.md).
const MAX_STALE: f64 = 0.2;

/// What every fast-block run must show, per node: its best chain at the share period,
/// bitcoind never overloaded, blocks landing all along, at most `max_stale` of its own
/// shares stale.
fn check_node(node: &NodeProc, heights: &[u64], all: &[NodeProc], max_stale: f64) {
    let s = stats(node);
    let interval = mean_interval(node);
    let stale = s["local_stale_prop"].as_f64().unwrap_or(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ahead = newest_shares(node)
        .first()
        .map(|(_, time)| *time as i64 - now as i64);
    eprintln!(
        "node {}: newest 10 shares {interval:?} s apart (the newest {ahead:?} s ahead of the \
         clock, share difficulty {}), {:.1} % of local shares stale ({}), bitcoind's height \
         {heights:?}",
        node.name,
        s["share_difficulty"],
        100.0 * stale,
        s["shares"]
    );
    if dumping() {
        let chain = node.json("/api/shares?limit=100").unwrap_or(Value::Null);
        for s in chain.as_array().into_iter().flatten().rev() {
            eprintln!(
                "chain {} {} {} {} {}",
                node.name, s["time"], s["work"], s["address"], s["local"]
            );
        }
    }
    assert!(
        interval.is_some_and(|i| (INTERVAL.0..=INTERVAL.1).contains(&i)),
        "node {}: the newest 10 shares {interval:?} s apart, not within {INTERVAL:?}\n{}",
        node.name,
        dumps(all)
    );
    assert!(
        stale < max_stale,
        "node {}: {:.1} % of local shares stale\n{}",
        node.name,
        100.0 * stale,
        dumps(all)
    );
    // Never an overload answer (Core's HTTP 503 "work queue depth exceeded"), nor a block
    // that had to be retried because bitcoind did not answer.
    let log = node.log();
    let overloaded: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains("not submitted yet")
                || l.contains("Service Unavailable")
                || (l.contains("rpc ") && (l.contains(" failed") || l.contains("timed out")))
        })
        .collect();
    assert!(overloaded.is_empty(), "node {}: {overloaded:?}", node.name);
    // bitcoind's height rose in each half of the run.
    assert!(
        heights.windows(2).all(|w| w[1] > w[0]),
        "bitcoind's height stalled: {heights:?}\n{}",
        dumps(all)
    );
}

/// A fresh bcoin at height 0, one test at a time (the miners take every core). Not the
/// shared node: its chain was mined in a second, so its median time runs a minute ahead of
/// the clock and every block (and share) would be stamped with it.
fn fresh_bcoin() -> (Bcoin, std::sync::MutexGuard<'static, ()>) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    (Bcoin::start(), turn)
}

#[test]
fn one_node_with_an_unthrottled_miner_holds_its_share_period() {
    let (bcoin, _turn) = fresh_bcoin();
    let bcoin = &bcoin;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(bcoin, dir.path(), 1);
    let heights = mine_for_a_while(bcoin, &nodes);
    check_node(&nodes[0], &heights, &nodes, MAX_STALE);
}

#[test]
fn three_peered_nodes_with_unthrottled_miners_hold_the_share_period_and_agree() {
    let (bcoin, _turn) = fresh_bcoin();
    let bcoin = &bcoin;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(bcoin, dir.path(), 3);
    let heights = mine_for_a_while(bcoin, &nodes);
    // The best chains agree below their newest 3 shares.
    let agree = wait_until(Duration::from_secs(10), || {
        let chains: Vec<Vec<(String, u64)>> = nodes.iter().map(newest_shares).collect();
        chains.iter().all(|a| {
            a.get(3)
                .is_some_and(|(below, _)| chains.iter().all(|b| b.iter().any(|(h, _)| h == below)))
        })
    });
    assert!(
        agree,
        "the best chains differ below their newest 3 shares\n{}",
        dumps(&nodes)
    );
    // Paced while the young chain races (doc/protocol.md #38), most shares of each node
    // land in the chain.
    for node in &nodes {
        check_node(node, &heights, &nodes, MAX_STALE);
    }
}
