//! What the web shows, as plain data: the node thread fills a [`PoolStatus`] once a second
//! and publishes it on a [`StatusBoard`]; the HTTP threads read the newest one.
//!
//! Every field is a plain value (`String`, integers, `f64`, `Vec`) so the node can fill it
//! without the web knowing the share chain's types. Hashes are 64 hex digits in display
//! order (as block explorers and bitcoind show them), addresses are the network's human
//! form, amounts are satoshis, times are Unix seconds, hash rates are hashes per second.
//!
//! The board also keeps the shares over time for the dashboard's charts ([`History`]),
//! fed from the `recent_shares` of each published status, and samples this node's miners
//! (local hash rate, dead rate) and each payout address ([`MinerHistory`]) at each publish,
//! which the node thread makes once a second: nothing else writes the board.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::miner::{MinerBucket, MinerHistory};

/// The pool state the node thread owns, as the web shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The P2Pool network's name (`bitcoin`, `testnet`, `regtest`, or a custom file's).
    pub network: String,
    /// When the node started (Unix seconds).
    pub started_at: u64,
    /// When the node filled this status (Unix seconds); 0 means "never published".
    pub updated_at: u64,
    /// The best share's hash (64 hex digits), empty while there is none.
    pub best_share: String,
    /// The best share's height in the share chain (0 without a best share).
    pub best_height: u64,
    /// Every share the node holds.
    pub shares_total: u64,
    /// Shares that passed the contextual checks.
    pub shares_verified: u64,
    /// Shares in the best share's chain (the payout window and beyond, as far as known).
    pub shares_in_chain: u64,
    /// Sync: the node's verified chain length behind the best share…
    pub sync_have: u64,
    /// …out of the length it wants before it calls itself synced (about 2 × CHAIN_LENGTH,
    /// or less on a young chain).
    pub sync_want: u64,
    /// True when the node serves miners: synced, peers (or `--start-new-chain`), bitcoind up.
    pub ready: bool,
    /// Why the node is not ready (empty when ready), with what to do, e.g. "p2pool has not
    /// reached bitcoind since it started (…): start bitcoind …".
    pub not_ready_reason: String,
    /// What keeps the node from being ready (empty when ready): `bitcoind`, `peers`,
    /// `shares` or `starting`.
    #[serde(default)]
    pub not_ready_cause: String,
    /// The pool's hash rate including stale shares (R's `/rate`): the chain's rate over
    /// one minus `pool_stale_prop`.
    pub pool_hashrate: f64,
    /// The pool's hash rate counting only the work in the best chain.
    pub pool_nonstale_hashrate: f64,
    /// The fraction of the pool's shares that were stale (0 to 1): over the retarget window,
    /// the shares this node knows that forked off the best chain (orphans; other nodes'
    /// dead-on-arrival shares are never seen).
    pub pool_stale_prop: f64,
    /// The current share difficulty (difficulty-1 units) of new shares.
    pub share_difficulty: f64,
    /// The lowest share difficulty the network allows (from the best share's max target).
    pub min_share_difficulty: f64,
    /// The Bitcoin block difficulty of the current work.
    pub block_difficulty: f64,
    /// The Bitcoin block height the current work builds.
    pub block_height: u64,
    /// The block reward of the current work: subsidy plus fees (satoshis).
    pub block_value: u64,
    /// This node's own shares (found by its miners) and how many went stale.
    pub local_shares: LocalShares,
    /// What each address would get if a block were found now (PPLNS), largest first.
    pub payouts: Vec<Payout>,
    /// bitcoind as the node last saw it.
    pub bitcoind: BitcoindState,
    /// The newest shares of the best chain, newest first (the node passes the last hundred
    /// or so; the board builds the chart from them).
    pub recent_shares: Vec<RecentShare>,
    /// Blocks found by the pool, newest first, with what bitcoind said (the newest 200).
    pub found_blocks: Vec<FoundBlock>,
    /// Blocks found by the pool since this node's store began, counted by what became of
    /// them (counters, never capped like the lists).
    pub blocks: BlockCounts,
    /// Blocks that paid out (accepted into the Bitcoin chain), newest first.
    pub paid_blocks: Vec<PaidBlock>,
    /// The worker fee in percent (`--fee`).
    pub fee_percent: f64,
    /// This node's payout address (where fees and its own shares pay).
    pub payout_address: String,
    /// Messages an operator should see (e.g. "bitcoind unreachable", "no peers").
    pub warnings: Vec<String>,
}

