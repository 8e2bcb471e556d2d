//! The listener (`p2p_accept`) and the connector (`p2p_connect`), and [`P2p`], which
//! starts and stops them.
//!
//! The connector dials the `-n` addresses first (each again after `redial` while it is not
//! connected; `-n` host names resolved on short `p2p_resolve` threads, a name that does not
//! resolve logged and tried again after `redial`), then random address-book entries while
//! outbound connections are below the limit; it asks a random peer for addresses while the
//! book is small, and hands the book's changes to the node.
//!
//! Events reach the node through `p2p_events`: peers queue them on a short hand-over queue
//! and this thread moves them to the node's queue (`events_queue`), keeping each event's
//! share of its peer's [`PEER_EVENT_BYTES`](super::PEER_EVENT_BYTES) budget until the node
//! has taken it (it watches the node's queue drain, every 5 ms while events are in it).

use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, SendTimeoutError, Sender, TrySendError, after, bounded, never, select,
};
use log::{debug, info, warn};

use super::addrbook::{AddrBook, is_routable};
use super::ban::Bans;
use super::message::Message;
use super::peer;
use super::peers::{Peers, Shared, Table};
use super::{Held, P2pConfig, P2pError, PeerEvent, Pending, random_u64};

const LOG: &str = "p2p";
/// Events waiting for `p2p_events` to move them to the node's queue.
const HANDOVER_QUEUE: usize = 8;
/// How often `p2p_events` looks whether the node took events, while some are in its queue.
const TAKEN_POLL: Duration = Duration::from_millis(5);
/// Addresses asked for at a time (R: 8).
const GETADDRS_COUNT: u32 = 8;
/// A `-n` host name that resolved is resolved again this often (its address may move).
const RESOLVE_AGAIN: Duration = Duration::from_secs(600);

