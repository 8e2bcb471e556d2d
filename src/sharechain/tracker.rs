//! The share tracker: every known share by hash, and the verified subset, each a
//! [`Forest`] (heights, first unknown ancestor, nth parent and cumulative work without
//! walking the chain), plus the payout-weight windows of §5.2.
//!
//! A weight window is the run of shares that pays a generation transaction. Windows are
//! remembered for the last few starting shares, and a share's window is derived from its
//! parent's: one share in at the top, a few out at the bottom. So verifying a share on
//! top of the last one costs a handful of map updates instead of a walk of CHAIN_LENGTH.
//!
//! Scoring a head (§6.4) reads the Bitcoin block of every share in a stretch of up to
//! CHAIN_LENGTH shares that starts CHAIN_LENGTH/2 below it. The path from a head down
//! through that stretch is remembered the same way (`Tracker::block_runs`): a new head on
//! top of the last moves the stretch by one share at each end.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use ruint::aliases::U512;

use crate::bitcoin::hash::Hash256;
use crate::bitcoin::tx::Transaction;

use super::forest::{Forest, Idx};
use super::gentx::script_key;
use super::share::Share;

/// Windows remembered (each a few tens of kilobytes at CHAIN_LENGTH 17280).
const WINDOW_CACHE: usize = 8;
/// Paths below heads remembered for scoring (each about 100 KB at CHAIN_LENGTH 17280):
/// one per verified tree a think scores, and a few trees at most compete.
const PATH_CACHE: usize = 4;
/// Lines of ancestors remembered for the retarget (TARGET_LOOKBEHIND shares each).
const LINE_CACHE: usize = 4;

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
    /// The payout script's number in the tracker's script table.
    script: u32,
}

/// Payout scripts by number, counted by the shares that use them.
#[derive(Debug, Default)]
struct Scripts {
    ids: HashMap<Vec<u8>, u32>,
    table: Vec<(ScriptBuf, u32)>,
    free: Vec<u32>,
}

/// Bytes of a script kept inline (every standard template but P2PK with an uncompressed
/// key fits).
const INLINE_SCRIPT: usize = 38;

/// A script's bytes, inline when short: the table is then one block of memory, and
/// writing a generation transaction's 200 outputs reads it in order instead of
/// following 200 pointers to as many allocations.
#[derive(Debug, Clone)]
enum ScriptBuf {
    Inline { len: u8, bytes: [u8; INLINE_SCRIPT] },
    Heap(Vec<u8>),
}

impl Default for ScriptBuf {
    fn default() -> ScriptBuf {
        ScriptBuf::Inline {
            len: 0,
            bytes: [0; INLINE_SCRIPT],
        }
    }
}

impl ScriptBuf {
    fn new(script: &[u8]) -> ScriptBuf {
        match u8::try_from(script.len()) {
            Ok(len) if script.len() <= INLINE_SCRIPT => {
                let mut bytes = [0; INLINE_SCRIPT];
                bytes[..script.len()].copy_from_slice(script);
                ScriptBuf::Inline { len, bytes }
            }
            _ => ScriptBuf::Heap(script.to_vec()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            ScriptBuf::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            ScriptBuf::Heap(v) => v,
        }
    }
}

impl Scripts {
    fn intern(&mut self, script: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(script) {
            self.table[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.table[id as usize] = (ScriptBuf::new(script), 1);
                id
            }
            None => {
                self.table.push((ScriptBuf::new(script), 1));
                (self.table.len() - 1) as u32
            }
        };
        self.ids.insert(script.to_vec(), id);
        id
    }

    fn release(&mut self, id: u32) {
        let slot = &mut self.table[id as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            let script = std::mem::take(&mut slot.0);
            self.ids.remove(script.as_slice());
            self.free.push(id);
        }
    }

