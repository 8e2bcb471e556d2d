//! The RPC client against a real bcoin regtest node, and against a tiny fake server only for
//! the faults a real node does not show (warm-up, a rewritten cookie, an oversize answer).

mod support {
    pub mod bcoin;
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoind::rpc::{Auth, Client, RpcError};
use serde_json::{Value, json};
use support::bcoin::{Bcoin, SEGWIT_HEIGHT};

fn rules(template: &Value) -> Vec<String> {
    template["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("template without rules: {template}"))
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect()
}

fn has_segwit(template: &Value) -> bool {
    rules(template)
        .iter()
        .any(|r| r.trim_start_matches('!') == "segwit")
}

#[test]
fn blockchain_info_names_the_regtest_chain() {
    let node = Bcoin::shared();
    let rpc = node.rpc();
    let info = rpc.get_blockchain_info().unwrap();
    assert_eq!(info.chain, "regtest");
    assert!(info.blocks >= SEGWIT_HEIGHT, "{info:?}");
    let network = rpc.get_network_info().unwrap();
    assert!(network.subversion.contains("bcoin"), "{network:?}");
}

#[test]
fn tip_header_matches_the_best_block_hash() {
    let rpc = Bcoin::shared().rpc();
    let best = rpc.get_best_block_hash().unwrap();
    let header = rpc.get_block_header(&best).unwrap();
    assert_eq!(header.hash, best);
    assert!(header.height >= SEGWIT_HEIGHT, "{header:?}");
    assert!(rpc.get_block_count().unwrap() >= header.height);
    let parent = header.previous_block_hash.expect("the tip has a parent");
    assert_eq!(
        rpc.get_block_header(&parent).unwrap().height,
        header.height - 1
    );
}

#[test]
fn templates_name_segwit_from_height_432_with_a_witness_commitment() {
    let node = Bcoin::start();
    let rpc = node.rpc();
    let template = rpc.get_block_template().unwrap();
    assert_eq!(template["height"], 1);
    assert!(!has_segwit(&template), "{:?}", rules(&template));

    node.mine_to_height(SEGWIT_HEIGHT - 2);
    let before = rpc.get_block_template().unwrap();
    assert_eq!(before["height"], SEGWIT_HEIGHT - 1);
    assert!(!has_segwit(&before), "{:?}", rules(&before));

    node.mine(1);
    let after = rpc.get_block_template().unwrap();
    assert_eq!(after["height"], SEGWIT_HEIGHT);
    assert!(has_segwit(&after), "{:?}", rules(&after));
    let commitment = after["default_witness_commitment"].as_str().unwrap();
    assert!(commitment.starts_with("6a24aa21a9ed"), "{commitment}");
    assert_eq!(after["weightlimit"], 4_000_000);
}

#[test]
fn long_poll_times_out_on_a_still_tip_and_returns_on_a_new_block() {
    let node = Bcoin::start();
    let rpc = node.rpc();
    let template = rpc.get_block_template().unwrap();
    let longpollid = template["longpollid"].as_str().unwrap().to_string();

    let err = rpc
        .wait_block_template(&longpollid, Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout(..)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("getblocktemplate"), "{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{}", node.rpc_port)),
        "{shown}"
    );

    let mined = std::thread::scope(|s| {
        let miner = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            node.mine(1)
        });
        let fresh = rpc
            .wait_block_template(&longpollid, Duration::from_secs(60))
            .unwrap();
        let mined = miner.join().unwrap();
        assert_eq!(fresh["previousblockhash"], mined[0].as_str());
        mined
    });
    assert_eq!(mined.len(), 1);
}

#[test]
fn wrong_password_is_an_auth_error_that_never_shows_the_password() {
    let node = Bcoin::shared();
    let rpc = Client::new(
        "127.0.0.1",
        node.rpc_port,
        Auth::user_pass("p2pool", "not-the-api-key-7f3a"),
    );
    let err = rpc.get_block_count().unwrap_err();
    assert!(matches!(err, RpcError::AuthFailed { .. }), "{err}");
    let shown = format!("{err} {err:?} {rpc:?}");
    assert!(shown.contains("rpc user and password"), "{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{}", node.rpc_port)),
        "{shown}"
    );
    assert!(!shown.contains("not-the-api-key-7f3a"), "{shown}");
}

