//! Template tracking: a thread that keeps the newest block template and hands each new one
//! to its consumer over a bounded channel (the newest wins when the consumer lags).
//!
//! At start the feed checks with `getblockchaininfo` that bitcoind is on the expected chain
//! and reports its sync state; while bitcoind is unreachable it says so once and keeps
//! trying. Templates come from three sources:
//!
//! - a **long poll** on `longpollid`, in a thread of its own (`template_poll`), so that a new
//!   tip arrives at once;
//! - a **periodic refresh** (every 15 s by default), for fees;
//! - a **poke** (`Refresher`) from the P2P link, SIGUSR1 (`refresh_on_sigusr1`) or anyone.
//!
//! Stopping is prompt for the feed thread. The long poll keeps one request open for up to
//! `long_poll_timeout` (90 s by default): Bitcoin Core holds an RPC worker for each long
//! poll until the tip or, after a minute, the mempool changes, so abandoning short polls
//! would pile up held workers and starve `submitblock`. The poll thread is therefore not
//! joined; it ends when its request returns.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select};
use log::{debug, error, info, warn};

use super::heights::Heights;
use super::rpc::{BlockchainInfo, Client, RpcError, Trouble, block_template_params};
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::template::{Template, TemplateAnswer, TemplateError};
use crate::thread::{Shutdown, lock};

const LOG: &str = "bitcoind";
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(15);
pub const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(90);
const RETRY_MIN: Duration = Duration::from_millis(500);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(15);

/// Forces an immediate template refresh. Cheap to clone; pokes coalesce and never block.
#[derive(Debug, Clone)]
pub struct Refresher(Sender<()>);

impl Refresher {
    pub fn poke(&self) {
        let _ = self.0.try_send(());
    }
}

/// A refresher and the receiving end its pokes arrive at (one pending poke at most).
pub fn refresh_channel() -> (Refresher, Receiver<()>) {
    let (tx, rx) = bounded(1);
    (Refresher(tx), rx)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Bitcoin Core's name of the chain bitcoind must be on (`ChainParams::name`).
    pub chain: String,
    pub refresh_every: Duration,
    pub long_poll_timeout: Duration,
    /// The longest wait between attempts while bitcoind is unreachable.
    pub retry_max: Duration,
}

impl FeedConfig {
    pub fn new(chain: &ChainParams) -> FeedConfig {
        FeedConfig {
            chain: chain.name.clone(),
            refresh_every: DEFAULT_REFRESH,
            long_poll_timeout: DEFAULT_LONG_POLL_TIMEOUT,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// What the feed knows, for status pages and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedStatus {
    /// Whether the last call to bitcoind got an answer.
    pub reachable: bool,
    /// `getblockchaininfo` from start-up.
    pub chain: Option<BlockchainInfo>,
    /// Still in initial block download (Core says so; otherwise headers ahead of blocks).
    pub syncing: bool,
    /// Template answers received (fetched, long-polled or poked).
    pub fetched: u64,
    /// Templates handed to the consumer.
    pub published: u64,
    /// The height of the newest template.
    pub height: Option<u32>,
    pub last_error: Option<String>,
    /// What kind of trouble the last error was (`None` before any error).
    pub trouble: Option<Trouble>,
    /// bitcoind has answered since start (anything, even an error or a refusal): a
    /// `false` here while unreachable means it was never reached, not that contact was lost.
    pub answered: bool,
}

/// Why the feed stopped by itself.
#[derive(Debug)]
pub enum FeedError {
    /// bitcoind runs another chain than the node.
    WrongChain {
        addr: String,
        expected: String,
        got: String,
    },
    /// bitcoind's templates cannot be used (a rule this node does not support).
    Template(TemplateError),
    Spawn(io::Error),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::WrongChain {
                addr,
                expected,
                got,
            } => write!(
                f,
                "bitcoind at {addr} is on chain '{got}', but this node runs on '{expected}': \
                 check --net and the bitcoind address"
            ),
            FeedError::Template(e) => write!(f, "template feed stopped: {e}"),
            FeedError::Spawn(e) => write!(f, "cannot start the template threads: {e}"),
        }
    }
}

impl std::error::Error for FeedError {}

/// The running template feed.
pub struct Feed {
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), FeedError>>>,
    refresher: Refresher,
    status: Arc<Mutex<FeedStatus>>,
    heights: Heights,
}

