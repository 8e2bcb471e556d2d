//! One connection: a `peer_send` thread writing queued frames (our `version` first, then a
//! ping whenever the queue is quiet for the ping interval) and a `peer_recv` thread reading
//! frames under a deadline (handshake, then idle), decoding them, answering what p2p owns
//! and handing share messages to the node.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use log::{debug, info, warn};

use crate::bitcoin::frame::FrameError;

use super::message::{AddrRecord, Message, NetAddress, Version};
use super::peers::{Shared, Slot};
use super::{
    EventBudget, PROTOCOL_VERSION, PeerEvent, PeerId, PeerInfo, Pending, chance, score, share0s_of,
    unix_now, wire_addr,
};

const LOG: &str = "p2p";
/// Addresses answered to one `getaddrs` (R: 100).
const MAX_GETADDRS: usize = 100;
/// Records of one `addrs` message taken into the book.
const MAX_ADDRS_TAKEN: usize = 100;
/// Records of one `addrs` message forwarded (each with probability 0.8, as R).
const MAX_ADDRS_FORWARDED: usize = 10;
const READ_BUFFER: usize = 64 * 1024;

/// Registers a new connection and starts its two threads.
pub(crate) fn start(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr, inbound: bool) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (Ok(for_slot), Ok(for_writer)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let (tx, rx) = bounded(shared.cfg.out_queue);
    let queued = Arc::new(AtomicUsize::new(0));
    shared.table().peers.insert(
        id,
        Slot {
            addr,
            inbound,
            out: tx,
            queued: queued.clone(),
            stream: for_slot,
            since: unix_now(),
            info: None,
            handshaken_at: None,
            events: Arc::new(EventBudget::default()),
            closing: None,
        },
    );
    let version = our_version(shared, addr, &stream);
    let writer = {
        let shared = shared.clone();
        crate::thread::spawn("peer_send", move || {
            write_loop(&shared, id, for_writer, rx, queued, version)
        })
    };
    let reader = writer.and_then(|_| {
        let shared = shared.clone();
        crate::thread::spawn("peer_recv", move || {
            // The shutdown closes the socket, which ends both threads.
            let _wake = shared.shutdown.close_on_stop(&stream);
            read_loop(shared, id, stream, addr, inbound)
        })
    });
    if let Err(e) = reader {
        warn!(target: LOG, "cannot start threads for {addr}: {e}");
        if let Some(slot) = shared.table().peers.remove(&id) {
            let _ = slot.stream.shutdown(Shutdown::Both);
        }
    }
}

