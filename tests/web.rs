//! The web side over real loopback sockets: every endpoint answers with the figures of a
//! filled `PoolStatus` (and the peers and miners wired to it), `/health` says 503 with the
//! reason until the node is ready, `/metrics` parses as Prometheus text, unknown paths get
//! 404, other methods 405, and HEAD gets the headers without the body.

mod support {
    pub mod web;
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pool::network::Network;
use p2pool::p2p::{P2p, P2pConfig};
use p2pool::web::{MinerView, PoolStatus, StatusBoard, Web, peer_source};
use serde_json::{Value, json};
use support::web::{
    BEST_SHARE, MINER_ADDRESS, OTHER_ADDRESS, POOL_HASHRATE, WebServer, filled_status, filled_web,
    http,
};

fn serve_filled() -> WebServer {
    WebServer::start(filled_web(filled_status()))
}

fn get_json(server: &WebServer, target: &str) -> Value {
    let answer = http(server.addr, "GET", target);
    assert_eq!(answer.status, 200, "{target}: {}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{target}"
    );
    answer.json()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn stats_answers_with_the_published_figures() {
    let server = serve_filled();
    let stats = get_json(&server, "/api/stats");
    assert_eq!(stats["network"], "regtest");
    assert_eq!(stats["best_share"], BEST_SHARE);
    assert_eq!(stats["best_share"].as_str().map(str::len), Some(64));
    assert_eq!(stats["best_height"], 4321);
    assert_eq!(stats["pool_hashrate"], json!(POOL_HASHRATE));
    assert_eq!(stats["pool_nonstale_hashrate"], json!(1.2e12));
    assert_eq!(stats["pool_stale_prop"], json!(0.025));
    assert_eq!(
        stats["local_hashrate"],
        json!(6.0e9),
        "the sum over the miners"
    );
    assert!(close(stats["local_dead_hashrate"].as_f64().unwrap(), 5.0e8));
    assert!(close(
        stats["local_stale_prop"].as_f64().unwrap(),
        3.0 / 40.0
    ));
    assert_eq!(
        stats["shares"],
        json!({"total": 9000, "verified": 8800, "in_chain": 8640, "local": 40,
               "local_orphan": 2, "local_dead": 1})
    );
    assert_eq!(
        stats["sync"],
        json!({"ready": true, "reason": null, "cause": null, "have": 8640, "want": 8640,
               "progress": 1.0})
    );
    assert_eq!(
        stats["peers"],
        json!({"incoming": 0, "outgoing": 1, "total": 1, "connecting": 1}),
        "peers still in their handshake are not counted as in or out"
    );
    assert_eq!(stats["miners"], 2);
    assert_eq!(
        stats["bitcoind"],
        json!({"reachable": true, "height": 812_344, "last_error": ""})
    );
    assert_eq!(stats["share_difficulty"], json!(1234.5));
    assert_eq!(stats["block_difficulty"], json!(4.5e6));
    assert_eq!(stats["block_height"], 812_345);
    // Counters, not the lengths of the capped lists (one block listed, one paid block).
    assert_eq!(
        stats["blocks"],
        json!({"found": 3, "accepted": 2, "stale": 1, "rejected": 0, "pending": 0,
               "paid_node": 1})
    );
    assert_eq!(stats["blocks_found"], 3);
    assert_eq!(stats["blocks_paid"], 2, "the accepted blocks, uncapped");
    assert_eq!(stats["fee"], json!(0.5));
    assert_eq!(stats["payout_address"], MINER_ADDRESS);
    let uptime = stats["uptime"].as_u64().unwrap();
    assert!((3723..3723 + 60).contains(&uptime), "uptime {uptime}");
    let to_block = stats["expected_time_to_block"].as_f64().unwrap();
    assert!(close(to_block, 4.5e6 * 4_294_967_296.0 / POOL_HASHRATE));
}

#[test]
fn miners_peers_blocks_and_payments_list_what_was_wired() {
    let server = serve_filled();
    let miners = get_json(&server, "/api/miners");
    assert_eq!(miners.as_array().map(Vec::len), Some(2));
    assert_eq!(miners[0]["address"], MINER_ADDRESS);
    assert_eq!(miners[0]["worker"], "rig1");
    assert_eq!(miners[0]["protocol"], "stratum");
    assert_eq!(miners[0]["hashrate"], json!(5.0e9));
    assert_eq!(miners[0]["accepted"], 90);

    let peers = get_json(&server, "/api/peers");
    assert_eq!(peers[0]["addr"], "127.0.0.1:49333");
    assert_eq!(peers[0]["inbound"], false);
    assert_eq!(peers[0]["sub_version"], "p2pool-rs/0.1.0");
    assert_eq!(peers[1]["inbound"], true);
    assert_eq!(peers[1]["version"], Value::Null);

    let blocks = get_json(&server, "/api/blocks");
    assert_eq!(blocks[0]["height"], 812_340);
    assert_eq!(blocks[0]["hash"], format!("{:064x}", 0xb10c));
    assert_eq!(blocks[0]["status"], "accepted");
    assert_eq!(blocks[0]["finder"], MINER_ADDRESS);

    let payments = get_json(&server, "/api/payments");
    assert_eq!(payments["current_total"], 312_512_345);
    assert_eq!(payments["current"][0]["address"], MINER_ADDRESS);
    assert_eq!(payments["current"][0]["amount"], 250_000_000);
    assert!(close(
        payments["current"][1]["share"].as_f64().unwrap(),
        62_512_345.0 / 312_512_345.0
    ));
    assert_eq!(payments["paid"][0]["height"], 812_340);
    assert_eq!(payments["paid"][0]["total"], 312_512_345);

    let shares = get_json(&server, "/api/shares?limit=5");
    assert_eq!(shares.as_array().map(Vec::len), Some(5));
    assert_eq!(shares[0]["hash"], format!("{:064x}", 0xabc000));
    assert_eq!(shares[0]["local"], true);
}

#[test]
fn chart_counts_the_published_shares_over_time() {
    let server = serve_filled();
    let chart = get_json(&server, "/api/chart?range=3600&step=300");
    let buckets = chart.as_array().expect("an array");
    assert_eq!(buckets.len(), 12);
    let total: u64 = buckets.iter().map(|b| b["shares"].as_u64().unwrap()).sum();
    let local: u64 = buckets.iter().map(|b| b["local"].as_u64().unwrap()).sum();
    let blocks: u64 = buckets.iter().map(|b| b["blocks"].as_u64().unwrap()).sum();
    // 40 shares 20 s apart: all within the last 800 s.
    assert_eq!(total, 40);
    assert_eq!(local, 14);
    assert_eq!(blocks, 1);
    let starts: Vec<u64> = buckets
        .iter()
        .map(|b| b["start"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[1] == w[0] + 300), "{starts:?}");
}

#[test]
fn chart_carries_the_local_hash_rate_and_stale_rates_sampled_with_each_status() {
    let server = serve_filled();
    let chart = get_json(&server, "/api/chart?range=600&step=60");
    let buckets = chart.as_array().expect("an array");
    assert_eq!(buckets.len(), 10);
    let newest = &buckets[9];
    assert_eq!(
        newest["local_hashrate"],
        json!(6.0e9),
        "the sum over the miners"
    );
    assert!(close(
        newest["local_dead_hashrate"].as_f64().unwrap(),
        5.0e8
    ));
    assert!(close(
        newest["local_stale_prop"].as_f64().unwrap(),
        3.0 / 40.0
    ));
    assert_eq!(newest["pool_hashrate"], json!(POOL_HASHRATE));
    assert_eq!(
        buckets[0]["local_hashrate"],
        Value::Null,
        "no sample before the node's first status"
    );
}

#[test]
fn the_miner_api_gives_an_address_workers_payout_shares_blocks_and_history() {
    let server = serve_filled();
    let m = get_json(
        &server,
        &format!("/api/miner/{MINER_ADDRESS}?range=3600&step=300"),
    );
    assert_eq!(m["address"], MINER_ADDRESS);
    assert_eq!(m["node_payout_address"], true);
    // Its two workers (rig1 on Stratum, the bare address on getwork).
    assert_eq!(m["hashrate"], json!(6.0e9));
    assert!(close(m["dead_hashrate"].as_f64().unwrap(), 5.0e8));
    assert_eq!(
        m["submissions"],
        json!({"accepted": 100, "stale": 5, "rejected": 5})
    );
    assert!(close(m["dead_prop"].as_f64().unwrap(), 10.0 / 110.0));
    assert_eq!(m["workers_total"], 2);
    assert_eq!(m["workers"][0]["worker"], "rig1");
    // The current PPLNS payout.
    assert_eq!(m["payout"]["amount"], 250_000_000);
    assert!(close(
        m["payout"]["share"].as_f64().unwrap(),
        250_000_000.0 / 312_512_345.0
    ));
    // Every third of the 40 newest shares pays it.
    assert_eq!(
        m["shares"],
        json!({"recent": 14, "recent_of": 40, "in_history": 14})
    );
    assert_eq!(m["recent_shares"].as_array().map(Vec::len), Some(14));
    assert!(
        m["recent_shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["address"] == MINER_ADDRESS)
    );
    // The block it found, and the block that paid it.
    assert_eq!(m["blocks"][0]["height"], 812_340);
    assert_eq!(m["blocks"][0]["finder"], MINER_ADDRESS);
    assert_eq!(
        m["paid"],
        json!([{"time": m["paid"][0]["time"], "height": 812_340,
                "hash": format!("{:064x}", 0xb10c), "amount": 312_512_345}])
    );
    assert_eq!(m["paid_total"], 312_512_345);
    // Its history: twelve five-minute steps, the newest with its miners' hash rate.
    let history = m["history"].as_array().expect("a history");
    assert_eq!(history.len(), 12);
    let shares: u64 = history.iter().map(|b| b["shares"].as_u64().unwrap()).sum();
    assert_eq!(shares, 14);
    assert_eq!(history[11]["hashrate"], json!(6.0e9));
    assert!(close(history[11]["dead_hashrate"].as_f64().unwrap(), 5.0e8));
    assert_eq!(history[0]["hashrate"], Value::Null, "not mining then");
    assert!(history.iter().all(|b| b["work"].as_f64().unwrap() >= 0.0));

    // Another address: shares and a payout, no worker on this node.
    let other = get_json(&server, &format!("/api/miner/{OTHER_ADDRESS}"));
    assert_eq!(other["hashrate"], json!(0.0));
    assert_eq!(other["dead_prop"], Value::Null);
    assert_eq!(other["workers"], json!([]));
    assert_eq!(other["payout"]["amount"], 62_512_345);
    assert_eq!(other["shares"]["recent"], 26);
    assert_eq!(other["node_payout_address"], false);
}

#[test]
fn the_miner_history_is_bounded_to_a_day_of_minutes() {
    let server = serve_filled();
    let answer = http(
        server.addr,
        "GET",
        &format!("/api/miner/{MINER_ADDRESS}?range=99999999999&step=0"),
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.len() < 256 * 1024,
        "{} bytes",
        answer.body.len()
    );
    let history = answer.json()["history"].as_array().unwrap().len();
    assert!(
        (1440..=1441).contains(&history),
        "a day of minutes at most: {history}"
    );
}

#[test]
fn miner_pages_answer_400_for_malformed_and_404_for_unknown_addresses() {
    let server = serve_filled();
    let page = http(server.addr, "GET", &format!("/miner/{MINER_ADDRESS}"));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.text().contains("/api/miner/"),
        "the page polls its API"
    );
    // Valid on regtest, and nothing known of it.
    let unknown = "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8";
    for (target, status) in [
        ("/miner/".to_string(), 400),
        ("/miner/not-an-address".into(), 400),
        ("/miner/%3Cscript%3Ealert(1)%3C/script%3E".into(), 400),
        (format!("/miner/{}", "a".repeat(5000)), 400),
        // A mainnet address on a regtest node.
        (
            "/miner/bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".into(),
            400,
        ),
        // A regtest address with a wrong checksum.
        (
            format!("/miner/{}", &MINER_ADDRESS.replace("080", "081")),
            400,
        ),
        (format!("/miner/{unknown}"), 404),
    ] {
        let answer = http(server.addr, "GET", &target);
        assert_eq!(answer.status, status, "{target}: {}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{target}"
        );
        let text = answer.text();
        assert!(text.contains(&format!("{status} ·")), "{target}: {text}");
        assert!(!text.contains("<script"), "nothing echoed as HTML: {text}");
        assert!(text.len() < 2000, "{target}: a short page");
        let api = http(
            server.addr,
            "GET",
            &target.replacen("/miner/", "/api/miner/", 1),
        );
        assert_eq!(api.status, status, "api {target}");
        assert!(api.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[test]
fn every_address_on_the_dashboard_links_to_its_page_with_a_copy_button() {
    let server = serve_filled();
    let html = http(server.addr, "GET", "/").text();
    assert!(html.contains("\"/miner/\" + encodeURIComponent(address)"));
    assert!(html.contains("copyButton(address)"));
    for column in [
        "addressCell(tr, x.address)",
        "addressCell(tr, x.finder",
        "addressCell(tr, m.address",
    ] {
        assert!(html.contains(column), "{column}");
    }
}

#[test]
fn p2pool_compatible_endpoints_keep_the_original_shapes() {
    let server = serve_filled();
    assert_eq!(get_json(&server, "/rate"), json!(POOL_HASHRATE));
    assert_eq!(get_json(&server, "/fee"), json!(0.5));
    assert_eq!(get_json(&server, "/difficulty"), json!(1.5));

    let users = get_json(&server, "/users");
    let fractions: f64 = users
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_f64)
        .sum();
    assert!(close(fractions, 1.0));
    assert!(close(
        users[MINER_ADDRESS].as_f64().unwrap(),
        250_000_000.0 / 312_512_345.0
    ));

    let payouts = get_json(&server, "/current_payouts");
    assert_eq!(payouts[MINER_ADDRESS], json!(2.5));
    assert_eq!(payouts[OTHER_ADDRESS], json!(0.62512345));

    let recent = get_json(&server, "/recent_blocks");
    assert_eq!(
        recent[0],
        json!({"ts": recent[0]["ts"], "hash": format!("{:064x}", 0xb10c),
               "number": 812_340, "share": format!("{:064x}", 0xabc007)})
    );

    let global = get_json(&server, "/global_stats");
    assert_eq!(global["pool_hash_rate"], json!(POOL_HASHRATE));
    assert_eq!(global["pool_nonstale_hash_rate"], json!(1.2e12));
    assert_eq!(global["pool_stale_prop"], json!(0.025));
    assert_eq!(global["min_difficulty"], json!(1.5));
    assert_eq!(global["network_block_difficulty"], json!(4.5e6));
    assert!(close(
        global["network_hashrate"].as_f64().unwrap(),
        4.5e6 * 4_294_967_296.0 / 600.0
    ));

    let local = get_json(&server, "/local_stats");
    let rig = format!("{MINER_ADDRESS}.rig1");
    assert_eq!(local["miner_hash_rates"][&rig], json!(5.0e9));
    assert_eq!(local["miner_hash_rates"][MINER_ADDRESS], json!(1.0e9));
    assert_eq!(local["miner_last_difficulties"][&rig], json!(64.0));
    assert!(close(
        local["miner_dead_hash_rates"][&rig].as_f64().unwrap(),
        5.0e8
    ));
    assert_eq!(
        local["my_share_counts_in_last_hour"],
        json!({"shares": 40, "unstale_shares": 37, "stale_shares": 3,
               "orphan_stale_shares": 2, "doa_stale_shares": 1})
    );
    assert_eq!(
        local["shares"],
        json!({"total": 40, "orphan": 2, "dead": 1})
    );
    assert_eq!(local["peers"], json!({"incoming": 0, "outgoing": 1}));
    assert_eq!(local["block_value"], json!(3.12512345));
    assert_eq!(local["fee"], json!(0.5));
    assert_eq!(local["donation_proportion"], json!(0.0));
    assert!(local["efficiency"].as_f64().is_some());
    assert!(get_json(&server, "/uptime").as_u64().unwrap() >= 3723);
}

#[test]
fn health_is_ok_when_ready_and_503_with_the_reason_otherwise() {
    let server = serve_filled();
    let ok = http(server.addr, "GET", "/health");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["status"], "ok");

    let mut status = filled_status();
    status.ready = false;
    status.not_ready_reason = "p2pool is downloading shares".into();
    status.not_ready_cause = "shares".into();
    status.sync_have = 100;
    status.sync_want = 400;
    let server = WebServer::start(filled_web(status));
    let down = http(server.addr, "GET", "/health");
    assert_eq!(down.status, 503);
    assert_eq!(
        down.json(),
        json!({"status": "unavailable", "reason": "p2pool is downloading shares"})
    );
    let stats = get_json(&server, "/api/stats");
    assert_eq!(stats["sync"]["reason"], "p2pool is downloading shares");
    assert_eq!(stats["sync"]["cause"], "shares");
    assert_eq!(stats["sync"]["progress"], json!(0.25));
}

#[test]
fn before_the_first_status_the_node_is_starting_and_figures_are_null() {
    let board = StatusBoard::new();
    let server = WebServer::start(Web::new(board.clone()));
    let health = http(server.addr, "GET", "/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["reason"], "starting");
    assert_eq!(get_json(&server, "/rate"), Value::Null);
    assert_eq!(get_json(&server, "/global_stats"), Value::Null);
    assert_eq!(get_json(&server, "/local_stats"), Value::Null);
    assert_eq!(get_json(&server, "/api/stats")["best_share"], Value::Null);
    assert_eq!(get_json(&server, "/users"), json!({}));

    // The node publishes: the next request sees it.
    board.publish(filled_status());
    assert_eq!(http(server.addr, "GET", "/health").status, 200);
    assert_eq!(get_json(&server, "/api/stats")["best_share"], BEST_SHARE);
}

#[test]
fn without_miners_the_local_hash_rates_are_zero_never_negative_zero() {
    let board = StatusBoard::new();
    let server = WebServer::start(Web::new(board.clone()));
    board.publish(filled_status());
    let stats = http(server.addr, "GET", "/api/stats").text();
    assert!(stats.contains("\"local_hashrate\":0.0"), "{stats}");
    for path in ["/api/stats", "/local_stats", "/global_stats", "/api/chart"] {
        let text = http(server.addr, "GET", path).text();
        assert!(
            !text.contains(":-0.0") && !text.contains(":-0,"),
            "{path}: {text}"
        );
    }
    let metrics = http(server.addr, "GET", "/metrics").text();
    assert!(
        !metrics.lines().any(|l| l.ends_with(" -0")),
        "a negative zero in /metrics:\n{metrics}"
    );
}

/// Prometheus text format 0.0.4: `# HELP`/`# TYPE` comments, then
/// `name{label="value",...} number` samples of families declared before them.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name");
            assert!(valid_name(name), "bad name in {line:?}");
            if kind == "TYPE" {
                let ty = parts.next().expect("a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                    "{line:?}"
                );
                assert!(
                    types.insert(name.to_owned(), ty.to_owned()).is_none(),
                    "{line:?}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad name in {line:?}");
        assert!(types.contains_key(name), "no TYPE before {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels in {line:?}"));
            check_labels(inner, line);
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{line:?} twice"
        );
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `key="value"` pairs separated by commas, values with `\\`, `\"` and `\n` escapes only.
fn check_labels(mut inner: &str, line: &str) {
    while !inner.is_empty() {
        let (key, rest) = inner
            .split_once("=\"")
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(valid_name(key), "bad label name in {line:?}");
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    let (_, c) = chars.next().unwrap_or_else(|| panic!("{line:?}"));
                    assert!(matches!(c, '\\' | '"' | 'n'), "bad escape in {line:?}");
                }
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("raw newline in {line:?}"),
                Some(_) => {}
                None => panic!("unterminated label in {line:?}"),
            }
        };
        inner = &rest[end + 1..];
        inner = inner.strip_prefix(',').unwrap_or(inner);
    }
}

