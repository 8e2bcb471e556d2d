//! The share side of the protocol, run on the node thread (it owns the share chain; this
//! has no thread of its own): shares received (§3.9), hashes announced (§3.8), getshares
//! served and requested with R's clamps and throttling (§3.7), misbehaving senders
//! punished, and the best chain relayed newest first, never back to its sender (§3.10).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use log::{debug, warn};

use crate::bitcoin::block::Block;
use crate::bitcoin::encode::{Encode, WriteExt};
use crate::bitcoin::frame::Framing;
use crate::bitcoin::hash::Hash256;
use crate::network::Network;
use crate::sharechain::chain::{Added, ShareChain, Think};
use crate::sharechain::share::{Share, ShareError};

use crate::p2p::message::Message;
use crate::p2p::peers::Peers;
use crate::p2p::{MODE_LOW_BANDWIDTH, PeerId, chance, random_u64, score};

const LOG: &str = "p2p";
/// How long requests and peer heads are remembered (R: 300 s).
const MEMORY: u64 = 300;
/// Ancestors asked for with a missing share (R asked 2000; servers clamp to 1000).
const REQUEST_PARENTS: u64 = 1000;
/// R's clamp: at most 1000 // len(hashes) parents per hash.
const SERVE_PARENTS: u64 = 1000;
/// Shares in one getshares reply.
const SERVE_MAX_SHARES: usize = 1000;
/// Bytes in one getshares reply (modern-rules.md §6: replies capped in bytes).
const SERVE_MAX_BYTES: usize = 4_000_000;
/// Hashes of a getshares request looked at; the rest are ignored.
const SERVE_MAX_HASHES: usize = 1000;
/// Stop hashes of a getshares request looked at.
const SERVE_MAX_STOPS: usize = 1000;
/// Hashes of a share0s looked at.
const MAX_ANNOUNCED: usize = 1000;
/// Stop hashes sent with a request (R: 100).
const REQUEST_MAX_STOPS: usize = 100;
/// Hashes remembered as requested (each for `MEMORY`); announced hashes past it are not
/// asked for until older requests are forgotten.
const MAX_REQUESTED: usize = 50_000;
/// Batch heads remembered with their senders (each for `MEMORY`).
const MAX_PEER_HEADS: usize = 10_000;
/// Announced hashes asked for per peer per `MEMORY`, and batch heads noted per peer per
/// `MEMORY`: one peer cannot fill the shared maps above and shut others out.
const PER_PEER_ASKED: usize = 1_000;
const PER_PEER_HEADS: usize = 200;
/// Unknown hashes of one share0s asked for (R: all of them).
const MAX_ANNOUNCED_ASKED: usize = 100;
/// What share sync needs of the peers: the real [`Peers`] handle, or the node core's
/// record of peers that turns each call into an effect.
pub trait PeerPort {
    /// The network's framing, to build a frame once for many peers.
    fn framing(&self) -> &Framing;
    /// Handshaken peers with the mode each link runs in (the lower of both sides').
    fn connected(&self) -> Vec<(PeerId, u32)>;
    fn is_up(&self, id: PeerId) -> bool;
    fn send(&mut self, id: PeerId, msg: &Message) -> bool;
    fn send_frame(&mut self, id: PeerId, frame: Arc<[u8]>) -> bool;
    /// Adds to the peer's ban score and disconnects it.
    fn punish(&mut self, id: PeerId, points: u32, reason: &str);
    /// Adds to the peer's ban score; disconnects only once its address is banned.
    fn add_ban_score(&mut self, id: PeerId, points: u32, reason: &str);
    /// Our best share, for the `version` we send.
    fn set_best_share(&mut self, best: Option<Hash256>);
}