impl Feed {
    /// Starts the `template` thread; new templates arrive on the returned receiver.
    pub fn start(
        rpc: Arc<Client>,
        config: FeedConfig,
    ) -> Result<(Feed, Receiver<Arc<Template>>), FeedError> {
        let shutdown = Shutdown::new();
        let (refresher, pokes) = refresh_channel();
        let (tx, rx) = bounded(1);
        let status = Arc::new(Mutex::new(FeedStatus::default()));
        let heights = Heights::new(rpc.clone());
        let worker = Worker {
            rpc,
            config,
            status: status.clone(),
            heights: heights.clone(),
            tx,
            drain: rx.clone(),
            key: None,
            reachable: None,
        };
        let stop = shutdown.clone();
        let thread = crate::thread::spawn("template", move || {
            let result = worker.run(stop.signal(), &pokes);
            if let Err(e) = &result {
                error!(target: LOG, "{e}");
            }
            result
        })
        .map_err(FeedError::Spawn)?;
        let feed = Feed {
            shutdown,
            thread: Some(thread),
            refresher,
            status,
            heights,
        };
        Ok((feed, rx))
    }

    /// A handle that forces an immediate refresh.
    pub fn refresher(&self) -> Refresher {
        self.refresher.clone()
    }

    pub fn status(&self) -> FeedStatus {
        lock(&self.status).clone()
    }

    /// Block heights, cached, filled from the templates as they come.
    pub fn heights(&self) -> Heights {
        self.heights.clone()
    }

