//! Hostile peers on the share side, over real sockets on loopback: each attack of issue 13
//! that costs the attacker no hash rate is replayed against a node made of real parts
//! (share chain, share sync, p2p threads) while an honest peer keeps working with it, and
//! the defence is asserted: refusal, disconnect, score and ban, and the bound.

mod support {
    pub mod hostile;
    pub mod p2p_node;
}

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use p2pool::bitcoin::block::BlockHeader;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::{Network, RuleSet};
use p2pool::p2p::message::Message;
use p2pool::sharechain::chain::Limits;
use p2pool::sharechain::sample::{self, Spec, modern_net, payout};
use p2pool::sharechain::share::{ModernFields, Share, Share1a, Share1b, ShareData, ShareInfo};
use p2pool::sharechain::tracker::Tracker;

use support::hostile::Hostile;
use support::p2p_node::{TestNode, config};

const WAIT: Duration = Duration::from_secs(10);
const T0: u32 = 1_600_000_000;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// `n` valid shares mined on top of `base` (or from genesis), added to `tracker`.
fn mine(
    tracker: &mut Tracker,
    net: &Network,
    base: Option<Hash256>,
    n: usize,
    script: u8,
) -> Vec<Share> {
    let start = base
        .and_then(|b| tracker.get(&b).map(|s| s.timestamp()))
        .unwrap_or(T0);
    let mut prev = base;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let spec = Spec::new(prev, start + 10 * (i as u32 + 1), payout(script));
        let share = sample::mine(tracker, net, &spec);
        prev = Some(share.hash);
        tracker.add(share.clone(), 0, None);
        out.push(share);
    }
    out
}

fn last(shares: &[Share]) -> Option<Hash256> {
    shares.last().map(|s| s.hash)
}

fn info(net: &Network, parent: Option<Hash256>, target: Bits, salt: u32) -> ShareInfo {
    ShareInfo {
        share_data: ShareData {
            previous_share_hash: parent,
            target,
            nonce: salt.to_le_bytes().to_vec(),
        },
        new_script: payout(9),
        subsidy: 5_000_000_000,
        modern: (net.rules == RuleSet::Modern).then_some(ModernFields {
            block_height: 1,
            witness_commitment: [0; 32],
        }),
    }
}

/// A share claiming target 2^256 (bits 0xff7fffff): any header "meets" it, so it costs
/// nothing to make.
fn zero_work(net: &Network, salt: u32) -> Share1a {
    Share1a {
        header: BlockHeader {
            version: 1,
            previous_block: Hash256::ZERO,
            merkle_root: sha256d(&salt.to_le_bytes()),
            timestamp: T0,
            bits: Bits(0x1d00ffff),
            nonce: salt,
        },
        info: info(
            net,
            Some(sha256d(&[b'z', salt as u8])),
            Bits(0xff7fffff),
            salt,
        ),
        merkle_branch: vec![],
    }
}

fn cheap(net: &Network, parent: Option<Hash256>, salt: u32) -> Share1a {
    sample::cheap_share1a(net, parent, salt)
}

/// A chain of `n` cheap shares over a parent nobody has.
fn cheap_chain(net: &Network, n: u32, seed: u8) -> Vec<Share1a> {
    let mut parent = Some(sha256d(&[b'h', seed]));
    (0..n)
        .map(|i| {
            let s = cheap(net, parent, u32::from(seed) << 16 | i);
            parent = Some(s.hash());
            s
        })
        .collect()
}

fn banned(node: &TestNode, ip: Ipv4Addr) -> bool {
    node.peers.status().banned.contains(&ip.into())
}

