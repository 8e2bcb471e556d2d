//! The optional P2P link to bitcoind, as the original kept one: a Bitcoin P2P connection over
//! which bitcoind announces new blocks (an immediate template refresh) and over which the
//! node sends the blocks it finds, besides `submitblock`.
//!
//! The `bitcoind_link` thread connects, says `version` (service NODE_WITNESS only, no
//! transaction relay), answers `version` with `verack` and `ping` with `pong`, asks for
//! `sendheaders`, and reads `inv` and `headers` for new blocks; it answers `getheaders` with
//! no headers. Frames are read by a `bitcoind_link_recv` thread with the crate's framing,
//! every length checked against the 4 MB limit before anything is allocated. A dropped
//! connection is retried with backoff.
//!
//! A block to send is announced with `headers` and `inv`, and the `block` message goes out
//! when bitcoind asks for it with `getdata`, at once on loopback. The original sent the
//! `block` unasked, which Bitcoin Core accepts; bcoin drops an unasked block and the peer
//! with it, and asks only peers with NODE_WITNESS for blocks they announce.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, never, select};
use log::{debug, info, warn};

use super::feed::Refresher;
use crate::bitcoin::block::{Block, BlockHeader};
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::encode::{self, Decode, Reader, WriteExt};
use crate::bitcoin::frame::{Frame, FrameError, Framing};
use crate::bitcoin::hash::{Hash256, sha256d};
use crate::thread::Shutdown;

const LOG: &str = "bitcoind_link";
/// The version we speak: `sendheaders` (70012) and later.
pub const PROTOCOL_VERSION: u32 = 70016;
/// Bitcoin Core's largest message, which also bounds a block's serialised size.
pub const MAX_PAYLOAD: usize = 4_000_000;
const MAX_USER_AGENT: usize = 256;
const MAX_INV: usize = 50_000;
const MAX_HEADERS: usize = 2_000;
/// The services we offer: NODE_WITNESS, without which nodes ask us for no block.
const SERVICES: u64 = 1 << 3;
/// Inventory types.
const MSG_BLOCK: u32 = 2;
const MSG_WITNESS_FLAG: u32 = 1 << 30;
/// Blocks kept to answer `getdata` for.
const OFFERED: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Blocks waiting to go out over the link.
const BLOCK_QUEUE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    pub magic: [u8; 4],
    pub user_agent: String,
    pub ping_every: Duration,
    /// A peer silent for this long is dropped and dialled again.
    pub dead_after: Duration,
    pub handshake_timeout: Duration,
    pub retry_max: Duration,
}

impl LinkConfig {
    /// The link to `host:port` on `chain` (its magic).
    pub fn new(host: &str, port: u16, chain: &ChainParams) -> LinkConfig {
        LinkConfig {
            host: host.to_string(),
            port,
            magic: chain.magic,
            user_agent: concat!("/p2pool:", env!("CARGO_PKG_VERSION"), "/").to_string(),
            ping_every: Duration::from_secs(30),
            dead_after: Duration::from_secs(100),
            handshake_timeout: Duration::from_secs(10),
            retry_max: Duration::from_secs(30),
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Handshake complete.
    Connected {
        user_agent: String,
        version: u32,
        start_height: i32,
    },
    /// bitcoind announced this block.
    NewBlock(Hash256),
    /// A block was announced to bitcoind.
    BlockOffered(Hash256),
    /// bitcoind asked for a block and it went out.
    BlockSent(Hash256),
    Disconnected(String),
}

/// Why a connection ended.
#[derive(Debug)]
pub enum LinkError {
    Connect {
        addr: String,
        source: io::Error,
    },
    Io(io::Error),
    Frame(FrameError),
    /// A message that does not decode.
    Message {
        command: String,
        source: encode::Error,
    },
    Handshake(String),
    Silent(Duration),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect { addr, source } => {
                write!(f, "p2p link cannot connect to bitcoind at {addr}: {source}")
            }
            LinkError::Io(e) => write!(f, "p2p link i/o failed: {e}"),
            LinkError::Frame(e) => write!(f, "p2p link read a bad frame: {e}"),
            LinkError::Message { command, source } => {
                write!(f, "p2p link got a malformed {command} message: {source}")
            }
            LinkError::Handshake(reason) => write!(f, "p2p link handshake failed: {reason}"),
            LinkError::Silent(after) => {
                write!(f, "p2p link peer silent for {} s", after.as_secs())
            }
        }
    }
}

