//! The P2Pool network as separate `p2pool` processes on loopback, on a custom easy network
//! loaded from a JSON file (`--net-file`). Miners are not wired into the node, so the chain
//! comes from an in-process `TestNode` holding real, valid shares; the processes get it
//! only over P2P. bitcoind is a dead port: the nodes run and keep retrying without it.
//!
//! A process is observed from outside only: a probe peer reads the best share it announces
//! in its `version` and asks it for its chain with getshares; a tap between two peers
//! counts what crosses it; its store is reopened once it has exited.

mod support {
    pub mod bcoin;
    pub mod p2p_node;
    pub mod p2p_probe;
    pub mod procs;
}

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use p2pool::bitcoin::hash::Hash256;
use p2pool::network::Network;
use p2pool::sharechain::best::HeightMap;
use p2pool::sharechain::chain::ShareChain;
use p2pool::sharechain::sample::{self, Spec, payout};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::tracker::Tracker;
use p2pool::store::Store;

use support::p2p_node::{TestNode, config};
use support::p2p_probe::{Probe, Tap, Way, best_of, local, wait_best};
use support::procs::{NodeProc, free_port};

/// The custom network, as a file the processes load: a short window and an easy target.
const NET_JSON: &str = r#"{
    "NAME": "nettest", "BITCOIN": "regtest", "SHARE_PERIOD": 10, "CHAIN_LENGTH": 100,
    "TARGET_LOOKBEHIND": 20, "SPREAD": 3,
    "MAX_TARGET": "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "IDENTIFIER": "6e65747465737431", "PREFIX": "6e65747465737432"
}"#;

/// Seconds between sample shares: the share period, so targets stay at MAX_TARGET.
const PERIOD: u32 = 10;
/// Liveness bound for a sync or a relay to complete.
const SYNC: Duration = Duration::from_secs(30);

fn net() -> Network {
    Network::from_json(NET_JSON, "nettest").expect("the test network parses")
}

/// 2×CHAIN_LENGTH+10 valid shares on the test network, oldest first (mined once).
fn chain() -> &'static Vec<Share> {
    static CHAIN: OnceLock<Vec<Share>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let net = net();
        let n = 2 * net.chain_length as usize + 10;
        let (tracker, hashes) = sample::chain(&net, n, PERIOD, &[payout(1), payout(2), payout(3)]);
        hashes
            .iter()
            .map(|h| tracker.get(h).unwrap().clone())
            .collect()
    })
}

fn tip(shares: &[Share]) -> Hash256 {
    shares.last().expect("a non-empty chain").hash
}

/// `n` new shares mined on top of `shares`, paying `script`.
fn extend(net: &Network, shares: &[Share], n: usize, script: u8) -> Vec<Share> {
    let mut tracker = Tracker::new();
    for s in shares {
        tracker.add(s.clone(), 0, None);
    }
    let mut prev = tip(shares);
    let mut time = shares.last().unwrap().timestamp();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        time += PERIOD;
        let share = sample::mine(&tracker, net, &Spec::new(Some(prev), time, payout(script)));
        prev = share.hash;
        tracker.add(share.clone(), 0, None);
        out.push(share);
    }
    out
}