fn our_version(shared: &Shared, addr: SocketAddr, stream: &TcpStream) -> Message {
    let local_ip = stream
        .local_addr()
        .map_or(shared.local_addr.ip(), |a| a.ip());
    let rules = shared.cfg.net.rules;
    let unspecified = NetAddress::new(0, std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
    Message::Version(Version {
        version: PROTOCOL_VERSION,
        services: 0,
        addr_to: wire_addr(rules, 0, addr.ip(), addr.port()).unwrap_or(unspecified),
        addr_from: wire_addr(
            rules,
            0,
            shared.cfg.external_ip.unwrap_or(local_ip),
            shared.local_addr.port(),
        )
        .unwrap_or(unspecified),
        nonce: shared.cfg.nonce,
        sub_version: shared.cfg.sub_version.clone(),
        mode: shared.cfg.mode(),
        best_share_hash: shared.best(),
    })
}

fn write_loop(
    shared: &Shared,
    id: PeerId,
    stream: TcpStream,
    rx: Receiver<Arc<[u8]>>,
    queued: Arc<AtomicUsize>,
    version: Message,
) {
    let timeouts = shared.cfg.timeouts;
    let _ = stream.set_write_timeout(Some(timeouts.write));
    let mut out = BufWriter::with_capacity(64 * 1024, &stream);
    let ping = Message::Ping.to_frame(&shared.framing);
    let result = (|| -> io::Result<()> {
        let frame = version
            .to_frame(&shared.framing)
            .map_err(|e| io::Error::other(e.to_string()))?;
        out.write_all(&frame)?;
        out.flush()?;
        loop {
            match rx.recv_timeout(timeouts.ping) {
                Ok(frame) => {
                    queued.fetch_sub(frame.len(), Ordering::Relaxed);
                    out.write_all(&frame)?;
                    // Everything already queued goes out in one flush.
                    while let Ok(frame) = rx.try_recv() {
                        queued.fetch_sub(frame.len(), Ordering::Relaxed);
                        out.write_all(&frame)?;
                    }
                    out.flush()?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(ping) = &ping {
                        out.write_all(ping)?;
                        out.flush()?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    if let Err(e) = result {
        debug!(target: LOG, "peer {id}: write failed: {e}");
        shared.close(id, "write failed");
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A socket whose reads fail once a deadline has passed, however slowly bytes arrive.
struct Deadline {
    stream: TcpStream,
    at: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match self.stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            other => other,
        }
    }
}

/// Why a connection ended, as the reader saw it.
enum End {
    /// Closed, timed out or reset: no fault.
    Quiet(String),
    /// Misbehaviour: disconnect and score.
    Fault(u32, String),
    /// Closed by another thread (reason in the slot) or by shutdown.
    Closed,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

fn read_loop(shared: Arc<Shared>, id: PeerId, stream: TcpStream, addr: SocketAddr, inbound: bool) {
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(
        READ_BUFFER,
        Deadline {
            stream,
            at: started + shared.cfg.timeouts.handshake,
        },
    );
    let mut connected = false;
    let end = converse(&shared, id, addr, inbound, &mut reader, &mut connected);
    let slot = shared.table().peers.remove(&id);
    let closing = slot.as_ref().and_then(|s| s.closing.clone());
    if let Some(slot) = &slot {
        let _ = slot.stream.shutdown(Shutdown::Both);
    }
    match (end, closing) {
        (_, Some(reason)) | (End::Quiet(reason), None) => {
            debug!(target: LOG, "peer {id} {addr}: closed: {reason}")
        }
        (End::Fault(points, reason), None) => {
            let banned = shared.bans().add(addr.ip(), points, Instant::now());
            info!(
                target: LOG,
                "peer {id} {addr}: {reason}; disconnected{}",
                if banned { ", address banned" } else { "" }
            );
        }
        (End::Closed, None) => debug!(target: LOG, "peer {id} {addr}: closed"),
    }
    if connected {
        info!(target: LOG, "peer {id} {addr} disconnected");
        let _ = shared.events.send(PeerEvent::Disconnected { id }.into());
    }
}

fn converse(
    shared: &Arc<Shared>,
    id: PeerId,
    addr: SocketAddr,
    inbound: bool,
    reader: &mut BufReader<Deadline>,
    connected: &mut bool,
) -> End {
    let rate = shared.cfg.rate;
    let mut bucket = Bucket {
        tokens: rate.burst,
        at: Instant::now(),
    };
    loop {
        if shared.shutdown.is_stopped() {
            return End::Closed;
        }
        let frame = match shared.framing.read(reader) {
            Ok(frame) => frame,
            Err(FrameError::Io(e)) => {
                return match e.kind() {
                    io::ErrorKind::TimedOut if !*connected => {
                        End::Fault(score::HANDSHAKE_TIMEOUT, "no version in time".into())
                    }
                    io::ErrorKind::TimedOut => End::Quiet("idle timeout".into()),
                    _ if shared.shutdown.is_stopped()
                        || shared
                            .table()
                            .peers
                            .get(&id)
                            .is_none_or(|s| s.closing.is_some()) =>
                    {
                        End::Closed
                    }
                    _ => End::Quiet(format!("connection ended: {e}")),
                };
            }
            Err(e) => return End::Fault(score::BAD_FRAME, e.to_string()),
        };
        reader.get_mut().at = Instant::now() + shared.cfg.timeouts.idle;

        let now = Instant::now();
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * rate.per_second)
            .min(rate.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return End::Fault(score::FLOOD, "message flood".into());
        }
        bucket.tokens -= 1.0;

        let msg = match Message::decode(&frame.command, &frame.payload, shared.cfg.net.rules) {
            Ok(msg) => msg,
            Err(e) => return End::Fault(score::MALFORMED, e.to_string()),
        };
        if !*connected {
            let Message::Version(v) = msg else {
                return End::Fault(
                    score::NO_VERSION_FIRST,
                    format!("sent {} before version", frame.command),
                );
            };
            match handshake(shared, id, addr, inbound, v) {
                Ok(()) => *connected = true,
                Err(end) => return end,
            }
            continue;
        }
        if let Err(end) = handle(shared, id, addr, msg, frame.payload.len()) {
            return end;
        }
        // Time spent waiting for the node (see `PEER_EVENT_BYTES`) is not the peer's idling.
        reader.get_mut().at = Instant::now() + shared.cfg.timeouts.idle;
    }
}

fn handshake(
    shared: &Arc<Shared>,
    id: PeerId,
    addr: SocketAddr,
    inbound: bool,
    v: Version,
) -> Result<(), End> {
    let ours = shared.cfg.nonce;
    let info = PeerInfo {
        addr,
        inbound,
        version: v.version,
        sub_version: v.sub_version.clone(),
        nonce: v.nonce,
        mode: v.mode,
        connected_at: unix_now(),
    };
    {
        let mut table = shared.table();
        if !inbound {
            table.nonce_of.insert(addr, v.nonce);
        }
        if v.nonce == ours {
            if !inbound {
                table.self_addrs.insert(addr);
            }
            return Err(End::Quiet("connected to ourselves".into()));
        }
        // Duplicate connections (a nonce already connected): the new one is closed and the
        // established one kept, as R does. Nonces are public, so a third party can claim an
        // honest peer's: that must never close the honest link. The one exception settles two
        // nodes that dialled each other at once (each end would otherwise keep a different
        // link and both links would die): when the established link is the other direction,
        // with the same IP address, and handshaken within the handshake timeout, both ends
        // keep the connection dialled by the node with the larger nonce. A third party would
        // need the honest peer's IP address and that moment.
        let duplicate = table
            .peers
            .iter()
            .find(|(other, s)| {
                **other != id
                    && s.closing.is_none()
                    && s.info.as_ref().is_some_and(|i| i.nonce == v.nonce)
            })
            .map(|(other, s)| {
                let crossed = s.inbound != inbound
                    && s.addr.ip() == addr.ip()
                    && s.handshaken_at
                        .is_some_and(|at| at.elapsed() < shared.cfg.timeouts.handshake);
                (*other, crossed)
            });
        if let Some((other, crossed)) = duplicate {
            let keep_new = crossed && (inbound != (ours > v.nonce));
            if !keep_new {
                return Err(End::Quiet("already connected to that node".into()));
            }
            if let Some(s) = table.peers.get_mut(&other) {
                s.closing = Some("duplicate connection".into());
                let _ = s.stream.shutdown(Shutdown::Both);
            }
        }
        match table.peers.get_mut(&id) {
            Some(slot) if slot.closing.is_none() => {
                slot.info = Some(info.clone());
                slot.handshaken_at = Some(Instant::now());
            }
            _ => return Err(End::Closed),
        }
    }
    let now = unix_now();
    if !inbound {
        let mut book = shared.book();
        book.got_addr(addr, v.services, now);
        book.dial_succeeded(&addr);
    }
    info!(
        target: LOG,
        "peer {id} {addr} connected ({}, version {}, {:?}, mode {})",
        if inbound { "in" } else { "out" },
        v.version,
        v.sub_version,
        v.mode
    );
    if shared
        .events
        .send(PeerEvent::Connected { id, info }.into())
        .is_err()
    {
        return Err(End::Closed);
    }
    // "I listen on this port": R's addrme, sent at once.
    shared.send(
        id,
        &Message::AddrMe {
            port: shared.local_addr.port(),
        },
    );
    if let Some(address) = shared
        .cfg
        .external_ip
        .and_then(|ip| wire_addr(shared.cfg.net.rules, 0, ip, shared.local_addr.port()))
    {
        shared.send(
            id,
            &Message::Addrs(vec![AddrRecord {
                timestamp: now,
                address,
            }]),
        );
    }
    if let Some(msg) = share0s_of(v.best_share_hash) {
        to_node(shared, id, msg, 32)?;
    }
    Ok(())
}

/// Hands a share message or getshares to the node, `bytes` long on the wire: waits while the
/// peer's messages not yet taken by the node would exceed [`PEER_EVENT_BYTES`] (this peer's
/// socket is not read meanwhile), then queues it, blocking while the queue is full
/// (backpressure).
///
/// [`PEER_EVENT_BYTES`]: super::PEER_EVENT_BYTES
fn to_node(shared: &Shared, id: PeerId, msg: Message, bytes: usize) -> Result<(), End> {
    let budget = match shared.table().peers.get(&id) {
        Some(slot) => slot.events.clone(),
        None => return Err(End::Closed),
    };
    let held = budget
        .take(bytes, || {
            shared.shutdown.is_stopped()
                || shared
                    .table()
                    .peers
                    .get(&id)
                    .is_none_or(|s| s.closing.is_some())
        })
        .ok_or(End::Closed)?;
    let pending = Pending {
        event: PeerEvent::Message { id, msg },
        held: Some(held),
    };
    shared.events.send(pending).map_err(|_| End::Closed)
}

fn handle(
    shared: &Arc<Shared>,
    id: PeerId,
    addr: SocketAddr,
    msg: Message,
    bytes: usize,
) -> Result<(), End> {
    match msg {
        Message::Version(_) => debug!(target: LOG, "peer {id}: second version ignored"),
        Message::SetMode { mode } => {
            if let Some(info) = shared
                .table()
                .peers
                .get_mut(&id)
                .and_then(|s| s.info.as_mut())
            {
                info.mode = mode;
            }
            // The node keeps its own record of each link's mode.
            shared
                .events
                .send(PeerEvent::Mode { id, mode }.into())
                .map_err(|_| End::Closed)?;
        }
        Message::Ping | Message::Unknown { .. } => {}
        Message::AddrMe { port } => {
            let record = AddrRecord {
                timestamp: unix_now(),
                address: NetAddress::new(0, addr.ip(), port),
            };
            let listen = SocketAddr::new(addr.ip(), port);
            {
                // The connector then knows this address is a node connected already.
                let mut table = shared.table();
                let nonce = table
                    .peers
                    .get(&id)
                    .and_then(|s| s.info.as_ref())
                    .map(|i| i.nonce);
                if let Some(nonce) = nonce {
                    table.nonce_of.insert(listen, nonce);
                }
            }
            // Recorded and passed on only when routable on this network (`AddrBook::storable`).
            let mut book = shared.book();
            let storable = book.storable(&listen);
            book.got_addr(listen, 0, record.timestamp);
            drop(book);
            if storable && chance(0.8) {
                forward(shared, id, record);
            }
        }
        Message::Addrs(records) => {
            let now = unix_now();
            for (i, r) in records.iter().take(MAX_ADDRS_TAKEN).enumerate() {
                let a = SocketAddr::new(r.address.ip_addr(), r.address.port);
                let mut book = shared.book();
                // Addresses the book would not store (not routable on this network) are
                // not passed on either.
                if !book.storable(&a) {
                    continue;
                }
                book.got_addr(a, r.address.services, r.timestamp.min(now));
                drop(book);
                if i < MAX_ADDRS_FORWARDED && chance(0.8) {
                    forward(shared, id, *r);
                }
            }
        }
        Message::GetAddrs { count } => {
            let n = (count as usize).min(MAX_GETADDRS);
            let records: Vec<AddrRecord> = shared
                .book()
                .sample(n)
                .into_iter()
                .filter_map(|(a, e)| {
                    Some(AddrRecord {
                        timestamp: e.last_seen,
                        address: wire_addr(shared.cfg.net.rules, e.services, a.ip(), a.port())?,
                    })
                })
                .collect();
            shared.send(id, &Message::Addrs(records));
        }
        msg @ (Message::GetShares { .. }
        | Message::Share0s(_)
        | Message::Share1as(_)
        | Message::Share1bs(_)) => {
            // Blocks while the node is busy: backpressure onto this peer's socket.
            to_node(shared, id, msg, bytes)?;
        }
    }
    Ok(())
}

/// Sends one address record to a random other peer (a loopback address only to loopback
/// peers, where it means something).
fn forward(shared: &Shared, from: PeerId, record: AddrRecord) {
    let loopback = record.address.ip_addr().is_loopback();
    let peers: Vec<PeerId> = shared
        .handshaken(Some(from))
        .into_iter()
        .filter(|(_, a)| !loopback || is_loopback(&a.ip()))
        .map(|(id, _)| id)
        .collect();
    if peers.is_empty() {
        return;
    }
    let to = peers[(super::random_u64() as usize) % peers.len()];
    shared.send(to, &Message::Addrs(vec![record]));
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}
