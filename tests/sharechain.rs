//! The share chain as the node runs it: verification as ancestry arrives (§6.3), the best
//! share and the stale rule (§6.4), pruning (§6.5), block shares checked whole, and the
//! store across restarts and kills.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::Network;
use p2pool::sharechain::best::HeightMap;
use p2pool::sharechain::chain::{Added, Limits, ShareChain};
use p2pool::sharechain::sample::{self, Spec, legacy_net, modern_net, payout};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::tracker::Tracker;
use p2pool::sharechain::verify::VerifyError;
use p2pool::store::Store;

const T0: u32 = 1_600_000_000;
const NOW: u64 = T0 as u64 + 1_000_000;

/// `n` valid shares from genesis (or on top of `base`), 10 s apart, on `block`.
fn mine_on(
    tracker: &mut Tracker,
    net: &Network,
    base: Option<Hash256>,
    n: usize,
    block: Hash256,
    script: u8,
) -> Vec<Share> {
    let mut prev = base;
    let start = base
        .and_then(|b| tracker.get(&b).map(|s| s.timestamp()))
        .unwrap_or(T0);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut spec = Spec::new(prev, start + 10 * (i as u32 + 1), payout(script));
        spec.previous_block = block;
        let share = sample::mine(tracker, net, &spec);
        prev = Some(share.hash);
        tracker.add(share.clone(), 0, None);
        out.push(share);
    }
    out
}

fn genesis_chain(net: &Network, n: usize) -> Vec<Share> {
    mine_on(&mut Tracker::new(), net, None, n, block(1), 1)
}

fn block(n: u8) -> Hash256 {
    sha256d(&[n])
}

fn heights(pairs: &[(u8, u32)], highest: u32) -> HeightMap {
    HeightMap {
        heights: pairs.iter().map(|&(b, h)| (block(b), h)).collect(),
        highest,
    }
}

fn feed(chain: &mut ShareChain, shares: &[Share], peer: Option<u64>, seen: u64) {
    for s in shares {
        chain.add(s.clone(), peer, seen);
    }
}

#[test]
fn genesis_chain_verifies_whole_and_the_tip_is_best() {
    let net = legacy_net(false);
    let shares = genesis_chain(&net, 20);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &shares, Some(1), NOW);
    let think = chain.think(&heights(&[(1, 100)], 100), Some(block(1)), NOW);
    // As R: the head, then down to CHAIN_LENGTH verified shares.
    assert_eq!(think.verified, 12);
    assert_eq!(chain.tracker().verified_count(), 12);
    assert_eq!(think.best, Some(shares[19].hash));
    assert!(think.wanted.is_empty() && think.bad.is_empty() && think.blocks.is_empty());
}

#[test]
fn a_run_longer_than_chain_length_above_a_verified_chain_joins_it_and_its_tip_is_best() {
    // CHAIN_LENGTH 12: 17 shares come and are verified, then 13 more at once (a peer's
    // relays read between two thinks). The head verifies and verification runs down to the
    // verified 17, leaving no unverified share between two trees.
    let net = modern_net();
    let shares = genesis_chain(&net, 30);
    let mut chain = ShareChain::new(net);
    let hs = heights(&[(1, 100)], 100);
    feed(&mut chain, &shares[..17], Some(1), NOW);
    assert_eq!(
        chain.think(&hs, Some(block(1)), NOW).best,
        Some(shares[16].hash)
    );
    feed(&mut chain, &shares[17..], Some(1), NOW);
    let think = chain.think(&hs, Some(block(1)), NOW);
    assert_eq!(think.best, Some(shares[29].hash));
    // The first think verified the newest 12 of the 17 (R's CHAIN_LENGTH); everything
    // above them is verified now.
    for s in &shares[5..] {
        assert!(
            chain.tracker().is_verified(&s.hash),
            "share {} verified",
            s.hash
        );
    }
    assert_eq!(
        chain.tracker().verified().heads().len(),
        1,
        "one verified tree"
    );
}

