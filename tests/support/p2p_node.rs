//! A node made of real parts for the p2p tests and bench: the node's own `Core` (share
//! chain, share sync, every decision) driven by the node's own loop (`node::run`), with a
//! real `P2p` and no bitcoind: no templates, and effects meant for miners, bitcoind and
//! the store recorded instead of carried out.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, never, tick};

use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoind::feed::FeedStatus;
use p2pool::network::Network;
use p2pool::node::core::{Core, Effect, Settings};
use p2pool::node::history::History;
use p2pool::node::{Inputs, Outputs, apply_to_peers, run};
use p2pool::p2p::{MODE_NORMAL, P2p, P2pConfig, Peers, unix_now};
use p2pool::sharechain::chain::{Limits, ShareChain};
use p2pool::sharechain::share::Share;
use p2pool::worker::{FoundShare, MinerEvent};

/// What the node loop publishes after each think.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub best: Option<Hash256>,
    pub shares: usize,
    pub verified: usize,
    /// Every address the p2p side asked to store.
    pub stored_addrs: Vec<SocketAddr>,
    pub connected_events: usize,
    pub disconnected_events: usize,
    /// Blocks the node would submit.
    pub blocks: usize,
    pub thinks: usize,
    /// Unconnected shares held after the last think.
    pub unconnected: usize,
    pub unconnected_bytes: usize,
    /// Shares removed as invalid and unconnected shares expired, so far.
    pub bad: usize,
    pub expired: usize,
    /// The longest think so far.
    pub longest_think: Duration,
}

pub struct TestNode {
    pub addr: SocketAddr,
    pub peers: Peers,
    /// Shares "found by local miners", as the worker side would send them.
    miners: Sender<MinerEvent>,
    stop: Option<Sender<()>>,
    state: Arc<Mutex<NodeState>>,
    thread: Option<JoinHandle<()>>,
}

/// A config for a test node on loopback with a free port and test-sized timers.
pub fn config(net: &Network, connect: &[SocketAddr]) -> P2pConfig {
    let mut cfg = P2pConfig::new(net.clone(), "127.0.0.1:0".parse().unwrap());
    cfg.connect = connect.to_vec();
    cfg.timeouts.connect_every = Duration::from_millis(100);
    cfg.timeouts.redial = Duration::from_millis(500);
    cfg.timeouts.getaddrs_every = Duration::from_secs(1);
    cfg
}

impl TestNode {
    pub fn start(net: &Network, connect: &[SocketAddr]) -> TestNode {
        TestNode::start_with(config(net, connect))
    }

    pub fn start_with(cfg: P2pConfig) -> TestNode {
        let limits = Limits::for_network(&cfg.net);
        TestNode::start_limited(cfg, limits)
    }

    /// A node holding unconnected shares within `limits`.
    pub fn start_limited(cfg: P2pConfig, limits: Limits) -> TestNode {
        let mut chain = ShareChain::new(cfg.net.clone());
        chain.set_limits(limits);
        let (p2p, peer_events) = P2p::start(cfg).expect("p2p starts");
        let addr = p2p.local_addr();
        let peers = p2p.peers();
        let core = Core::new(
            chain,
            History::default(),
            Settings {
                fee_percent: 0.0,
                start_new_chain: true,
                payout_address: String::new(),
                our_mode: MODE_NORMAL,
                started_at: unix_now(),
            },
        );
        let (miners, miner_events) = bounded(1024);
        let (stop, stop_rx) = bounded(0);
        let inputs = Inputs {
            stop: stop_rx,
            templates: never(),
            peer_events,
            miner_events,
            results: never(),
            link_events: never(),
            height_answers: never(),
            ticker: tick(Duration::from_millis(200)),
        };
        let state = Arc::new(Mutex::new(NodeState::default()));
        let outputs = TestOutputs {
            p2p: Some(p2p),
            peers: peers.clone(),
            state: state.clone(),
        };
        let thread = thread::Builder::new()
            .name("node".into())
            .spawn(move || {
                let _ = run(core, inputs, outputs);
            })
            .expect("node thread starts");
        TestNode {
            addr,
            peers,
            miners,
            stop: Some(stop),
            state,
            thread: Some(thread),
        }
    }

    /// Adds shares as if mined here.
    pub fn inject(&self, shares: Vec<Share>) {
        for share in shares {
            let found = FoundShare {
                share,
                block: None,
                height: 0,
                work_id: 0,
                submitted: false,
                miner: "test".into(),
            };
            self.miners
                .send(MinerEvent::Share(Box::new(found)))
                .expect("node loop runs");
        }
    }

    pub fn state(&self) -> NodeState {
        self.state.lock().unwrap().clone()
    }

    pub fn best(&self) -> Option<Hash256> {
        self.state().best
    }

    /// Waits until `cond` holds on the node's state; false after `timeout`.
    pub fn wait(&self, timeout: Duration, cond: impl Fn(&NodeState) -> bool) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if cond(&self.state()) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the node has `n` handshaken peers.
    pub fn wait_peers(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.peers.count() >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The effects a test looks at, recorded; the P2P ones carried out.
struct TestOutputs {
    p2p: Option<P2p>,
    peers: Peers,
    state: Arc<Mutex<NodeState>>,
}

impl Outputs for TestOutputs {
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { .. } | Effect::Score { .. } | Effect::BestShare(_) => {
                    apply_to_peers(effect, &self.peers);
                }
                Effect::Submit(_) => self.state.lock().unwrap().blocks += 1,
                Effect::Store(batch) => {
                    let mut s = self.state.lock().unwrap();
                    s.stored_addrs
                        .extend(batch.put_addrs.iter().map(|(a, _)| *a));
                }
                Effect::Work(_) | Effect::Readiness(_) | Effect::Status(_) => {}
                Effect::AskHeight(_) => {}
            }
        }
    }

    fn feed_status(&self) -> FeedStatus {
        FeedStatus::default()
    }

    fn observe(&mut self, core: &Core, longest: Duration) {
        let chain = core.chain();
        let totals = core.totals();
        let mut s = self.state.lock().unwrap();
        s.best = core.best();
        s.shares = chain.tracker().len();
        s.verified = chain.tracker().verified_count();
        s.unconnected = chain.unconnected().shares;
        s.unconnected_bytes = chain.unconnected().bytes;
        s.bad = totals.bad as usize;
        s.expired = totals.expired as usize;
        s.thinks = totals.thinks as usize;
        s.connected_events = totals.peers_connected as usize;
        s.disconnected_events = totals.peers_disconnected as usize;
        s.longest_think = s.longest_think.max(longest);
    }

    fn stop_accepting(&mut self) {
        if let Some(p2p) = self.p2p.take() {
            p2p.stop();
        }
    }

    fn stop(self) {}
}
