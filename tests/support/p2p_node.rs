//! A small node made of real parts for the p2p tests and bench: a `ShareChain`, a
//! `ShareSync` and a `P2p` driven by a loop on its own thread that thinks after new
//! shares (and at least every 200 ms), as the node thread does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use p2pool::bitcoin::hash::Hash256;
use p2pool::network::Network;
use p2pool::node::sync::ShareSync;
use p2pool::p2p::{P2p, P2pConfig, PeerEvent, Peers, unix_now};
use p2pool::sharechain::best::HeightMap;
use p2pool::sharechain::chain::{Limits, ShareChain};
use p2pool::sharechain::share::Share;

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

enum Cmd {
    Inject(Vec<Share>),
    Stop,
}

pub struct TestNode {
    pub addr: SocketAddr,
    pub peers: Peers,
    cmds: Sender<Cmd>,
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
        let (p2p, events) = P2p::start(cfg).expect("p2p starts");
        let addr = p2p.local_addr();
        let peers = p2p.peers();
        let (cmds, cmd_rx) = bounded(16);
        let state = Arc::new(Mutex::new(NodeState::default()));
        let s = state.clone();
        let thread = thread::Builder::new()
            .name("test_node".into())
            .spawn(move || node_loop(p2p, events, cmd_rx, chain, s))
            .expect("node thread starts");
        TestNode {
            addr,
            peers,
            cmds,
            state,
            thread: Some(thread),
        }
    }

    /// Adds shares as if mined here.
    pub fn inject(&self, shares: Vec<Share>) {
        self.cmds.send(Cmd::Inject(shares)).expect("node loop runs");
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
        let _ = self.cmds.send(Cmd::Stop);
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

fn node_loop(
    p2p: P2p,
    events: Receiver<PeerEvent>,
    cmds: Receiver<Cmd>,
    mut chain: ShareChain,
    state: Arc<Mutex<NodeState>>,
) {
    let peers = p2p.peers();
    let mut sync = ShareSync::new(chain.network().clone());
    let heights = HeightMap::default();
    let mut dirty = false;
    let mut last_think = Instant::now() - Duration::from_secs(1);
    loop {
        let wait = if dirty {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(200)
        };
        select! {
            recv(events) -> ev => match ev {
                Ok(PeerEvent::Message { id, msg }) => {
                    let out = sync.on_message(id, msg, &mut chain, &peers, unix_now());
                    dirty |= out.added > 0;
                    state.lock().unwrap().blocks += out.blocks.len();
                }
                Ok(PeerEvent::Connected { .. }) => state.lock().unwrap().connected_events += 1,
                Ok(PeerEvent::Disconnected { id }) => {
                    sync.on_disconnect(id);
                    state.lock().unwrap().disconnected_events += 1;
                }
                Ok(PeerEvent::Addrs(changes)) => {
                    let mut s = state.lock().unwrap();
                    s.stored_addrs.extend(changes.put.iter().map(|(a, _)| *a));
                }
                Err(_) => break,
            },
            recv(cmds) -> cmd => match cmd {
                Ok(Cmd::Inject(shares)) => {
                    for share in shares {
                        chain.add(share, None, unix_now());
                    }
                    dirty = true;
                }
                Ok(Cmd::Stop) | Err(_) => break,
            },
            default(wait) => {}
        }
        // Drain what is already queued before thinking, as a busy node would.
        if !events.is_empty() && last_think.elapsed() < Duration::from_millis(100) {
            continue;
        }
        if (dirty && last_think.elapsed() >= Duration::from_millis(5))
            || last_think.elapsed() >= Duration::from_millis(200)
        {
            let now = unix_now();
            let started = Instant::now();
            let think = chain.think(&heights, None, now);
            let took = started.elapsed();
            sync.after_think(&think, &chain, &peers, now);
            let _ = chain.take_batch();
            dirty = false;
            last_think = Instant::now();
            let mut s = state.lock().unwrap();
            s.unconnected = chain.unconnected().shares;
            s.unconnected_bytes = chain.unconnected().bytes;
            s.bad += think.bad.len();
            s.expired += think.expired.iter().map(|(_, n)| n).sum::<usize>();
            s.longest_think = s.longest_think.max(took);
            s.best = think.best;
            s.shares = chain.tracker().len();
            s.verified = chain.tracker().verified_count();
            s.blocks += think.blocks.len();
            s.thinks += 1;
        }
    }
    p2p.stop();
}
