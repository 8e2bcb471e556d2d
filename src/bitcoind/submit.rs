//! Block submission: a `submitter` thread that sends each block with `submitblock`, so that
//! a slow template call never delays a block, and never drops one while bitcoind is
//! unreachable: a block is retried with backoff until bitcoind answers, or until it is stale
//! (the chain is past its height by more than a margin) or too old.
//!
//! Every answer is logged and recorded: in a small history the node can read, and on an
//! optional results channel. A block given to `submit` also goes out over the P2P link when
//! one is attached, as the original did.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, never, select};
use log::{debug, error, info, warn};
use serde_json::json;

use super::link::BlockSender;
use super::rpc::{Client, RpcError};
use crate::bitcoin::block::BlockHeader;
use crate::bitcoin::hash::Hash256;
use crate::thread::{Shutdown, lock};

const LOG: &str = "bitcoind";
/// Blocks waiting for the submitter thread: a handful at most on a real chain; on regtest,
/// where nearly every share is a block, hundreds.
const QUEUE: usize = 256;
/// Accepted blocks remembered (with the block each builds on) to tell a sibling.
const ACCEPTED_KEPT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitConfig {
    /// A block is stale once bitcoind's tip is more than this many blocks above its height.
    pub stale_margin: u64,
    /// A block not landed after this long is given up.
    pub max_age: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How many results `Submitter::history` keeps.
    pub history: usize,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        SubmitConfig {
            stale_margin: 1,
            max_age: Duration::from_secs(30 * 60),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
            history: 32,
        }
    }
}

/// A block to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSubmission {
    pub hash: Hash256,
    /// The block it builds on: a sibling on the same one already accepted makes it stale.
    pub previous: Hash256,
    /// The block's height (the template's), for the staleness check.
    pub height: u64,
    /// The serialised block.
    pub bytes: Arc<[u8]>,
}

impl BlockSubmission {
    pub fn new(header: &BlockHeader, height: u64, bytes: Vec<u8>) -> BlockSubmission {
        BlockSubmission {
            hash: header.hash(),
            previous: header.previous_block,
            height,
            bytes: bytes.into(),
        }
    }
}

/// How a submission ended.
///
/// `Accepted` means bitcoind took the block and its best chain holds it at its height;
/// a valid block that bitcoind keeps on a side chain is `Inconclusive`, as Core says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `null`: bitcoind took the block.
    Accepted,
    /// bitcoind already had it.
    Duplicate,
    /// Valid but not (yet) on the best chain: a stale block, not an error.
    Inconclusive,
    /// bitcoind refused it, for this reason (`high-hash`, `bad-cb-height`, …).
    Rejected(String),
    /// Given up while retrying: the chain had moved to this height.
    Stale { tip_height: u64 },
    /// Not submitted: this block, on the same previous block, was accepted first.
    Sibling { accepted: Hash256 },
    /// Given up while retrying: older than `max_age`; the last error.
    Expired(String),
    /// The submitter was stopped while the block was still being retried.
    Abandoned,
}

impl Outcome {
    /// Reads a `submitblock` answer: `None` is acceptance; bcoin prefixes `rejected: `.
    pub fn from_answer(answer: Option<&str>) -> Outcome {
        let Some(answer) = answer else {
            return Outcome::Accepted;
        };
        let reason = answer.strip_prefix("rejected: ").unwrap_or(answer);
        match reason {
            "duplicate" | "duplicate-inconclusive" => Outcome::Duplicate,
            "inconclusive" => Outcome::Inconclusive,
            other => Outcome::Rejected(other.to_string()),
        }
    }

    /// Accepted, duplicate or inconclusive: bitcoind has the block.
    pub fn landed(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::Duplicate | Outcome::Inconclusive
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Duplicate => f.write_str("duplicate"),
            Outcome::Inconclusive => f.write_str("inconclusive (valid, not on the best chain)"),
            Outcome::Rejected(reason) => write!(f, "rejected: {reason}"),
            Outcome::Stale { tip_height } => {
                write!(f, "given up: stale, bitcoind's tip is at {tip_height}")
            }
            Outcome::Sibling { accepted } => write!(
                f,
                "stale: block {accepted} on the same previous block was accepted; not submitted"
            ),
            Outcome::Expired(last) => write!(f, "given up: too old, last error: {last}"),
            Outcome::Abandoned => f.write_str("abandoned at shutdown"),
        }
    }
}

