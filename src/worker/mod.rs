//! Miners: getwork over HTTP with long polling (`http`, `longpoll`) and Stratum v1
//! (`stratum`) on their own ports, jobs built from the node's `Work` (`work`), pseudo-share
//! difficulty and per-miner statistics (`miners`).
//!
//! The node thread builds a `Work` whenever the best share or the template changes and
//! hands it to `Workers::publish`; miner threads build each miner's job from it without
//! touching the tracker. A solution that meets the share target goes back to the node as
//! a `MinerEvent`; pseudo-shares never leave this module.

pub mod body;
pub mod getwork;
pub mod http;
pub mod longpoll;
pub mod miners;
pub mod service;
pub mod stratum;
pub mod submit;
pub mod work;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use log::info;

use crate::bitcoin::block::Block;
use crate::bitcoin::encode::Encode;
use crate::bitcoind::submit::{BlockSubmission, SubmitHandle};
use crate::network::Network;
use crate::sharechain::share::Share;
use crate::thread::Shutdown;

pub use http::{HttpReply, WebRoutes};
pub use miners::MinerStats;
pub use work::{Work, WorkError};

const LOG: &str = "worker";
/// Found shares waiting for the node.
const EVENT_QUEUE: usize = 1024;
/// Most HTTP connections open at once, by default.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Most Stratum connections open at once, by default (`--max-stratum-connections`): room
/// for 10,000 miners and more.
pub const MAX_STRATUM_CONNECTIONS: usize = 16_384;

/// Settings of the worker side.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub net: Network,
    /// getwork, long polling and the web side.
    pub worker_addr: SocketAddr,
    pub stratum_addr: SocketAddr,
    /// `--fee`: the percentage of jobs that pay `node_payout` instead of the miner.
    pub fee_percent: f64,
    /// The node's own payout script.
    pub node_payout: Vec<u8>,
    /// A parked long poll is answered with the current work after this long.
    pub long_poll_deadline: Duration,
    /// Seconds wanted between a miner's pseudo-shares.
    pub vardiff_interval: f64,
    /// The first pseudo-share difficulty of a new miner.
    pub initial_difficulty: f64,
    /// The easiest pseudo-share difficulty; `None`: the network's MAX_TARGET.
    pub min_difficulty: Option<f64>,
    /// Threads answering HTTP requests.
    pub http_threads: usize,
    /// Largest HTTP request body read.
    pub max_body: usize,
    /// Most HTTP connections open at once (a parked long poll keeps its connection's
    /// place); more are closed as they are accepted.
    pub max_http_connections: usize,
    /// Longest an HTTP connection may stay silent in a read (request heads, bodies, idle
    /// keep-alive), and longest a request head may take to arrive.
    pub http_timeout: Duration,
    /// Longest Stratum line read.
    pub max_line: usize,
    /// Most Stratum connections open at once (`--max-stratum-connections`); more are
    /// answered with an error line and closed as they are accepted.
    pub max_stratum_connections: usize,
    /// A Stratum connection silent this long (after authorizing) is closed.
    pub stratum_idle: Duration,
    /// A Stratum connection that has not authorized within this long is closed.
    pub stratum_login: Duration,
    /// A Stratum miner that received nothing for this long gets its job again.
    pub stratum_keepalive: Duration,
    /// Where a miner's thread submits a block it found, at once, before telling the node
    /// (`None`: the node submits it).
    pub blocks: Option<SubmitHandle>,
    /// Found shares waiting for the node; a miner whose share finds it full waits (its
    /// answer with it) until the node takes one.
    pub events_queue: usize,
}

impl WorkerConfig {
    /// Defaults for `net`: its worker and Stratum ports on every interface.
    pub fn new(net: Network, node_payout: Vec<u8>) -> WorkerConfig {
        WorkerConfig {
            worker_addr: SocketAddr::from(([0, 0, 0, 0], net.worker_port)),
            stratum_addr: SocketAddr::from(([0, 0, 0, 0], net.stratum_port)),
            net,
            fee_percent: 0.0,
            node_payout,
            long_poll_deadline: Duration::from_secs(120),
            vardiff_interval: 5.0,
            initial_difficulty: 1.0,
            min_difficulty: None,
            http_threads: 4,
            max_body: 64 * 1024,
            max_http_connections: MAX_HTTP_CONNECTIONS,
            http_timeout: Duration::from_secs(30),
            max_line: 16 * 1024,
            max_stratum_connections: MAX_STRATUM_CONNECTIONS,
            stratum_idle: Duration::from_secs(600),
            stratum_login: Duration::from_secs(60),
            stratum_keepalive: Duration::from_secs(30),
            blocks: None,
            events_queue: EVENT_QUEUE,
        }
    }