/// The running p2p subsystem.
pub struct P2p {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl P2p {
    /// Binds the listener and starts the listener and connector threads. Events for the
    /// node arrive on the returned receiver.
    pub fn start(cfg: P2pConfig) -> Result<(P2p, Receiver<PeerEvent>), P2pError> {
        let listener = crate::limits::listen(cfg.listen).map_err(|source| P2pError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| P2pError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let (events_tx, queued) = bounded(HANDOVER_QUEUE);
        let (to_node, events) = bounded(cfg.events_queue.max(1));
        let shared = Arc::new(Shared {
            framing: cfg.net.framing(),
            local_addr,
            events: events_tx,
            table: Mutex::new(Table::default()),
            book: Mutex::new(AddrBook::new(&cfg.net, cfg.max_addrs, cfg.addrs.clone())),
            bans: Mutex::new(Bans::new(cfg.bans)),
            best: Mutex::new(None),
            shutdown: crate::thread::Shutdown::new(),
            next_id: AtomicU64::new(1),
            cfg,
        });
        info!(target: LOG, "listening on {local_addr}");
        let wake = shared
            .shutdown
            .wake_accept_on_stop(&listener)
            .map_err(|source| P2pError::Bind {
                addr: local_addr,
                source,
            })?;
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            crate::thread::spawn("p2p_accept", move || {
                let _wake = wake;
                accept_loop(&s, listener)
            })
            .map_err(P2pError::Spawn)?,
        );
        let s = shared.clone();
        let connector = crate::thread::spawn("p2p_connect", move || connect_loop(&s));
        let s = shared.clone();
        let forwarder = connector.and_then(|connector| {
            threads.push(connector);
            crate::thread::spawn("p2p_events", move || forward_events(&s, &queued, &to_node))
        });
        match forwarder {
            Ok(t) => threads.push(t),
            Err(e) => {
                P2p { shared, threads }.stop();
                return Err(P2pError::Spawn(e));
            }
        }
        Ok((P2p { shared, threads }, events))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn peers(&self) -> Peers {
        Peers {
            shared: self.shared.clone(),
        }
    }

    /// Closes the listener and every connection and joins the listener and connector.
    /// Peer threads end on their own once their sockets are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Signals the shutdown (which ends the accept and closes every peer's socket) and
    /// joins the listener, the connector and the event forwarder.
    fn shutdown(&mut self) {
        self.shared.shutdown.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for P2p {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Moves queued events to the node's queue, in order, and gives each event's budget back
/// once the node took it: the node's queue holds the newest events sent, so all but its
/// length of those sent were taken. Ends at stop (dropping the hand-over queue, so that
/// peers waiting on it end too).
fn forward_events(shared: &Shared, queued: &Receiver<Pending>, to_node: &Sender<PeerEvent>) {
    let mut in_node_queue: VecDeque<Option<Held>> = VecDeque::new();
    let taken = |in_node_queue: &mut VecDeque<Option<Held>>| {
        let waiting = to_node.len();
        while in_node_queue.len() > waiting {
            in_node_queue.pop_front();
        }
    };
    let stop = shared.shutdown.signal();
    while !shared.shutdown.is_stopped() {
        taken(&mut in_node_queue);
        // While events are in the node's queue, look every TAKEN_POLL whether it took
        // them; otherwise wait for an event or the stop.
        let wait = if in_node_queue.is_empty() {
            never()
        } else {
            after(TAKEN_POLL)
        };
        let Pending { mut event, held } = select! {
            recv(queued) -> p => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            recv(stop) -> _ => return,
            recv(wait) -> _ => continue,
        };
        loop {
            match to_node.send_timeout(event, TAKEN_POLL) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(e)) if !shared.shutdown.is_stopped() => {
                    event = e;
                    taken(&mut in_node_queue);
                }
                Err(_) => return,
            }
        }
        in_node_queue.push_back(held);
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.shutdown.is_stopped() {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(target: LOG, "accept failed: {e}");
                shared.shutdown.sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        let addr = super::addrbook::canonical(addr);
        if let Err(why) = admit(shared, &addr, true) {
            debug!(target: LOG, "refused {addr}: {why}");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        peer::start(shared, stream, addr, true);
    }
}

/// Whether a connection to or from `addr` is allowed now.
fn admit(shared: &Shared, addr: &SocketAddr, inbound: bool) -> Result<(), &'static str> {
    if shared.is_banned(&addr.ip()) {
        return Err("address banned");
    }
    let table = shared.table();
    let (count, max) = if inbound {
        (table.count(true), shared.cfg.max_inbound)
    } else {
        (
            table.count(false) + table.dialing.len(),
            shared.cfg.max_outbound,
        )
    };
    if count >= max {
        return Err("too many connections");
    }
    if table.in_group(&addr.ip()) >= shared.cfg.max_per_group {
        return Err("too many connections from that network");
    }
    Ok(())
}

fn connect_loop(shared: &Arc<Shared>) {
    let t = shared.cfg.timeouts;
    let mut last_try: HashMap<SocketAddr, Instant> = HashMap::new();
    let mut next_getaddrs = Instant::now();
    let mut next_expire = Instant::now();
    let mut names = Names::new(&shared.cfg.connect_hosts);
    while !shared.shutdown.is_stopped() {
        let now = Instant::now();
        flush_addrs(shared);
        if now >= next_expire {
            shared.bans().expire(now);
            next_expire = now + Duration::from_secs(60);
        }
        if now >= next_getaddrs {
            next_getaddrs = now + t.getaddrs_every;
            ask_addrs(shared);
        }
        names.update(now, t.redial);
        if let Some(addr) = pick(shared, &names.addrs(), &last_try, now) {
            last_try.insert(addr, now);
            dial(shared, addr);
        }
        last_try.retain(|_, at| now.duration_since(*at) < t.redial);
        shared.shutdown.sleep(t.connect_every);
    }
}

/// One `-n` host name: its addresses once resolved, and when to resolve it next.
struct Name {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    next: Instant,
    resolving: bool,
    /// Failed resolutions in a row (the first is a warning, the rest debug lines).
    failures: u32,
}

/// The `-n` host names, resolved off the connector's thread (a slow DNS answer delays
/// neither the dials nor the stop: a `p2p_resolve` thread ends when its lookup does).
struct Names {
    names: Vec<Name>,
    answers: Receiver<(usize, std::io::Result<Vec<SocketAddr>>)>,
    send: Sender<(usize, std::io::Result<Vec<SocketAddr>>)>,
}

impl Names {
    fn new(hosts: &[(String, u16)]) -> Names {
        let (send, answers) = bounded(hosts.len().max(1));
        let now = Instant::now();
        Names {
            names: hosts
                .iter()
                .map(|(host, port)| Name {
                    host: host.clone(),
                    port: *port,
                    addrs: Vec::new(),
                    next: now,
                    resolving: false,
                    failures: 0,
                })
                .collect(),
            answers,
            send,
        }
    }

    /// Takes the answers that came and starts the lookups that are due.
    fn update(&mut self, now: Instant, redial: Duration) {
        for (i, answer) in self.answers.try_iter() {
            let Some(name) = self.names.get_mut(i) else {
                continue;
            };
            name.resolving = false;
            match answer {
                Ok(addrs) if !addrs.is_empty() => {
                    if name.addrs != addrs {
                        info!(
                            target: LOG,
                            "-n {}:{} resolves to {}",
                            name.host,
                            name.port,
                            addrs
                                .iter()
                                .map(SocketAddr::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    name.addrs = addrs;
                    name.failures = 0;
                    name.next = now + RESOLVE_AGAIN;
                }
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "no address".to_string(),
                    };
                    name.failures += 1;
                    let level = if name.failures == 1 {
                        log::Level::Warn
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        target: LOG,
                        level,
                        "-n {}: cannot resolve the host name ({why}); trying again every {} s",
                        name.host,
                        redial.as_secs()
                    );
                    name.next = now + redial;
                }
            }
        }
        for (i, name) in self.names.iter_mut().enumerate() {
            if name.resolving || now < name.next {
                continue;
            }
            let (host, port, send) = (name.host.clone(), name.port, self.send.clone());
            let spawned = crate::thread::spawn("p2p_resolve", move || {
                use std::net::ToSocketAddrs;
                let answer = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>());
                let _ = send.try_send((i, answer));
            });
            match spawned {
                Ok(_) => name.resolving = true,
                Err(_) => name.next = now + redial,
            }
        }
    }

    /// Each resolved name's addresses.
    fn addrs(&self) -> Vec<&[SocketAddr]> {
        self.names
            .iter()
            .filter(|n| !n.addrs.is_empty())
            .map(|n| n.addrs.as_slice())
            .collect()
    }
}

/// The next address to dial: a `-n` address first (`named`: each resolved host name's
/// addresses, one connection per name), then an address-book entry.
fn pick(
    shared: &Shared,
    named: &[&[SocketAddr]],
    last_try: &HashMap<SocketAddr, Instant>,
    now: Instant,
) -> Option<SocketAddr> {
    let usable = |a: &SocketAddr, table: &Table| {
        is_routable(a)
            && *a != shared.local_addr
            && !table.dialing.contains(a)
            && !table.is_connected_to(a)
            && last_try
                .get(a)
                .is_none_or(|at| now.duration_since(*at) >= shared.cfg.timeouts.redial)
            && !shared.is_banned(&a.ip())
    };
    let table = shared.table();
    let preferred = shared
        .cfg
        .connect
        .iter()
        .copied()
        .find(|a| usable(a, &table))
        .or_else(|| {
            named
                .iter()
                .filter(|addrs| {
                    !addrs
                        .iter()
                        .any(|a| table.dialing.contains(a) || table.is_connected_to(a))
                })
                .find_map(|addrs| addrs.iter().copied().find(|a| usable(a, &table)))
        });
    let addr = match preferred {
        Some(a) => a,
        None => {
            let book = shared.book();
            book.pick(|a| usable(a, &table))?
        }
    };
    drop(table);
    admit(shared, &addr, false).ok()?;
    Some(addr)
}

fn dial(shared: &Arc<Shared>, addr: SocketAddr) {
    shared.table().dialing.insert(addr);
    let s = shared.clone();
    let spawned = crate::thread::spawn("p2p_dial", move || {
        let result = TcpStream::connect_timeout(&addr, s.cfg.timeouts.connect);
        s.table().dialing.remove(&addr);
        match result {
            Ok(stream) if !s.shutdown.is_stopped() => {
                debug!(target: LOG, "connected to {addr}");
                peer::start(&s, stream, addr, false);
            }
            Ok(_) => {}
            Err(e) => {
                debug!(target: LOG, "cannot connect to {addr}: {e}");
                s.book().dial_failed(&addr);
            }
        }
    });
    if spawned.is_err() {
        shared.table().dialing.remove(&addr);
    }
}

/// Asks a random peer for addresses while the book is small (R's address-fetch loop).
fn ask_addrs(shared: &Shared) {
    if shared.book().len() >= shared.cfg.max_addrs {
        return;
    }
    let peers = shared.handshaken(None);
    if peers.is_empty() {
        return;
    }
    let (id, _) = peers[(random_u64() as usize) % peers.len()];
    shared.send(
        id,
        &Message::GetAddrs {
            count: GETADDRS_COUNT,
        },
    );
}

/// Hands address-book changes to the node, never blocking (kept for later when full).
fn flush_addrs(shared: &Shared) {
    let changes = shared.book().take_changes();
    if changes.is_empty() {
        return;
    }
    match shared.events.try_send(PeerEvent::Addrs(changes).into()) {
        Ok(()) => {}
        Err(TrySendError::Full(Pending {
            event: PeerEvent::Addrs(changes),
            ..
        })) => shared.book().requeue(changes),
        Err(_) => {}
    }
}
