//! The node's state and every decision it makes, as a pure state machine: [`Core::on`]
//! takes one [`Event`] and the time, and returns the [`Effect`]s to carry out. No
//! sockets, threads, channels, RPC or clock here: `node::run` feeds it events from the
//! subsystems' channels and carries its effects out, and tests feed it events directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};

use crate::bitcoin::block::{self, Block};
use crate::bitcoin::encode::Encode;
use crate::bitcoin::frame::Framing;
use crate::bitcoin::hash::Hash256;
use crate::bitcoin::template::Template;
use crate::bitcoind::feed::FeedStatus;
use crate::bitcoind::heights::HeightAnswer;
use crate::bitcoind::rpc::Trouble;
use crate::bitcoind::submit::{BlockSubmission, Outcome, SubmitResult};
use crate::network::Network;
use crate::p2p::message::Message;
use crate::p2p::{PeerEvent, PeerId};
use crate::sharechain::best::BlockHeights;
use crate::sharechain::chain::{ShareChain, Think};
use crate::sharechain::tracker::Tracker;
use crate::store::Batch;
use crate::web::status::PoolStatus;
use crate::worker::{MinerEvent, Readiness, Work};

use super::history::{FoundBlock, History};
use super::local::Local;
use super::status;
use super::sync::{PeerPort, ShareSync};

const LOG: &str = "node";
/// How often the share and peer counts are logged (seconds).
const PROGRESS_EVERY: u64 = 30;
/// Block heights remembered before the map starts afresh (a payout window spans a few
/// hundred Bitcoin blocks at most).
const HEIGHTS_CAP: usize = 4096;
/// Seconds before a height asked for and not answered is asked again.
const ASK_AGAIN: u64 = 10;

/// Something that happened, for the core to decide on.
#[derive(Debug)]
pub enum Event {
    /// A new block template from the feed.
    Template(Arc<Template>),
    Peer(PeerEvent),
    Miner(MinerEvent),
    /// bitcoind's answer to a block submission.
    Submitted(SubmitResult),
    /// A block height asked for with [`Effect::AskHeight`].
    Height(HeightAnswer),
    /// The end of a batch of events: think if shares came in it.
    BatchEnd,
    /// Once a second, with the feed's view of bitcoind: think, readiness, status, store.
    Tick {
        feed: FeedStatus,
    },
    /// Shutting down: the last think and store write.
    Stop,
}

/// Something the core decided, for `node::run` to carry out.
#[derive(Debug)]
pub enum Effect {
    /// A frame to one peer (full queue: the peer is dropped as too slow).
    Send {
        peer: PeerId,
        frame: Arc<[u8]>,
    },
    /// Ban score for a peer; `close`: disconnect it too.
    Score {
        peer: PeerId,
        points: u32,
        reason: String,
        close: bool,
    },
    /// Our best share, for the `version` we send.
    BestShare(Option<Hash256>),
    /// New work for the miners.
    Work(Arc<Work>),
    Readiness(Readiness),
    /// A block to bitcoind.
    Submit(BlockSubmission),
    /// Writes for the store, in one transaction.
    Store(Batch),
    Status(Box<PoolStatus>),
    /// A block height the ranking missed; answered with [`Event::Height`].
    AskHeight(Hash256),
}

/// Counts since the start, for the status and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub thinks: u64,
    /// Shares removed as invalid (with their descendants counted once, at the top).
    pub bad: u64,
    /// Unconnected shares dropped at their deadline.
    pub expired: u64,
    pub peers_connected: u64,
    pub peers_disconnected: u64,
}

/// What the core is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub fee_percent: f64,
    pub start_new_chain: bool,
    pub payout_address: String,
    /// Our own P2P mode (normal or low bandwidth).
    pub our_mode: u32,
    pub started_at: u64,
}

/// The peers as the core knows them from `PeerEvent`s; share sync's calls become effects.
struct Outbox<'a> {
    framing: &'a Framing,
    our_mode: u32,
    peers: &'a BTreeMap<PeerId, u32>,
    effects: &'a mut Vec<Effect>,
}

impl PeerPort for Outbox<'_> {
    fn framing(&self) -> &Framing {
        self.framing
    }

    fn connected(&self) -> Vec<(PeerId, u32)> {
        self.peers
            .iter()
            .map(|(id, mode)| (*id, (*mode).min(self.our_mode)))
            .collect()
    }

    fn is_up(&self, id: PeerId) -> bool {
        self.peers.contains_key(&id)
    }

    fn send(&mut self, id: PeerId, msg: &Message) -> bool {
        match msg.to_frame(self.framing) {
            Ok(frame) => self.send_frame(id, frame.into()),
            Err(e) => {
                warn!(target: LOG, "cannot encode {} for peer {id}: {e}", msg.command());
                false
            }
        }
    }

    fn send_frame(&mut self, id: PeerId, frame: Arc<[u8]>) -> bool {
        if !self.peers.contains_key(&id) {
            return false;
        }
        self.effects.push(Effect::Send { peer: id, frame });
        true
    }

    fn punish(&mut self, id: PeerId, points: u32, reason: &str) {
        self.effects.push(Effect::Score {
            peer: id,
            points,
            reason: reason.to_string(),
            close: true,
        });
    }

    fn add_ban_score(&mut self, id: PeerId, points: u32, reason: &str) {
        self.effects.push(Effect::Score {
            peer: id,
            points,
            reason: reason.to_string(),
            close: false,
        });
    }

    fn set_best_share(&mut self, best: Option<Hash256>) {
        self.effects.push(Effect::BestShare(best));
    }
}

/// Block heights for ranking from the core's map; misses are collected to be asked for.
struct RankHeights<'a> {
    heights: &'a HashMap<Hash256, u64>,
    highest: u32,
    missed: std::cell::RefCell<Vec<Hash256>>,
}

impl BlockHeights for RankHeights<'_> {
    fn height(&self, block: &Hash256) -> u32 {
        match self.heights.get(block) {
            Some(h) => u32::try_from(*h).unwrap_or(u32::MAX),
            None => {
                self.missed.borrow_mut().push(*block);
                0
            }
        }
    }

    fn highest(&self) -> u32 {
        self.highest
    }
}

