//! The share tracker: every known share by hash, with parent links, heights, the first
//! unknown ancestor, nth parent, cumulative work and the verified subset.
//!
//! Chain queries walk parent links over an index of shares. Work sums use cumulative
//! work stored per share, so a retarget window costs two lookups.

use std::collections::{HashMap, HashSet};

use ruint::aliases::U512;

use crate::bitcoin::hash::Hash256;

use super::share::Share;

/// A known share and what the tracker knows about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub share: Share,
    /// Expected hashes for the share's claimed target (0 for a target saturated at 2^256,
    /// as Python's integers give).
    pub attempts: U512,
    /// When this node first saw the share (Unix seconds).
    pub time_seen: u64,
    /// The peer it came from; `None` for a share mined locally or loaded from disk.
    pub peer: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    entries: HashMap<Hash256, Entry>,
    /// Children by parent hash; the parent may not be known yet.
    children: HashMap<Hash256, Vec<Hash256>>,
    verified: HashSet<Hash256>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, hash: &Hash256) -> bool {
        self.entries.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash256) -> Option<&Share> {
        self.entries.get(hash).map(|e| &e.share)
    }

    pub fn entry(&self, hash: &Hash256) -> Option<&Entry> {
        self.entries.get(hash)
    }

    /// Adds a share; `false` if it was already known.
    pub fn add(&mut self, share: Share, time_seen: u64, peer: Option<u64>) -> bool {
        if self.entries.contains_key(&share.hash) {
            return false;
        }
        if let Some(parent) = share.previous_hash() {
            self.children.entry(parent).or_default().push(share.hash);
        }
        let attempts = share.info.share_data.target.average_attempts();
        self.entries.insert(
            share.hash,
            Entry {
                share,
                attempts,
                time_seen,
                peer,
            },
        );
        true
    }

    /// Removes a share (pruning, or a head that failed verification).
    pub fn remove(&mut self, hash: &Hash256) -> Option<Entry> {
        let entry = self.entries.remove(hash)?;
        self.verified.remove(hash);
        if let Some(parent) = entry.share.previous_hash()
            && let Some(siblings) = self.children.get_mut(&parent)
        {
            siblings.retain(|h| h != hash);
            if siblings.is_empty() {
                self.children.remove(&parent);
            }
        }
        Some(entry)
    }

    pub fn children(&self, hash: &Hash256) -> &[Hash256] {
        self.children.get(hash).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Known shares from `start` back through known parents, `start` first.
    pub fn chain(&self, start: Option<Hash256>) -> impl Iterator<Item = &Entry> + '_ {
        let mut next = start;
        std::iter::from_fn(move || {
            let entry = self.entries.get(&next?)?;
            next = entry.share.previous_hash();
            Some(entry)
        })
    }

    /// The number of known shares from `start` back, and the first unknown ancestor
    /// (`None` when the chain reaches genesis).
    pub fn height_and_last(&self, start: Option<Hash256>) -> (u32, Option<Hash256>) {
        let mut height = 0u32;
        let mut cur = start;
        while let Some(hash) = cur {
            match self.entries.get(&hash) {
                Some(entry) => {
                    height += 1;
                    cur = entry.share.previous_hash();
                }
                None => return (height, Some(hash)),
            }
        }
        (height, None)
    }

    /// The ancestor `n` generations above `hash` (`n = 0` is `hash` itself), if known.
    pub fn nth_parent(&self, hash: Hash256, n: u32) -> Option<Hash256> {
        let mut cur = hash;
        for _ in 0..n {
            cur = self.entries.get(&cur)?.share.previous_hash()?;
        }
        self.entries.contains_key(&cur).then_some(cur)
    }

    /// Total expected hashes of `n` shares from `start` back.
    pub fn work(&self, start: Hash256, n: u32) -> U512 {
        self.chain(Some(start))
            .take(n as usize)
            .fold(U512::ZERO, |acc, e| acc + e.attempts)
    }

    /// Shares nobody builds on.
    pub fn heads(&self) -> Vec<Hash256> {
        self.entries
            .keys()
            .filter(|h| !self.children.contains_key(h))
            .copied()
            .collect()
    }

    pub fn is_verified(&self, hash: &Hash256) -> bool {
        self.verified.contains(hash)
    }

    pub fn mark_verified(&mut self, hash: Hash256) {
        if self.entries.contains_key(&hash) {
            self.verified.insert(hash);
        }
    }

    pub fn verified_count(&self) -> usize {
        self.verified.len()
    }
}
