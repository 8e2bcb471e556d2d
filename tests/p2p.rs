//! The P2Pool network on loopback, in one process: nodes made of real parts (share chain,
//! share sync, p2p threads, real sockets) connect, handshake, exchange addresses and
//! converge on the same best share; a late node syncs the chain; low-bandwidth links
//! converge; hostile peers bound to 127.0.0.2 and up are disconnected, banned or answered
//! within limits while honest peers keep converging.

mod support {
    pub mod hostile;
    pub mod p2p_node;
}

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::network::Network;
use p2pool::p2p::message::Message;
use p2pool::p2p::{MODE_LOW_BANDWIDTH, RateLimit};
use p2pool::sharechain::sample::{self, Spec, modern_net, payout};
use p2pool::sharechain::share::Share;
use p2pool::sharechain::tracker::Tracker;

use support::hostile::{Hostile, rand_nonce, version};
use support::p2p_node::{TestNode, config};

const WAIT: Duration = Duration::from_secs(10);

/// `n` shares mined on top of `base` (or from genesis), added to `tracker`.
fn mine(
    tracker: &mut Tracker,
    net: &Network,
    base: Option<Hash256>,
    n: usize,
    script: u8,
) -> Vec<Share> {
    let start = base
        .and_then(|b| tracker.get(&b).map(|s| s.timestamp()))
        .unwrap_or(1_600_000_000);
    let mut prev = base;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let spec = Spec::new(prev, start + 10 * (i as u32 + 1), payout(script));
        let share = sample::mine(tracker, net, &spec);
        prev = Some(share.hash);
        tracker.add(share.clone(), 0, None);
        out.push(share);
    }
    out
}

fn last(shares: &[Share]) -> Option<Hash256> {
    shares.last().map(|s| s.hash)
}

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

#[test]
fn two_nodes_handshake_exchange_addresses_and_converge() {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let shares = mine(&mut tracker, &net, None, 30, 1);
    let a = TestNode::start(&net, &[]);
    let b = TestNode::start(&net, &[a.addr]);
    assert!(a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT), "handshake");

    let status = a.peers.status();
    assert_eq!((status.inbound, status.outbound), (1, 0));
    let peer = &status.peers[0];
    assert_eq!(peer.version, Some(1));
    assert!(
        peer.sub_version
            .as_deref()
            .unwrap()
            .starts_with("p2pool-rs/")
    );
    assert_eq!(peer.mode, Some(1));
    assert_eq!(b.peers.status().outbound, 1);

    a.inject(shares.clone());
    assert!(a.wait(WAIT, |s| s.best == last(&shares)), "a picks its tip");
    assert!(b.wait(WAIT, |s| s.best == last(&shares)), "b converges");
    assert_eq!(b.state().shares, 30);

    // A learned B's listening address from addrme, B learned A's by dialling it.
    assert!(
        a.wait(WAIT, |s| s.stored_addrs.contains(&b.addr)),
        "a stores b's address"
    );
    assert!(
        b.wait(WAIT, |s| s.stored_addrs.contains(&a.addr)),
        "b stores a's address"
    );
}

#[test]
fn three_nodes_converge_relay_new_shares_and_learn_addresses() {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let shares = mine(&mut tracker, &net, None, 20, 1);
    let a = TestNode::start(&net, &[]);
    let b = TestNode::start(&net, &[a.addr]);
    let c = TestNode::start(&net, &[b.addr]);
    assert!(b.wait_peers(2, WAIT), "b has both peers");

    a.inject(shares.clone());
    for n in [&a, &b, &c] {
        assert!(
            n.wait(WAIT, |s| s.best == last(&shares)),
            "converges on a's tip"
        );
    }
    // New shares found at C reach A through B (or directly, once C dialled A).
    let more = mine(&mut tracker, &net, last(&shares), 5, 2);
    c.inject(more.clone());
    for n in [&a, &b, &c] {
        assert!(
            n.wait(WAIT, |s| s.best == last(&more)),
            "converges on c's tip"
        );
    }
    // C knew only B; getaddrs to B tells it where A listens.
    assert!(
        c.wait(WAIT, |s| s.stored_addrs.contains(&a.addr)),
        "c learns a's address"
    );
}

/// A network with a longer window, so that a full sync takes several getshares rounds.
fn sync_net() -> Network {
    let mut net = modern_net();
    net.chain_length = 600;
    net.target_lookbehind = 20;
    net
}

fn sync_chain() -> &'static Vec<Share> {
    static CHAIN: OnceLock<Vec<Share>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let net = sync_net();
        let n = 2 * net.chain_length as usize + 10;
        let (tracker, hashes) = sample::chain(&net, n, 10, &[payout(1), payout(2), payout(3)]);
        hashes
            .iter()
            .map(|h| tracker.get(h).unwrap().clone())
            .collect()
    })
}