/// The node's state: the share chain, share sync, the current template and work, found
/// blocks, and what it knows of peers and bitcoind.
pub struct Core {
    chain: ShareChain,
    sync: ShareSync,
    history: History,
    settings: Settings,
    framing: Framing,
    template: Option<Arc<Template>>,
    /// The current template was made here on an accepted block, before bitcoind's came:
    /// a template below it is an older answer, not news.
    provisional: bool,
    best: Option<Hash256>,
    /// Block heights by hash, from templates and answers.
    heights: HashMap<Hash256, u64>,
    /// Heights asked for and not answered yet, with when (an ask the lookup dropped, or
    /// one bitcoind failed to answer, is asked again after `ASK_AGAIN`).
    asked: HashMap<Hash256, u64>,
    /// Connected peers and the mode each said.
    peers: BTreeMap<PeerId, u32>,
    /// Address-book changes waiting for the next store write.
    addrs: Batch,
    /// What the current work was built from: the template's identity and the best share.
    work_from: Option<(usize, Option<Hash256>)>,
    /// The header timestamp of the work handed out last.
    work_stamp: u32,
    readiness: Option<Readiness>,
    /// Shares found by this node's miners.
    local: Local,
    feed: FeedStatus,
    /// bitcoind has answered since start (a template or any answer): when it stops
    /// answering, contact was lost, rather than never made.
    bitcoind_seen: bool,
    /// Shares came from peers since the last think.
    dirty: bool,
    last_progress: u64,
    /// bitcoind's clock minus ours (seconds), from the newest template's `curtime`.
    clock_offset: i64,
    totals: Totals,
}

impl Core {
    pub fn new(chain: ShareChain, history: History, settings: Settings) -> Core {
        let net = chain.network().clone();
        Core {
            framing: net.framing(),
            sync: ShareSync::new(net),
            chain,
            history,
            last_progress: settings.started_at,
            settings,
            template: None,
            provisional: false,
            best: None,
            heights: HashMap::new(),
            asked: HashMap::new(),
            peers: BTreeMap::new(),
            addrs: Batch::default(),
            work_from: None,
            work_stamp: 0,
            readiness: None,
            local: Local::default(),
            feed: FeedStatus::default(),
            bitcoind_seen: false,
            dirty: false,
            clock_offset: 0,
            totals: Totals::default(),
        }
    }

    pub fn chain(&self) -> &ShareChain {
        &self.chain
    }

