//! The P2Pool peer-to-peer network: messages, connections (one reader and one writer
//! thread each), handshake and liveness, connection limits, bans and the address book.
//! The share logic the node thread runs is `node::sync`.
//!
//! Threads: `p2p_accept` (the listener), `p2p_connect` (dials `-n` addresses, then the
//! address book; asks peers for addresses; hands address-book changes to the node), and
//! per connection `peer_recv` and `peer_send`. Everything that does not touch pool state
//! (version, setmode, ping, addrme, addrs, getaddrs) is answered inside p2p; share
//! messages and getshares go to the node as [`PeerEvent::Message`].

pub mod addrbook;
pub mod ban;
pub mod message;
mod peer;
pub mod peers;
pub mod server;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::bitcoin::hash::Hash256;
use crate::network::{Network, RuleSet};
use crate::store::AddrEntry;
use crate::thread::lock;

pub use addrbook::AddrChanges;
pub use ban::BanPolicy;
pub use message::Message;
use message::NetAddress;
pub use peers::{P2pStatus, PeerStatus, Peers};
pub use server::P2p;

/// A connection's number, unique for the life of the process.
pub type PeerId = u64;

/// The protocol version we announce (R's `Protocol.version`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Mode 1: shares are sent whole. Mode 0: low bandwidth, announced by hash (share0s).
pub const MODE_NORMAL: u32 = 1;
pub const MODE_LOW_BANDWIDTH: u32 = 0;

/// Bytes of share messages and getshares (counted as their frames' payloads) that one
/// peer may have handed to the node and that the node has not taken yet. While a peer is at
/// this budget its reader stops reading its socket (TCP then stops the sender), so one peer
/// cannot park `events_queue` maximum-size frames (64 × 8 MB) in the node's queue: each peer
/// holds at most 16 MiB there, two maximum-size modern frames (a block share1bs and the
/// next), enough to keep a fast link busy while the node works on the previous one.
pub const PEER_EVENT_BYTES: usize = 16 << 20;

/// Ban scores for each kind of misbehaviour (the threshold is 100 by default).
pub mod score {
    /// Garbage before the prefix, a bad checksum, an oversize frame, a bad command.
    pub const BAD_FRAME: u32 = 50;
    /// A known message whose payload does not decode.
    pub const MALFORMED: u32 = 50;
    /// Anything but `version` first.
    pub const NO_VERSION_FIRST: u32 = 50;
    /// A share1a that is a block or a share1b that is not.
    pub const WRONG_SHARE_TYPE: u32 = 100;
    /// A share that fails the stateless checks.
    pub const INVALID_SHARE: u32 = 50;
    /// A share that failed verification in the share chain (may be an honest mistake).
    pub const BAD_SHARE: u32 = 10;
    /// More messages than the rate limit allows.
    pub const FLOOD: u32 = 50;
    /// No version within the handshake timeout.
    pub const HANDSHAKE_TIMEOUT: u32 = 10;
    /// Shares past the peer's unconnected-share budget (`sharechain::chain::Limits`); the
    /// budget has a quarter to spare over an honest first sync, so this bans at once.
    pub const UNCONNECTED_OVER_BUDGET: u32 = 100;
    /// A share no honest node makes: a claimed target above MAX_TARGET (which costs no
    /// work at all) or a subsidy above MAX_MONEY. Bans at once.
    pub const FORGED_SHARE: u32 = 100;
    /// Shares whose missing ancestors never arrived before the deadline.
    pub const UNCONNECTED_EXPIRED: u32 = 25;
}

/// Timers, with the values of the spec as defaults; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection whose `version` has not arrived by then is closed (R: 10 s).
    pub handshake: Duration,
    /// A connection with no complete message for this long is closed (R: 100 s).
    pub idle: Duration,
    /// A ping is sent this often (modern policy: 30 s).
    pub ping: Duration,
    /// Outbound connect timeout (R: 10 s).
    pub connect: Duration,
    /// A write blocked this long closes the connection.
    pub write: Duration,
    /// How often the connector looks for a peer to dial.
    pub connect_every: Duration,
    /// A `-n` address that failed is dialled again after this long.
    pub redial: Duration,
    /// How often a peer is asked for addresses while the book is small (R: about 20 s).
    pub getaddrs_every: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(100),
            ping: Duration::from_secs(30),
            connect: Duration::from_secs(10),
            write: Duration::from_secs(30),
            connect_every: Duration::from_secs(1),
            redial: Duration::from_secs(10),
            getaddrs_every: Duration::from_secs(20),
        }
    }
}