/// The result of one block's submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitResult {
    pub hash: Hash256,
    /// The block it builds on.
    pub previous: Hash256,
    pub height: u64,
    /// The block's header timestamp.
    pub timestamp: u32,
    pub outcome: Outcome,
    /// `submitblock` calls made.
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Why `submit` could not queue a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full (never expected): the block was not queued.
    QueueFull(Hash256),
    /// The submitter thread is gone.
    Stopped(Hash256),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull(hash) => write!(f, "block {hash} not submitted: queue full"),
            SubmitError::Stopped(hash) => {
                write!(f, "block {hash} not submitted: the submitter has stopped")
            }
        }
    }
}

impl std::error::Error for SubmitError {}

/// The running submitter.
pub struct Submitter {
    handle: SubmitHandle,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
    history: Arc<Mutex<VecDeque<SubmitResult>>>,
}

/// Where blocks go to be submitted, from any thread: a miner's thread hands its block
/// here directly, waiting on nothing. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SubmitHandle {
    blocks: Sender<BlockSubmission>,
    link: Option<BlockSender>,
    /// bitcoind's tip height as the node last saw it (0: not known).
    tip: Arc<AtomicU64>,
}

impl SubmitHandle {
    /// bitcoind's tip is at `height` (from the newest template): a block more than
    /// `stale_margin` below it is recorded stale without a `submitblock`.
    pub fn set_tip(&self, height: u64) {
        self.tip.store(height, Ordering::Relaxed);
    }

    /// Queues a block for `submitblock` (and the link, if attached). Never blocks.
    pub fn submit(&self, block: BlockSubmission) -> Result<(), SubmitError> {
        if let Some(link) = &self.link {
            link.send_block(block.bytes.clone());
        }
        let hash = block.hash;
        match self.blocks.try_send(block) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                error!(target: LOG, "block {hash} not submitted: the submit queue is full");
                Err(SubmitError::QueueFull(hash))
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped(hash)),
        }
    }
}

impl Submitter {
    /// Starts the `submitter` thread; each result also goes to `results` when given (a full
    /// channel loses the message, never the block).
    pub fn start(
        rpc: Arc<Client>,
        config: SubmitConfig,
        results: Option<Sender<SubmitResult>>,
    ) -> std::io::Result<Submitter> {
        let (blocks, queue) = bounded(QUEUE);
        let tip = Arc::new(AtomicU64::new(0));
        let shutdown = Shutdown::new();
        let history = Arc::new(Mutex::new(VecDeque::new()));
        let worker = Worker {
            rpc,
            config,
            history: history.clone(),
            results,
            pending: Vec::new(),
            accepted: VecDeque::new(),
            tip: tip.clone(),
        };
        let stop = shutdown.clone();
        let thread = crate::thread::spawn("submitter", move || worker.run(queue, stop.signal()))?;
        Ok(Submitter {
            handle: SubmitHandle {
                blocks,
                link: None,
                tip,
            },
            shutdown,
            thread: Some(thread),
            history,
        })
    }

    /// Also sends every block over this P2P link (handles taken afterwards do too).
    pub fn attach_link(&mut self, link: BlockSender) {
        self.handle.link = Some(link);
    }

    /// bitcoind's tip is at `height`; see [`SubmitHandle::set_tip`].
    pub fn set_tip(&self, height: u64) {
        self.handle.set_tip(height);
    }

    /// A handle for other threads to submit blocks through.
    pub fn handle(&self) -> SubmitHandle {
        self.handle.clone()
    }

    /// Queues a block for `submitblock` (and the link, if attached). Never blocks.
    pub fn submit(&self, block: BlockSubmission) -> Result<(), SubmitError> {
        self.handle.submit(block)
    }

    /// The latest results, oldest first.
    pub fn history(&self) -> Vec<SubmitResult> {
        let history = lock(&self.history);
        history.iter().cloned().collect()
    }

