//! A small node loop made of real parts, for the worker tests (and for the lead to reuse):
//! a `ShareChain` on an easy network, the real template `Feed` and `Submitter` against a
//! bcoin regtest node (or templates pushed by the test), and the real `Workers`. Found
//! blocks are submitted at once, shares added and thought about, and new work published
//! whenever the best share or the template changes, as the node thread will.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, select, tick};
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoin::template::Template;
use p2pool::bitcoind::feed::{Feed, FeedConfig};
use p2pool::bitcoind::rpc::Client;
use p2pool::bitcoind::submit::{BlockSubmission, SubmitConfig, SubmitResult, Submitter};
use p2pool::network::{Network, RuleSet, WeightCap};
use p2pool::sharechain::best::HeightMap;
use p2pool::sharechain::chain::ShareChain;
use p2pool::worker::{MinerEvent, Readiness, Work, WorkerConfig, Workers};
use ruint::aliases::U256;
use serde_json::json;

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
}

pub struct WorkerNode {
    pub net: Network,
    pub workers: Arc<Workers>,
    pub chain: Arc<Mutex<ShareChain>>,
    pub view: Arc<Mutex<View>>,
    /// Pushes a template (static mode only).
    pub templates: Option<Sender<Arc<Template>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    feed: Option<Feed>,
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
        let (workers, events) = Workers::start(config, None).expect("workers start");
        let workers = Arc::new(workers);
        let chain = Arc::new(Mutex::new(ShareChain::new(net.clone())));
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
        let thread = {
            let workers = workers.clone();
            let chain = chain.clone();
            let view = view.clone();
            thread::Builder::new()
                .name("test_node".into())
                .spawn(move || {
                    run(
                        &workers,
                        &chain,
                        &view,
                        &templates_rx,
                        &events,
                        &results_rx,
                        &stop_rx,
                        submitter.as_ref(),
                    );
                    if let Some(s) = submitter {
                        s.stop();
                    }
                })
                .expect("node thread")
        };
        WorkerNode {
            net,
            workers,
            chain,
            view,
            templates: templates_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
            feed,
        }
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

#[allow(clippy::too_many_arguments)]
fn run(
    workers: &Workers,
    chain: &Mutex<ShareChain>,
    view: &Mutex<View>,
    templates: &Receiver<Arc<Template>>,
    events: &Receiver<MinerEvent>,
    results: &Receiver<SubmitResult>,
    stop: &Receiver<()>,
    submitter: Option<&Submitter>,
) {
    let mut template: Option<Arc<Template>> = None;
    let mut heights = HeightMap::default();
    let mut best: Option<Hash256> = None;
    let mut submitted: HashSet<Hash256> = HashSet::new();
    let ticker = tick(Duration::from_millis(500));
    let publish =
        |template: &Arc<Template>, best: Option<Hash256>, chain: &ShareChain| match Work::build(
            chain,
            template,
            best,
            unix_now(),
        ) {
            Ok(work) => {
                let work = Arc::new(work);
                let mut v = lock(view);
                v.works += 1;
                v.last_work = Some(work.clone());
                v.best = best;
                drop(v);
                workers.publish(work);
            }
            Err(e) => lock(view).work_errors.push(e.to_string()),
        };
    loop {
        let mut rebuild = false;
        select! {
            recv(templates) -> t => {
                let Ok(t) = t else { return };
                heights.heights.insert(t.previous_block, t.height.saturating_sub(1));
                heights.highest = heights.highest.max(t.height.saturating_sub(1));
                template = Some(t);
                rebuild = true;
            }
            recv(events) -> e => {
                let Ok(MinerEvent::Share(found)) = e else { return };
                // A block goes to bitcoind before anything else.
                if let (Some(submission), Some(submitter)) = (found.submission(), submitter) {
                    submitted.insert(submission.hash);
                    lock(view).blocks.push(submission.hash);
                    let _ = submitter.submit(submission);
                }
                let hash = found.share.hash;
                lock(chain).add(found.share, None, unix_now());
                lock(view).shares.push(hash);
                rebuild = true;
            }
            recv(results) -> r => {
                if let Ok(r) = r {
                    lock(view).results.push(r);
                }
            }
            recv(ticker) -> _ => rebuild = true,
            recv(stop) -> _ => return,
        }
        if !rebuild {
            continue;
        }
        let Some(t) = template.clone() else {
            continue;
        };
        let mut c = lock(chain);
        let think = c.think(&heights, Some(t.previous_block), unix_now());
        for block in think.blocks {
            let hash = block.hash();
            if submitted.insert(hash)
                && let Some(submitter) = submitter
            {
                let bytes = p2pool::bitcoin::encode::Encode::to_bytes(&block);
                let _ = submitter.submit(BlockSubmission::new(
                    &block.header,
                    u64::from(t.height),
                    bytes,
                ));
            }
        }
        let new_best = think.best;
        let changed_template = lock(view)
            .last_work
            .as_ref()
            .is_none_or(|w| !Arc::ptr_eq(&w.template, &t));
        if new_best != best || changed_template {
            best = new_best;
            publish(&t, best, &c);
        }
    }
}
