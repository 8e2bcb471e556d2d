//! This node's own shares, counted as R counts them (`get_stale_counts`): a share is in
//! the chain when the best chain holds it anywhere down to the last known share (not
//! only within CHAIN_LENGTH), or held it when it was pruned; it is dead on arrival when
//! the work it was found on was no longer current; an orphan is neither in the chain
//! nor dead.
//!
//! Only shares the tracker still holds are kept by hash; a pruned one becomes a count,
//! so the memory is bounded by the tracker's. The node recounts at every tick; a share
//! pruned before any count saw it in the chain (the chain grew by 2 × CHAIN_LENGTH + 10
//! shares within a second) is counted out of it.

use std::collections::HashMap;

use crate::bitcoin::hash::Hash256;
use crate::sharechain::tracker::Tracker;
use crate::web::status::LocalShares;

#[derive(Debug, Clone, Copy)]
struct Held {
    dead: bool,
    /// In the best chain at the last count.
    in_chain: bool,
}

/// This node's shares and their standing.
#[derive(Debug, Default)]
pub struct Local {
    held: HashMap<Hash256, Held>,
    found: u64,
    dead: u64,
    /// Pruned while in the best chain (R's `removed_unstales`), and the dead among them.
    gone_in_chain: u64,
    gone_dead_in_chain: u64,
}

impl Local {
    /// A share found by this node's miners; `dead`: found on work that was no longer
    /// current (its previous share not our best, or its block not on bitcoind's tip).
    pub fn found(&mut self, hash: Hash256, dead: bool) {
        if self.held.contains_key(&hash) {
            return;
        }
        self.found += 1;
        self.dead += u64::from(dead);
        self.held.insert(
            hash,
            Held {
                dead,
                in_chain: false,
            },
        );
    }

    pub fn contains(&self, hash: &Hash256) -> bool {
        self.held.contains_key(hash)
    }

    /// Marks which held shares the best chain from `best` holds (walking it down to the
    /// last known share) and turns shares the tracker no longer has into counts.
    pub fn recount(&mut self, tracker: &Tracker, best: Option<Hash256>) {
        let gone: Vec<Hash256> = self
            .held
            .keys()
            .filter(|hash| tracker.get(hash).is_none())
            .copied()
            .collect();
        for hash in gone {
            if let Some(held) = self.held.remove(&hash)
                && held.in_chain
            {
                self.gone_in_chain += 1;
                self.gone_dead_in_chain += u64::from(held.dead);
            }
        }
        for held in self.held.values_mut() {
            held.in_chain = false;
        }
        let mut left = self.held.len();
        if left == 0 {
            return;
        }
        for entry in tracker.chain(best) {
            if let Some(held) = self.held.get_mut(&entry.share.hash) {
                held.in_chain = true;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
    }

    /// Found, orphaned and dead on arrival, as of the last [`recount`](Self::recount).
    pub fn counts(&self) -> LocalShares {
        let held_in_chain = self.held.values().filter(|h| h.in_chain);
        let (in_chain, dead_in_chain) = held_in_chain.fold(
            (self.gone_in_chain, self.gone_dead_in_chain),
            |(all, dead), h| (all + 1, dead + u64::from(h.dead)),
        );
        let dead = self.dead.saturating_sub(dead_in_chain);
        LocalShares {
            total: self.found,
            orphan: self.found.saturating_sub(in_chain).saturating_sub(dead),
            dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharechain::sample::{self, modern_net, payout};

    #[test]
    fn shares_in_the_chain_are_neither_orphans_nor_dead_even_once_pruned() {
        let net = modern_net();
        let (mut tracker, hashes) = sample::chain(&net, 6, 10, &[payout(1)]);
        let mut local = Local::default();
        for h in &hashes {
            local.found(*h, false);
        }
        local.recount(&tracker, hashes.last().copied());
        assert_eq!(
            local.counts(),
            LocalShares {
                total: 6,
                orphan: 0,
                dead: 0
            }
        );
        // The two oldest pruned: still counted in the chain.
        tracker.remove(&hashes[0]);
        tracker.remove(&hashes[1]);
        local.recount(&tracker, hashes.last().copied());
        assert_eq!(
            local.counts(),
            LocalShares {
                total: 6,
                orphan: 0,
                dead: 0
            }
        );
        assert_eq!(local.held.len(), 4);
    }

    #[test]
    fn shares_off_the_best_chain_are_orphans_or_dead() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 4, 10, &[payout(1)]);
        let mut local = Local::default();
        for (i, h) in hashes.iter().enumerate() {
            local.found(*h, i == 3);
        }
        // Best at the second share: the last two are off the chain, one of them dead.
        local.recount(&tracker, Some(hashes[1]));
        assert_eq!(
            local.counts(),
            LocalShares {
                total: 4,
                orphan: 1,
                dead: 1
            }
        );
        // Best at the tip: the dead share made it into the chain after all.
        local.recount(&tracker, Some(hashes[3]));
        assert_eq!(
            local.counts(),
            LocalShares {
                total: 4,
                orphan: 0,
                dead: 0
            }
        );
        // Pruned while off the chain: stays counted against us.
        let mut tracker = tracker;
        local.recount(&tracker, Some(hashes[1]));
        tracker.remove(&hashes[3]);
        tracker.remove(&hashes[2]);
        local.recount(&tracker, Some(hashes[1]));
        assert_eq!(
            local.counts(),
            LocalShares {
                total: 4,
                orphan: 1,
                dead: 1
            }
        );
    }
}
