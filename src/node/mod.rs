//! The coordinator: the `node` thread owns the share chain, the current template and
//! work, and the store's writes. Every other thread talks to it over channels.
//!
//! `start` brings the subsystems up in order (store and chain, bitcoind, payout address,
//! P2P, miners) and returns a `Running` node; `Running::stop` (SIGINT/SIGTERM) stops them
//! in reverse order and flushes the store.

pub mod core;
pub mod history;
pub mod local;
pub mod payout;
pub mod status;
pub mod sync;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, never, select, tick};
use log::{debug, error, info, warn};

use crate::bitcoin::template::Template;
use crate::bitcoind::feed::{
    Feed, FeedConfig, FeedError, FeedStatus, SignalRefresh, refresh_on_sigusr1,
};
use crate::bitcoind::heights::{HeightAnswer, HeightLookup};
use crate::bitcoind::link::{Link, LinkConfig, LinkEvent};
use crate::bitcoind::rpc::{Client, RpcError};
use crate::bitcoind::submit::{SubmitConfig, SubmitResult, Submitter};
use crate::config::Config;
use crate::p2p::{P2p, P2pConfig, P2pError, PeerEvent, Peers};
use crate::sharechain::chain::{LoadError, ShareChain};
use crate::store::{PendingWrites, Store, StoreError};
use crate::thread::Shutdown;
use crate::web::Web;
use crate::web::status::StatusBoard;
use crate::worker::{MinerEvent, WebRoutes, WorkerConfig, WorkerError, Workers};

use core::{Core, Effect, Event, Settings};
use history::History;
use payout::{Payout, PayoutError};

const LOG: &str = "node";
/// How often the node thinks and writes the store without other events.
const TICK: Duration = Duration::from_secs(1);
/// Events handled before the node thinks, so a flood cannot starve thinking. A batch
/// also ends as soon as no input is waiting: a share from a peer is weighed (and our
/// miners moved onto it) at once, not at the next tick.
const EVENTS_PER_THINK: usize = 64;

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

/// What the node thread drives besides its [`Core`]: the store and the subsystems'
/// handles, through which the core's effects are carried out.
struct Services {
    store: Store,
    /// Store writes that failed, kept and retried.
    pending: PendingWrites,
    submitter: Submitter,
    lookup: HeightLookup,
    feed: Feed,
    peers: Peers,
    /// `None` once stopped (at shutdown, before the last events are drained).
    workers: Option<Workers>,
    board: StatusBoard,
    p2p: Option<P2p>,
    usr1: SignalRefresh,
    link: Option<Link>,
}

/// Where the node loop's effects go, and what it stops: the real services, or a test's.
pub trait Outputs {
    /// Carries out the core's effects, in order.
    fn apply(&mut self, effects: Vec<Effect>);
    /// The feed's view of bitcoind, read at each tick.
    fn feed_status(&self) -> FeedStatus;
    /// After each batch and tick: a look at the core (tests record what they assert on),
    /// with the longest the core took on one event of the batch.
    fn observe(&mut self, _core: &Core, _longest: Duration) {}
    /// Stops accepting miners and peers; their queued events are then handled.
    fn stop_accepting(&mut self);
    /// Stops what is left, after the last store write.
    fn stop(self);
}

impl Outputs for Services {
    fn apply(&mut self, effects: Vec<Effect>) {
        Services::apply(self, effects);
    }

    fn feed_status(&self) -> FeedStatus {
        self.feed.status()
    }

    fn stop_accepting(&mut self) {
        if let Some(workers) = self.workers.take() {
            workers.stop();
        }
        if let Some(p2p) = self.p2p.take() {
            p2p.stop();
        }
    }

    fn stop(self) {
        self.usr1.stop();
        if let Some(link) = self.link {
            link.stop();
        }
        self.lookup.stop();
        let feed_result = self.feed.stop();
        self.submitter.stop();
        if let Err(e) = feed_result {
            error!(target: LOG, "{e}");
        }
    }
}

