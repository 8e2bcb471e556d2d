//! The dashboard of a running node in a real browser: a `p2pool` process on regtest
//! (against the shared bcoin) with the test miner on it, and once the node has shares,
//! headless Chromium loads the page from the worker port; the page's scripts poll the JSON
//! API, and the DOM ends up showing the live figures the API serves (the network, the best
//! share, the share count, the miner, tiny regtest figures with their significant digits),
//! its charts draw the pool and local hash rates and the stale/dead rates, and every
//! address links to its miner page. The miner's page (`/miner/ADDRESS`) then shows its
//! address, its worker and its charts. Screenshots are kept at target/dashboard.png,
//! target/dashboard-full.png and target/miner.png.
//!
//! Chromium comes from Debian's `chromium` package (`/usr/bin/chromium`, or the path in
//! `P2POOL_CHROMIUM`). Without it the test is skipped with a message, unless
//! `P2POOL_REQUIRE_BROWSER` is set (as CI sets it), in which case it fails.

mod support {
    pub mod bcoin;
    pub mod procs;
}

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bcoin::Bcoin;
use support::procs::{MinerProc, NodeProc, bcoin_args, wait_until};

const MINER_ADDRESS: &str = "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8";

/// A node on regtest with a getwork miner on it, once the node holds shares.
struct LiveNode {
    node: NodeProc,
    _miner: MinerProc,
    _dir: tempfile::TempDir,
}

fn live_node() -> LiveNode {
    let bcoin = Bcoin::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--net".to_string(), "regtest".to_string()];
    args.extend(bcoin_args(bcoin));
    let node = NodeProc::start("node", &dir.path().join("node"), &args);
    assert!(node.wait_http(Duration::from_secs(20)), "{}", node.dump());
    let miner = MinerProc::start(&[
        "--url".into(),
        format!("http://127.0.0.1:{}/", node.worker),
        "--user".into(),
        MINER_ADDRESS.into(),
        "--protocol".into(),
        "getwork".into(),
        "--hashrate".into(),
        "300".into(),
    ]);
    let has_shares = wait_until(Duration::from_secs(90), || {
        node.json("/api/stats").is_some_and(|s| {
            s["best_share"].as_str().is_some_and(|h| h.len() == 64)
                && s["shares"]["in_chain"].as_u64().unwrap_or(0) > 0
                // Two shares or more: a pool hash rate, and an expected time to a block.
                && s["pool_hashrate"].as_f64().unwrap_or(0.0) > 0.0
        }) && node
            .json("/api/miners")
            .is_some_and(|m| m.to_string().contains(MINER_ADDRESS))
    });
    assert!(
        has_shares,
        "the node never got shares from its miner\n{}\nminer:\n{}",
        node.dump(),
        miner.log().join("\n")
    );
    LiveNode {
        node,
        _miner: miner,
        _dir: dir,
    }
}

/// The markup inside the element with `id` up to `end` (e.g. an SVG's `</svg>`).
fn section<'a>(html: &'a str, id: &str, end: &str) -> &'a str {
    html.split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|t| t.split(end).next())
        .unwrap_or_default()
}