impl std::error::Error for LinkError {}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        LinkError::Io(e)
    }
}

/// Sends blocks over the link. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlockSender(Sender<Arc<[u8]>>);

impl BlockSender {
    /// Queues a serialised block to offer bitcoind; false (and logged) when the queue is
    /// full or the link stopped. Blocks queued while disconnected go out after the next
    /// handshake.
    pub fn send_block(&self, block: Arc<[u8]>) -> bool {
        let sent = self.0.try_send(block).is_ok();
        if !sent {
            warn!(target: LOG, "block not queued for the p2p link (queue full or link stopped)");
        }
        sent
    }
}

/// The running link.
pub struct Link {
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
    blocks: BlockSender,
    connected: Arc<AtomicBool>,
}

impl Link {
    /// Starts the `bitcoind_link` thread. A new block pokes `refresher`; events arrive on
    /// the returned receiver (a full channel loses events, never blocks the link).
    pub fn start(
        config: LinkConfig,
        refresher: Option<Refresher>,
    ) -> io::Result<(Link, Receiver<LinkEvent>)> {
        let shutdown = Shutdown::new();
        let (blocks, blocks_rx) = bounded(BLOCK_QUEUE);
        let (events_tx, events) = bounded(64);
        let connected = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            framing: Framing::bitcoin(config.magic, MAX_PAYLOAD),
            config,
            refresher,
            events: events_tx,
            connected: connected.clone(),
            last_announced: None,
            offered: VecDeque::new(),
        };
        let stop = shutdown.clone();
        let thread = crate::thread::spawn("bitcoind_link", move || {
            worker.run(stop.signal(), &blocks_rx)
        })?;
        let link = Link {
            shutdown,
            thread: Some(thread),
            blocks: BlockSender(blocks),
            connected,
        };
        Ok((link, events))
    }

    pub fn block_sender(&self) -> BlockSender {
        self.blocks.clone()
    }

    /// Whether the handshake with bitcoind is complete now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Closes the connection and joins the thread (within the connect timeout).
    pub fn stop(mut self) {
        self.shutdown.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

fn random_u64() -> u64 {
    rand::random()
}

/// The peer's `version`, as far as we use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PeerVersion {
    version: u32,
    user_agent: String,
    start_height: i32,
}

struct Worker {
    config: LinkConfig,
    framing: Framing,
    refresher: Option<Refresher>,
    events: Sender<LinkEvent>,
    connected: Arc<AtomicBool>,
    last_announced: Option<Hash256>,
    /// Blocks announced, newest last, for `getdata`.
    offered: VecDeque<(Hash256, Arc<[u8]>)>,
}

/// Whether a session ended because we were asked to stop.
struct Stopped;

impl Worker {
    fn run(&mut self, stop: &Receiver<()>, blocks: &Receiver<Arc<[u8]>>) {
        let mut backoff = RETRY_MIN;
        let mut failures = 0u32;
        loop {
            let mut handshaken = false;
            match self.session(stop, blocks, &mut handshaken) {
                Ok(Stopped) => return,
                Err(e) => {
                    self.connected.store(false, Ordering::Relaxed);
                    if handshaken {
                        backoff = RETRY_MIN;
                        failures = 0;
                    }
                    if failures == 0 {
                        warn!(target: LOG, "{e}; retrying");
                    } else {
                        debug!(target: LOG, "{e}; retrying in {} s", backoff.as_secs());
                    }
                    failures += 1;
                    let _ = self.events.try_send(LinkEvent::Disconnected(e.to_string()));
                }
            }
            if !matches!(stop.recv_timeout(backoff), Err(RecvTimeoutError::Timeout)) {
                return;
            }
            backoff = (backoff * 2).min(self.config.retry_max);
        }
    }