/// A test directory with the network file written in it.
struct Dir {
    tmp: tempfile::TempDir,
    net_file: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let net_file = tmp.path().join("nettest.json");
        std::fs::write(&net_file, NET_JSON).expect("write the network file");
        assert_eq!(
            Network::from_file(&net_file).unwrap(),
            net(),
            "the processes run the network the shares are mined on"
        );
        Dir { tmp, net_file }
    }

    fn datadir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Starts `p2pool` on the test network with bitcoind at a dead port.
    fn start(&self, name: &'static str, extra: &[String]) -> NodeProc {
        self.start_in(name, &self.datadir(name), extra)
    }

    fn start_in(&self, name: &'static str, datadir: &Path, extra: &[String]) -> NodeProc {
        let mut args: Vec<String> = vec![
            "--net-file".into(),
            self.net_file.display().to_string(),
            "--bitcoind-rpc-port".into(),
            free_port().to_string(),
            "--bitcoind-p2p-port".into(),
            "0".into(),
        ];
        args.extend(extra.iter().cloned());
        args.extend(["u".into(), "p".into()]);
        let node = NodeProc::start(name, datadir, &args);
        assert!(
            wait_until(Duration::from_secs(10), || best_of(&net(), local(node.p2p))
                .is_some()),
            "{name} answers on its P2P port\n{}",
            node.dump()
        );
        node
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn peer(addr: std::net::SocketAddr) -> [String; 2] {
    ["-n".into(), addr.to_string()]
}

/// A TestNode holding `shares`, listening, never dialling anyone (so that the processes'
/// connections are exactly the ones a test sets up).
fn source(net: &Network, shares: &[Share]) -> TestNode {
    let mut cfg = config(net, &[]);
    cfg.max_outbound = 0;
    let node = TestNode::start_with(cfg);
    node.inject(shares.to_vec());
    assert!(
        node.wait(SYNC, |s| s.best == Some(tip(shares))),
        "the test node takes its chain: {:?}",
        node.state()
    );
    node
}

/// The hashes the test node keeps, newest first: what a synced node serves.
fn kept(node: &TestNode, shares: &[Share]) -> Vec<Hash256> {
    let n = node.state().shares;
    shares.iter().rev().take(n).map(|s| s.hash).collect()
}

/// Waits until the process announces `best`, then until getshares from it returns exactly
/// `expected` (newest first): the whole chain the source keeps.
fn assert_synced(net: &Network, node: &NodeProc, expected: &[Hash256]) {
    let best = expected[0];
    assert!(
        wait_best(net, local(node.p2p), best, SYNC),
        "{} announces the best share {best}; it announces {:?}\n{}",
        node.name,
        best_of(net, local(node.p2p)),
        node.dump()
    );
    let mut got = Vec::new();
    let whole = wait_until(SYNC, || {
        got = Probe::connect(net, local(node.p2p))
            .map(|mut p| p.get_chain(best, 1000, expected.len() + 1))
            .unwrap_or_default();
        got == expected
    });
    assert!(
        whole,
        "{} serves the whole chain: {} shares of {} (first mismatch at {:?})\n{}",
        node.name,
        got.len(),
        expected.len(),
        got.iter().zip(expected).position(|(a, b)| a != b),
        node.dump()
    );
}

/// N of the node's `loaded N shares` log line.
fn loaded(node: &NodeProc) -> Option<usize> {
    node.log().iter().find_map(|l| {
        let rest = l.split("loaded ").nth(1)?;
        let (n, tail) = rest.split_once(' ')?;
        tail.starts_with("shares").then(|| n.parse().ok()).flatten()
    })
}

#[test]
fn two_processes_sync_from_a_test_node_and_converge_on_its_best_share() {
    let net = net();
    let shares = chain();
    let dir = Dir::new();
    let t = source(&net, shares);
    let a = dir.start("a", &peer(t.addr));
    let b = dir.start("b", &peer(local(a.p2p)));
    assert_eq!(loaded(&a), Some(0), "a starts empty\n{}", a.dump());

    let expected = kept(&t, shares);
    assert!(expected.len() >= 2 * net.chain_length as usize);
    assert_synced(&net, &a, &expected);
    assert_synced(&net, &b, &expected);

    // New shares at the test node reach A, and B through A.
    let more = extend(&net, shares, 5, 7);
    t.inject(more.clone());
    let all: Vec<Share> = shares.iter().chain(&more).cloned().collect();
    assert!(t.wait(SYNC, |s| s.best == Some(tip(&all))));
    for node in [&a, &b] {
        assert!(
            wait_best(&net, local(node.p2p), tip(&all), SYNC),
            "{} converges on the new best share\n{}",
            node.name,
            node.dump()
        );
    }
}

#[test]
fn a_process_started_late_syncs_the_whole_chain_from_another_process() {
    let net = net();
    let shares = chain();
    let dir = Dir::new();
    let t = source(&net, shares);
    let expected = kept(&t, shares);
    let a = dir.start("a", &peer(t.addr));
    assert_synced(&net, &a, &expected);
    // The test node leaves: what the late node gets, it gets from process A.
    t.stop();

    let late = dir.start("late", &peer(local(a.p2p)));
    assert_eq!(loaded(&late), Some(0), "{}", late.dump());
    assert_synced(&net, &late, &expected);
}

#[test]
fn a_killed_process_reloads_its_chain_from_lmdb_and_fetches_only_what_it_missed() {
    let net = net();
    let shares = chain();
    let dir = Dir::new();
    let t = source(&net, shares);
    let expected = kept(&t, shares);
    let datadir = dir.datadir("a");
    // One outbound connection, to the tap, so that every share it fetches is counted.
    let only_tap = |tap: &Tap| {
        let mut args = peer(tap.addr).to_vec();
        args.extend(["--max-outbound".into(), "1".into()]);
        args
    };
    let tap = Tap::start(&net, t.addr);
    let a = dir.start_in("a", &datadir, &only_tap(&tap));
    assert_synced(&net, &a, &expected);
    let first = tap.counts();
    assert!(first.shares(Way::Down) >= expected.len(), "{first:?}");
    // The store is written once per tick (1 s).
    thread::sleep(Duration::from_millis(2500));
    let pid = a.pid();
    let log = a.kill();
    assert!(
        !log.iter().any(|l| l.contains("stopping")),
        "SIGKILL gives process {pid} no chance to stop cleanly"
    );
    drop(tap);

    // The network moves on while it is down.
    let missed = 15;
    let more = extend(&net, shares, missed, 8);
    t.inject(more.clone());
    let all: Vec<Share> = shares.iter().chain(&more).cloned().collect();
    assert!(t.wait(SYNC, |s| s.best == Some(tip(&all))));
    let expected = kept(&t, &all);

    let tap = Tap::start(&net, t.addr);
    let again = dir.start_in("a", &datadir, &only_tap(&tap));
    let n = loaded(&again).expect("the log says how many shares it loaded");
    assert!(
        n >= 2 * net.chain_length as usize,
        "reloads its chain from LMDB: {n} shares\n{}",
        again.dump()
    );
    assert_synced(&net, &again, &expected);
    let counts = tap.counts();
    eprintln!(
        "restarted: loaded {n} shares, fetched {} in {} getshares",
        counts.shares(Way::Down),
        counts.frames(Way::Up, "getshares")
    );
    assert_eq!(counts.connections, 1, "{counts:?}");
    let fetched = counts.shares(Way::Down);
    assert!(
        (missed..=missed + 5).contains(&fetched),
        "fetches only the {missed} shares it missed, got {fetched}: {counts:?}\n{}",
        again.dump()
    );
    assert!(counts.frames(Way::Up, "getshares") <= 4, "{counts:?}");
}

#[test]
fn sigterm_stops_a_process_within_5_s_with_status_0_and_its_store_intact() {
    let net = net();
    let shares = chain();
    let dir = Dir::new();
    let t = source(&net, shares);
    let expected = kept(&t, shares);
    let a = dir.start("a", &peer(t.addr));
    assert_synced(&net, &a, &expected);
    let datadir = a.datadir.clone();

    let (status, took, log) = a.terminate();
    eprintln!("SIGTERM: {status:?} after {took:?}");
    let tail = log[log.len().saturating_sub(40)..].join("\n");
    assert!(status.success(), "exit status {status:?}\n{tail}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}\n{tail}");
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{tail}");

    let store = Store::open(&datadir.join("store"), &net.name).expect("the store reopens");
    let mut chain = ShareChain::load(net.clone(), &store, false).expect("the chain loads");
    assert_eq!(chain.tracker().len(), expected.len());
    for hash in &expected {
        assert!(chain.tracker().contains(hash), "share {hash} was stored");
    }
    let now = p2pool::p2p::unix_now();
    let think = chain.think(&HeightMap::default(), None, now);
    assert_eq!(
        think.best,
        Some(expected[0]),
        "the stored chain has the same best share"
    );
    assert!(think.bad.is_empty(), "{:?}", think.bad);
}

#[test]
fn low_bandwidth_processes_announce_by_hash_and_converge() {
    let net = net();
    let shares = chain();
    let dir = Dir::new();
    let t = source(&net, shares);
    let expected = kept(&t, shares);
    let one_out = ["--max-outbound".to_string(), "1".into()];
    let mut args = peer(t.addr).to_vec();
    args.extend(one_out.clone());
    let a = dir.start("a", &args);
    // B reaches A only through the tap, in low-bandwidth mode.
    let tap = Tap::start(&net, local(a.p2p));
    let mut args = peer(tap.addr).to_vec();
    args.extend(one_out);
    args.push("-l".into());
    let b = dir.start("b", &args);
    let mode = Probe::connect(&net, local(b.p2p)).map(|p| p.version.mode);
    assert_eq!(mode, Some(0), "b announces low-bandwidth mode");

    assert_synced(&net, &a, &expected);
    assert_synced(&net, &b, &expected);

    let before = tap.counts();
    let more = extend(&net, shares, 5, 9);
    t.inject(more.clone());
    let all: Vec<Share> = shares.iter().chain(&more).cloned().collect();
    assert!(
        wait_best(&net, local(b.p2p), tip(&all), SYNC),
        "b converges on the new best share\n{}",
        b.dump()
    );
    let after = tap.counts();
    eprintln!("low-bandwidth link: {after:?}");
    assert_eq!(after.connections, 1, "{after:?}");
    // A announced the new shares to B by hash; B asked for them.
    assert!(
        after.announced(Way::Down) > before.announced(Way::Down),
        "{after:?}"
    );
    assert!(
        after.frames(Way::Up, "getshares") > before.frames(Way::Up, "getshares"),
        "{after:?}"
    );
    // Nothing but requested shares: the whole chain once and the new shares.
    assert!(
        after.shares(Way::Down) <= expected.len() + more.len() + 5,
        "{after:?}"
    );
}