    /// The easiest pseudo-share difficulty: the configured one, never easier than the
    /// network's MAX_TARGET.
    pub fn min_difficulty(&self) -> f64 {
        let floor = miners::target_difficulty(self.net.max_target);
        self.min_difficulty.map_or(floor, |d| d.max(floor))
    }

    pub fn vardiff(&self) -> miners::VardiffConfig {
        miners::VardiffConfig {
            target_interval: self.vardiff_interval,
            min_difficulty: self.min_difficulty(),
            initial_difficulty: self.initial_difficulty,
        }
    }
}

/// Whether miners may mine (R's -12345 errors when not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// No best share yet on a network that persists.
    DownloadingShares,
    /// No peers on a network that persists.
    NoPeers,
    /// bitcoind has not answered since the node started.
    BitcoindUnreached,
    /// bitcoind answered before and no longer does.
    NoBitcoind,
    /// bitcoind answers but gives no usable block template (yet).
    NoTemplate,
}

impl Readiness {
    /// The message miners get (R's, where R had one), or `None` when ready.
    pub fn message(self) -> Option<&'static str> {
        match self {
            Readiness::Ready => None,
            Readiness::DownloadingShares => Some("p2pool is downloading shares"),
            Readiness::NoPeers => Some("p2pool is not connected to any peers"),
            Readiness::BitcoindUnreached => Some("p2pool has not reached bitcoind yet"),
            Readiness::NoBitcoind => Some("lost contact with bitcoind"),
            Readiness::NoTemplate => Some("bitcoind gives no block template yet"),
        }
    }

    /// What keeps the node from serving miners: `bitcoind`, `peers` or `shares`.
    pub fn cause(self) -> Option<&'static str> {
        match self {
            Readiness::Ready => None,
            Readiness::DownloadingShares => Some("shares"),
            Readiness::NoPeers => Some("peers"),
            Readiness::BitcoindUnreached | Readiness::NoBitcoind | Readiness::NoTemplate => {
                Some("bitcoind")
            }
        }
    }
}

/// A solution from a local miner that meets the share target.
#[derive(Debug, Clone)]
pub struct FoundShare {
    pub share: Share,
    /// The whole block when the solution also meets the block target: submit it at once.
    pub block: Option<Block>,
    /// The block's height (the template's).
    pub height: u32,
    /// The `Work::id` the job came from.
    pub work_id: u64,
    /// The block went to bitcoind from the miner's thread already (the node only
    /// records it).
    pub submitted: bool,
    /// `address` or `address.worker`.
    pub miner: String,
}

impl FoundShare {
    /// The block, ready for `Submitter::submit`.
    pub fn submission(&self) -> Option<BlockSubmission> {
        self.block
            .as_ref()
            .map(|b| BlockSubmission::new(&b.header, u64::from(self.height), b.to_bytes()))
    }
}

/// What the worker side tells the node.
#[derive(Debug, Clone)]
pub enum MinerEvent {
    Share(Box<FoundShare>),
}

#[derive(Debug)]
pub enum WorkerError {
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    Spawn(io::Error),
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Bind { what, addr, source } => {
                write!(f, "cannot listen for {what} on {addr}: {source}")
            }
            WorkerError::Spawn(e) => write!(f, "cannot start the worker threads: {e}"),
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::Bind { source, .. } => Some(source),
            WorkerError::Spawn(e) => Some(e),
        }
    }
}

/// State shared by the worker threads.
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub work: RwLock<Option<Arc<Work>>>,
    pub readiness: RwLock<Readiness>,
    pub registry: miners::Registry,
    pub events: Sender<MinerEvent>,
    pub seen: Mutex<submit::Seen>,
    /// The parents of our latest shares (`submit::BLOCKS_ON_KEPT`).
    pub parents: Mutex<std::collections::VecDeque<Option<crate::bitcoin::hash::Hash256>>>,
    /// The previous blocks of our latest blocks (`submit::BLOCKS_ON_KEPT`).
    pub blocks_on: Mutex<std::collections::VecDeque<crate::bitcoin::hash::Hash256>>,
    /// The best share of the work published last, when it became so, and the part of
    /// `Work::pace` (0 to 1) our miners wait after that before a share (`submit::paced`).
    pub tip: Mutex<Option<submit::Tip>>,
    pub next_extranonce: AtomicU32,
    /// Stops every worker thread.
    pub shutdown: Shutdown,
    pub stratum_addr: SocketAddr,
}