#[test]
fn metrics_parse_as_prometheus_text_with_the_figures() {
    let server = serve_filled();
    let answer = http(server.addr, "GET", "/metrics");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = parse_prometheus(&answer.text());
    assert_eq!(samples["p2pool_pool_hashrate"], POOL_HASHRATE);
    assert_eq!(samples["p2pool_local_hashrate"], 6.0e9);
    assert_eq!(samples["p2pool_ready"], 1.0);
    assert_eq!(samples["p2pool_shares{state=\"verified\"}"], 8800.0);
    assert_eq!(samples["p2pool_local_shares{kind=\"orphan\"}"], 2.0);
    assert_eq!(samples["p2pool_peers{direction=\"outbound\"}"], 1.0);
    assert_eq!(samples["p2pool_peers{direction=\"connecting\"}"], 1.0);
    assert_eq!(samples["p2pool_miners"], 2.0);
    assert_eq!(samples["p2pool_blocks_found"], 3.0);
    assert_eq!(samples["p2pool_blocks{fate=\"accepted\"}"], 2.0);
    assert_eq!(samples["p2pool_blocks{fate=\"stale\"}"], 1.0);
    assert_eq!(samples["p2pool_blocks_paid"], 2.0);
    assert_eq!(samples["p2pool_blocks_paid_node"], 1.0);
    assert_eq!(samples["p2pool_bitcoind_height"], 812_344.0);
    assert_eq!(
        samples[&format!("p2pool_payout_satoshis{{address=\"{MINER_ADDRESS}\"}}")],
        250_000_000.0
    );
    assert_eq!(
        samples[&format!("p2pool_miner_hashrate{{address=\"{MINER_ADDRESS}\",worker=\"rig1\"}}")],
        5.0e9
    );
}

