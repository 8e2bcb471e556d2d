//! Miners on the worker side, end to end with real parts: the test miner on getwork (with
//! long polling) and on Stratum against a small node loop (`support::worker_node`) with a
//! real bcoin regtest node, blocks accepted by bcoin paying every miner in the window by
//! PPLNS, long polls answered on new shares and blocks, and hostile miners answered or
//! dropped while honest ones keep mining.

mod support {
    pub mod bcoin;
    pub mod logs;
    pub mod miner_clients;
    pub mod worker_node;
}

use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use p2pool::bitcoin::address;
use p2pool::bitcoin::block::Block;
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::encode::Decode;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::script;
use p2pool::bitcoind::submit::Outcome;
use p2pool::sharechain::gentx::{self, GentxRequest};
use p2pool::worker::Readiness;
use p2pool::worker::getwork::swap4;
use p2pool::worker::miners::difficulty_to_target;
use p2pool::worker::stratum::VERSION_MASK;
use ruint::aliases::U256;
use serde_json::{Value, json};
use support::bcoin::{self, Bcoin};
use support::logs;
use support::miner_clients::{LineClient, TestMiner, http_raw, rpc, rpc_request};
use support::worker_node::{Source, WorkerNode, easy_net, static_template};

/// Liveness bound of every wait: generous, never a speed claim.
const WITHIN: Duration = Duration::from_secs(20);
/// Hashes per second per test-miner thread: enough for a share every fraction of a
/// second on the easy network, without starving bcoin of CPU.
const HASHRATE: &str = "1500000";

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        thread::sleep(Duration::from_millis(25));
    }
}

fn payout(n: u8) -> Vec<u8> {
    script::p2pkh(&[n; 20])
}

fn addr(n: u8) -> String {
    address::from_script(&payout(n), &bcoin::chain()).unwrap()
}

/// A node on static templates whose block target (0x1d00ffff) no share meets.
fn static_node() -> WorkerNode {
    let node = WorkerNode::start(easy_net(bcoin::chain()), Source::Static, |_| {});
    push_template(&node, 1);
    node
}

fn push_template(node: &WorkerNode, n: u8) -> Hash256 {
    let previous = sha256d(&[n]);
    let t = Arc::new(static_template(previous, 1000 + u32::from(n), 0x1d00ffff));
    node.templates.as_ref().unwrap().send(t).unwrap();
    wait_for("work on the pushed template", || {
        node.view()
            .last_work
            .as_ref()
            .filter(|w| w.previous_block() == previous)
            .map(|_| ())
    });
    previous
}

fn auth_header(user: &str) -> String {
    p2pool::worker::http::base64_encode(format!("{user}:x").as_bytes())
}

fn long_poll_request(user: &str) -> Vec<u8> {
    format!(
        "POST /long-polling HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\n\
         User-Agent: cpuminer/2.5.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        auth_header(user)
    )
    .into_bytes()
}

/// Grinds a getwork unit until the header meets its target; the submitted data.
fn grind_getwork(result: &Value) -> String {
    grind_getwork_from(result, 0).0
}

/// [`grind_getwork`] from nonce `start`; the submitted data and the nonce found.
fn grind_getwork_from(result: &Value, start: u32) -> (String, u32) {
    let mut data = hex::decode(result["data"].as_str().unwrap()).unwrap();
    let mut t = [0u8; 32];
    t.copy_from_slice(&hex::decode(result["target"].as_str().unwrap()).unwrap());
    let target = U256::from_le_bytes(t);
    swap4(&mut data);
    let mut header = [0u8; 80];
    header.copy_from_slice(&data[..80]);
    let mut found = start;
    for nonce in start.. {
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        if sha256d(&header).to_u256() <= target {
            found = nonce;
            break;
        }
    }
    data[..80].copy_from_slice(&header);
    swap4(&mut data);
    (hex::encode(data), found)
}

/// Grinds a Stratum job: (extranonce2 hex, ntime hex, nonce hex).
fn grind_stratum(notify: &Value, en1: &[u8], en2: [u8; 4], difficulty: f64) -> Vec<String> {
    grind_stratum_rolled(notify, en1, en2, difficulty, None)
}

/// Grinds a Stratum job with `rolled` version bits (BIP310) in place of the job's under
/// the mask: (extranonce2, ntime, nonce[, version bits]) in hex.
fn grind_stratum_rolled(
    notify: &Value,
    en1: &[u8],
    en2: [u8; 4],
    difficulty: f64,
    rolled: Option<u32>,
) -> Vec<String> {
    let p = &notify["params"];
    let h = |i: usize| hex::decode(p[i].as_str().unwrap()).unwrap();
    let mut coinbase = h(2);
    coinbase.extend_from_slice(en1);
    coinbase.extend_from_slice(&en2);
    coinbase.extend_from_slice(&h(3));
    let mut root = sha256d(&coinbase).0;
    for step in p[4].as_array().unwrap() {
        let mut pair = root.to_vec();
        pair.extend_from_slice(&hex::decode(step.as_str().unwrap()).unwrap());
        root = sha256d(&pair).0;
    }
    let word = |i: usize| u32::from_str_radix(p[i].as_str().unwrap(), 16).unwrap();
    let mut prev = h(1);
    swap4(&mut prev);
    let mut header = [0u8; 80];
    let mask = p2pool::worker::stratum::VERSION_MASK;
    let version = rolled.map_or(word(5), |bits| (word(5) & !mask) | bits);
    header[0..4].copy_from_slice(&version.to_le_bytes());
    header[4..36].copy_from_slice(&prev);
    header[36..68].copy_from_slice(&root);
    header[68..72].copy_from_slice(&word(7).to_le_bytes());
    header[72..76].copy_from_slice(&word(6).to_le_bytes());
    let target = difficulty_to_target(difficulty);
    let mut nonce = 0u32;
    loop {
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        if sha256d(&header).to_u256() <= target {
            break;
        }
        nonce += 1;
    }
    let mut fields = vec![
        hex::encode(en2),
        p[7].as_str().unwrap().to_string(),
        format!("{nonce:08x}"),
    ];
    fields.extend(rolled.map(|bits| format!("{bits:08x}")));
    fields
}

/// Subscribes and authorizes; returns (extranonce1, difficulty, first notify).
fn stratum_login(c: &mut LineClient, user: &str) -> (Vec<u8>, f64, Value) {
    c.send(json!({"id": 1, "method": "mining.subscribe", "params": ["test/1"]}));
    let sub = c.reply(&json!(1)).expect("subscribe answered");
    let en1 = hex::decode(sub["result"][1].as_str().unwrap()).unwrap();
    assert_eq!(sub["result"][2], json!(4));
    c.send(json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]}));
    let mut difficulty = None;
    let mut authorized = false;
    loop {
        let v = c.read().expect("authorize answered and a job sent");
        if v["id"] == json!(2) && v.get("method").is_none() {
            assert_eq!(v["result"], json!(true), "{v}");
            authorized = true;
        } else if v["method"] == "mining.set_difficulty" {
            difficulty = v["params"][0].as_f64();
        } else if v["method"] == "mining.notify" {
            assert!(authorized);
            let d = difficulty.expect("set_difficulty comes before notify");
            return (en1, d, v);
        }
    }
}

#[test]
fn getwork_miner_with_long_polling_finds_shares_and_blocks_that_bcoin_accepts() {
    logs::init();
    let (bitcoind, _still) = Bcoin::exclusive();
    let node = WorkerNode::start(
        easy_net(bcoin::chain()),
        Source::Bitcoind(Box::new(bitcoind.rpc())),
        |_| {},
    );
    wait_for("first work", || node.view().last_work.as_ref().map(|_| ()));
    let url = node.getwork_url();
    let user = addr(1);
    let mut miner = TestMiner::start(&[
        "--url",
        &url,
        "--user",
        &user,
        "--protocol",
        "getwork",
        "--shares",
        "3",
        "--hashrate",
        HASHRATE,
        "--chunked",
        "--duration",
        "60",
    ]);
    miner.wait_for("accepted", 3, Duration::from_secs(60));
    // Every share on regtest is a block: new work reached the miner through long polling.
    miner.wait_for("work longpoll", 1, WITHIN);
    assert!(miner.wait_exit(WITHIN), "{}", miner.output());
    let accepted = wait_for("a block accepted by bcoin", || {
        let v = node.view();
        v.results
            .iter()
            .find(|r| r.outcome == Outcome::Accepted)
            .cloned()
    });
    let block = Block::from_bytes(&bitcoind.block_at(accepted.height)).unwrap();
    assert_eq!(block.hash(), accepted.hash);
    assert!(wait_until_verified(&node), "no share of the chain verified");
    let stats = node.workers.stats();
    let mine = stats
        .iter()
        .find(|s| s.address == user)
        .expect("miner stats");
    // Each accepted solution is a share unless the node had not moved on from the best
    // share the previous one was built on (a sibling of our own share is not made).
    assert!(
        mine.accepted >= 3 && mine.shares >= 1 && mine.shares <= mine.accepted,
        "{mine:?}"
    );
    assert!(mine.hashrate > 0.0 && mine.last_seen > 0, "{mine:?}");
}

