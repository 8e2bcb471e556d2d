//! Checking a miner's solution, the same for both protocols: proof of work against the
//! pseudo-share and share targets, duplicates, staleness; a solution that meets the share
//! target goes to the node (with its block when it is one), pseudo-shares only count.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{TrySendError, select};
use log::{debug, info, warn};
use ruint::aliases::U256;

use crate::bitcoin::block::BlockHeader;
use crate::bitcoin::hash::Hash256;
use crate::bitcoin::target::target_to_average_attempts;

use super::miners::{Outcome, Username};
use super::work::{Coinbase, Work};
use super::{FoundShare, LOG, MinerEvent, Shared};
use crate::thread::lock;

/// Header hashes remembered to refuse duplicates.
const SEEN_CAP: usize = 200_000;
/// Previous blocks of our latest blocks, remembered to tell a later sibling.
pub(super) const BLOCKS_ON_KEPT: usize = 64;
/// How far ahead of the clock a miner may roll ntime (seconds).
pub const MAX_NTIME_AHEAD: u32 = 600;

/// Recently submitted header hashes.
#[derive(Debug, Default)]
pub struct Seen {
    set: HashSet<Hash256>,
    order: VecDeque<Hash256>,
}

impl Seen {
    /// False when `hash` was seen already.
    pub fn insert(&mut self, hash: Hash256) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > SEEN_CAP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// A solution to check.
pub struct Solution<'a> {
    pub work: &'a Arc<Work>,
    pub coinbase: &'a Coinbase,
    pub extranonce1: &'a [u8],
    pub extranonce2: &'a [u8],
    pub header: BlockHeader,
    /// The miner's pseudo-share target (never harder than the share target).
    pub pseudo_target: U256,
    /// `/DIFF`: shares easier than this are not sent to the share chain.
    pub share_floor: Option<U256>,
    pub user: &'a Username,
    pub protocol: &'static str,
}

/// How a solution was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A pseudo-share (and a share when `share`) on current work.
    Accepted {
        share: bool,
    },
    /// On work that is no longer current (a share is still sent to the node, as R).
    Stale {
        share: bool,
    },
    Duplicate,
    LowDifficulty,
    /// ntime before the work's or too far ahead.
    BadTime,
    /// The share failed its stateless checks (never expected from our own jobs).
    Invalid(String),
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }

    /// The reason given to the miner when not accepted.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Accepted { .. } => "",
            Verdict::Stale { .. } => "stale",
            Verdict::Duplicate => "duplicate",
            Verdict::LowDifficulty => "low-difficulty",
            Verdict::BadTime => "time-out-of-range",
            Verdict::Invalid(_) => "invalid",
        }
    }
}

/// Checks `s`, sends a share to the node, records the miner's statistics.
pub(crate) fn check(shared: &Shared, s: Solution<'_>) -> Verdict {
    let hash = s.header.hash();
    let pow = hash.to_u256();
    let share_target = s.work.share_target();
    let block_target = s.header.bits.to_target();
    let block = pow <= block_target;
    let latest = s
        .work
        .timestamp
        .max(u32::try_from(super::miners::unix_now()).unwrap_or(u32::MAX));
    let verdict = if s.header.timestamp < s.work.timestamp
        || s.header.timestamp > latest.saturating_add(MAX_NTIME_AHEAD)
    {
        Verdict::BadTime
    } else if pow > s.pseudo_target.max(share_target) {
        Verdict::LowDifficulty
    } else if !shared
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(hash)
    {
        Verdict::Duplicate
    } else {
        let current = shared.current();
        let stale = current
            .as_ref()
            .is_none_or(|current| !s.work.same_tip(current));
        // Built on a share that is no longer the best: a sibling of the share that
        // replaced it, an orphan from birth (R made it anyway, as dead on arrival). It is
        // made only for a block, and only the first block of ours on its previous block
        // (a later one is a stale sibling too); otherwise the solution is a stale
        // pseudo-share. On regtest, where a share takes 256 hashes and is a block, a
        // fast miner would otherwise make hundreds of these per second.
        let superseded = current
            .as_ref()
            .is_some_and(|current| current.best != s.work.best);
        let floor_ok = s.share_floor.is_none_or(|f| pow <= f);
        // A block is always sent, whatever the miner's floor; on networks whose block
        // target is easier than the share target (regtest) only shares are blocks.
        let candidate = pow <= share_target && (floor_ok || block);
        // The same goes for a second share of ours on one best share, found before the
        // node has moved its miners on (the node keeps the first it saw, ours too).
        // A block is scarce where its target is harder than the share target: such a
        // block is never held back. Where blocks are easier than shares (regtest), a
        // block is no rarer than a share and follows the shares' rules, the pace
        // (#38) included.
        let scarce = block && block_target < share_target;
        let share = candidate
            && ((!superseded && paced(shared, s.work) && claim_parent(shared, s.work.best))
                || (scarce && first_block_on(shared, s.header.previous_block)));
        if share && let Err(e) = send_share(shared, &s) {
            Verdict::Invalid(e)
        } else if stale {
            Verdict::Stale { share }
        } else {
            Verdict::Accepted { share }
        }
    };
    let outcome = match verdict {
        Verdict::Accepted { .. } => Outcome::Accepted,
        Verdict::Stale { .. } => Outcome::Stale,
        _ => Outcome::Rejected,
    };
    let attempts = (outcome != Outcome::Rejected).then(|| {
        crate::bitcoin::target::u256_to_f64(U256::saturating_from(target_to_average_attempts(
            s.pseudo_target.max(share_target),
        )))
    });
    let share = matches!(
        verdict,
        Verdict::Accepted { share: true } | Verdict::Stale { share: true }
    );
    shared
        .registry
        .record(s.user, s.protocol, outcome, attempts, share);
    debug!(target: LOG, "{} {}: {hash} {verdict:?}", s.protocol, s.user.address);
    verdict
}

