//! `p2pool` and `p2pool-testminer` as separate processes, for end-to-end tests: free
//! ports, a fresh data dir, the log captured, HTTP GETs on the worker port, SIGTERM.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::bcoin::Bcoin;

/// A port nothing listens on right now, below the kernel's ephemeral range, so that no
/// outgoing connection of a test running beside this one takes it before a process binds
/// it; never the same port twice in this test binary.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The ephemeral range starts at 32768 unless the host says otherwise.
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral >= 12_000 {
        let (low, span) = (ephemeral - 10_000, 10_000);
        // Binaries start apart, by their process id.
        let _ = NEXT.compare_exchange(
            0,
            std::process::id() % span + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..span {
            let port = (low + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
            // p2pool listens on [::] where the host has IPv6, else on 0.0.0.0.
            let v4 = TcpListener::bind(("0.0.0.0", port)).is_ok();
            if v4 && (!ipv6() || TcpListener::bind(("::", port)).is_ok()) {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether this host has IPv6 sockets.
fn ipv6() -> bool {
    static IPV6: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IPV6.get_or_init(|| TcpListener::bind("[::1]:0").is_ok())
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Captures a child's stderr (and stdout) lines into a shared buffer.
fn capture(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>, echo: &'static str) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if std::env::var_os("P2POOL_TEST_ECHO").is_some() {
                eprintln!("[{echo}] {line}");
            }
            into.lock().unwrap().push(line);
        }
    });
}

/// A running `p2pool` process.
pub struct NodeProc {
    pub name: &'static str,
    child: Child,
    pub worker: u16,
    pub p2p: u16,
    pub stratum: u16,
    pub datadir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// What a node is started with besides its ports and data dir.
pub fn bcoin_args(bcoin: &Bcoin) -> Vec<String> {
    vec![
        "--bitcoind-rpc-port".into(),
        bcoin.rpc_port.to_string(),
        "--bitcoind-p2p-port".into(),
        bcoin.p2p_port.to_string(),
        "--bitcoind-datadir".into(),
        bcoin.datadir.display().to_string(),
    ]
}

impl NodeProc {
    /// Starts `p2pool` with fresh ports on `datadir` and `args` (network, bitcoind, peers).
    pub fn start(name: &'static str, datadir: &Path, args: &[String]) -> NodeProc {
        let (worker, p2p, stratum) = (free_port(), free_port(), free_port());
        NodeProc::start_on(name, datadir, args, (worker, p2p, stratum))
    }

    pub fn start_on(
        name: &'static str,
        datadir: &Path,
        args: &[String],
        ports: (u16, u16, u16),
    ) -> NodeProc {
        NodeProc::start_bound(name, datadir, args, ports, None)
    }

    /// [`NodeProc::start_on`], every port bound to `bind` only when given (`-w ADDR:PORT`).
    pub fn start_bound(
        name: &'static str,
        datadir: &Path,
        args: &[String],
        (worker, p2p, stratum): (u16, u16, u16),
        bind: Option<&str>,
    ) -> NodeProc {
        let at = |port: u16| match bind {
            Some(ip) => format!("{ip}:{port}"),
            None => port.to_string(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2pool"))
            .args(args)
            .args(["-w", &at(worker)])
            .args(["--p2pool-port", &at(p2p)])
            .args(["--stratum-port", &at(stratum)])
            .arg("--datadir")
            .arg(datadir)
            .env("RUST_LOG", "debug,ureq=warn,ureq_proto=warn,tiny_http=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pool");
        let log = Arc::new(Mutex::new(Vec::new()));
        capture(child.stderr.take().unwrap(), log.clone(), name);
        capture(child.stdout.take().unwrap(), log.clone(), name);
        NodeProc {
            name,
            child,
            worker,
            p2p,
            stratum,
            datadir: datadir.to_path_buf(),
            log,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The log, for a failing assertion's message.
    pub fn dump(&self) -> String {
        let log = self.log();
        let tail = log.len().saturating_sub(80);
        format!("--- {} log ---\n{}", self.name, log[tail..].join("\n"))
    }

    /// GET `path` on the worker port: status and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.worker, path)
    }

    /// GET `path` as JSON, once the node answers 200.
    pub fn json(&self, path: &str) -> Option<serde_json::Value> {
        match self.get(path)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    pub fn wait_http(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.get("/health").is_some())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process ends at once, without a chance to clean up; the log so far.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        thread::sleep(Duration::from_millis(100));
        self.log()
    }

    /// SIGTERM, then the exit status and how long the exit took (SIGKILL after 20 s).
    pub fn terminate(mut self) -> (ExitStatus, Duration, Vec<String>) {
        let start = Instant::now();
        signal(self.child.id(), "TERM");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                return (status, start.elapsed(), self.log());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A minimal HTTP/1.0 GET on loopback; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A running test miner.
pub struct MinerProc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl MinerProc {
    pub fn start(args: &[String]) -> MinerProc {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_p2pool-testminer")).args(args))
    }

    /// At the lowest CPU priority (`nice -n 19`), as a miner on its own hardware would be:
    /// an unthrottled miner hashing on every core must not starve the nodes under test.
    #[allow(dead_code)]
    pub fn start_niced(args: &[String]) -> MinerProc {
        Self::spawn(
            Command::new("nice")
                .args(["-n", "19", env!("CARGO_BIN_EXE_p2pool-testminer")])
                .args(args),
        )
    }

    fn spawn(command: &mut Command) -> MinerProc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pool-testminer");
        let log = Arc::new(Mutex::new(Vec::new()));
        capture(child.stderr.take().unwrap(), log.clone(), "miner");
        capture(child.stdout.take().unwrap(), log.clone(), "miner");
        MinerProc { child, log }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MinerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
