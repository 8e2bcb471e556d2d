//! Raw clients for the worker tests: the test miner binary run as a child process, a line
//! client for Stratum, and one-shot HTTP requests written byte by byte.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test miner, running; its output lines are collected.
pub struct TestMiner {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl TestMiner {
    pub fn start(args: &[&str]) -> TestMiner {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2pool-testminer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("test miner starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        TestMiner { child, lines }
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until `count(prefix) >= n`; panics with the output after `within`.
    pub fn wait_for(&self, prefix: &str, n: usize, within: Duration) {
        let start = Instant::now();
        while self.count(prefix) < n {
            assert!(
                start.elapsed() < within,
                "miner: fewer than {n} {prefix:?} lines within {within:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the miner to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(
                start.elapsed() < within,
                "miner still running:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestMiner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Stratum connection speaking lines of JSON. Notifications read while waiting for a
/// reply are kept, in order, for `notification`.
pub struct LineClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    pending: VecDeque<Value>,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("stratum connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        LineClient {
            stream,
            reader,
            pending: VecDeque::new(),
        }
    }

    /// How long a read may wait (5 s unless set).
    pub fn set_read_timeout(&self, within: Duration) {
        self.stream.set_read_timeout(Some(within)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn send(&mut self, v: Value) {
        self.send_raw(format!("{v}\n").as_bytes());
    }

    /// The next line, or `None` when the server closed the connection (or 5 s passed).
    pub fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the server sends JSON lines")),
        }
    }

    /// Reads until a line with this id, keeping the notifications read meanwhile;
    /// `None` if closed.
    pub fn reply(&mut self, id: &Value) -> Option<Value> {
        loop {
            let v = self.read()?;
            if v.get("method").is_none() && &v["id"] == id {
                return Some(v);
            }
            if v.get("method").is_some() {
                self.pending.push_back(v);
            }
        }
    }

    /// The oldest notification of `method` not taken yet (kept ones first, then read).
    pub fn notification(&mut self, method: &str) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(|v| v["method"] == method) {
            return self.pending.remove(i);
        }
        loop {
            let v = self.read()?;
            if v["method"] == method {
                return Some(v);
            }
        }
    }

    /// Forgets the notifications kept so far.
    pub fn clear_notifications(&mut self) {
        self.pending.clear();
    }

    /// The newest kept notification of `method` (the others of it are dropped), if any.
    pub fn latest_kept(&mut self, method: &str) -> Option<Value> {
        let latest = self
            .pending
            .iter()
            .rev()
            .find(|v| v["method"] == method)
            .cloned();
        self.pending.retain(|v| v["method"] != method);
        latest
    }

    /// True when the server closed the connection within 5 s.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => return true,
            }
        }
        false
    }
}

/// An HTTP answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `request` (raw bytes) and reads one answer (the server closes or Content-Length).
pub fn http_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let _ = stream.write_all(request);
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    loop {
        status_line.clear();
        reader.read_line(&mut status_line).ok()?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            continue;
        }
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let mut body = Vec::new();
        match len {
            Some(n) => {
                body.resize(n, 0);
                reader.read_exact(&mut body).ok()?;
            }
            None => {
                let _ = reader.read_to_end(&mut body);
            }
        }
        return Some(Answer {
            status,
            headers,
            body,
        });
    }
}

/// A JSON-RPC POST to `/` (or `path`) with Basic auth for `user`.
pub fn rpc_request(path: &str, user: &str, body: &str, extra: &str) -> Vec<u8> {
    let auth = p2pool::worker::http::base64_encode(format!("{user}:x").as_bytes());
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         User-Agent: test\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn rpc(addr: SocketAddr, user: &str, body: &str) -> Answer {
    http_raw(
        addr,
        &rpc_request("/", user, body, ""),
        Duration::from_secs(10),
    )
    .expect("an HTTP answer")
}
