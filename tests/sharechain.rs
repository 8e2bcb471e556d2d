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
use p2pool::sharechain::chain::{Added, ShareChain};
use p2pool::sharechain::sample::{self, Spec, legacy_net, modern_net, payout};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::store::Store;
use p2pool::sharechain::tracker::Tracker;
use p2pool::sharechain::verify::VerifyError;

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
    // Easier than the computed target: the share meets it but claims too much.
    spec.claimed_target = Some(Bits(0x207fffff));
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
    let b = &think.blocks[0];
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
        store.apply(&chain.take_batch()).unwrap();
        chain.think(&heights(&[], 0), None, NOW);
        feed(&mut chain, &shares[10..], Some(1), NOW);
        store.apply(&chain.take_batch()).unwrap();
    }
    let store = Store::open(dir.path(), &net.name).unwrap();
    let chain = ShareChain::load(net.clone(), &store, false).unwrap();
    assert_eq!(chain.tracker().len(), 20);
    assert_eq!(chain.tracker().verified_count(), 10);
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
            let mut batch = p2pool::sharechain::store::Batch::default();
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
