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
use super::keyed::{ShareMap, ShareSet};
use super::share::{Share, Share1a, Share1b, ShareError};
use super::tracker::Tracker;
use super::verify::{self, VerifyError};
use crate::store::{Batch, Store, StoreError, StoredKind, StoredShare};

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
/// Unconnected shares dropped per think at most (past the deadline; the rest go in the
/// next thinks).
const EXPIRE_MAX: usize = 500;
/// Missing shares asked for per think at most; the rest wait for the next think.
const WANTED_MAX: usize = 64;
/// Of those, at most this many gaps of one sender.
const WANTED_PER_PEER: usize = 8;

/// Bounds on *unconnected* shares: shares whose chain neither reaches genesis nor holds a
/// verified share, so nothing yet says they belong to the pool's chain (modern-rules.md,
/// node policy). They are never written to the store nor relayed, and they are charged
/// to the peer that sent them until their chain connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unconnected shares one peer may have us hold.
    pub per_peer_shares: usize,
    /// Their bytes in memory (`held_size`: as sent, plus what holding one costs).
    pub per_peer_bytes: usize,
    /// Unconnected shares held from all peers together.
    pub total_shares: usize,
    pub total_bytes: usize,
    /// Seconds the hole below unconnected shares may stay unfilled (the oldest of them
    /// was seen this long ago) before they are dropped and their senders scored.
    pub deadline: u64,
}

impl Limits {
    /// A first sync from a peer holds CHAIN_LENGTH + 1 unconnected shares before its head
    /// can verify, plus one getshares reply in flight: the per-peer count allows that
    /// with a quarter to spare; bytes allow it at about 1.5 KiB a share held plus a few
    /// full block shares.
    pub fn for_network(net: &Network) -> Limits {
        let cl = net.chain_length as usize;
        let per_peer_shares = cl + cl / 4 + 1_000;
        Limits {
            per_peer_shares,
            per_peer_bytes: 40 << 20,
            total_shares: 2 * per_peer_shares,
            total_bytes: 80 << 20,
            deadline: GROWING_KEEP_SECONDS,
        }
    }
}

/// Shares and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub shares: usize,
    pub bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.shares += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        self.shares = self.shares.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The unconnected shares held, with their senders and sizes.
#[derive(Debug, Default)]
struct Unconnected {
    by_hash: ShareMap<(Option<u64>, usize)>,
    by_peer: HashMap<u64, Usage>,
    total: Usage,
    /// When the oldest share held since the set was last empty came: nothing can
    /// expire before this plus the deadline.
    since: Option<u64>,
}

impl Unconnected {
    fn charge(&mut self, hash: Hash256, peer: Option<u64>, bytes: usize, now: u64) {
        if self.by_hash.insert(hash, (peer, bytes)).is_some() {
            return;
        }
        let since = self.since.get_or_insert(now);
        *since = (*since).min(now);
        self.total.add(bytes);
        if let Some(p) = peer {
            self.by_peer.entry(p).or_default().add(bytes);
        }
    }

    fn release(&mut self, hash: &Hash256) -> Option<Option<u64>> {
        let (peer, bytes) = self.by_hash.remove(hash)?;
        self.total.sub(bytes);
        if self.by_hash.is_empty() {
            self.since = None;
        }
        if let Some(p) = peer
            && let Some(u) = self.by_peer.get_mut(&p)
        {
            u.sub(bytes);
            if u.shares == 0 {
                self.by_peer.remove(&p);
            }
        }
        Some(peer)
    }
}

/// What holding one share costs beyond its wire bytes: the decoded share, the tracker's
/// entry and forest node, and the index, head and unconnected map entries (measured: about
/// 1.4 KB a share in all for a 220-byte share1a).
pub const HELD_OVERHEAD: usize = 1_200;

/// The bytes a share is charged while unconnected: its wire size plus [`HELD_OVERHEAD`].
pub fn held_size(share: &Share) -> usize {
    wire_size(share) + HELD_OVERHEAD
}