    fn session(
        &mut self,
        stop: &Receiver<()>,
        blocks: &Receiver<Arc<[u8]>>,
        handshaken: &mut bool,
    ) -> Result<Stopped, LinkError> {
        let addr_text = self.config.addr();
        let connect_err = |source| LinkError::Connect {
            addr: addr_text.clone(),
            source,
        };
        let addr = (self.config.host.as_str(), self.config.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::ErrorKind::NotFound.into()))?;
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(connect_err)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let (frames_tx, frames) = bounded(16);
        let reader = stream.try_clone()?;
        let framing = self.framing.clone();
        let recv_thread = crate::thread::spawn("bitcoind_link_recv", move || {
            let mut reader = BufReader::new(reader);
            loop {
                let frame = framing.read(&mut reader);
                let failed = frame.is_err();
                if frames_tx.send(frame).is_err() || failed {
                    return;
                }
            }
        })?;
        let result = self.converse(&mut stream, &addr, stop, blocks, &frames, handshaken);
        // Unblock the reader: its socket closed, its channel gone (it may be waiting on a
        // full one).
        let _ = stream.shutdown(std::net::Shutdown::Both);
        drop(frames);
        let _ = recv_thread.join();
        result
    }

    fn converse(
        &mut self,
        stream: &mut TcpStream,
        addr: &SocketAddr,
        stop: &Receiver<()>,
        blocks: &Receiver<Arc<[u8]>>,
        frames: &Receiver<Result<Frame, FrameError>>,
        handshaken: &mut bool,
    ) -> Result<Stopped, LinkError> {
        self.send(
            stream,
            "version",
            &version_payload(addr, &self.config.user_agent),
        )?;
        let started = Instant::now();
        let mut last_heard = started;
        let mut next_ping = started + self.config.ping_every;
        let mut peer = PeerVersion::default();
        loop {
            let outgoing = if *handshaken { blocks.clone() } else { never() };
            select! {
                recv(stop) -> _ => return Ok(Stopped),
                recv(frames) -> frame => {
                    let frame = match frame {
                        Ok(Ok(frame)) => frame,
                        Ok(Err(e)) => return Err(LinkError::Frame(e)),
                        Err(_) => return Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into())),
                    };
                    last_heard = Instant::now();
                    self.handle(stream, &frame, &mut peer, handshaken)?;
                }
                recv(outgoing) -> block => {
                    if let Ok(block) = block {
                        self.offer(stream, block)?;
                    }
                }
                default(Duration::from_millis(250)) => {}
            }
            let now = Instant::now();
            if !*handshaken && now - started > self.config.handshake_timeout {
                return Err(LinkError::Handshake(format!(
                    "no verack within {} s",
                    self.config.handshake_timeout.as_secs()
                )));
            }
            if now - last_heard > self.config.dead_after {
                return Err(LinkError::Silent(now - last_heard));
            }
            if *handshaken && now >= next_ping {
                self.send(stream, "ping", &random_u64().to_le_bytes())?;
                next_ping = now + self.config.ping_every;
            }
        }
    }

    fn send(&self, stream: &mut TcpStream, command: &str, payload: &[u8]) -> Result<(), LinkError> {
        let frame = self
            .framing
            .encode(command, payload)
            .map_err(LinkError::Frame)?;
        stream.write_all(&frame)?;
        Ok(())
    }

    /// Announces a block with `headers` and `inv`; `getdata` then fetches it.
    fn offer(&mut self, stream: &mut TcpStream, block: Arc<[u8]>) -> Result<(), LinkError> {
        let Some(header) = block.get(..80) else {
            warn!(target: LOG, "not offering a block of {} bytes", block.len());
            return Ok(());
        };
        let hash = sha256d(header);
        // One block per previous block: a sibling of one just offered can only be a
        // stale block (on regtest a fast pool finds dozens); submitblock still has it.
        if self
            .offered
            .iter()
            .any(|(h, b)| b.get(4..36) == header.get(4..36) && *h != hash)
        {
            debug!(target: LOG, "block {hash} not offered: a sibling on the same previous block was");
            return Ok(());
        }
        let mut headers = vec![1];
        headers.extend_from_slice(header);
        headers.push(0);
        let mut inv = vec![1];
        inv.put_u32_le(MSG_BLOCK);
        inv.extend_from_slice(&hash.0);
        if self.offered.len() >= OFFERED {
            self.offered.pop_front();
        }
        self.offered.push_back((hash, block));
        self.send(stream, "headers", &headers)?;
        self.send(stream, "inv", &inv)?;
        debug!(target: LOG, "block {hash} offered to bitcoind");
        let _ = self.events.try_send(LinkEvent::BlockOffered(hash));
        Ok(())
    }

    /// Answers `getdata` for the blocks we offered; other items are not ours to give.
    fn serve(
        &mut self,
        stream: &mut TcpStream,
        wanted: &[(u32, Hash256)],
    ) -> Result<(), LinkError> {
        for (kind, hash) in wanted {
            let Some((_, block)) = self.offered.iter().find(|(h, _)| h == hash) else {
                continue;
            };
            let bytes = match *kind {
                k if k == MSG_BLOCK | MSG_WITNESS_FLAG => block.to_vec(),
                MSG_BLOCK => match stripped(block) {
                    Some(bytes) => bytes,
                    None => continue,
                },
                _ => continue,
            };
            match self.framing.encode("block", &bytes) {
                Ok(frame) => {
                    stream.write_all(&frame)?;
                    info!(target: LOG, "block {hash} sent to bitcoind over the p2p link");
                    let _ = self.events.try_send(LinkEvent::BlockSent(*hash));
                }
                Err(e) => warn!(target: LOG, "block {hash} not sent over the p2p link: {e}"),
            }
        }
        Ok(())
    }

    fn handle(
        &mut self,
        stream: &mut TcpStream,
        frame: &Frame,
        peer: &mut PeerVersion,
        handshaken: &mut bool,
    ) -> Result<(), LinkError> {
        let bad = |source| LinkError::Message {
            command: frame.command.clone(),
            source,
        };
        match frame.command.as_str() {
            "version" => {
                *peer = parse_version(&frame.payload).map_err(bad)?;
                self.send(stream, "verack", &[])?;
            }
            "verack" if !*handshaken => {
                *handshaken = true;
                self.connected.store(true, Ordering::Relaxed);
                self.send(stream, "sendheaders", &[])?;
                info!(
                    target: LOG,
                    "p2p link to bitcoind at {} up: {} (protocol {}, height {})",
                    self.config.addr(),
                    peer.user_agent,
                    peer.version,
                    peer.start_height
                );
                let _ = self.events.try_send(LinkEvent::Connected {
                    user_agent: peer.user_agent.clone(),
                    version: peer.version,
                    start_height: peer.start_height,
                });
            }
            "ping" => {
                if let Some(nonce) = frame.payload.get(..8) {
                    self.send(stream, "pong", nonce)?;
                }
            }
            "inv" => {
                let items = parse_inv(&frame.payload).map_err(bad)?;
                if let Some(&(_, hash)) = items.iter().rev().find(|(kind, _)| is_block(*kind)) {
                    self.announce(hash);
                }
            }
            "getdata" => {
                let items = parse_inv(&frame.payload).map_err(bad)?;
                self.serve(stream, &items)?;
            }
            "headers" => {
                if let Some(hash) = parse_headers(&frame.payload).map_err(bad)? {
                    self.announce(hash);
                }
            }
            // We have no headers to give: an empty answer, so bitcoind does not wait on us.
            "getheaders" => self.send(stream, "headers", &[0])?,
            other => debug!(target: LOG, "ignoring {other} from bitcoind"),
        }
        Ok(())
    }

    fn announce(&mut self, hash: Hash256) {
        if self.last_announced == Some(hash) {
            return;
        }
        self.last_announced = Some(hash);
        info!(target: LOG, "bitcoind announces block {hash}");
        if let Some(refresher) = &self.refresher {
            refresher.poke();
        }
        let _ = self.events.try_send(LinkEvent::NewBlock(hash));
    }
}

