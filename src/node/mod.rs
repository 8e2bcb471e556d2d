//! The coordinator: the `node` thread owns the share chain, the current template and
//! work, and the store's writes. Every other thread talks to it over channels.
//!
//! `start` brings the subsystems up in order (store and chain, bitcoind, payout address,
//! P2P, miners) and returns a `Running` node; `Running::stop` (SIGINT/SIGTERM) stops them
//! in reverse order and flushes the store.

pub mod history;
pub mod payout;
pub mod status;
pub mod sync;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, never, select, tick};
use log::{debug, error, info, warn};

use crate::bitcoin::hash::Hash256;
use crate::bitcoin::template::Template;
use crate::bitcoind::feed::{Feed, FeedConfig, FeedError, SignalRefresh, refresh_on_sigusr1};
use crate::bitcoind::heights::{HeightAnswer, HeightLookup, Heights};
use crate::bitcoind::link::{Link, LinkConfig, LinkEvent};
use crate::bitcoind::rpc::{Client, RpcError};
use crate::bitcoind::submit::{BlockSubmission, SubmitConfig, SubmitResult, Submitter};
use crate::config::Config;
use crate::p2p::{P2p, P2pConfig, P2pError, PeerEvent, Peers};
use crate::sharechain::best::BlockHeights;
use crate::sharechain::chain::{LoadError, ShareChain, Think};
use crate::store::{Batch, PendingWrites, Store, StoreError};
use crate::web::Web;
use crate::web::status::StatusBoard;
use crate::worker::{MinerEvent, Readiness, WebRoutes, Work, WorkerConfig, WorkerError, Workers};
use sync::ShareSync;

use history::{FoundBlock, History};
use payout::{Payout, PayoutError};

const LOG: &str = "node";
/// How often the node thinks and writes the store without other events.
const TICK: Duration = Duration::from_secs(1);
/// Events handled before the node thinks, so a flood cannot starve thinking.
const EVENTS_PER_THINK: usize = 64;
/// How often the share and peer counts are logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Why the node could not start or stopped by itself.
#[derive(Debug)]
pub enum NodeError {
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    Store(StoreError),
    Load(LoadError),
    /// bitcoind refused our credentials; `flag` says what to fix.
    Auth {
        error: RpcError,
        flag: &'static str,
    },
    Feed(FeedError),
    Payout(PayoutError),
    P2p(P2pError),
    Worker(WorkerError),
    Spawn(&'static str, std::io::Error),
    /// A thread ended by itself.
    Thread {
        name: &'static str,
        cause: String,
    },
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::DataDir { path, error } => {
                write!(
                    f,
                    "data directory {}: {error} (see --datadir)",
                    path.display()
                )
            }
            NodeError::Store(e) => write!(f, "store: {e}"),
            NodeError::Load(e) => write!(f, "loading the share chain: {e:?}"),
            NodeError::Auth { error, flag } => write!(f, "{error}; fix it with {flag}"),
            NodeError::Feed(e) => write!(f, "{e}"),
            NodeError::Payout(e) => write!(f, "{e}"),
            NodeError::P2p(e) => write!(f, "{e} (see --p2pool-port)"),
            NodeError::Worker(e) => write!(f, "{e} (see -w/--worker-port and --stratum-port)"),
            NodeError::Spawn(name, e) => write!(f, "cannot start the {name} thread: {e}"),
            NodeError::Thread { name, cause } => write!(f, "the {name} thread stopped: {cause}"),
        }
    }
}

impl std::error::Error for NodeError {}

pub use crate::unix_now;

/// Block heights for ranking: the cache; a miss is asked of bitcoind on the `heights`
/// thread (never waited for) and counts as unknown until the answer comes back as an event.
struct RankHeights<'a> {
    heights: &'a Heights,
    lookup: &'a HeightLookup,
    highest: u32,
}

impl BlockHeights for RankHeights<'_> {
    fn height(&self, block: &Hash256) -> u32 {
        match self.heights.cached(block) {
            Some(h) => u32::try_from(h).unwrap_or(u32::MAX),
            None => {
                self.lookup.ask(*block);
                0
            }
        }
    }

    fn highest(&self) -> u32 {
        self.highest
    }
}