/// The bytes a share takes on the wire (share1a, or share1b with its transactions).
pub fn wire_size(share: &Share) -> usize {
    let info =
        32 + 4 + 9 + share.info.share_data.nonce.len() + 9 + share.info.new_script.len() + 8 + 36;
    let body = match &share.other_txs {
        Some(txs) => 9 + txs.iter().map(Transaction::total_size).sum::<usize>(),
        None => 9 + 33 * share.merkle_branch.len(),
    };
    80 + info + body
}

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
    /// Fix 5: the transaction list repeats a txid (CVE-2012-2459).
    DuplicateTransaction,
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
            BlockFault::DuplicateTransaction => {
                write!(f, "block lists one transaction twice (a mutated copy)")
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
    let mut txids = Vec::with_capacity(other_txs.len() + 1);
    txids.push(gentx.txid());
    txids.extend(other_txs.iter().map(Transaction::txid));
    if verify::has_duplicate(&txids) {
        return Err(BlockFault::DuplicateTransaction);
    }
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
    /// Not taken: it is unconnected and its sender (`sender: true`) or everyone together
    /// already has as many unconnected shares held as the limits allow. `held` is what
    /// was full.
    OverBudget {
        held: Usage,
        sender: bool,
    },
}

/// What one think did and what the node should do about it.
#[derive(Debug, Default)]
pub struct Think {
    /// The share to mine on.
    pub best: Option<Hash256>,
    /// Missing shares to ask for, each with the peer whose share needs it.
    pub wanted: Vec<(Option<u64>, Hash256)>,
    /// Shares that failed verification and were removed with every descendant, with the
    /// peer that sent each.
    pub bad: Vec<(Hash256, Option<u64>, VerifyError)>,
    /// Unconnected shares dropped because the hole below them stayed unfilled past the
    /// deadline: each sender with how many of its shares went.
    pub expired: Vec<(u64, usize)>,
    /// Verified block shares whose block is whole, each with the share's hash: submit these.
    pub blocks: Vec<(Hash256, Block)>,
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
    limits: Limits,
    unconnected: Unconnected,
    /// When unconnected shares were last checked against the deadline.
    last_expiry: Option<u64>,
    /// Unverified shares in the store: ancestors of verified ones (`write_ancestors`).
    written: ShareSet,
    /// Shares verified in this think, whose unverified ancestors are written at its end.
    just_verified: Vec<Hash256>,
}

impl ShareChain {
    pub fn new(net: Network) -> ShareChain {
        ShareChain {
            tracker: Tracker::new(),
            batch: Batch::default(),
            scores: HashMap::new(),
            mutated: HashSet::new(),
            limits: Limits::for_network(&net),
            unconnected: Unconnected::default(),
            last_expiry: None,
            written: ShareSet::default(),
            just_verified: Vec::new(),
            net,
        }
    }

    /// Replaces the unconnected-share limits (tests and benches use small ones).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Unconnected shares held, in all and from one peer.
    pub fn unconnected(&self) -> Usage {
        self.unconnected.total
    }

    pub fn unconnected_from(&self, peer: u64) -> Usage {
        self.unconnected
            .by_peer
            .get(&peer)
            .copied()
            .unwrap_or_default()
    }

    /// Whether a share may be served to a peer: verified, or an ancestor of a verified
    /// share written with it (the part of a synced chain below the verified window, which
    /// verified shares commit to by hash). Unconnected shares never are. Constant time.
    pub fn is_servable(&self, hash: &Hash256) -> bool {
        self.tracker.is_verified(hash) || self.written.contains(hash)
    }

    /// Whether a held block share is a mutated copy (its block cannot be submitted).
    pub fn is_mutated(&self, hash: &Hash256) -> bool {
        self.mutated.contains(hash)
    }