/// Waits until `cond` holds; false after `timeout`.
fn eventually(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// An honest pair on the test network, converged on a 20-share chain.
fn honest_pair(limits: Limits) -> (TestNode, TestNode, Tracker, Vec<Share>) {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let shares = mine(&mut tracker, &net, None, 20, 1);
    let a = TestNode::start_limited(config(&net, &[]), limits);
    let b = TestNode::start(&net, &[a.addr]);
    assert!(b.wait_peers(1, WAIT));
    a.inject(shares.clone());
    assert!(b.wait(WAIT, |s| s.best == last(&shares)));
    (a, b, tracker, shares)
}

/// The honest pair still relays a new share both ways.
fn still_converging(a: &TestNode, b: &TestNode, tracker: &mut Tracker, tip: Option<Hash256>) {
    let net = modern_net();
    let more = mine(tracker, &net, tip, 2, 2);
    a.inject(more.clone());
    assert!(
        b.wait(WAIT, |s| s.best == last(&more)),
        "honest peers keep converging"
    );
}

#[test]
fn zero_work_shares_are_refused_at_once_and_their_sender_banned() {
    let net = modern_net();
    let (a, b, mut tracker, shares) = honest_pair(Limits::for_network(&net));
    let framing = net.framing();
    let flood: Vec<Share1a> = (0..30_000).map(|i| zero_work(&net, i)).collect();
    let before = a.state().shares;
    // Twice from one address: refused and scored each time, banned by the second.
    for round in 0..2 {
        let mut h = Hostile::connect(loopback(20), a.addr, framing.clone());
        if h.handshake().is_err() {
            break;
        }
        let _ = h.send(&Message::Share1as(flood.clone()));
        assert!(
            h.closed_within(WAIT),
            "round {round}: the flooder is dropped"
        );
    }
    assert!(eventually(WAIT, || banned(&a, loopback(20))));
    // A banned address is refused at accept: no version from us.
    let mut h = Hostile::connect(loopback(20), a.addr, framing.clone());
    assert!(h.wait_for("version", Duration::from_secs(1)).is_none());
    let s = a.state();
    assert_eq!(s.shares, before, "no zero-work share was taken");
    assert_eq!(s.unconnected, 0);
    still_converging(&a, &b, &mut tracker, last(&shares));
}

#[test]
fn unconnected_shares_are_held_within_the_peer_budget_and_a_flooder_is_banned() {
    let net = modern_net();
    let limits = Limits {
        per_peer_shares: 300,
        per_peer_bytes: 1 << 20,
        total_shares: 400,
        total_bytes: 2 << 20,
        deadline: 3_600,
    };
    let (a, b, mut tracker, shares) = honest_pair(limits);
    let framing = net.framing();
    // Each message: 250 lone shares, each on a parent nobody has.
    let batches: Vec<Vec<Share1a>> = (0..4u8)
        .map(|k| {
            (0..250u32)
                .map(|i| {
                    cheap(
                        &net,
                        Some(sha256d(&[b'o', k, i as u8, (i >> 8) as u8])),
                        u32::from(k) << 16 | i,
                    )
                })
                .collect()
        })
        .collect();
    let mut h = Hostile::connect(loopback(21), a.addr, framing.clone());
    h.handshake().unwrap();
    for batch in &batches {
        if h.send(&Message::Share1as(batch.clone())).is_err() {
            break;
        }
    }
    assert!(
        eventually(WAIT, || banned(&a, loopback(21))),
        "two messages past the budget ban the sender"
    );
    assert!(h.closed_within(WAIT));
    let s = a.state();
    assert!(s.unconnected <= 300, "{} unconnected held", s.unconnected);
    assert!(s.unconnected_bytes <= 1 << 20);
    // None of it is relayed: the honest peer holds only the honest chain.
    assert_eq!(b.state().shares, shares.len());
    still_converging(&a, &b, &mut tracker, last(&shares));
}

#[test]
fn unconnected_shares_whose_gap_never_fills_are_dropped_and_never_served() {
    let net = modern_net();
    let limits = Limits {
        deadline: 2,
        ..Limits::for_network(&net)
    };
    let (a, b, mut tracker, shares) = honest_pair(limits);
    let framing = net.framing();
    // A fake chain over a hole (the getshares amplification; shorter than
    // CHAIN_LENGTH, so it cannot even be tried), and lone shares on other holes.
    let fake = cheap_chain(&net, 10, 1);
    let head = fake.last().map(Share1a::hash).unwrap();
    let mut sent: Vec<Share1a> = fake.iter().rev().cloned().collect();
    sent.extend((0..90u32).map(|i| cheap(&net, Some(sha256d(&[b'l', i as u8])), 1000 + i)));
    let mut h = Hostile::connect(loopback(22), a.addr, framing.clone());
    h.handshake().unwrap();
    h.send(&Message::Share1as(sent)).unwrap();
    assert!(a.wait(WAIT, |s| s.unconnected == 100));
    // Asked for it, we serve nothing: only verified shares are served.
    h.send(&Message::GetShares {
        hashes: vec![head],
        parents: 1000,
        stops: vec![],
    })
    .unwrap();
    assert!(
        h.wait_for("share1as", Duration::from_secs(1)).is_none(),
        "unverified shares are never served"
    );
    // The gaps stay open past the deadline: all 100 go, counted against the sender.
    assert!(a.wait(WAIT, |s| s.unconnected == 0 && s.expired == 100));
    assert_eq!(a.state().shares, shares.len());
    // The honest head is still served.
    h.send(&Message::GetShares {
        hashes: vec![last(&shares).unwrap()],
        parents: 5,
        stops: vec![],
    })
    .unwrap();
    let reply = h
        .wait_for("share1as", WAIT)
        .expect("the honest chain is served");
    match Message::decode(&reply.command, &reply.payload, net.rules).unwrap() {
        Message::Share1as(list) => assert_eq!(list.len(), 6),
        other => panic!("unexpected {other:?}"),
    }
    still_converging(&a, &b, &mut tracker, last(&shares));
}

#[test]
fn a_bad_chain_to_genesis_is_removed_at_once_and_its_sender_scored() {
    let net = modern_net();
    let (a, b, mut tracker, shares) = honest_pair(Limits::for_network(&net));
    let framing = net.framing();
    // 400 shares from genesis, each claiming half its computed target.
    let mut bad_tracker = Tracker::new();
    let mut prev = None;
    let mut bad = Vec::new();
    for i in 0..400u32 {
        let mut spec = Spec::new(prev, T0 + 5 * (i + 1), payout(7));
        spec.claimed_target = Some(Bits(0x1f7fffff));
        let s = sample::mine(&bad_tracker, &net, &spec);
        prev = Some(s.hash);
        bad_tracker.add(s.clone(), 0, None);
        bad.push(s.to_share1a());
    }
    let mut h = Hostile::connect(loopback(23), a.addr, framing.clone());
    h.handshake().unwrap();
    h.send(&Message::Share1as(bad)).unwrap();
    // All 400 go in one think: the deepest failure takes every descendant with it.
    assert!(a.wait(WAIT, |s| s.bad >= 1 && s.shares == shares.len()));
    assert_eq!(a.state().bad, 1, "one removal for the whole chain");
    assert!(
        a.state().longest_think < Duration::from_secs(2),
        "no quadratic re-verification"
    );
    still_converging(&a, &b, &mut tracker, last(&shares));
}

fn tx(seed: u8) -> Transaction {
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: sha256d(&[seed, 1]),
                vout: 0,
            },
            script_sig: vec![0x51],
            sequence: 0xffff_ffff,
            witness: vec![],
        }],
        outputs: vec![TxOut {
            value: 1000,
            script_pubkey: payout(seed),
        }],
        lock_time: 0,
    }
}