#[test]
fn newest_first_arrival_verifies_once_ancestry_allows_and_asks_the_sender_for_the_rest() {
    let net = legacy_net(false);
    let cl = net.chain_length as usize;
    let shares = genesis_chain(&net, 3 * cl);
    let mut chain = ShareChain::new(net);
    let hs = heights(&[(1, 100)], 100);
    // The newest 2×CL shares arrive first, from peer 7, newest first.
    for s in shares[cl..].iter().rev() {
        chain.add(s.clone(), Some(7), NOW);
    }
    let think = chain.think(&hs, Some(block(1)), NOW);
    assert!(
        think.verified >= 1,
        "the head has CHAIN_LENGTH ancestors and verifies"
    );
    assert!(chain.tracker().is_verified(&shares[3 * cl - 1].hash));
    assert!(
        think.wanted.contains(&(Some(7), shares[cl - 1].hash)),
        "the missing ancestor is asked of the peer that sent its child: {:?}",
        think.wanted
    );
    assert_eq!(think.best, Some(shares[3 * cl - 1].hash));
    // The rest arrive; verification reaches CHAIN_LENGTH and nothing is wanted.
    feed(&mut chain, &shares[..cl], Some(7), NOW);
    let mut think = chain.think(&hs, Some(block(1)), NOW);
    for _ in 0..3 {
        think = chain.think(&hs, Some(block(1)), NOW);
    }
    assert!(chain.tracker().verified().height(&shares[3 * cl - 1].hash) >= cl as u32);
    assert!(think.wanted.is_empty(), "{:?}", think.wanted);
}

#[test]
fn invalid_head_is_removed_and_reported_with_its_sender() {
    let net = legacy_net(false);
    let mut tracker = Tracker::new();
    let shares = mine_on(&mut tracker, &net, None, 8, block(1), 1);
    let mut spec = Spec::new(Some(shares[7].hash), T0 + 90, payout(2));
    // Half the computed target (MAX_TARGET on so short a chain): not the computed one.
    spec.claimed_target = Some(Bits(0x1f7fffff));
    let bad = sample::mine(&tracker, &net, &spec);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &shares, None, NOW);
    chain.add(bad.clone(), Some(9), NOW);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(think.bad.len(), 1);
    let (hash, peer, err) = &think.bad[0];
    assert_eq!((*hash, *peer), (bad.hash, Some(9)));
    assert!(matches!(err, VerifyError::WrongTarget { .. }), "{err}");
    assert!(!chain.tracker().contains(&bad.hash));
    assert_eq!(think.best, Some(shares[7].hash));
    assert!(chain.take_batch().remove_shares.contains(&bad.hash));
}

#[test]
fn stale_rule_mines_on_the_parent_of_a_peers_share_built_on_an_old_block() {
    let net = legacy_net(false);
    let shares = genesis_chain(&net, 6);
    let tip = shares[5].hash;
    let hs = heights(&[(1, 100), (2, 101)], 101);
    // From a peer, on block 1 while bitcoind is on block 2: mine on its parent.
    let mut chain = ShareChain::new(net.clone());
    feed(&mut chain, &shares, Some(3), NOW);
    assert_eq!(
        chain.think(&hs, Some(block(2)), NOW).best,
        Some(shares[4].hash)
    );
    // Same block as bitcoind's: the tip.
    assert_eq!(chain.think(&hs, Some(block(1)), NOW).best, Some(tip));
    // The share is itself the current block: the tip.
    assert_eq!(
        chain.think(&hs, Some(shares[5].pow_hash), NOW).best,
        Some(tip)
    );
    // Our own share is never passed over.
    let mut own = ShareChain::new(net);
    feed(&mut own, &shares, None, NOW);
    assert_eq!(own.think(&hs, Some(block(2)), NOW).best, Some(tip));
}

#[test]
fn heads_rank_by_work_then_newer_block_then_first_seen() {
    let net = legacy_net(false);
    let mut tracker = Tracker::new();
    let base = mine_on(&mut tracker, &net, None, 8, block(1), 1);
    let top = base[7].hash;
    let a = mine_on(&mut tracker, &net, Some(top), 1, block(1), 2).remove(0);
    let b = mine_on(&mut tracker, &net, Some(top), 1, block(2), 3).remove(0);
    let hs = heights(&[(1, 100), (2, 101)], 101);
    let mut chain = ShareChain::new(net.clone());
    feed(&mut chain, &base, None, NOW);
    chain.add(a.clone(), None, NOW);
    chain.add(b.clone(), None, NOW);
    assert_eq!(
        chain.think(&hs, None, NOW).best,
        Some(b.hash),
        "newer Bitcoin block wins"
    );
    // Same block: the one seen first wins.
    let c = mine_on(&mut tracker, &net, Some(top), 1, block(1), 4).remove(0);
    let mut chain = ShareChain::new(net.clone());
    feed(&mut chain, &base, None, NOW);
    chain.add(c.clone(), None, NOW + 5);
    chain.add(a.clone(), None, NOW);
    assert_eq!(chain.think(&hs, None, NOW + 5).best, Some(a.hash));
    // More work below the top five beats a newer block: a longer branch wins.
    let long = mine_on(&mut tracker, &net, Some(a.hash), 6, block(1), 5);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &base, None, NOW);
    chain.add(a.clone(), None, NOW);
    chain.add(b.clone(), None, NOW);
    feed(&mut chain, &long, None, NOW);
    assert_eq!(chain.think(&hs, None, NOW).best, Some(long[5].hash));
}