#[test]
fn metrics_escape_label_values_that_miners_chose() {
    let web = filled_web(filled_status());
    web.set_miners(Arc::new(|| {
        vec![MinerView {
            address: "addr".into(),
            worker: "we\"ird\\name\nx".into(),
            protocol: "stratum".into(),
            hashrate: 7.0,
            ..MinerView::default()
        }]
    }));
    let server = WebServer::start(web);
    let samples = parse_prometheus(&http(server.addr, "GET", "/metrics").text());
    assert_eq!(
        samples["p2pool_miner_hashrate{address=\"addr\",worker=\"we\\\"ird\\\\name\\nx\"}"],
        7.0
    );
}

#[test]
fn the_dashboard_is_one_html_page_using_the_api() {
    let server = serve_filled();
    let page = http(server.addr, "GET", "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"));
    for used in [
        "/api/stats",
        "/api/miners",
        "/api/peers",
        "/api/payments",
        "/api/chart",
    ] {
        assert!(html.contains(used), "the page does not poll {used}");
    }
    assert!(!html.contains("<script src"), "no external scripts");
    assert_eq!(http(server.addr, "GET", "/index.html").text(), html);
}

#[test]
fn unknown_paths_get_404() {
    let server = serve_filled();
    for target in [
        "/nope",
        "/api",
        "/api/",
        "/api/stats/extra",
        "/static/../../etc/passwd",
        "/%00%ff",
        &format!("/{}", "a".repeat(4000)),
    ] {
        let answer = http(server.addr, "GET", target);
        assert_eq!(answer.status, 404, "{target}");
        assert!(answer.text().len() < 200, "the echo is bounded");
    }
    // A query string never changes the route.
    assert_eq!(http(server.addr, "GET", "/rate?x=%zz&&=").status, 200);
    assert_eq!(
        http(server.addr, "GET", "/api/chart?range=-1&step=0").status,
        200
    );
}