    fn bytes(&self, id: u32) -> &[u8] {
        self.table[id as usize].0.as_slice()
    }
}

/// A weight as a window keeps it: `u128` for any real chain (2^128 hashes is far more
/// than all of Bitcoin's work), `U512` should a window's total pass that.
pub(super) trait Weight: Copy + Default + Ord + std::fmt::Debug {
    /// `a` in this width, `None` if it does not fit.
    fn of(a: U512) -> Option<Self>;
    fn wide(self) -> U512;
    /// `None` if the sum does not fit.
    fn plus(self, other: Self) -> Option<Self>;
    /// `other` is at most `self` (a window takes out only what it put in).
    fn minus(self, other: Self) -> Self;
    fn is_zero(self) -> bool;
    /// `Some` whenever the width is 128 bits.
    fn as_u128(self) -> Option<u128>;
}

impl Weight for u128 {
    fn of(a: U512) -> Option<u128> {
        u128::try_from(a).ok()
    }
    fn wide(self) -> U512 {
        U512::from(self)
    }
    fn plus(self, other: u128) -> Option<u128> {
        self.checked_add(other)
    }
    fn minus(self, other: u128) -> u128 {
        self.wrapping_sub(other)
    }
    fn is_zero(self) -> bool {
        self == 0
    }
    fn as_u128(self) -> Option<u128> {
        Some(self)
    }
}

impl Weight for U512 {
    fn of(a: U512) -> Option<U512> {
        Some(a)
    }
    fn wide(self) -> U512 {
        self
    }
    /// Never `None`: a window holds at most 2^32 shares of at most 2^256 attempts each.
    fn plus(self, other: U512) -> Option<U512> {
        Some(self.wrapping_add(other))
    }
    fn minus(self, other: U512) -> U512 {
        self.wrapping_sub(other)
    }
    fn is_zero(self) -> bool {
        U512::is_zero(&self)
    }
    fn as_u128(self) -> Option<u128> {
        None
    }
}

/// A weight did not fit the window's width.
#[derive(Debug)]
struct Overflow;

/// Shares paying a generation transaction, newest first, with per-script sums.
#[derive(Debug, Clone, Default)]
struct Window<W> {
    /// Fully credited shares; the front is the window's start.
    shares: VecDeque<Idx>,
    full_total: W,
    /// The boundary share, credited in part.
    partial: Option<(Idx, W)>,
    /// The credited scripts in the order of their bytes, which is the order of the
    /// outputs that pay them: a generation transaction then needs no sort.
    weights: Vec<Credit<W>>,
}

/// One script's part of a window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Credit<W> {
    /// `script_key` of its bytes, compared before them.
    pub(super) key: u64,
    /// Its number in the tracker's script table.
    pub(super) script: u32,
    /// Credited shares (the script leaves the window at 0).
    shares: u32,
    pub(super) weight: W,
}

impl<W: Weight> Window<W> {
    fn attempts(all: &Forest<Entry>, i: Idx) -> Result<W, Overflow> {
        W::of(all.attempts_of(i)).ok_or(Overflow)
    }

    /// Where `script` is in `weights`, or where it would go.
    fn find(&self, scripts: &Scripts, script: u32) -> (u64, Result<usize, usize>) {
        let bytes = scripts.bytes(script);
        let key = script_key(bytes);
        let at = self.weights.binary_search_by(|c| {
            c.key
                .cmp(&key)
                .then_with(|| scripts.bytes(c.script).cmp(bytes))
        });
        (key, at)
    }

    fn credit(&mut self, scripts: &Scripts, script: u32, amount: W) -> Result<(), Overflow> {
        match self.find(scripts, script) {
            (_, Ok(k)) => {
                let c = &mut self.weights[k];
                c.weight = c.weight.plus(amount).ok_or(Overflow)?;
                c.shares += 1;
            }
            (key, Err(k)) => self.weights.insert(
                k,
                Credit {
                    key,
                    script,
                    shares: 1,
                    weight: amount,
                },
            ),
        }
        Ok(())
    }

    fn debit(&mut self, scripts: &Scripts, script: u32, amount: W) {
        if let (_, Ok(k)) = self.find(scripts, script) {
            let c = &mut self.weights[k];
            c.weight = c.weight.minus(amount);
            c.shares -= 1;
            if c.shares == 0 {
                self.weights.remove(k);
            }
        }
    }

    fn pop_back(&mut self, all: &Forest<Entry>, scripts: &Scripts) -> Result<(), Overflow> {
        if let Some(i) = self.shares.pop_back() {
            let a = Self::attempts(all, i)?;
            self.full_total = self.full_total.minus(a);
            self.debit(scripts, all.value_of(i).script, a);
        }
        Ok(())
    }

    /// Moves the window from the start it has to `start`, its child or parent (`parent`
    /// is `start`'s), then fits it (below).
    fn update(
        &mut self,
        all: &Forest<Entry>,
        scripts: &Scripts,
        start: Idx,
        parent: Option<Idx>,
        max_shares: u32,
        desired: Option<U512>,
    ) -> Result<(), Overflow> {
        if let Some(&front) = self.shares.front()
            && front != start
        {
            if Some(front) == parent {
                let a = Self::attempts(all, start)?;
                self.shares.push_front(start);
                self.full_total = self.full_total.plus(a).ok_or(Overflow)?;
                self.credit(scripts, all.value_of(start).script, a)?;
            } else {
                self.shares.pop_front();
                let a = Self::attempts(all, front)?;
                self.full_total = self.full_total.minus(a);
                self.debit(scripts, all.value_of(front).script, a);
            }
        }
        // A `desired` beyond this width is beyond every total it holds: no bound.
        let desired = desired.and_then(W::of);
        self.fit(all, scripts, start, max_shares, desired)
    }