impl Services {
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { .. } | Effect::Score { .. } | Effect::BestShare(_) => {
                    apply_to_peers(effect, &self.peers);
                }
                Effect::Work(work) => {
                    self.submitter
                        .set_tip(u64::from(work.height.saturating_sub(1)));
                    if let Some(workers) = &self.workers {
                        workers.publish(work);
                    }
                }
                Effect::Readiness(r) => {
                    if let Some(workers) = &self.workers {
                        workers.set_readiness(r);
                    }
                }
                Effect::Submit(block) => {
                    if let Err(e) = self.submitter.submit(block) {
                        error!(target: LOG, "{e}");
                    }
                }
                Effect::Store(batch) => {
                    for note in self.pending.write(&mut self.store, batch, unix_now()) {
                        log::log!(target: LOG, note.level, "{}", note.message);
                    }
                }
                Effect::Status(status) => {
                    // This node's miners sampled with each status, for the charts' history.
                    let miners = self
                        .workers
                        .as_ref()
                        .map(|w| crate::web::miner_views(&w.stats()))
                        .unwrap_or_default();
                    self.board.publish_with_miners(*status, &miners);
                }
                Effect::AskHeight(block) => self.lookup.ask(block),
            }
        }
    }
}

/// Carries out an effect meant for the peers (a frame, a ban score, our best share)
/// on the P2P side; any other effect is left alone.
pub fn apply_to_peers(effect: Effect, peers: &Peers) {
    match effect {
        Effect::Send { peer, frame } => {
            peers.send_frame(peer, frame);
        }
        Effect::Score {
            peer,
            points,
            reason,
            close,
        } => {
            if close {
                peers.punish(peer, points, &reason);
            } else {
                peers.add_ban_score(peer, points, &reason);
            }
        }
        Effect::BestShare(best) => peers.set_best_share(best),
        _ => {}
    }
}