#[test]
fn score_prefers_the_tree_built_on_recent_blocks() {
    let net = legacy_net(false);
    let old = mine_on(&mut Tracker::new(), &net, None, 10, block(1), 1);
    let recent = mine_on(&mut Tracker::new(), &net, None, 10, block(2), 2);
    let hs = heights(&[(1, 100), (2, 200)], 200);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &old, None, NOW);
    feed(&mut chain, &recent, None, NOW);
    assert_eq!(chain.think(&hs, None, NOW).best, Some(recent[9].hash));
}

#[test]
fn pruning_keeps_about_twice_the_chain_length() {
    let net = legacy_net(false);
    let keep = 2 * net.chain_length as usize + 10;
    let shares = genesis_chain(&net, keep + 11);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &shares, None, NOW);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(chain.tracker().len(), keep - 1);
    assert_eq!(think.pruned, 12);
    assert_eq!(think.best, Some(shares[keep + 10].hash));
    let batch = chain.take_batch();
    assert!(batch.remove_shares.contains(&shares[0].hash));
    assert!(!batch.remove_shares.contains(&shares[12].hash));
}

#[test]
fn old_losing_heads_are_trimmed_and_recent_or_top_ones_kept() {
    let net = legacy_net(false);
    let mut tracker = Tracker::new();
    let base = mine_on(&mut tracker, &net, None, 12, block(1), 1);
    let mut chain = ShareChain::new(net.clone());
    feed(&mut chain, &base, None, 0);
    // Eight one-share forks off share 3: the top five by rank stay, three go, unless
    // they are recent.
    let forks: Vec<Share> = (0..8)
        .map(|k| mine_on(&mut tracker, &net, Some(base[3].hash), 1, block(1), 10 + k).remove(0))
        .collect();
    for (k, f) in forks.iter().enumerate() {
        chain.add(f.clone(), None, if k == 0 { NOW } else { 0 });
    }
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(think.best, Some(base[11].hash));
    let left = forks
        .iter()
        .filter(|f| chain.tracker().contains(&f.hash))
        .count();
    assert_eq!(think.pruned, 8 - left);
    assert!(
        chain.tracker().contains(&forks[0].hash),
        "a recent head stays"
    );
    assert_eq!(
        left, 5,
        "the best head, four more of the top five, and the recent one"
    );
}

fn witness_tx(seed: u8, witness: u8) -> Transaction {
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: sha256d(&[seed, 1]),
                vout: 0,
            },
            script_sig: vec![],
            sequence: 0xffff_ffff,
            witness: vec![vec![witness]],
        }],
        outputs: vec![TxOut {
            value: 1000,
            script_pubkey: payout(seed),
        }],
        lock_time: 0,
    }
}

