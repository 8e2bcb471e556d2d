//! The share chain at mainnet size: a generated chain of 2×17280+10 shares with a few
//! hundred payout scripts, stored in LMDB, then loaded by a fresh process.
//!
//! `cargo bench --bench sharechain` prints: start-up from the store to a best share
//! (flags trusted), re-verifying the top CHAIN_LENGTH shares with flags distrusted, new
//! shares verified at the tip (with and without building the generation transaction) and
//! added with a think, and resident memory after start-up; then think with
//! 8,000 unconnected shares held (issue 13).
//!
//! For profiling: `P2POOL_BENCH_DIR=DIR` keeps the generated store in DIR and reuses it on
//! later runs (generating takes minutes); `P2POOL_BENCH_ONLY=tip` then measures only the
//! new shares at the tip (`P2POOL_BENCH_ROUNDS` of them, 200 by default), under `perf
//! record` or callgrind if wanted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ruint::aliases::U256;

use p2pool::bitcoin::hash::sha256d;
use p2pool::bitcoin::script;
use p2pool::bitcoin::target::Bits;
use p2pool::network::{Network, RuleSet, WeightCap};
use p2pool::sharechain::best::HeightMap;
use p2pool::sharechain::chain::ShareChain;
use p2pool::sharechain::sample::{self, Spec};
use p2pool::sharechain::verify;
use p2pool::store::Store;

const CHAIN_LENGTH: u32 = 17280;
const SHARES: usize = 2 * CHAIN_LENGTH as usize + 10;
const SCRIPTS: u32 = 300;
const T0: u32 = 1_700_000_000;
const MODE_ENV: &str = "P2POOL_BENCH_LOAD_DIR";
const DIR_ENV: &str = "P2POOL_BENCH_DIR";
const ONLY_ENV: &str = "P2POOL_BENCH_ONLY";
const ROUNDS_ENV: &str = "P2POOL_BENCH_ROUNDS";

fn net() -> Network {
    let mut net = Network::built_in("regtest").expect("regtest is built in");
    net.name = "bench".into();
    net.rules = RuleSet::Modern;
    net.share_period = 5;
    net.chain_length = CHAIN_LENGTH;
    net.target_lookbehind = 200;
    net.spread = 3;
    net.weight_cap = WeightCap::Block;
    // About 256 hashes a share, so the chain is quick to grind.
    net.max_target = U256::MAX >> 8;
    net
}

/// Block work of about 2^20 hashes: SPREAD × that covers some 12,000 shares, so the
/// payout window ends at the weight cap, not at CHAIN_LENGTH.
fn block_bits() -> Bits {
    Bits::from_target_floor(U256::MAX >> 20)
}

fn script_for(n: u32) -> Vec<u8> {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_le_bytes());
    script::p2pkh(&h)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spec(prev: Option<p2pool::bitcoin::hash::Hash256>, i: usize, rng: &mut Rng) -> Spec {
    let jitter = (rng.next() % 5) as u32;
    let mut spec = Spec::new(
        prev,
        T0 + 5 * i as u32 + jitter,
        script_for((rng.next() % u64::from(SCRIPTS)) as u32),
    );
    spec.block_bits = block_bits();
    spec
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn now() -> u64 {
    u64::from(T0) + 5 * SHARES as u64 + 60
}

fn generate(dir: &Path) {
    let t = Instant::now();
    let net = net();
    let mut chain = ShareChain::new(net.clone());
    let mut store = Store::open(dir, &net.name).expect("bench store opens");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut prev = None;
    let hs = HeightMap::default();
    for i in 0..SHARES {
        let share = sample::mine(chain.tracker(), &net, &spec(prev, i, &mut rng));
        prev = Some(share.hash);
        chain.add(share, None, now());
        if i % 1000 == 999 || i == SHARES - 1 {
            chain.think(&hs, None, now());
            store
                .apply(&chain.take_batch())
                .expect("bench batch commits");
        }
    }
    println!(
        "generated {} shares ({} verified) in {:.1} s",
        chain.tracker().len(),
        chain.tracker().verified_count(),
        t.elapsed().as_secs_f64()
    );
}

/// Runs in a fresh process: everything a node does from the store to a share to mine on.
fn load(dir: &Path) {
    let net = net();
    let hs = HeightMap::default();
    if std::env::var(ONLY_ENV).as_deref() == Ok("tip") {
        let store = Store::open(dir, &net.name).expect("bench store opens");
        let mut chain = ShareChain::load(net.clone(), &store, false).expect("bench chain loads");
        let best = chain.think(&hs, None, now()).best;
        tip(&mut chain, best);
        return;
    }
    let rss0 = rss_kib();

    let t = Instant::now();
    let store = Store::open(dir, &net.name).expect("bench store opens");
    let mut chain = ShareChain::load(net.clone(), &store, false).expect("bench chain loads");
    let think = chain.think(&hs, None, now());
    let startup = t.elapsed();
    let best = think.best.expect("a best share");
    let rss = rss_kib();
    println!(
        "start-up (open store, load {} shares, {} verified, pick best): {:.0} ms",
        chain.tracker().len(),
        chain.tracker().verified_count(),
        startup.as_secs_f64() * 1e3
    );
    println!(
        "resident memory after start-up: {:.1} MB (process start {:.1} MB)",
        rss as f64 / 1024.0,
        rss0 as f64 / 1024.0
    );
    drop(chain);

    let t = Instant::now();
    let mut chain = ShareChain::load(net.clone(), &store, true).expect("bench chain loads");
    let loaded = t.elapsed();
    let t = Instant::now();
    let think = chain.think(&hs, None, now());
    let reverify = t.elapsed();
    println!(
        "re-verify with flags distrusted: {} shares in {:.0} ms ({:.1} µs a share; loading took {:.0} ms more)",
        think.verified,
        reverify.as_secs_f64() * 1e3,
        reverify.as_secs_f64() * 1e6 / think.verified.max(1) as f64,
        loaded.as_secs_f64() * 1e3
    );
    assert_eq!(think.best, Some(best));

    tip(&mut chain, think.best);
}

/// New shares at the tip, one at a time: mine (untimed), then time verification and a
/// whole think. The first few after a load or a re-verify find no remembered window at
/// the tip, so the median is the figure; the mean and the slowest are printed too.
fn tip(chain: &mut ShareChain, best: Option<p2pool::bitcoin::hash::Hash256>) {
    let net = net();
    let hs = HeightMap::default();
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let mut rng = Rng(42);
    let mut prev = best;
    let (mut checks, mut with_tx, mut thinks) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let share = sample::mine(chain.tracker(), &net, &spec(prev, SHARES + i, &mut rng));
        prev = Some(share.hash);
        // The clock goes on with the shares (one every 5 s).
        let now = now() + 5 * i as u64;
        // What the node's think does for a share that is not a block...
        let t = Instant::now();
        verify::check_id(chain.tracker(), &net, &share, now as i64).expect("tip share verifies");
        checks.push(t.elapsed().as_secs_f64() * 1e6);
        // ...and with the generation transaction built (a block share, tests, work).
        let t = Instant::now();
        verify::check(chain.tracker(), &net, &share, now as i64).expect("tip share verifies");
        with_tx.push(t.elapsed().as_secs_f64() * 1e6);
        chain.add(share, None, now);
        let t = Instant::now();
        let think = chain.think(&hs, None, now);
        thinks.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(think.best, prev);
    }
    let summary = |mut v: Vec<f64>| {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.1} µs (min {:.1}, mean {:.1}, max {:.1})",
            v[v.len() / 2],
            v[0],
            mean,
            v[v.len() - 1]
        )
    };
    println!("new share at the tip, {rounds} rounds:");
    println!("  verify (verify::check_id): {}", summary(checks));
    println!(
        "  verify and build the gentx (verify::check): {}",
        summary(with_tx)
    );
    println!(
        "  add + think (verify, score, rank, prune): {}",
        summary(thinks)
    );
}