#[test]
fn right_password_with_any_user_authenticates() {
    let node = Bcoin::shared();
    let rpc = Client::new(
        "127.0.0.1",
        node.rpc_port,
        Auth::user_pass("anyone", node.password()),
    );
    assert!(rpc.get_block_count().unwrap() >= SEGWIT_HEIGHT);
}

#[test]
fn cookie_found_from_the_datadir_authenticates() {
    let node = Bcoin::shared();
    let auth = Auth::cookie_in_datadir(&node.datadir, &ChainParams::regtest());
    assert_eq!(auth, Auth::Cookie(node.cookie.clone()));
    let rpc = Client::new("127.0.0.1", node.rpc_port, auth);
    assert!(rpc.get_block_count().unwrap() >= SEGWIT_HEIGHT);
}

#[test]
fn wrong_cookie_is_an_auth_error_naming_the_cookie_file() {
    let node = Bcoin::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cookie");
    std::fs::write(&path, "__cookie__:0badc0de0badc0de").unwrap();
    let rpc = Client::new("127.0.0.1", node.rpc_port, Auth::Cookie(path.clone()));
    let err = rpc.get_block_count().unwrap_err();
    assert!(matches!(err, RpcError::AuthFailed { .. }), "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    assert!(!shown.contains("0badc0de"), "{shown}");
}

#[test]
fn closed_port_is_connection_refused_naming_host_and_port() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"));
    let err = rpc.get_blockchain_info().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionRefused { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("rpc connection refused at 127.0.0.1:{port}")
    );
}

#[test]
fn unknown_method_is_method_missing() {
    let rpc = Bcoin::shared().rpc();
    let err = rpc.call("getnothinguseful", json!([])).unwrap_err();
    assert!(matches!(err, RpcError::MethodNotFound(_)), "{err}");
    assert_eq!(err.code(), Some(-32601));
    let shown = err.to_string();
    assert!(
        shown.contains("getnothinguseful") && shown.contains("-32601"),
        "{shown}"
    );
}

#[test]
fn submitting_garbage_is_an_rpc_error_with_bcoins_reason() {
    let rpc = Bcoin::shared().rpc();
    let err = rpc.submit_block("00").unwrap_err();
    assert_eq!(err.code(), Some(-22), "{err}");
    assert!(err.to_string().contains("submitblock"), "{err}");
    let err = rpc.submit_block("not hex").unwrap_err();
    assert!(matches!(err, RpcError::Rpc { .. }), "{err}");
}

#[test]
fn resubmitting_the_tip_is_answered_duplicate() {
    let rpc = Bcoin::shared().rpc();
    let best = rpc.get_best_block_hash().unwrap();
    let block: String = rpc
        .call_as("getblock", json!([best.to_hex(), false]))
        .unwrap();
    let answer = rpc.submit_block(&block).unwrap();
    assert_eq!(answer.as_deref(), Some("rejected: duplicate"));
}

// ---- a fake server, for the faults a real node does not show ----

/// One HTTP request as the fake server saw it.
struct Seen {
    authorization: String,
    body: Value,
}

/// Serves each connection with `answer`, which returns the whole HTTP response bytes.
fn fake_server<F>(answer: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(usize, Seen, &mut TcpStream) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            answer(n, request, &mut stream);
        }
    });
    (port, count)
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = value.trim().to_string(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        authorization,
        body: serde_json::from_slice(&body).ok()?,
    })
}

