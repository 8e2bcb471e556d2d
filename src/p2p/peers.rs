//! The peer table shared by the p2p threads, and [`Peers`], the handle the node uses to
//! send to peers, punish them and read their status.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use log::{debug, info, warn};
use serde::Serialize;

use crate::bitcoin::frame::Framing;
use crate::bitcoin::hash::Hash256;

use super::addrbook::AddrBook;
use super::ban::{self, Bans};
use super::message::Message;
use super::{EventBudget, P2pConfig, PeerId, PeerInfo, Pending, group};
use crate::thread::lock;

const LOG: &str = "p2p";

/// One connection, from accept or dial until its reader ends.
#[derive(Debug)]
pub(crate) struct Slot {
    pub addr: SocketAddr,
    pub inbound: bool,
    pub out: Sender<Arc<[u8]>>,
    /// Bytes queued for the writer.
    pub queued: Arc<AtomicUsize>,
    /// A clone of the socket, to close it from any thread.
    pub stream: TcpStream,
    /// Unix seconds.
    pub since: u64,
    /// Set once the peer's `version` is accepted.
    pub info: Option<PeerInfo>,
    /// When the `version` was accepted.
    pub handshaken_at: Option<Instant>,
    /// This peer's share messages handed to the node and not yet taken.
    pub events: Arc<EventBudget>,
    /// Why we closed it, when we did.
    pub closing: Option<String>,
}

impl Slot {
    fn close(&mut self, reason: &str) {
        if self.closing.is_none() {
            self.closing = Some(reason.to_string());
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub peers: HashMap<PeerId, Slot>,
    /// Addresses being dialled now.
    pub dialing: HashSet<SocketAddr>,
    /// Dialled addresses that turned out to be this node.
    pub self_addrs: HashSet<SocketAddr>,
    /// The nonce last seen behind each dialled address.
    pub nonce_of: HashMap<SocketAddr, u64>,
}

impl Table {
    pub fn count(&self, inbound: bool) -> usize {
        self.peers.values().filter(|s| s.inbound == inbound).count()
    }

    pub fn in_group(&self, ip: &IpAddr) -> usize {
        match group(ip) {
            None => 0,
            Some(g) => self
                .peers
                .values()
                .filter(|s| group(&s.addr.ip()) == Some(g))
                .count(),
        }
    }

    /// Whether a handshaken peer has this nonce.
    pub fn has_nonce(&self, nonce: u64) -> bool {
        self.peers
            .values()
            .any(|s| s.info.as_ref().is_some_and(|i| i.nonce == nonce))
    }

    /// Whether `addr` is connected, or known to be us or a peer connected by another way.
    pub fn is_connected_to(&self, addr: &SocketAddr) -> bool {
        self.self_addrs.contains(addr)
            || self.peers.values().any(|s| !s.inbound && s.addr == *addr)
            || self.nonce_of.get(addr).is_some_and(|n| self.has_nonce(*n))
    }
}

/// State shared by the p2p threads and the node's [`Peers`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: P2pConfig,
    pub framing: Framing,
    pub local_addr: SocketAddr,
    /// Events for the node, through the `p2p_events` thread.
    pub events: Sender<Pending>,
    pub table: Mutex<Table>,
    pub book: Mutex<AddrBook>,
    pub bans: Mutex<Bans>,
    pub best: Mutex<Option<Hash256>>,
    /// Stops every p2p thread and closes every connection.
    pub shutdown: crate::thread::Shutdown,
    pub next_id: AtomicU64,
}

impl Shared {
    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    pub fn book(&self) -> MutexGuard<'_, AddrBook> {
        lock(&self.book)
    }

