//! `scripts/demo.sh` (`make demo`) as a user runs it, with the test profile's binaries
//! (`P2POOL_DEMO_BIN`, so no release build) and its own `TMPDIR`: a port taken by another
//! program stops it at once with the port and the knob to move it, and Ctrl-C (SIGINT to
//! its whole process group, as a terminal sends it) stops every process and leaves nothing
//! in the temporary directory, bcoin's data directory and cookie included.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Liveness bound of every wait: generous, never a speed claim.
const WITHIN: Duration = Duration::from_secs(60);

/// The demo, running in its own process group; stdout and stderr lines are collected.
struct Demo {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    fn start(tmp: &Path, base: u16, nodes: u8) -> Demo {
        let bin = Path::new(env!("CARGO_BIN_EXE_p2pool"))
            .parent()
            .expect("the binaries' folder")
            .to_path_buf();
        // SIGINT as a terminal leaves it: a test run started in the background of a script
        // inherits SIGINT ignored, and bash cannot trap a signal ignored at its start.
        // (`env --default-signal` is coreutils 9; without it, bash as it comes.)
        let resets = Command::new("env")
            .args(["--default-signal=INT", "true"])
            .status()
            .is_ok_and(|s| s.success());
        let mut command = if resets {
            let mut c = Command::new("env");
            c.args(["--default-signal=INT", "bash"]);
            c
        } else {
            Command::new("bash")
        };
        let mut child = command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"))
            .env("TMPDIR", tmp)
            .env("P2POOL_DEMO_BIN", bin)
            .env("P2POOL_DEMO_PORT", base.to_string())
            .env("P2POOL_DEMO_NODES", nodes.to_string())
            .env_remove("P2POOL_DEMO_DIR")
            .env_remove("P2POOL_DEMO_KEEP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("env runs bash scripts/demo.sh (env from GNU coreutils 9 or later)");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        Demo { child, out, err }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.lock().unwrap().join("\n"),
            self.err.lock().unwrap().join("\n")
        )
    }

    fn wait_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.out.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(200)); // the last lines
                panic!(
                    "the demo exited ({status}) before {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < WITHIN,
                "no {needle:?} line within {WITHIN:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < WITHIN,
                "the demo did not exit within {WITHIN:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the demo's whole process group, as a terminal's Ctrl-C does.
    fn signal_group(&self, signal: &str) {
        let status = Command::new("kill")
            .args([
                &format!("-{signal}"),
                "--",
                &format!("-{}", self.child.id()),
            ])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test must not leave the demo running: kill its group.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// A first demo port such that every port the demo takes for `nodes` nodes is free, below
/// the kernel's ephemeral range.
fn free_base(nodes: u16) -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Tests of this binary run side by side: each call starts elsewhere.
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let low = ephemeral.saturating_sub(10_000).max(2_000);
    let start = (std::process::id() % 300) as u16 + 100 * CALLS.fetch_add(1, Ordering::Relaxed);
    for k in 0..300u16 {
        let base = low + ((start + k) % 300) * 30;
        let free = (0..nodes)
            .flat_map(|i| (0..3).map(move |d| base + 10 * i + d))
            .all(|p| TcpListener::bind(("0.0.0.0", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free range of demo ports");
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in entries(Path::new("/proc")) {
        if let Ok(cmdline) = std::fs::read(entry.join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(text) {
                found.push(format!("{}: {cmdline}", entry.display()));
            }
        }
    }
    found
}

#[test]
fn demo_with_a_port_taken_stops_at_once_naming_the_port_and_the_knob_to_move_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    // Another program holds node 1's P2P port.
    let taken = base + 11;
    let _other = TcpListener::bind(("127.0.0.1", taken)).unwrap();
    let mut demo = Demo::start(tmp.path(), base, 3);
    let status = demo.wait_exit();
    let output = demo.output();
    assert_eq!(status.code(), Some(2), "{output}");
    let stderr = demo.err.lock().unwrap().join("\n");
    assert!(
        stderr.contains(&format!("port {taken} (node 1 P2P)"))
            && stderr.contains("P2POOL_DEMO_PORT"),
        "{output}"
    );
    assert!(!output.contains("dashboard"), "no URL is printed: {output}");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
}

#[test]
fn demo_stopped_by_ctrl_c_stops_every_process_and_leaves_nothing_in_the_temporary_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_text = tmp.path().display().to_string();
    let base = free_base(2);
    let mut demo = Demo::start(tmp.path(), base, 2);
    let dashboard = demo.wait_line("node 0 dashboard");
    assert!(
        dashboard.contains(&format!("http://127.0.0.1:{base}/")),
        "{dashboard}"
    );
    // Each node's log is a file in the demo's folder, named on its line.
    let log = dashboard
        .split("(log: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no log path in {dashboard:?}"));
    assert!(log.starts_with(tmp.path()), "{}", log.display());
    // A status line: the nodes answer, and the log holds the node's start-up lines.
    demo.wait_line("bitcoin height");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("p2pool") && text.contains("starting"),
        "{text}"
    );
    // bcoin's data directory (with its cookie) is in the same temporary directory.
    let bcoin_dirs = entries(tmp.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("p2pool-bcoin."))
        .count();
    assert_eq!(bcoin_dirs, 1, "{:?}", entries(tmp.path()));
    assert!(!processes_mentioning(&tmp_text).is_empty());

    demo.signal_group("INT");
    let status = demo.wait_exit();
    assert!(status.success(), "{status}:\n{}", demo.output());
    assert!(
        entries(tmp.path()).is_empty(),
        "left behind: {:?}\n{}",
        entries(tmp.path()),
        demo.output()
    );
    let start = Instant::now();
    while !processes_mentioning(&tmp_text).is_empty() {
        assert!(
            start.elapsed() < WITHIN,
            "still running: {:?}",
            processes_mentioning(&tmp_text)
        );
        thread::sleep(Duration::from_millis(100));
    }
}