    /// Reshapes the window to start at its front and follow the walk of §5.2: up to
    /// `max_shares` shares, stopping at `desired` weight with partial credit for the
    /// share that crosses it.
    fn fit(
        &mut self,
        all: &Forest<Entry>,
        scripts: &Scripts,
        start: Idx,
        max_shares: u32,
        desired: Option<W>,
    ) -> Result<(), Overflow> {
        if let Some((i, a)) = self.partial.take() {
            self.debit(scripts, all.value_of(i).script, a);
        }
        let max = max_shares as usize;
        while self.shares.len() > max {
            self.pop_back(all, scripts)?;
        }
        if let Some(d) = desired {
            while self.full_total > d {
                self.pop_back(all, scripts)?;
            }
            // A share is credited only while the total is below `desired`.
            while self.full_total == d
                && self
                    .shares
                    .back()
                    .is_some_and(|&i| all.attempts_of(i).is_zero())
            {
                self.pop_back(all, scripts)?;
            }
        }
        while self.shares.len() < max {
            if desired.is_some_and(|d| self.full_total >= d) {
                break;
            }
            let next = match self.shares.back() {
                Some(&b) => all.parent_idx(b),
                None => Some(start),
            };
            let Some(next) = next else { break };
            let a = Self::attempts(all, next)?;
            let script = all.value_of(next).script;
            // A sum past this width is past a `desired` within it.
            let sum = self.full_total.plus(a);
            if let Some(d) = desired
                && sum.is_none_or(|s| s > d)
            {
                let part = d.minus(self.full_total);
                self.partial = Some((next, part));
                self.credit(scripts, script, part)?;
                break;
            }
            self.shares.push_back(next);
            self.full_total = sum.ok_or(Overflow)?;
            self.credit(scripts, script, a)?;
        }
        Ok(())
    }

    fn total(&self) -> U512 {
        self.full_total.wide() + self.partial.map_or(U512::ZERO, |(_, a)| a.wide())
    }

    fn touches(&self, i: Idx) -> bool {
        self.shares.front() == Some(&i)
            || self.shares.back() == Some(&i)
            || self.partial.is_some_and(|(p, _)| p == i)
    }
}

impl Window<U512> {
    /// The same window in 128 bits, if its total fits (then every weight does).
    fn narrowed(&self) -> Option<Window<u128>> {
        u128::try_from(self.total()).ok()?;
        let narrow = |a: U512| u128::try_from(a).unwrap_or(u128::MAX);
        Some(Window {
            shares: self.shares.clone(),
            full_total: narrow(self.full_total),
            partial: self.partial.map(|(i, a)| (i, narrow(a))),
            weights: self
                .weights
                .iter()
                .map(|c| Credit {
                    key: c.key,
                    script: c.script,
                    shares: c.shares,
                    weight: narrow(c.weight),
                })
                .collect(),
        })
    }
}

/// A remembered window, in the width its weights need.
#[derive(Debug, Clone)]
enum Cached {
    Narrow(Window<u128>),
    Wide(Window<U512>),
}

impl Default for Cached {
    fn default() -> Cached {
        Cached::Narrow(Window::default())
    }
}

impl Cached {
    fn front(&self) -> Option<Idx> {
        match self {
            Cached::Narrow(w) => w.shares.front().copied(),
            Cached::Wide(w) => w.shares.front().copied(),
        }
    }

    fn touches(&self, i: Idx) -> bool {
        match self {
            Cached::Narrow(w) => w.touches(i),
            Cached::Wide(w) => w.touches(i),
        }
    }
}

/// The weights of a payout window, borrowed from the tracker: every credited script once
/// (even at weight 0), in the order of the scripts' bytes, and the total.
///
/// The window is the tracker's remembered one, checked out: dropping this gives it back,
/// so that the next share's window is derived from it.
#[derive(Clone)]
pub struct WindowWeights<'t> {
    tracker: &'t Tracker,
    window: Cached,
}

impl<'t> WindowWeights<'t> {
    /// The sum of the weights.
    pub fn total(&self) -> U512 {
        match &self.window {
            Cached::Narrow(w) => w.total(),
            Cached::Wide(w) => w.total(),
        }
    }