#[test]
fn a_mutated_block_share_sent_first_never_hides_the_honest_block() {
    let net = modern_net();
    let (a, b, mut tracker, shares) = honest_pair(Limits::for_network(&net));
    let framing = net.framing();
    let mut spec = Spec::new(last(&shares), T0 + 500, payout(3));
    spec.block_bits = Bits(0x2000ffff);
    spec.other_txs = Some(vec![tx(5), tx(6)]);
    let whole = sample::mine(&tracker, &net, &spec);
    assert!(whole.is_block());
    let header = whole.header;
    let info = whole.info.clone();
    // CVE-2012-2459: the last transaction repeated; same merkle root, same share hash.
    let mutated = Share1b {
        header,
        info: info.clone(),
        other_txs: vec![tx(5), tx(6), tx(6)],
    };
    assert_eq!(mutated.hash(), whole.hash);
    let mut h = Hostile::connect(loopback(24), a.addr, framing.clone());
    h.handshake().unwrap();
    h.send(&Message::Share1bs(vec![mutated])).unwrap();
    assert!(a.wait(WAIT, |s| s.best == Some(whole.hash)));
    let s = a.state();
    assert_eq!(s.blocks, 0, "the mutated copy is never submitted");
    assert_eq!(s.bad, 0, "and never marks the honest hash bad");
    assert!(!banned(&a, loopback(24)));
    // The mutated copy is not passed on.
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(b.best(), Some(whole.hash));
    // The honest copy arrives (from its finder's link): it replaces the mutated one.
    tracker.add(whole.clone(), 0, None);
    let mut finder = Hostile::connect(loopback(26), a.addr, framing.clone());
    finder.handshake().unwrap();
    finder
        .send(&Message::Share1bs(vec![Share1b {
            header,
            info,
            other_txs: vec![tx(5), tx(6)],
        }]))
        .unwrap();
    assert!(
        a.wait(WAIT, |s| s.blocks == 1),
        "the whole copy's block comes out"
    );
    // And now it is relayed.
    assert!(b.wait(WAIT, |s| s.best == Some(whole.hash)));
    still_converging(&a, &b, &mut tracker, Some(whole.hash));
}