impl PeerPort for Peers {
    fn framing(&self) -> &Framing {
        Peers::framing(self)
    }
    fn connected(&self) -> Vec<(PeerId, u32)> {
        Peers::connected(self)
    }
    fn is_up(&self, id: PeerId) -> bool {
        Peers::is_up(self, id)
    }
    fn send(&mut self, id: PeerId, msg: &Message) -> bool {
        Peers::send(self, id, msg)
    }
    fn send_frame(&mut self, id: PeerId, frame: Arc<[u8]>) -> bool {
        Peers::send_frame(self, id, frame)
    }
    fn punish(&mut self, id: PeerId, points: u32, reason: &str) {
        Peers::punish(self, id, points, reason)
    }
    fn add_ban_score(&mut self, id: PeerId, points: u32, reason: &str) {
        Peers::add_ban_score(self, id, points, reason)
    }
    fn set_best_share(&mut self, best: Option<Hash256>) {
        Peers::set_best_share(self, best)
    }
}

/// Shares relayed at most per change of the best share; older ones are fetched by peers.
const RELAY_MAX: usize = 100;

/// What handling a message did that the node must act on.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Shares new to the chain: think soon.
    pub added: usize,
    /// Whole copies that replaced mutated block shares, with the share's hash: submit these
    /// blocks.
    pub blocks: Vec<(Hash256, Block)>,
}

/// The share chain's sync state: requests in flight and what was relayed.
#[derive(Debug)]
pub struct ShareSync {
    net: Network,
    /// Hash → (last request, requests so far).
    requested: HashMap<Hash256, (u64, u32)>,
    /// First share of a batch → the peers that sent it, and when last.
    peer_heads: HashMap<Hash256, (u64, Vec<PeerId>)>,
    /// Shares of the best chain already relayed.
    relayed: HashSet<Hash256>,
    last_best: Option<Hash256>,
    last_cleanup: u64,
    /// The time of the call in hand (Unix seconds, from the caller: no clock here).
    now: u64,
    /// Per peer: (window start, announced hashes asked for, heads noted) in this window.
    quota: HashMap<PeerId, (u64, usize, usize)>,
}

/// How far the chain is: R's "Have: n/~2·CHAIN_LENGTH".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub have: usize,
    pub verified: usize,
    pub want: usize,
}

impl ShareSync {
    pub fn new(net: Network) -> ShareSync {
        ShareSync {
            net,
            requested: HashMap::new(),
            peer_heads: HashMap::new(),
            relayed: HashSet::new(),
            last_best: None,
            last_cleanup: 0,
            now: 0,
            quota: HashMap::new(),
        }
    }

    pub fn progress(chain: &ShareChain) -> Progress {
        Progress {
            have: chain.tracker().len(),
            verified: chain.tracker().verified_count(),
            want: 2 * chain.network().chain_length as usize,
        }
    }

    /// Handles a share message or getshares from `peer`, seen at `now` (Unix seconds).
    pub fn on_message(
        &mut self,
        peer: PeerId,
        msg: Message,
        chain: &mut ShareChain,
        peers: &mut dyn PeerPort,
        now: u64,
    ) -> SyncOutcome {
        self.now = now;
        match msg {
            Message::Share1as(list) => {
                let built: Vec<_> = list
                    .into_iter()
                    .map(|a| Share::from_share1a(a, &self.net))
                    .collect();
                self.on_shares(peer, built, chain, peers, now)
            }
            Message::Share1bs(list) => {
                let built: Vec<_> = list
                    .into_iter()
                    .map(|b| Share::from_share1b(b, &self.net))
                    .collect();
                self.on_shares(peer, built, chain, peers, now)
            }
            Message::Share0s(hashes) => {
                self.on_hashes(peer, &hashes, chain, peers);
                SyncOutcome::default()
            }
            Message::GetShares {
                hashes,
                parents,
                stops,
            } => {
                serve(peer, &hashes, parents, &stops, chain, peers);
                SyncOutcome::default()
            }
            _ => SyncOutcome::default(),
        }
    }

    /// Forgets what a peer that went away announced.
    pub fn on_disconnect(&mut self, peer: PeerId) {
        self.quota.remove(&peer);
        for (_, ids) in self.peer_heads.values_mut() {
            ids.retain(|p| *p != peer);
        }
        self.peer_heads.retain(|_, (_, ids)| !ids.is_empty());
    }