fn main() {
    if let Some(dir) = std::env::var_os(MODE_ENV) {
        load(Path::new(&dir));
        return;
    }
    if !common::measuring() {
        return;
    }
    // `P2POOL_BENCH_ONLY=unconnected cargo bench --bench sharechain` skips the big chain.
    if std::env::var(ONLY_ENV).as_deref() == Ok("unconnected") {
        unconnected();
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = match std::env::var_os(DIR_ENV) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => temp.path().to_path_buf(),
    };
    if !dir.join("data.mdb").exists() {
        std::fs::create_dir_all(&dir).expect("bench dir");
        generate(&dir);
    }
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new(exe)
        .env(MODE_ENV, &dir)
        .status()
        .expect("load process runs");
    assert!(status.success(), "load process failed");
    if std::env::var(ONLY_ENV).as_deref() != Ok("tip") {
        unconnected();
    }
}

/// Think with 8,000 unconnected shares held (issue 13: under 5 ms), in three shapes: all
/// on one missing parent, each on its own, and one chain over a hole; then the think that
/// drops them all at the deadline.
fn unconnected() {
    const N: u32 = 8_000;
    let net = net();
    let heights = HeightMap::default();
    let now = u64::from(T0) + 1_000;
    println!(
        "think with {N} unconnected shares held (median of 21 thinks, then the expiry think):"
    );
    for shape in [
        "one missing parent",
        "each its own parent",
        "one chain over a hole",
    ] {
        let mut chain = ShareChain::new(net.clone());
        let mut parent = sha256d(b"hole");
        for i in 0..N {
            let p = match shape {
                "one missing parent" => sha256d(b"hole"),
                "each its own parent" => sha256d(&i.to_le_bytes()),
                _ => parent,
            };
            let share = sample::cheap_share(&net, Some(p), i);
            parent = share.hash;
            chain.add(share, Some(1), now);
        }
        assert_eq!(chain.unconnected().shares, N as usize);
        let mut times: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                chain.think(&heights, None, now);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        // Past the deadline: the thinks that drop them (a bounded number per think).
        let mut expiry = Vec::new();
        let mut expired = 0;
        while chain.unconnected().shares > 0 {
            let t = Instant::now();
            let think = chain.think(&heights, None, now + chain.limits().deadline);
            expiry.push(t.elapsed().as_secs_f64() * 1e3);
            expired += think.expired.iter().map(|(_, n)| n).sum::<usize>();
            assert!(expiry.len() <= 16, "expiry does not finish");
        }
        assert_eq!(expired, N as usize);
        expiry.sort_by(f64::total_cmp);
        let worst = expiry.last().copied().unwrap_or(0.0);
        println!(
            "  {shape:<22} think {:.3} ms (min {:.3}, 90th {:.3}, max {:.3}); dropped in {} thinks: median {:.2} ms, longest {worst:.2} ms",
            times[10],
            times[0],
            times[18],
            times[20],
            expiry.len(),
            expiry[expiry.len() / 2],
        );
    }
}