#[test]
fn junk_block_shares_with_a_huge_witness_are_refused_and_banned() {
    let net = modern_net();
    let (a, b, mut tracker, shares) = honest_pair(Limits::for_network(&net));
    let framing = net.framing();
    let mut big = tx(1);
    big.inputs[0].witness = vec![vec![0x42; 7_900_000]];
    let junk = Share1b {
        header: BlockHeader {
            version: 1,
            previous_block: Hash256::ZERO,
            merkle_root: Hash256::ZERO,
            timestamp: T0,
            bits: Bits(0xff7fffff),
            nonce: 0,
        },
        info: info(&net, Some(sha256d(b"junk")), Bits(0xff7fffff), 1),
        other_txs: vec![big],
    };
    for round in 0..2 {
        let mut h = Hostile::connect(loopback(25), a.addr, framing.clone());
        if h.handshake().is_err() {
            break;
        }
        let _ = h.send(&Message::Share1bs(vec![junk.clone()]));
        assert!(h.closed_within(WAIT), "round {round}");
    }
    assert!(eventually(WAIT, || banned(&a, loopback(25))));
    let s = a.state();
    assert_eq!((s.shares, s.unconnected), (shares.len(), 0));
    still_converging(&a, &b, &mut tracker, last(&shares));
}

#[test]
fn announced_hashes_are_asked_for_a_bounded_number_at_a_time() {
    let net = modern_net();
    let (a, b, mut tracker, shares) = honest_pair(Limits::for_network(&net));
    let framing = net.framing();
    let mut h = Hostile::connect(loopback(27), a.addr, framing.clone());
    h.handshake().unwrap();
    // share0s of 1,000 hashes nobody has, ten times.
    for k in 0..10u8 {
        let hashes: Vec<Hash256> = (0..1000u32)
            .map(|i| sha256d(&[b'a', k, i as u8, (i >> 8) as u8]))
            .collect();
        h.send(&Message::Share0s(hashes)).unwrap();
    }
    let mut asked = 0;
    while let Some(frame) = h.wait_for("getshares", Duration::from_secs(2)) {
        match Message::decode(&frame.command, &frame.payload, net.rules).unwrap() {
            Message::GetShares { hashes, .. } => {
                assert!(hashes.len() <= 100, "{} asked at once", hashes.len());
                asked += hashes.len();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(asked > 0 && asked <= 1_000, "{asked} asked in all");
    still_converging(&a, &b, &mut tracker, last(&shares));
}