    fn on_shares(
        &mut self,
        peer: PeerId,
        built: Vec<Result<Share, ShareError>>,
        chain: &mut ShareChain,
        peers: &mut dyn PeerPort,
        now: u64,
    ) -> SyncOutcome {
        let mut out = SyncOutcome::default();
        let mut shares = Vec::new();
        for share in built {
            match share {
                Ok(s) => shares.push(s),
                // R: log "invalid share", close the connection, drop the whole message.
                Err(e @ ShareError::WrongType { .. }) => {
                    peers.punish(peer, score::WRONG_SHARE_TYPE, &e.to_string());
                    return out;
                }
                Err(
                    e @ (ShareError::TargetAboveMax { .. }
                    | ShareError::SubsidyAboveMaxMoney { .. }),
                ) => {
                    peers.punish(peer, score::FORGED_SHARE, &e.to_string());
                    return out;
                }
                Err(e) => {
                    peers.punish(peer, score::INVALID_SHARE, &e.to_string());
                    return out;
                }
            }
        }
        if let Some(first) = shares.first() {
            self.note_head(first.hash, peer);
        }
        for share in shares {
            let hash = share.hash;
            match chain.add(share, Some(peer), now) {
                Added::New => out.added += 1,
                Added::Known => {}
                Added::Replaced(block) => {
                    out.blocks.push((hash, *block));
                    // Relay the whole copy after the next think.
                    self.relayed.remove(&hash);
                    self.last_best = None;
                    out.added += 1;
                }
                Added::OverBudget { held, sender } => {
                    // The rest of the message would be refused too. Only a sender past its
                    // own budget is to blame; a full total says nothing about this one.
                    if sender {
                        peers.add_ban_score(
                            peer,
                            score::UNCONNECTED_OVER_BUDGET,
                            &format!(
                                "sent more unconnected shares than we hold for one peer ({} shares, {} bytes held)",
                                held.shares, held.bytes
                            ),
                        );
                    } else {
                        debug!(
                            target: LOG,
                            "unconnected shares from peer {peer} not taken: {} held in all",
                            held.shares
                        );
                    }
                    break;
                }
            }
        }
        out
    }

    /// This peer's quota window, started anew after `MEMORY`.
    fn quota(&mut self, peer: PeerId) -> &mut (u64, usize, usize) {
        let now = self.now;
        let q = self.quota.entry(peer).or_insert((now, 0, 0));
        if now.saturating_sub(q.0) >= MEMORY {
            *q = (now, 0, 0);
        }
        q
    }

    fn note_head(&mut self, hash: Hash256, peer: PeerId) {
        if !self.peer_heads.contains_key(&hash) {
            // Bounded in all and per peer: a flood of messages cannot grow it, nor fill it
            // for everyone else.
            if self.peer_heads.len() >= MAX_PEER_HEADS || self.quota(peer).2 >= PER_PEER_HEADS {
                return;
            }
            self.quota(peer).2 += 1;
        }
        let e = self
            .peer_heads
            .entry(hash)
            .or_insert_with(|| (self.now, Vec::new()));
        e.0 = self.now;
        if !e.1.contains(&peer) {
            e.1.push(peer);
        }
    }