/// Rate limit on incoming messages: a bucket of `burst` messages refilled at
/// `per_second`; a peer that empties it is disconnected and scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: f64,
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 500.0,
            per_second: 100.0,
        }
    }
}

/// What the p2p subsystem needs from the node at start.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    pub net: Network,
    /// Where to listen (port 0 picks a free port; see `P2p::local_addr`).
    pub listen: SocketAddr,
    /// `-n` addresses, dialled first and again whenever not connected.
    pub connect: Vec<SocketAddr>,
    /// `-n` host names and ports: resolved by the connector (on a `p2p_resolve` thread),
    /// again after `redial` while a name does not resolve and every 10 minutes once it
    /// does, then dialled as the addresses above.
    pub connect_hosts: Vec<(String, u16)>,
    pub max_inbound: usize,
    pub max_outbound: usize,
    /// Connections per /16 (IPv4) or /32 (IPv6); loopback is exempt.
    pub max_per_group: usize,
    /// The address we advertise (`--external-ip`); otherwise peers see it on the socket.
    pub external_ip: Option<IpAddr>,
    /// `-l`: announce shares by hash (mode 0).
    pub low_bandwidth: bool,
    /// The address book as the store holds it.
    pub addrs: Vec<(SocketAddr, AddrEntry)>,
    pub max_addrs: usize,
    /// Random, once per process: detects self-connections and duplicates.
    pub nonce: u64,
    pub sub_version: String,
    pub timeouts: Timeouts,
    pub bans: BanPolicy,
    pub rate: RateLimit,
    /// Frames queued for one peer before it counts as too slow and is dropped.
    pub out_queue: usize,
    /// Bytes queued for one peer before it counts as too slow and is dropped.
    pub out_queue_bytes: usize,
    /// Events queued for the node, from every peer together. Each may be a whole frame
    /// (8 MB at most on modern networks); one peer's share messages are further bounded in
    /// bytes by [`PEER_EVENT_BYTES`].
    pub events_queue: usize,
}

impl P2pConfig {
    /// The defaults of the spec on `net`, listening on `listen`, with a random nonce.
    pub fn new(net: Network, listen: SocketAddr) -> P2pConfig {
        P2pConfig {
            net,
            listen,
            connect: Vec::new(),
            connect_hosts: Vec::new(),
            max_inbound: 40,
            max_outbound: 10,
            max_per_group: 3,
            external_ip: None,
            low_bandwidth: false,
            addrs: Vec::new(),
            max_addrs: addrbook::DEFAULT_MAX_ENTRIES,
            nonce: random_u64(),
            sub_version: concat!("p2pool-rs/", env!("CARGO_PKG_VERSION")).to_string(),
            timeouts: Timeouts::default(),
            bans: BanPolicy::default(),
            rate: RateLimit::default(),
            out_queue: 1024,
            out_queue_bytes: 64 << 20,
            events_queue: 64,
        }
    }

    /// Our mode as announced in `version`.
    pub fn mode(&self) -> u32 {
        if self.low_bandwidth {
            MODE_LOW_BANDWIDTH
        } else {
            MODE_NORMAL
        }
    }
}

/// A peer after its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub inbound: bool,
    pub version: u32,
    pub sub_version: String,
    pub nonce: u64,
    /// The peer's own mode; the link uses `min(ours, theirs)`.
    pub mode: u32,
    /// Unix seconds.
    pub connected_at: u64,
}