    pub fn best(&self) -> Option<Hash256> {
        self.best
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Handles one event at `now` (Unix seconds, the node's own clock).
    pub fn on(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Template(t) => self.on_template(t, now, &mut out),
            Event::Peer(e) => self.on_peer(e, now, &mut out),
            Event::Miner(e) => self.on_miner(e, now, &mut out),
            Event::Submitted(r) => {
                self.history.set_outcome(
                    &r.hash,
                    r.outcome.to_string(),
                    &self.settings.payout_address,
                );
                if r.outcome == Outcome::Accepted {
                    self.on_accepted(&r, now, &mut out);
                }
            }
            Event::Height(a) => self.on_height(a),
            Event::BatchEnd => {
                if self.dirty {
                    self.think(now, &mut out);
                    self.update_work(now, &mut out);
                }
            }
            Event::Tick { feed } => {
                self.bitcoind_seen |= feed.reachable || feed.answered;
                self.feed = feed;
                self.think(now, &mut out);
                self.update_work(now, &mut out);
                self.update_readiness(&mut out);
                self.publish_status(now, &mut out);
                self.write(&mut out);
            }
            Event::Stop => {
                self.think(now, &mut out);
                self.write(&mut out);
            }
        }
        out
    }

    fn on_template(&mut self, template: Arc<Template>, now: u64, out: &mut Vec<Effect>) {
        if self.provisional
            && let Some(current) = &self.template
        {
            if template.height < current.height {
                debug!(
                    target: LOG,
                    "template for block {} on {} ignored: mining on our accepted block {}",
                    template.height,
                    template.previous_block,
                    current.previous_block
                );
                return;
            }
            self.provisional = false;
        }
        let new_block = self
            .template
            .as_ref()
            .is_none_or(|t| t.previous_block != template.previous_block);
        self.remember_height(
            template.previous_block,
            u64::from(template.height.saturating_sub(1)),
        );
        self.clock_offset = i64::from(template.cur_time) - now as i64;
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
        self.think(now, out);
        self.update_work(now, out);
    }

    /// A block bitcoind accepted on the current template's previous block: every miner
    /// moves onto it at once, on a template made here (no transactions, the subsidy
    /// alone, the same bits), until bitcoind's template for it arrives and replaces it.
    /// Not where the next block's bits may differ (a retarget, testnets' minimum
    /// difficulty): there the feed's template is awaited.
    fn on_accepted(&mut self, r: &SubmitResult, now: u64, out: &mut Vec<Effect>) {
        self.remember_height(r.hash, r.height);
        let Some(t) = self.template.clone() else {
            return;
        };
        let chain = &self.chain.network().bitcoin;
        let height = t.height.saturating_add(1);
        if u64::from(t.height) != r.height
            || t.previous_block != r.previous
            || !chain.bits_carry_over(height)
        {
            return;
        }
        let cur_time = u32::try_from(self.corrected(now)).unwrap_or(u32::MAX);
        let next = Template {
            version: t.version,
            previous_block: r.hash,
            height,
            bits: t.bits,
            cur_time: cur_time.max(t.cur_time),
            // Above our block's time: the median of the last 11 is at most that.
            min_time: t.min_time.max(r.timestamp.saturating_add(1)),
            coinbase_value: chain.subsidy(height),
            transactions: Vec::new(),
            rules: t.rules.clone(),
            segwit: t.segwit,
            default_witness_commitment: t.segwit.then(|| block::witness_commitment_for(&[]).0),
            limits: t.limits,
            longpollid: None,
        };
        info!(
            target: LOG,
            "block {} accepted: mining on it at once (block {height}), until bitcoind's template comes",
            r.hash
        );
        self.template = Some(Arc::new(next));
        self.provisional = true;
        self.update_work(now, out);
    }

    fn on_miner(&mut self, event: MinerEvent, now: u64, out: &mut Vec<Effect>) {
        let MinerEvent::Share(found) = event;
        let corrected = self.corrected(now);
        // A block went to bitcoind from the miner's thread (recorded here), or goes now.
        if let Some(block) = found.block.clone() {
            let record = FoundBlock::new(
                &block,
                u64::from(found.height),
                found.share.hash,
                &found.share.info.new_script,
                true,
                corrected,
                &self.chain.network().bitcoin,
            );
            self.found_block(block, record, found.submitted, out);
        }
        let hash = found.share.hash;
        // Dead on arrival (R): the work it was found on was no longer current. A template
        // on this very block (its block reached bitcoind over the link before the share
        // reached us) is no sign of that.
        let dead = found.share.previous_hash() != self.best
            || self.template.as_ref().is_some_and(|t| {
                t.previous_block != found.share.header.previous_block
                    && t.previous_block != found.share.pow_hash
            });
        info!(
            target: LOG,
            "share {hash} found by {}{}{}",
            found.miner,
            if found.block.is_some() { " (a block)" } else { "" },
            if dead { ", dead on arrival" } else { "" }
        );
        self.local.found(hash, dead);
        self.chain.add(found.share, None, corrected);
        self.think(now, out);
        self.update_work(now, out);
    }

    fn on_peer(&mut self, event: PeerEvent, now: u64, out: &mut Vec<Effect>) {
        match event {
            PeerEvent::Connected { id, info } => {
                info!(
                    target: LOG,
                    "peer {id} connected: {} {} ({}, version {}, mode {})",
                    if info.inbound { "from" } else { "to" },
                    info.addr,
                    info.sub_version,
                    info.version,
                    info.mode
                );
                self.peers.insert(id, info.mode);
                self.totals.peers_connected += 1;
                // The `version` it got may predate our best share (our side of the
                // handshake does not wait for this thread), and relays before now did not
                // know of it: announce the best share, which it fetches if it lacks it.
                if let Some(best) = self.best {
                    let mut port = Outbox {
                        framing: &self.framing,
                        our_mode: self.settings.our_mode,
                        peers: &self.peers,
                        effects: out,
                    };
                    port.send(id, &Message::Share0s(vec![best]));
                }
            }
            PeerEvent::Mode { id, mode } => {
                if let Some(m) = self.peers.get_mut(&id) {
                    *m = mode;
                }
            }
            PeerEvent::Disconnected { id } => {
                debug!(target: LOG, "peer {id} disconnected");
                self.peers.remove(&id);
                self.totals.peers_disconnected += 1;
                self.sync.on_disconnect(id);
            }
            PeerEvent::Message { id, msg } => {
                self.dirty = true;
                let corrected = self.corrected(now);
                let mut port = Outbox {
                    framing: &self.framing,
                    our_mode: self.settings.our_mode,
                    peers: &self.peers,
                    effects: out,
                };
                let sync = self
                    .sync
                    .on_message(id, msg, &mut self.chain, &mut port, corrected);
                for (share, block) in sync.blocks {
                    self.submit_block(share, block, corrected, out);
                }
            }
            PeerEvent::Addrs(changes) => {
                self.addrs.put_addrs.extend(changes.put);
                self.addrs.remove_addrs.extend(changes.remove);
            }
        }
    }

    /// A height asked for came: the ranking that missed it is done again.
    fn on_height(&mut self, answer: HeightAnswer) {
        self.asked.remove(&answer.block);
        if let Some(h) = answer.height {
            self.remember_height(answer.block, h);
            self.chain.forget_scores();
            self.dirty = true;
        }
    }

    fn remember_height(&mut self, block: Hash256, height: u64) {
        if self.heights.len() >= HEIGHTS_CAP && !self.heights.contains_key(&block) {
            self.heights.clear();
        }
        self.heights.insert(block, height);
    }

    /// Our clock corrected to bitcoind's (the future-timestamp rule reads it).
    fn corrected(&self, now: u64) -> u64 {
        (now as i64).saturating_add(self.clock_offset).max(0) as u64
    }

    /// Verification, best share and pruning; then what follows from them.
    fn think(&mut self, now: u64, out: &mut Vec<Effect>) -> Think {
        let corrected = self.corrected(now);
        let heights = RankHeights {
            heights: &self.heights,
            highest: self
                .template
                .as_ref()
                .map_or(0, |t| t.height.saturating_sub(1)),
            missed: Default::default(),
        };
        let current = self.template.as_ref().map(|t| t.previous_block);
        let think = self.chain.think(&heights, current, corrected);
        self.dirty = false;
        self.totals.thinks += 1;
        self.totals.bad += think.bad.len() as u64;
        self.totals.expired += think.expired.iter().map(|(_, n)| *n as u64).sum::<u64>();
        let missed = heights.missed.into_inner();
        if self.asked.len() + missed.len() > HEIGHTS_CAP {
            self.asked.retain(|_, at| now < *at + ASK_AGAIN);
        }
        for block in missed {
            if self
                .asked
                .get(&block)
                .is_none_or(|at| now >= at + ASK_AGAIN)
            {
                self.asked.insert(block, now);
                out.push(Effect::AskHeight(block));
            }
        }
        for (hash, peer, why) in &think.bad {
            warn!(target: LOG, "share {hash} from peer {peer:?} failed verification: {why}");
        }
        for (share, block) in &think.blocks {
            self.submit_block(*share, block.clone(), corrected, out);
        }
        let mut port = Outbox {
            framing: &self.framing,
            our_mode: self.settings.our_mode,
            peers: &self.peers,
            effects: out,
        };
        self.sync
            .after_think(&think, &self.chain, &mut port, corrected);
        if think.best != self.best {
            self.best = think.best;
            if let Some(best) = self.best {
                let (height, _) = self.chain.tracker().height_and_last(Some(best));
                debug!(target: LOG, "best share {best} at height {height}");
            }
        }
        if now >= self.last_progress + PROGRESS_EVERY {
            self.last_progress = now;
            let p = ShareSync::progress(&self.chain);
            info!(
                target: LOG,
                "shares: have {} of ~{} ({} verified), best {}; peers: {}",
                p.have,
                p.want,
                p.verified,
                self.best.map_or("none".to_string(), |b| b.to_hex()),
                self.peers.len()
            );
        }
        think
    }

    /// Builds and hands out new work when the template or the best share changed, or when
    /// the work's timestamp has fallen more than a share period behind the clock (R stamps
    /// each job when it is handed out: a share on old work would carry an old time, and the
    /// retarget would count that time as the chain's).
    fn update_work(&mut self, now: u64, out: &mut Vec<Effect>) {
        let Some(template) = self.template.clone() else {
            return;
        };
        let key = (Arc::as_ptr(&template) as usize, self.best);
        let period = u64::from(self.chain.network().share_period);
        let fresh = now <= u64::from(self.work_stamp) + period;
        if self.work_from == Some(key) && fresh {
            return;
        }
        match Work::build(&self.chain, &template, self.best, now) {
            Ok(mut work) => {
                work.pace = (!self.peers.is_empty())
                    .then(|| race_pace(self.chain.tracker(), self.chain.network(), self.best))
                    .flatten();
                self.work_from = Some(key);
                self.work_stamp = work.timestamp;
                out.push(Effect::Work(Arc::new(work)));
            }
            Err(e) => warn!(target: LOG, "cannot build work: {e}"),
        }
    }

    /// Whether miners may mine, as R decides it (bitcoind's trouble told apart: never
    /// reached, lost, or answering without a template).
    fn update_readiness(&mut self, out: &mut Vec<Effect>) {
        let net = self.chain.network();
        let readiness = if self.template.is_none() || !self.feed.reachable {
            let answers = self.feed.reachable
                || matches!(
                    self.feed.trouble,
                    Some(Trouble::Answered | Trouble::Forbidden)
                );
            if answers {
                Readiness::NoTemplate
            } else if self.bitcoind_seen || self.template.is_some() {
                Readiness::NoBitcoind
            } else {
                Readiness::BitcoindUnreached
            }
        } else if net.persist && !self.settings.start_new_chain && self.peers.is_empty() {
            Readiness::NoPeers
        } else if net.persist && !self.settings.start_new_chain && self.best.is_none() {
            Readiness::DownloadingShares
        } else {
            Readiness::Ready
        };
        if self.readiness == Some(readiness) {
            return;
        }
        match status::not_ready(readiness, &self.feed) {
            None => info!(target: LOG, "serving miners"),
            Some(why) => warn!(target: LOG, "not serving miners: {}", why.reason),
        }
        self.readiness = Some(readiness);
        out.push(Effect::Readiness(readiness));
    }

    /// The state for the web.
    fn publish_status(&mut self, now: u64, out: &mut Vec<Effect>) {
        self.local.recount(self.chain.tracker(), self.best);
        let inputs = status::Inputs {
            chain: &self.chain,
            best: self.best,
            template: self.template.as_deref(),
            feed: self.feed.clone(),
            history: &self.history,
            local: &self.local,
            started_at: self.settings.started_at,
            now,
            ready: match self.readiness {
                Some(r) => status::not_ready(r, &self.feed).map_or(Ok(()), Err),
                None => Err(status::NotReady {
                    cause: "starting",
                    reason: "starting".into(),
                }),
            },
            fee_percent: self.settings.fee_percent,
            payout_address: &self.settings.payout_address,
            peers: self.peers.len(),
        };
        out.push(Effect::Status(Box::new(status::fill(&inputs))));
    }

    /// A block found in a peer's share: recorded and submitted once.
    fn submit_block(&mut self, share: Hash256, block: Block, now: u64, out: &mut Vec<Effect>) {
        let height = self
            .heights
            .get(&block.header.previous_block)
            .map(|h| h + 1)
            .or(self.template.as_ref().map(|t| u64::from(t.height)))
            .unwrap_or(0);
        // The finder: the share's payout script (a share's hash is not its block's).
        let finder = self
            .chain
            .tracker()
            .get(&share)
            .map(|s| s.info.new_script.clone())
            .unwrap_or_default();
        let record = FoundBlock::new(
            &block,
            height,
            share,
            &finder,
            self.local.contains(&share),
            now,
            &self.chain.network().bitcoin,
        );
        self.found_block(block, record, false, out);
    }

    /// Records a found block and submits it once (a block already recorded is not sent
    /// again; one a miner's thread `submitted` is only recorded).
    fn found_block(
        &mut self,
        block: Block,
        record: FoundBlock,
        submitted: bool,
        out: &mut Vec<Effect>,
    ) {
        let hash = block.header.hash();
        let height = record.height;
        if !self.history.found(record) {
            return;
        }
        if submitted {
            info!(target: LOG, "BLOCK FOUND: {hash} at height {height}; submitted by the miner's thread");
            return;
        }
        info!(target: LOG, "BLOCK FOUND: {hash} at height {height}; submitting");
        out.push(Effect::Submit(BlockSubmission::new(
            &block.header,
            height,
            block.to_bytes(),
        )));
    }

    /// This tick's store writes: the chain's, the address book's and the history's.
    fn write(&mut self, out: &mut Vec<Effect>) {
        let mut batch = self.chain.take_batch();
        let addrs = std::mem::take(&mut self.addrs);
        batch.put_addrs = addrs.put_addrs;
        batch.remove_addrs = addrs.remove_addrs;
        self.history.write_to(&mut batch);
        // Even empty: the writer retries what the store failed to take before.
        out.push(Effect::Store(batch));
    }
}

/// Shares of the best chain [`race_pace`] looks at.
const RACE_SHARES: usize = 10;

/// Node policy (doc/protocol.md #38), with peers: while the best chain is young (under
/// 2 shares) or its newest shares (up to [`RACE_SHARES`]) came at under a quarter of the
/// share period each, our miners make no share on a best share younger than a wait the
/// worker draws, at each new best share, from zero to the pace returned here (a random
/// wait, so that nodes do not fall into step). A young chain climbing from MAX_TARGET (at
/// most 10 % a share) makes shares faster than they cross between nodes, and nodes racing
/// each on its own fork orphan most of them; paced, the first node whose wait ends makes
/// the next share and the others see it before theirs end.
///
/// The pace is a 25th of the period (0.2 s at 5 s), widened by the forks among those newest
/// shares: two nodes whose waits end closer together than a share takes to cross between
/// them both make a share, and one is orphaned. How often that happens grows with the
/// crossing time over the pace, so where shares cross slowly (a loaded machine, a far peer)
/// each share of the newest with a sibling widens the pace by its base (at most 11 bases,
/// 0.44 of the period). Every wait is time the miners' work is lost to the chain, so the
/// base is kept near what shares take to cross on one machine (a few milliseconds).
///
/// A node without peers, or a chain near its period (ten shares in under a quarter of
/// their expected time: about one chance in 2,000), is never paced.
fn race_pace(tracker: &Tracker, net: &Network, best: Option<Hash256>) -> Option<Duration> {
    let base = Duration::from_millis(u64::from(net.share_period) * 40);
    let Some(newest) = best.and_then(|b| tracker.entry(&b)) else {
        return Some(base);
    };
    let mut oldest = newest;
    let mut shares = 1u64;
    let mut forks = 0u32;
    while let Some(parent) = oldest.share.previous_hash() {
        if tracker.children(&parent).len() > 1 {
            forks += 1;
        }
        let Some(previous) = tracker.entry(&parent) else {
            break;
        };
        if shares == RACE_SHARES as u64 {
            break;
        }
        oldest = previous;
        shares += 1;
    }
    let (newest_seen, oldest_seen) = (newest.time_seen, oldest.time_seen);
    let period = u64::from(net.share_period);
    let span = newest_seen.saturating_sub(oldest_seen);
    let racing = shares < 2 || span.saturating_mul(4) < (shares - 1) * period;
    racing.then(|| base * forks.saturating_add(1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bitcoin::hash::sha256d;
    use crate::p2p::{MODE_NORMAL, PeerInfo};
    use crate::sharechain::sample::{self, modern_net, payout};
    use crate::worker::FoundShare;

    const NOW: u64 = 1_600_001_000;

    fn core() -> Core {
        Core::new(
            ShareChain::new(modern_net()),
            History::default(),
            Settings {
                fee_percent: 0.0,
                start_new_chain: false,
                payout_address: "test".into(),
                our_mode: MODE_NORMAL,
                started_at: NOW,
            },
        )
    }

    fn template(previous: Hash256, height: u32) -> Arc<Template> {
        let value = serde_json::json!({
            "version": 0x2000_0000,
            "previousblockhash": previous.to_hex(),
            "height": height,
            "bits": "207fffff",
            "curtime": NOW,
            "mintime": NOW - 600,
            "coinbasevalue": 5_000_000_000u64,
            "transactions": [],
            "rules": ["csv", "!segwit"],
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
        });
        Arc::new(Template::from_value(&value).expect("test template"))
    }

    /// A peer `id` as the p2p side reports it (for the node loop's tests too).
    pub(crate) fn peer_info(id: PeerId) -> PeerInfo {
        PeerInfo {
            addr: ([10, 0, 0, id as u8], 9333).into(),
            inbound: true,
            version: 3502,
            sub_version: "test".into(),
            nonce: id,
            mode: MODE_NORMAL,
            connected_at: NOW,
        }
    }

    fn connect(core: &mut Core, id: PeerId) -> Vec<Effect> {
        let info = peer_info(id);
        core.on(Event::Peer(PeerEvent::Connected { id, info }), NOW)
    }

    /// The shares of a sample chain as one share1as message.
    fn share1as(tracker: &crate::sharechain::tracker::Tracker, hashes: &[Hash256]) -> Message {
        Message::Share1as(
            hashes
                .iter()
                .map(|h| tracker.get(h).expect("sample share").to_share1a())
                .collect(),
        )
    }

    fn sends_to(effects: &[Effect], peer: PeerId) -> usize {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Send { peer: p, .. } if *p == peer))
            .count()
    }

    fn reachable() -> FeedStatus {
        FeedStatus {
            reachable: true,
            ..FeedStatus::default()
        }
    }

    #[test]
    fn work_whose_timestamp_falls_a_share_period_behind_the_clock_is_stamped_again() {
        let mut core = core();
        let period = u64::from(core.chain.network().share_period);
        let work = |effects: &[Effect]| {
            effects.iter().find_map(|e| match e {
                Effect::Work(w) => Some(w.timestamp),
                _ => None,
            })
        };
        let first = core.on(Event::Template(template(sha256d(b"tip"), 101)), NOW);
        assert_eq!(work(&first), Some(NOW as u32));
        // Within a share period of its stamp the work stands...
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + period);
        assert_eq!(work(&tick), None);
        // ...past it, the same template and best share are handed out anew, stamped now.
        let later = NOW + period + 1;
        let tick = core.on(Event::Tick { feed: reachable() }, later);
        assert_eq!(work(&tick), Some(later as u32));
        let tick = core.on(Event::Tick { feed: reachable() }, later + 1);
        assert_eq!(work(&tick), None);
    }