/// The best share miners work on, from when, and the part of the pace drawn for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tip {
    best: Option<Hash256>,
    since: Instant,
    part: f64,
}

/// Notes work on `best` published at `now`: a best share other than the last one starts
/// a new wait, with a part of the pace drawn from 0 to 1 (so that nodes do not fall into
/// step); new work on the same best share (a new template) keeps the wait running.
pub(crate) fn new_tip(shared: &Shared, best: Option<Hash256>, now: Instant) {
    let mut tip = lock(&shared.tip);
    if tip.is_none_or(|t| t.best != best) {
        *tip = Some(Tip {
            best,
            since: now,
            part: rand::random::<f64>(),
        });
    }
}

/// Whether the work's pace (doc/protocol.md #38) lets a share of ours be made on it now:
/// no pace, or the best share it builds on is older than the part of the pace drawn for it.
fn paced(shared: &Shared, work: &Work) -> bool {
    pace_allows(work.pace, work.best, *lock(&shared.tip), Instant::now())
}

/// [`paced`] for a pace, the work's best share and the current tip, at `now`. Work on
/// another best share than the tip's is superseded (#36 decides it), not paced.
fn pace_allows(
    pace: Option<Duration>,
    best: Option<Hash256>,
    tip: Option<Tip>,
    now: Instant,
) -> bool {
    pace.is_none_or(|pace| {
        tip.is_none_or(|t| {
            t.best != best || now.saturating_duration_since(t.since) >= pace.mul_f64(t.part)
        })
    })
}

/// Takes `best` as the parent of a share of ours: false when one of ours already has it
/// (the latest [`BLOCKS_ON_KEPT`] parents are remembered).
fn claim_parent(shared: &Shared, best: Option<Hash256>) -> bool {
    let mut parents = lock(&shared.parents);
    if parents.contains(&best) {
        return false;
    }
    if parents.len() >= BLOCKS_ON_KEPT {
        parents.pop_front();
    }
    parents.push_back(best);
    true
}

/// Whether no block of ours was found on `previous` yet (the blocks' previous blocks are
/// remembered, the latest [`BLOCKS_ON_KEPT`]).
fn first_block_on(shared: &Shared, previous: Hash256) -> bool {
    !lock(&shared.blocks_on).contains(&previous)
}

/// Remembers that a block of ours was found on `previous`.
fn found_block_on(shared: &Shared, previous: Hash256) {
    let mut blocks_on = lock(&shared.blocks_on);
    if blocks_on.contains(&previous) {
        return;
    }
    if blocks_on.len() >= BLOCKS_ON_KEPT {
        blocks_on.pop_front();
    }
    blocks_on.push_back(previous);
}

fn send_share(shared: &Shared, s: &Solution<'_>) -> Result<(), String> {
    let found = s
        .work
        .found(s.coinbase, s.extranonce1, s.extranonce2, s.header)
        .map_err(|e| {
            warn!(target: LOG, "solution from {} refused: {e}", s.user.address);
            e.to_string()
        })?;
    let miner = if s.user.worker.is_empty() {
        s.user.address.clone()
    } else {
        format!("{}.{}", s.user.address, s.user.worker)
    };
    let mut found = FoundShare {
        share: found.share,
        block: found.block,
        height: s.work.height,
        work_id: s.work.id,
        submitted: false,
        miner,
    };
    if found.block.is_some() {
        found_block_on(shared, s.header.previous_block);
        info!(target: LOG, "block found by {}: {}", found.miner, found.share.pow_hash);
        // The block goes to bitcoind from here: nothing on its way waits on the node
        // thread, whose queue may be full.
        if let (Some(blocks), Some(submission)) = (&shared.config.blocks, found.submission()) {
            match blocks.submit(submission) {
                Ok(()) => found.submitted = true,
                Err(e) => warn!(target: LOG, "{e}; the node tries again"),
            }
        }
    } else {
        info!(target: LOG, "share found by {}: {}", found.miner, found.share.hash);
    }
    hand_to_node(shared, MinerEvent::Share(Box::new(found)));
    Ok(())
}