    /// Stops the thread; blocks still being retried are recorded as abandoned.
    pub fn stop(mut self) {
        self.shutdown.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

struct Pending {
    block: BlockSubmission,
    hex: String,
    since: Instant,
    attempts: u32,
    due: Instant,
    backoff: Duration,
    last_error: String,
}

struct Worker {
    rpc: Arc<Client>,
    config: SubmitConfig,
    history: Arc<Mutex<VecDeque<SubmitResult>>>,
    results: Option<Sender<SubmitResult>>,
    pending: Vec<Pending>,
    /// The latest accepted blocks, newest last: (previous block, block).
    accepted: VecDeque<(Hash256, Hash256)>,
    /// bitcoind's tip height as the node last saw it (0: not known).
    tip: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, queue: Receiver<BlockSubmission>, stop: &Receiver<()>) {
        let mut queue = Some(queue);
        loop {
            let wait = self
                .pending
                .iter()
                .map(|p| p.due.saturating_duration_since(Instant::now()))
                .min();
            let incoming = queue.clone().unwrap_or_else(never);
            select! {
                recv(stop) -> _ => break,
                recv(incoming) -> block => match block {
                    Ok(block) => self.queue(block),
                    Err(_) if self.pending.is_empty() => return,
                    Err(_) => queue = None,
                },
                default(wait.unwrap_or(Duration::from_secs(3600))) => {}
            }
            self.attempt_due();
        }
        for p in std::mem::take(&mut self.pending) {
            warn!(target: LOG, "block {} abandoned at shutdown after {} attempts", p.block.hash, p.attempts);
            self.record(&p, Outcome::Abandoned);
        }
    }

    fn queue(&mut self, block: BlockSubmission) {
        let now = Instant::now();
        let p = Pending {
            hex: String::new(),
            block,
            since: now,
            attempts: 0,
            due: now,
            backoff: self.config.retry_min,
            last_error: String::new(),
        };
        // On regtest nearly every share is a block: siblings of an accepted block are
        // many, and each would cost bitcoind a submitblock for nothing.
        if let Some(outcome) = self.settled(&p.block) {
            self.record(&p, outcome);
            return;
        }
        info!(target: LOG, "submitting block {} at height {}", p.block.hash, p.block.height);
        let hex = to_hex(&p.block.bytes);
        self.pending.push(Pending { hex, ..p });
    }

    /// The outcome of a block that needs no submitblock: already accepted, a sibling on
    /// the same previous block accepted first, or too far below bitcoind's tip (on
    /// regtest a burst of shares queues hundreds of blocks, each a `submitblock` for
    /// nothing once the chain has moved on).
    fn settled(&self, block: &BlockSubmission) -> Option<Outcome> {
        let tip = self.tip.load(Ordering::Relaxed);
        if tip > block.height.saturating_add(self.config.stale_margin) {
            return Some(Outcome::Stale { tip_height: tip });
        }
        let (_, accepted) = self
            .accepted
            .iter()
            .rev()
            .find(|(previous, hash)| *previous == block.previous || *hash == block.hash)?;
        Some(if *accepted == block.hash {
            Outcome::Duplicate
        } else {
            Outcome::Sibling {
                accepted: *accepted,
            }
        })
    }

    /// Remembers an accepted block and settles the siblings waiting for a retry.
    fn on_accepted(&mut self, block: &BlockSubmission) {
        if self.accepted.len() >= ACCEPTED_KEPT {
            self.accepted.pop_front();
        }
        self.accepted.push_back((block.previous, block.hash));
        let (settled, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.block.previous == block.previous);
        self.pending = waiting;
        for p in settled {
            if let Some(outcome) = self.settled(&p.block) {
                self.record(&p, outcome);
            }
        }
    }

    fn attempt_due(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = waiting;
        for p in due {
            if let Some(p) = self.attempt(p) {
                self.pending.push(p);
            }
        }
    }

    /// One try; the block back when it must be retried.
    fn attempt(&mut self, mut p: Pending) -> Option<Pending> {
        if let Some(outcome) = self.settled(&p.block) {
            self.record(&p, outcome);
            return None;
        }
        if p.attempts > 0 {
            if p.since.elapsed() > self.config.max_age {
                let outcome = Outcome::Expired(p.last_error.clone());
                self.record(&p, outcome);
                return None;
            }
            // bitcoind answers again: is the block still worth sending?
            if let Ok(tip) = self.rpc.get_block_count() {
                if tip > p.block.height.saturating_add(self.config.stale_margin) {
                    self.record(&p, Outcome::Stale { tip_height: tip });
                    return None;
                }
            }
        }
        p.attempts += 1;
        match self.rpc.submit_block(&p.hex) {
            Ok(answer) => {
                let mut outcome = Outcome::from_answer(answer.as_deref());
                if outcome == Outcome::Accepted && !self.on_best_chain(&p.block) {
                    outcome = Outcome::Inconclusive;
                }
                // bitcoind had it (the link or another node was first): on the best
                // chain it settles its siblings as an acceptance does.
                let accepted = outcome == Outcome::Accepted
                    || (outcome == Outcome::Duplicate && self.on_best_chain(&p.block));
                self.record(&p, outcome);
                if accepted {
                    self.on_accepted(&p.block);
                }
                None
            }
            Err(e) if retryable(&e) => {
                if p.attempts == 1 {
                    warn!(target: LOG, "block {} not submitted yet, retrying until bitcoind answers: {e}", p.block.hash);
                } else {
                    debug!(target: LOG, "block {} still not submitted: {e}", p.block.hash);
                }
                p.last_error = e.to_string();
                p.due = Instant::now() + p.backoff;
                p.backoff = (p.backoff * 2).min(self.config.retry_max);
                Some(p)
            }
            Err(e) => {
                self.record(&p, Outcome::Rejected(e.to_string()));
                None
            }
        }
    }

    /// Whether the best chain holds `block` at its height (true when bitcoind cannot say).
    /// bcoin answers `null` for a valid block it keeps on a side chain, where Core says
    /// `inconclusive`.
    fn on_best_chain(&self, block: &BlockSubmission) -> bool {
        match self
            .rpc
            .call_as::<String>("getblockhash", json!([block.height]))
        {
            Ok(hex) => hex.parse::<Hash256>().is_ok_and(|h| h == block.hash),
            Err(_) => true,
        }
    }

    fn record(&mut self, p: &Pending, outcome: Outcome) {
        let result = SubmitResult {
            hash: p.block.hash,
            previous: p.block.previous,
            height: p.block.height,
            timestamp: p
                .block
                .bytes
                .get(68..72)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes),
            outcome,
            attempts: p.attempts,
            elapsed: p.since.elapsed(),
        };
        let (hash, height, outcome) = (result.hash, result.height, &result.outcome);
        match outcome {
            Outcome::Accepted => info!(target: LOG, "block {hash} at height {height} accepted"),
            Outcome::Duplicate | Outcome::Inconclusive => {
                info!(target: LOG, "block {hash} at height {height}: {outcome}")
            }
            Outcome::Sibling { .. } => {
                debug!(target: LOG, "block {hash} at height {height}: {outcome}")
            }
            _ => error!(target: LOG, "block {hash} at height {height}: {outcome}"),
        }
        {
            let mut history = lock(&self.history);
            if history.len() >= self.config.history.max(1) {
                history.pop_front();
            }
            history.push_back(result.clone());
        }
        if let Some(results) = &self.results {
            let _ = results.try_send(result);
        }
    }
}