#[test]
fn a_late_node_syncs_the_whole_chain() {
    let net = sync_net();
    let shares = sync_chain();
    let a = TestNode::start(&net, &[]);
    a.inject(shares.clone());
    assert!(
        a.wait(Duration::from_secs(30), |s| s.best == last(shares)),
        "a verifies its chain"
    );

    // Tail trimming keeps 2×CHAIN_LENGTH+10 shares above the oldest: one fewer.
    let kept = a.state().shares;
    assert!(kept >= 2 * net.chain_length as usize + 9);
    let started = std::time::Instant::now();
    let late = TestNode::start(&net, &[a.addr]);
    assert!(
        late.wait(Duration::from_secs(30), |s| s.best == last(shares)
            && s.shares == kept),
        "late node has {:?}",
        late.state()
    );
    assert_eq!(late.state().verified, net.chain_length as usize);
    eprintln!("late node synced {kept} shares in {:?}", started.elapsed());
}

#[test]
fn low_bandwidth_links_announce_hashes_and_converge() {
    let net = modern_net();
    let mut tracker = Tracker::new();
    let shares = mine(&mut tracker, &net, None, 20, 1);
    let a = TestNode::start(&net, &[]);
    let mut cfg = config(&net, &[a.addr]);
    cfg.low_bandwidth = true;
    let b = TestNode::start_with(cfg);
    assert!(a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT));
    assert_eq!(a.peers.status().peers[0].mode, Some(MODE_LOW_BANDWIDTH));

    a.inject(shares.clone());
    assert!(
        b.wait(WAIT, |s| s.best == last(&shares)),
        "b converges through share0s"
    );
    let more = mine(&mut tracker, &net, last(&shares), 4, 2);
    b.inject(more.clone());
    assert!(
        a.wait(WAIT, |s| s.best == last(&more)),
        "a converges through share0s"
    );
}

#[test]
fn nodes_never_connect_to_themselves_nor_twice_to_each_other() {
    let net = modern_net();
    let mut cfg = config(&net, &[]);
    // A node told to dial its own address.
    let own = free_addr();
    cfg.listen = own;
    cfg.connect = vec![own];
    let lonely = TestNode::start_with(cfg);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(lonely.peers.count(), 0);
    assert_eq!(lonely.state().connected_events, 0);

    // Two nodes dialling each other end with one connection, the same one at both ends.
    let (pa, pb) = (free_addr(), free_addr());
    let mut cfg_a = config(&net, &[pb]);
    cfg_a.listen = pa;
    let mut cfg_b = config(&net, &[pa]);
    cfg_b.listen = pb;
    let a = TestNode::start_with(cfg_a);
    let b = TestNode::start_with(cfg_b);
    assert!(a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT));
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.peers.count(), 1);
    assert_eq!(b.peers.count(), 1);
    let (sa, sb) = (a.peers.status(), b.peers.status());
    let kept_a = sa.peers.iter().find(|p| p.version.is_some()).unwrap();
    let kept_b = sb.peers.iter().find(|p| p.version.is_some()).unwrap();
    assert_ne!(
        kept_a.inbound, kept_b.inbound,
        "one connection seen from both ends"
    );
}

#[test]
fn a_peer_given_by_host_name_is_resolved_and_dialled_once_while_a_name_that_fails_is_retried() {
    let net = modern_net();
    let a = TestNode::start(&net, &[]);
    let mut cfg = config(&net, &[]);
    // `localhost` may resolve to ::1 first, where nothing listens: the next address is
    // tried. A name that never resolves stops nothing.
    cfg.connect_hosts = vec![
        ("nosuchhost.invalid".into(), a.addr.port()),
        ("localhost".into(), a.addr.port()),
    ];
    let b = TestNode::start_with(cfg);
    assert!(
        a.wait_peers(1, WAIT) && b.wait_peers(1, WAIT),
        "connected by name"
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.peers.status().outbound, 1, "one connection per name");
}

/// A loopback address with a port nothing listens on now.
fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

#[test]
fn the_inbound_limit_refuses_extra_peers() {
    let net = modern_net();
    let mut cfg = config(&net, &[]);
    cfg.max_inbound = 1;
    let a = TestNode::start_with(cfg);
    let b = TestNode::start(&net, &[a.addr]);
    assert!(b.wait_peers(1, WAIT));
    let c = TestNode::start(&net, &[a.addr]);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(a.peers.status().inbound, 1);
    assert_eq!(c.peers.count(), 0);
}