/// The state the node thread owns.
struct Node {
    chain: ShareChain,
    store: Store,
    template: Option<Arc<Template>>,
    best: Option<Hash256>,
    heights: Heights,
    lookup: HeightLookup,
    feed: Feed,
    submitter: Submitter,
    history: History,
    payout: Payout,
    sync: ShareSync,
    peers: Peers,
    /// Address-book changes waiting for the next store write.
    addrs: Batch,
    /// Store writes that failed, kept and retried (`flush`).
    pending: PendingWrites,
    /// `None` once stopped (at shutdown, before the last events are drained).
    workers: Option<Workers>,
    /// What the current work was built from: the template's identity and the best share.
    work_from: Option<(usize, Option<Hash256>)>,
    readiness: Readiness,
    /// Shares found by this node's miners.
    local: HashSet<Hash256>,
    board: StatusBoard,
    started_at: u64,
    fee_percent: f64,
    start_new_chain: bool,
    last_think: Instant,
    last_progress: Instant,
    /// Shares came from peers since the last think.
    dirty: bool,
    /// bitcoind's clock minus ours (seconds), from the newest template's `curtime`.
    clock_offset: i64,
}

impl Node {
    fn on_template(&mut self, template: Arc<Template>) {
        let new_block = self
            .template
            .as_ref()
            .is_none_or(|t| t.previous_block != template.previous_block);
        self.heights.insert(
            template.previous_block,
            u64::from(template.height.saturating_sub(1)),
        );
        self.clock_offset = i64::from(template.cur_time) - unix_now() as i64;
        if new_block {
            info!(
                target: LOG,
                "new work from bitcoind: block {} on {}, {} transactions",
                template.height,
                template.previous_block,
                template.transactions.len()
            );
        }
        self.template = Some(template);
        self.think();
        self.update_work();
    }

    fn on_miner(&mut self, event: MinerEvent) {
        let MinerEvent::Share(found) = event;
        let now = self.corrected_now();
        // A block went to bitcoind from the miner's thread (recorded here), or goes now.
        if let Some(block) = found.block.clone() {
            self.submit_block_at(
                block,
                u64::from(found.height),
                &found.share.info.new_script,
                now,
                found.submitted,
            );
        }
        let hash = found.share.hash;
        info!(
            target: LOG,
            "share {hash} found by {}{}",
            found.miner,
            if found.block.is_some() { " (a block)" } else { "" }
        );
        self.local.insert(hash);
        self.chain.add(found.share, None, now);
        self.think();
        self.update_work();
    }

    /// Builds and hands out new work when the template or the best share changed.
    fn update_work(&mut self) {
        let Some(template) = self.template.clone() else {
            return;
        };
        let key = (Arc::as_ptr(&template) as usize, self.best);
        if self.work_from == Some(key) {
            return;
        }
        match Work::build(&self.chain, &template, self.best, unix_now()) {
            Ok(work) => {
                self.work_from = Some(key);
                if let Some(workers) = &self.workers {
                    workers.publish(Arc::new(work));
                }
            }
            Err(e) => warn!(target: LOG, "cannot build work: {e}"),
        }
    }

    /// Whether miners may mine, as R decides it.
    fn update_readiness(&mut self) {
        let net = self.chain.network();
        let readiness = if self.template.is_none() || !self.feed.status().reachable {
            Readiness::NoBitcoind
        } else if net.persist && !self.start_new_chain && self.peers.count() == 0 {
            Readiness::NoPeers
        } else if net.persist && !self.start_new_chain && self.best.is_none() {
            Readiness::DownloadingShares
        } else {
            Readiness::Ready
        };
        if readiness != self.readiness {
            match readiness.message() {
                None => info!(target: LOG, "serving miners"),
                Some(why) => warn!(
                    target: LOG,
                    "not serving miners: {why}{}",
                    if matches!(readiness, Readiness::NoPeers | Readiness::DownloadingShares) {
                        " (this network persists: connect to a node with -n, or start a new \
                         share chain with --start-new-chain)"
                    } else {
                        ""
                    }
                ),
            }
            self.readiness = readiness;
            if let Some(workers) = &self.workers {
                workers.set_readiness(readiness);
            }
        }
    }

