//! Hostile peers against the links and books of the p2p layer, on loopback with real
//! sockets: a third party reusing an honest peer's (public) nonce, crossed dials, lost links,
//! an address-book flood, local addresses offered to a node on the Internet, a banned
//! address coming back, and a peer sending large frames faster than the node takes them.
//! Hostile peers are bound to 127.0.0.2 and up, honest nodes to 127.0.0.1.

mod support {
    pub mod hostile;
    pub mod p2p_node;
}

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::network::Network;
use p2pool::p2p::message::{AddrRecord, Message, NetAddress};
use p2pool::p2p::{P2p, PEER_EVENT_BYTES, PeerEvent, unix_now};
use p2pool::sharechain::sample::{self, Spec, modern_net, payout};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::tracker::Tracker;
use p2pool::store::AddrEntry;

use support::hostile::{Hostile, version};
use support::p2p_node::{TestNode, config};

const WAIT: Duration = Duration::from_secs(10);

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn mine(net: &Network, n: usize) -> Vec<Share> {
    let mut tracker = Tracker::new();
    let mut prev = None;
    let mut out = Vec::new();
    for i in 0..n {
        let spec = Spec::new(prev, 1_600_000_000 + 10 * (i as u32 + 1), payout(1));
        let share = sample::mine(&tracker, net, &spec);
        prev = Some(share.hash);
        tracker.add(share.clone(), 0, None);
        out.push(share);
    }
    out
}

/// The nonce a node announces to anyone who connects: public.
fn nonce_of(node: SocketAddr, from: Ipv4Addr, net: &Network) -> u64 {
    let mut h = Hostile::connect(from, node, net.framing());
    let frame = h.wait_for("version", WAIT).expect("a version");
    match Message::decode(&frame.command, &frame.payload, net.rules).unwrap() {
        Message::Version(v) => v.nonce,
        other => panic!("unexpected {other:?}"),
    }
}

/// The id of the one handshaken peer of a node.
fn only_peer(node: &TestNode) -> u64 {
    let status = node.peers.status();
    let up: Vec<_> = status
        .peers
        .iter()
        .filter(|p| p.version.is_some())
        .collect();
    assert_eq!(up.len(), 1, "{status:?}");
    up[0].id
}

#[test]
fn a_third_party_reusing_an_honest_nonce_cannot_cut_the_honest_link() {
    let net = modern_net();
    let shares = mine(&net, 10);
    // The victim's nonce is the smaller: under the old nonce-order rule, an inbound
    // connection claiming the larger nonce replaced the victim's outbound link.
    let mut cfg_a = config(&net, &[]);
    cfg_a.nonce = u64::MAX - 7;
    let a = TestNode::start_with(cfg_a);
    let mut cfg_b = config(&net, &[a.addr]);
    cfg_b.nonce = 7;
    let b = TestNode::start_with(cfg_b);
    assert!(a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT));
    let (link_a, link_b) = (only_peer(&a), only_peer(&b));

    // Anyone learns the nonces by connecting.
    let nonce_a = nonce_of(a.addr, loopback(2), &net);
    let nonce_b = nonce_of(b.addr, loopback(2), &net);
    assert_eq!((nonce_a, nonce_b), (u64::MAX - 7, 7));

    // Impersonations at both ends, and a connection claiming the node's own nonce: each is
    // closed, and the honest link stays.
    for (to, nonce, from) in [
        (b.addr, nonce_a, 3),
        (a.addr, nonce_b, 4),
        (b.addr, nonce_b, 5),
        (a.addr, nonce_a, 6),
    ] {
        let mut h = Hostile::connect(loopback(from), to, net.framing());
        h.send(&version(nonce, "impostor")).unwrap();
        assert!(
            h.closed_within(Duration::from_secs(5)),
            "impostor from 127.0.0.{from} closed"
        );
    }
    thread::sleep(Duration::from_millis(500));
    assert_eq!((only_peer(&a), only_peer(&b)), (link_a, link_b));
    assert_eq!(a.state().disconnected_events, 0);
    assert_eq!(b.state().disconnected_events, 0);
    assert_eq!(b.state().connected_events, 1);

    // The honest link still carries shares.
    a.inject(shares.clone());
    assert!(
        b.wait(WAIT, |s| s.best == shares.last().map(|s| s.hash)),
        "b converges over the honest link"
    );
}

