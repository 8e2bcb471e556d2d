//! The node loop under load and at its edges, with the real binary against bcoin on
//! regtest: a found block never waits on the node thread, a bitcoind that stalls
//! `getblockheader` does not stall shares, and shutdown keeps the miners' last shares.

mod support {
    pub mod bcoin;
    pub mod hostile;
    pub mod procs;
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use p2pool::network::Network;
use p2pool::p2p::message::Message;
use p2pool::sharechain::sample;

use support::bcoin::Bcoin;
use support::hostile::Hostile;
use support::procs::{MinerProc, NodeProc, bcoin_args, wait_until};

const ADDR: &str = "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8";

fn args(bcoin: &Bcoin, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--net".to_string(), "regtest".to_string()];
    a.extend(bcoin_args(bcoin));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The test miner on `node`'s Stratum port at `hashrate` hashes a second.
fn stratum_miner(node: &NodeProc, hashrate: u32) -> MinerProc {
    MinerProc::start(&[
        "--url".into(),
        format!("stratum+tcp://127.0.0.1:{}", node.stratum),
        "--user".into(),
        ADDR.into(),
        "--hashrate".into(),
        hashrate.to_string(),
    ])
}

/// Milliseconds since midnight of a log line's timestamp (`[2026-12-03T18:50:00.123Z …`).
fn log_millis(line: &str) -> Option<u64> {
    let t = line.split_once('T')?.1.get(..12)?;
    let (h, m, s, ms) = (
        t.get(0..2)?.parse::<u64>().ok()?,
        t.get(3..5)?.parse::<u64>().ok()?,
        t.get(6..8)?.parse::<u64>().ok()?,
        t.get(9..12)?.parse::<u64>().ok()?,
    );
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

/// Floods `to` with fresh unconnected shares from one loopback address after another
/// (each is scored and banned in turn) until `stop`; counts the shares sent.
fn flood(to: SocketAddr, net: Network, stop: Arc<AtomicBool>, sent: Arc<AtomicUsize>) {
    let framing = net.framing();
    let mut salt = 0u32;
    for host in 10u8..=250 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = match support::hostile::connect_from(Ipv4Addr::new(127, 0, 0, host), to) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flood from 127.0.0.{host}: {e}");
                continue;
            }
        };
        let mut h = Hostile::from_stream(stream, framing.clone());
        if h.handshake().is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let shares: Vec<_> = (0..200)
                .map(|_| {
                    salt += 1;
                    sample::cheap_share1a(
                        &net,
                        Some(p2pool::bitcoin::hash::sha256d(&salt.to_le_bytes())),
                        salt,
                    )
                })
                .collect();
            if let Err(e) = h.send(&Message::Share1as(shares)) {
                eprintln!("flood from 127.0.0.{host}: {e}");
                break;
            }
            sent.fetch_add(200, Ordering::Relaxed);
        }
    }
}

#[test]
fn blocks_found_while_peers_flood_the_node_thread_reach_bitcoind_within_a_second() {
    let (bcoin, _guard) = Bcoin::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start("node", dir.path(), &args(bcoin, &["-a", ADDR]));
    assert!(node.wait_http(Duration::from_secs(60)), "{}", node.dump());
    let net = Network::built_in("regtest").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let to: SocketAddr = ([127, 0, 0, 1], node.p2p).into();
        thread::spawn(move || flood(to, net, stop, sent))
    };
    let start_height = bcoin.height();
    let miner = stratum_miner(&node, 2000);
    let found = |n: &NodeProc| {
        n.log()
            .iter()
            .filter(|l| l.contains("block found by"))
            .count()
    };
    // Ten seconds of flood at least, and five blocks found under it.
    let flood_start = std::time::Instant::now();
    let enough = wait_until(Duration::from_secs(90), || {
        found(&node) >= 5 && flood_start.elapsed() >= Duration::from_secs(10)
    });
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    drop(miner);
    assert!(enough, "no blocks found under the flood:\n{}", node.dump());
    assert!(
        sent.load(Ordering::Relaxed) >= 1_000,
        "the flood sent only {} shares",
        sent.load(Ordering::Relaxed)
    );
    // Every block found went to bitcoind within a second of being found, whatever the
    // node thread was doing.
    thread::sleep(Duration::from_secs(2));
    let log = node.log();
    let mut checked = 0;
    for line in log.iter().filter(|l| l.contains("block found by")) {
        let hash = line.rsplit(' ').next().unwrap().to_string();
        let found_at = log_millis(line).expect("timestamped log line");
        let submitted = log
            .iter()
            .find(|l| l.contains(&format!("submitting block {hash}")))
            .unwrap_or_else(|| panic!("block {hash} never submitted:\n{}", node.dump()));
        let at = log_millis(submitted).unwrap();
        assert!(
            at.saturating_sub(found_at) < 1_000,
            "block {hash} reached bitcoind {} ms after it was found",
            at - found_at
        );
        checked += 1;
    }
    assert!(checked >= 5);
    assert!(
        bcoin.height() > start_height,
        "bitcoind's height did not move"
    );
}