    /// share0s: ask the announcer for the unknown hashes not asked for lately.
    fn on_hashes(
        &mut self,
        peer: PeerId,
        hashes: &[Hash256],
        chain: &ShareChain,
        peers: &mut dyn PeerPort,
    ) {
        if let Some(first) = hashes.first() {
            self.note_head(*first, peer);
        }
        let now = self.now;
        let wanted: Vec<Hash256> = hashes
            .iter()
            .take(MAX_ANNOUNCED)
            .filter(|h| !chain.tracker().contains(h))
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|h| self.may_request(h, now))
            .collect();
        let allowed = MAX_ANNOUNCED_ASKED
            .min(MAX_REQUESTED.saturating_sub(self.requested.len()))
            .min(PER_PEER_ASKED.saturating_sub(self.quota(peer).1));
        let wanted: Vec<Hash256> = wanted.into_iter().take(allowed).collect();
        self.quota(peer).1 += wanted.len();
        if wanted.is_empty() {
            return;
        }
        for h in &wanted {
            self.mark_requested(*h, now);
        }
        peers.send(
            peer,
            &Message::GetShares {
                hashes: wanted,
                parents: 0,
                stops: Vec::new(),
            },
        );
    }

    /// R's throttle: a hash is asked again only after 10 × 1.5^count seconds.
    fn may_request(&self, hash: &Hash256, now: u64) -> bool {
        match self.requested.get(hash) {
            None => true,
            Some((last, count)) => {
                let wait = 10.0 * 1.5f64.powi((*count).min(30) as i32);
                now.saturating_sub(*last) as f64 >= wait
            }
        }
    }

    fn mark_requested(&mut self, hash: Hash256, now: u64) {
        let e = self.requested.entry(hash).or_insert((now, 0));
        e.0 = now;
        e.1 += 1;
    }

    /// After the node's think: punish senders of bad shares, ask for missing shares,
    /// announce our best share and relay the best chain's new shares.
    pub fn after_think(
        &mut self,
        think: &Think,
        chain: &ShareChain,
        peers: &mut dyn PeerPort,
        now: u64,
    ) {
        self.now = now;
        for (hash, peer, err) in &think.bad {
            // A share from the future by our clock may be honest clock skew: removed, not
            // scored.
            if let Some(p) = peer
                && !err.is_timing()
            {
                peers.add_ban_score(
                    *p,
                    score::BAD_SHARE,
                    &format!("sent invalid share {hash}: {err}"),
                );
            }
        }
        for (peer, n) in &think.expired {
            peers.add_ban_score(
                *peer,
                score::UNCONNECTED_EXPIRED,
                &format!("sent {n} shares whose ancestors never arrived"),
            );
        }
        let connected = peers.connected();
        if !think.wanted.is_empty() && !connected.is_empty() {
            let stops = request_stops(chain);
            for (hint, hash) in &think.wanted {
                self.request(*hint, *hash, chain, peers, &connected, &stops);
            }
        }
        peers.set_best_share(think.best);
        if think.best != self.last_best {
            self.relay(think.best, chain, peers, &connected);
            self.last_best = think.best;
        }
        self.cleanup(chain);
    }

    fn request(
        &mut self,
        hint: Option<PeerId>,
        hash: Hash256,
        chain: &ShareChain,
        peers: &mut dyn PeerPort,
        connected: &[(PeerId, u32)],
        stops: &[Hash256],
    ) {
        let now = self.now;
        if chain.tracker().contains(&hash) || !self.may_request(&hash, now) {
            return;
        }
        let is_up = |p: &PeerId| connected.iter().any(|(id, _)| id == p);
        let hint = hint.filter(is_up);
        let first_try = !self.requested.contains_key(&hash);
        let chosen = if first_try && hint.is_some() {
            hint
        } else {
            // R: with probability 0.8 a peer that sent a head descending from the hole.
            let mut heads: Vec<PeerId> = self
                .peer_heads
                .iter()
                .filter(|(head, _)| {
                    chain.tracker().all().height_and_last(Some(**head)).1 == Some(hash)
                })
                .flat_map(|(_, (_, ids))| ids.iter().copied())
                .filter(is_up)
                .collect();
            heads.sort();
            heads.dedup();
            if !heads.is_empty() && (hint.is_none() || chance(0.8)) {
                Some(heads[(random_u64() as usize) % heads.len()])
            } else {
                hint.or_else(|| Some(connected[(random_u64() as usize) % connected.len()].0))
            }
        };
        let Some(peer) = chosen else { return };
        self.mark_requested(hash, now);
        debug!(target: LOG, "asking peer {peer} for share {hash} and its ancestors");
        peers.send(
            peer,
            &Message::GetShares {
                hashes: vec![hash],
                parents: REQUEST_PARENTS,
                stops: stops.to_vec(),
            },
        );
    }

    /// Relays the best chain's shares not relayed yet, newest first: a block share whole,
    /// others as share1a, or by hash (share0s) on low-bandwidth links; never to the peer
    /// a share came from.
    fn relay(
        &mut self,
        best: Option<Hash256>,
        chain: &ShareChain,
        peers: &mut dyn PeerPort,
        connected: &[(PeerId, u32)],
    ) {
        let fresh: Vec<Hash256> = chain
            .tracker()
            .all()
            .chain(best)
            .take(RELAY_MAX)
            .map(|(h, _)| h)
            .take_while(|h| !self.relayed.contains(h))
            .collect();
        for hash in &fresh {
            // A mutated copy is not relayed now; the whole copy will be (`on_shares`).
            if !chain.is_mutated(hash) {
                self.relayed.insert(*hash);
            }
        }
        if connected.is_empty() {
            return;
        }
        let framing = &peers.framing().clone();
        for hash in fresh {
            let Some(entry) = chain.tracker().entry(&hash) else {
                continue;
            };
            if chain.is_mutated(&hash) {
                continue; // a mutated copy is not passed on; the whole one will be
            }
            let share = &entry.share;
            let Some(full) = share_frames(framing, &[share]).into_iter().next() else {
                continue;
            };
            let full: Arc<[u8]> = full.into();
            let mut by_hash: Option<Arc<[u8]>> = None;
            for (id, mode) in connected {
                if Some(*id) == entry.peer {
                    continue;
                }
                let frame = if *mode == MODE_LOW_BANDWIDTH && !share.is_block() {
                    if by_hash.is_none() {
                        by_hash = Message::Share0s(vec![hash])
                            .to_frame(framing)
                            .ok()
                            .map(Arc::from);
                    }
                    match &by_hash {
                        Some(f) => f.clone(),
                        None => continue,
                    }
                } else {
                    full.clone()
                };
                peers.send_frame(*id, frame);
            }
        }
    }

    fn cleanup(&mut self, chain: &ShareChain) {
        let now = self.now;
        if now.saturating_sub(self.last_cleanup) < 10 {
            return;
        }
        self.last_cleanup = now;
        self.requested
            .retain(|_, (at, _)| now.saturating_sub(*at) < MEMORY);
        self.peer_heads
            .retain(|_, (at, _)| now.saturating_sub(*at) < MEMORY);
        if self.relayed.len() > 2 * chain.tracker().len() + RELAY_MAX {
            self.relayed.retain(|h| chain.tracker().contains(h));
        }
    }
}

