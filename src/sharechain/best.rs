//! Choosing the share to mine on (§6.4): the best verified tree by score, its heads by
//! rank, and the stale rule.
//!
//! Both rules read the height of the Bitcoin block each share builds on; an unknown block
//! counts as height 0 (modern-rules.md, ranking).

use std::cmp::Ordering;
use std::collections::HashMap;

use ruint::aliases::U512;

use crate::bitcoin::hash::Hash256;

use super::tracker::Tracker;

/// Heads ranked below the best that pruning keeps.
pub const KEEP_TOP_HEADS: usize = 5;
/// Shares at the top of a head that ranking leaves out of its work.
const RANK_SKIP: u32 = 5;

/// The Bitcoin side's view of block heights.
pub trait BlockHeights {
    /// The height of a block, 0 when it is not known.
    fn height(&self, block: &Hash256) -> u32;
    /// The height of bitcoind's best block.
    fn highest(&self) -> u32;
}

/// Block heights from a map, for a node's cache and for tests.
#[derive(Debug, Clone, Default)]
pub struct HeightMap {
    pub heights: HashMap<Hash256, u32>,
    pub highest: u32,
}

impl BlockHeights for HeightMap {
    fn height(&self, block: &Hash256) -> u32 {
        self.heights.get(block).copied().unwrap_or(0)
    }

    fn highest(&self) -> u32 {
        self.highest
    }
}

/// A verified head's score: its verified height (up to CHAIN_LENGTH), then the best rate
/// of work since a point in the past, where the point is a Bitcoin block height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Score {
    pub height: u32,
    pub work: U512,
}

/// R's `score`: credits older shares only as far as the Bitcoin blocks they reference
/// are recent, so a chain mined in secret on stale blocks scores low.
///
/// R takes the best of `work_k // (highest − maxh_k + 1)` over the window oldest first.
/// The work only grows and the divisor only shrinks along the window, so that best is
/// the last point whose divisor is still positive. Shares on one block share a height, so
/// the window is read as runs of shares on one block (`Tracker::block_runs`, remembered
/// from the last head scored): one height lookup and one addition per run.
pub fn score(
    tracker: &Tracker,
    chain_length: u32,
    head: Hash256,
    heights: &dyn BlockHeights,
) -> Score {
    let verified = tracker.verified();
    let (height, last) = verified.height_and_last(Some(head));
    if height == 0 {
        // Not verified: nothing to score.
        return Score {
            height: 0,
            work: U512::ZERO,
        };
    }
    // The window: up to CHAIN_LENGTH verified shares from `skip` below the head back (the
    // verified chain is a run of the full chain).
    let skip = if last.is_some() {
        (chain_length / 2).min(height / 2)
    } else {
        0
    };
    let count = (height - skip).min(chain_length);
    let highest = heights.highest();
    let mut work = U512::ZERO;
    let mut max_height = 0u32;
    let mut divisor = None;
    for run in tracker.block_runs(&head, skip, count) {
        max_height = max_height.max(heights.height(&run.block));
        // Python divides by a non-positive number only when a referenced block is above
        // bitcoind's tip (a race with a new block); from there on nothing scores.
        if max_height > highest {
            break;
        }
        work += run.work;
        divisor = Some(u64::from(highest - max_height) + 1);
    }
    Score {
        height: height.min(chain_length),
        work: divisor.map_or(U512::ZERO, |d| work / U512::from(d)),
    }
}

/// The ranking key of a verified head (§6.4 step 2): work below its top 5 shares, the
/// height of its Bitcoin block, then earlier seen first.
fn rank_key(
    tracker: &Tracker,
    head: &Hash256,
    heights: &dyn BlockHeights,
) -> (U512, u32, std::cmp::Reverse<u64>) {
    let verified = tracker.verified();
    let height = verified.height(head);
    let skip = RANK_SKIP.min(height);
    let work = if skip >= height {
        U512::ZERO
    } else {
        verified
            .nth_parent(*head, skip)
            .map_or(U512::ZERO, |p| verified.work(p, u32::MAX))
    };
    let (block_height, seen) = tracker.entry(head).map_or((0, 0), |e| {
        (heights.height(&e.share.header.previous_block), e.time_seen)
    });
    (work, block_height, std::cmp::Reverse(seen))
}

/// Verified heads of the best tree, worst first and best last; empty with no verified
/// shares. `scores` remembers scores between calls (R keeps them 5 s).
pub fn ranked_heads(
    tracker: &Tracker,
    heights: &dyn BlockHeights,
    mut score_of: impl FnMut(Hash256) -> Score,
) -> Vec<Hash256> {
    let verified = tracker.verified();
    let mut trees: HashMap<Hash256, Vec<Hash256>> = HashMap::new();
    for head in verified.heads() {
        if let Some(tail) = verified.tail(head) {
            trees.entry(tail).or_default().push(*head);
        }
    }
    let mut best: Option<(Score, Hash256, Vec<Hash256>)> = None;
    for (tail, heads) in trees {
        let Some(tallest) = heads
            .iter()
            .copied()
            .max_by_key(|h| (verified.height(h), *h))
        else {
            continue;
        };
        let s = score_of(tallest);
        let better = match &best {
            None => true,
            Some((bs, bt, _)) => (s, tail).cmp(&(*bs, *bt)) == Ordering::Greater,
        };
        if better {
            best = Some((s, tail, heads));
        }
    }
    let Some((_, _, heads)) = best else {
        return Vec::new();
    };
    let mut keyed: Vec<_> = heads
        .into_iter()
        .map(|h| (rank_key(tracker, &h, heights), h))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, h)| h).collect()
}