#[test]
fn a_node_whose_nonce_is_connected_is_not_dialled_again() {
    let net = modern_net();
    let framing = net.framing();
    // A node listening here that turns out to be a peer already connected the other way.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let there = listener.local_addr().unwrap();
    let mut cfg = config(&net, &[there]);
    cfg.timeouts.redial = Duration::from_millis(200);
    let x = TestNode::start_with(cfg);
    let nonce = 0x5eed_5eed;
    let mut inbound = Hostile::connect(loopback(2), x.addr, framing.clone());
    inbound.send(&version(nonce, "peer")).unwrap();
    // The inbound peer handshakes first; only then does the listener answer the dial.
    assert!(x.wait_peers(1, WAIT));
    let accepts = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (accepts, stop, framing) = (accepts.clone(), stop.clone(), framing.clone());
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        accepts.fetch_add(1, Ordering::Relaxed);
                        let frame = version(nonce, "peer").to_frame(&framing).unwrap();
                        let _ = s.write_all(&frame);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && accepts.load(Ordering::Relaxed) == 0 {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(accepts.load(Ordering::Relaxed), 1, "the address is dialled");
    // Redials are 200 ms apart: ten chances to dial again.
    thread::sleep(Duration::from_secs(2));
    // Dialled once, found to be the connected node (closed as a duplicate), not again; the
    // established link stays.
    assert_eq!(accepts.load(Ordering::Relaxed), 1);
    assert_eq!(x.peers.count(), 1);
    assert!(x.peers.status().peers.iter().all(|p| p.inbound));
    assert!(!inbound.closed_within(Duration::from_millis(200)));
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// A loopback address with a port nothing listens on now.
fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

#[test]
fn nodes_dialling_each_other_at_once_keep_one_link_without_flapping() {
    let net = modern_net();
    for round in 0..4 {
        let (pa, pb) = (free_addr(), free_addr());
        let mut cfg_a = config(&net, &[pb]);
        cfg_a.listen = pa;
        let mut cfg_b = config(&net, &[pa]);
        cfg_b.listen = pb;
        // Either order of nonces.
        if round % 2 == 1 {
            std::mem::swap(&mut cfg_a.nonce, &mut cfg_b.nonce);
        }
        let a = TestNode::start_with(cfg_a);
        let b = TestNode::start_with(cfg_b);
        assert!(
            a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT),
            "round {round}"
        );
        thread::sleep(Duration::from_millis(300));
        let kept = (only_peer(&a), only_peer(&b));
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert_eq!((only_peer(&a), only_peer(&b)), kept, "round {round}");
            thread::sleep(Duration::from_millis(50));
        }
        let (sa, sb) = (a.peers.status(), b.peers.status());
        let link_a = sa.peers.iter().find(|p| p.id == kept.0).unwrap();
        let link_b = sb.peers.iter().find(|p| p.id == kept.1).unwrap();
        assert_ne!(
            link_a.inbound, link_b.inbound,
            "one connection seen from both ends"
        );
    }
}

#[test]
fn a_lost_outbound_link_is_dialled_again() {
    let net = modern_net();
    let a = TestNode::start(&net, &[]);
    let b = TestNode::start(&net, &[a.addr]);
    assert!(b.wait_peers(1, WAIT));
    let first = only_peer(&b);
    b.peers.disconnect(first, "test");
    assert!(b.wait(WAIT, |s| s.connected_events == 2), "b dials a again");
    assert!(b.wait_peers(1, WAIT));
    assert_ne!(only_peer(&b), first);
    // (a may have dialled b meanwhile: the crossed dials still end as one link.)
    thread::sleep(Duration::from_millis(1000));
    only_peer(&a);
    only_peer(&b);
}

fn public(first: u8, i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from((u32::from(first) << 24) | (2 << 16) | i);
    SocketAddr::new(IpAddr::V4(ip), 9333)
}

fn record(a: SocketAddr, timestamp: u64) -> AddrRecord {
    AddrRecord {
        timestamp,
        address: NetAddress::new(0, a.ip(), a.port()),
    }
}