/// `addr` as a `net_addr` without time: services, IPv6 (or IPv4-mapped) address, port BE.
fn put_net_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    out.put_u64_le(0);
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.put_u16_be(addr.port());
}

fn version_payload(peer: &SocketAddr, user_agent: &str) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Vec::with_capacity(128);
    out.put_u32_le(PROTOCOL_VERSION);
    out.put_u64_le(SERVICES);
    out.put_u64_le(now);
    put_net_addr(&mut out, peer);
    put_net_addr(&mut out, &SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0));
    out.put_u64_le(random_u64());
    out.put_var_bytes(user_agent.as_bytes());
    out.put_u32_le(0); // start height
    out.put_u8(0); // relay: no transactions
    out
}

fn parse_version(payload: &[u8]) -> encode::Result<PeerVersion> {
    let mut r = Reader::new(payload);
    let version = r.u32_le("version")?;
    r.take(8 + 8 + 26, "version services, time and address")?;
    if r.is_empty() {
        return Ok(PeerVersion {
            version,
            ..PeerVersion::default()
        });
    }
    r.take(26 + 8, "version sender address and nonce")?;
    let agent = r.var_bytes("version user agent", MAX_USER_AGENT)?;
    let start_height = r.u32_le("version start height")? as i32;
    Ok(PeerVersion {
        version,
        user_agent: String::from_utf8_lossy(agent).into_owned(),
        start_height,
    })
}