#[test]
fn stratum_miners_on_two_addresses_are_both_paid_by_pplns_in_blocks_bcoin_accepts() {
    logs::init();
    let (bitcoind, _still) = Bcoin::exclusive();
    let net = easy_net(bcoin::chain());
    let node = WorkerNode::start(
        net.clone(),
        Source::Bitcoind(Box::new(bitcoind.rpc())),
        |_| {},
    );
    wait_for("first work", || node.view().last_work.as_ref().map(|_| ()));
    let url = node.stratum_url();
    let (a, b) = (addr(2), addr(3));
    let miner_a = TestMiner::start(&[
        "--url",
        &url,
        "--user",
        &a,
        "--hashrate",
        HASHRATE,
        "--version-rolling",
    ]);
    let miner_b = TestMiner::start(&[
        "--url",
        &url,
        "--user",
        &format!("{b}.rig"),
        "--hashrate",
        HASHRATE,
    ]);
    miner_a.wait_for("accepted", 2, Duration::from_secs(60));
    miner_b.wait_for("accepted", 2, Duration::from_secs(60));
    let already = node.view().results.len();
    // A block after both have shares in the window.
    let result = wait_for("a later block accepted by bcoin", || {
        let v = node.view();
        v.results[already..]
            .iter()
            .find(|r| r.outcome == Outcome::Accepted)
            .cloned()
    });
    drop((miner_a, miner_b));
    let block = Block::from_bytes(&bitcoind.block_at(result.height)).unwrap();
    assert_eq!(block.hash(), result.hash);
    let share = wait_for("the block's share in the chain", || {
        let v = node.view();
        v.shares
            .iter()
            .filter_map(|h| v.tracked.get(h))
            .find(|s| s.pow_hash == result.hash)
            .cloned()
    });
    let expected = {
        let net = net.clone();
        node.inspect(move |core| {
            gentx::generate_transaction(
                core.chain().tracker(),
                &net,
                &GentxRequest {
                    previous_share_hash: share.previous_hash(),
                    new_script: &share.info.new_script,
                    subsidy: share.info.subsidy,
                    nonce: &share.info.share_data.nonce,
                    block_bits: share.header.bits,
                    modern: share.info.modern,
                },
            )
            .unwrap()
        })
    };
    let coinbase = &block.txs[0];
    assert_eq!(coinbase.outputs, expected.tx.outputs);
    let paid: Vec<&Vec<u8>> = coinbase.outputs.iter().map(|o| &o.script_pubkey).collect();
    assert!(paid.contains(&&payout(2)), "A is paid");
    assert!(paid.contains(&&payout(3)), "B is paid");
    let stats = node.workers.stats();
    assert!(stats.iter().any(|s| s.address == b && s.worker == "rig"));
}