#[test]
fn head_gets_the_headers_of_get_without_a_body() {
    let server = serve_filled();
    for target in ["/api/stats", "/", "/metrics", "/health"] {
        let get = http(server.addr, "GET", target);
        let head = http(server.addr, "HEAD", target);
        assert_eq!(head.status, get.status, "{target}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert!(head.body.is_empty(), "{target}: HEAD sent a body");
    }
    let head = http(server.addr, "HEAD", "/nope");
    assert_eq!(head.status, 404);
}

#[test]
fn other_methods_get_405_with_allow() {
    let server = serve_filled();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let answer = http(server.addr, method, "/api/stats");
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn json_answers_are_not_cached_and_readable_cross_origin() {
    let server = serve_filled();
    let answer = http(server.addr, "GET", "/api/stats");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn many_clients_at_once_all_get_answers() {
    let server = serve_filled();
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| http(addr, "GET", "/api/stats").status)
                    .all(|s| s == 200)
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn status_fields_round_trip_through_json_for_the_store() {
    // The node may keep blocks and payments in its store as JSON; every field survives.
    let status = filled_status();
    let text = serde_json::to_string(&status).unwrap();
    let back: PoolStatus = serde_json::from_str(&text).unwrap();
    assert_eq!(back.found_blocks, status.found_blocks);
    assert_eq!(back.paid_blocks, status.paid_blocks);
    assert_eq!(back.recent_shares, status.recent_shares);
}

#[test]
fn peers_come_live_from_the_p2p_side() {
    let net = Network::built_in("regtest").unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let (a, _a_events) = P2p::start(P2pConfig::new(net.clone(), loopback)).unwrap();
    let mut b_config = P2pConfig::new(net, loopback);
    b_config.connect = vec![a.local_addr()];
    let (b, _b_events) = P2p::start(b_config).unwrap();

    let web = Web::new(StatusBoard::new());
    web.set_peers(peer_source(a.peers()));
    let server = WebServer::start(web);

    let deadline = Instant::now() + Duration::from_secs(10);
    let peers = loop {
        let peers = get_json(&server, "/api/peers");
        if peers[0]["version"].is_u64() || Instant::now() > deadline {
            break peers;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");
    assert_eq!(peers[0]["inbound"], true);
    assert!(
        peers[0]["sub_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("p2pool-rs/")),
        "{peers}"
    );
    let stats = get_json(&server, "/api/stats");
    assert_eq!(stats["peers"]["incoming"], 1);
    assert_eq!(stats["peers"]["outgoing"], 0);

    b.stop();
    a.stop();
}
