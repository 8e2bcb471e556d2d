//! What an operator sees running the binary by hand, without a Bitcoin node (a dead RPC
//! port): the listening ports bound to one address, a `-n` name that does not resolve
//! retried rather than fatal, and a not-ready reason that says bitcoind was never reached
//! and what to do.

mod support {
    pub mod bcoin;
    pub mod procs;
}

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::procs::{NodeProc, free_port, wait_until};

/// Liveness bound of every wait: generous, never a speed claim.
const WITHIN: Duration = Duration::from_secs(30);
/// A regtest payout address, so the node asks bitcoind for none.
const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// Regtest against an RPC port nothing listens on, the P2P link off.
fn no_bitcoind(extra: &[&str]) -> Vec<String> {
    let dead = free_port().to_string();
    let mut args: Vec<String> = [
        "--net",
        "regtest",
        "-a",
        ADDRESS,
        "--bitcoind-rpc-port",
        &dead,
        "--bitcoind-p2p-port",
        "0",
        "rpcuser",
        "rpcpassword",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
fn a_node_bound_to_loopback_answers_there_and_not_on_another_local_address() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let node = NodeProc::start_bound(
        "bound",
        &dir.path().join("data"),
        &no_bitcoind(&[]),
        ports,
        Some("127.0.0.1"),
    );
    assert!(node.wait_http(WITHIN), "{}", node.dump());
    let (worker, p2p, stratum) = ports;
    for port in [worker, p2p, stratum] {
        assert!(
            connects(SocketAddr::from(([127, 0, 0, 1], port))),
            "port {port} not open on 127.0.0.1\n{}",
            node.dump()
        );
    }
    // The summary and the start-up lines report the bound addresses.
    for line in [
        format!("listen 127.0.0.1:{p2p}"),
        format!("http://127.0.0.1:{worker}/"),
        format!("Stratum on 127.0.0.1:{stratum}"),
    ] {
        // A port opens before its start-up line is written: wait for the line.
        assert!(
            wait_until(WITHIN, || node.logged(&line)),
            "no {line:?} in the log\n{}",
            node.dump()
        );
    }
    // Another local address (all of 127/8 is loopback on Linux): nothing listens there.
    if TcpListener::bind("127.0.0.2:0").is_ok() {
        for port in [worker, p2p, stratum] {
            assert!(
                !connects(SocketAddr::from(([127, 0, 0, 2], port))),
                "port {port} also open on 127.0.0.2\n{}",
                node.dump()
            );
        }
    }
}

#[test]
fn a_peer_name_that_does_not_resolve_is_logged_and_retried_and_the_node_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(
        "dns",
        &dir.path().join("data"),
        &no_bitcoind(&["-n", "nosuchhost.invalid"]),
    );
    assert!(
        wait_until(WITHIN, || node
            .logged("-n nosuchhost.invalid: cannot resolve")),
        "no line about the name\n{}",
        node.dump()
    );
    assert!(node.logged("trying again"), "{}", node.dump());
    assert!(node.wait_http(WITHIN), "{}", node.dump());
    assert!(node.is_running(), "{}", node.dump());
}

#[test]
fn a_bitcoind_never_reached_is_reported_as_such_with_what_to_do_and_no_negative_zero() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start("unreached", &dir.path().join("data"), &no_bitcoind(&[]));
    let mut stats = serde_json::Value::Null;
    assert!(
        wait_until(WITHIN, || {
            stats = node.json("/api/stats").unwrap_or_default();
            stats["sync"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not reached bitcoind"))
        }),
        "{stats}\n{}",
        node.dump()
    );
    let reason = stats["sync"]["reason"].as_str().unwrap();
    assert!(!reason.contains("lost contact"), "{reason}");
    assert!(
        reason.contains("start bitcoind") && reason.contains("--bitcoind-rpc-port"),
        "{reason}"
    );
    assert_eq!(stats["sync"]["cause"], "bitcoind");
    assert!(
        node.logged("not serving miners: p2pool has not reached bitcoind"),
        "{}",
        node.dump()
    );
    assert!(!node.logged("lost contact"), "{}", node.dump());
    let (_, raw) = node.get("/api/stats").unwrap();
    assert!(raw.contains("\"local_hashrate\":0.0"), "{raw}");
    assert!(!raw.contains(":-0"), "{raw}");
    // /health says the same, for monitors.
    let (status, health) = node.get("/health").unwrap();
    assert_eq!(status, 503);
    assert!(health.contains("not reached bitcoind"), "{health}");
}