/// A JSON-RPC proxy to bcoin that never answers `getblockheader` (the connection is held
/// open): every other call is passed through. Returns the port and the count of
/// `getblockheader` calls held.
fn stalling_proxy(rpc_port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(AtomicUsize::new(0));
    let counter = held.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = counter.clone();
            thread::spawn(move || {
                let mut stream = stream;
                while let Some(request) = read_http(&mut stream) {
                    if String::from_utf8_lossy(&request).contains("\"getblockheader\"") {
                        counter.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_secs(600));
                        return;
                    }
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", rpc_port)) else {
                        return;
                    };
                    if up.write_all(&request).is_err() {
                        return;
                    }
                    let Some(answer) = read_http(&mut up) else {
                        return;
                    };
                    if stream.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, held)
}

/// One HTTP message (head and a Content-Length body), as raw bytes.
fn read_http(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut raw = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    raw.extend_from_slice(&body);
    Some(raw)
}

fn shares_of(node: &NodeProc) -> u64 {
    node.json("/api/stats")
        .and_then(|s| s["shares"]["total"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_bitcoind_that_never_answers_getblockheader_does_not_stop_shares_or_relays() {
    let (bcoin, _guard) = Bcoin::exclusive();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // B mines a while alone, so that A, joining later, meets blocks its templates never
    // named and must ask bitcoind their heights.
    let b = NodeProc::start("b", db.path(), &args(bcoin, &["-a", ADDR]));
    assert!(b.wait_http(Duration::from_secs(60)), "{}", b.dump());
    let _miner = stratum_miner(&b, 1000);
    assert!(
        wait_until(Duration::from_secs(60), || shares_of(&b) >= 10),
        "B found no shares:\n{}",
        b.dump()
    );
    let (proxy, held) = stalling_proxy(bcoin.rpc_port);
    let mut a_args = args(bcoin, &["-a", ADDR, "-n", &format!("127.0.0.1:{}", b.p2p)]);
    let at = a_args
        .iter()
        .position(|x| x == "--bitcoind-rpc-port")
        .unwrap();
    a_args[at + 1] = proxy.to_string();
    let a = NodeProc::start("a", da.path(), &a_args);
    // C hears of B's shares only through A.
    let c = NodeProc::start(
        "c",
        dc.path(),
        &args(bcoin, &["-a", ADDR, "-n", &format!("127.0.0.1:{}", a.p2p)]),
    );
    let target = shares_of(&b) + 5;
    let flowing = wait_until(Duration::from_secs(60), || {
        shares_of(&a) >= target && shares_of(&c) >= target
    });
    assert!(
        flowing,
        "shares stopped: B {}, A {}, C {}\nA:\n{}",
        shares_of(&b),
        shares_of(&a),
        shares_of(&c),
        a.dump()
    );
    assert!(
        held.load(Ordering::Relaxed) >= 1,
        "A never asked getblockheader, so this test tried nothing"
    );
}

#[test]
fn the_last_share_a_miner_found_before_sigterm_is_in_the_store_afterwards() {
    let bcoin = Bcoin::shared();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start("node", dir.path(), &args(bcoin, &["-a", ADDR]));
    assert!(node.wait_http(Duration::from_secs(60)), "{}", node.dump());
    let miner = stratum_miner(&node, 2000);
    let shares_found = |n: &NodeProc| {
        n.log()
            .iter()
            .filter(|l| l.contains("share found by") || l.contains("block found by"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || shares_found(&node) >= 3),
        "no shares found:\n{}",
        node.dump()
    );
    // SIGTERM while the miner is still finding shares.
    let (status, took, log) = node.terminate();
    drop(miner);
    assert!(status.success(), "exit {status:?}:\n{}", log.join("\n"));
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    // The node names each share its miners found (also those drained at shutdown).
    let last = log
        .iter()
        .filter_map(|l| l.split_once(" node] share ")?.1.split_once(" found by "))
        .map(|(hash, _)| hash.to_string())
        .next_back()
        .expect("a share found");
    let store = p2pool::store::Store::open(&dir.path().join("store"), "regtest").unwrap();
    let stored: Vec<String> = store
        .load_shares()
        .unwrap()
        .into_iter()
        .map(|s| s.hash.to_hex())
        .collect();
    assert!(
        stored.contains(&last),
        "the last share found, {last}, is not among the {} stored:\n{}",
        stored.len(),
        log.join("\n")
    );
}