/// R's stops for a missing-ancestor request: every head and the share ten below it;
/// verified heads only when there are any (unconnected heads are nobody's chain).
fn request_stops(chain: &ShareChain) -> Vec<Hash256> {
    let all = chain.tracker().all();
    let verified = chain.tracker().verified().heads();
    let mut heads: Vec<Hash256> = if verified.is_empty() {
        all.heads()
            .iter()
            .take(4 * REQUEST_MAX_STOPS)
            .copied()
            .collect()
    } else {
        verified.iter().copied().collect()
    };
    heads.sort();
    let mut stops: Vec<Hash256> = Vec::new();
    for head in heads {
        stops.push(head);
        let height = all.height(&head);
        if let Some(p) = all.nth_parent(head, height.saturating_sub(1).min(10)) {
            stops.push(p);
        }
    }
    stops.sort();
    stops.dedup();
    stops.truncate(REQUEST_MAX_STOPS);
    stops
}

/// Answers a getshares: each hash and up to `parents` ancestors (clamped as R: 1000 //
/// len(hashes)), stopping at any stop hash, within a share and byte cap; no reply to an
/// empty request. A requested hash is served only when it is verified or below a
/// verified share (modern-rules.md, node policy), and then with its ancestors.
fn serve(
    peer: PeerId,
    hashes: &[Hash256],
    parents: u64,
    stops: &[Hash256],
    chain: &ShareChain,
    peers: &mut dyn PeerPort,
) {
    if hashes.is_empty() || !peers.is_up(peer) {
        return;
    }
    let hashes = &hashes[..hashes.len().min(SERVE_MAX_HASHES)];
    let parents = parents.min(SERVE_PARENTS / hashes.len() as u64) as usize;
    let stops: HashSet<Hash256> = stops.iter().take(SERVE_MAX_STOPS).copied().collect();
    let mut out: Vec<&Share> = Vec::new();
    let mut bytes = 0usize;
    'hashes: for h in hashes {
        // Only verified shares and their ancestors (which they commit to by hash);
        // unconnected or unverified shares are never served.
        if !chain.is_servable(h) {
            continue;
        }
        for (hash, entry) in chain.tracker().all().chain(Some(*h)).take(parents + 1) {
            if stops.contains(&hash) {
                break;
            }
            if out.len() >= SERVE_MAX_SHARES || bytes >= SERVE_MAX_BYTES {
                break 'hashes;
            }
            bytes += approx_size(&entry.share);
            out.push(&entry.share);
        }
    }
    if out.is_empty() {
        return;
    }
    debug!(target: LOG, "sending {} shares to peer {peer}", out.len());
    let framing = &peers.framing().clone();
    for frame in share_frames(framing, &out) {
        if !peers.send_frame(peer, frame.into()) {
            return;
        }
    }
}

