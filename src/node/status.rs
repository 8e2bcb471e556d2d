//! The pool state as the web shows it, filled on the node thread from what it owns.

use ruint::aliases::U512;

use crate::bitcoin::address;
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::hash::Hash256;
use crate::bitcoin::target::target_to_difficulty;
use crate::bitcoin::template::Template;
use crate::bitcoind::feed::FeedStatus;
use crate::bitcoind::rpc::Trouble;
use crate::sharechain::chain::ShareChain;
use crate::sharechain::gentx;
use crate::sharechain::tracker::Tracker;
use crate::web::status::{
    BitcoindState, BlockCounts, FoundBlock as FoundView, PaidBlock, Payout as PayoutView,
    PoolStatus, RecentShare,
};
use crate::worker::Readiness;

use super::history::History;
use super::local::Local;

/// Shares of the best chain the status lists.
const RECENT: usize = 100;

/// What the node passes in besides the chain.
pub struct Inputs<'a> {
    pub chain: &'a ShareChain,
    pub best: Option<Hash256>,
    pub template: Option<&'a Template>,
    pub feed: FeedStatus,
    pub history: &'a History,
    pub local: &'a Local,
    pub started_at: u64,
    pub now: u64,
    pub ready: Result<(), NotReady>,
    pub fee_percent: f64,
    pub payout_address: &'a str,
    pub peers: usize,
}

/// Why the node does not serve miners, for the operator: what keeps it (`cause`:
/// `bitcoind`, `peers`, `shares` or `starting`) and a sentence naming what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub cause: &'static str,
    pub reason: String,
}

/// The operator's account of `readiness`, with bitcoind's last error and advice that fits
/// it; `None` when ready.
pub fn not_ready(readiness: Readiness, feed: &FeedStatus) -> Option<NotReady> {
    let cause = readiness.cause()?;
    let error = feed
        .last_error
        .as_deref()
        .map_or(String::new(), |e| format!(" ({e})"));
    let advice = advice(feed.trouble, feed.syncing);
    let reason = match readiness {
        Readiness::Ready => return None,
        Readiness::BitcoindUnreached if feed.trouble.is_none() => {
            "waiting for bitcoind's first answer".to_string()
        }
        Readiness::BitcoindUnreached => {
            format!("p2pool has not reached bitcoind since it started{error}: {advice}")
        }
        Readiness::NoBitcoind => format!("lost contact with bitcoind{error}: {advice}"),
        Readiness::NoTemplate if feed.reachable => {
            "bitcoind answers; waiting for its first block template".to_string()
        }
        Readiness::NoTemplate => format!("bitcoind gives no block template{error}: {advice}"),
        Readiness::NoPeers => "p2pool is not connected to any peers; this network persists: \
                               connect to a node with -n HOST, or start a new share chain with \
                               --start-new-chain"
            .to_string(),
        Readiness::DownloadingShares => "p2pool is downloading the share chain from its peers \
                                         (or start a new share chain with --start-new-chain)"
            .to_string(),
    };
    Some(NotReady { cause, reason })
}

/// What an operator does about bitcoind's `trouble` (`None`: no error yet, taken as no
/// answer); `syncing`: bitcoind said it is still downloading blocks.
pub fn advice(trouble: Option<Trouble>, syncing: bool) -> &'static str {
    match trouble {
        None | Some(Trouble::NoAnswer) => {
            "start bitcoind with its RPC server on (server=1), or point --bitcoind-address and \
             --bitcoind-rpc-port at it"
        }
        Some(Trouble::Credentials) => {
            "give --bitcoind-datadir (the directory where bitcoind writes its .cookie file) or \
             BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD"
        }
        Some(Trouble::Forbidden) => "allow this host with rpcallowip in bitcoin.conf",
        Some(Trouble::Answered) if syncing => {
            "bitcoind is still downloading blocks; wait until it has synced"
        }
        Some(Trouble::Answered) => "wait until bitcoind has started, then see its log",
    }
}

fn u512_to_f64(v: U512) -> f64 {
    v.as_limbs().iter().rev().fold(0.0, |acc, &limb| {
        acc * 18_446_744_073_709_551_616.0 + limb as f64
    })
}

fn address_of(script: &[u8], chain: &ChainParams) -> String {
    address::from_script(script, chain).unwrap_or_else(|_| hex::encode(script))
}