    #[test]
    fn a_template_gives_work_and_a_tick_gives_readiness_status_and_a_store_write() {
        let mut core = core();
        let effects = core.on(Event::Template(template(sha256d(b"tip"), 101)), NOW);
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Work(_))),
            "{effects:?}"
        );
        // The same template again builds nothing new.
        let again = core.on(Event::BatchEnd, NOW);
        assert!(!again.iter().any(|e| matches!(e, Effect::Work(_))));
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + 1);
        assert!(
            tick.iter()
                .any(|e| matches!(e, Effect::Readiness(Readiness::Ready)))
        );
        assert!(tick.iter().any(|e| matches!(e, Effect::Status(_))));
        assert!(tick.iter().any(|e| matches!(e, Effect::Store(_))));
        // Readiness is said once, when it changes.
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + 2);
        assert!(!tick.iter().any(|e| matches!(e, Effect::Readiness(_))));
        let tick = core.on(
            Event::Tick {
                feed: FeedStatus::default(),
            },
            NOW + 3,
        );
        assert!(
            tick.iter()
                .any(|e| matches!(e, Effect::Readiness(Readiness::NoBitcoind)))
        );
    }

    /// The readiness said at a tick with `feed`, and the status's reason and cause.
    fn readiness_at(
        core: &mut Core,
        feed: FeedStatus,
        at: u64,
    ) -> (Option<Readiness>, String, String) {
        let effects = core.on(Event::Tick { feed }, at);
        let readiness = effects.iter().find_map(|e| match e {
            Effect::Readiness(r) => Some(*r),
            _ => None,
        });
        let status = effects
            .iter()
            .find_map(|e| match e {
                Effect::Status(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a status at the tick");
        (readiness, status.not_ready_reason, status.not_ready_cause)
    }

    fn failing(trouble: Trouble, error: &str) -> FeedStatus {
        FeedStatus {
            last_error: Some(error.into()),
            trouble: Some(trouble),
            ..FeedStatus::default()
        }
    }

    #[test]
    fn a_bitcoind_never_reached_is_not_called_lost_and_the_reason_says_what_to_do() {
        let mut core = core();
        let refused = failing(
            Trouble::NoAnswer,
            "rpc connection refused at 127.0.0.1:18443",
        );
        let (r, reason, cause) = readiness_at(&mut core, refused.clone(), NOW);
        assert_eq!(r, Some(Readiness::BitcoindUnreached));
        assert_eq!(cause, "bitcoind");
        assert!(!reason.contains("lost contact"), "{reason}");
        for part in [
            "not reached bitcoind",
            "127.0.0.1:18443",
            "start bitcoind",
            "--bitcoind-rpc-port",
        ] {
            assert!(reason.contains(part), "{part:?} not in {reason:?}");
        }
        // No cookie: the advice is about credentials.
        let mut core2 = super::tests::core();
        let (_, reason, _) = readiness_at(
            &mut core2,
            failing(
                Trouble::Credentials,
                "cannot use the rpc cookie file /x/.cookie: not found",
            ),
            NOW,
        );
        assert!(
            reason.contains("--bitcoind-datadir") && reason.contains("BITCOIND_RPC_USERNAME"),
            "{reason}"
        );
        // bitcoind answers with an error: no template, neither unreached nor lost.
        let (r, reason, _) = readiness_at(
            &mut core2,
            failing(
                Trouble::Answered,
                "rpc getblocktemplate failed with code -10: downloading blocks",
            ),
            NOW + 1,
        );
        assert_eq!(r, Some(Readiness::NoTemplate));
        assert!(reason.contains("no block template"), "{reason}");

        // Once reached (a template came), the same refusal is lost contact.
        core.on(Event::Template(template(sha256d(b"tip"), 101)), NOW + 1);
        let (r, _, _) = readiness_at(&mut core, reachable(), NOW + 2);
        assert_ne!(r, None);
        let (r, reason, cause) = readiness_at(&mut core, refused, NOW + 3);
        assert_eq!(r, Some(Readiness::NoBitcoind));
        assert_eq!(cause, "bitcoind");
        assert!(reason.starts_with("lost contact with bitcoind"), "{reason}");
    }

    #[test]
    fn shares_from_a_peer_are_verified_relayed_to_the_others_and_written_at_the_tick() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 5, 10, &[payout(1), payout(2)]);
        let mut core = core();
        connect(&mut core, 1);
        connect(&mut core, 2);
        let msg = share1as(&tracker, &hashes);
        let mut effects = core.on(Event::Peer(PeerEvent::Message { id: 1, msg }), NOW);
        effects.extend(core.on(Event::BatchEnd, NOW));
        assert_eq!(core.best(), hashes.last().copied());
        assert!(
            sends_to(&effects, 2) > 0,
            "relayed to the other peer: {effects:?}"
        );
        assert_eq!(sends_to(&effects, 1), 0, "never back to its sender");
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::BestShare(b) if *b == hashes.last().copied()))
        );
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + 1);
        let stored: Vec<Hash256> = tick
            .iter()
            .filter_map(|e| match e {
                Effect::Store(b) => Some(b.put_shares.iter().map(|s| s.hash)),
                _ => None,
            })
            .flatten()
            .collect();
        for h in &hashes {
            assert!(stored.contains(h), "share {h} written");
        }
    }

    #[test]
    fn a_peer_that_connects_after_our_best_changed_is_told_our_best_share() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 3, 10, &[payout(1)]);
        let mut core = core();
        connect(&mut core, 1);
        let msg = share1as(&tracker, &hashes);
        core.on(Event::Peer(PeerEvent::Message { id: 1, msg }), NOW);
        core.on(Event::BatchEnd, NOW);
        assert!(core.best().is_some());
        let effects = connect(&mut core, 2);
        assert_eq!(sends_to(&effects, 2), 1, "{effects:?}");
    }

    #[test]
    fn a_forged_share_from_a_peer_closes_it_with_a_ban_score() {
        let net = modern_net();
        let mut forged = sample::cheap_share1a(&net, None, 1);
        forged.info.share_data.target = crate::bitcoin::target::Bits(0x2100ffff);
        let mut core = core();
        connect(&mut core, 7);
        let msg = Message::Share1as(vec![forged]);
        let effects = core.on(Event::Peer(PeerEvent::Message { id: 7, msg }), NOW);
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Score {
                    peer: 7,
                    close: true,
                    ..
                }
            )),
            "{effects:?}"
        );
    }

    #[test]
    fn a_block_a_miner_submitted_is_recorded_not_resubmitted_and_one_it_did_not_is_submitted_once()
    {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 1, 10, &[payout(1)]);
        let share = tracker.get(&hashes[0]).expect("share").clone();
        let block = Block {
            header: share.header,
            txs: vec![],
        };
        let found = |submitted: bool| {
            Event::Miner(MinerEvent::Share(Box::new(FoundShare {
                share: share.clone(),
                block: Some(block.clone()),
                height: 101,
                work_id: 1,
                submitted,
                miner: "m".into(),
            })))
        };
        let submits = |effects: &[Effect]| {
            effects
                .iter()
                .filter(|e| matches!(e, Effect::Submit(_)))
                .count()
        };
        let mut a = core();
        assert_eq!(submits(&a.on(found(true), NOW)), 0);
        assert_eq!(a.history().blocks.len(), 1, "recorded all the same");
        let mut b = core();
        assert_eq!(submits(&b.on(found(false), NOW)), 1);
        assert_eq!(submits(&b.on(found(false), NOW)), 0, "once");
        let ours = &a.history().blocks[0];
        assert_eq!(
            ours.share,
            share.hash.to_hex(),
            "the share's hash, not the block's"
        );
        assert!(ours.local);
    }

    #[test]
    fn our_block_share_is_not_dead_when_bitcoinds_template_already_builds_on_its_block() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 1, 10, &[payout(1)]);
        let share = tracker.get(&hashes[0]).expect("share").clone();
        assert_ne!(
            share.hash, share.pow_hash,
            "a share's hash is not its block's"
        );
        let mut core = core();
        // The block reached bitcoind over the link before the share reached the node: the
        // template already builds on the block (its hash is the header's, the pow hash).
        core.on(Event::Template(template(share.pow_hash, 102)), NOW);
        core.on(
            Event::Miner(MinerEvent::Share(Box::new(FoundShare {
                share: share.clone(),
                block: Some(Block {
                    header: share.header,
                    txs: vec![],
                }),
                height: 101,
                work_id: 1,
                submitted: true,
                miner: "m".into(),
            }))),
            NOW,
        );
        assert_eq!(core.local.counts().dead, 0, "{:?}", core.local.counts());
    }

    #[test]
    fn a_block_in_a_peers_share_is_recorded_with_its_share_and_finder_not_as_ours() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 1, 10, &[payout(7)]);
        let share = tracker.get(&hashes[0]).expect("share").clone();
        let block = Block {
            header: share.header,
            txs: vec![],
        };
        let mut core = core();
        core.chain.add(share.clone(), Some(1), NOW);
        let mut out = Vec::new();
        core.submit_block(share.hash, block, NOW, &mut out);
        let recorded = &core.history().blocks[0];
        assert_eq!(recorded.share, share.hash.to_hex());
        assert_eq!(
            recorded.finder,
            crate::bitcoin::address::from_script(&payout(7), &net.bitcoin).unwrap()
        );
        assert!(!recorded.local);
    }

    #[test]
    fn a_height_the_ranking_misses_is_asked_once_and_its_answer_makes_it_think_again() {
        let net = modern_net();
        let (tracker, hashes) = sample::chain(&net, 3, 10, &[payout(1)]);
        let block = tracker
            .get(&hashes[0])
            .expect("share")
            .header
            .previous_block;
        let mut core = core();
        connect(&mut core, 1);
        let msg = share1as(&tracker, &hashes);
        let mut effects = core.on(Event::Peer(PeerEvent::Message { id: 1, msg }), NOW);
        effects.extend(core.on(Event::BatchEnd, NOW));
        let asks = |effects: &[Effect]| {
            effects
                .iter()
                .filter(|e| matches!(e, Effect::AskHeight(b) if *b == block))
                .count()
        };
        assert_eq!(asks(&effects), 1, "{effects:?}");
        // Not asked again while the question is open.
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + 1);
        assert_eq!(asks(&tick), 0);
        // Unanswered (the lookup dropped it, or bitcoind failed): asked again later.
        let tick = core.on(Event::Tick { feed: reachable() }, NOW + 1 + ASK_AGAIN);
        assert_eq!(asks(&tick), 1);
        let thinks = core.totals().thinks;
        core.on(
            Event::Height(HeightAnswer {
                block,
                height: Some(100),
            }),
            NOW + 12,
        );
        core.on(Event::BatchEnd, NOW + 12);
        assert_eq!(
            core.totals().thinks,
            thinks + 1,
            "the answer is thought about"
        );
    }

    fn work_in(effects: &[Effect]) -> Option<Arc<Work>> {
        effects.iter().find_map(|e| match e {
            Effect::Work(w) => Some(w.clone()),
            _ => None,
        })
    }

    fn result(hash: Hash256, previous: Hash256, height: u64, outcome: Outcome) -> SubmitResult {
        SubmitResult {
            hash,
            previous,
            height,
            timestamp: NOW as u32,
            outcome,
            attempts: 1,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn an_accepted_block_moves_the_work_onto_it_before_bitcoinds_template() {
        let mut core = core();
        let tip = sha256d(b"tip");
        core.on(Event::Template(template(tip, 101)), NOW);
        // Neither a sibling's nor a refused outcome moves anything.
        for outcome in [
            Outcome::Sibling {
                accepted: sha256d(b"other"),
            },
            Outcome::Rejected("high-hash".into()),
        ] {
            let effects = core.on(
                Event::Submitted(result(sha256d(b"x"), tip, 101, outcome)),
                NOW,
            );
            assert!(work_in(&effects).is_none());
        }
        let ours = sha256d(b"our block");
        let effects = core.on(
            Event::Submitted(result(ours, tip, 101, Outcome::Accepted)),
            NOW + 1,
        );
        let work = work_in(&effects).expect("new work at once");
        let t = &work.template;
        assert_eq!((t.previous_block, t.height), (ours, 102));
        assert!(t.transactions.is_empty());
        assert_eq!(t.coinbase_value, 5_000_000_000, "the regtest subsidy alone");
        assert_eq!(t.bits, template(tip, 101).bits);
        assert!(t.min_time > NOW as u32, "past our block's time");
        // A late answer for the old tip is not news.
        let late = core.on(Event::Template(template(tip, 101)), NOW + 1);
        assert!(work_in(&late).is_none(), "{late:?}");
        // bitcoind's template on our block replaces the one made here.
        let real = template(ours, 102);
        let effects = core.on(Event::Template(real.clone()), NOW + 2);
        let work = work_in(&effects).expect("bitcoind's template replaces it");
        assert!(Arc::ptr_eq(&work.template, &real));
        // An acceptance of a block on an older tip moves nothing.
        let effects = core.on(
            Event::Submitted(result(sha256d(b"old"), tip, 101, Outcome::Accepted)),
            NOW + 2,
        );
        assert!(work_in(&effects).is_none());
    }

    #[test]
    fn a_healthy_chain_of_our_shares_longer_than_chain_length_shows_no_orphans() {
        let net = modern_net();
        let n = 3 * net.chain_length as usize;
        let (tracker, hashes) = sample::chain(&net, n, 10, &[payout(1)]);
        let mut core = core();
        // One share every 10 s, a tick each second: the oldest are pruned (below
        // 2 × CHAIN_LENGTH + 10) long after a count saw them in the chain.
        for (i, hash) in hashes.iter().enumerate() {
            let share = tracker.get(hash).expect("sample share").clone();
            let at = NOW + 10 * i as u64;
            core.on(
                Event::Miner(MinerEvent::Share(Box::new(FoundShare {
                    share,
                    block: None,
                    height: 101,
                    work_id: i as u64,
                    submitted: false,
                    miner: "m".into(),
                }))),
                at,
            );
            core.on(Event::Tick { feed: reachable() }, at + 1);
        }
        assert!(core.chain().tracker().len() < n, "the oldest were pruned");
        let effects = core.on(Event::Tick { feed: reachable() }, NOW + 10 * n as u64);
        let status = effects
            .iter()
            .find_map(|e| match e {
                Effect::Status(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a status at the tick");
        assert_eq!(status.best_share, hashes[n - 1].to_hex());
        assert_eq!(
            status.local_shares,
            crate::web::status::LocalShares {
                total: n as u64,
                orphan: 0,
                dead: 0
            }
        );
    }

    /// A chain of `n` shares, seen `seen_every` seconds apart.
    fn chain_seen(net: &Network, n: usize, seen_every: u64) -> (Tracker, Option<Hash256>) {
        let mut tracker = Tracker::new();
        let mut best = None;
        for i in 0..n {
            let spec = sample::Spec::new(best, 1_600_000_000 + 5 * i as u32, payout(1));
            let share = sample::mine(&tracker, net, &spec);
            best = Some(share.hash);
            tracker.add(share, 1_700_000_000 + seen_every * i as u64, Some(1));
        }
        (tracker, best)
    }

    #[test]
    fn a_young_or_racing_chain_is_paced_and_a_chain_near_its_period_is_not() {
        let mut net = modern_net();
        net.share_period = 5;
        let pace = Some(Duration::from_millis(200));
        // No chain yet, or one share: young.
        assert_eq!(race_pace(&Tracker::new(), &net, None), pace);
        let (tracker, best) = chain_seen(&net, 1, 0);
        assert_eq!(race_pace(&tracker, &net, best), pace);
        // Ten shares within a second: racing.
        let (tracker, best) = chain_seen(&net, 12, 0);
        assert_eq!(race_pace(&tracker, &net, best), pace);
        // Ten shares a second apart (a fifth of the period): still under a quarter.
        let (tracker, best) = chain_seen(&net, 12, 1);
        assert_eq!(race_pace(&tracker, &net, best), pace);
        // Two seconds apart (under the period, above a quarter of it): not paced.
        let (tracker, best) = chain_seen(&net, 12, 2);
        assert_eq!(race_pace(&tracker, &net, best), None);
        // At the period: not paced.
        let (tracker, best) = chain_seen(&net, 12, 5);
        assert_eq!(race_pace(&tracker, &net, best), None);
    }

    /// Adds a share of another payout on the parent of the `n`th newest share of the
    /// chain from `best` (1: the newest): a sibling, as a peer racing us makes.
    fn add_sibling(tracker: &mut Tracker, net: &Network, best: Option<Hash256>, n: u32) {
        let hash = best.and_then(|b| tracker.nth_parent(b, n - 1)).unwrap();
        let parent = tracker.get(&hash).unwrap().previous_hash();
        let spec = sample::Spec::new(parent, 1_600_000_000 + n, payout(2));
        let share = sample::mine(tracker, net, &spec);
        tracker.add(share, 1_700_000_000, Some(2));
    }

    #[test]
    fn forks_among_the_newest_shares_widen_the_pace_by_its_base_each() {
        let mut net = modern_net();
        net.share_period = 5;
        let ms = |ms| Some(Duration::from_millis(ms));
        let (mut tracker, best) = chain_seen(&net, 30, 0);
        assert_eq!(race_pace(&tracker, &net, best), ms(200));
        // A sibling of the newest share: a base wider.
        add_sibling(&mut tracker, &net, best, 1);
        assert_eq!(race_pace(&tracker, &net, best), ms(400));
        // One of the tenth newest too; one below the ten looked at does not count.
        add_sibling(&mut tracker, &net, best, 10);
        add_sibling(&mut tracker, &net, best, 11);
        assert_eq!(race_pace(&tracker, &net, best), ms(600));
        // A fork at every one of the ten: eleven bases, under half the period.
        for n in 2..10 {
            add_sibling(&mut tracker, &net, best, n);
        }
        assert_eq!(race_pace(&tracker, &net, best), ms(2200));
        // Forks or not, a chain at its period is not paced.
        let (mut tracker, best) = chain_seen(&net, 12, 5);
        add_sibling(&mut tracker, &net, best, 1);
        assert_eq!(race_pace(&tracker, &net, best), None);
    }
}