#[test]
fn block_share_gives_a_whole_block_and_a_mutated_copy_waits_for_a_whole_one() {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let base = mine_on(&mut tracker, &net, None, 4, block(1), 1);
    let mut spec = Spec::new(Some(base[3].hash), T0 + 50, payout(2));
    spec.block_bits = Bits(0x2000ffff);
    spec.other_txs = Some(vec![witness_tx(5, 0x51)]);
    let whole = sample::mine(&tracker, &net, &spec);
    assert!(whole.is_block());
    let mut mutated = whole.clone();
    if let Some(txs) = mutated.other_txs.as_mut() {
        txs[0].inputs[0].witness = vec![vec![0x52]];
    }

    // The whole copy: verified and its block handed out, with the coinbase witness.
    let mut chain = ShareChain::new(net.clone());
    feed(&mut chain, &base, None, NOW);
    chain.add(whole.clone(), Some(2), NOW);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(think.blocks.len(), 1);
    let (share, b) = &think.blocks[0];
    assert_eq!(*share, whole.hash);
    assert_eq!(b.header.hash(), whole.pow_hash);
    assert_eq!(b.txs.len(), 2);
    assert_eq!(b.txs[0].inputs[0].witness, vec![vec![0u8; 32]]);

    // The mutated copy first: the share counts, the block is held back; the whole copy
    // replaces it and its block comes out then.
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &base, None, NOW);
    assert_eq!(chain.add(mutated, Some(2), NOW), Added::New);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert!(chain.tracker().is_verified(&whole.hash));
    assert!(think.blocks.is_empty());
    chain.take_batch();
    match chain.add(whole.clone(), Some(3), NOW) {
        Added::Replaced(block) => assert_eq!(block.header.hash(), whole.pow_hash),
        other => panic!("expected the whole copy to replace the mutated one, got {other:?}"),
    }
    assert_eq!(chain.add(whole, Some(3), NOW), Added::Known);
    assert_eq!(chain.take_batch().put_shares.len(), 1);
}

#[test]
fn restart_loads_the_chain_with_its_verified_flags_or_reverifies_when_distrusted() {
    let net = legacy_net(false);
    let shares = genesis_chain(&net, 20);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &net.name).unwrap();
        let mut chain = ShareChain::new(net.clone());
        feed(&mut chain, &shares[..10], Some(1), NOW);
        let batch = chain.take_batch();
        assert!(
            batch.put_shares.is_empty(),
            "unverified shares are not written"
        );
        chain.think(&heights(&[], 0), None, NOW);
        store.apply(&chain.take_batch()).unwrap();
        // Ten more, verified: the store holds all twenty.
        feed(&mut chain, &shares[10..], Some(1), NOW);
        chain.think(&heights(&[], 0), None, NOW);
        store.apply(&chain.take_batch()).unwrap();
    }
    let store = Store::open(dir.path(), &net.name).unwrap();
    let chain = ShareChain::load(net.clone(), &store, false).unwrap();
    assert_eq!(chain.tracker().len(), 20);
    assert_eq!(chain.tracker().verified_count(), 20);
    let mut chain = ShareChain::load(net, &store, true).unwrap();
    assert_eq!(chain.tracker().verified_count(), 0);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(think.verified, 12);
    assert_eq!(think.best, Some(shares[19].hash));
}

const CHILD_ENV: &str = "P2POOL_SHARECHAIN_CRASH_CHILD";
const CRASH_SHARES: usize = 30; // below 2×CHAIN_LENGTH+10, so nothing is pruned

/// The child: adds a real chain one share per tick, committing each tick's batch, until
/// it is killed.
#[test]
fn crash_child_writes_one_share_per_tick() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let net = legacy_net(false);
    let shares = genesis_chain(&net, CRASH_SHARES);
    let mut store = Store::open(Path::new(&dir), &net.name).unwrap();
    let mut chain = ShareChain::new(net);
    println!("ready");
    loop {
        for s in &shares {
            chain.add(s.clone(), Some(1), NOW);
            chain.think(&heights(&[], 0), None, NOW);
            store.apply(&chain.take_batch()).unwrap();
        }
        // Start over so the kill always lands mid-write: remove and re-add.
        for s in shares.iter().rev() {
            let mut batch = p2pool::store::Batch::default();
            batch.remove_shares.push(s.hash);
            store.apply(&batch).unwrap();
        }
        chain = ShareChain::new(legacy_net(false));
    }
}

#[test]
fn killed_writer_leaves_a_store_whose_chain_loads_and_verifies() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let net = legacy_net(false);
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writes_one_share_per_tick",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(dir.path(), &net.name).unwrap();
        let mut chain = ShareChain::load(net.clone(), &store, true).unwrap();
        let n = chain.tracker().len();
        let think = chain.think(&heights(&[], 0), None, NOW);
        // Whatever prefix of the chain the kill left, all of it verifies from genesis.
        assert_eq!(
            think.verified,
            n.min(12),
            "round {round}: {n} shares loaded"
        );
        assert!(think.bad.is_empty() && think.wanted.is_empty());
    }
}

fn cheap_share(net: &Network, parent: Option<Hash256>, salt: u32) -> Share {
    sample::cheap_share(net, parent, salt)
}

fn small_limits(chain: &ShareChain) -> Limits {
    Limits {
        per_peer_shares: 50,
        per_peer_bytes: 1 << 20,
        total_shares: 80,
        total_bytes: 2 << 20,
        ..chain.limits()
    }
}