fn respond(stream: &mut TcpStream, status: &str, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn warming_up(id: &Value) -> Value {
    json!({"result": null, "error": {"code": -28, "message": "Loading block index…"}, "id": id})
}

#[test]
fn warming_up_node_is_retried_until_it_answers() {
    let (port, count) = fake_server(|n, seen, stream| {
        let id = &seen.body["id"];
        let body = match n {
            0 | 1 => warming_up(id),
            _ => json!({"result": 7, "error": null, "id": id}),
        };
        respond(stream, "200 OK", &body);
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"));
    assert_eq!(rpc.get_block_count().unwrap(), 7);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn warming_up_past_the_bounded_wait_is_an_error() {
    let (port, count) = fake_server(|_, seen, stream| {
        // Bitcoin Core answers a JSON-RPC 2.0 request with 200 and only an error.
        let body = json!({"jsonrpc": "2.0", "error": {"code": -28, "message": "Loading block index…"}, "id": seen.body["id"]});
        respond(stream, "200 OK", &body);
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"))
        .with_warmup_wait(Duration::from_secs(1));
    let start = Instant::now();
    let err = rpc.get_blockchain_info().unwrap_err();
    assert!(matches!(err, RpcError::WarmingUp { .. }), "{err}");
    assert_eq!(err.code(), Some(-28));
    assert!(err.to_string().contains("Loading block index"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "bounded wait");
    assert!(count.load(Ordering::SeqCst) >= 2, "retried at least once");
}

#[test]
fn rewritten_cookie_is_read_again_after_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cookie");
    std::fs::write(&path, "__cookie__:first").unwrap();
    // "__cookie__:first" and "__cookie__:second" in base64.
    let accepted = Arc::new(std::sync::Mutex::new("Basic X19jb29raWVfXzpmaXJzdA=="));
    let server_accepts = accepted.clone();
    let (port, count) = fake_server(move |_, seen, stream| {
        if seen.authorization == *server_accepts.lock().unwrap() {
            let body = json!({"result": 1, "error": null, "id": seen.body["id"]});
            respond(stream, "200 OK", &body);
        } else {
            let head =
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
        }
    });
    let rpc = Client::new("127.0.0.1", port, Auth::Cookie(path.clone()));
    assert_eq!(rpc.get_block_count().unwrap(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // bitcoind restarts: a new cookie on disk, the old one refused.
    std::fs::write(&path, "__cookie__:second").unwrap();
    *accepted.lock().unwrap() = "Basic X19jb29raWVfXzpzZWNvbmQ=";
    assert_eq!(rpc.get_block_count().unwrap(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 3, "one 401, then the retry");

    // A cookie the server refuses even when fresh is an auth error naming the file.
    *accepted.lock().unwrap() = "Basic nothing-matches";
    let err = rpc.get_block_count().unwrap_err();
    assert!(matches!(err, RpcError::AuthFailed { .. }), "{err}");
    assert!(err.to_string().contains(".cookie"), "{err}");
}

#[test]
fn oversize_answer_is_refused_without_reading_it_all() {
    let (port, _) = fake_server(|_, _, stream| {
        // Claims 64 MiB and sends until the client hangs up.
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{\"result\":\"";
        let _ = stream.write_all(head.as_bytes());
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"));
    let err = rpc.get_block_template().unwrap_err();
    assert!(matches!(err, RpcError::BodyTooLarge(..)), "{err}");
    assert!(err.to_string().contains("getblocktemplate"), "{err}");
}

#[test]
fn truncated_answer_is_a_clear_error_not_a_panic() {
    // Claims more bytes than it sends, then hangs up: the body ends early.
    let (port, _) = fake_server(|_, _, stream| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"result\":7,";
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"))
        .with_timeout(Duration::from_secs(10));
    let start = Instant::now();
    let err = rpc.get_block_count().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "no hang: {err}");
    assert!(matches!(err, RpcError::Transport(..)), "{err:?}");
    let shown = err.to_string();
    let prefix = format!("rpc getblockcount at 127.0.0.1:{port} failed: ");
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(shown.len() > prefix.len(), "a reason follows: {shown}");

    // An honest Content-Length over JSON cut in the middle.
    let (port, _) = fake_server(|_, _, stream| {
        let body = "{\"result\":{\"chain\":\"regtest\",\"blo";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"))
        .with_timeout(Duration::from_secs(10));
    let err = rpc.get_blockchain_info().unwrap_err();
    assert!(matches!(err, RpcError::BadJson(..)), "{err:?}");
    let shown = err.to_string();
    let prefix = format!("rpc getblockchaininfo at 127.0.0.1:{port}: bad json answer: ");
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(shown.contains("EOF"), "serde names the early end: {shown}");
}

#[test]
fn slow_server_hits_the_timeout_with_an_error_naming_it() {
    let (port, count) = fake_server(|_, _, stream| {
        // Reads the request, then never answers: waits for the client to hang up (or 20 s).
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = stream.read(&mut [0; 1]);
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"))
        .with_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let err = rpc.get_block_count().unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(took >= Duration::from_millis(900), "took {took:?}: {err}");
    assert!(
        matches!(err, RpcError::Timeout(_, after) if after == Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("rpc getblockcount at 127.0.0.1:{port} timed out after 1 s")
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "the request was read");

    // The per-call timeout of a long poll works the same way.
    let err = rpc
        .call_with_timeout::<Value>("getblocktemplate", json!([]), Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout(..)), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("timed out after 0.5 s") && shown.contains(&format!("127.0.0.1:{port}")),
        "{shown}"
    );
}