    /// The number of credited scripts.
    pub fn len(&self) -> usize {
        match &self.window {
            Cached::Narrow(w) => w.weights.len(),
            Cached::Wide(w) => w.weights.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th script and its weight.
    pub fn get(&self, k: usize) -> Option<(&'t [u8], U512)> {
        let (script, weight) = match &self.window {
            Cached::Narrow(w) => w.weights.get(k).map(|c| (c.script, c.weight.wide()))?,
            Cached::Wide(w) => w.weights.get(k).map(|c| (c.script, c.weight))?,
        };
        Some((self.bytes(script), weight))
    }

    /// Each credited script and its weight, in the order of the scripts' bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&'t [u8], U512)> + '_ {
        (0..self.len()).filter_map(|k| self.get(k))
    }

    /// The credits when every weight fits 128 bits (any real chain), else `None`.
    pub(super) fn narrow(&self) -> Option<&[Credit<u128>]> {
        match &self.window {
            Cached::Narrow(w) => Some(&w.weights),
            Cached::Wide(_) => None,
        }
    }

    /// The credits in 512 bits, when they need it.
    pub(super) fn wide(&self) -> Option<&[Credit<U512>]> {
        match &self.window {
            Cached::Narrow(_) => None,
            Cached::Wide(w) => Some(&w.weights),
        }
    }

    /// The bytes of the script numbered `script` (a credit's).
    pub(super) fn bytes(&self, script: u32) -> &'t [u8] {
        self.tracker.scripts.bytes(script)
    }
}

impl std::fmt::Debug for WindowWeights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowWeights")
            .field("weights", &self.iter().collect::<Vec<_>>())
            .field("total", &self.total())
            .finish()
    }
}

impl PartialEq for WindowWeights<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.total() == other.total() && self.iter().eq(other.iter())
    }
}

impl Eq for WindowWeights<'_> {}

impl Drop for WindowWeights<'_> {
    fn drop(&mut self) {
        let Some(front) = self.window.front() else {
            return;
        };
        let Ok(mut windows) = self.tracker.windows.try_borrow_mut() else {
            return;
        };
        windows.retain(|w| w.front() != Some(front));
        if windows.len() >= WINDOW_CACHE {
            windows.pop_front();
        }
        windows.push_back(std::mem::take(&mut self.window));
    }
}

/// Consecutive shares building on one Bitcoin block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRun {
    /// The block they build on (`previous_block` of their headers).
    pub block: Hash256,
    pub shares: u32,
    /// Their total expected hashes.
    pub work: U512,
}

/// The ancestors of one share, with the block runs of a stretch of them.
#[derive(Debug, Default)]
struct Path {
    /// The share, then its parent, and so on: `path[j]` is its `j`-th ancestor.
    path: VecDeque<Idx>,
    /// The stretch `path[from..to]` that `runs` covers.
    from: usize,
    to: usize,
    /// Newest first; no run is empty and neighbours build on different blocks.
    runs: VecDeque<BlockRun>,
}

impl Path {
    fn run_of(all: &Forest<Entry>, i: Idx) -> BlockRun {
        BlockRun {
            block: all.value_of(i).share.header.previous_block,
            shares: 1,
            work: all.attempts_of(i),
        }
    }

    /// Adds `path[j]` as the newest share of the stretch (`front`) or the oldest.
    fn push(&mut self, all: &Forest<Entry>, j: usize, front: bool) {
        let share = Path::run_of(all, self.path[j]);
        let end = if front {
            self.runs.front_mut()
        } else {
            self.runs.back_mut()
        };
        match end {
            Some(run) if run.block == share.block => {
                run.shares += 1;
                run.work += share.work;
            }
            _ if front => self.runs.push_front(share),
            _ => self.runs.push_back(share),
        }
    }

    /// Takes `path[j]`, the newest share of the stretch (`front`) or the oldest, out.
    fn pop(&mut self, all: &Forest<Entry>, j: usize, front: bool) {
        let share = Path::run_of(all, self.path[j]);
        let end = if front {
            self.runs.front_mut()
        } else {
            self.runs.back_mut()
        };
        let Some(run) = end else { return };
        run.shares -= 1;
        run.work -= share.work;
        if run.shares == 0 {
            if front {
                self.runs.pop_front();
            } else {
                self.runs.pop_back();
            }
        }
    }