#[test]
fn unconnected_shares_are_never_stored_and_are_bounded_per_peer_and_in_total() {
    let net = modern_net();
    let mut chain = ShareChain::new(net.clone());
    chain.set_limits(small_limits(&chain));
    let mut refused = 0;
    for i in 0..60u32 {
        let parent = sha256d(&[b'x', i as u8]);
        match chain.add(cheap_share(&net, Some(parent), i), Some(1), NOW) {
            Added::New => {}
            Added::OverBudget { held, sender } => {
                assert_eq!(held.shares, 50);
                assert!(sender, "peer 1 is over its own budget");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 10, "peer 1 is held to its 50");
    assert_eq!(chain.unconnected_from(1).shares, 50);
    // Another peer fills the rest of the total, then everyone is refused.
    let mut taken = 0;
    for i in 100..160u32 {
        let parent = sha256d(&[b'y', i as u8]);
        if chain.add(cheap_share(&net, Some(parent), i), Some(2), NOW) == Added::New {
            taken += 1;
        }
    }
    assert_eq!(taken, 30, "the total of 80 leaves peer 2 thirty");
    // Past the total, a third peer is refused without being to blame.
    let s = cheap_share(&net, Some(sha256d(b"third")), 9_999);
    assert!(matches!(
        chain.add(s, Some(3), NOW),
        Added::OverBudget { sender: false, .. }
    ));
    assert_eq!(chain.unconnected().shares, 80);
    assert!(
        chain.take_batch().put_shares.is_empty(),
        "nothing unconnected is written to the store"
    );
    // Nothing unconnected verifies, and think asks for a bounded number of parents.
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert_eq!(think.verified, 0);
    assert!(think.wanted.len() <= 64, "{} wanted", think.wanted.len());
}

#[test]
fn an_unconnected_chain_connects_when_its_gap_fills_and_is_stored_once_verified() {
    let net = legacy_net(false);
    let shares = genesis_chain(&net, 12);
    let mut chain = ShareChain::new(net);
    // Newest first, as a getshares reply: every share but the oldest waits on a gap.
    for s in shares[1..].iter().rev() {
        assert_eq!(chain.add(s.clone(), Some(4), NOW), Added::New);
    }
    assert_eq!(chain.unconnected_from(4).shares, 11);
    assert!(chain.take_batch().put_shares.is_empty());
    // The genesis share fills the gap: all of them are connected now.
    chain.add(shares[0].clone(), Some(4), NOW);
    assert_eq!(chain.unconnected().shares, 0);
    assert!(chain.take_batch().put_shares.is_empty(), "not verified yet");
    let think = chain.think(&heights(&[], 0), None, NOW);
    let written = chain.take_batch().put_shares;
    assert_eq!(written.len(), think.verified);
    assert!(written.iter().all(|s| s.verified));
}

#[test]
fn a_gap_below_a_verified_chain_filled_by_older_shares_connects_them() {
    let net = legacy_net(false);
    let cl = net.chain_length as usize;
    let shares = genesis_chain(&net, 3 * cl);
    let mut chain = ShareChain::new(net);
    for s in shares[cl..].iter().rev() {
        chain.add(s.clone(), Some(7), NOW);
    }
    chain.think(&heights(&[(1, 100)], 100), Some(block(1)), NOW);
    assert!(chain.tracker().is_verified(&shares[3 * cl - 1].hash));
    assert_eq!(
        chain.unconnected().shares,
        0,
        "a verified share anchors its chain"
    );
    // Older shares reaching further back belong to the anchored chain, not to a gap.
    for s in shares[cl / 2..cl].iter().rev() {
        chain.add(s.clone(), Some(7), NOW);
    }
    assert_eq!(chain.unconnected().shares, 0);
}

#[test]
fn unconnected_shares_left_past_the_deadline_are_dropped_and_their_sender_named() {
    let net = modern_net();
    let mut chain = ShareChain::new(net.clone());
    let deadline = chain.limits().deadline;
    // A chain of 10 linked cheap shares over one missing parent (too short to try to
    // verify), and 5 lone ones.
    let mut parent = Some(sha256d(b"never sent"));
    for i in 0..10u32 {
        let s = cheap_share(&net, parent, i);
        parent = Some(s.hash);
        chain.add(s, Some(3), NOW);
    }
    for i in 30..35u32 {
        chain.add(
            cheap_share(&net, Some(sha256d(&[i as u8])), i),
            Some(5),
            NOW,
        );
    }
    let think = chain.think(&heights(&[], 0), None, NOW + deadline - 1);
    assert!(think.expired.is_empty());
    assert_eq!(chain.tracker().len(), 15);
    // Checked once in a quarter of the deadline: gone within 1.25 × the deadline.
    let think = chain.think(&heights(&[], 0), None, NOW + deadline + deadline / 4);
    assert_eq!(think.expired, vec![(3, 10), (5, 5)]);
    assert_eq!(chain.tracker().len(), 0);
    assert_eq!(chain.unconnected().shares, 0);
}

#[test]
fn a_failing_share_is_removed_with_every_descendant_at_once() {
    let net = legacy_net(false);
    let mut tracker = Tracker::new();
    let shares = mine_on(&mut tracker, &net, None, 8, block(1), 1);
    let mut spec = Spec::new(Some(shares[7].hash), T0 + 90, payout(2));
    spec.claimed_target = Some(Bits(0x1f7fffff));
    let bad = sample::mine(&tracker, &net, &spec);
    tracker.add(bad.clone(), 0, None);
    // Ten shares on top of the bad one (they would each verify on their own).
    let above = mine_on(&mut tracker, &net, Some(bad.hash), 10, block(1), 3);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &shares, None, NOW);
    chain.think(&heights(&[], 0), None, NOW);
    chain.add(bad.clone(), Some(9), NOW);
    // The descendants arrive before the bad share is looked at; the head is tried first.
    let mut junk_above = above.clone();
    junk_above.reverse();
    feed(&mut chain, &junk_above, Some(9), NOW);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert!(chain.tracker().contains(&above[9].hash) || think.bad.len() == 1);
    // Whatever was tried first, within two thinks the bad share and all ten are gone,
    // reported once, and the best share is the honest tip.
    let think2 = chain.think(&heights(&[], 0), None, NOW);
    let bad_reports: Vec<_> = think.bad.iter().chain(think2.bad.iter()).collect();
    assert!(!chain.tracker().contains(&bad.hash));
    assert!(above.iter().all(|s| !chain.tracker().contains(&s.hash)));
    assert_eq!(think2.best, Some(shares[7].hash));
    assert!(bad_reports.len() <= 2, "{bad_reports:?}");
}

#[test]
fn thousands_of_orphans_naming_one_missing_parent_are_dropped_a_bounded_number_per_think() {
    let net = modern_net();
    let mut chain = ShareChain::new(net.clone());
    chain.set_limits(Limits {
        per_peer_shares: 10_000,
        total_shares: 10_000,
        ..chain.limits()
    });
    let missing = Some(sha256d(b"one missing parent"));
    for i in 0..4_000u32 {
        chain.add(cheap_share(&net, missing, i), Some(1), NOW);
    }
    assert_eq!(chain.tracker().len(), 4_000);
    // At most 500 go per think, so eight thinks drop them all.
    for _ in 0..8 {
        let think = chain.think(&heights(&[], 0), None, NOW + 1_000);
        assert_eq!(think.expired, vec![(1, 500)]);
    }
    assert_eq!(chain.tracker().len(), 0);
    assert!(
        chain.take_batch().remove_shares.is_empty(),
        "never written, so nothing to delete from the store"
    );
}

#[test]
fn a_copy_repeating_a_txid_is_mutated_never_bad_and_the_whole_copy_replaces_it() {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let base = mine_on(&mut tracker, &net, None, 4, block(1), 1);
    let mut spec = Spec::new(Some(base[3].hash), T0 + 50, payout(2));
    spec.block_bits = Bits(0x2000ffff);
    // Two transactions after the gentx: three leaves, so the CVE-2012-2459 copy that
    // repeats the last one hashes to the same merkle root.
    spec.other_txs = Some(vec![witness_tx(5, 0x51), witness_tx(6, 0x52)]);
    let whole = sample::mine(&tracker, &net, &spec);
    let mut mutated = whole.clone();
    if let Some(txs) = mutated.other_txs.as_mut() {
        let last = txs[1].clone();
        txs.push(last);
    }
    assert_eq!(
        mutated.hash, whole.hash,
        "the share hash does not commit to the list"
    );

    let mut chain = ShareChain::new(net);
    feed(&mut chain, &base, None, NOW);
    assert_eq!(chain.add(mutated, Some(2), NOW), Added::New);
    let think = chain.think(&heights(&[], 0), None, NOW);
    assert!(think.bad.is_empty(), "{:?}", think.bad);
    assert!(
        think.blocks.is_empty(),
        "the mutated block is never submitted"
    );
    assert!(chain.tracker().is_verified(&whole.hash));
    match chain.add(whole.clone(), Some(3), NOW) {
        Added::Replaced(block) => {
            assert_eq!(block.header.hash(), whole.pow_hash);
            assert_eq!(block.txs.len(), 3);
        }
        other => panic!("expected the whole copy to replace the mutated one, got {other:?}"),
    }
}

#[test]
fn a_share_from_the_future_is_removed_but_its_sender_is_not_blamed() {
    let net = legacy_net(false);
    let mut tracker = Tracker::new();
    let shares = mine_on(&mut tracker, &net, None, 4, block(1), 1);
    let spec = Spec::new(Some(shares[3].hash), T0 + 10_000, payout(2));
    let future = sample::mine(&tracker, &net, &spec);
    let mut chain = ShareChain::new(net);
    feed(&mut chain, &shares, None, NOW);
    chain.add(future.clone(), Some(6), NOW);
    // Our clock says T0 + 100: the share is 9,900 s ahead.
    let think = chain.think(&heights(&[], 0), None, u64::from(T0) + 100);
    assert_eq!(think.bad.len(), 1);
    assert!(think.bad[0].2.is_timing());
    assert!(!chain.tracker().contains(&future.hash));
}

#[test]
fn a_synced_chain_is_stored_whole_the_part_below_the_verified_window_as_unverified() {
    let net = legacy_net(false);
    let cl = net.chain_length as usize;
    let shares = genesis_chain(&net, 3 * cl);
    let mut chain = ShareChain::new(net.clone());
    // The newest 2×CL arrive, newest first, over a gap (a first sync from a mature net).
    for s in shares[cl..].iter().rev() {
        chain.add(s.clone(), Some(7), NOW);
    }
    assert!(chain.take_batch().put_shares.is_empty());
    let mut think = chain.think(&heights(&[(1, 100)], 100), Some(block(1)), NOW);
    for _ in 0..3 {
        think = chain.think(&heights(&[(1, 100)], 100), Some(block(1)), NOW);
    }
    assert!(think.bad.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &net.name).unwrap();
    store.apply(&chain.take_batch()).unwrap();
    let loaded = ShareChain::load(net, &store, false).unwrap();
    assert_eq!(
        loaded.tracker().len(),
        2 * cl,
        "every share of the synced chain"
    );
    assert_eq!(
        loaded.tracker().verified_count(),
        chain.tracker().verified_count()
    );
}

#[test]
fn a_gap_filled_out_of_order_below_a_verified_chain_connects_everything_and_nothing_expires() {
    let net = legacy_net(false);
    let cl = net.chain_length as usize;
    let shares = genesis_chain(&net, 3 * cl);
    let mut chain = ShareChain::new(net.clone());
    for s in shares[cl..].iter().rev() {
        chain.add(s.clone(), Some(7), NOW);
    }
    let hs = heights(&[(1, 100)], 100);
    chain.think(&hs, Some(block(1)), NOW);
    let tip = shares[3 * cl - 1].hash;
    assert!(chain.tracker().is_verified(&tip));
    // Two below the gap first (unconnected), a fork on it (what an attacker can keep from
    // old shares), then the share that fills the gap: all of it belongs to the chain now.
    let p2 = shares[cl - 2].clone();
    chain.add(p2.clone(), Some(8), NOW);
    chain.add(cheap_share(&net, Some(p2.hash), 77), Some(9), NOW);
    assert_eq!(chain.unconnected().shares, 2);
    chain.add(shares[cl - 1].clone(), Some(7), NOW);
    assert_eq!(
        chain.unconnected().shares,
        0,
        "the chain below the gap is connected"
    );
    // Long past any deadline, the verified chain is all there.
    let later = NOW + 10 * chain.limits().deadline;
    let think = chain.think(&hs, Some(block(1)), later);
    assert!(think.expired.is_empty(), "{:?}", think.expired);
    assert!(chain.tracker().contains(&tip) && chain.tracker().contains(&p2.hash));
    assert_eq!(think.best, Some(tip));
}