fn on_link(event: LinkEvent) {
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

/// A started node.
pub struct Running {
    shutdown: Shutdown,
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
        self.shutdown.stop();
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

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.stop();
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
            "bitcoind is not answering yet ({e}); the node keeps trying: {}",
            status::advice(Some(e.trouble()), false)
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
    p2p_cfg.connect_hosts = config.connect_hosts.clone();
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
    web.set_chain(net.bitcoin.clone());
    let mut worker_cfg = WorkerConfig::new(net.clone(), payout.script.clone());
    worker_cfg.worker_addr = config.worker_listen;
    worker_cfg.stratum_addr = config.stratum_listen;
    worker_cfg.fee_percent = config.fee;
    worker_cfg.max_stratum_connections = config.max_stratum_connections;
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
    if !matches!(payout.source, payout::Source::KeyFile { .. }) {
        info!(target: LOG, "paying to {}", payout.address);
    }
    let core = Core::new(
        chain,
        history,
        Settings {
            fee_percent: config.fee,
            start_new_chain: config.start_new_chain,
            payout_address: payout.address.clone(),
            our_mode: if config.low_bandwidth {
                crate::p2p::MODE_LOW_BANDWIDTH
            } else {
                crate::p2p::MODE_NORMAL
            },
            started_at: unix_now(),
        },
    );
    let services = Services {
        store,
        pending: PendingWrites::default(),
        submitter,
        lookup,
        feed,
        peers,
        workers: Some(workers),
        board,
        p2p: Some(p2p),
        usr1,
        link,
    };

    let shutdown = Shutdown::new();
    let (done_tx, done_rx) = bounded::<()>(0);
    let inputs = Inputs {
        stop: shutdown.signal().clone(),
        templates,
        peer_events,
        miner_events,
        results,
        link_events,
        height_answers,
        ticker: tick(TICK),
    };
    let thread = crate::thread::spawn("node", move || {
        let _done = done_tx;
        run(core, inputs, services)
    })
    .map_err(|e| NodeError::Spawn("node", e))?;
    Ok(Running {
        shutdown,
        node: Some(thread),
        done: done_rx,
    })
}

/// Every channel the node thread reads (a test passes `never()` for what it lacks).
pub struct Inputs {
    /// A message or a disconnect (the node's [`Shutdown`]) stops the node.
    pub stop: Receiver<()>,
    pub templates: Receiver<Arc<Template>>,
    pub peer_events: Receiver<PeerEvent>,
    pub miner_events: Receiver<MinerEvent>,
    pub results: Receiver<SubmitResult>,
    pub link_events: Receiver<LinkEvent>,
    pub height_answers: Receiver<HeightAnswer>,
    /// The tick: think, readiness, status and the store write.
    pub ticker: Receiver<Instant>,
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

    /// Whether an input is waiting (a closed channel is not: [`next`](Self::next) finds
    /// it when the node waits again).
    fn waiting(&self) -> bool {
        !(self.stop.is_empty()
            && self.templates.is_empty()
            && self.peer_events.is_empty()
            && self.miner_events.is_empty()
            && self.results.is_empty()
            && self.link_events.is_empty()
            && self.height_answers.is_empty()
            && self.ticker.is_empty())
    }
}

/// The node thread: each input goes to the core and the core's effects are carried out;
/// at the end, the stop order. Returns why the node stopped.
pub fn run(mut core: Core, inputs: Inputs, mut outputs: impl Outputs) -> Result<(), NodeError> {
    let outcome = loop {
        let mut handled = 0;
        let mut stopped = None;
        let mut longest = Duration::ZERO;
        // Events until none is waiting, the batch is full or the tick: a flood cannot
        // starve thinking, and a lone event is thought about at once.
        while handled < EVENTS_PER_THINK {
            if handled > 0 && !inputs.waiting() {
                break;
            }
            let now = unix_now();
            let event = match inputs.next() {
                Ok(Input::Stop) => {
                    stopped = Some(Ok(()));
                    break;
                }
                Err(e) => {
                    stopped = Some(Err(e));
                    break;
                }
                Ok(Input::Link(e)) => {
                    on_link(e);
                    continue;
                }
                Ok(Input::Template(t)) => Event::Template(t),
                Ok(Input::Peer(e)) => Event::Peer(e),
                Ok(Input::Miner(e)) => Event::Miner(e),
                Ok(Input::Submitted(r)) => Event::Submitted(r),
                Ok(Input::Height(a)) => Event::Height(a),
                Ok(Input::Tick) => Event::Tick {
                    feed: outputs.feed_status(),
                },
            };
            let tick = matches!(event, Event::Tick { .. });
            let started = Instant::now();
            let effects = core.on(event, now);
            longest = longest.max(started.elapsed());
            outputs.apply(effects);
            if tick {
                break;
            }
            handled += 1;
        }
        if let Some(outcome) = stopped {
            break outcome;
        }
        let started = Instant::now();
        let effects = core.on(Event::BatchEnd, unix_now());
        longest = longest.max(started.elapsed());
        outputs.apply(effects);
        outputs.observe(&core, longest);
    };
    if let Err(e) = &outcome {
        error!(target: LOG, "{e}; stopping");
    } else {
        info!(target: LOG, "stopping");
    }
    // Stop accepting, and take what the miners and peers sent before they stopped.
    outputs.stop_accepting();
    let now = unix_now();
    for e in inputs.miner_events.try_iter() {
        outputs.apply(core.on(Event::Miner(e), now));
    }
    for e in inputs.peer_events.try_iter() {
        outputs.apply(core.on(Event::Peer(e), now));
    }
    // Then the store, then the bitcoind services.
    outputs.apply(core.on(Event::Stop, now));
    outputs.observe(&core, Duration::ZERO);
    outputs.stop();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Sender;

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

    /// Outputs that record what the loop did with them.
    #[derive(Default)]
    struct Recorder {
        effects: usize,
        stopped_accepting: bool,
        stopped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Outputs for Recorder {
        fn apply(&mut self, effects: Vec<Effect>) {
            self.effects += effects.len();
        }
        fn feed_status(&self) -> FeedStatus {
            FeedStatus::default()
        }
        fn stop_accepting(&mut self) {
            self.stopped_accepting = true;
        }
        fn stop(self) {
            assert!(self.stopped_accepting, "accepting stops first");
            self.stopped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn test_core() -> Core {
        Core::new(
            ShareChain::new(crate::sharechain::sample::modern_net()),
            History::default(),
            Settings {
                fee_percent: 0.0,
                start_new_chain: true,
                payout_address: String::new(),
                our_mode: crate::p2p::MODE_NORMAL,
                started_at: 0,
            },
        )
    }

    /// Outputs that pass each effect on to the test.
    struct Forward(Sender<Effect>);

    impl Outputs for Forward {
        fn apply(&mut self, effects: Vec<Effect>) {
            for e in effects {
                let _ = self.0.send(e);
            }
        }
        fn feed_status(&self) -> FeedStatus {
            FeedStatus::default()
        }
        fn stop_accepting(&mut self) {}
        fn stop(self) {}
    }

    #[test]
    fn a_lone_share_from_a_peer_is_weighed_and_relayed_at_once_not_at_the_tick() {
        use crate::sharechain::sample::{self, modern_net, payout};
        let (inputs, s) = inputs(); // the ticker never ticks
        let (effects_tx, effects) = crossbeam_channel::unbounded();
        let handle = std::thread::spawn(move || run(test_core(), inputs, Forward(effects_tx)));
        for id in [1, 2] {
            let info = core::tests::peer_info(id);
            s.peer_events
                .send(PeerEvent::Connected { id, info })
                .unwrap();
        }
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 3, 10, &[payout(1)]);
        let shares = hashes
            .iter()
            .map(|h| tracker.get(h).expect("sample share").to_share1a())
            .collect();
        let msg = crate::p2p::message::Message::Share1as(shares);
        s.peer_events
            .send(PeerEvent::Message { id: 1, msg })
            .unwrap();
        // One share message and nothing after it: the node must not wait for more events
        // (or a tick) before it takes the share as its best and passes it on.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut best, mut relayed) = (false, false);
        while !(best && relayed) {
            match effects.recv_deadline(deadline) {
                Ok(Effect::BestShare(b)) if b == hashes.last().copied() => best = true,
                Ok(Effect::Send { peer: 2, .. }) => relayed = true,
                Ok(_) => {}
                Err(_) => panic!("best share {best}, relayed {relayed}: not within 5 s"),
            }
        }
        s.stop.send(()).unwrap();
        handle
            .join()
            .expect("the loop returns")
            .expect("stopped cleanly");
    }

    #[test]
    fn the_loop_stops_naming_a_dead_subsystem_and_still_stops_everything_in_order() {
        let (inputs, s) = inputs();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outputs = Recorder {
            stopped: stopped.clone(),
            ..Recorder::default()
        };
        // Every sender but the stop and the miners' dropped: those channels are closed.
        let Senders {
            stop,
            templates,
            peer_events,
            miner_events,
            results,
            link_events,
            height_answers,
        } = s;
        drop((templates, peer_events, results, link_events, height_answers));
        let handle = std::thread::spawn(move || run(test_core(), inputs, outputs));
        let outcome = handle.join().expect("the loop returns");
        match outcome {
            Err(NodeError::Thread { name, .. }) => {
                assert!(
                    ["template", "p2p", "submitter", "bitcoind_link", "heights"].contains(&name),
                    "{name}"
                )
            }
            other => panic!("not stopped by a dead subsystem: {other:?}"),
        }
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        drop((stop, miner_events));
    }
}
