//! The share chain as the node thread owns it: shares in, verification when their
//! ancestry allows (§6.3), the best share (§6.4), pruning (§6.5), block shares checked
//! whole before submission (modern-rules.md §5), and the store's writes batched per tick.

use std::collections::{HashMap, HashSet};
use std::fmt;

use log::{debug, info, warn};

use crate::bitcoin::block::{self, Block};
use crate::bitcoin::encode::Encode;
use crate::bitcoin::hash::Hash256;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet};

use super::best::{self, BlockHeights, KEEP_TOP_HEADS, Score};
use super::share::{Share, Share1a, Share1b, ShareError};
use super::store::{Batch, Store, StoreError, StoredKind, StoredShare};
use super::tracker::Tracker;
use super::verify::{self, VerifyError};

/// Most Bitcoin block weight (BIP141).
pub const MAX_BLOCK_WEIGHT: usize = 4_000_000;
/// How long a head's score is remembered (R: 5 s).
const SCORE_TTL: u64 = 5;
/// Unverified shares tried below a head per think (R: 5).
const VERIFY_TRIES: u32 = 5;
/// Passes of head and tail trimming per think (R: 1000).
const TRIM_PASSES: usize = 1000;
/// A head younger than this is never trimmed (seconds).
const HEAD_KEEP_SECONDS: u64 = 300;
/// An unverified head whose chain grew this recently is kept (seconds).
const GROWING_KEEP_SECONDS: u64 = 120;

/// Why a verified block share's block cannot be submitted from the copy held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockFault {
    /// The held copy has no transactions (a share1a can never be a block share).
    NoTransactions,
    TooHeavy {
        weight: usize,
    },
    /// The witnesses do not hash to the commitment in the generation transaction.
    CommitmentMismatch,
    /// A transaction has a witness but the generation transaction commits to none.
    UncommittedWitness,
}

impl fmt::Display for BlockFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockFault::NoTransactions => write!(f, "block has no transaction list"),
            BlockFault::TooHeavy { weight } => {
                write!(f, "block weighs {weight} (at most {MAX_BLOCK_WEIGHT})")
            }
            BlockFault::CommitmentMismatch => {
                write!(f, "block witnesses do not match the witness commitment")
            }
            BlockFault::UncommittedWitness => {
                write!(f, "block has witnesses but no witness commitment")
            }
        }
    }
}

/// Assembles the Bitcoin block of a verified block share from its regenerated generation
/// transaction, and checks what share validity leaves out: full weight and witnesses.
pub fn assemble_block(
    share: &Share,
    gentx: &Transaction,
    rules: RuleSet,
) -> Result<Block, BlockFault> {
    let other_txs = share.other_txs.as_ref().ok_or(BlockFault::NoTransactions)?;
    match share.info.modern.as_ref().and_then(|m| m.commitment()) {
        Some(c) => {
            let wtxids: Vec<Hash256> = other_txs.iter().map(Transaction::wtxid).collect();
            if block::witness_commitment_for(&wtxids).0 != c {
                return Err(BlockFault::CommitmentMismatch);
            }
        }
        None => {
            if other_txs.iter().any(Transaction::has_witness) {
                return Err(BlockFault::UncommittedWitness);
            }
        }
    }
    let block = Block::assemble(share.header, gentx, other_txs.clone());
    if rules == RuleSet::Modern {
        let weight = block.weight();
        if weight > MAX_BLOCK_WEIGHT {
            return Err(BlockFault::TooHeavy { weight });
        }
    }
    Ok(block)
}

/// What adding a share did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    New,
    Known,
    /// A whole copy of a verified block share replaced a mutated one: submit its block.
    Replaced(Box<Block>),
}

/// What one think did and what the node should do about it.
#[derive(Debug, Default)]
pub struct Think {
    /// The share to mine on.
    pub best: Option<Hash256>,
    /// Missing shares to ask for, each with the peer whose share needs it.
    pub wanted: Vec<(Option<u64>, Hash256)>,
    /// Heads that failed verification and were removed, with the peer that sent each.
    pub bad: Vec<(Hash256, Option<u64>, VerifyError)>,
    /// Verified block shares whose block is whole: submit these.
    pub blocks: Vec<Block>,
    pub verified: usize,
    pub pruned: usize,
}

