//! The P2Pool peer-to-peer network: messages, connections (one reader and one writer
//! thread each), handshake and liveness, connection limits, bans, the address book, and
//! the share logic the node thread runs (`sync`).
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
pub mod sync;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bitcoin::hash::Hash256;
use crate::network::{Network, RuleSet};
use crate::sharechain::store::AddrEntry;

pub use addrbook::AddrChanges;
pub use ban::BanPolicy;
pub use message::Message;
use message::NetAddress;
pub use peers::{P2pStatus, PeerStatus, Peers};
pub use server::P2p;
pub use sync::{ShareSync, SyncOutcome};

/// A connection's number, unique for the life of the process.
pub type PeerId = u64;

/// The protocol version we announce (R's `Protocol.version`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Mode 1: shares are sent whole. Mode 0: low bandwidth, announced by hash (share0s).
pub const MODE_NORMAL: u32 = 1;
pub const MODE_LOW_BANDWIDTH: u32 = 0;

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
    /// Incoming share messages and getshares queued for the node. Each may be a whole
    /// frame (8 MB at most on modern networks), so this bounds the memory they hold.
    pub events_queue: usize,
}

impl P2pConfig {
    /// The defaults of the spec on `net`, listening on `listen`, with a random nonce.
    pub fn new(net: Network, listen: SocketAddr) -> P2pConfig {
        P2pConfig {
            net,
            listen,
            connect: Vec::new(),
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
    /// share0s, share1as, share1bs or getshares, for [`ShareSync::on_message`]. The best
    /// share hash of a peer's `version` arrives as a one-hash share0s, as R handles it.
    Message { id: PeerId, msg: Message },
    /// Address-book changes to write to the store (`Batch::put_addrs`/`remove_addrs`).
    Addrs(AddrChanges),
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
fn chance(p: f64) -> bool {
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
