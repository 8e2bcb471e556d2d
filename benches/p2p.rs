//! The P2Pool network on loopback: a late node syncing a mainnet-size chain (2×17280+10
//! shares) from a peer, and a new share relayed along a line of three nodes.
//!
//! `cargo bench --bench p2p` prints: the time for a fresh node to receive and verify the
//! whole chain, then the time a new share found at A takes to become the best share at C
//! through B, per hop (receive, decode, add, think with verification, relay), over 30
//! shares.

#[path = "../tests/support/p2p_node.rs"]
mod p2p_node;

mod common;

use std::thread;
use std::time::{Duration, Instant};

use ruint::aliases::U256;

use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoin::script;
use p2pool::bitcoin::target::Bits;
use p2pool::network::{Network, RuleSet, WeightCap};
use p2pool::sharechain::sample::{self, Spec};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::tracker::Tracker;

use p2p_node::{TestNode, config};

const CHAIN_LENGTH: u32 = 17280;
const SHARES: usize = 2 * CHAIN_LENGTH as usize + 10;
const SCRIPTS: u32 = 300;
const T0: u32 = 1_700_000_000;
const RELAYS: usize = 30;

fn net() -> Network {
    let mut net = Network::built_in("regtest").expect("regtest is built in");
    net.name = "bench".into();
    net.rules = RuleSet::Modern;
    net.share_period = 5;
    net.chain_length = CHAIN_LENGTH;
    net.target_lookbehind = 200;
    net.spread = 3;
    net.weight_cap = WeightCap::Block;
    net.max_target = U256::MAX >> 8;
    net
}

fn script_for(n: u32) -> Vec<u8> {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_le_bytes());
    script::p2pkh(&h)
}

fn spec(prev: Option<Hash256>, i: usize) -> Spec {
    let mut spec = Spec::new(
        prev,
        T0 + 5 * i as u32,
        script_for((i as u32 * 7919) % SCRIPTS),
    );
    spec.block_bits = Bits::from_target_floor(U256::MAX >> 20);
    spec
}

fn wait(
    node: &TestNode,
    timeout: Duration,
    cond: impl Fn(&p2p_node::NodeState) -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond(&node.state()) {
        assert!(start.elapsed() < timeout, "timed out: {:?}", node.state());
        thread::sleep(Duration::from_micros(50));
    }
    start.elapsed()
}

fn main() {
    if !common::measuring() {
        return;
    }
    let net = net();
    let started = Instant::now();
    let mut tracker = Tracker::new();
    let mut shares: Vec<Share> = Vec::with_capacity(SHARES);
    for i in 0..SHARES {
        let share = sample::mine(&tracker, &net, &spec(shares.last().map(|s| s.hash), i));
        tracker.add(share.clone(), 0, None);
        shares.push(share);
    }
    println!("mined {SHARES} shares in {:.1?}", started.elapsed());

    // A holds the chain; B, started later, syncs it.
    let mut cfg = config(&net, &[]);
    cfg.max_outbound = 0;
    cfg.timeouts.getaddrs_every = Duration::from_secs(3600);
    let a = TestNode::start_with(cfg);
    let tip = shares.last().map(|s| s.hash);
    a.inject(shares.clone());
    let t = wait(&a, Duration::from_secs(120), |s| s.best == tip);
    let kept = a.state().shares;
    println!("A: {kept} shares, best verified in {t:.1?}");

    let mut cfg = config(&net, &[a.addr]);
    cfg.max_outbound = 1;
    cfg.timeouts.getaddrs_every = Duration::from_secs(3600);
    let b = TestNode::start_with(cfg);
    let t = wait(&b, Duration::from_secs(120), |s| {
        s.best == tip && s.shares == kept
    });
    println!(
        "sync: B received and verified {kept} shares ({} verified) in {t:.2?} (required < 10 s)",
        b.state().verified
    );

    let mut cfg = config(&net, &[b.addr]);
    cfg.max_outbound = 1;
    cfg.timeouts.getaddrs_every = Duration::from_secs(3600);
    let c = TestNode::start_with(cfg);
    let t = wait(&c, Duration::from_secs(120), |s| {
        s.best == tip && s.shares == kept
    });
    println!("sync: C received and verified {kept} shares from B in {t:.2?}");
    assert_eq!(a.peers.count(), 1, "A is linked to B only");

    // New shares at A, one at a time, until C has each as its best.
    let mut hops = Vec::with_capacity(RELAYS);
    let mut prev = tip;
    for i in 0..RELAYS {
        let share = sample::mine(&tracker, &net, &spec(prev, SHARES + i));
        tracker.add(share.clone(), 0, None);
        prev = Some(share.hash);
        let at = Instant::now();
        a.inject(vec![share]);
        wait(&c, Duration::from_secs(10), |s| s.best == prev);
        hops.push(at.elapsed() / 2);
        thread::sleep(Duration::from_millis(50));
    }
    hops.sort();
    println!(
        "relay A→B→C: per hop median {:.2?}, min {:.2?}, max {:.2?} over {RELAYS} shares (required < 5 ms)",
        hops[RELAYS / 2],
        hops[0],
        hops[RELAYS - 1]
    );
}