/// The text of the element with `id` in a dumped DOM (no nested elements expected).
fn element_text<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let open = format!("id=\"{id}\"");
    let at = html.find(&open)?;
    let rest = &html[at + open.len()..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(&rest[..rest.find('<')?])
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("P2POOL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

/// Runs Chromium headless with a fresh profile; kills it after `limit`.
fn run_chromium(chromium: &Path, args: &[String], limit: Duration) -> Output {
    let profile = tempfile::tempdir().expect("temp profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Drain both pipes while waiting: Chromium is chatty on stderr, and a full pipe would
    // stall it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

#[test]
fn the_dashboard_shows_live_figures_in_a_browser() {
    let Some(chromium) = chromium() else {
        if std::env::var_os("P2POOL_REQUIRE_BROWSER").is_some() {
            panic!(
                "P2POOL_REQUIRE_BROWSER is set but chromium is missing (apt-get install chromium)"
            );
        }
        eprintln!(
            "SKIPPED the_dashboard_shows_live_figures_in_a_browser: no chromium at /usr/bin/chromium \
             (apt-get install chromium, or set P2POOL_CHROMIUM); set P2POOL_REQUIRE_BROWSER to fail instead"
        );
        return;
    };
    let live = live_node();
    let node = &live.node;
    let url = format!("http://127.0.0.1:{}/", node.worker);
    let limit = Duration::from_secs(90);
    eprintln!("dashboard at {url}");

    // The figures as the API gives them just before the browser looks; the miner keeps
    // finding shares, so the page may show later ones.
    let before: Value = node.json("/api/stats").expect("/api/stats answers");
    let best_before = before["best_share"].as_str().unwrap().to_string();
    let in_chain_before = before["shares"]["in_chain"].as_u64().unwrap();

    let dom = run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        limit,
    );
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success() && !html.is_empty(),
        "chromium failed ({}); stderr:\n{}",
        dom.status,
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        !html.contains(">connecting<") && !html.contains(">offline<"),
        "the page never got its figures; DOM:\n{html}"
    );
    let after: Value = node.json("/api/stats").expect("/api/stats answers");
    eprintln!("chart note: {:?}", element_text(&html, "chart-note"));

    // The network, exactly.
    assert_eq!(
        element_text(&html, "network"),
        Some("regtest"),
        "the network badge; DOM:\n{html}"
    );

    // The best share: the one the API gave before, or a later share of the node's chain.
    let best_dom = element_text(&html, "best-share")
        .unwrap_or_else(|| panic!("no best share on the page; DOM:\n{html}"))
        .to_string();
    assert!(
        best_dom.len() == 64 && best_dom.bytes().all(|b| b.is_ascii_hexdigit()),
        "the best share is not a 64-hex hash: {best_dom:?}"
    );
    if best_dom != best_before {
        let chain = node.json("/api/shares").expect("/api/shares answers");
        let known = best_dom == after["best_share"].as_str().unwrap_or_default()
            || chain
                .as_array()
                .is_some_and(|l| l.iter().any(|s| s["hash"] == best_dom.as_str()));
        assert!(
            known,
            "the page's best share {best_dom} is neither the API's ({best_before}) nor one of \
             the node's shares: {chain}"
        );
    }
    // The short form in the header matches the full hash.
    let short = element_text(&html, "best-share-short").unwrap_or_default();
    assert!(
        short.starts_with(&best_dom[..6]) && short.ends_with(&best_dom[54..]),
        "header {short:?} vs best share {best_dom}"
    );

    // The share count: non-zero, at least the API's earlier figure, at most its later one.
    let in_chain_dom: u64 = element_text(&html, "shares-chain")
        .map(|t| t.replace([',', '.', ' ', '\u{a0}'], ""))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no share count on the page; DOM:\n{html}"));
    let in_chain_after = after["shares"]["in_chain"].as_u64().unwrap();
    assert!(
        in_chain_dom > 0 && in_chain_dom >= in_chain_before && in_chain_dom <= in_chain_after,
        "the page shows {in_chain_dom} shares in the chain; the API said {in_chain_before} \
         before and {in_chain_after} after"
    );

    // The miner: on the miner list (connected over getwork) and as the payee of shares.
    let miners = section(&html, "miners", "</tbody>");
    assert!(
        miners.contains(MINER_ADDRESS) && miners.contains("getwork"),
        "the miner is not on the page's miner list: {miners}"
    );
    let shares = section(&html, "shares", "</tbody>");
    assert!(
        shares.contains(MINER_ADDRESS) && shares.contains(&best_dom[..6]),
        "the recent shares do not show the miner's best share: {shares}"
    );

    // Every address links to its page, with a copy button.
    assert!(
        miners.contains(&format!("href=\"/miner/{MINER_ADDRESS}\""))
            && shares.contains(&format!("href=\"/miner/{MINER_ADDRESS}\""))
            && miners.contains(">copy<"),
        "the miner's address does not link to its page: {miners}"
    );

    // Regtest's tiny figures keep their significant digits.
    let difficulty = element_text(&html, "share-diff").unwrap_or_default();
    assert!(
        difficulty.parse::<f64>().is_ok_and(|d| d > 0.0),
        "the share difficulty reads {difficulty:?}; the API says {}",
        after["share_difficulty"]
    );
    let to_block = element_text(&html, "time-to-block").unwrap_or_default();
    assert!(
        !to_block.is_empty() && to_block != "0 s" && to_block != "–",
        "expected time to block {to_block:?}; the API says {}",
        after["expected_time_to_block"]
    );
    let block_diff = element_text(&html, "block-diff").unwrap_or_default();
    assert!(
        !block_diff.contains("0.00 ") && !block_diff.contains(" 0 H/s"),
        "the block difficulty and network rate read {block_diff:?}"
    );

    // A new node's chart covers its uptime (10 min, not 6 h), and draws the pool's hash
    // rate (blue) and the local one (purple), as a line or, this early, as dots.
    assert!(
        section(&html, "ranges", "</span>").contains("class=\"on\">10 min<"),
        "the chart's range does not follow the uptime: {}",
        section(&html, "ranges", "</span>")
    );
    let chart = section(&html, "chart", "</svg>");
    assert!(
        chart.contains("#3b6fd8") && chart.contains("#7a3fc4"),
        "the chart has no pool or local hash rate: {chart}"
    );
    let stale_chart = section(&html, "stale-chart", "</svg>");
    assert!(
        stale_chart.contains("#d64545"),
        "the stale/dead chart has no dead rate: {stale_chart}"
    );

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    let shot = target.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
            url.clone(),
        ],
        limit,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}); stderr:\n{}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    eprintln!("screenshot of the dashboard: {}", shot.display());

    // The whole page too, for a reviewer's eyes.
    let full = target.join("dashboard-full.png");
    run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", full.display()),
            "--window-size=1280,1900".into(),
            url.clone(),
        ],
        limit,
    );

    // The miner's page: its address in full, its worker, its figures and its charts.
    let miner_url = format!("http://127.0.0.1:{}/miner/{MINER_ADDRESS}", node.worker);
    let dom = run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            miner_url.clone(),
        ],
        limit,
    );
    let html = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        element_text(&html, "address"),
        Some(MINER_ADDRESS),
        "the full address; DOM:\n{html}"
    );
    assert!(
        section(&html, "address-copy", "</span>").contains(">copy<"),
        "no copy button by the address"
    );
    assert!(
        section(&html, "workers", "</tbody>").contains("getwork"),
        "its getwork worker is not listed; DOM:\n{html}"
    );
    let hashrate = element_text(&html, "hashrate").unwrap_or_default();
    assert!(
        hashrate.ends_with("H/s") && hashrate != "0 H/s",
        "its hash rate reads {hashrate:?}"
    );
    let payout = element_text(&html, "payout").unwrap_or_default();
    assert!(payout.ends_with(" BTC"), "its payout reads {payout:?}");
    let chart = section(&html, "chart", "</svg>");
    assert!(
        chart.contains("#7a3fc4") && chart.contains("<rect"),
        "the hash-rate chart has no hash rate or shares: {chart}"
    );
    assert!(
        section(&html, "dead-chart", "</svg>").contains("<line"),
        "the dead-rate chart is not drawn"
    );
    let shot = target.join("miner.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1300".into(),
            miner_url,
        ],
        limit,
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {} ({e})", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    eprintln!("screenshot of the miner page: {}", shot.display());
}