fn approx_size(share: &Share) -> usize {
    let base = 80 + 200 + 33 * share.merkle_branch.len();
    base + share
        .other_txs
        .as_ref()
        .map_or(0, |txs| txs.iter().map(|t| t.to_bytes().len()).sum())
}

fn encode_share(share: &Share, out: &mut Vec<u8>) -> bool {
    share.header.encode_to(out);
    share.info.encode_to(out);
    match (&share.other_txs, share.is_block()) {
        (Some(txs), true) => {
            out.put_compact_size(txs.len() as u64);
            txs.iter().for_each(|t| t.encode_to(out));
        }
        (_, false) => {
            out.put_compact_size(share.merkle_branch.len() as u64);
            share.merkle_branch.iter().for_each(|s| s.encode_to(out));
        }
        // A block share without its transactions cannot be sent as either type.
        (None, true) => return false,
    }
    true
}

/// Frames carrying `shares` whole: share1bs for block shares, then share1as, in the given
/// order within each, split so that no payload passes the network's limit.
pub fn share_frames(framing: &Framing, shares: &[&Share]) -> Vec<Vec<u8>> {
    let max = framing.max_payload().saturating_sub(9);
    let mut frames = Vec::new();
    for (command, blocks) in [("share1bs", true), ("share1as", false)] {
        let mut body = Vec::new();
        let mut n = 0u64;
        let mut one = Vec::new();
        for share in shares.iter().filter(|s| s.is_block() == blocks) {
            one.clear();
            if !encode_share(share, &mut one) {
                continue;
            }
            if one.len() > max {
                warn!(target: LOG, "share {} too large to send ({} bytes)", share.hash, one.len());
                continue;
            }
            if body.len() + one.len() > max {
                push_frame(framing, command, n, &body, &mut frames);
                body.clear();
                n = 0;
            }
            body.extend_from_slice(&one);
            n += 1;
        }
        if n > 0 {
            push_frame(framing, command, n, &body, &mut frames);
        }
    }
    frames
}

fn push_frame(framing: &Framing, command: &str, n: u64, body: &[u8], frames: &mut Vec<Vec<u8>>) {
    let mut payload = Vec::with_capacity(body.len() + 9);
    payload.put_compact_size(n);
    payload.extend_from_slice(body);
    match framing.encode(command, &payload) {
        Ok(frame) => frames.push(frame),
        Err(e) => warn!(target: LOG, "cannot frame {command}: {e}"),
    }
}