/// Block, filtered block or compact block, with or without the witness flag.
fn is_block(kind: u32) -> bool {
    matches!(kind & !MSG_WITNESS_FLAG, 2..=4)
}

/// The entries of an `inv` or `getdata`: type and hash.
fn parse_inv(payload: &[u8]) -> encode::Result<Vec<(u32, Hash256)>> {
    let mut r = Reader::new(payload);
    let n = r.count("inventory entries", 36)?;
    if n > MAX_INV {
        return Err(encode::Error::Oversized {
            what: "inventory entries",
            len: n as u64,
            max: MAX_INV as u64,
        });
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push((r.u32_le("inventory type")?, Hash256::decode_from(&mut r)?));
    }
    r.finish("inventory")?;
    Ok(items)
}

/// A block in the form without witnesses, for a peer that asks for it so.
fn stripped(block: &[u8]) -> Option<Vec<u8>> {
    Block::from_bytes(block).ok().map(|b| b.to_stripped_bytes())
}

/// The hash of the last header of a `headers` message, if any.
fn parse_headers(payload: &[u8]) -> encode::Result<Option<Hash256>> {
    let mut r = Reader::new(payload);
    let n = r.count("headers", 81)?;
    if n > MAX_HEADERS {
        return Err(encode::Error::Oversized {
            what: "headers",
            len: n as u64,
            max: MAX_HEADERS as u64,
        });
    }
    let mut last = None;
    for _ in 0..n {
        last = Some(BlockHeader::decode_from(&mut r)?.hash());
        r.compact_size("header transaction count")?;
    }
    r.finish("headers")?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_round_trips_through_our_parser() {
        let addr: SocketAddr = "127.0.0.1:18444".parse().unwrap();
        let payload = version_payload(&addr, "/p2pool:0.1.0/");
        let peer = parse_version(&payload).unwrap();
        assert_eq!(peer.version, PROTOCOL_VERSION);
        assert_eq!(peer.user_agent, "/p2pool:0.1.0/");
        assert_eq!(peer.start_height, 0);
        // The IPv4-mapped address and the big-endian port of addr_recv.
        assert_eq!(&payload[28 + 10..28 + 16], &[0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(&payload[28 + 16..28 + 18], &[0x48, 0x0c]);
        assert_eq!(*payload.last().unwrap(), 0, "no transaction relay");
    }

    #[test]
    fn truncated_or_oversize_version_is_refused() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let payload = version_payload(&addr, "/x/");
        assert!(parse_version(&payload[..50]).is_err());
        let mut long = payload[..80].to_vec();
        long.put_compact_size(10_000);
        long.extend_from_slice(&[b'a'; 64]);
        assert!(parse_version(&long).is_err());
    }

    #[test]
    fn inventory_entries_are_read_with_their_types() {
        let mut payload = Vec::new();
        payload.put_compact_size(3);
        for (kind, tag) in [(2u32, b"b1"), (1, b"t1"), (0x4000_0002, b"b2")] {
            payload.put_u32_le(kind);
            payload.extend_from_slice(&sha256d(tag).0);
        }
        let items = parse_inv(&payload).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2], (0x4000_0002, sha256d(b"b2")));
        let blocks: Vec<_> = items.iter().filter(|(k, _)| is_block(*k)).collect();
        assert_eq!(blocks.len(), 2);
        assert!(parse_inv(&payload[..40]).is_err());
    }

    #[test]
    fn forged_counts_are_refused_before_allocating() {
        let mut inv = Vec::new();
        inv.put_compact_size(0xffff_ffff);
        inv.extend_from_slice(&[0; 36]);
        assert!(parse_inv(&inv).is_err());
        let mut headers = Vec::new();
        headers.put_compact_size(2001);
        headers.extend_from_slice(&vec![0; 81 * 2001]);
        assert!(parse_headers(&headers).is_err());
    }

    #[test]
    fn a_block_asked_for_without_witness_is_sent_stripped() {
        use crate::bitcoin::encode::Encode;
        use crate::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
        let tx = Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint::NULL,
                script_sig: vec![1, 1],
                sequence: 0,
                witness: vec![vec![0; 32]],
            }],
            outputs: vec![TxOut {
                value: 1,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        };
        let header = BlockHeader {
            version: 4,
            previous_block: Hash256::ZERO,
            merkle_root: tx.txid(),
            timestamp: 1,
            bits: crate::bitcoin::target::Bits(0x207fffff),
            nonce: 0,
        };
        let block = Block {
            header,
            txs: vec![tx.clone()],
        };
        let bytes = stripped(&block.to_bytes()).unwrap();
        assert_eq!(bytes.len(), block.stripped_size());
        let back = Block::from_bytes(&bytes).unwrap();
        assert!(!back.txs[0].has_witness());
        assert_eq!(back.txs[0].txid(), tx.txid());
        assert_eq!(stripped(&bytes[..50]), None);
    }

    #[test]
    fn headers_report_the_hash_of_the_last_header() {
        let header = |nonce| BlockHeader {
            version: 4,
            previous_block: Hash256::ZERO,
            merkle_root: sha256d(b"m"),
            timestamp: 1,
            bits: crate::bitcoin::target::Bits(0x207fffff),
            nonce,
        };
        let mut payload = Vec::new();
        payload.put_compact_size(2);
        for nonce in [1, 2] {
            payload.extend_from_slice(&header(nonce).to_array());
            payload.put_compact_size(0);
        }
        assert_eq!(parse_headers(&payload).unwrap(), Some(header(2).hash()));
        assert_eq!(parse_headers(&[0]).unwrap(), None);
        assert!(parse_headers(&payload[..100]).is_err());
    }
}
