//! The node's own loop (`node::run`) and `Core` with the real `Workers`, for the worker
//! tests: a share chain on an easy network, the real template `Feed` and `Submitter`
//! against a bcoin regtest node (or templates pushed by the test), no peers and no store.
//! What the tests read (work, shares, blocks, submission results) is recorded in a `View`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, never, tick};
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoin::template::Template;
use p2pool::bitcoind::feed::{Feed, FeedConfig, FeedStatus};
use p2pool::bitcoind::rpc::Client;
use p2pool::bitcoind::submit::{SubmitConfig, SubmitResult, Submitter};
use p2pool::network::{Network, RuleSet, WeightCap};
use p2pool::node::core::{Core, Effect, Settings};
use p2pool::node::history::History;
use p2pool::node::{Inputs, Outputs, run};
use p2pool::p2p::MODE_NORMAL;
use p2pool::sharechain::chain::ShareChain;
use p2pool::sharechain::share::Share;
use p2pool::worker::{MinerEvent, Readiness, Work, WorkerConfig, Workers};
use ruint::aliases::U256;
use serde_json::json;

/// A look at the node's core from a test, run on the node thread between batches.
type Probe = Box<dyn FnOnce(&Core) + Send>;

/// An easy regtest network: shares at 2^238 (about 260,000 hashes), a target that does not
/// move for the first 100,000 shares, a 30-share payout window, bcoin's addresses.
pub fn easy_net(chain: ChainParams) -> Network {
    let mut net = Network::built_in("regtest").expect("regtest is built in");
    net.name = "worker-test".into();
    net.rules = RuleSet::Modern;
    net.max_target = U256::MAX >> 18;
    net.target_lookbehind = 100_000;
    net.chain_length = 30;
    net.weight_cap = WeightCap::None;
    net.persist = false;
    net.worker_port = 0;
    net.stratum_port = 0;
    net.bitcoin = chain;
    net
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A template with no transactions on `previous` at `height`, bits `bits`: for tests that
/// need shares that are not blocks (regtest's block target is easier than any share's).
pub fn static_template(previous: Hash256, height: u32, bits: u32) -> Template {
    let value = json!({
        "version": 0x2000_0000,
        "previousblockhash": previous.to_hex(),
        "height": height,
        "bits": format!("{bits:08x}"),
        "curtime": unix_now(),
        "mintime": unix_now() - 600,
        "coinbasevalue": 5_000_000_000u64,
        "transactions": [],
        "rules": ["csv", "!segwit"],
        "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
    });
    Template::from_value(&value).unwrap_or_else(|e| panic!("static template: {e}"))
}

/// What the loop has done, for the tests to read.
#[derive(Debug, Default)]
pub struct View {
    pub best: Option<Hash256>,
    /// Shares from local miners added to the chain, in order.
    pub shares: Vec<Hash256>,
    /// Blocks handed to the submitter.
    pub blocks: Vec<Hash256>,
    pub results: Vec<SubmitResult>,
    pub works: u64,
    pub last_work: Option<Arc<Work>>,
    pub work_errors: Vec<String>,
    /// The local shares as the chain holds them, and its verified count.
    pub tracked: HashMap<Hash256, Share>,
    pub verified: usize,
}

pub struct WorkerNode {
    pub net: Network,
    pub workers: Arc<Workers>,
    pub view: Arc<Mutex<View>>,
    /// Pushes a template (static mode only).
    pub templates: Option<Sender<Arc<Template>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    feed: Option<Feed>,
    probes: Sender<Probe>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where templates come from.
pub enum Source {
    /// The real feed and submitter against this RPC client.
    Bitcoind(Box<Client>),
    /// Templates pushed through `WorkerNode::templates`; nothing is submitted.
    Static,
}

impl WorkerNode {
    pub fn start(
        net: Network,
        source: Source,
        configure: impl FnOnce(&mut WorkerConfig),
    ) -> WorkerNode {
        let node_payout = p2pool::bitcoin::script::p2pkh(&[0xee; 20]);
        let mut config = WorkerConfig::new(net.clone(), node_payout);
        config.worker_addr = "127.0.0.1:0".parse().unwrap();
        config.stratum_addr = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let events_queue = config.events_queue;
        let (workers, events) = Workers::start(config, None).expect("workers start");
        let workers = Arc::new(workers);
        let view = Arc::new(Mutex::new(View::default()));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (results_tx, results_rx) = bounded::<SubmitResult>(64);
        let (feed, submitter, templates_rx, templates_tx) = match source {
            Source::Bitcoind(client) => {
                let rpc: Arc<Client> = Arc::new(*client);
                let config = FeedConfig {
                    refresh_every: Duration::from_secs(2),
                    retry_max: Duration::from_millis(500),
                    ..FeedConfig::new(&ChainParams::regtest())
                };
                let (feed, templates) = Feed::start(rpc.clone(), config).expect("feed starts");
                let submitter = Submitter::start(
                    rpc,
                    SubmitConfig {
                        retry_min: Duration::from_millis(100),
                        retry_max: Duration::from_millis(500),
                        ..SubmitConfig::default()
                    },
                    Some(results_tx),
                )
                .expect("submitter starts");
                (Some(feed), Some(submitter), templates, None)
            }
            Source::Static => {
                let (tx, rx) = bounded(4);
                (None, None, rx, Some(tx))
            }
        };
        // The test's record of found shares and results, on their way to the node.
        // As long as the workers' queue, so that a stalled node fills it as soon.
        let miner_events = forward(events, events_queue, view.clone(), |v, e: &MinerEvent| {
            let MinerEvent::Share(found) = e;
            v.shares.push(found.share.hash);
        });
        // Without a submitter nothing answers (a closed channel would stop the node).
        let results = if submitter.is_some() {
            forward(results_rx, 1024, view.clone(), |v, r: &SubmitResult| {
                v.results.push(r.clone())
            })
        } else {
            never()
        };
        let core = Core::new(
            ShareChain::new(net.clone()),
            History::default(),
            Settings {
                fee_percent: 0.0,
                start_new_chain: true,
                payout_address: String::new(),
                our_mode: MODE_NORMAL,
                started_at: unix_now(),
            },
        );
        let inputs = Inputs {
            stop: stop_rx,
            templates: templates_rx,
            peer_events: never(),
            miner_events,
            results,
            link_events: never(),
            height_answers: never(),
            ticker: tick(Duration::from_millis(500)),
        };
        let (probes, probes_rx) = bounded(16);
        let outputs = TestOutputs {
            workers: workers.clone(),
            view: view.clone(),
            submitter,
            probes: probes_rx,
        };
        let thread = thread::Builder::new()
            .name("node".into())
            .spawn(move || {
                let _ = run(core, inputs, outputs);
            })
            .expect("node thread");
        WorkerNode {
            net,
            workers,
            view,
            templates: templates_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
            feed,
            probes,
        }
    }

    /// Runs `f` on the node's core (between two batches, within a tick) and returns its
    /// answer.
    pub fn inspect<R: Send + 'static>(&self, f: impl FnOnce(&Core) -> R + Send + 'static) -> R {
        let (tx, rx) = bounded(1);
        let probe: Probe = Box::new(move |core| {
            let _ = tx.send(f(core));
        });
        self.probes.send(probe).expect("node loop runs");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the node answers a probe within a tick")
    }

    /// A local share as the chain holds it.
    pub fn share(&self, hash: &Hash256) -> Option<Share> {
        self.view().tracked.get(hash).cloned()
    }

    pub fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    pub fn set_readiness(&self, r: Readiness) {
        self.workers.set_readiness(r);
    }

    /// getwork URL of the worker port.
    pub fn getwork_url(&self) -> String {
        format!("http://{}/", self.workers.worker_addr())
    }

    pub fn stratum_url(&self) -> String {
        format!("stratum+tcp://{}", self.workers.stratum_addr())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(feed) = self.feed.take() {
            let _ = feed.stop();
        }
    }
}

impl Drop for WorkerNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Passes `rx`'s items on to the returned receiver (`capacity` of them waiting), recording
/// each in the view first.
fn forward<T: Send + 'static>(
    rx: Receiver<T>,
    capacity: usize,
    view: Arc<Mutex<View>>,
    record: impl Fn(&mut View, &T) + Send + 'static,
) -> Receiver<T> {
    let (tx, out) = bounded(capacity.max(1));
    thread::spawn(move || {
        for item in rx {
            record(&mut lock(&view), &item);
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    out
}

/// The node's effects on the worker side carried out, the rest recorded or left alone
/// (readiness stays the test's to set).
struct TestOutputs {
    workers: Arc<Workers>,
    view: Arc<Mutex<View>>,
    submitter: Option<Submitter>,
    probes: Receiver<Probe>,
}

impl Outputs for TestOutputs {
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Work(work) => {
                    let mut v = lock(&self.view);
                    v.works += 1;
                    v.last_work = Some(work.clone());
                    v.best = work.best;
                    drop(v);
                    self.workers.publish(work);
                }
                Effect::Submit(block) => {
                    lock(&self.view).blocks.push(block.hash);
                    if let Some(s) = &self.submitter {
                        let _ = s.submit(block);
                    }
                }
                _ => {}
            }
        }
    }

    fn feed_status(&self) -> FeedStatus {
        FeedStatus {
            reachable: true,
            ..FeedStatus::default()
        }
    }

    fn observe(&mut self, core: &Core, _longest: Duration) {
        for probe in self.probes.try_iter() {
            probe(core);
        }

        let tracker = core.chain().tracker();
        let mut v = lock(&self.view);
        v.verified = tracker.verified_count();
        let missing: Vec<Hash256> = v
            .shares
            .iter()
            .filter(|h| !v.tracked.contains_key(*h))
            .copied()
            .collect();
        for h in missing {
            if let Some(share) = tracker.get(&h) {
                v.tracked.insert(h, share.clone());
            }
        }
    }

    fn stop_accepting(&mut self) {}

    fn stop(self) {
        if let Some(s) = self.submitter {
            s.stop();
        }
    }
}