impl Shared {
    pub fn current(&self) -> Option<Arc<Work>> {
        self.work.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn readiness(&self) -> Readiness {
        *self.readiness.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh extranonce1 (a counter, never random, as the node policy says).
    pub fn extranonce1(&self) -> [u8; work::EXTRANONCE1_SIZE] {
        self.next_extranonce
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes()
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.is_stopped()
    }
}

/// The running worker side.
pub struct Workers {
    shared: Arc<Shared>,
    http: http::HttpServer,
    longpoll: longpoll::LongPoll,
    stratum: stratum::StratumServer,
}

impl Workers {
    /// Starts the getwork server (with `web` serving every other request on the same port)
    /// and the Stratum listener. Found shares arrive on the returned receiver.
    pub fn start(
        config: WorkerConfig,
        web: Option<Arc<dyn WebRoutes>>,
    ) -> Result<(Workers, Receiver<MinerEvent>), WorkerError> {
        let (events, events_rx) = bounded(config.events_queue.max(1));
        let listener =
            crate::limits::listen(config.stratum_addr).map_err(|source| WorkerError::Bind {
                what: "stratum",
                addr: config.stratum_addr,
                source,
            })?;
        let stratum_addr = listener.local_addr().map_err(WorkerError::Spawn)?;
        let shared = Arc::new(Shared {
            work: RwLock::new(None),
            readiness: RwLock::new(Readiness::Ready),
            registry: miners::Registry::default(),
            events,
            seen: Mutex::new(submit::Seen::default()),
            parents: Mutex::default(),
            blocks_on: Mutex::default(),
            tip: Mutex::default(),
            next_extranonce: AtomicU32::new(1),
            shutdown: Shutdown::new(),
            stratum_addr,
            config,
        });
        let longpoll = longpoll::LongPoll::start(shared.clone())?;
        let http = http::HttpServer::start(shared.clone(), longpoll.handle(), web)?;
        let stratum = stratum::StratumServer::start(shared.clone(), listener)?;
        info!(
            target: LOG,
            "miners: getwork on {}, stratum on {}",
            http.addr(),
            stratum_addr
        );
        Ok((
            Workers {
                shared,
                http,
                longpoll,
                stratum,
            },
            events_rx,
        ))
    }

    /// Where getwork (and the web side) listens.
    pub fn worker_addr(&self) -> SocketAddr {
        self.http.addr()
    }

    pub fn stratum_addr(&self) -> SocketAddr {
        self.shared.stratum_addr
    }

    /// New work: answers every parked long poll and sends every Stratum miner a job with
    /// clean_jobs set.
    pub fn publish(&self, work: Arc<Work>) {
        submit::new_tip(&self.shared, work.best, std::time::Instant::now());
        *self.shared.work.write().unwrap_or_else(|e| e.into_inner()) = Some(work.clone());
        self.longpoll.wake();
        self.stratum.notify_all();
    }

    /// Sets whether miners may mine; when ready again, parked long polls are answered.
    pub fn set_readiness(&self, readiness: Readiness) {
        let before = std::mem::replace(
            &mut *self
                .shared
                .readiness
                .write()
                .unwrap_or_else(|e| e.into_inner()),
            readiness,
        );
        if before != readiness && readiness == Readiness::Ready {
            self.longpoll.wake();
        }
    }

    /// Per-miner statistics.
    pub fn stats(&self) -> Vec<MinerStats> {
        self.shared.registry.stats()
    }

    /// Per-miner statistics from any thread (for the web).
    pub fn stats_source(&self) -> Arc<dyn Fn() -> Vec<MinerStats> + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.registry.stats())
    }

    /// Open Stratum connections.
    pub fn stratum_connections(&self) -> usize {
        self.stratum.connections()
    }

    /// The last new work sent to every Stratum miner, and how long that took.
    pub fn last_stratum_broadcast(&self) -> Option<stratum::Broadcast> {
        self.stratum.last_broadcast()
    }

    /// Long polls parked now.
    pub fn parked_long_polls(&self) -> usize {
        self.longpoll.parked()
    }

    /// Stops every worker thread and closes every connection.
    pub fn stop(self) {
        self.shared.shutdown.stop();
        self.stratum.stop();
        self.http.stop();
        self.longpoll.stop();
    }
}