/// This node's own shares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalShares {
    /// Shares found by this node's miners (in the last hour or since start).
    pub total: u64,
    /// Of those, shares that did not end up in the best chain.
    pub orphan: u64,
    /// Of those, shares made on work that was already stale when found (dead on arrival).
    pub dead: u64,
}

/// One output of the coinbase if a block were found now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Payout {
    /// The payout address (or the script in hex when it has no address form).
    pub address: String,
    /// Satoshis.
    pub amount: u64,
}

/// bitcoind's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BitcoindState {
    /// The last call succeeded.
    pub reachable: bool,
    /// Its chain tip's height.
    pub height: u64,
    /// The last error, empty when none.
    pub last_error: String,
}

/// One share of the best chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentShare {
    /// The share's timestamp (Unix seconds).
    pub time: u64,
    /// The share's hash (64 hex digits).
    pub hash: String,
    /// Where it pays.
    pub address: String,
    /// The work it stands for: expected hashes at its target (attempts).
    pub work: f64,
    /// Found by this node's miners.
    pub local: bool,
    /// It is also a Bitcoin block.
    pub block: bool,
    /// The stale fraction its finder reported, when it did (0 to 1).
    pub stale_prop: Option<f64>,
}

/// Blocks the pool found since this node's store began, by what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCounts {
    /// Every block found (by any node's miner; the sum of the four below, plus blocks
    /// recorded before the counts were kept).
    pub found: u64,
    /// bitcoind has it (`accepted`, or `duplicate`: it had it already).
    pub accepted: u64,
    /// Orphaned or stale: not on bitcoind's best chain (inconclusive, given up, a sibling
    /// accepted first, abandoned at shutdown).
    pub stale: u64,
    /// bitcoind refused it.
    pub rejected: u64,
    /// Not answered yet.
    pub pending: u64,
    /// Accepted blocks whose coinbase pays this node's payout address.
    pub paid_node: u64,
}

/// A block the pool found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FoundBlock {
    /// When the share was found (Unix seconds).
    pub time: u64,
    /// Bitcoin block height.
    pub height: u64,
    /// Block hash (64 hex digits).
    pub hash: String,
    /// The share that is this block (64 hex digits).
    pub share: String,
    /// The finder's payout address: the payout address of the share that is the block,
    /// whichever node's miner found it (empty only for blocks recorded by versions that
    /// did not keep it).
    pub finder: String,
    /// Found by this node's own miners.
    #[serde(default)]
    pub local: bool,
    /// What submission gave: `accepted`, `duplicate`, `inconclusive`, `rejected: <reason>`,
    /// `stale`, `pending`, …
    pub status: String,
    /// Subsidy plus fees (satoshis).
    pub value: u64,
}

/// A block that paid the pool's miners.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaidBlock {
    /// When it was found (Unix seconds).
    pub time: u64,
    /// Bitcoin block height.
    pub height: u64,
    /// Block hash (64 hex digits).
    pub hash: String,
    /// The total paid (satoshis).
    pub total: u64,
    /// The outputs it paid, largest first.
    pub payouts: Vec<Payout>,
}