/// What p2p tells the node.
#[derive(Debug)]
pub enum PeerEvent {
    /// A handshake completed.
    Connected { id: PeerId, info: PeerInfo },
    /// A peer that was `Connected` is gone.
    Disconnected { id: PeerId },
    /// A connected peer said `setmode` (its own mode; the link uses `min(ours, theirs)`).
    Mode { id: PeerId, mode: u32 },
    /// share0s, share1as, share1bs or getshares, for [`ShareSync::on_message`]. The best
    /// share hash of a peer's `version` arrives as a one-hash share0s, as R handles it.
    Message { id: PeerId, msg: Message },
    /// Address-book changes to write to the store (`Batch::put_addrs`/`remove_addrs`).
    Addrs(AddrChanges),
}

/// One peer's share messages handed to the node and not yet taken, in bytes; bounded by
/// [`PEER_EVENT_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct EventBudget {
    queued: Mutex<usize>,
    freed: Condvar,
    /// The most ever queued at once, for status and tests.
    peak: AtomicUsize,
}

impl EventBudget {
    /// Takes `bytes` of the budget, waiting while that would go over it (unless nothing
    /// is queued, so that a frame over the budget still goes through, alone). Gives up and
    /// returns `None` as soon as `give_up` says so (checked every 100 ms).
    pub fn take(self: &Arc<Self>, bytes: usize, give_up: impl Fn() -> bool) -> Option<Held> {
        let mut queued = lock(&self.queued);
        while *queued > 0 && *queued + bytes > PEER_EVENT_BYTES {
            if give_up() {
                return None;
            }
            queued = self
                .freed
                .wait_timeout(queued, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *queued += bytes;
        self.peak.fetch_max(*queued, Ordering::Relaxed);
        Some(Held {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes queued now, and the most ever queued at once.
    pub fn usage(&self) -> (usize, usize) {
        let queued = *lock(&self.queued);
        (queued, self.peak.load(Ordering::Relaxed))
    }
}

/// A part of a peer's [`EventBudget`], given back when the node takes the event.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<EventBudget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut queued = lock(&self.budget.queued);
        *queued = queued.saturating_sub(self.bytes);
        self.budget.freed.notify_all();
    }
}

/// An event on its way to the node, with the budget it holds until the node takes it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub event: PeerEvent,
    pub held: Option<Held>,
}

impl From<PeerEvent> for Pending {
    fn from(event: PeerEvent) -> Pending {
        Pending { event, held: None }
    }
}

#[derive(Debug)]
pub enum P2pError {
    Bind { addr: SocketAddr, source: io::Error },
    Spawn(io::Error),
}

impl fmt::Display for P2pError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            P2pError::Bind { addr, source } => {
                write!(f, "p2p cannot listen on {addr}: {source}")
            }
            P2pError::Spawn(e) => write!(f, "p2p cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for P2pError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            P2pError::Bind { source, .. } | P2pError::Spawn(source) => Some(source),
        }
    }
}

pub use crate::unix_now;

/// A random number for nonces and peer choice (not for secrets).
pub fn random_u64() -> u64 {
    rand::random()
}

/// True with probability `p`.
pub(crate) fn chance(p: f64) -> bool {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
}

/// The network group for the per-group cap; `None` for loopback (exempt).
fn group(ip: &IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => None,
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some([4, o[0], o[1], 0])
        }
        IpAddr::V6(v6) if v6.is_loopback() => None,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => group(&IpAddr::V4(v4)),
            None => {
                let o = v6.octets();
                Some([o[0], o[1], o[2], o[3]])
            }
        },
    }
}

/// An address as the rule set can carry it: legacy networks take IPv4 only, so an IPv6
/// address is sent as `0.0.0.0` there (`None` when it must be left out altogether).
fn wire_addr(rules: RuleSet, services: u64, ip: IpAddr, port: u16) -> Option<NetAddress> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if rules.ipv4_only() && ip.is_ipv6() {
        return None;
    }
    Some(NetAddress::new(services, ip, port))
}

/// The best share of a peer's `version`, handled as a one-hash share0s (R).
fn share0s_of(best: Option<Hash256>) -> Option<Message> {
    best.map(|h| Message::Share0s(vec![h]))
}