/// The pool's hash rate over the retarget window behind `best` (R's
/// `get_pool_attempts_per_second`).
pub fn pool_hashrate(chain: &ShareChain, best: Hash256) -> f64 {
    let tracker = chain.tracker();
    let (height, _) = tracker.height_and_last(Some(best));
    let n = height
        .saturating_sub(1)
        .min(chain.network().target_lookbehind);
    if n == 0 {
        return 0.0;
    }
    let (Some(newest), Some(oldest)) = (
        tracker.get(&best),
        tracker.nth_parent(best, n).and_then(|h| tracker.get(&h)),
    ) else {
        return 0.0;
    };
    let dt = i64::from(newest.timestamp()) - i64::from(oldest.timestamp());
    let work = tracker.work(best, n);
    u512_to_f64(work) / dt.max(1) as f64
}

/// Most forked-off shares [`pool_stale_prop`] counts (a bound on its walk).
const FORKED_COUNTED: usize = 10_000;

/// The fraction of the pool's shares that were stale, as this node sees the forks: over the
/// retarget window behind `best` (as [`pool_hashrate`]), the known shares that branch off
/// the best chain there (each sibling of a best-chain share with everything built on it)
/// over those and the window's shares. R read a stale fraction that each node wrote into
/// its shares' nonces; no node writes one here. Dead-on-arrival shares never leave the node
/// that made them, so only orphans count.
pub fn pool_stale_prop(tracker: &Tracker, lookbehind: u32, best: Hash256) -> f64 {
    let (height, _) = tracker.height_and_last(Some(best));
    let n = height.saturating_sub(1).min(lookbehind) as usize;
    if n == 0 {
        return 0.0;
    }
    let window: Vec<Hash256> = tracker
        .chain(Some(best))
        .take(n + 1)
        .map(|e| e.share.hash)
        .collect();
    let mut forked = 0usize;
    // Each share of the window below the best, with its child in the best chain (the
    // best share's own children are a race still running, not yet stale).
    for pair in window.windows(2) {
        let (child, parent) = (pair[0], pair[1]);
        let mut todo: Vec<Hash256> = tracker
            .children(&parent)
            .into_iter()
            .filter(|c| *c != child)
            .collect();
        while let Some(h) = todo.pop() {
            if forked >= FORKED_COUNTED {
                break;
            }
            forked += 1;
            todo.extend(tracker.children(&h));
        }
    }
    forked as f64 / (forked + n) as f64
}

pub fn fill(i: &Inputs<'_>) -> PoolStatus {
    let net = i.chain.network();
    let tracker = i.chain.tracker();
    let mut s = PoolStatus {
        network: net.name.clone(),
        started_at: i.started_at,
        updated_at: i.now,
        shares_total: tracker.len() as u64,
        shares_verified: tracker.verified_count() as u64,
        sync_want: 2 * u64::from(net.chain_length),
        ready: i.ready.is_ok(),
        not_ready_reason: i
            .ready
            .as_ref()
            .err()
            .map_or(String::new(), |n| n.reason.clone()),
        not_ready_cause: i
            .ready
            .as_ref()
            .err()
            .map_or(String::new(), |n| n.cause.to_string()),
        min_share_difficulty: target_to_difficulty(net.max_target),
        fee_percent: i.fee_percent,
        payout_address: i.payout_address.to_string(),
        ..PoolStatus::default()
    };
    s.bitcoind = BitcoindState {
        reachable: i.feed.reachable,
        height: i
            .template
            .map_or(0, |t| u64::from(t.height.saturating_sub(1))),
        last_error: i.feed.last_error.clone().unwrap_or_default(),
    };
    if let Some(t) = i.template {
        s.block_difficulty = target_to_difficulty(t.bits.to_target());
        s.block_height = u64::from(t.height);
        s.block_value = t.coinbase_value;
    }
    if let Some(best) = i.best {
        let (height, _) = tracker.height_and_last(Some(best));
        s.best_share = best.to_hex();
        s.best_height = u64::from(height);
        s.shares_in_chain = u64::from(height);
        s.sync_have = u64::from(tracker.verified().height(&best));
        // R: the chain's rate counts the work that stayed in it; the pool's, the stale too.
        s.pool_nonstale_hashrate = pool_hashrate(i.chain, best);
        s.pool_stale_prop = pool_stale_prop(tracker, net.target_lookbehind, best);
        s.pool_hashrate = s.pool_nonstale_hashrate / (1.0 - s.pool_stale_prop);
        if let Ok(bits) = gentx::next_target(tracker, net, Some(best)) {
            s.share_difficulty = target_to_difficulty(bits.to_target());
        }
        s.payouts = payouts(i.chain, best, s.block_value);
        for entry in tracker.chain(Some(best)).take(RECENT) {
            let share = &entry.share;
            s.recent_shares.push(RecentShare {
                time: u64::from(share.timestamp()),
                hash: share.hash.to_hex(),
                address: address_of(&share.info.new_script, &net.bitcoin),
                work: u512_to_f64(entry.attempts),
                local: i.local.contains(&share.hash),
                block: share.is_block(),
                stale_prop: None,
            });
        }
    }
    s.local_shares = i.local.counts();
    let c = i.history.counts;
    s.blocks = BlockCounts {
        found: c.found,
        accepted: c.accepted,
        stale: c.stale,
        rejected: c.rejected,
        pending: c.pending,
        paid_node: c.paid_node,
    };
    for b in i.history.blocks.iter().rev() {
        s.found_blocks.push(FoundView {
            time: b.time,
            height: b.height,
            hash: b.hash.clone(),
            share: b.share.clone(),
            finder: b.finder.clone(),
            local: b.local,
            status: b.outcome.clone(),
            value: b.value,
        });
        if b.outcome == "accepted" || b.outcome == "duplicate" {
            let mut payouts: Vec<PayoutView> = b
                .payouts
                .iter()
                .map(|(address, amount)| PayoutView {
                    address: address.clone(),
                    amount: *amount,
                })
                .collect();
            payouts.sort_by_key(|p| std::cmp::Reverse(p.amount));
            s.paid_blocks.push(PaidBlock {
                time: b.time,
                height: b.height,
                hash: b.hash.clone(),
                total: b.value,
                payouts,
            });
        }
    }
    if !i.feed.reachable {
        s.warnings.push(format!(
            "bitcoind is unreachable{}",
            i.feed
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        ));
    }
    if i.peers == 0 {
        s.warnings.push("no P2Pool peers connected".into());
    }
    if let Err(n) = &i.ready {
        s.warnings.push(format!("not serving miners: {}", n.reason));
    }
    s
}

