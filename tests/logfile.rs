//! `--logfile`: a real `p2pool` process writes its log to the file as well as stderr,
//! reopens the file on SIGHUP (so logrotate can rename it away), and never writes the
//! RPC password. The node points at a dead bitcoind port: logging needs no Bitcoin node.

mod support {
    pub mod bcoin;
    pub mod procs;
}

use std::path::Path;
use std::time::Duration;

use support::procs::{NodeProc, free_port, signal, wait_until};

const PASSWORD: &str = "hunter2-secret";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_log_file_gets_the_log_is_reopened_on_sighup_and_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let logfile = dir.path().join("p2pool.log");
    let rotated = dir.path().join("p2pool.log.1");
    let dead = free_port().to_string();
    let args: Vec<String> = [
        "--net",
        "regtest",
        "--bitcoind-rpc-port",
        &dead,
        "--bitcoind-p2p-port",
        "0",
        "--logfile",
        &logfile.display().to_string(),
        "rpcuser",
        PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = NodeProc::start("a", &dir.path().join("data"), &args);

    // The start-up lines land in the file: the banner and the configuration summary,
    // with the password redacted.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let text = read(&logfile);
            text.contains("p2pool ") && text.contains("starting") && text.contains("<redacted>")
        }),
        "the start-up lines never reached {}:\n{}\n{}",
        logfile.display(),
        read(&logfile),
        node.dump()
    );
    assert!(node.wait_http(Duration::from_secs(20)), "{}", node.dump());
    let first = read(&logfile);
    assert!(
        first.contains("rpcuser"),
        "the summary names the RPC user:\n{first}"
    );

    // logrotate's way: rename the file away, then SIGHUP. The node writes on at the
    // original path, in a new file.
    std::fs::rename(&logfile, &rotated).unwrap();
    assert!(!logfile.exists());
    signal(node.pid(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || read(&logfile)
            .contains("SIGHUP: reopening the log file")),
        "no new log file at {} after SIGHUP:\n{}\n{}",
        logfile.display(),
        read(&logfile),
        node.dump()
    );
    assert!(
        node.is_running(),
        "SIGHUP stopped the node\n{}",
        node.dump()
    );
    // The reopen happens before the SIGHUP line is written, so that line is only in the
    // new file; the renamed file keeps the start-up lines.
    let old = read(&rotated);
    assert!(
        !old.contains("SIGHUP: reopening"),
        "the SIGHUP line went to the renamed file:\n{old}"
    );
    assert!(old.contains("starting"), "{old}");

    // Later lines go to the new file too, up to the last one at shutdown.
    let (status, took, stderr) = node.terminate();
    assert!(status.success(), "exit {status:?}\n{}", stderr.join("\n"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let new = read(&logfile);
    assert!(
        new.contains("SIGTERM received") && new.contains("stopped cleanly"),
        "the shutdown lines are not in the reopened file:\n{new}"
    );
    assert!(
        new.lines().count() >= 3,
        "the reopened file has too few lines:\n{new}"
    );

    // The password is in neither file nor on stderr.
    for (what, text) in [
        ("the first log file", read(&rotated)),
        ("the reopened log file", new),
        ("stderr", stderr.join("\n")),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the RPC password is in {what}:\n{text}"
        );
    }
}