    pub fn bans(&self) -> MutexGuard<'_, Bans> {
        lock(&self.bans)
    }

    pub fn best(&self) -> Option<Hash256> {
        *lock(&self.best)
    }

    pub fn is_banned(&self, ip: &IpAddr) -> bool {
        self.bans().is_banned(ip, Instant::now())
    }

    /// Queues a frame; a peer whose queue is full is too slow and is closed.
    pub fn send_frame(&self, id: PeerId, frame: Arc<[u8]>) -> bool {
        let mut table = self.table();
        let Some(slot) = table.peers.get_mut(&id) else {
            return false;
        };
        if slot.closing.is_some() {
            return false;
        }
        let len = frame.len();
        let queued = slot.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.cfg.out_queue_bytes {
            slot.queued.fetch_sub(len, Ordering::Relaxed);
            warn!(target: LOG, "peer {id} {}: too slow ({queued} bytes queued), disconnecting", slot.addr);
            slot.close("too slow to drain its queue");
            return false;
        }
        match slot.out.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                slot.queued.fetch_sub(len, Ordering::Relaxed);
                warn!(target: LOG, "peer {id} {}: too slow (queue full), disconnecting", slot.addr);
                slot.close("too slow to drain its queue");
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                slot.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn send(&self, id: PeerId, msg: &Message) -> bool {
        match msg.to_frame(&self.framing) {
            Ok(frame) => self.send_frame(id, frame.into()),
            Err(e) => {
                warn!(target: LOG, "not sending {} to peer {id}: {e}", msg.command());
                false
            }
        }
    }

    /// Adds to the ban score of the peer's address; closes the connection when
    /// `always_close` or when the address is now banned.
    pub fn score(&self, id: PeerId, points: u32, reason: &str, always_close: bool) {
        let mut table = self.table();
        let Some(slot) = table.peers.get_mut(&id) else {
            return;
        };
        let ip = slot.addr.ip();
        let banned = self.bans().add(ip, points, Instant::now());
        if banned {
            warn!(target: LOG, "peer {id} {}: {reason}; address banned", slot.addr);
        } else if always_close {
            info!(target: LOG, "peer {id} {}: {reason}; disconnecting", slot.addr);
        } else {
            debug!(target: LOG, "peer {id} {}: {reason} (+{points})", slot.addr);
        }
        if banned || always_close {
            slot.close(reason);
        }
        if banned {
            // Every other connection from that address (its /64 for IPv6) goes too.
            let key = ban::key(ip);
            for (_, s) in table
                .peers
                .iter_mut()
                .filter(|(_, s)| ban::key(s.addr.ip()) == key)
            {
                s.close("address banned");
            }
        }
    }

    pub fn close(&self, id: PeerId, reason: &str) {
        if let Some(slot) = self.table().peers.get_mut(&id) {
            slot.close(reason);
        }
    }

    /// Handshaken peers other than `except`.
    pub fn handshaken(&self, except: Option<PeerId>) -> Vec<(PeerId, SocketAddr)> {
        let table = self.table();
        let mut out: Vec<(PeerId, SocketAddr)> = table
            .peers
            .iter()
            .filter(|(id, s)| s.info.is_some() && s.closing.is_none() && Some(**id) != except)
            .map(|(id, s)| (*id, s.addr))
            .collect();
        out.sort();
        out
    }
}

/// The node's handle on the peers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peers {
    pub(crate) shared: Arc<Shared>,
}

/// One peer, for the web/API and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub inbound: bool,
    /// `None` until the handshake completes.
    pub version: Option<u32>,
    pub sub_version: Option<String>,
    /// The effective mode on this link, min(ours, theirs): 1 normal, 0 low bandwidth.
    pub mode: Option<u32>,
    /// Unix seconds.
    pub connected_since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct P2pStatus {
    pub listen: SocketAddr,
    /// Handshaken peers.
    pub inbound: usize,
    pub outbound: usize,
    /// Every connection, handshaken or not.
    pub peers: Vec<PeerStatus>,
    pub addr_book: usize,
    pub banned: Vec<IpAddr>,
}

impl Peers {
    /// Sends a message to one peer; false if the peer is gone or was too slow.
    pub fn send(&self, id: PeerId, msg: &Message) -> bool {
        self.shared.send(id, msg)
    }