/// The stale rule (§6.4 step 3): a peer's best share on an older Bitcoin block than the
/// current one is passed over for its parent, unless it is itself the current block.
pub fn apply_stale_rule(
    tracker: &Tracker,
    best: Hash256,
    current_block: &Hash256,
    heights: &dyn BlockHeights,
) -> Option<Hash256> {
    let Some(e) = tracker.entry(&best) else {
        return Some(best);
    };
    let share = &e.share;
    if heights.height(&share.header.previous_block) < heights.height(current_block)
        && share.pow_hash != *current_block
        && e.peer.is_some()
    {
        return share.previous_hash();
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::hash::sha256d;
    use crate::sharechain::sample::{self, Spec, legacy_net, payout};

    /// R's score share by share: the walk `score` replaced.
    fn score_by_walk(
        tracker: &Tracker,
        chain_length: u32,
        head: Hash256,
        heights: &dyn BlockHeights,
    ) -> Score {
        let verified = tracker.verified();
        let (height, last) = verified.height_and_last(Some(head));
        let start = if last.is_some() {
            verified.nth_parent(head, (chain_length / 2).min(height / 2))
        } else {
            Some(head)
        };
        let Some(start) = start else {
            return Score {
                height: height.min(chain_length),
                work: U512::ZERO,
            };
        };
        let count = verified.height(&start).min(chain_length) as usize;
        let seq: Vec<(u32, U512)> = tracker
            .chain(Some(start))
            .take(count)
            .map(|e| (heights.height(&e.share.header.previous_block), e.attempts))
            .collect();
        let highest = heights.highest();
        let (mut work, mut max_height, mut divisor) = (U512::ZERO, 0u32, None);
        for &(h, attempts) in seq.iter().rev() {
            max_height = max_height.max(h);
            if max_height > highest {
                break;
            }
            work += attempts;
            divisor = Some(u64::from(highest - max_height) + 1);
        }
        Score {
            height: height.min(chain_length),
            work: divisor.map_or(U512::ZERO, |d| work / U512::from(d)),
        }
    }

    fn block(n: u32) -> Hash256 {
        sha256d(&n.to_le_bytes())
    }

    /// Mines a share on `prev` building on `block(b)` and adds it, verified.
    fn grow(tracker: &mut Tracker, prev: Option<Hash256>, t: u32, b: u32) -> Hash256 {
        let net = legacy_net(false);
        let mut spec = Spec::new(prev, 1_600_000_000 + 10 * t, payout((t % 3) as u8));
        spec.previous_block = block(b);
        let share = sample::mine(tracker, &net, &spec);
        let hash = share.hash;
        tracker.add(share, 0, None);
        tracker.mark_verified(hash);
        hash
    }

    #[test]
    fn remembered_block_runs_score_as_the_share_by_share_walk() {
        let cl = legacy_net(false).chain_length;
        let mut heights = HeightMap::default();
        for b in 0..6 {
            heights.heights.insert(block(b), 100 + 2 * b);
        }
        let mut tracker = Tracker::new();
        let mut line: Vec<Hash256> = Vec::new();
        let mut forks: Vec<Hash256> = Vec::new();
        let check = |tracker: &Tracker, heights: &mut HeightMap, head: Hash256, step: u32| {
            for highest in [99, 104, 108, 110, 111 + step % 3] {
                heights.highest = highest;
                assert_eq!(
                    score(tracker, cl, head, heights),
                    score_by_walk(tracker, cl, head, heights),
                    "step {step}, highest {highest}"
                );
            }
        };
        for t in 0..60u32 {
            // Blocks change every few shares and come back (0, 1, 2, 1, 3, ...).
            let b = [0, 1, 2, 1, 3, 4, 4, 5][(t / 3 % 8) as usize];
            let head = grow(&mut tracker, line.last().copied(), t, b);
            line.push(head);
            check(&tracker, &mut heights, head, t);
            if t % 9 == 4 {
                // A sibling of the head, scored, then the line goes on.
                let parent = line.get(line.len().wrapping_sub(2)).copied();
                let sibling = grow(&mut tracker, parent, t + 1000, b + 1);
                forks.push(sibling);
                check(&tracker, &mut heights, sibling, t);
                check(&tracker, &mut heights, head, t);
            }
            if t == 30 {
                // The tail goes, then a stale fork head, as pruning removes them.
                tracker.remove(&line[0]);
                tracker.remove(&line[1]);
                let stale = forks.remove(0);
                tracker.remove(&stale);
                check(&tracker, &mut heights, head, t);
            }
        }
        // Scoring older heads in any order.
        for k in [59, 40, 41, 58, 12, 13, 59] {
            check(&tracker, &mut heights, line[k], 100 + k as u32);
        }
        for &f in &forks {
            check(&tracker, &mut heights, f, 200);
        }
    }
}