/// One P2Pool connection, as the dashboard shows it (from `p2p::PeerStatus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// `ip:port`.
    pub addr: String,
    /// It connected to us.
    pub inbound: bool,
    /// Its protocol version, `None` until the handshake completes.
    pub version: Option<u32>,
    /// Its software (`sub_version`), `None` until the handshake completes.
    pub sub_version: Option<String>,
    /// The link's mode: 1 normal, 0 low bandwidth; `None` until the handshake completes.
    pub mode: Option<u32>,
    /// When the connection was made (Unix seconds).
    pub connected_since: u64,
}

/// One miner of this node: an address and worker name, on getwork or Stratum (from
/// `worker::MinerStats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerView {
    /// The payout address it mines to.
    pub address: String,
    /// The worker name after the address (may be empty).
    pub worker: String,
    /// `stratum` or `getwork`.
    pub protocol: String,
    /// Hashes per second over the last ten minutes, from its pseudo-shares.
    pub hashrate: f64,
    /// The pseudo-share difficulty it mines at.
    pub difficulty: f64,
    /// Pseudo-shares accepted.
    pub accepted: u64,
    /// Submissions on work that was no longer current.
    pub stale: u64,
    /// Submissions refused (unknown job, duplicate, low difficulty, bad fields).
    pub rejected: u64,
    /// Shares of the share chain it found.
    pub shares: u64,
    /// Its last submission or work request (Unix seconds).
    pub last_seen: u64,
}

impl MinerView {
    /// The fraction of its submissions that were stale or refused, if any were made.
    pub fn dead_prop(&self) -> Option<f64> {
        let all = self.accepted + self.stale + self.rejected;
        (all > 0).then(|| (self.stale + self.rejected) as f64 / all as f64)
    }

    /// The part of its hash rate lost to stale and refused submissions (R's "dead hash
    /// rate"), estimated from the proportion of such submissions.
    pub fn dead_hashrate(&self) -> f64 {
        self.hashrate * self.dead_prop().unwrap_or(0.0)
    }

    /// The name miners log in with: `address` or `address.worker`.
    pub fn name(&self) -> String {
        if self.worker.is_empty() {
            self.address.clone()
        } else {
            format!("{}.{}", self.address, self.worker)
        }
    }
}

/// Where the web reads connected peers from (the lead wires the p2p handle here).
pub type PeerSource = Arc<dyn Fn() -> Vec<PeerView> + Send + Sync>;
/// Where the web reads connected miners from (the lead wires the worker handle here).
pub type MinerSource = Arc<dyn Fn() -> Vec<MinerView> + Send + Sync>;

pub use crate::unix_now;

/// Shares per minute over the last day, for the chart.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket (Unix seconds, a multiple of the bucket's length).
    pub start: u64,
    /// Shares of the best chain with timestamps in the bucket.
    pub shares: u64,
    /// Of those, this node's.
    pub local: u64,
    /// Of those, blocks.
    pub blocks: u64,
    /// The work of those shares (attempts).
    pub work: f64,
    /// The work of this node's shares (attempts).
    pub local_work: f64,
    /// The pool hash rate the node estimated, last value seen in the bucket (0 if none).
    pub pool_hashrate: f64,
    /// This node's miners' hash rate, the mean of the minutes sampled in the bucket (null
    /// when none was).
    pub local_hashrate: Option<f64>,
    /// The part of it lost to stale and refused submissions (null as `local_hashrate`).
    pub local_dead_hashrate: Option<f64>,
    /// This node's stale shares (orphan + dead) over its shares since start, the last value
    /// seen in the bucket (null before its first share).
    pub local_stale_prop: Option<f64>,
    /// Minutes sampled (for the means; not sent).
    #[serde(skip)]
    sampled: u32,
}

/// How long the chart's history reaches back.
pub const HISTORY_SECS: u64 = 24 * 60 * 60;
/// The history's resolution.
pub const HISTORY_STEP: u64 = 60;
/// Hashes remembered to count each share once.
const SEEN_CAP: usize = 4096;