/// What each payout script would get if a block were found now: the block value split
/// by the PPLNS weights of the window behind the best share.
fn payouts(chain: &ShareChain, best: Hash256, value: u64) -> Vec<PayoutView> {
    let net = chain.network();
    let tracker = chain.tracker();
    let (height, _) = tracker.height_and_last(Some(best));
    let weights = tracker.weights(Some(best), height.min(net.chain_length), None);
    let total = weights.total();
    if total.is_zero() {
        return Vec::new();
    }
    let mut out: Vec<PayoutView> = weights
        .iter()
        .map(|(script, w)| {
            let amount = U512::from(value) * w / total;
            PayoutView {
                address: address_of(script, &net.bitcoin),
                amount: u64::try_from(amount).unwrap_or(u64::MAX),
            }
        })
        .filter(|p| p.amount > 0)
        .collect();
    out.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.address.cmp(&b.address)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_numbers_convert_to_floats() {
        assert_eq!(u512_to_f64(U512::from(12345u64)), 12345.0);
        let big = U512::from(1u64) << 300;
        assert!((u512_to_f64(big) / 2f64.powi(300) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pool_stale_prop_counts_the_branches_off_the_best_chain_in_its_window() {
        use crate::sharechain::sample::{self, modern_net, payout};
        let mut net = modern_net();
        net.share_period = 5;
        let mut tracker = Tracker::new();
        let mut best = None;
        let mut hashes = Vec::new();
        for i in 0..30u32 {
            let spec = sample::Spec::new(best, 1_600_000_000 + 5 * i, payout(1));
            let share = sample::mine(&tracker, &net, &spec);
            best = Some(share.hash);
            hashes.push(share.hash);
            tracker.add(share, 1_700_000_000, None);
        }
        let best = best.unwrap();
        assert_eq!(pool_stale_prop(&tracker, 20, best), 0.0);
        let sibling = |tracker: &mut Tracker, parent: Hash256, n: u32| {
            let time = tracker.get(&parent).unwrap().timestamp() + 5;
            let spec = sample::Spec::new(Some(parent), time, payout(1 + n as u8));
            let share = sample::mine(tracker, &net, &spec);
            let hash = share.hash;
            tracker.add(share, 1_700_000_000, None);
            hash
        };
        // A sibling of the 5th newest, and a share built on it: two stale of 2 + 20.
        let fork = sibling(&mut tracker, hashes[24], 1);
        sibling(&mut tracker, fork, 2);
        // Below the window (20 shares behind the best): not counted.
        sibling(&mut tracker, hashes[3], 3);
        // On the best share itself: a race still running.
        sibling(&mut tracker, best, 4);
        let prop = pool_stale_prop(&tracker, 20, best);
        assert!((prop - 2.0 / 22.0).abs() < 1e-12, "{prop}");
    }
}