#[test]
fn long_polls_are_answered_on_a_new_share_and_on_a_new_block() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let user = addr(4);
    // The first getwork gives the client the current work, so its long poll waits.
    let first = rpc(worker, &user, r#"{"method":"getwork","params":[],"id":1}"#).json();
    let solution = grind_getwork(&first["result"]);

    let poll = {
        let request = long_poll_request(&user);
        thread::spawn(move || http_raw(worker, &request, Duration::from_secs(30)))
    };
    wait_for("the long poll parked", || {
        (node.workers.parked_long_polls() == 1).then_some(())
    });
    // A new share becomes the best share: the long poll is answered at once.
    let sent = Instant::now();
    let submit = format!(r#"{{"method":"getwork","params":["{solution}"],"id":2}}"#);
    let answer = rpc(worker, &user, &submit);
    assert_eq!(answer.json()["result"], json!(true), "{:?}", answer);
    let polled = poll.join().unwrap().expect("long poll answered");
    assert!(sent.elapsed() < WITHIN);
    let body = polled.json();
    assert_eq!(body["id"], json!(0));
    assert_ne!(body["result"]["data"], first["result"]["data"]);
    assert_eq!(polled.header("X-Long-Polling"), Some("/long-polling"));
    assert!(node.view().shares.len() == 1);

    // A new block: answered too, with work on it.
    let poll = {
        let request = long_poll_request(&user);
        thread::spawn(move || http_raw(worker, &request, Duration::from_secs(30)))
    };
    wait_for("the long poll parked again", || {
        (node.workers.parked_long_polls() == 1).then_some(())
    });
    let previous = push_template(&node, 2);
    let polled = poll.join().unwrap().expect("long poll answered");
    let mut data = hex::decode(polled.json()["result"]["data"].as_str().unwrap()).unwrap();
    swap4(&mut data);
    assert_eq!(&data[4..36], &previous.0);
}

#[test]
fn getwork_answers_r_headers_errors_readiness_duplicates_and_stale_work() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let user = addr(5);
    let work = rpc(worker, &user, r#"{"method":"getwork","params":[],"id":7}"#);
    assert_eq!(work.status, 200);
    assert_eq!(work.header("X-Long-Polling"), Some("/long-polling"));
    assert_eq!(work.header("X-Roll-NTime"), Some("expire=60"));
    assert_eq!(
        work.header("X-Stratum"),
        Some(
            format!(
                "stratum+tcp://127.0.0.1:{}",
                node.workers.stratum_addr().port()
            )
            .as_str()
        )
    );
    let body = work.json();
    assert_eq!(body["id"], json!(7));
    assert_eq!(body["result"]["data"].as_str().unwrap().len(), 256);
    assert_eq!(body["result"]["hash1"].as_str().unwrap().len(), 128);
    assert_eq!(body["result"]["midstate"].as_str().unwrap().len(), 64);

    // getblocktemplate: an error without a numeric code, so CPU miners fall back.
    let gbt = rpc(
        worker,
        &user,
        r#"{"method":"getblocktemplate","params":[],"id":1}"#,
    )
    .json();
    assert!(gbt["error"].get("code").is_none(), "{gbt}");
    let unknown = rpc(worker, &user, r#"{"method":"getinfo","params":[],"id":1}"#).json();
    assert_eq!(unknown["error"]["code"], json!(-32601));
    let malformed = rpc(worker, &user, r#"{"method":"getwork","params":["#).json();
    assert_eq!(malformed["error"]["code"], json!(-32600));
    let bad_address = rpc(worker, "1NotAnAddress", r#"{"method":"getwork","id":1}"#).json();
    assert!(
        bad_address["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address"),
        "{bad_address}"
    );
    let unknown_work = rpc(
        worker,
        &user,
        &format!(
            r#"{{"method":"getwork","params":["{}"],"id":1}}"#,
            "00".repeat(128)
        ),
    );
    assert_eq!(unknown_work.json()["result"], json!(false));
    assert_eq!(unknown_work.header("X-Reject-Reason"), Some("unknown-work"));

    // Oversize body: refused, and the server still serves.
    let big = vec![b'x'; 200_000];
    let mut request = rpc_request("/", &user, "", "");
    request.truncate(request.len() - 4);
    let head = String::from_utf8(request).unwrap().replace(
        "Content-Length: 0",
        &format!("Content-Length: {}", big.len()),
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&big);
    let answer = http_raw(worker, &bytes, Duration::from_secs(10)).expect("answered");
    assert_eq!(answer.status, 413);

    // Chunked with Content-Length and Expect: chunked wins.
    let payload = r#"{"method":"getwork","params":[],"id":9}"#;
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Length: 3\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n\
         {:x}\r\n{payload}\r\n0\r\n\r\n",
        auth_header(&user),
        payload.len()
    );
    let answer = http_raw(worker, chunked.as_bytes(), Duration::from_secs(10)).unwrap();
    assert_eq!(answer.json()["id"], json!(9));

    // A solution: true once, then a duplicate.
    let unit = rpc(worker, &user, r#"{"method":"getwork","params":[],"id":1}"#).json();
    let solution = grind_getwork(&unit["result"]);
    let submit = format!(r#"{{"method":"getwork","params":["{solution}"],"id":1}}"#);
    assert_eq!(rpc(worker, &user, &submit).json()["result"], json!(true));
    let again = rpc(worker, &user, &submit);
    assert_eq!(again.json()["result"], json!(false));
    assert_eq!(again.header("X-Reject-Reason"), Some("duplicate"));

    // Stale: a solution on work from before a new block.
    let unit = rpc(worker, &user, r#"{"method":"getwork","params":[],"id":1}"#).json();
    let solution = grind_getwork(&unit["result"]);
    push_template(&node, 3);
    let stale = rpc(
        worker,
        &user,
        &format!(r#"{{"method":"getwork","params":["{solution}"],"id":1}}"#),
    );
    assert_eq!(stale.json()["result"], json!(false));
    assert_eq!(stale.header("X-Reject-Reason"), Some("stale"));

    // Not ready: R's -12345 errors; Stratum refuses to authorize.
    node.set_readiness(Readiness::NoPeers);
    let refused = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
    assert_eq!(refused["error"]["code"], json!(-12345));
    assert_eq!(
        refused["error"]["message"],
        json!("p2pool is not connected to any peers")
    );
    let mut c = LineClient::connect(node.workers.stratum_addr());
    c.send(json!({"id": 1, "method": "mining.subscribe", "params": []}));
    c.reply(&json!(1)).unwrap();
    c.send(json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]}));
    assert_eq!(c.reply(&json!(2)).unwrap()["result"], json!(false));
    node.set_readiness(Readiness::Ready);
    let stats = node.workers.stats();
    let s = stats.iter().find(|s| s.address == user).unwrap();
    assert!(s.accepted >= 1 && s.stale >= 1 && s.rejected >= 1, "{s:?}");
}

#[test]
fn stratum_hostile_miners_are_answered_or_dropped_while_an_honest_miner_keeps_mining() {
    logs::init();
    let node = static_node();
    let stratum = node.workers.stratum_addr();
    // Slow enough that its shares rarely make this test's own jobs stale.
    let honest = TestMiner::start(&[
        "--url",
        &node.stratum_url(),
        "--user",
        &addr(6),
        "--hashrate",
        "100000",
    ]);
    honest.wait_for("accepted", 1, Duration::from_secs(30));

    // A TLS ClientHello first: closed at once.
    let mut tls = LineClient::connect(stratum);
    tls.send_raw(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    assert!(tls.closed(), "a TLS hello closes the connection");
    // A line over the cap: closed.
    let mut long = LineClient::connect(stratum);
    long.send_raw(format!("{{\"id\":1,\"method\":\"{}", "x".repeat(40_000)).as_bytes());
    assert!(long.closed(), "an oversize line closes the connection");

    let mut c = LineClient::connect(stratum);
    c.send_raw(b"{this is not json\n");
    assert_eq!(c.read().unwrap()["error"][0], json!(20));
    // A request in an array (which a struct parse would take): not an object, refused.
    c.send_raw(b"[4, \"mining.ping\", []]\n");
    assert_eq!(c.read().unwrap()["error"][0], json!(20));
    // A line that arrives in pieces is answered once whole.
    c.send_raw(b"{\"id\": 4, \"meth");
    thread::sleep(Duration::from_millis(50));
    c.send_raw(b"od\": \"mining.");
    thread::sleep(Duration::from_millis(50));
    c.send_raw(b"ping\", \"params\": []}\n");
    assert_eq!(c.reply(&json!(4)).unwrap()["result"], json!("pong"));
    // Fields the server does not read, however nested, are skipped.
    c.send_raw(
        b"{\"id\": 4, \"method\": \"mining.ping\", \"params\": [], \"x\": {\"y\": [[{}]]}}\n",
    );
    assert_eq!(c.reply(&json!(4)).unwrap()["result"], json!("pong"));
    c.send(json!({"id": 5, "method": "mining.frobnicate", "params": []}));
    assert_eq!(c.reply(&json!(5)).unwrap()["error"][0], json!(20));
    c.send(json!({"id": 6, "method": "mining.submit", "params": ["a", "1", "00000000", "00000000", "00000000"]}));
    assert_eq!(c.reply(&json!(6)).unwrap()["error"][0], json!(24));
    c.send(json!({"id": 7, "method": "mining.configure",
        "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]}));
    assert_eq!(
        c.reply(&json!(7)).unwrap()["result"]["version-rolling.mask"],
        json!("1fffe000")
    );
    c.send(json!({"id": 8, "method": "mining.authorize", "params": ["bogus-address", "x"]}));
    assert_eq!(c.reply(&json!(8)).unwrap()["result"], json!(false));
    // A share floor no solution meets: this miner's own solutions never change the best
    // share, so only the honest miner's shares clean its jobs.
    let user = format!("{}/1000000", addr(7));
    let (en1, difficulty, notify) = stratum_login(&mut c, &user);
    let job = notify["params"][0].as_str().unwrap().to_string();
    c.send(json!({"id": 3, "method": "mining.extranonce.subscribe", "params": []}));
    assert_eq!(c.reply(&json!(3)).unwrap()["result"], json!(true));

    // Wrong job id, bad extranonce2 length.
    c.send(json!({"id": 9, "method": "mining.submit", "params": [user, "nope", "00000000", "00000000", "00000000"]}));
    assert_eq!(c.reply(&json!(9)).unwrap()["error"][0], json!(21));
    c.send(json!({"id": 10, "method": "mining.submit", "params": [user, job, "00", "00000000", "00000000"]}));
    assert_eq!(c.reply(&json!(10)).unwrap()["error"][0], json!(20));

    // A real solution, then the same again: a duplicate. When the honest miner's share
    // cleans the job in between (answer 21, job not found), the pair is redone on the
    // newest job.
    let submit = |id: u64, job: &str, f: &[String]| json!({"id": id, "method": "mining.submit", "params": [user, job, f[0], f[1], f[2]]});
    let mut notify = notify;
    let mut difficulty = difficulty;
    let mut en2 = 1u8;
    loop {
        // The share target climbs as the honest miner's shares come (a young chain
        // retargets from its second share), and the pseudo-share difficulty with it.
        if let Some(d) = c
            .latest_kept("mining.set_difficulty")
            .and_then(|n| n["params"][0].as_f64())
        {
            difficulty = d;
        }
        let job = notify["params"][0].as_str().unwrap().to_string();
        let fields = grind_stratum(&notify, &en1, [en2, 0, 0, 0], difficulty);
        c.send(submit(11, &job, &fields));
        let reply = c.reply(&json!(11)).unwrap();
        if reply["result"] == json!(true) {
            c.send(submit(12, &job, &fields));
            let again = c.reply(&json!(12)).unwrap();
            if again["error"][0] == json!(22) {
                break;
            }
            assert_eq!(
                again["error"][0],
                json!(21),
                "duplicate or cleaned: {again}"
            );
        } else {
            assert!(
                reply["error"][0] == json!(21) || reply["error"][0] == json!(23),
                "only a cleaned job, or a difficulty raised meanwhile, may fail: {reply}"
            );
        }
        notify = match c.latest_kept("mining.notify") {
            Some(n) => n,
            None => c.notification("mining.notify").unwrap(),
        };
        en2 += 1;
        assert!(en2 < 20, "jobs always cleaned before the duplicate");
    }

    // Stale: a new block cleans the jobs; a solution on an older job is refused.
    let job = notify["params"][0].as_str().unwrap().to_string();
    let fields = grind_stratum(&notify, &en1, [100, 0, 0, 0], difficulty);
    c.clear_notifications();
    push_template(&node, 4);
    let clean = loop {
        let n = c.notification("mining.notify").unwrap();
        if n["params"][1] != notify["params"][1] {
            break n;
        }
    };
    assert_eq!(clean["params"][8], json!(true));
    c.send(submit(13, &job, &fields));
    assert_eq!(c.reply(&json!(13)).unwrap()["error"][0], json!(21));

    // Resuming with the session id gives the same extranonce1 once it is free.
    drop(c);
    let mut resumed = LineClient::connect(stratum);
    let session = hex::encode(&en1);
    let start = Instant::now();
    loop {
        resumed.send(json!({"id": 1, "method": "mining.subscribe", "params": ["test/1", session]}));
        let got = resumed.reply(&json!(1)).unwrap()["result"][1].clone();
        if got == json!(session) {
            break;
        }
        assert!(start.elapsed() < WITHIN, "session not resumed");
        thread::sleep(Duration::from_millis(100));
    }

    // The honest miner went on mining through all of it.
    let before = honest.count("accepted");
    honest.wait_for("accepted", before + 1, Duration::from_secs(30));
}

#[test]
fn a_thousand_idle_stratum_connections_leave_miners_unaffected() {
    logs::init();
    let node = static_node();
    let stratum = node.workers.stratum_addr();
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(stratum).expect("connects"))
        .collect();
    wait_for("1000 connections held", || {
        (node.workers.stratum_connections() >= 1000).then_some(())
    });
    let mut c = LineClient::connect(stratum);
    let (_, _, notify) = stratum_login(&mut c, &addr(8));
    assert_eq!(notify["params"][8], json!(true));
    drop(idle);
    wait_for("idle connections gone", || {
        (node.workers.stratum_connections() <= 1).then_some(())
    });
}

/// Opens a connection and sends the head of a request whose body never finishes.
fn slow_body(worker: std::net::SocketAddr, head: &str, start_of_body: &str) -> TcpStream {
    use std::io::Write;
    let mut s = TcpStream::connect(worker).expect("connects");
    s.write_all(format!("{head}\r\n\r\n{start_of_body}").as_bytes())
        .unwrap();
    s
}

/// The status of the answer to `request`, read within 5 s (the connection may stay open).
fn status_only(worker: std::net::SocketAddr, request: &[u8]) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let mut s = TcpStream::connect(worker).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .expect("a status line within 5 s");
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_and_absurd_http_bodies_never_stall_getwork() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let user = addr(9);
    let auth = auth_header(&user);
    // More slow clients than handler threads, with every kind of body left on the socket.
    let mut slow = Vec::new();
    for _ in 0..6 {
        slow.push(slow_body(
            worker,
            &format!(
                "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 5000"
            ),
            r#"{"method":"getw"#,
        ));
        slow.push(slow_body(
            worker,
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
            "40\r\n{\"method\"",
        ));
        slow.push(slow_body(
            worker,
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100",
            "",
        ));
        slow.push(slow_body(
            worker,
            &format!("POST /long-polling HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 2000"),
            "{",
        ));
        slow.push(slow_body(
            worker,
            "GET /web/anything HTTP/1.1\r\nHost: x\r\nContent-Length: 3000",
            "x",
        ));
    }
    thread::sleep(Duration::from_millis(300));

    // A Content-Length no memory holds (tiny_http would allocate it to drain the body):
    // refused, and the node lives on.
    for path in ["/", "/long-polling", "/web/x"] {
        let absurd = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n{{}}"
        );
        assert_eq!(status_only(worker, absurd.as_bytes()), 413, "{path}");
    }

    // Honest getwork still answers promptly, many times over.
    for _ in 0..10 {
        let start = Instant::now();
        let answer = http_raw(
            worker,
            &rpc_request("/", &user, r#"{"method":"getwork","params":[],"id":1}"#, ""),
            Duration::from_secs(5),
        )
        .expect("getwork answered within 5 s while slow clients are connected");
        assert_eq!(answer.json()["result"]["data"].as_str().unwrap().len(), 256);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // And a long poll is still answered on new work.
    let poll = {
        let request = long_poll_request(&user);
        let first = rpc(worker, &user, r#"{"method":"getwork","params":[],"id":1}"#);
        assert_eq!(first.status, 200);
        thread::spawn(move || http_raw(worker, &request, Duration::from_secs(20)))
    };
    wait_for("the long poll parked", || {
        (node.workers.parked_long_polls() >= 1).then_some(())
    });
    push_template(&node, 5);
    let polled = poll.join().unwrap().expect("long poll answered");
    assert_eq!(polled.status, 200);
    drop(slow);
}

/// Submits solutions until one is accepted (a job cleaned by new work meanwhile is redone
/// on the newest job).
/// What the server sends on `s` until it closes (or `within` passes: then `None`).
fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn hostile_http_clients_hold_no_more_than_the_connection_cap_and_the_timeouts_allow() {
    use std::io::Write;
    logs::init();
    let node = WorkerNode::start(easy_net(bcoin::chain()), Source::Static, |c| {
        c.max_http_connections = 30;
        c.http_timeout = Duration::from_secs(2);
    });
    push_template(&node, 1);
    let worker = node.workers.worker_addr();
    let user = addr(9);
    let getwork = r#"{"method":"getwork","params":[],"id":1}"#;
    let connect = || TcpStream::connect(worker).expect("connects");

    // Absurd Content-Lengths, more of them than the cap: each is refused and its
    // connection closed, so none keeps a place.
    for i in 0..45 {
        let mut s = connect();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n{}")
            .unwrap();
        let answer = until_closed(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("absurd request {i}: connection not closed"));
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    assert_eq!(rpc(worker, &user, getwork).status, 200, "a place is free");

    // A chunked body over the cap: one answer (413), then the connection closes rather than
    // reading the rest of the body as requests.
    let mut s = connect();
    let chunk = "a".repeat(100_000);
    let _ = s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\nGET / HTTP/1.1\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
    );
    let answer = until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");

    // A body refused before it was sent (Expect: 100-continue, too large): one answer, and
    // the connection closes at once.
    let mut s = connect();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    let answer = until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // HTTP/2 (or its h2c preface): 505 and closed, its place given back.
    for _ in 0..40 {
        let mut s = connect();
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let answer = until_closed(&mut s, Duration::from_secs(5)).expect("closed");
        assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    }
    assert_eq!(rpc(worker, &user, getwork).status, 200, "places given back");

    // Chunked framing that never ends (a chunk size of zeros, an endless extension): the
    // body is refused and the connection closed, within the bounds.
    for framing in ["0".repeat(300_000), format!("1;{}", "e".repeat(300_000))] {
        let mut s = connect();
        let _ = s.write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{framing}")
                .as_bytes(),
        );
        let answer = until_closed(&mut s, Duration::from_secs(10)).expect("closed");
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }

    // An endless header line, and too many headers: 400 and closed.
    let mut s = connect();
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(20_000));
    let _ = s.write_all(long.as_bytes());
    let answer = until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut s = connect();
    let many: String = (0..150).map(|i| format!("X-{i}: y\r\n")).collect();
    let _ = s.write_all(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    let answer = until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A head that trickles in is cut off (408) once the timeout passes; a silent body and
    // a silent connection are closed after it.
    let trickle = thread::spawn(move || {
        let mut s = TcpStream::connect(worker).unwrap();
        let started = Instant::now();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(8) {
            if s.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                break;
            }
            i += 1;
            thread::sleep(Duration::from_millis(300));
        }
        until_closed(&mut s, Duration::from_secs(1)).map(|a| (a, started.elapsed()))
    });
    let mut body = connect();
    body.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
        .unwrap();
    let mut silent = connect();
    let answer = until_closed(&mut body, Duration::from_secs(10)).expect("silent body closed");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(until_closed(&mut silent, Duration::from_secs(10)).is_some());
    let (answer, after) = trickle.join().unwrap().expect("trickling head closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_secs(8), "cut off after {after:?}");

    // A long poll parked for longer than the timeout is still answered on new work.
    let poll = {
        let request = long_poll_request(&user);
        assert_eq!(rpc(worker, &user, getwork).status, 200);
        thread::spawn(move || http_raw(worker, &request, Duration::from_secs(20)))
    };
    wait_for("the long poll parked", || {
        (node.workers.parked_long_polls() >= 1).then_some(())
    });
    thread::sleep(Duration::from_secs(3));
    push_template(&node, 2);
    let polled = poll
        .join()
        .unwrap()
        .expect("long poll answered after the timeout");
    assert_eq!(polled.status, 200);
    assert!(polled.json()["result"]["data"].is_string());

    // Requests pipelined behind a parked long poll wait for it on their own connection,
    // and hold no handler thread: getwork stays prompt for everyone else.
    let keep_alive_poll = String::from_utf8(long_poll_request(&user))
        .unwrap()
        .replace("Connection: close", "Connection: keep-alive");
    assert_eq!(
        rpc(worker, &user, getwork).status,
        200,
        "the miner has the work"
    );
    let pipelined: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = connect();
            let mut both = keep_alive_poll.clone().into_bytes();
            both.extend_from_slice(&rpc_request("/", &user, getwork, ""));
            s.write_all(&both).unwrap();
            s
        })
        .collect();
    wait_for("the pipelined long polls parked", || {
        (node.workers.parked_long_polls() >= 6).then_some(())
    });
    for _ in 0..5 {
        let answer = http_raw(
            worker,
            &rpc_request("/", &user, getwork, ""),
            Duration::from_secs(5),
        )
        .expect("getwork answered within 5 s beside pipelined long polls");
        assert_eq!(answer.status, 200);
    }
    push_template(&node, 3);
    for mut s in pipelined {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let answers = until_closed(&mut s, Duration::from_secs(10)).expect("both answered");
        assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    }

    // The cap: idle connections take every place, and one more is closed at once.
    let idle: Vec<TcpStream> = (0..30).map(|_| connect()).collect();
    thread::sleep(Duration::from_millis(300));
    let mut over = connect();
    let _ = over.write_all(&rpc_request("/", &user, getwork, ""));
    let answer = until_closed(&mut over, Duration::from_secs(1)).expect("closed at once");
    assert!(answer.is_empty(), "{answer}");
    // Once the idle ones time out, miners are served again.
    wait_for(
        "getwork served again after the idle connections time out",
        || {
            http_raw(
                worker,
                &rpc_request("/", &user, getwork, ""),
                Duration::from_secs(2),
            )
            .filter(|a| a.status == 200)
        },
    );
    drop(idle);
    node.stop();
}

#[test]
fn three_hundred_long_polls_sent_at_once_all_park_and_are_all_answered() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let user = addr(9);
    assert_eq!(
        rpc(worker, &user, r#"{"method":"getwork","params":[],"id":1}"#).status,
        200
    );
    let before = node.workers.parked_long_polls();
    let polls: Vec<_> = (0..300)
        .map(|_| {
            let request = long_poll_request(&user);
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || http_raw(worker, &request, Duration::from_secs(30)))
                .unwrap()
        })
        .collect();
    wait_for("every long poll parked", || {
        (node.workers.parked_long_polls() >= before + 300).then_some(())
    });
    push_template(&node, 7);
    for p in polls {
        let answer = p.join().unwrap().expect("answered");
        assert_eq!(answer.status, 200);
    }
}

fn stratum_share(c: &mut LineClient, user: &str, en1: &[u8], difficulty: f64, notify: Value) {
    let mut notify = notify;
    for en2 in 1..20u8 {
        let fields = grind_stratum(&notify, en1, [en2, 0, 0, 0], difficulty);
        c.send(json!({"id": 40, "method": "mining.submit",
            "params": [user, notify["params"][0], fields[0], fields[1], fields[2]]}));
        let reply = c.reply(&json!(40)).unwrap();
        if reply["result"] == json!(true) {
            return;
        }
        assert_eq!(reply["error"][0], json!(21), "{reply}");
        notify = match c.latest_kept("mining.notify") {
            Some(n) => n,
            None => c.notification("mining.notify").unwrap(),
        };
    }
    panic!("every job cleaned before its solution");
}

#[test]
fn work_on_a_still_tip_is_stamped_again_after_a_share_period_without_cleaning_jobs() {
    logs::init();
    let node = static_node();
    let mut c = LineClient::connect(node.workers.stratum_addr());
    let user = addr(11);
    let (en1, difficulty, notify) = stratum_login(&mut c, &user);
    let p = &notify["params"];
    let ntime = u32::from_str_radix(p[7].as_str().unwrap(), 16).unwrap();
    // Nothing changes: no share, no block. Once the work's timestamp is a share period
    // (5 s) behind the clock, the node builds it again, stamped now; the miner hears of
    // it with clean_jobs false (a keep-alive job keeps the old time).
    let started = Instant::now();
    let restamped = loop {
        // A read gives up after a few quiet seconds: asked again until 20 s have passed.
        if let Some(n) = c.notification("mining.notify") {
            let later = u32::from_str_radix(n["params"][7].as_str().unwrap(), 16).unwrap();
            if later > ntime {
                break n;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no job restamped within 20 s"
        );
    };
    assert_eq!(restamped["params"][1], p[1], "the same previous block");
    assert_eq!(restamped["params"][8], json!(false), "{restamped}");
    let later = u32::from_str_radix(restamped["params"][7].as_str().unwrap(), 16).unwrap();
    assert!(later >= ntime + 5, "{ntime} -> {later}");
    // The old job is still good: a solution on it is accepted.
    let job = p[0].as_str().unwrap().to_string();
    let fields = grind_stratum(&notify, &en1, [2, 0, 0, 0], difficulty);
    c.send(json!({"id": 4, "method": "mining.submit",
        "params": [user, job, fields[0], fields[1], fields[2]]}));
    let reply = c.reply(&json!(4)).unwrap();
    assert_eq!(reply["result"], json!(true), "{reply}");
}

#[test]
fn stratum_version_rolling_submits_ntime_bounds_and_clean_jobs_on_a_new_best_share() {
    logs::init();
    let node = static_node();
    let mut c = LineClient::connect(node.workers.stratum_addr());
    c.send(json!({"id": 1, "method": "mining.configure",
        "params": [["version-rolling", "minimum-difficulty"],
                   {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]}));
    let configured = c.reply(&json!(1)).unwrap();
    assert_eq!(configured["result"]["version-rolling"], json!(true));
    assert_eq!(
        configured["result"]["version-rolling.mask"],
        json!("1fffe000")
    );
    let user = addr(10);
    let (en1, difficulty, notify) = stratum_login(&mut c, &user);
    let p = &notify["params"];
    let job = p[0].as_str().unwrap().to_string();
    let ntime = u32::from_str_radix(p[7].as_str().unwrap(), 16).unwrap();

    // ntime before the job's, or far past the clock: refused whatever the proof of work.
    for bad in [ntime - 1, ntime + 7200] {
        c.send(json!({"id": 2, "method": "mining.submit",
            "params": [user, job, "00000001", format!("{bad:08x}"), "00000000"]}));
        let reply = c.reply(&json!(2)).unwrap();
        assert_eq!(reply["error"][0], json!(20), "{reply}");
        assert!(
            reply["error"][1].as_str().unwrap().contains("ntime"),
            "{reply}"
        );
    }
    // Version bits outside the negotiated mask.
    c.send(json!({"id": 3, "method": "mining.submit",
        "params": [user, job, "00000001", p[7], "00000000", "00000001"]}));
    assert_eq!(c.reply(&json!(3)).unwrap()["error"][0], json!(20));

    // A 6-parameter submit with rolled bits: accepted, and it becomes a share whose header
    // carries the rolled version.
    let rolled = 0x0000_6000;
    let fields = grind_stratum_rolled(&notify, &en1, [1, 0, 0, 0], difficulty, Some(rolled));
    assert_eq!(fields.len(), 4);
    c.send(json!({"id": 4, "method": "mining.submit",
        "params": [user, job, fields[0], fields[1], fields[2], fields[3]]}));
    let reply = c.reply(&json!(4)).unwrap();
    assert_eq!(reply["result"], json!(true), "{reply}");
    let hash = wait_for("the share in the chain", || {
        node.view().shares.first().copied()
    });
    {
        let share = wait_for("the share tracked", || node.share(&hash));
        assert_eq!(share.header.version & VERSION_MASK, rolled);
    }
    // The new best share (not a new block) cleans the jobs: same previous block, clean.
    let clean = loop {
        let n = c
            .notification("mining.notify")
            .expect("a job on the new best share");
        if n["params"][8] == json!(true) {
            break n;
        }
    };
    assert_eq!(clean["params"][1], notify["params"][1]);
    assert_ne!(clean["params"][0], notify["params"][0]);
    // The old job is gone with it.
    c.send(json!({"id": 5, "method": "mining.submit",
        "params": [user, job, fields[0], fields[1], fields[2], fields[3]]}));
    assert_eq!(c.reply(&json!(5)).unwrap()["error"][0], json!(21));

    // mining.suggest_difficulty: accepted and followed by a job; never a pseudo-share
    // target harder than the share target; nonsense is refused.
    c.clear_notifications();
    c.send(json!({"id": 6, "method": "mining.suggest_difficulty", "params": [1000]}));
    assert_eq!(c.reply(&json!(6)).unwrap()["result"], json!(true));
    let next = c
        .notification("mining.notify")
        .expect("a job after suggest");
    assert_eq!(next["params"][8], json!(false));
    if let Some(d) = c.latest_kept("mining.set_difficulty") {
        assert!(
            d["params"][0].as_f64().unwrap() <= difficulty * 1.0001,
            "{d}"
        );
    }
    c.send(json!({"id": 7, "method": "mining.suggest_difficulty", "params": [-1]}));
    assert_eq!(c.reply(&json!(7)).unwrap()["error"][0], json!(20));
    c.send(json!({"id": 8, "method": "mining.suggest_difficulty", "params": ["x"]}));
    assert_eq!(c.reply(&json!(8)).unwrap()["error"][0], json!(20));
}

#[test]
fn a_share_difficulty_floor_keeps_easier_solutions_out_of_the_share_chain() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    // Stratum, `/DIFF` far above the share difficulty: a pseudo-share, not a share.
    let floored = format!("{}.rig/1000000", addr(11));
    let mut c = LineClient::connect(node.workers.stratum_addr());
    let (en1, difficulty, notify) = stratum_login(&mut c, &floored);
    let fields = grind_stratum(&notify, &en1, [1, 0, 0, 0], difficulty);
    c.send(json!({"id": 4, "method": "mining.submit",
        "params": [floored, notify["params"][0], fields[0], fields[1], fields[2]]}));
    assert_eq!(c.reply(&json!(4)).unwrap()["result"], json!(true));
    // getwork, the same floor.
    let getwork_user = format!("{}/1000000", addr(12));
    let unit = rpc(worker, &getwork_user, r#"{"method":"getwork","id":1}"#).json();
    let solution = grind_getwork(&unit["result"]);
    let submit = format!(r#"{{"method":"getwork","params":["{solution}"],"id":2}}"#);
    assert_eq!(
        rpc(worker, &getwork_user, &submit).json()["result"],
        json!(true)
    );
    // `+DIFF` and `/DIFF` together parse, and a floor at the share difficulty lets shares in.
    let open = format!("{}+0.00001/0.00001", addr(13));
    let unit = rpc(worker, &open, r#"{"method":"getwork","id":1}"#).json();
    let solution = grind_getwork(&unit["result"]);
    let submit = format!(r#"{{"method":"getwork","params":["{solution}"],"id":2}}"#);
    assert_eq!(rpc(worker, &open, &submit).json()["result"], json!(true));
    wait_for("the unfloored share in the chain", || {
        (!node.view().shares.is_empty()).then_some(())
    });
    assert_eq!(
        node.view().shares.len(),
        1,
        "floored solutions are no shares"
    );
    let stats = node.workers.stats();
    for (address, worker) in [(addr(11), "rig"), (addr(12), "")] {
        let s = stats
            .iter()
            .find(|s| s.address == address && s.worker == worker)
            .unwrap_or_else(|| panic!("stats of {address}: {stats:?}"));
        assert_eq!((s.accepted, s.shares), (1, 0), "{s:?}");
    }
    let s = stats.iter().find(|s| s.address == addr(13)).unwrap();
    assert_eq!((s.accepted, s.shares), (1, 1), "{s:?}");
}

#[test]
fn addresses_of_another_network_are_refused_at_authorize_and_at_getwork() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let main = ChainParams::main();
    let wrong = [
        address::from_script(&payout(14), &main).unwrap(),
        address::from_script(&[&[0x00, 0x14][..], &[14; 20]].concat(), &main).unwrap(),
    ];
    for bad in &wrong {
        let answer = rpc(worker, bad, r#"{"method":"getwork","id":1}"#).json();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            answer["result"].is_null() && message.contains("is for bitcoin main"),
            "{bad}: {answer}"
        );
        assert_ne!(answer["error"]["code"], json!(-12345));
        let mut c = LineClient::connect(node.workers.stratum_addr());
        c.send(json!({"id": 1, "method": "mining.subscribe", "params": []}));
        c.reply(&json!(1)).unwrap();
        c.send(json!({"id": 2, "method": "mining.authorize", "params": [format!("{bad}.w"), "x"]}));
        let reply = c.reply(&json!(2)).unwrap();
        assert_eq!(reply["result"], json!(false), "{bad}: {reply}");
        assert!(
            reply["error"][1]
                .as_str()
                .unwrap()
                .contains("is for bitcoin main"),
            "{reply}"
        );
        // No job for a refused miner.
        c.send(json!({"id": 3, "method": "mining.ping", "params": []}));
        loop {
            let v = c.read().expect("answered");
            assert_ne!(v["method"], json!("mining.notify"), "a job after a refusal");
            if v["id"] == json!(3) {
                break;
            }
        }
    }
    assert!(node.workers.stats().is_empty(), "nobody is paid");
}

#[test]
fn miners_get_the_reason_the_node_is_not_ready_and_mine_again_once_it_is() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let user = addr(15);
    for (readiness, message) in [
        (Readiness::DownloadingShares, "p2pool is downloading shares"),
        (Readiness::NoBitcoind, "lost contact with bitcoind"),
        (
            Readiness::BitcoindUnreached,
            "p2pool has not reached bitcoind yet",
        ),
        (
            Readiness::NoTemplate,
            "bitcoind gives no block template yet",
        ),
        (Readiness::NoPeers, "p2pool is not connected to any peers"),
    ] {
        node.set_readiness(readiness);
        let refused = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
        assert_eq!(refused["error"]["code"], json!(-12345), "{refused}");
        assert_eq!(refused["error"]["message"], json!(message));
        let mut c = LineClient::connect(node.workers.stratum_addr());
        c.send(json!({"id": 1, "method": "mining.subscribe", "params": []}));
        c.reply(&json!(1)).unwrap();
        c.send(json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]}));
        let reply = c.reply(&json!(2)).unwrap();
        assert_eq!(reply["result"], json!(false));
        assert_eq!(reply["error"][0], json!(-12345));
        assert_eq!(reply["error"][1], json!(message));
    }
    // Ready again: both protocols mine, on a network that does not persist from genesis.
    assert!(!node.net.persist);
    assert!(
        node.view().best.is_none(),
        "no share yet: mining from genesis"
    );
    node.set_readiness(Readiness::Ready);
    let work = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
    assert!(work["result"]["data"].is_string(), "{work}");
    let mut c = LineClient::connect(node.workers.stratum_addr());
    stratum_login(&mut c, &user);
}

#[test]
fn a_fee_of_100_percent_makes_every_job_pay_the_node() {
    logs::init();
    let node = WorkerNode::start(easy_net(bcoin::chain()), Source::Static, |c| {
        c.fee_percent = 100.0;
    });
    push_template(&node, 1);
    let node_script = script::p2pkh(&[0xee; 20]);
    let worker = node.workers.worker_addr();
    let user = addr(16);
    let unit = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
    let solution = grind_getwork(&unit["result"]);
    let submit = format!(r#"{{"method":"getwork","params":["{solution}"],"id":2}}"#);
    assert_eq!(rpc(worker, &user, &submit).json()["result"], json!(true));
    wait_for("work on the getwork share", || node.view().best.map(|_| ()));
    let mut c = LineClient::connect(node.workers.stratum_addr());
    let (en1, difficulty, notify) = stratum_login(&mut c, &user);
    stratum_share(&mut c, &user, &en1, difficulty, notify);
    let shares = wait_for("shares in the chain", || {
        let v = node.view();
        (v.shares.len() >= 2).then(|| v.shares.clone())
    });
    for h in &shares {
        let share = wait_for("the share tracked", || node.share(h));
        assert_eq!(share.info.new_script, node_script, "the fee pays the node");
    }
}

#[test]
fn vardiff_raises_a_fast_miners_difficulty_and_plus_diff_fixes_it_once_shares_are_harder() {
    logs::init();
    // Shares wanted every 10 minutes but found many a second: after a few shares the share
    // target is harder than MAX_TARGET, so pseudo-share difficulties have room to move.
    let mut net = easy_net(bcoin::chain());
    net.target_lookbehind = 2;
    net.share_period = 600;
    // A long interval: vardiff raises the difficulty of a miner finding more than one
    // pseudo-share per 10 s, which the test miner does even on a loaded machine.
    let node = WorkerNode::start(net.clone(), Source::Static, |c| {
        c.initial_difficulty = 0.0;
        c.vardiff_interval = 10.0;
    });
    push_template(&node, 1);
    let easiest = p2pool::worker::miners::target_difficulty(net.max_target);
    let fast = addr(17);
    let _miner = TestMiner::start(&[
        "--url",
        &node.stratum_url(),
        "--user",
        &fast,
        "--hashrate",
        HASHRATE,
    ]);
    let share_difficulty = |node: &WorkerNode| {
        node.view().last_work.as_ref().map_or(0.0, |w| {
            p2pool::worker::miners::target_difficulty(w.share_target())
        })
    };
    let start = Instant::now();
    while share_difficulty(&node) < 2.0 * easiest {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "share target not harder within 120 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The fast miner started at the easiest difficulty and vardiff raised it.
    let start = Instant::now();
    loop {
        let stats = node.workers.stats();
        let d = stats
            .iter()
            .find(|s| s.address == fast)
            .map_or(0.0, |s| s.difficulty);
        if d > 1.5 * easiest {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "difficulty {d} not raised above {easiest}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // `+DIFF` between the easiest and the share difficulty: told exactly that.
    let wanted = 1.5 * easiest;
    let mut c = LineClient::connect(node.workers.stratum_addr());
    let (_, told, _) = stratum_login(&mut c, &format!("{}+{wanted}", addr(18)));
    assert!(
        (told - wanted).abs() <= wanted * 1e-6,
        "+DIFF {wanted} but told {told} (easiest {easiest})"
    );
}

#[test]
fn a_getwork_miner_is_shown_the_difficulty_it_is_held_to_not_vardiffs_raw_wish() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    let share_difficulty = p2pool::worker::miners::target_difficulty(
        node.view().last_work.as_ref().unwrap().share_target(),
    );
    // `+1000` asks for far harder pseudo-shares than shares: the unit's target is the
    // share target, and that is the difficulty the miner is shown.
    for user in [format!("{}+1000", addr(30)), addr(31)] {
        let unit = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
        let mut t = [0u8; 32];
        t.copy_from_slice(&hex::decode(unit["result"]["target"].as_str().unwrap()).unwrap());
        let held_to = p2pool::worker::miners::target_difficulty(U256::from_le_bytes(t));
        let address = user.split('+').next().unwrap().to_string();
        let shown = node
            .workers
            .stats()
            .iter()
            .find(|s| s.address == address)
            .map(|s| s.difficulty)
            .unwrap();
        assert!(
            (shown - held_to).abs() <= held_to * 1e-9,
            "{user}: shown {shown}, held to {held_to}"
        );
        assert!(
            shown <= share_difficulty * (1.0 + 1e-9),
            "{user}: shown {shown} above the share difficulty {share_difficulty}"
        );
    }
}

/// Waits until the node's chain holds a verified share.
fn wait_until_verified(node: &WorkerNode) -> bool {
    let until = std::time::Instant::now() + WITHIN;
    while std::time::Instant::now() < until {
        if node.view().verified >= 1 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_solution_on_a_superseded_best_share_is_a_stale_pseudo_share_not_an_orphan_share() {
    logs::init();
    let node = static_node();
    let worker = node.workers.worker_addr();
    // Pseudo-shares at the share difficulty: every solution is a share.
    let user = format!("{}+0.00001/0.00001", addr(23));
    let unit = rpc(worker, &user, r#"{"method":"getwork","id":1}"#).json();
    let submit = |data: &str| {
        let body = format!(r#"{{"method":"getwork","params":["{data}"],"id":2}}"#);
        rpc(worker, &user, &body)
    };
    let (solution, nonce) = grind_getwork_from(&unit["result"], 0);
    assert_eq!(submit(&solution).json()["result"], json!(true));
    let first = wait_for("the share in the chain", || {
        node.view().shares.first().copied()
    });
    wait_for("work on the new best share", || {
        let work = node.view().last_work.clone()?;
        (work.best == Some(first)).then_some(())
    });
    // Another solution of the same unit, built on what is no longer the best share: a
    // sibling of our own share, an orphan from birth. Stale, and no share is made.
    let (again, _) = grind_getwork_from(&unit["result"], nonce.wrapping_add(1));
    let answer = submit(&again);
    assert_eq!(answer.json()["result"], json!(false));
    assert_eq!(answer.header("X-Reject-Reason"), Some("stale"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.view().shares, vec![first]);
    let stats = node.workers.stats();
    let s = stats.iter().find(|s| s.address == addr(23)).unwrap();
    assert_eq!((s.accepted, s.stale, s.shares), (1, 1, 1), "{s:?}");
}

#[test]
fn a_second_share_of_ours_on_the_same_best_share_is_never_made_however_fast_it_comes() {
    logs::init();
    let node = static_node();
    // Pseudo-shares at the share difficulty: every solution is a share.
    let user = format!("{}+0.00001/0.00001", addr(24));
    let mut c = LineClient::connect(node.workers.stratum_addr());
    let (en1, difficulty, notify) = stratum_login(&mut c, &user);
    // Both solutions ground first, then sent back to back: the second reaches the node
    // before or after it moved on, a sibling of our own share either way.
    let fields: Vec<Vec<String>> = (1..=2u8)
        .map(|n| grind_stratum(&notify, &en1, [n, 0, 0, 0], difficulty))
        .collect();
    for (i, f) in fields.iter().enumerate() {
        c.send(json!({"id": 60 + i, "method": "mining.submit",
            "params": [user, notify["params"][0], f[0], f[1], f[2]]}));
    }
    assert_eq!(c.reply(&json!(60)).unwrap()["result"], json!(true));
    // Counted for the miner (a pseudo-share; stale, or its job gone, if the node had
    // already moved on), never made a share.
    let second = c.reply(&json!(61)).unwrap();
    assert!(
        second["result"] == json!(true) || second["error"][0] == json!(21),
        "{second}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.view().shares.len(), 1);
    let stats = node.workers.stats();
    let s = stats.iter().find(|s| s.address == addr(24)).unwrap();
    assert_eq!(
        (s.shares, s.accepted + s.stale + s.rejected),
        (1, 2),
        "{s:?}"
    );
}

#[test]
fn idle_stratum_miners_connected_together_get_their_lowered_difficulty_at_spread_times() {
    logs::init();
    // An idle period of 6 s: each first retarget comes 6 to 12 s after login. A share
    // period of 10 minutes: no job built again on the still tip (to every miner at once,
    // not clean either) comes meanwhile.
    let mut net = easy_net(bcoin::chain());
    net.share_period = 600;
    let node = WorkerNode::start(net, Source::Static, |c| {
        c.vardiff_interval = 1.5;
        c.initial_difficulty = 1e-3;
    });
    push_template(&node, 1);
    let stratum = node.workers.stratum_addr();
    let start = Instant::now();
    let miners: Vec<_> = (0..50)
        .map(|_| {
            let mut c = LineClient::connect(stratum);
            stratum_login(&mut c, &addr(9));
            c.set_read_timeout(WITHIN);
            thread::spawn(move || {
                // The first job after login that is not a new block's: the retarget's.
                let notify = loop {
                    let v = c.read().expect("a job within the idle periods");
                    if v["method"] == "mining.notify" && v["params"][8] == json!(false) {
                        break v;
                    }
                };
                assert_eq!(notify["params"][8], json!(false));
                start.elapsed()
            })
        })
        .collect();
    let mut arrivals: Vec<Duration> = miners.into_iter().map(|m| m.join().unwrap()).collect();
    arrivals.sort();
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    assert!(
        last - first > Duration::from_secs(3),
        "50 retargets within {:?} of each other: {arrivals:?}",
        last - first
    );
}

#[test]
fn a_silent_stratum_miner_gets_its_keepalive_job_from_a_tick_that_otherwise_looks_at_no_one() {
    logs::init();
    // A fixed difficulty: no idle vardiff, so only the keep-alive makes the miner due.
    let node = WorkerNode::start(easy_net(bcoin::chain()), Source::Static, |c| {
        c.stratum_keepalive = Duration::from_secs(2);
    });
    push_template(&node, 1);
    let mut c = LineClient::connect(node.workers.stratum_addr());
    stratum_login(&mut c, &format!("{}+0.001", addr(9)));
    let start = Instant::now();
    c.set_read_timeout(WITHIN);
    for _ in 0..2 {
        let v = loop {
            let v = c.read().expect("a keep-alive job");
            if v["method"] == "mining.notify" {
                break v;
            }
        };
        assert_eq!(
            v["params"][8],
            json!(false),
            "a keep-alive job is not clean"
        );
    }
    // Two keep-alives, each 2 s (to the next 1 s tick) after the job before.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn a_stalled_stratum_miner_delays_no_one_elses_notify_and_is_dropped_while_the_node_serves() {
    logs::init();
    let node = static_node();
    let stratum = node.workers.stratum_addr();
    let mut honest: Vec<LineClient> = (0..3)
        .map(|i| {
            let mut c = LineClient::connect(stratum);
            stratum_login(&mut c, &addr(20 + i));
            c
        })
        .collect();
    // A miner that logs in and never reads, with a small receive buffer: its socket is
    // soon full, and every later write to it would block.
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stalled.set_recv_buffer_size(4096).unwrap();
    stalled.connect(&stratum.into()).unwrap();
    let mut stalled = TcpStream::from(stalled);
    use std::io::Write;
    let login = format!(
        "{}\n{}\n",
        json!({"id": 1, "method": "mining.subscribe", "params": []}),
        json!({"id": 2, "method": "mining.authorize", "params": [addr(30), "x"]})
    );
    stalled.write_all(login.as_bytes()).unwrap();
    wait_for("four miners connected", || {
        (node.workers.stratum_connections() == 4).then_some(())
    });
    // New work again and again: the honest miners get each notify at once, until the
    // stalled miner's socket buffers (the node's send buffer is bounded: some hundreds of
    // rounds) and then its queue are full and it is dropped.
    let mut rounds = 0u32;
    while node.workers.stratum_connections() == 4 {
        rounds += 1;
        assert!(rounds < 20000, "the stalled miner was never dropped");
        let previous = sha256d(&rounds.to_le_bytes());
        let template = static_template(previous, 2000 + rounds, 0x1d00ffff);
        let sent = Instant::now();
        node.templates
            .as_ref()
            .unwrap()
            .send(Arc::new(template))
            .unwrap();
        let mut prev = previous.0;
        swap4(&mut prev);
        let prev = hex::encode(prev);
        for c in &mut honest {
            let notify = loop {
                let v = c
                    .notification("mining.notify")
                    .expect("a notify on new work");
                if v["params"][1] == json!(prev) {
                    break v;
                }
            };
            assert_eq!(notify["params"][8], json!(true));
            let took = sent.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "a notify {took:?} after new work"
            );
        }
        let broadcast = node.workers.last_stratum_broadcast().expect("a broadcast");
        assert!(broadcast.took < Duration::from_secs(1), "{broadcast:?}");
    }
    assert!(rounds > 1, "dropped before its socket was full");
    // The node serves on: a new miner logs in and gets a job, the others still mine.
    let mut late = LineClient::connect(stratum);
    let (_, _, notify) = stratum_login(&mut late, &addr(31));
    assert_eq!(notify["params"][8], json!(true));
    assert_eq!(node.workers.stratum_connections(), 4);
    drop(stalled);
}

#[test]
fn a_stratum_connection_past_the_cap_is_told_why_and_the_node_keeps_serving() {
    logs::init();
    let node = WorkerNode::start(easy_net(bcoin::chain()), Source::Static, |c| {
        c.max_stratum_connections = 2;
    });
    push_template(&node, 1);
    let stratum = node.workers.stratum_addr();
    let mut first = LineClient::connect(stratum);
    stratum_login(&mut first, &addr(40));
    let mut second = LineClient::connect(stratum);
    stratum_login(&mut second, &addr(41));
    // The third is answered with an error line, then closed.
    let mut third = LineClient::connect(stratum);
    let refused = third.read().expect("an error line before the close");
    assert_eq!(refused["id"], Value::Null);
    assert!(refused["result"].is_null());
    let message = refused["error"][1].as_str().expect("an error message");
    assert!(message.contains("too many connections"), "{message}");
    assert!(third.closed());
    // The two connected miners mine on: new work reaches them.
    first.clear_notifications();
    second.clear_notifications();
    push_template(&node, 2);
    for c in [&mut first, &mut second] {
        let notify = c.notification("mining.notify").expect("new work");
        assert_eq!(notify["params"][8], json!(true));
    }
    // A place freed is taken again.
    drop(first);
    wait_for("the first connection gone", || {
        (node.workers.stratum_connections() == 1).then_some(())
    });
    let mut again = LineClient::connect(stratum);
    let (_, _, notify) = stratum_login(&mut again, &addr(42));
    assert_eq!(notify["params"][8], json!(true));
}

/// What the fake original P2Pool below saw.
#[derive(Default)]
struct OriginalSeen {
    methods: Vec<String>,
    /// Each solution submitted, as the 128-byte getwork data in hex.
    submits: Vec<String>,
}

/// Reads one HTTP request (head, then a Content-Length or chunked body): (path, body).
fn read_request(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some((path, body))
}

/// A JSON-RPC 2.0 answer as the original P2Pool's Twisted server writes it to an HTTP/1.1
/// request: status 200 and a chunked body (here cut into 7-byte chunks, each with a chunk
/// extension), with the headers every getwork reply carries (§7.1 of the reference).
fn original_answer(stream: &mut TcpStream, reply: &Value) {
    use std::io::Write;
    let body = reply.to_string();
    let mut wire = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    X-Long-Polling: /long-polling\r\nX-Roll-NTime: expire=60\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_string();
    for chunk in body.as_bytes().chunks(7) {
        wire.push_str(&format!("{:x};x=1\r\n", chunk.len()));
        wire.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        wire.push_str("\r\n");
    }
    wire.push_str("0\r\n\r\n");
    let _ = stream.write_all(wire.as_bytes());
}

#[test]
fn testminer_falls_back_to_getwork_when_getblocktemplate_has_an_error_code_and_reads_chunked_replies()
 {
    // A fake server, because the fault is the original P2Pool's own behaviour, which no
    // real bcoin shows: its worker port knows only `getwork` and answers getblocktemplate
    // with the JSON-RPC error -32601 (unknown method, reference §7.2), through Twisted,
    // which sends HTTP/1.1 replies chunked. Long polls are held open and never answered.
    use std::net::TcpListener;
    use std::sync::Mutex;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(OriginalSeen::default()));
    // A version 2 header on a made-up previous block; the share target passes one hash in
    // 256, so the throttled miner finds one within seconds.
    let mut header = [0u8; 80];
    header[0] = 2;
    header[4..36].copy_from_slice(&sha256d(b"previous block").0);
    header[36..68].copy_from_slice(&sha256d(b"merkle root").0);
    header[68..72].copy_from_slice(&1_700_000_000u32.to_le_bytes());
    header[72..76].copy_from_slice(&0x207f_ffffu32.to_le_bytes());
    let mut data = [0u8; 128];
    data[..80].copy_from_slice(&header);
    data[80] = 0x80;
    data[126] = 0x02;
    data[127] = 0x80;
    swap4(&mut data);
    let mut target = [0xffu8; 32];
    target[31] = 0x00; // little-endian: the top byte is zero
    let work = json!({"data": hex::encode(data), "target": hex::encode(target)});
    {
        let seen = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                let work = work.clone();
                thread::spawn(move || {
                    let Ok(clone) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = std::io::BufReader::new(clone);
                    let Some((path, body)) = read_request(&mut reader) else {
                        return;
                    };
                    if path == "/long-polling" {
                        thread::sleep(Duration::from_secs(120));
                        return;
                    }
                    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let method = call["method"].as_str().unwrap_or_default().to_string();
                    seen.lock().unwrap().methods.push(method.clone());
                    let reply = match (method.as_str(), call["params"][0].as_str()) {
                        ("getwork", None) => json!({"jsonrpc": "2.0", "id": call["id"],
                            "result": work, "error": null}),
                        ("getwork", Some(solution)) => {
                            seen.lock().unwrap().submits.push(solution.to_string());
                            json!({"jsonrpc": "2.0", "id": call["id"], "result": true,
                                "error": null})
                        }
                        _ => json!({"jsonrpc": "2.0", "id": call["id"], "result": null,
                            "error": {"code": -32601, "message": "Method not found", "data": null}}),
                    };
                    original_answer(&mut stream, &reply);
                });
            }
        });
    }
    let url = format!("http://127.0.0.1:{port}/");
    let mut miner = TestMiner::start(&[
        "--url",
        &url,
        "--user",
        &addr(1),
        "--shares",
        "2",
        "--hashrate",
        "2000",
        "--duration",
        "60",
    ]);
    miner.wait_for("accepted", 2, Duration::from_secs(60));
    assert!(miner.wait_exit(WITHIN), "{}", miner.output());
    let output = miner.output();
    assert!(
        output.contains("gbt refused") && output.contains("-32601"),
        "{output}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.methods.first().map(String::as_str),
        Some("getblocktemplate")
    );
    assert!(seen.submits.len() >= 2, "{:?}", seen.submits);
    // Every solution is the work given with a nonce that meets the target.
    let target = U256::from_le_bytes(target);
    for solution in &seen.submits {
        let mut bytes = hex::decode(solution).unwrap();
        assert_eq!(bytes.len(), 128);
        swap4(&mut bytes);
        assert_eq!(bytes[..76], header[..76], "the header is the work's");
        assert!(sha256d(&bytes[..80]).to_u256() <= target, "{solution}");
    }
}