/// The addresses of a node's answer to getaddrs.
fn getaddrs(h: &mut Hostile, net: &Network, count: u32) -> Vec<SocketAddr> {
    h.send(&Message::GetAddrs { count }).unwrap();
    let frame = h.wait_for("addrs", WAIT).expect("addrs reply");
    match Message::decode(&frame.command, &frame.payload, net.rules).unwrap() {
        Message::Addrs(records) => records
            .iter()
            .map(|r| SocketAddr::new(r.address.ip_addr(), r.address.port))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_addrs_flood_leaves_every_honest_entry_in_place() {
    let net = modern_net();
    let honest: Vec<SocketAddr> = (0..100).map(|i| public(1, i)).collect();
    let mut cfg = config(&net, &[]);
    cfg.max_addrs = honest.len();
    cfg.max_outbound = 0;
    cfg.addrs = honest
        .iter()
        .map(|a| {
            let e = AddrEntry {
                services: 0,
                first_seen: 1,
                last_seen: 1,
            };
            (*a, e)
        })
        .collect();
    let x = TestNode::start_with(cfg);
    let mut h = Hostile::connect(loopback(2), x.addr, net.framing());
    h.handshake().unwrap();
    // 1,500 fresh addresses from one peer, 100 a message.
    let now = unix_now();
    for m in 0..15u32 {
        let records = (0..100)
            .map(|i| record(public(5, m * 100 + i), now))
            .collect();
        h.send(&Message::Addrs(records)).unwrap();
    }
    // getaddrs is answered after the addrs before it: the book is as the flood left it.
    let answer: HashSet<SocketAddr> = getaddrs(&mut h, &net, 100).into_iter().collect();
    assert_eq!(answer, honest.iter().copied().collect::<HashSet<_>>());
    assert_eq!(x.peers.status().addr_book, honest.len());
    thread::sleep(Duration::from_millis(1500));
    let stored = x.state().stored_addrs;
    assert!(
        stored.iter().all(|a| honest.contains(a)),
        "flood stored: {stored:?}"
    );
}

#[test]
fn local_addresses_are_neither_stored_nor_dialled_on_an_internet_network() {
    let net = Network::built_in("bitcoin").unwrap();
    let mut cfg = config(&net, &[]);
    cfg.max_outbound = 0;
    let x = TestNode::start_with(cfg);
    let mut h = Hostile::connect(loopback(2), x.addr, net.framing());
    h.handshake().unwrap();
    let now = unix_now();
    let offered = [
        "127.0.0.1:22",
        "10.0.0.1:445",
        "192.168.1.1:9333",
        "100.64.0.1:9333",
        "169.254.0.1:9333",
        "203.0.113.9:9333",
        "1.2.3.4:0",
        "[::ffff:127.0.0.1]:22",
        "[fd00::1]:9333",
        "[fe80::1]:9333",
        "[::1]:9333",
        "[2001:db8::1]:9333",
        "1.2.3.4:9333",
    ];
    let records = offered
        .iter()
        .map(|a| record(a.parse().unwrap(), now))
        .collect();
    h.send(&Message::Addrs(records)).unwrap();
    // The hostile peer's own address (loopback) from addrme is not stored either.
    h.send(&Message::AddrMe { port: 22 }).unwrap();
    let answer = getaddrs(&mut h, &net, 100);
    assert_eq!(answer, vec!["1.2.3.4:9333".parse().unwrap()]);
}

#[test]
fn local_addresses_are_stored_on_a_local_network() {
    let net = Network::built_in("regtest").unwrap();
    let mut cfg = config(&net, &[]);
    cfg.max_outbound = 0;
    let x = TestNode::start_with(cfg);
    let mut h = Hostile::connect(loopback(2), x.addr, net.framing());
    h.handshake().unwrap();
    let now = unix_now();
    h.send(&Message::Addrs(vec![
        record("127.0.0.1:22".parse().unwrap(), now),
        record("10.0.0.1:445".parse().unwrap(), now),
        record("10.0.0.2:0".parse().unwrap(), now),
    ]))
    .unwrap();
    h.send(&Message::AddrMe { port: 4242 }).unwrap();
    let answer: HashSet<SocketAddr> = getaddrs(&mut h, &net, 100).into_iter().collect();
    let expected: HashSet<SocketAddr> = ["127.0.0.1:22", "10.0.0.1:445", "127.0.0.2:4242"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(answer, expected);
}

#[test]
fn a_banned_address_is_refused_at_accept_and_counts_nothing() {
    let net = modern_net();
    let x = TestNode::start(&net, &[]);
    x.peers.ban(loopback(4).into());
    for _ in 0..3 {
        let mut h = Hostile::connect(loopback(4), x.addr, net.framing());
        let started = Instant::now();
        // Closed at once, without our version.
        assert!(matches!(
            h.next_frame(Duration::from_secs(2)),
            Err(_) | Ok(None)
        ));
        assert!(h.closed_within(Duration::from_millis(100)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    thread::sleep(Duration::from_millis(200));
    let status = x.peers.status();
    assert!(status.peers.is_empty(), "{status:?}");
    assert_eq!(x.state().connected_events, 0);
    assert_eq!(status.banned, vec![IpAddr::from(loopback(4))]);
    // Another loopback address is not affected.
    let mut h = Hostile::connect(loopback(5), x.addr, net.framing());
    assert!(h.wait_for("version", WAIT).is_some());
}

#[test]
fn one_peer_cannot_park_more_than_its_byte_budget_in_the_node_queue() {
    let net = modern_net();
    let cfg = config(&net, &[]);
    // The node side is this test: it takes no event until told.
    let (p2p, events) = P2p::start(cfg).expect("p2p starts");
    let peers = p2p.peers();
    let mut h = Hostile::connect(loopback(2), p2p.local_addr(), net.framing());
    h.handshake().unwrap();
    // 64 share0s frames of 2 MiB each: 128 MiB, twice what the old queue of 64 events held.
    let hashes: Vec<Hash256> = (0..65_536u32).map(|i| sha256d(&i.to_le_bytes())).collect();
    let frame = Message::Share0s(hashes).to_frame(&net.framing()).unwrap();
    let frames = 64usize;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut stream = h.stream.try_clone().unwrap();
        let written = written.clone();
        thread::spawn(move || {
            for _ in 0..frames {
                if stream.write_all(&frame).is_err() {
                    return;
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let id = loop {
        let status = peers.status();
        if let Some(p) = status.peers.iter().find(|p| p.version.is_some()) {
            break p.id;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Wait until the writer is stuck (TCP stopped it) or done.
    let mut last = (written.load(Ordering::Relaxed), Instant::now());
    while last.1.elapsed() < Duration::from_millis(1500) && !writer.is_finished() {
        thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let (queued, peak) = peers.event_bytes(id).expect("peer up");
        assert!(queued <= PEER_EVENT_BYTES && peak <= PEER_EVENT_BYTES);
    }
    let stuck_at = written.load(Ordering::Relaxed);
    let (queued, peak) = peers.event_bytes(id).expect("peer up");
    eprintln!("writer stuck after {stuck_at} frames; {queued} bytes queued, peak {peak}");
    assert!(!writer.is_finished(), "the node read everything unasked");
    // What the sender got rid of: the budget, one frame in hand, and the socket buffers.
    assert!(
        stuck_at * frame_len() < 96 << 20,
        "{stuck_at} frames written"
    );
    assert!(
        queued > PEER_EVENT_BYTES / 2,
        "the budget is used: {queued}"
    );

    // The node takes events again: every frame arrives, the peer stays connected, and the
    // budget is never exceeded.
    let mut shares = 0;
    let until = Instant::now() + Duration::from_secs(60);
    while shares < frames && Instant::now() < until {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(PeerEvent::Message { .. }) => shares += 1,
            Ok(_) => {}
            Err(_) => {}
        }
        if let Some((_, peak)) = peers.event_bytes(id) {
            assert!(peak <= PEER_EVENT_BYTES);
        }
    }
    writer.join().unwrap();
    assert_eq!(shares, frames);
    assert!(peers.is_up(id));
    let deadline = Instant::now() + Duration::from_secs(2);
    while peers.event_bytes(id).unwrap().0 > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(peers.event_bytes(id).unwrap().0, 0);
    drop(events);
    p2p.stop();
}

fn frame_len() -> usize {
    // 24-byte header, 5-byte count, 65,536 hashes.
    24 + 5 + 65_536 * 32
}