    /// Stops the feed and returns why it had stopped by itself, if it had.
    pub fn stop(mut self) -> Result<(), FeedError> {
        self.shutdown.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(FeedError::Spawn(io::Error::other(
                "the template thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

/// True once the stop channel is closed (or after `timeout`, false).
fn stopped_within(stop: &Receiver<()>, timeout: Duration) -> bool {
    !matches!(stop.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
}

/// Why the chain check did not pass.
enum ChainCheck {
    /// bitcoind could not be asked: try again.
    Unanswered(RpcError),
    /// bitcoind is on another chain.
    Fatal(FeedError),
}

/// What makes two templates the same work.
type Key = (
    crate::bitcoin::hash::Hash256,
    u64,
    Vec<crate::bitcoin::hash::Hash256>,
);

struct Worker {
    rpc: Arc<Client>,
    config: FeedConfig,
    status: Arc<Mutex<FeedStatus>>,
    heights: Heights,
    tx: Sender<Arc<Template>>,
    /// Our own end of the template channel, to replace an unread template with a newer one.
    drain: Receiver<Arc<Template>>,
    key: Option<Key>,
    reachable: Option<bool>,
}

impl Worker {
    fn run(mut self, stop: &Receiver<()>, pokes: &Receiver<()>) -> Result<(), FeedError> {
        let mut backoff = RETRY_MIN;
        loop {
            match self.check_chain() {
                Ok(()) => break,
                Err(ChainCheck::Unanswered(e)) => self.unreachable(&e),
                Err(ChainCheck::Fatal(e)) => return Err(e),
            }
            if stopped_within(stop, backoff) {
                return Ok(());
            }
            backoff = (backoff * 2).min(self.config.retry_max);
        }
        let (polled_tx, polled) = bounded(1);
        let (rpc, poll_stop) = (self.rpc.clone(), stop.clone());
        let (timeout, retry_max) = (self.config.long_poll_timeout, self.config.retry_max);
        crate::thread::spawn("template_poll", move || {
            poll(&rpc, &poll_stop, &polled_tx, timeout, retry_max)
        })
        .map_err(FeedError::Spawn)?;

        let mut next = Instant::now();
        backoff = RETRY_MIN;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let fetch = select! {
                recv(stop) -> _ => return Ok(()),
                recv(pokes) -> _ => {
                    debug!(target: LOG, "template refresh forced");
                    true
                }
                recv(polled) -> answer => {
                    if let Ok(answer) = answer {
                        self.accept(answer)?;
                    }
                    false
                }
                default(wait) => true,
            };
            if !fetch {
                continue;
            }
            if lock(&self.status).syncing {
                let _ = self.check_chain();
            }
            match fetch_template(&self.rpc) {
                Ok(answer) => {
                    backoff = RETRY_MIN;
                    next = Instant::now() + self.config.refresh_every;
                    self.accept(answer)?;
                }
                // bitcoind answered, with something that is no template.
                Err(e @ RpcError::BadJson(..)) => {
                    next = Instant::now() + self.config.refresh_every;
                    self.accept(Err(TemplateError::Json(e.to_string())))?;
                }
                Err(e) => {
                    self.unreachable(&e);
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(self.config.retry_max);
                }
            }
        }
    }

    /// `getblockchaininfo`: the chain must be ours; the sync state is logged when it changes.
    fn check_chain(&mut self) -> Result<(), ChainCheck> {
        let info = self
            .rpc
            .get_blockchain_info()
            .map_err(ChainCheck::Unanswered)?;
        self.now_reachable();
        if info.chain != self.config.chain {
            return Err(ChainCheck::Fatal(FeedError::WrongChain {
                addr: self.rpc.addr().to_string(),
                expected: self.config.chain.clone(),
                got: info.chain,
            }));
        }
        let syncing = info
            .initial_block_download
            .unwrap_or(info.headers > info.blocks);
        let mut status = lock(&self.status);
        if status.chain.is_none() {
            info!(
                target: LOG,
                "bitcoind at {} is on {} at height {}",
                self.rpc.addr(),
                info.chain,
                info.blocks
            );
        }
        if syncing && !status.syncing {
            warn!(
                target: LOG,
                "bitcoind is still syncing ({} blocks of {} headers): its templates may build on an old tip",
                info.blocks,
                info.headers
            );
        } else if !syncing && status.syncing {
            info!(target: LOG, "bitcoind has finished syncing at height {}", info.blocks);
        }
        status.syncing = syncing;
        status.chain = Some(info);
        Ok(())
    }

    fn now_reachable(&mut self) {
        if self.reachable == Some(false) {
            info!(target: LOG, "bitcoind at {} answers again", self.rpc.addr());
        }
        self.reachable = Some(true);
        let mut status = lock(&self.status);
        status.reachable = true;
        status.answered = true;
    }

    fn unreachable(&mut self, e: &RpcError) {
        if self.reachable != Some(false) {
            match e {
                RpcError::Rpc { .. } | RpcError::MethodNotFound(_) | RpcError::WarmingUp { .. } => {
                    warn!(target: LOG, "bitcoind gives no block template, retrying: {e}")
                }
                _ => warn!(target: LOG, "bitcoind unreachable, retrying: {e}"),
            }
        } else {
            debug!(target: LOG, "bitcoind still unreachable: {e}");
        }
        self.reachable = Some(false);
        let mut status = lock(&self.status);
        status.reachable = false;
        status.last_error = Some(e.to_string());
        status.trouble = Some(e.trouble());
        status.answered |=
            e.trouble() != Trouble::NoAnswer && !matches!(e, RpcError::Cookie { .. });
    }

    /// Publishes a template if it is new work.
    fn accept(&mut self, answer: Result<Template, TemplateError>) -> Result<(), FeedError> {
        self.now_reachable();
        lock(&self.status).fetched += 1;
        let template = match answer {
            Ok(t) => t,
            Err(e @ TemplateError::UnsupportedRule(_)) => return Err(FeedError::Template(e)),
            Err(e) => {
                error!(target: LOG, "ignoring a template from {}: {e}", self.rpc.addr());
                lock(&self.status).last_error = Some(e.to_string());
                return Ok(());
            }
        };
        let key = (
            template.previous_block,
            template.coinbase_value,
            template.txids(),
        );
        if self.key.as_ref() == Some(&key) {
            return Ok(());
        }
        if self.key.as_ref().map(|k| k.0) != Some(key.0) {
            info!(
                target: LOG,
                "new block template at height {} on {} with {} transactions",
                template.height,
                template.previous_block,
                template.transactions.len()
            );
        } else {
            debug!(target: LOG, "template refreshed: {} transactions", key.2.len());
        }
        self.key = Some(key);
        if let Some(parent) = template.height.checked_sub(1) {
            self.heights
                .insert(template.previous_block, u64::from(parent));
        }
        {
            let mut status = lock(&self.status);
            status.published += 1;
            status.height = Some(template.height);
        }
        let template = Arc::new(template);
        if let Err(TrySendError::Full(template)) = self.tx.try_send(template) {
            // The consumer has not read the last one: the newer one replaces it.
            let _ = self.drain.try_recv();
            let _ = self.tx.try_send(template);
        }
        Ok(())
    }
}

/// `getblocktemplate` at once, parsed from the answer's bytes.
fn fetch_template(rpc: &Client) -> Result<Result<Template, TemplateError>, RpcError> {
    let answer: TemplateAnswer = rpc.call_as("getblocktemplate", block_template_params(None))?;
    Ok(answer.0)
}

/// The `template_poll` thread: one long poll at a time, each answer sent to the feed.
fn poll(
    rpc: &Client,
    stop: &Receiver<()>,
    out: &Sender<Result<Template, TemplateError>>,
    timeout: Duration,
    retry_max: Duration,
) {
    let mut id: Option<String> = None;
    let mut backoff = RETRY_MIN;
    while !stopped_within(stop, Duration::ZERO) {
        let answer = match &id {
            None => fetch_template(rpc),
            Some(id) => rpc
                .call_with_timeout::<TemplateAnswer>(
                    "getblocktemplate",
                    block_template_params(Some(id)),
                    timeout,
                )
                .map(|answer| answer.0),
        };
        let failed = match answer {
            Ok(answer) => {
                id = answer.as_ref().ok().and_then(|t| t.longpollid.clone());
                let usable = answer.is_ok();
                if usable && id.is_none() {
                    warn!(target: LOG, "bitcoind gives no longpollid: new blocks arrive with the refresh only");
                }
                select! {
                    send(out, answer) -> _ => {}
                    recv(stop) -> _ => return,
                }
                if usable && id.is_none() {
                    return;
                }
                !usable
            }
            Err(RpcError::Timeout(..)) if id.is_some() => false,
            Err(e) => {
                debug!(target: LOG, "long poll failed, retrying: {e}");
                id = None;
                true
            }
        };
        if failed {
            if stopped_within(stop, backoff) {
                return;
            }
            backoff = (backoff * 2).min(retry_max);
        } else {
            backoff = RETRY_MIN;
        }
    }
}

/// The thread that turns SIGUSR1 (`-blocknotify`) into template refreshes.
pub struct SignalRefresh {
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
    /// Closes the signal iterator at stop.
    _wake: crate::thread::Waker,
}

/// Starts a `signal_usr1` thread that pokes `refresher` on every SIGUSR1.
pub fn refresh_on_sigusr1(refresher: Refresher) -> io::Result<SignalRefresh> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
    let handle = signals.handle();
    let shutdown = Shutdown::new();
    let wake = shutdown.on_stop(move || handle.close());
    let thread = crate::thread::spawn("signal_usr1", move || {
        for _ in signals.forever() {
            info!(target: LOG, "SIGUSR1: refreshing the block template");
            refresher.poke();
        }
    })?;
    Ok(SignalRefresh {
        shutdown,
        thread: Some(thread),
        _wake: wake,
    })
}

impl SignalRefresh {
    /// Stops listening (SIGUSR1 is then ignored, no longer fatal) and joins the thread.
    pub fn stop(mut self) {
        self.shutdown.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_coalesce_and_never_block() {
        let (refresher, pokes) = refresh_channel();
        for _ in 0..10 {
            refresher.poke();
        }
        assert!(pokes.try_recv().is_ok());
        assert!(pokes.try_recv().is_err());
        drop(pokes);
        refresher.poke();
    }

    #[test]
    fn wrong_chain_names_both_chains_and_the_flag() {
        let e = FeedError::WrongChain {
            addr: "127.0.0.1:8332".into(),
            expected: "regtest".into(),
            got: "main".into(),
        };
        let shown = e.to_string();
        assert!(
            shown.contains("'main'") && shown.contains("'regtest'") && shown.contains("--net"),
            "{shown}"
        );
    }

    #[test]
    fn stopping_a_feed_whose_bitcoind_is_down_is_prompt() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let rpc = Arc::new(Client::new(
            "127.0.0.1",
            port,
            super::super::rpc::Auth::user_pass("u", "p"),
        ));
        let (feed, _templates) =
            Feed::start(rpc, FeedConfig::new(&ChainParams::regtest())).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let status = feed.status();
        assert!(
            !status.reachable && status.last_error.is_some(),
            "{status:?}"
        );
        let start = Instant::now();
        feed.stop().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