/// Queues `event` for the node, waiting while its queue is full: the miner's answer waits
/// with it (backpressure on that miner alone), and no share is dropped. Only a shutdown
/// ends the wait: the node takes what is queued when the miners have stopped, so a share
/// still waiting then is lost, and logged.
fn hand_to_node(shared: &Shared, event: MinerEvent) {
    let event = match shared.events.try_send(event) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => return,
        Err(TrySendError::Full(event)) => event,
    };
    debug!(target: LOG, "the node's queue is full: waiting for it to take a share");
    select! {
        send(shared.events, event) -> _ => {}
        recv(shared.shutdown.signal()) -> _ => {
            warn!(target: LOG, "shutting down with the node's queue full: a share was not handed to it");
        }
    }
}

/// The pseudo-share target of a difficulty on `work`: never harder than the share target
/// nor easier than the network's MAX_TARGET.
pub fn pseudo_target(work: &Work, difficulty: f64) -> U256 {
    super::miners::difficulty_to_target(difficulty)
        .min(work.net.max_target)
        .max(work.share_target())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::script;
    use crate::sharechain::sample::{self, modern_net, payout};
    use crate::worker::{WorkerConfig, Workers};

    fn event(n: u32) -> MinerEvent {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 1, 10, &[payout(1)]);
        let share = tracker.get(&hashes[0]).expect("sample share").clone();
        MinerEvent::Share(Box::new(FoundShare {
            share,
            block: None,
            height: 100,
            work_id: u64::from(n),
            submitted: false,
            miner: "m".into(),
        }))
    }

    fn work_id(e: &MinerEvent) -> u64 {
        let MinerEvent::Share(found) = e;
        found.work_id
    }

    #[test]
    fn a_full_node_queue_holds_the_miner_until_it_takes_one_and_only_a_stop_drops_a_share() {
        let mut config = WorkerConfig::new(modern_net(), script::p2pkh(&[1; 20]));
        config.worker_addr = "127.0.0.1:0".parse().unwrap();
        config.stratum_addr = "127.0.0.1:0".parse().unwrap();
        config.events_queue = 1;
        let (workers, events) = Workers::start(config, None).unwrap();
        let shared = workers.shared.clone();
        hand_to_node(&shared, event(1));
        // The queue is full: the second waits, however long the node takes.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let s = shared.clone();
        let waiting = std::thread::spawn(move || {
            hand_to_node(&s, event(2));
            done_tx.send(()).unwrap();
        });
        assert!(
            done.recv_timeout(Duration::from_millis(2500)).is_err(),
            "still waiting"
        );
        assert_eq!(work_id(&events.recv().unwrap()), 1);
        done.recv_timeout(Duration::from_secs(5))
            .expect("handed over once there was room");
        waiting.join().unwrap();
        assert_eq!(work_id(&events.recv().unwrap()), 2);
        // Full again, then the workers stop: the waiting share is given up, not stuck.
        hand_to_node(&shared, event(3));
        let s = shared.clone();
        let waiting = std::thread::spawn(move || hand_to_node(&s, event(4)));
        std::thread::sleep(Duration::from_millis(200));
        workers.stop();
        waiting.join().unwrap();
        assert_eq!(work_id(&events.recv().unwrap()), 3);
        assert!(
            events.try_recv().is_err(),
            "the share waiting at the stop is not queued"
        );
    }

    #[test]
    fn a_paced_share_waits_for_its_drawn_part_of_the_pace_after_the_tip_and_unpaced_work_never_waits()
     {
        let t = Instant::now();
        let pace = Some(Duration::from_millis(500));
        let at = |ms| t + Duration::from_millis(ms);
        let a = Some(crate::bitcoin::hash::sha256d(b"a"));
        let tip = |best, part| {
            Some(Tip {
                best,
                since: t,
                part,
            })
        };
        // Never paced: no pace, or no work published yet.
        assert!(pace_allows(None, a, tip(a, 1.0), t));
        assert!(pace_allows(pace, a, None, t));
        // Half the pace drawn: 250 ms after the tip; all of it: 500 ms; none: at once.
        assert!(!pace_allows(pace, a, tip(a, 0.5), at(249)));
        assert!(pace_allows(pace, a, tip(a, 0.5), at(250)));
        assert!(!pace_allows(pace, a, tip(a, 1.0), at(499)));
        assert!(pace_allows(pace, a, tip(a, 1.0), at(500)));
        assert!(pace_allows(pace, a, tip(a, 0.0), t));
        // A young chain (no best share yet) waits the same way.
        assert!(!pace_allows(pace, None, tip(None, 0.5), at(249)));
        assert!(pace_allows(pace, None, tip(None, 0.5), at(250)));
        // Work on a best share that is not the tip's is not the pace's to hold.
        assert!(pace_allows(
            pace,
            Some(crate::bitcoin::hash::sha256d(b"b")),
            tip(a, 1.0),
            t
        ));
        // A clock read before the tip (another thread's) is not a panic, only a wait.
        let late = Some(Tip {
            best: a,
            since: at(10),
            part: 0.5,
        });
        assert!(!pace_allows(pace, a, late, t));
    }
}