#[derive(Debug)]
pub enum LoadError {
    Store(StoreError),
    Decode { hash: Hash256, reason: String },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Store(e) => write!(f, "loading the share chain: {e}"),
            LoadError::Decode { hash, reason } => {
                write!(f, "stored share {hash} does not decode: {reason}")
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl From<StoreError> for LoadError {
    fn from(e: StoreError) -> Self {
        LoadError::Store(e)
    }
}

#[derive(Debug)]
pub struct ShareChain {
    net: Network,
    tracker: Tracker,
    batch: Batch,
    scores: HashMap<Hash256, (u64, u32, Score)>,
    /// Verified block shares whose held copy cannot be submitted.
    mutated: HashSet<Hash256>,
}

impl ShareChain {
    pub fn new(net: Network) -> ShareChain {
        ShareChain {
            net,
            tracker: Tracker::new(),
            batch: Batch::default(),
            scores: HashMap::new(),
            mutated: HashSet::new(),
        }
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The shares in the store, with their verified flags unless `distrust_flags`.
    pub fn load(
        net: Network,
        store: &Store,
        distrust_flags: bool,
    ) -> Result<ShareChain, LoadError> {
        let mut chain = ShareChain::new(net);
        let stored = store.load_shares()?;
        let mut verified = Vec::new();
        for s in stored {
            let share = decode_stored(&s, &chain.net).map_err(|reason| LoadError::Decode {
                hash: s.hash,
                reason,
            })?;
            if share.hash != s.hash {
                return Err(LoadError::Decode {
                    hash: s.hash,
                    reason: format!("its bytes hash to {}", share.hash),
                });
            }
            if s.verified && !distrust_flags {
                verified.push(s.hash);
            }
            chain.tracker.add(share, s.time_seen, None);
        }
        for hash in verified {
            chain.tracker.mark_verified(hash);
        }
        info!(
            target: "sharechain",
            "loaded {} shares ({} verified) from {}",
            chain.tracker.len(),
            chain.tracker.verified_count(),
            store.path().display()
        );
        Ok(chain)
    }

    /// The writes since the last call, for the store.
    pub fn take_batch(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }

    /// Adds a share from a peer (`peer`) or mined here (`None`), seen at `now`.
    pub fn add(&mut self, share: Share, peer: Option<u64>, now: u64) -> Added {
        let hash = share.hash;
        if self.tracker.contains(&hash) {
            if self.mutated.contains(&hash) && share.other_txs.is_some() {
                return self.replace_mutated(share);
            }
            return Added::Known;
        }
        self.batch.put_shares.push(stored(&share, false, now));
        self.tracker.add(share, now, peer);
        Added::New
    }

    fn replace_mutated(&mut self, share: Share) -> Added {
        let hash = share.hash;
        // The share was verified already, so the clock no longer matters.
        let Ok(generated) = verify::check(&self.tracker, &self.net, &share, i64::MAX / 2) else {
            return Added::Known;
        };
        let Ok(block) = assemble_block(&share, &generated.tx, self.net.rules) else {
            return Added::Known;
        };
        let time_seen = self.tracker.entry(&hash).map_or(0, |e| e.time_seen);
        self.tracker
            .replace_transactions(&hash, share.other_txs.clone());
        self.mutated.remove(&hash);
        self.batch.put_shares.push(stored(&share, true, time_seen));
        info!(target: "sharechain", "block share {hash}: a whole copy replaced the mutated one");
        Added::Replaced(Box::new(block))
    }

    /// Verifies `hash` if it is not verified yet; `Err` with the reason when it fails.
    fn attempt_verify(
        &mut self,
        hash: Hash256,
        now: i64,
        out: &mut Think,
    ) -> Result<(), VerifyError> {
        if self.tracker.is_verified(&hash) {
            return Ok(());
        }
        let Some(share) = self.tracker.get(&hash) else {
            return Ok(());
        };
        let generated = verify::check(&self.tracker, &self.net, share, now)?;
        if share.is_block() {
            match assemble_block(share, &generated.tx, self.net.rules) {
                Ok(block) => out.blocks.push(block),
                Err(fault) => {
                    warn!(target: "sharechain", "block share {hash} kept but not submitted: {fault}");
                    self.mutated.insert(hash);
                }
            }
        }
        self.tracker.mark_verified(hash);
        self.batch.set_verified.push(hash);
        out.verified += 1;
        Ok(())
    }

    fn peer_of_child(&self, parent: &Hash256, verified_only: bool) -> Option<u64> {
        let children = if verified_only {
            self.tracker.verified().children(parent)
        } else {
            self.tracker.children(parent)
        };
        children
            .iter()
            .find_map(|c| self.tracker.entry(c).and_then(|e| e.peer))
    }

    /// Verification, best share and pruning, as R's `think` (§6.3–6.5). `now` is the
    /// clock (Unix seconds) corrected to bitcoind's; `current_block` is the block that
    /// work builds on now.
    pub fn think(
        &mut self,
        heights: &dyn BlockHeights,
        current_block: Option<Hash256>,
        now: u64,
    ) -> Think {
        let mut out = Think::default();
        let cl = self.net.chain_length;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);

        // 1. Unverified heads: verify the head or one of the few shares below it.
        let mut heads: Vec<Hash256> = self
            .tracker
            .all()
            .heads()
            .iter()
            .filter(|h| !self.tracker.verified().heads().contains(h))
            .copied()
            .collect();
        heads.sort();
        let mut bads = Vec::new();
        for head in heads {
            let (height, last) = self.tracker.height_and_last(Some(head));
            let tries = if last.is_none() {
                u32::MAX
            } else {
                VERIFY_TRIES.min(height.saturating_sub(cl))
            };
            let walk: Vec<Hash256> = self
                .tracker
                .all()
                .chain(Some(head))
                .take(tries as usize)
                .map(|(h, _)| h)
                .collect();
            let mut any = false;
            for hash in walk {
                match self.attempt_verify(hash, now_i, &mut out) {
                    Ok(()) => {
                        any = true;
                        break;
                    }
                    Err(e) => {
                        debug!(target: "sharechain", "{e}");
                        if hash == head {
                            bads.push((hash, e));
                        }
                    }
                }
            }
            if !any && let Some(last) = last {
                out.wanted.push((self.peer_of_child(&last, false), last));
            }
        }
        for (hash, e) in bads {
            let peer = self.tracker.entry(&hash).and_then(|e| e.peer);
            warn!(target: "sharechain", "removing invalid share: {e}");
            self.remove(&hash);
            out.bad.push((hash, peer, e));
        }

        // 2. Verified heads: extend verification down to CHAIN_LENGTH shares.
        let mut vheads: Vec<Hash256> = self.tracker.verified().heads().iter().copied().collect();
        vheads.sort();
        for head in vheads {
            let (head_height, last_hash) = self.tracker.verified().height_and_last(Some(head));
            let (last_height, last_last) = self.tracker.height_and_last(last_hash);
            let want = cl.saturating_sub(head_height);
            let can = if last_last.is_some() {
                last_height.saturating_sub(1).saturating_sub(cl)
            } else {
                last_height
            };
            let walk: Vec<Hash256> = self
                .tracker
                .all()
                .chain(last_hash)
                .take(want.min(can) as usize)
                .map(|(h, _)| h)
                .collect();
            for hash in walk {
                if let Err(e) = self.attempt_verify(hash, now_i, &mut out) {
                    debug!(target: "sharechain", "{e}");
                    break;
                }
            }
            if head_height < cl
                && let (Some(last_hash), Some(last_last)) = (last_hash, last_last)
            {
                out.wanted
                    .push((self.peer_of_child(&last_hash, true), last_last));
            }
        }

        // 3. The best tree, its heads ranked, then the stale rule.
        let ranked = self.ranked(heights, now);
        out.pruned = self.prune(&ranked, now);
        let best = ranked.last().copied();
        out.best = match (best, current_block) {
            (Some(b), Some(block)) => best::apply_stale_rule(&self.tracker, b, &block, heights),
            (b, _) => b,
        };
        out.wanted.sort();
        out.wanted.dedup();
        out
    }

    fn ranked(&mut self, heights: &dyn BlockHeights, now: u64) -> Vec<Hash256> {
        let highest = heights.highest();
        let cl = self.net.chain_length;
        self.scores
            .retain(|_, (at, h, _)| *h == highest && now.saturating_sub(*at) < SCORE_TTL);
        let tracker = &self.tracker;
        let scores = &mut self.scores;
        best::ranked_heads(tracker, heights, |head| {
            if let Some((_, _, s)) = scores.get(&head) {
                return *s;
            }
            let s = best::score(tracker, cl, head, heights);
            scores.insert(head, (now, highest, s));
            s
        })
    }

    /// Head and tail trimming (§6.5); returns how many shares were removed.
    fn prune(&mut self, ranked: &[Hash256], now: u64) -> usize {
        let mut removed = 0;
        if !ranked.is_empty() {
            let top: HashSet<Hash256> = ranked.iter().rev().take(KEEP_TOP_HEADS).copied().collect();
            for _ in 0..TRIM_PASSES {
                let mut doomed = Vec::new();
                for head in self.tracker.all().heads() {
                    if top.contains(head) {
                        continue;
                    }
                    let Some(e) = self.tracker.entry(head) else {
                        continue;
                    };
                    if e.time_seen + HEAD_KEEP_SECONDS > now {
                        continue;
                    }
                    if !self.tracker.is_verified(head) && self.tail_grew_recently(head, now) {
                        continue;
                    }
                    doomed.push(*head);
                }
                if doomed.is_empty() {
                    break;
                }
                for hash in doomed {
                    self.remove(&hash);
                    removed += 1;
                }
            }
        }
        removed + self.trim_tails()
    }

    /// Whether a share just above the missing parent of `head`'s chain was seen lately.
    fn tail_grew_recently(&self, head: &Hash256, now: u64) -> bool {
        let all = self.tracker.all();
        let Some(tail) = all.tail(head) else {
            return false;
        };
        // The shares just above the missing parent: the tails that wait for it.
        let waiting = match self.tracker.get(&tail).and_then(Share::previous_hash) {
            Some(missing) => all.waiting(&missing),
            None => vec![tail],
        };
        let newest = waiting
            .iter()
            .filter_map(|c| self.tracker.entry(c))
            .map(|e| e.time_seen)
            .max()
            .unwrap_or(0);
        newest + GROWING_KEEP_SECONDS > now
    }

    /// Removes shares from the bottom of each chain whose every head is at least
    /// 2×CHAIN_LENGTH+10 high, never at a fork.
    fn trim_tails(&mut self) -> usize {
        let keep = 2 * u64::from(self.net.chain_length) + 10;
        let all = self.tracker.all();
        let mut lowest: HashMap<Hash256, u32> = HashMap::new();
        for head in all.heads() {
            if let Some(tail) = all.tail(head) {
                let h = all.height(head);
                let e = lowest.entry(tail).or_insert(u32::MAX);
                *e = (*e).min(h);
            }
        }
        let mut removed = 0;
        for (tail, min_height) in lowest {
            let excess = u64::from(min_height).saturating_sub(keep - 1);
            let mut cur = tail;
            for _ in 0..excess.min(TRIM_PASSES as u64) {
                let all = self.tracker.all();
                let shares_waiting = self
                    .tracker
                    .get(&cur)
                    .and_then(Share::previous_hash)
                    .map_or(1, |p| all.waiting(&p).len());
                let children = all.children(&cur);
                if shares_waiting > 1 || children.len() != 1 {
                    break;
                }
                self.remove(&cur);
                removed += 1;
                cur = children[0];
            }
        }
        removed
    }

    fn remove(&mut self, hash: &Hash256) {
        self.tracker.remove(hash);
        self.mutated.remove(hash);
        self.scores.remove(hash);
        self.batch.remove_shares.push(*hash);
    }
}

fn stored(share: &Share, verified: bool, time_seen: u64) -> StoredShare {
    let (kind, bytes) = match &share.other_txs {
        Some(txs) => (
            StoredKind::Share1b,
            Share1b {
                header: share.header,
                info: share.info.clone(),
                other_txs: txs.clone(),
            }
            .to_bytes(),
        ),
        None => (StoredKind::Share1a, share.to_share1a().to_bytes()),
    };
    StoredShare {
        hash: share.hash,
        kind,
        bytes,
        verified,
        time_seen,
    }
}

fn decode_stored(s: &StoredShare, net: &Network) -> Result<Share, String> {
    let built: Result<Share, ShareError> = match s.kind {
        StoredKind::Share1a => {
            let a = Share1a::from_bytes(&s.bytes, net.rules).map_err(|e| e.to_string())?;
            Share::from_share1a(a, net)
        }
        StoredKind::Share1b => {
            let b = Share1b::from_bytes(&s.bytes, net.rules).map_err(|e| e.to_string())?;
            Share::from_share1b(b, net)
        }
    };
    built.map_err(|e| e.to_string())
}