/// Lowercase hex by table: a 4 MB block is encoded on the way to bitcoind, where every
/// millisecond counts.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Errors that say nothing about the block: bitcoind is down, slow, restarting or refusing
/// our credentials (a cookie rewritten by a restart). An RPC error about the block is final.
fn retryable(e: &RpcError) -> bool {
    !matches!(
        e,
        RpcError::Rpc { .. } | RpcError::MethodNotFound(_) | RpcError::BodyTooLarge(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoind::rpc::{Auth, Call};

    #[test]
    fn answers_of_core_and_bcoin_are_classified() {
        assert_eq!(Outcome::from_answer(None), Outcome::Accepted);
        assert_eq!(Outcome::from_answer(Some("duplicate")), Outcome::Duplicate);
        assert_eq!(
            Outcome::from_answer(Some("rejected: duplicate")),
            Outcome::Duplicate
        );
        assert_eq!(
            Outcome::from_answer(Some("inconclusive")),
            Outcome::Inconclusive
        );
        assert_eq!(
            Outcome::from_answer(Some("bad-cb-height")),
            Outcome::Rejected("bad-cb-height".into())
        );
        assert_eq!(
            Outcome::from_answer(Some("rejected: high-hash")),
            Outcome::Rejected("high-hash".into())
        );
        assert_eq!(
            Outcome::from_answer(Some("duplicate-invalid")),
            Outcome::Rejected("duplicate-invalid".into())
        );
        assert!(Outcome::Inconclusive.landed() && !Outcome::Abandoned.landed());
    }

    #[test]
    fn table_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(to_hex(&[]), "");
    }

    #[test]
    fn only_transport_failures_are_retried() {
        let call = Call {
            method: "submitblock".into(),
            addr: "127.0.0.1:9".into(),
        };
        assert!(retryable(&RpcError::ConnectionRefused {
            addr: "127.0.0.1:9".into()
        }));
        assert!(retryable(&RpcError::Timeout(
            call.clone(),
            Duration::from_secs(1)
        )));
        assert!(retryable(&RpcError::Http(call.clone(), 503)));
        assert!(!retryable(&RpcError::Rpc {
            call,
            code: Some(-22),
            message: "Block decode failed".into()
        }));
    }

    #[test]
    fn stopping_records_blocks_still_retried_as_abandoned() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let rpc = Arc::new(Client::new("127.0.0.1", port, Auth::user_pass("u", "p")));
        let (tx, rx) = bounded(4);
        let submitter = Submitter::start(rpc, SubmitConfig::default(), Some(tx)).unwrap();
        let block = BlockSubmission {
            hash: crate::bitcoin::hash::sha256d(b"block"),
            previous: crate::bitcoin::hash::sha256d(b"below block"),
            height: 7,
            bytes: vec![0u8; 81].into(),
        };
        submitter.submit(block.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(submitter.history().is_empty(), "still retrying");
        submitter.stop();
        let result = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(result.hash, block.hash);
        assert_eq!(result.outcome, Outcome::Abandoned);
        assert!(result.attempts >= 1);
    }
}