    /// Sends a frame built once (`Message::to_frame`) to one peer.
    pub fn send_frame(&self, id: PeerId, frame: Arc<[u8]>) -> bool {
        self.shared.send_frame(id, frame)
    }

    /// The network's framing, to build a frame once for many peers.
    pub fn framing(&self) -> &Framing {
        &self.shared.framing
    }

    /// Adds `points` to the peer address's ban score and disconnects the peer.
    pub fn punish(&self, id: PeerId, points: u32, reason: &str) {
        self.shared.score(id, points, reason, true);
    }

    /// Adds `points` to the ban score; disconnects only when the address is now banned.
    pub fn add_ban_score(&self, id: PeerId, points: u32, reason: &str) {
        self.shared.score(id, points, reason, false);
    }

    pub fn disconnect(&self, id: PeerId, reason: &str) {
        self.shared.close(id, reason);
    }

    /// Bans an address now (an IPv6 address's whole /64, see [`ban::key`]) and closes its
    /// connections.
    pub fn ban(&self, ip: IpAddr) {
        self.shared.bans().ban(ip, Instant::now());
        let key = ban::key(ip);
        for slot in self.shared.table().peers.values_mut() {
            if ban::key(slot.addr.ip()) == key {
                slot.close("address banned");
            }
        }
    }

    pub fn is_banned(&self, ip: &IpAddr) -> bool {
        self.shared.is_banned(ip)
    }

    /// Our best share, carried in the `version` of later connections.
    pub fn set_best_share(&self, best: Option<Hash256>) {
        *lock(&self.shared.best) = best;
    }

    /// Handshaken peers and the effective mode of each link, by id.
    pub fn connected(&self) -> Vec<(PeerId, u32)> {
        let ours = self.shared.cfg.mode();
        let table = self.shared.table();
        let mut out: Vec<(PeerId, u32)> = table
            .peers
            .iter()
            .filter(|(_, s)| s.closing.is_none())
            .filter_map(|(id, s)| s.info.as_ref().map(|i| (*id, i.mode.min(ours))))
            .collect();
        out.sort();
        out
    }

    /// Bytes of the peer's share messages handed to the node and not yet taken by it, and
    /// the most there ever were at once (at most [`PEER_EVENT_BYTES`](super::PEER_EVENT_BYTES)
    /// unless one frame alone is larger); `None` once the peer is gone.
    pub fn event_bytes(&self, id: PeerId) -> Option<(usize, usize)> {
        let budget = self.shared.table().peers.get(&id)?.events.clone();
        Some(budget.usage())
    }

    /// Whether the peer is handshaken and not being closed.
    pub fn is_up(&self, id: PeerId) -> bool {
        self.shared
            .table()
            .peers
            .get(&id)
            .is_some_and(|s| s.info.is_some() && s.closing.is_none())
    }

    /// The number of handshaken peers.
    pub fn count(&self) -> usize {
        self.connected().len()
    }

    pub fn status(&self) -> P2pStatus {
        let ours = self.shared.cfg.mode();
        let table = self.shared.table();
        let mut peers: Vec<PeerStatus> = table
            .peers
            .iter()
            .map(|(id, s)| PeerStatus {
                id: *id,
                addr: s.addr,
                inbound: s.inbound,
                version: s.info.as_ref().map(|i| i.version),
                sub_version: s.info.as_ref().map(|i| i.sub_version.clone()),
                mode: s.info.as_ref().map(|i| i.mode.min(ours)),
                connected_since: s.since,
            })
            .collect();
        drop(table);
        peers.sort_by_key(|p| p.id);
        let handshaken = |inbound: bool| {
            peers
                .iter()
                .filter(|p| p.inbound == inbound && p.version.is_some())
                .count()
        };
        P2pStatus {
            listen: self.shared.local_addr,
            inbound: handshaken(true),
            outbound: handshaken(false),
            addr_book: self.shared.book().len(),
            banned: self.shared.bans().banned(Instant::now()),
            peers,
        }
    }
}