    /// Moves the stretch to `path[from..to]`, share by share at each end when the two
    /// overlap, else anew.
    fn cover(&mut self, all: &Forest<Entry>, from: usize, to: usize) {
        if from >= self.to || to <= self.from {
            self.runs.clear();
            (self.from, self.to) = (from, from);
        }
        while self.from > from {
            self.from -= 1;
            self.push(all, self.from, true);
        }
        while self.from < from {
            self.pop(all, self.from, true);
            self.from += 1;
        }
        while self.to < to {
            self.push(all, self.to, false);
            self.to += 1;
        }
        while self.to > to {
            self.to -= 1;
            self.pop(all, self.to, false);
        }
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    all: Forest<Entry>,
    verified: Forest<()>,
    scripts: Scripts,
    windows: RefCell<VecDeque<Cached>>,
    paths: RefCell<VecDeque<Path>>,
    /// A share and its ancestors, `line[j]` its `j`-th (`Tracker::nth_parent_with_work`).
    lines: RefCell<VecDeque<VecDeque<Idx>>>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn contains(&self, hash: &Hash256) -> bool {
        self.all.contains(hash)
    }

    pub fn get(&self, hash: &Hash256) -> Option<&Share> {
        self.all.get(hash).map(|e| &e.share)
    }

    pub fn entry(&self, hash: &Hash256) -> Option<&Entry> {
        self.all.get(hash)
    }

    /// All known shares.
    pub fn all(&self) -> &Forest<Entry> {
        &self.all
    }

    /// The shares that passed verification.
    pub fn verified(&self) -> &Forest<()> {
        &self.verified
    }

    /// Adds a share; `false` if it was already known.
    pub fn add(&mut self, share: Share, time_seen: u64, peer: Option<u64>) -> bool {
        if self.all.contains(&share.hash) {
            return false;
        }
        let attempts = share.info.share_data.target.average_attempts();
        let script = self.scripts.intern(&share.info.new_script);
        let (hash, prev) = (share.hash, share.previous_hash());
        self.all.insert(
            hash,
            prev,
            attempts,
            Entry {
                share,
                attempts,
                time_seen,
                peer,
                script,
            },
        )
    }

    /// Removes a share (pruning, or a head that failed verification).
    pub fn remove(&mut self, hash: &Hash256) -> Option<Entry> {
        let i = self.all.idx(hash)?;
        let middle = self.all.parent_idx(i).is_some() && !self.all.children(hash).is_empty();
        {
            let mut windows = self.windows.borrow_mut();
            if middle {
                windows.clear();
            } else {
                windows.retain(|w| !w.touches(i));
            }
            // A path runs through parent links: only its first share can be a head and
            // only its last a tail.
            let mut paths = self.paths.borrow_mut();
            let mut lines = self.lines.borrow_mut();
            if middle {
                paths.clear();
                lines.clear();
            } else {
                paths.retain(|p| p.path.front() != Some(&i) && p.path.back() != Some(&i));
                lines.retain(|l| l.front() != Some(&i) && l.back() != Some(&i));
            }
        }
        self.verified.remove(hash);
        let entry = self.all.remove(hash)?;
        self.scripts.release(entry.script);
        Some(entry)
    }

    /// Swaps a block share's transactions for another copy's (same IDs, other witnesses).
    pub fn replace_transactions(&mut self, hash: &Hash256, other_txs: Option<Vec<Transaction>>) {
        if let Some(e) = self.all.get_mut(hash) {
            e.share.other_txs = other_txs;
        }
    }

    pub fn children(&self, hash: &Hash256) -> Vec<Hash256> {
        self.all.children(hash)
    }

    /// Known shares from `start` back through known parents, `start` first.
    pub fn chain(&self, start: Option<Hash256>) -> impl Iterator<Item = &Entry> + '_ {
        self.all.chain(start).map(|(_, e)| e)
    }

    /// The number of known shares from `start` back, and the first unknown ancestor
    /// (`None` when the chain reaches genesis).
    pub fn height_and_last(&self, start: Option<Hash256>) -> (u32, Option<Hash256>) {
        self.all.height_and_last(start)
    }

    /// The ancestor `n` generations above `hash` (`n = 0` is `hash` itself), if known.
    pub fn nth_parent(&self, hash: Hash256, n: u32) -> Option<Hash256> {
        self.all.nth_parent(hash, n)
    }

    /// [`Forest::nth_parent_with_work`] over all shares: the ancestor `n` generations
    /// above `hash` and the attempts of the `n` shares from `hash` down to it.
    ///
    /// The line of ancestors is remembered, so for a share on top of (or below) one
    /// asked about before this reads a share or two, not a walk of `n` (each step a
    /// cache miss: the retarget asks for TARGET_LOOKBEHIND − 1 on every share).
    pub fn nth_parent_with_work(&self, hash: &Hash256, n: u32) -> Option<(&Entry, U512)> {
        let all = &self.all;
        let i = all.idx(hash)?;
        if n >= all.height_of(i) {
            return None;
        }
        let Ok(mut lines) = self.lines.try_borrow_mut() else {
            return all.nth_parent_with_work(hash, n);
        };
        let parent = all.parent_idx(i);
        let found = lines
            .iter()
            .position(|l| l.front() == Some(&i))
            .or_else(|| parent.and_then(|p| lines.iter().position(|l| l.front() == Some(&p))))
            .or_else(|| lines.iter().position(|l| l.get(1) == Some(&i)));
        let mut line = found.and_then(|k| lines.remove(k)).unwrap_or_default();
        match line.front() {
            Some(&f) if f == i => {}
            Some(&f) if Some(f) == parent => line.push_front(i),
            Some(_) if line.get(1) == Some(&i) => {
                line.pop_front();
            }
            _ => {
                line.clear();
                line.push_back(i);
            }
        }
        let n = n as usize;
        line.truncate(n + 1);
        while line.len() <= n {
            // Known: `n` is below the share's height.
            let next = line.back().and_then(|&b| all.parent_idx(b))?;
            line.push_back(next);
        }
        let a = *line.get(n)?;
        if lines.len() >= LINE_CACHE {
            lines.pop_front();
        }
        lines.push_back(line);
        Some((all.value_of(a), all.work_between(i, a)))
    }

