//! The dashboard in a real browser: headless Chromium loads the page from a running server,
//! the page's scripts poll the JSON API, and the DOM ends up showing the figures the API
//! served (the pool hash rate and the best share). A screenshot is kept at
//! target/dashboard.png.
//!
//! Chromium comes from Debian's `chromium` package (`/usr/bin/chromium`, or the path in
//! `P2POOL_CHROMIUM`). Without it the test is skipped with a message, unless
//! `P2POOL_REQUIRE_BROWSER` is set (as CI sets it), in which case it fails.
//!
//! The server is the one piece to swap: `Dashboard` says where the page is and which
//! figures it must show; `dashboard()` starts one over a filled status.

mod support {
    pub mod web;
}

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use p2pool::web::{StatusBoard, Web};
use support::web::{
    BEST_SHARE, WebServer, filled_status, publish_history, sample_miners, sample_peers,
};

/// Where the dashboard runs and what it must show once its scripts have run.
struct Dashboard {
    url: String,
    /// Texts the rendered DOM must contain.
    expected: Vec<String>,
    /// Keeps the server running while the browser looks.
    _server: WebServer,
}

/// A `Web` over a filled status (six hours of shares for the chart), on a loopback port.
fn dashboard() -> Dashboard {
    let board = StatusBoard::new();
    publish_history(&board, filled_status());
    let web = Web::new(board);
    web.set_peers(std::sync::Arc::new(sample_peers));
    web.set_miners(std::sync::Arc::new(sample_miners));
    let server = WebServer::start(web);
    Dashboard {
        url: format!("http://{}/", server.addr),
        // 1.2345e12 H/s and 6e9 H/s as the page writes them.
        expected: vec![
            "1.23 TH/s".into(),
            "6.00 GH/s".into(),
            BEST_SHARE.into(),
            "regtest".into(),
        ],
        _server: server,
    }
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
    let dashboard = dashboard();
    let limit = Duration::from_secs(90);
    eprintln!("dashboard at {}", dashboard.url);

    let dom = run_chromium(
        &chromium,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            dashboard.url.clone(),
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
    for text in &dashboard.expected {
        assert!(
            html.contains(text.as_str()),
            "the rendered dashboard lacks {text:?}; DOM:\n{html}"
        );
    }
    assert!(
        !html.contains(">connecting<") && !html.contains(">offline<"),
        "the page never got its figures; DOM:\n{html}"
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
            dashboard.url.clone(),
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
            "--window-size=1280,1700".into(),
            dashboard.url.clone(),
        ],
        limit,
    );
}