/// The span of a chart: `(first, end, step)`, `step` whole minutes, the range at least a
/// step and at most [`HISTORY_SECS`], `end` the end of the step holding `now`.
pub fn chart_span(now: u64, range: u64, step: u64) -> (u64, u64, u64) {
    let step = step.max(HISTORY_STEP) / HISTORY_STEP * HISTORY_STEP;
    let range = range.clamp(step, HISTORY_SECS);
    let end = now - now % step + step;
    let first = end.saturating_sub(range.div_ceil(step) * step);
    (first, end, step)
}

/// Per-minute buckets of the shares seen on published statuses and of this node's miners,
/// and each payout address's minutes.
#[derive(Debug, Default)]
pub struct History {
    buckets: VecDeque<Bucket>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    miners: MinerHistory,
}

impl History {
    /// Counts the shares not seen before and notes the pool hash rate at `now`.
    pub fn ingest(&mut self, status: &PoolStatus, now: u64) {
        for share in &status.recent_shares {
            // A share's timestamp is the miner's claim: ignore the far future and the past day;
            // the near future (a burst of shares runs ahead of the clock, each at least the
            // median of the last 11 plus one) counts now.
            if share.time > now + 600 || share.time + HISTORY_SECS < now {
                continue;
            }
            if !self.remember(&share.hash) {
                continue;
            }
            self.miners
                .share(&share.address, share.time.min(now), share.work);
            let bucket = self.bucket_mut(share.time.min(now));
            bucket.shares += 1;
            bucket.work += share.work;
            if share.local {
                bucket.local += 1;
                bucket.local_work += share.work;
            }
            if share.block {
                bucket.blocks += 1;
            }
        }
        if status.pool_hashrate > 0.0 {
            self.bucket_mut(now).pool_hashrate = status.pool_hashrate;
        }
        let local = &status.local_shares;
        if local.total > 0 {
            self.bucket_mut(now).local_stale_prop =
                Some((local.orphan + local.dead) as f64 / local.total as f64);
        }
        while let Some(front) = self.buckets.front() {
            if front.start + HISTORY_SECS + HISTORY_STEP <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
        self.miners.prune(now);
    }

    /// Samples this node's miners at `now`: their hash rate and dead hash rate in all, and
    /// per payout address.
    pub fn sample_miners(&mut self, miners: &[MinerView], now: u64) {
        let rate = miners.iter().map(|m| m.hashrate).sum::<f64>() + 0.0;
        let dead = miners.iter().map(MinerView::dead_hashrate).sum::<f64>() + 0.0;
        let bucket = self.bucket_mut(now);
        bucket.local_hashrate = Some(rate);
        bucket.local_dead_hashrate = Some(dead);
        bucket.sampled = 1;
        self.miners.miners(miners, now);
    }

    /// The kept minutes of `address` (see [`MinerHistory::chart`]).
    pub fn miner_chart(&self, address: &str, now: u64, range: u64, step: u64) -> Vec<MinerBucket> {
        self.miners.chart(address, now, range, step)
    }

    /// Something is kept for `address`.
    pub fn knows_miner(&self, address: &str) -> bool {
        self.miners.knows(address)
    }

    fn remember(&mut self, hash: &str) -> bool {
        if self.seen.contains(hash) {
            return false;
        }
        self.seen.insert(hash.to_owned());
        self.seen_order.push_back(hash.to_owned());
        if self.seen_order.len() > SEEN_CAP {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// The bucket holding `time`, created (in order) when missing.
    fn bucket_mut(&mut self, time: u64) -> &mut Bucket {
        let start = time - time % HISTORY_STEP;
        let index = match self.buckets.binary_search_by_key(&start, |b| b.start) {
            Ok(i) => i,
            Err(i) => {
                let bucket = Bucket {
                    start,
                    ..Bucket::default()
                };
                self.buckets.insert(i, bucket);
                i
            }
        };
        &mut self.buckets[index]
    }

    /// The last `range` seconds before `now` in buckets of `step` seconds (a multiple of a
    /// minute), oldest first, empty buckets included so the chart's time axis is even.
    pub fn chart(&self, now: u64, range: u64, step: u64) -> Vec<Bucket> {
        let (first, end, step) = chart_span(now, range, step);
        let mut out: Vec<Bucket> = (first..end)
            .step_by(step as usize)
            .map(|start| Bucket {
                start,
                ..Bucket::default()
            })
            .collect();
        for bucket in &self.buckets {
            if bucket.start < first || bucket.start >= end {
                continue;
            }
            let slot = &mut out[((bucket.start - first) / step) as usize];
            slot.shares += bucket.shares;
            slot.local += bucket.local;
            slot.blocks += bucket.blocks;
            slot.work += bucket.work;
            slot.local_work += bucket.local_work;
            if bucket.pool_hashrate > 0.0 {
                slot.pool_hashrate = bucket.pool_hashrate;
            }
            if bucket.local_stale_prop.is_some() {
                slot.local_stale_prop = bucket.local_stale_prop;
            }
            if bucket.sampled > 0 {
                // Sums here, means below.
                *slot.local_hashrate.get_or_insert(0.0) += bucket.local_hashrate.unwrap_or(0.0);
                *slot.local_dead_hashrate.get_or_insert(0.0) +=
                    bucket.local_dead_hashrate.unwrap_or(0.0);
                slot.sampled += 1;
            }
        }
        for slot in &mut out {
            if slot.sampled > 0 {
                let n = f64::from(slot.sampled);
                slot.local_hashrate = slot.local_hashrate.map(|r| r / n);
                slot.local_dead_hashrate = slot.local_dead_hashrate.map(|r| r / n);
            }
        }
        out
    }
}

/// The newest [`PoolStatus`], shared between the node (writer) and the HTTP threads
/// (readers). Cloning gives another handle on the same board.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Default)]
struct Board {
    status: Arc<PoolStatus>,
    history: History,
}

impl StatusBoard {
    /// An empty board: not ready, "starting", until the node publishes.
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        // A reader that panicked cannot leave the board half-written: the status is
        // replaced whole. Keep serving after a poisoned lock.
        crate::thread::lock(&self.inner)
    }

    /// Replaces the status and adds its new shares to the charts' history.
    pub fn publish(&self, status: PoolStatus) {
        let now = unix_now();
        let mut board = self.lock();
        board.history.ingest(&status, now);
        board.status = Arc::new(status);
    }

    /// As [`StatusBoard::publish`], and samples this node's `miners` for the history (the
    /// node thread calls this once a second).
    pub fn publish_with_miners(&self, status: PoolStatus, miners: &[MinerView]) {
        let now = unix_now();
        let mut board = self.lock();
        board.history.ingest(&status, now);
        board.history.sample_miners(miners, now);
        board.status = Arc::new(status);
    }

    /// The newest status (cheap: a shared pointer).
    pub fn snapshot(&self) -> Arc<PoolStatus> {
        self.lock().status.clone()
    }

    /// The chart's buckets: the last `range` seconds in steps of `step` seconds.
    pub fn chart(&self, range: u64, step: u64) -> Vec<Bucket> {
        self.lock().history.chart(unix_now(), range, step)
    }

    /// One payout address's history: the last `range` seconds in steps of `step` seconds.
    pub fn miner_chart(&self, address: &str, range: u64, step: u64) -> Vec<MinerBucket> {
        self.lock()
            .history
            .miner_chart(address, unix_now(), range, step)
    }

    /// The board keeps a history of `address`.
    pub fn knows_miner(&self, address: &str) -> bool {
        self.lock().history.knows_miner(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(hash: &str, time: u64, local: bool) -> RecentShare {
        RecentShare {
            time,
            hash: hash.into(),
            work: 100.0,
            local,
            ..RecentShare::default()
        }
    }

    #[test]
    fn history_counts_each_share_once_per_minute() {
        let now = 1_000_000 * 60 + 30;
        let mut history = History::default();
        let mut status = PoolStatus {
            recent_shares: vec![share("a", now - 5, true), share("b", now - 70, false)],
            pool_hashrate: 5.0,
            ..PoolStatus::default()
        };
        history.ingest(&status, now);
        status.recent_shares.insert(0, share("c", now - 1, false));
        history.ingest(&status, now);
        let chart = history.chart(now, 180, 60);
        assert_eq!(chart.len(), 3);
        let counts: Vec<u64> = chart.iter().map(|b| b.shares).collect();
        assert_eq!(counts, vec![0, 1, 2]);
        assert_eq!(chart[2].local, 1);
        assert_eq!(chart[2].work, 200.0);
        assert_eq!(chart[2].pool_hashrate, 5.0);
    }

    #[test]
    fn history_counts_the_near_future_now_ignores_the_far_future_and_forgets_the_past_day() {
        let now = 2_000_000 * 60;
        let mut history = History::default();
        let status = PoolStatus {
            recent_shares: vec![
                share("future", now + 3600, false),
                share("old", now - HISTORY_SECS - 10, false),
                share("ok", now - 10, false),
                share("ahead", now + 90, false),
            ],
            ..PoolStatus::default()
        };
        history.ingest(&status, now);
        // "ok" in the minute before now, "ahead" in now's minute.
        assert_eq!(history.buckets.len(), 2);
        let chart = history.chart(now, 3600, 60);
        assert_eq!(chart.iter().map(|b| b.shares).sum::<u64>(), 2);
        history.ingest(&PoolStatus::default(), now + HISTORY_SECS + 120);
        assert!(history.buckets.is_empty());
    }

    #[test]
    fn local_hash_rate_and_stale_rates_are_sampled_per_minute_and_averaged_per_step() {
        let now = 4_000_000 * 60 + 4 * 60 + 30;
        let mut history = History::default();
        let miner = |hashrate: f64, rejected: u64| MinerView {
            address: "a".into(),
            hashrate,
            accepted: 100 - rejected,
            rejected,
            ..MinerView::default()
        };
        history.sample_miners(&[miner(100.0, 10)], now - 120);
        history.sample_miners(&[miner(300.0, 0), miner(100.0, 50)], now - 60);
        let status = PoolStatus {
            local_shares: LocalShares {
                total: 20,
                orphan: 1,
                dead: 1,
            },
            ..PoolStatus::default()
        };
        history.ingest(&status, now - 60);
        let chart = history.chart(now, 300, 300);
        assert_eq!(chart.len(), 1);
        // Two minutes sampled: 100 H/s (10 dead), then 400 H/s (50 dead).
        assert_eq!(chart[0].local_hashrate, Some(250.0));
        assert_eq!(chart[0].local_dead_hashrate, Some(30.0));
        assert_eq!(chart[0].local_stale_prop, Some(0.1));
        let minutes = history.chart(now, 300, 60);
        assert_eq!(
            minutes[4].local_hashrate, None,
            "not sampled in this minute"
        );
        assert_eq!(
            history.miner_chart("a", now, 300, 300)[0].hashrate,
            Some(250.0),
            "the address's minutes too"
        );
    }

    #[test]
    fn chart_aggregates_into_wider_steps_and_clamps_its_range() {
        let now = 3_000_000 * 60 + 30;
        let mut history = History::default();
        let shares = (0..10)
            .map(|i| share(&format!("s{i}"), now - i * 60, false))
            .collect();
        history.ingest(
            &PoolStatus {
                recent_shares: shares,
                ..PoolStatus::default()
            },
            now,
        );
        let chart = history.chart(now, 900, 300);
        assert_eq!(chart.len(), 3);
        assert_eq!(chart.iter().map(|b| b.shares).sum::<u64>(), 10);
        assert!(history.chart(now, u64::MAX, 1).len() as u64 <= HISTORY_SECS / 60 + 1);
    }
}