#[test]
fn hostile_peers_are_dropped_or_answered_within_limits_while_honest_peers_converge() {
    let net = modern_net();
    let framing = net.framing();
    let mut tracker = Tracker::new();
    let shares = mine(&mut tracker, &net, None, 20, 1);
    let mut cfg = config(&net, &[]);
    cfg.timeouts.handshake = Duration::from_secs(2);
    cfg.rate = RateLimit {
        burst: 100.0,
        per_second: 50.0,
    };
    let a = TestNode::start_with(cfg);
    let b = TestNode::start(&net, &[a.addr]);
    assert!(b.wait_peers(1, WAIT));
    a.inject(shares.clone());
    assert!(b.wait(WAIT, |s| s.best == last(&shares)));
    let closes = Duration::from_secs(5);

    // Garbage before the prefix.
    let mut h = Hostile::connect(loopback(2), a.addr, framing.clone());
    h.send_raw(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(h.closed_within(closes), "garbage");

    // A bad checksum.
    let mut h = Hostile::connect(loopback(3), a.addr, framing.clone());
    h.handshake().unwrap();
    let mut ping = Message::Ping.to_frame(&framing).unwrap();
    ping[24] ^= 0xff;
    h.send_raw(&ping).unwrap();
    assert!(h.closed_within(closes), "bad checksum");

    // A frame announcing more than the limit.
    let mut h = Hostile::connect(loopback(4), a.addr, framing.clone());
    h.handshake().unwrap();
    let mut big = Message::Ping.to_frame(&framing).unwrap();
    big[20..24].copy_from_slice(&(framing.max_payload() as u32 + 1).to_le_bytes());
    h.send_raw(&big).unwrap();
    assert!(h.closed_within(closes), "oversize");

    // A payload that does not decode.
    let mut h = Hostile::connect(loopback(5), a.addr, framing.clone());
    h.handshake().unwrap();
    h.send_raw(&framing.encode("addrs", &[5]).unwrap()).unwrap();
    assert!(h.closed_within(closes), "malformed");

    // A block sent as a share1a: the wrong type, which bans the address.
    let mut block_spec = Spec::new(last(&shares), 1_600_000_500, payout(9));
    block_spec.other_txs = Some(vec![]);
    let block_share = sample::mine(&tracker, &net, &block_spec);
    let mut h = Hostile::connect(loopback(6), a.addr, framing.clone());
    h.handshake().unwrap();
    h.send(&Message::Share1as(vec![block_share.to_share1a()]))
        .unwrap();
    assert!(h.closed_within(closes), "wrong share type");
    assert!(a.peers.status().banned.contains(&loopback(6).into()));
    // The banned address is refused at once: no version, just a close.
    let mut h = Hostile::connect(loopback(6), a.addr, framing.clone());
    assert!(h.wait_for("version", Duration::from_secs(1)).is_none());
    assert!(h.closed_within(closes), "banned address refused");

    // A flood of pings.
    let mut h = Hostile::connect(loopback(7), a.addr, framing.clone());
    h.handshake().unwrap();
    let ping = Message::Ping.to_frame(&framing).unwrap();
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let _ = h.send_raw(&flood);
    assert!(h.closed_within(closes), "ping flood");

    // getshares for thousands of hashes: answered within the clamp, not dropped.
    let mut h = Hostile::connect(loopback(8), a.addr, framing.clone());
    h.handshake().unwrap();
    let mut hashes = vec![last(&shares).unwrap()];
    hashes.extend((0..5000u32).map(|i| sha256d(&i.to_le_bytes())));
    h.send(&Message::GetShares {
        hashes,
        parents: 1000,
        stops: vec![],
    })
    .unwrap();
    let reply = h.wait_for("share1as", closes).expect("a reply");
    match Message::decode(&reply.command, &reply.payload, net.rules).unwrap() {
        // 1000 // 1000 hashes looked at: one parent each.
        Message::Share1as(list) => assert_eq!(list.len(), 2),
        other => panic!("unexpected {other:?}"),
    }
    // getshares for no hash: no reply at all.
    h.send(&Message::GetShares {
        hashes: vec![],
        parents: 1000,
        stops: vec![],
    })
    .unwrap();
    assert!(h.wait_for("share1as", Duration::from_secs(1)).is_none());
    h.send(&Message::Ping).unwrap();
    assert!(
        !h.closed_within(Duration::from_millis(300)),
        "still connected"
    );

    // An oversize sub_version.
    let mut h = Hostile::connect(loopback(9), a.addr, framing.clone());
    h.send(&version(rand_nonce(), &"x".repeat(300))).unwrap();
    assert!(h.closed_within(closes), "oversize sub_version");

    // Anything before version.
    let mut h = Hostile::connect(loopback(10), a.addr, framing.clone());
    h.send(&Message::Ping).unwrap();
    assert!(h.closed_within(closes), "ping before version");

    // Slowloris: a version one byte at a time never completes the handshake in time.
    let mut h = Hostile::connect(loopback(11), a.addr, framing.clone());
    let frame = version(rand_nonce(), "slow").to_frame(&framing).unwrap();
    let mut slow = h.stream.try_clone().unwrap();
    let dribble = thread::spawn(move || {
        use std::io::Write;
        for b in frame {
            if slow.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    assert!(h.closed_within(closes), "slowloris");
    drop(h);
    let _ = dribble.join();

    // The honest pair never noticed.
    assert_eq!(b.peers.count(), 1);
    assert!(!a.peers.status().banned.contains(&loopback(1).into()));
    let more = mine(&mut tracker, &net, last(&shares), 3, 2);
    a.inject(more.clone());
    assert!(
        b.wait(WAIT, |s| s.best == last(&more)),
        "honest peers keep converging"
    );
}