    /// Whether a held share is unconnected.
    pub fn is_unconnected(&self, hash: &Hash256) -> bool {
        self.unconnected.by_hash.contains_key(hash)
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
            } else {
                chain.written.insert(s.hash);
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

    /// Adds a share from a peer (`peer`) or mined here (`None`), seen at `now`. Nothing
    /// is written to the store until the share verifies.
    pub fn add(&mut self, share: Share, peer: Option<u64>, now: u64) -> Added {
        let hash = share.hash;
        if self.tracker.contains(&hash) {
            if self.mutated.contains(&hash) && share.other_txs.is_some() {
                return self.replace_mutated(share);
            }
            return Added::Known;
        }
        // Connected: it starts a chain at genesis, its parent is held and connected, or
        // it is the missing parent of a connected chain (a sync reaching further back).
        let connected = match share.previous_hash() {
            None => true,
            Some(p) => self.tracker.contains(&p) && !self.unconnected.by_hash.contains_key(&p),
        } || self
            .tracker
            .all()
            .waiting(&hash)
            .iter()
            .any(|t| !self.unconnected.by_hash.contains_key(t));
        if !connected {
            let bytes = held_size(&share);
            let l = self.limits;
            let total = self.unconnected.total;
            let held = peer.map_or(total, |p| self.unconnected_from(p));
            let over = |u: Usage, shares: usize, max_bytes: usize| {
                u.shares + 1 > shares || u.bytes + bytes > max_bytes
            };
            if peer.is_some() && over(held, l.per_peer_shares, l.per_peer_bytes) {
                return Added::OverBudget { held, sender: true };
            }
            if over(total, l.total_shares, l.total_bytes) {
                return Added::OverBudget {
                    held: total,
                    sender: false,
                };
            }
            self.unconnected.charge(hash, peer, bytes, now);
        }
        self.tracker.add(share, now, peer);
        if connected {
            // The tails that waited for this share are connected now, with all above them;
            // and so is the held chain below it, if it came to fill a gap under a connected
            // chain (its component's unconnected part starts at the component's tail).
            for child in self.tracker.children(&hash) {
                self.connect_from(child);
            }
            if let Some(tail) = self.tracker.all().tail(&hash) {
                self.connect_from(tail);
            }
        }
        Added::New
    }

    /// Releases the unconnected shares of the subtree at `root` (their chain connects).
    fn connect_from(&mut self, root: Hash256) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if self.unconnected.release(&h).is_some() {
                stack.extend(self.tracker.children(&h));
            }
        }
    }

    /// Every share of the subtree at `root`, `root` first.
    fn subtree(&self, root: Hash256) -> Vec<Hash256> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if self.tracker.contains(&h) {
                out.push(h);
                stack.extend(self.tracker.children(&h));
            }
        }
        out
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
        if share.is_block() {
            let generated = verify::check(&self.tracker, &self.net, share, now)?;
            match assemble_block(share, &generated.tx, self.net.rules) {
                Ok(block) => out.blocks.push((hash, block)),
                Err(fault) => {
                    warn!(target: "sharechain", "block share {hash} kept but not submitted: {fault}");
                    self.mutated.insert(hash);
                }
            }
        } else {
            // Only a block needs the transaction itself.
            verify::check_id(&self.tracker, &self.net, share, now)?;
        }
        let record = stored(
            share,
            true,
            self.tracker.entry(&hash).map_or(0, |e| e.time_seen),
        );
        self.tracker.mark_verified(hash);
        self.batch.put_shares.push(record);
        self.written.remove(&hash);
        self.just_verified.push(hash);
        if self.unconnected.by_hash.contains_key(&hash)
            && let Some(tail) = self.tracker.all().tail(&hash)
        {
            // A verified share anchors its whole chain.
            self.connect_from(tail);
        }
        out.verified += 1;
        Ok(())
    }

    /// Writes the unverified ancestors of a share that just verified, down to a verified
    /// or already written one: the part of a synced chain below the verified window, which
    /// the verified share commits to by hash (R never verifies it either). Each is written
    /// once, so this walks a chain once.
    fn write_ancestors(&mut self, verified: Hash256) {
        let mut cur = self.tracker.all().parent(&verified);
        while let Some(h) = cur {
            if self.tracker.is_verified(&h) || self.written.contains(&h) {
                break;
            }
            let Some(e) = self.tracker.entry(&h) else {
                break;
            };
            self.batch
                .put_shares
                .push(stored(&e.share, false, e.time_seen));
            self.written.insert(h);
            cur = self.tracker.all().parent(&h);
        }
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
        // A head over a gap with no more than CHAIN_LENGTH shares below it cannot be
        // tried: it only wants its missing ancestor. Those are most of what a flood of
        // unconnected shares makes, so they are only collected here, and just the
        // tallest few are asked for (an honest sync builds tall chains, junk short ones).
        let mut heads: Vec<Hash256> = Vec::new();
        // (height, sender of the head, missing parent)
        let mut gaps: Vec<(u32, Option<u64>, Hash256)> = Vec::new();
        {
            let all = self.tracker.all();
            let verified_heads = self.tracker.verified().heads();
            for head in all.head_views() {
                match head.last {
                    Some(last) if head.height <= cl => {
                        gaps.push((head.height, head.value.peer, last))
                    }
                    _ if verified_heads.contains(&head.hash) => {}
                    _ => heads.push(head.hash),
                }
            }
        }
        if gaps.len() > WANTED_MAX {
            // Tallest first, but at most WANTED_PER_PEER per sender, so that one peer's
            // junk cannot starve an honest relayer's gap.
            gaps.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
            let mut per_peer: HashMap<Option<u64>, usize> = HashMap::new();
            let mut kept = Vec::with_capacity(WANTED_MAX);
            for gap in gaps {
                let n = per_peer.entry(gap.1).or_default();
                if *n < WANTED_PER_PEER {
                    *n += 1;
                    kept.push(gap);
                    if kept.len() == WANTED_MAX {
                        break;
                    }
                }
            }
            gaps = kept;
        }
        out.wanted
            .extend(gaps.into_iter().map(|(_, peer, last)| (peer, last)));
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
                        // Failed: it goes with every descendant (below); go on down,
                        // as R does, for a share that verifies.
                        debug!(target: "sharechain", "{e}");
                        // A timestamp ahead of our clock condemns only a head (R's rule):
                        // the shares above it may be honest, and our clock may be behind.
                        if !e.is_missing_history() && (!e.is_timing() || hash == head) {
                            bads.push((hash, e));
                        }
                    }
                }
            }
            if !any && let Some(last) = last {
                out.wanted.push((self.peer_of_child(&last, false), last));
            }
        }
        // Deepest first: one removal takes every bad share above it too.
        for (hash, e) in bads.into_iter().rev() {
            self.remove_bad(hash, e, &mut out);
        }
        self.expire_unconnected(now, &mut out);

        // 2. Verified heads: extend verification down to CHAIN_LENGTH shares.
        let mut vheads: Vec<Hash256> = self.tracker.verified().heads().iter().copied().collect();
        vheads.sort();
        for head in vheads {
            if !self.tracker.contains(&head) {
                continue; // removed above a bad share this think
            }
            let (head_height, last_hash) = self.tracker.verified().height_and_last(Some(head));
            let (last_height, last_last) = self.tracker.height_and_last(last_hash);
            // Down to CHAIN_LENGTH verified shares, as R; and further, where the shares
            // below are known and a verified share is within CHAIN_LENGTH of them: a run of
            // more than CHAIN_LENGTH shares that came at once above a verified chain would
            // otherwise stand as a tree of its own over a gap nobody verifies, and the
            // older, taller tree would keep winning the ranking.
            let want = cl
                .saturating_sub(head_height)
                .max(self.gap_to_verified(last_hash, cl));
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
                    // A share below verified ones that fails takes them with it (R left
                    // a verified chain standing on an invalid share).
                    if !e.is_missing_history() && !e.is_timing() {
                        self.remove_bad(hash, e, &mut out);
                    }
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
        out.wanted.truncate(WANTED_MAX);
        // After every verification of this think, so that only the chain below the lowest
        // verified share is walked.
        for hash in std::mem::take(&mut self.just_verified) {
            if self.tracker.contains(&hash) {
                self.write_ancestors(hash);
            }
        }
        out
    }

    /// How many unverified shares lie from `start` down to a verified head below it (a
    /// verified tree this one stands on over a gap), if one is within `limit` (else 0).
    /// Only verified heads lower in the same tree of known shares are walked to: none in
    /// the usual case, so a think pays nothing for it.
    fn gap_to_verified(&self, start: Option<Hash256>, limit: u32) -> u32 {
        let all = self.tracker.all();
        let Some(start) = start.filter(|s| all.contains(s)) else {
            return 0;
        };
        let (top, tail) = (all.height(&start), all.tail(&start));
        for head in self.tracker.verified().heads().iter() {
            if !all.contains(head) || all.tail(head) != tail {
                continue;
            }
            let below = top.saturating_sub(all.height(head));
            if (1..=limit).contains(&below) && all.nth_parent(start, below) == Some(*head) {
                return below;
            }
        }
        0
    }

    /// Removes a share that failed verification with every descendant, at once.
    fn remove_bad(&mut self, hash: Hash256, e: VerifyError, out: &mut Think) {
        if !self.tracker.contains(&hash) {
            return; // under another bad share, already gone
        }
        let peer = self.tracker.entry(&hash).and_then(|e| e.peer);
        let doomed = self.subtree(hash);
        warn!(
            target: "sharechain",
            "removing invalid share and its {} descendants: {e}",
            doomed.len() - 1
        );
        for h in doomed.iter().rev() {
            self.remove(h);
        }
        out.bad.push((hash, peer, e));
    }

    /// Drops unconnected chains whose hole stayed unfilled past the deadline: the whole
    /// chain above the hole, each sender counted.
    fn expire_unconnected(&mut self, now: u64, out: &mut Think) {
        if self.unconnected.by_hash.is_empty() {
            return;
        }
        let deadline = self.limits.deadline;
        if self
            .unconnected
            .since
            .is_some_and(|t| now < t.saturating_add(deadline))
        {
            return; // none held long enough yet
        }
        // A scan walks every head: once in a quarter of the deadline is enough.
        let every = (deadline / 4).max(1);
        if self
            .last_expiry
            .is_some_and(|t| now < t.saturating_add(every))
        {
            return;
        }
        self.last_expiry = Some(now);
        let expired = |seen: u64| seen.saturating_add(deadline) <= now;
        // Unconnected chains stand over a gap; the cheap tests first, and no more heads
        // than one think drops.
        let mut heads: Vec<Hash256> = self
            .tracker
            .all()
            .head_views()
            .filter(|h| h.last.is_some())
            .filter(|h| {
                if h.tail == h.hash {
                    expired(h.value.time_seen) // a lone share: no second lookup
                } else {
                    self.tracker
                        .entry(&h.tail)
                        .is_some_and(|e| expired(e.time_seen))
                }
            })
            .filter(|h| self.unconnected.by_hash.contains_key(&h.hash))
            .map(|h| h.hash)
            .take(EXPIRE_MAX + 1)
            .collect();
        if heads.len() > EXPIRE_MAX {
            heads.truncate(EXPIRE_MAX);
            self.last_expiry = None; // the rest at the next think
        }
        // From the heads down, newest first: each removal takes a share nobody builds
        // on (nothing to relink), a parent goes once its last child has, and a chain cut
        // short here keeps its old tail and goes on at the next think. A component is
        // all unconnected or all connected (`add`), so no connected share is touched.
        let mut by_peer: HashMap<u64, usize> = HashMap::new();
        let mut dropped = 0usize;
        while let Some(h) = heads.pop() {
            if dropped >= EXPIRE_MAX {
                self.last_expiry = None;
                break;
            }
            let Some(&(peer, _)) = self.unconnected.by_hash.get(&h) else {
                continue;
            };
            if let Some(p) = peer {
                *by_peer.entry(p).or_default() += 1;
            }
            let parent = self.tracker.get(&h).and_then(Share::previous_hash);
            self.remove(&h);
            dropped += 1;
            self.push_if_unconnected_head(parent, &mut heads);
        }
        if dropped > 0 {
            info!(
                target: "sharechain",
                "dropped {dropped} unconnected shares: nobody filled the gap below them in {deadline} s"
            );
        }
        let mut expired: Vec<(u64, usize)> = by_peer.into_iter().collect();
        expired.sort();
        out.expired = expired;
    }

    /// Pushes `parent` if it is unconnected and, its children gone, a head now.
    fn push_if_unconnected_head(&self, parent: Option<Hash256>, heads: &mut Vec<Hash256>) {
        if let Some(p) = parent
            && self.unconnected.by_hash.contains_key(&p)
            && self.tracker.all().heads().contains(&p)
        {
            heads.push(p);
        }
    }

    /// Forgets the heads' cached scores (a block height they read was unknown then).
    pub fn forget_scores(&mut self) {
        self.scores.clear();
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
            // Newest share waiting on each missing parent, computed once per prune: many
            // heads can wait on one hole, and asking per head would be quadratic.
            let mut growing: HashMap<Hash256, bool> = HashMap::new();
            for _ in 0..TRIM_PASSES {
                let mut doomed = Vec::new();
                for head in self.tracker.all().head_views() {
                    if head.value.time_seen + HEAD_KEEP_SECONDS > now || top.contains(&head.hash) {
                        continue;
                    }
                    if !self.tracker.is_verified(&head.hash)
                        && self.tail_grew_recently(&head.hash, now, &mut growing)
                    {
                        continue;
                    }
                    doomed.push(head.hash);
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
    fn tail_grew_recently(
        &self,
        head: &Hash256,
        now: u64,
        memo: &mut HashMap<Hash256, bool>,
    ) -> bool {
        let all = self.tracker.all();
        let Some(tail) = all.tail(head) else {
            return false;
        };
        let missing = self.tracker.get(&tail).and_then(Share::previous_hash);
        let key = missing.unwrap_or(tail);
        if let Some(&grew) = memo.get(&key) {
            return grew;
        }
        // The shares just above the missing parent: the tails that wait for it.
        let waiting = match missing {
            Some(missing) => all.waiting(&missing),
            None => vec![tail],
        };
        let newest = waiting
            .iter()
            .filter_map(|c| self.tracker.entry(c))
            .map(|e| e.time_seen)
            .max()
            .unwrap_or(0);
        let grew = newest + GROWING_KEEP_SECONDS > now;
        memo.insert(key, grew);
        grew
    }

    /// Removes shares from the bottom of each chain whose every head is at least
    /// 2×CHAIN_LENGTH+10 high, never at a fork.
    fn trim_tails(&mut self) -> usize {
        let keep = 2 * u64::from(self.net.chain_length) + 10;
        let all = self.tracker.all();
        // The shortest and tallest head of each component big enough to hold a head
        // that tall (no head is taller than its component): one pass, and the heads of
        // small components (a flood's unconnected shares) cost nothing more.
        let mut span: ShareMap<(u32, u32)> = ShareMap::default();
        for head in all.head_views() {
            if u64::from(head.comp_size) >= keep {
                let e = span.entry(head.tail).or_insert((u32::MAX, 0));
                *e = (e.0.min(head.height), e.1.max(head.height));
            }
        }
        // Trimmed only below a component with a head tall enough; the shortest head
        // says how far (a fork must not lose its base).
        let lowest: Vec<(Hash256, u32)> = span
            .into_iter()
            .filter(|(_, (_, max))| u64::from(*max) >= keep)
            .map(|(tail, (min, _))| (tail, min))
            .collect();
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
        let was_unconnected = self.unconnected.release(hash).is_some();
        self.written.remove(hash);
        self.tracker.remove(hash);
        self.mutated.remove(hash);
        self.scores.remove(hash);
        if !was_unconnected {
            // Unconnected shares were never written.
            self.batch.remove_shares.push(*hash);
        }
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