    /// Publishes the state for the web.
    fn publish_status(&self) {
        let inputs = status::Inputs {
            chain: &self.chain,
            best: self.best,
            template: self.template.as_deref(),
            feed: self.feed.status(),
            history: &self.history,
            local: &self.local,
            started_at: self.started_at,
            now: unix_now(),
            ready: match self.readiness.message() {
                None => Ok(()),
                Some(why) => Err(why.to_string()),
            },
            fee_percent: self.fee_percent,
            payout_address: &self.payout.address,
            peers: self.peers.count(),
        };
        self.board.publish(status::fill(&inputs));
    }

    /// A height asked for came: the ranking that missed it is done again.
    fn on_height(&mut self, answer: HeightAnswer) {
        if answer.height.is_some() {
            self.chain.forget_scores();
            self.dirty = true;
        }
    }

    fn on_submitted(&mut self, result: SubmitResult) {
        self.history
            .set_outcome(&result.hash, result.outcome.to_string());
    }

    fn on_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Connected { id, info } => info!(
                target: LOG,
                "peer {id} connected: {} {} ({}, version {}, mode {})",
                if info.inbound { "from" } else { "to" },
                info.addr,
                info.sub_version,
                info.version,
                info.mode
            ),
            PeerEvent::Disconnected { id } => {
                debug!(target: LOG, "peer {id} disconnected");
                self.sync.on_disconnect(id);
            }
            PeerEvent::Message { id, msg } => {
                self.dirty = true;
                let now = self.corrected_now();
                let out = self
                    .sync
                    .on_message(id, msg, &mut self.chain, &self.peers, now);
                for block in out.blocks {
                    self.submit_block(block, now);
                }
            }
            PeerEvent::Addrs(changes) => {
                self.addrs.put_addrs.extend(changes.put);
                self.addrs.remove_addrs.extend(changes.remove);
            }
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected {
                user_agent,
                start_height,
                ..
            } => info!(
                target: LOG,
                "P2P link to bitcoind up: {user_agent} at height {start_height}"
            ),
            LinkEvent::Disconnected(why) => debug!(target: LOG, "P2P link to bitcoind down: {why}"),
            other => debug!(target: LOG, "P2P link: {other:?}"),
        }
    }

    /// Our clock corrected to bitcoind's (the future-timestamp rule reads it).
    fn corrected_now(&self) -> u64 {
        (unix_now() as i64).saturating_add(self.clock_offset).max(0) as u64
    }

    /// Verification, best share and pruning; then what follows from them.
    fn think(&mut self) -> Think {
        let now = self.corrected_now();
        let highest = self
            .template
            .as_ref()
            .map_or(0, |t| t.height.saturating_sub(1));
        let heights = RankHeights {
            heights: &self.heights,
            lookup: &self.lookup,
            highest,
        };
        let current = self.template.as_ref().map(|t| t.previous_block);
        let think = self.chain.think(&heights, current, now);
        self.dirty = false;
        for (hash, peer, why) in &think.bad {
            warn!(target: LOG, "share {hash} from peer {peer:?} failed verification: {why}");
        }
        for block in &think.blocks {
            self.submit_block(block.clone(), now);
        }
        self.sync.after_think(&think, &self.chain, &self.peers, now);
        if think.best != self.best {
            self.best = think.best;
            if let Some(best) = self.best {
                let (height, _) = self.chain.tracker().height_and_last(Some(best));
                debug!(target: LOG, "best share {best} at height {height}");
            }
        }
        self.last_think = Instant::now();
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            let p = ShareSync::progress(&self.chain);
            info!(
                target: LOG,
                "shares: have {} of ~{} ({} verified), best {}; peers: {}",
                p.have,
                p.want,
                p.verified,
                self.best.map_or("none".to_string(), |b| b.to_hex()),
                self.peers.count()
            );
        }
        think
    }

    fn submit_block(&mut self, block: crate::bitcoin::block::Block, now: u64) {
        let hash = block.header.hash();
        let height = self
            .heights
            .cached(&block.header.previous_block)
            .map(|h| h + 1)
            .or(self.template.as_ref().map(|t| u64::from(t.height)))
            .unwrap_or(0);
        // A share's hash is its header's hash: the block and the share share it.
        let finder = self
            .chain
            .tracker()
            .get(&hash)
            .map(|s| s.info.new_script.clone())
            .unwrap_or_default();
        self.submit_block_at(block, height, &finder, now, false);
    }

    /// Records a found block and submits it once (a block already recorded is not sent
    /// again; one a miner's thread `submitted` is only recorded).
    fn submit_block_at(
        &mut self,
        block: crate::bitcoin::block::Block,
        height: u64,
        finder: &[u8],
        now: u64,
        submitted: bool,
    ) {
        let hash = block.header.hash();
        let found = FoundBlock::new(
            &block,
            height,
            hash,
            finder,
            now,
            &self.chain.network().bitcoin,
        );
        if !self.history.found(found) {
            return;
        }
        if submitted {
            info!(target: LOG, "BLOCK FOUND: {hash} at height {height}; submitted by the miner's thread");
            return;
        }
        info!(target: LOG, "BLOCK FOUND: {hash} at height {height}; submitting");
        let bytes = crate::bitcoin::encode::Encode::to_bytes(&block);
        if let Err(e) = self
            .submitter
            .submit(BlockSubmission::new(&block.header, height, bytes))
        {
            error!(target: LOG, "{e}");
        }
    }

    /// Writes this tick's changes, with any earlier ones the store failed to take, in one
    /// transaction; what fails stays pending and is retried at the next tick.
    fn flush(&mut self) {
        let mut batch = self.chain.take_batch();
        let addrs = std::mem::take(&mut self.addrs);
        batch.put_addrs = addrs.put_addrs;
        batch.remove_addrs = addrs.remove_addrs;
        self.history.write_to(&mut batch);
        for note in self.pending.write(&mut self.store, batch, unix_now()) {
            log::log!(target: LOG, note.level, "{}", note.message);
        }
    }
}