    /// Total expected hashes of `n` shares from `start` back.
    pub fn work(&self, start: Hash256, n: u32) -> U512 {
        self.all.work(start, n)
    }

    /// Shares nobody builds on.
    pub fn heads(&self) -> Vec<Hash256> {
        self.all.heads().iter().copied().collect()
    }

    pub fn is_verified(&self, hash: &Hash256) -> bool {
        self.verified.contains(hash)
    }

    pub fn mark_verified(&mut self, hash: Hash256) {
        if let Some(e) = self.all.get(&hash) {
            self.verified
                .insert(hash, e.share.previous_hash(), e.attempts, ());
        }
    }

    pub fn verified_count(&self) -> usize {
        self.verified.len()
    }

    /// The payout weights of §5.2: up to `max_shares` shares from `start` back, stopping
    /// at `desired` weight with partial credit for the boundary share: the weight by
    /// payout script (every credited script once, even at weight 0; in the order of the
    /// scripts' bytes) and the total, borrowed (see [`WindowWeights`]).
    pub fn weights(
        &self,
        start: Option<Hash256>,
        max_shares: u32,
        desired: Option<U512>,
    ) -> WindowWeights<'_> {
        let Some(s) = start.and_then(|h| self.all.idx(&h)) else {
            return WindowWeights {
                tracker: self,
                window: Cached::default(),
            };
        };
        let parent = self.all.parent_idx(s);
        // A remembered window at this share, at its parent (one share more at the top),
        // or at its child (one share less, as verification walks down a chain). Taken
        // and moved, not copied; it comes back when the caller is done with it.
        let found = self.windows.try_borrow_mut().ok().and_then(|mut windows| {
            let k = windows
                .iter()
                .position(|w| w.front() == Some(s))
                .or_else(|| parent.and_then(|p| windows.iter().position(|w| w.front() == Some(p))))
                .or_else(|| {
                    windows
                        .iter()
                        .position(|w| w.front().is_some_and(|f| self.all.parent_idx(f) == Some(s)))
                })?;
            windows.remove(k)
        });
        let mut window = found.unwrap_or_default();
        let fits = match &mut window {
            Cached::Narrow(w) => w.update(&self.all, &self.scripts, s, parent, max_shares, desired),
            Cached::Wide(w) => w.update(&self.all, &self.scripts, s, parent, max_shares, desired),
        };
        if fits.is_err() {
            // A weight passed 2^128: the window again from scratch, in 512 bits (where
            // nothing overflows: `Weight::plus` for `U512`).
            let mut wide = Window::<U512>::default();
            let _ = wide.update(&self.all, &self.scripts, s, parent, max_shares, desired);
            window = Cached::Wide(wide);
        }
        if let Cached::Wide(w) = &window
            && let Some(narrow) = w.narrowed()
        {
            window = Cached::Narrow(narrow);
        }
        WindowWeights {
            tracker: self,
            window,
        }
    }

    /// `t`'s shares `hashes` (each after its parent) again, each one's attempts
    /// multiplied by `scale` of its position: weights no real chain reaches, for tests.
    #[cfg(test)]
    pub(super) fn rescaled(
        t: &Tracker,
        hashes: &[Hash256],
        scale: impl Fn(usize) -> U512,
    ) -> Tracker {
        let mut out = Tracker::new();
        for (k, h) in hashes.iter().enumerate() {
            let Some(e) = t.entry(h).cloned() else {
                continue;
            };
            let attempts = e.attempts * scale(k);
            let script = out.scripts.intern(&e.share.info.new_script);
            let (hash, prev) = (e.share.hash, e.share.previous_hash());
            out.all.insert(
                hash,
                prev,
                attempts,
                Entry {
                    attempts,
                    script,
                    ..e
                },
            );
        }
        out
    }

    /// The `count` shares from the `k`-th ancestor of `head` back (fewer where the known
    /// chain ends first) as runs of consecutive shares on one Bitcoin block, oldest first.
    ///
    /// The path below a head is remembered, so for a head on top of (or beside) one asked
    /// about before this costs a few share reads, not a walk of `k + count`.
    pub fn block_runs(&self, head: &Hash256, k: u32, count: u32) -> Vec<BlockRun> {
        let Some(h) = self.all.idx(head) else {
            return Vec::new();
        };
        let all = &self.all;
        let parent = all.parent_idx(h);
        let mut paths = self.paths.borrow_mut();
        let found = paths
            .iter()
            .position(|p| p.path.front() == Some(&h))
            .or_else(|| {
                paths.iter().position(|p| {
                    p.path.front().is_some_and(|&f| {
                        parent.is_some() && (Some(f) == parent || all.parent_idx(f) == parent)
                    })
                })
            });
        let mut p = found.and_then(|k| paths.remove(k)).unwrap_or_default();
        match p.path.front() {
            Some(&f) if f == h => {}
            Some(&f) if Some(f) == parent => {
                p.path.push_front(h);
                p.from += 1;
                p.to += 1;
            }
            // A sibling: the same ancestors; the stretch moves by one if it held the
            // sibling itself.
            Some(_) => {
                if p.from == 0 && p.to > 0 {
                    p.pop(all, 0, true);
                    p.from = 1;
                }
                p.path[0] = h;
            }
            None => p.path.push_back(h),
        }
        let (k, count) = (k as usize, count as usize);
        let want = k.saturating_add(count);
        while p.path.len() < want {
            let Some(next) = p.path.back().and_then(|&b| all.parent_idx(b)) else {
                break;
            };
            p.path.push_back(next);
        }
        let to = want.min(p.path.len());
        let from = k.min(to);
        p.cover(all, from, to);
        // What lies below the stretch is read again only if a later call asks for more.
        p.path.truncate(to.max(1));
        let out = p.runs.iter().rev().copied().collect();
        if paths.len() >= PATH_CACHE {
            paths.pop_front();
        }
        paths.push_back(p);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharechain::sample::{chain, legacy_net, payout};
    use std::collections::BTreeMap;

    /// The window as a map, after checking that it came in the order of the scripts' bytes.
    fn sorted(weights: WindowWeights<'_>) -> (BTreeMap<Vec<u8>, U512>, U512) {
        let (w, total): (Vec<(&[u8], U512)>, U512) = (weights.iter().collect(), weights.total());
        assert!(
            w.is_sorted_by(|a, b| a.0 < b.0),
            "window out of script order"
        );
        (w.into_iter().map(|(s, w)| (s.to_vec(), w)).collect(), total)
    }

    /// The walk of §5.2 share by share, as R does it.
    fn linear(
        t: &Tracker,
        start: Option<Hash256>,
        max_shares: u32,
        desired: Option<U512>,
    ) -> (BTreeMap<Vec<u8>, U512>, U512) {
        let mut weights: BTreeMap<Vec<u8>, U512> = BTreeMap::new();
        let mut total = U512::ZERO;
        for entry in t.chain(start).take(max_shares as usize) {
            if desired == Some(total) {
                break;
            }
            let mut a = entry.attempts;
            if let Some(d) = desired
                && total + a > d
            {
                a = d - total;
            }
            *weights
                .entry(entry.share.info.new_script.clone())
                .or_insert(U512::ZERO) += a;
            total += a;
        }
        (weights, total)
    }

    #[test]
    fn remembered_windows_equal_the_share_by_share_walk() {
        let net = legacy_net(false);
        let mut scripts: Vec<Vec<u8>> = (0..7).map(payout).collect();
        // Scripts sharing their first 8 bytes (ordered by the bytes after), and shorter.
        scripts.extend([
            vec![0x76; 3],
            vec![0x76; 9],
            [vec![0x76; 9], vec![0]].concat(),
        ]);
        let (tracker, hashes) = chain(&net, 60, 12, &scripts);
        let unit = tracker
            .entry(&hashes[0])
            .map(|e| e.attempts)
            .unwrap_or_default();
        // Walk up the chain with changing limits, as verification does, and jump about.
        let mut order: Vec<usize> = (0..60).collect();
        order.extend([59, 10, 11, 40, 39, 38, 59, 0, 1]);
        order.extend((0..60).rev());
        for (step, &k) in order.iter().enumerate() {
            let max = [5u32, 17, 60, 1000, 0][step % 5];
            let desired = match step % 4 {
                0 => None,
                1 => Some(unit * U512::from(step as u64 % 9) + U512::from(step as u64)),
                2 => Some(U512::ZERO),
                _ => Some(unit * U512::from(3u64)),
            };
            let got = sorted(tracker.weights(Some(hashes[k]), max, desired));
            let want = linear(&tracker, Some(hashes[k]), max, desired);
            assert_eq!(got, want, "share {k}, max {max}, desired {desired:?}");
        }
    }

    #[test]
    fn windows_survive_removing_the_tail_and_adding_shares() {
        let net = legacy_net(false);
        let scripts: Vec<Vec<u8>> = (0..3).map(payout).collect();
        let (mut tracker, hashes) = chain(&net, 30, 12, &scripts);
        let desired = Some(U512::MAX);
        for &h in &hashes {
            tracker.weights(Some(h), 1000, desired);
        }
        tracker.remove(&hashes[0]);
        tracker.remove(&hashes[1]);
        for k in [29, 28, 5, 2] {
            assert_eq!(
                sorted(tracker.weights(Some(hashes[k]), 1000, desired)),
                linear(&tracker, Some(hashes[k]), 1000, desired)
            );
        }
    }

    #[test]
    fn windows_past_128_bits_equal_the_share_by_share_walk() {
        // Windows slide in and out of a stretch of shares whose weights pass 2^128 (and
        // one past 2^256), so they go from 128 to 512 bits and back, with `desired` below,
        // near and past 2^128.
        let net = legacy_net(false);
        let mut scripts: Vec<Vec<u8>> = (0..7).map(payout).collect();
        scripts.extend([vec![0x76; 3], vec![0x76; 9]]);
        let (small, hashes) = chain(&net, 80, 12, &scripts);
        let tracker = Tracker::rescaled(&small, &hashes, |k| match k {
            20..40 => U512::from(1u64) << 125,
            50 => U512::from(1u64) << 200,
            _ => U512::from(1u64),
        });
        let unit = tracker.entry(&hashes[0]).map(|e| e.attempts).unwrap();
        let big = unit << 125;
        let mut order: Vec<usize> = (0..80).collect();
        order.extend([79, 30, 31, 45, 44, 60, 59, 0, 1, 25]);
        order.extend((0..80).rev());
        for (step, &k) in order.iter().enumerate() {
            let max = [5u32, 17, 80, 1000, 30][step % 5];
            let desired = match step % 6 {
                0 => None,
                1 => Some(unit * U512::from(step as u64 % 9) + U512::from(step as u64)),
                2 => Some(big * U512::from(3u64) + U512::from(step as u64)),
                3 => Some(U512::from(1u64) << 128),
                4 => Some(U512::from(1u64) << 300),
                _ => Some(unit * U512::from(3u64)),
            };
            let got = sorted(tracker.weights(Some(hashes[k]), max, desired));
            let want = linear(&tracker, Some(hashes[k]), max, desired);
            assert_eq!(got, want, "share {k}, max {max}, desired {desired:?}");
        }
    }

    #[test]
    fn remembered_ancestor_lines_equal_the_walk() {
        // A chain with a fork, asked up, down, across the fork and after tails and heads
        // are removed.
        let net = legacy_net(false);
        let scripts: Vec<Vec<u8>> = (0..3).map(payout).collect();
        let (mut tracker, mut hashes) = chain(&net, 40, 12, &scripts);
        let mut prev = Some(hashes[30]);
        let mut fork = Vec::new();
        for i in 0..8u32 {
            let share = crate::sharechain::sample::mine(
                &tracker,
                &net,
                &crate::sharechain::sample::Spec::new(
                    prev,
                    1_600_000_000 + 12 * (31 + i) + 5,
                    payout(7),
                ),
            );
            prev = Some(share.hash);
            fork.push(share.hash);
            tracker.add(share, 0, None);
        }
        let check = |tracker: &Tracker, h: &Hash256, n: u32| {
            let got = tracker
                .nth_parent_with_work(h, n)
                .map(|(e, w)| (e.share.hash, w));
            let want = tracker
                .all()
                .nth_parent_with_work(h, n)
                .map(|(e, w)| (e.share.hash, w));
            assert_eq!(got, want, "share {h}, n {n}");
        };
        let mut order: Vec<Hash256> = hashes.clone();
        order.extend(fork.iter().copied());
        order.extend(hashes.iter().rev().copied());
        order.extend([
            hashes[39], fork[7], hashes[38], fork[6], fork[7], hashes[31],
        ]);
        for (step, h) in order.iter().enumerate() {
            let n = [5u32, 5, 5, 12, 0, 39][step % 6];
            check(&tracker, h, n);
        }
        tracker.remove(&hashes[0]);
        tracker.remove(&hashes[1]);
        tracker.remove(&fork[7]);
        hashes.drain(..2);
        for (step, h) in hashes.iter().chain(&fork[..7]).enumerate() {
            check(&tracker, h, [5u32, 37, 3][step % 3]);
            check(&tracker, h, 5);
        }
    }
}