/// A started node.
pub struct Running {
    stop: Option<Sender<()>>,
    node: Option<JoinHandle<Result<(), NodeError>>>,
    /// Ends (disconnects) when the node thread ends, whatever the reason.
    done: Receiver<()>,
}

impl Running {
    /// A channel that is disconnected once the node thread has ended.
    pub fn done(&self) -> &Receiver<()> {
        &self.done
    }

    /// Stops every thread and flushes the store; returns why the node had stopped if it
    /// stopped by itself.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop.take();
        match self.node.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(NodeError::Thread {
                name: "node",
                cause: "panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Opens the store, checks bitcoind, starts every subsystem and the node thread.
pub fn start(config: Config) -> Result<Running, NodeError> {
    let net = config.net.clone();
    std::fs::create_dir_all(&config.datadir).map_err(|error| NodeError::DataDir {
        path: config.datadir.clone(),
        error,
    })?;
    let store = Store::open(&config.datadir.join("store"), &net.name).map_err(NodeError::Store)?;
    let chain = ShareChain::load(net.clone(), &store, false).map_err(NodeError::Load)?;
    let history = History::load(&store).map_err(NodeError::Store)?;

    let b = &config.bitcoind;
    let rpc = Arc::new(Client::new(&b.host, b.rpc_port, b.auth.clone()));
    // A first call tells a wrong password (fatal: it will not fix itself) from a bitcoind
    // that is down or warming up (the feed keeps trying).
    match rpc.get_blockchain_info() {
        Err(error @ RpcError::AuthFailed { .. }) => {
            return Err(NodeError::Auth {
                error,
                flag: b.auth_flag,
            });
        }
        Err(e) => warn!(
            target: LOG,
            "bitcoind is not answering yet ({e}); the node keeps trying"
        ),
        Ok(info) => info!(
            target: LOG,
            "bitcoind at {}:{} is on chain {} at height {}",
            b.host, b.rpc_port, info.chain, info.blocks
        ),
    }

    let payout = match &config.address {
        Some((address, script)) => Payout {
            address: address.clone(),
            script: script.clone(),
            source: payout::Source::Flag,
        },
        None => payout::resolve(&rpc, &net.bitcoin, &config.datadir).map_err(NodeError::Payout)?,
    };
    if let payout::Source::KeyFile { path, created } = &payout.source {
        warn!(
            target: LOG,
            "paying to {} from the key in {}{}: back this file up, it is the only way to spend \
             this node's payouts (import it into a wallet as a WIF private key), or pass -a ADDRESS",
            payout.address,
            path.display(),
            if *created { " (generated now)" } else { "" }
        );
    }

    let (feed, templates) =
        Feed::start(rpc.clone(), FeedConfig::new(&net.bitcoin)).map_err(NodeError::Feed)?;
    let usr1 =
        refresh_on_sigusr1(feed.refresher()).map_err(|e| NodeError::Spawn("signal_usr1", e))?;
    let (results_tx, results) = bounded(64);
    let mut submitter = Submitter::start(rpc.clone(), SubmitConfig::default(), Some(results_tx))
        .map_err(|e| NodeError::Spawn("submitter", e))?;
    let (link, link_events) = match b.p2p_port {
        Some(port) => {
            let (link, events) = Link::start(
                LinkConfig::new(&b.host, port, &net.bitcoin),
                Some(feed.refresher()),
            )
            .map_err(|e| NodeError::Spawn("bitcoind_link", std::io::Error::other(e.to_string())))?;
            submitter.attach_link(link.block_sender());
            (Some(link), events)
        }
        None => (None, never()),
    };

    let mut p2p_cfg = P2pConfig::new(net.clone(), config.p2p_listen);
    p2p_cfg.connect = config.connect.clone();
    p2p_cfg.max_inbound = config.max_inbound;
    p2p_cfg.max_outbound = config.max_outbound;
    p2p_cfg.external_ip = config.external_ip;
    p2p_cfg.low_bandwidth = config.low_bandwidth;
    p2p_cfg.addrs = store.load_addrs().map_err(NodeError::Store)?;
    let (p2p, peer_events) = P2p::start(p2p_cfg).map_err(NodeError::P2p)?;
    info!(target: LOG, "listening for P2Pool peers on {}", p2p.local_addr());

    let board = StatusBoard::new();
    let web = Arc::new(Web::new(board.clone()));
    let peers = p2p.peers();
    web.set_peers(crate::web::peer_source(peers.clone()));
    let mut worker_cfg = WorkerConfig::new(net.clone(), payout.script.clone());
    worker_cfg.worker_addr = config.worker_listen;
    worker_cfg.stratum_addr = config.stratum_listen;
    worker_cfg.fee_percent = config.fee;
    worker_cfg.blocks = Some(submitter.handle());
    let routes: Arc<dyn WebRoutes> = web.clone();
    let (workers, miner_events) =
        Workers::start(worker_cfg, Some(routes)).map_err(NodeError::Worker)?;
    info!(
        target: LOG,
        "miners: getwork and the dashboard on http://{}/, Stratum on {}",
        workers.worker_addr(),
        workers.stratum_addr()
    );
    {
        let stats = workers.stats_source();
        web.set_miners(Arc::new(move || crate::web::miner_views(&stats())));
    }

    let (lookup, height_answers) =
        HeightLookup::start(feed.heights()).map_err(|e| NodeError::Spawn("heights", e))?;
    let node = Node {
        chain,
        store,
        template: None,
        best: None,
        heights: feed.heights(),
        lookup,
        feed,
        submitter,
        history,
        payout,
        sync: ShareSync::new(net.clone()),
        peers,
        addrs: Batch::default(),
        pending: PendingWrites::default(),
        workers: Some(workers),
        work_from: None,
        // Announced at the first tick, whatever it is.
        readiness: Readiness::Ready,
        local: HashSet::new(),
        board,
        started_at: unix_now(),
        fee_percent: config.fee,
        start_new_chain: config.start_new_chain,
        last_think: Instant::now(),
        last_progress: Instant::now(),
        dirty: false,
        clock_offset: 0,
    };
    if !matches!(node.payout.source, payout::Source::KeyFile { .. }) {
        info!(target: LOG, "paying to {}", node.payout.address);
    }

    let (stop_tx, stop_rx) = bounded::<()>(0);
    let (done_tx, done_rx) = bounded::<()>(0);
    let parts = Parts {
        p2p,
        usr1,
        link,
        inputs: Inputs {
            stop: stop_rx,
            templates,
            peer_events,
            miner_events,
            results,
            link_events,
            height_answers,
            ticker: tick(TICK),
        },
    };
    let thread = thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            let _done = done_tx;
            run(node, parts)
        })
        .map_err(|e| NodeError::Spawn("node", e))?;
    Ok(Running {
        stop: Some(stop_tx),
        node: Some(thread),
        done: done_rx,
    })
}

/// The subsystems the node thread stops when it ends.
struct Parts {
    p2p: P2p,
    usr1: SignalRefresh,
    link: Option<Link>,
    inputs: Inputs,
}

/// Every channel the node thread reads.
struct Inputs {
    stop: Receiver<()>,
    templates: Receiver<Arc<Template>>,
    peer_events: Receiver<PeerEvent>,
    miner_events: Receiver<MinerEvent>,
    results: Receiver<SubmitResult>,
    link_events: Receiver<LinkEvent>,
    height_answers: Receiver<HeightAnswer>,
    ticker: Receiver<Instant>,
}

/// One thing for the node thread to handle.
enum Input {
    Template(Arc<Template>),
    Peer(PeerEvent),
    Miner(MinerEvent),
    Submitted(SubmitResult),
    Link(LinkEvent),
    Height(HeightAnswer),
    Tick,
    Stop,
}

/// A subsystem's channel closed: the node stops, naming it.
fn died(name: &'static str) -> NodeError {
    NodeError::Thread {
        name,
        cause: "its channel closed".into(),
    }
}

impl Inputs {
    /// Waits for the next input. A closed channel is an error naming its subsystem (a
    /// closed channel is always ready: ignoring it would spin the loop).
    fn next(&self) -> Result<Input, NodeError> {
        select! {
            recv(self.stop) -> _ => Ok(Input::Stop),
            recv(self.templates) -> t => t.map(Input::Template).map_err(|_| died("template")),
            recv(self.peer_events) -> e => e.map(Input::Peer).map_err(|_| died("p2p")),
            recv(self.miner_events) -> e => e.map(Input::Miner).map_err(|_| died("worker")),
            recv(self.results) -> r => r.map(Input::Submitted).map_err(|_| died("submitter")),
            recv(self.link_events) -> e => e.map(Input::Link).map_err(|_| died("bitcoind_link")),
            recv(self.height_answers) -> a => a.map(Input::Height).map_err(|_| died("heights")),
            recv(self.ticker) -> _ => Ok(Input::Tick),
        }
    }
}

fn run(mut node: Node, parts: Parts) -> Result<(), NodeError> {
    node.think();
    let inputs = &parts.inputs;
    let outcome = loop {
        let mut handled = 0;
        let mut stopped = None;
        let mut ticked = false;
        // Events until the batch is full or the tick: a flood cannot starve thinking.
        while handled < EVENTS_PER_THINK {
            match inputs.next() {
                Ok(Input::Stop) => stopped = Some(Ok(())),
                Ok(Input::Template(t)) => node.on_template(t),
                Ok(Input::Peer(e)) => node.on_peer(e),
                Ok(Input::Miner(e)) => node.on_miner(e),
                Ok(Input::Submitted(r)) => node.on_submitted(r),
                Ok(Input::Link(e)) => node.on_link(e),
                Ok(Input::Height(a)) => node.on_height(a),
                Ok(Input::Tick) => ticked = true,
                Err(e) => stopped = Some(Err(e)),
            }
            if stopped.is_some() || ticked {
                break;
            }
            handled += 1;
        }
        if let Some(outcome) = stopped {
            break outcome;
        }
        // Shares from peers are thought about after each batch (relays wait on it);
        // readiness, the status page and the store once per tick.
        if node.dirty || ticked {
            node.think();
            node.update_work();
        }
        if ticked {
            node.update_readiness();
            node.publish_status();
            node.flush();
        }
    };
    if let Err(e) = &outcome {
        error!(target: LOG, "{e}; stopping");
    } else {
        info!(target: LOG, "stopping");
    }
    let Parts {
        p2p,
        usr1,
        link,
        inputs,
    } = parts;
    // Stop accepting, and drain what the miners and peers sent before they stopped.
    if let Some(workers) = node.workers.take() {
        workers.stop();
    }
    p2p.stop();
    for e in inputs.miner_events.try_iter() {
        node.on_miner(e);
    }
    for e in inputs.peer_events.try_iter() {
        node.on_peer(e);
    }
    node.think();
    // Then the store, then the bitcoind services.
    node.flush();
    usr1.stop();
    if let Some(link) = link {
        link.stop();
    }
    let Node {
        submitter,
        feed,
        lookup,
        ..
    } = node;
    lookup.stop();
    let feed_result = feed.stop();
    submitter.stop();
    if let Err(e) = feed_result {
        error!(target: LOG, "{e}");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's inputs, with the senders kept by the test.
    struct Senders {
        stop: Sender<()>,
        templates: Sender<Arc<Template>>,
        peer_events: Sender<PeerEvent>,
        miner_events: Sender<MinerEvent>,
        results: Sender<SubmitResult>,
        link_events: Sender<LinkEvent>,
        height_answers: Sender<HeightAnswer>,
    }

    fn inputs() -> (Inputs, Senders) {
        let (stop, stop_rx) = bounded(1);
        let (templates, templates_rx) = bounded(1);
        let (peer_events, peer_rx) = bounded(1);
        let (miner_events, miner_rx) = bounded(1);
        let (results, results_rx) = bounded(1);
        let (link_events, link_rx) = bounded(1);
        let (height_answers, heights_rx) = bounded(1);
        (
            Inputs {
                stop: stop_rx,
                templates: templates_rx,
                peer_events: peer_rx,
                miner_events: miner_rx,
                results: results_rx,
                link_events: link_rx,
                height_answers: heights_rx,
                ticker: never(),
            },
            Senders {
                stop,
                templates,
                peer_events,
                miner_events,
                results,
                link_events,
                height_answers,
            },
        )
    }

    fn name_of(e: NodeError) -> &'static str {
        match e {
            NodeError::Thread { name, .. } => name,
            other => panic!("not a thread's end: {other}"),
        }
    }

    #[test]
    fn a_subsystem_whose_channel_closes_stops_the_node_with_its_name() {
        let names = [
            "template",
            "p2p",
            "worker",
            "submitter",
            "bitcoind_link",
            "heights",
        ];
        for (i, want) in names.iter().enumerate() {
            let (inputs, s) = inputs();
            let Senders {
                stop,
                templates,
                peer_events,
                miner_events,
                results,
                link_events,
                height_answers,
            } = s;
            // Every sender but the i-th stays alive.
            let mut alive: Vec<Box<dyn std::any::Any>> = vec![Box::new(stop)];
            let senders: Vec<Box<dyn std::any::Any>> = vec![
                Box::new(templates),
                Box::new(peer_events),
                Box::new(miner_events),
                Box::new(results),
                Box::new(link_events),
                Box::new(height_answers),
            ];
            for (j, sender) in senders.into_iter().enumerate() {
                if j != i {
                    alive.push(sender);
                }
            }
            match inputs.next() {
                Err(e) => assert_eq!(name_of(e), *want),
                Ok(_) => panic!("{want}: a closed channel was taken for an input"),
            }
            // Asked again, the same answer at once: the loop stops on it, never spins.
            assert!(inputs.next().is_err());
            drop(alive);
        }
    }

    #[test]
    fn a_dropped_stop_sender_is_a_stop_not_a_death() {
        let (inputs, s) = inputs();
        drop(s.stop);
        assert!(matches!(inputs.next(), Ok(Input::Stop)));
        drop(s.templates);
    }
}
