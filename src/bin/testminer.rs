//! p2pool-testminer: a small CPU miner that speaks getwork with long polling and Stratum v1
//! the way cpuminer and cpuminer-multi do, for tests and demos.
//!
//!     p2pool-testminer --url http://127.0.0.1:49332/ --user ADDRESS [--protocol getwork]
//!     p2pool-testminer --url stratum+tcp://127.0.0.1:49334 --user ADDRESS
//!
//! Options: `--pass P`, `--threads N` (1), `--duration SECS`, `--shares N` (stop after N
//! accepted), `--hashrate H` (at most H hashes per second per thread; 0: unthrottled), `--chunked` (send
//! getwork bodies chunked with Content-Length and `Expect: 100-continue`, as
//! cpuminer-multi), `--version-rolling` (Stratum: mining.configure, 6-parameter submits).
//! It prints one line per event (`work …`, `accepted`, `rejected REASON`) and a final
//! `summary accepted=N rejected=M`.
//!
//! With getwork it first asks for a block template, as cpuminer does, and mines with getwork
//! whatever the answer (`gbt refused (…); falling back to getwork` when it is an error, with
//! or without a code, as the original P2Pool's -32601). Replies may be chunked
//! (`Transfer-Encoding: chunked`, as Twisted sends them) or sized; bodies over 32 MiB and
//! head lines over 8 KiB are refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use p2pool::bitcoin::hash::sha256d;
use p2pool::thread::lock;
use p2pool::worker::getwork::swap4;
use p2pool::worker::http::base64_encode;
use p2pool::worker::miners::difficulty_to_target;
use ruint::aliases::U256;
use serde_json::{Value, json};

const USER_AGENT: &str = "cpuminer/2.5.1 (p2pool-testminer)";

#[derive(Debug, Clone)]
struct Options {
    url: String,
    user: String,
    pass: String,
    protocol: String,
    threads: usize,
    duration: Option<Duration>,
    shares: Option<u64>,
    hashrate: Option<f64>,
    chunked: bool,
    version_rolling: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: p2pool-testminer --url URL --user ADDRESS [--pass P] [--protocol getwork|stratum] \
         [--threads N] [--duration SECS] [--shares N] [--hashrate H] [--chunked] [--version-rolling]"
    );
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut o = Options {
        url: String::new(),
        user: String::new(),
        pass: "x".into(),
        protocol: String::new(),
        threads: 1,
        duration: None,
        shares: None,
        hashrate: None,
        chunked: false,
        version_rolling: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--url" | "-o" => o.url = value(),
            "--user" | "-u" => o.user = value(),
            "--pass" | "-p" => o.pass = value(),
            "--protocol" => o.protocol = value(),
            "--threads" | "-t" => o.threads = value().parse().unwrap_or_else(|_| usage()),
            "--duration" => {
                o.duration = Some(Duration::from_secs_f64(
                    value().parse().unwrap_or_else(|_| usage()),
                ))
            }
            "--shares" => o.shares = Some(value().parse().unwrap_or_else(|_| usage())),
            "--hashrate" => {
                let rate: f64 = value().parse().unwrap_or_else(|_| usage());
                // 0 (or less): as fast as it can hash.
                o.hashrate = (rate > 0.0 && rate.is_finite()).then_some(rate);
            }
            "--chunked" => o.chunked = true,
            "--version-rolling" => o.version_rolling = true,
            "--help" | "-h" => usage(),
            _ => usage(),
        }
    }
    if o.url.is_empty() || o.user.is_empty() {
        usage();
    }
    if o.protocol.is_empty() {
        o.protocol = if o.url.starts_with("stratum") {
            "stratum".into()
        } else {
            "getwork".into()
        };
    }
    o.threads = o.threads.clamp(1, 8);
    o
}

/// Starts a named thread (through `p2pool::thread`); panics if it cannot, as
/// `std::thread::spawn` does.
fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    p2pool::thread::spawn(name, f).unwrap_or_else(|e| panic!("cannot start thread {name}: {e}"))
}

/// Counters and the stop flag shared by every thread.
struct Run {
    options: Options,
    stop: AtomicBool,
    accepted: AtomicU64,
    rejected: AtomicU64,
    started: Instant,
}

impl Run {
    fn stopping(&self) -> bool {
        if let Some(d) = self.options.duration
            && self.started.elapsed() >= d
        {
            self.stop.store(true, Ordering::Relaxed);
        }
        if let Some(n) = self.options.shares
            && self.accepted.load(Ordering::Relaxed) >= n
        {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.stop.load(Ordering::Relaxed)
    }

    fn result(&self, ok: bool, reason: &str) {
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            say("accepted");
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            say(&format!("rejected {reason}"));
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Paces one mining thread to at most `rate` hashes per second, across every work it
/// mines (a new work does not start a new allowance).
struct Throttle {
    rate: Option<f64>,
    since: Instant,
    hashes: f64,
}

impl Throttle {
    fn new(rate: Option<f64>) -> Throttle {
        Throttle {
            rate,
            since: Instant::now(),
            hashes: 0.0,
        }
    }

    /// Hashes to do before pacing again.
    fn batch(&self) -> u32 {
        // About 20 batches per second, so a slow rate is not spent in one burst.
        self.rate
            .map_or(1024, |r| (r / 20.0).clamp(1.0, 1024.0) as u32)
    }

    /// Waits until `n` more hashes are due.
    fn pace(&mut self, n: u32) {
        let Some(rate) = self.rate else {
            return;
        };
        self.hashes += f64::from(n);
        let due = Duration::from_secs_f64(self.hashes / rate);
        let spent = self.since.elapsed();
        if due > spent {
            thread::sleep(due - spent);
        }
        // Forget the distant past, so a stall (no work) is not made up for later.
        if self.since.elapsed() > Duration::from_secs(5) {
            self.since = Instant::now();
            self.hashes = 0.0;
        }
    }
}

/// Hashes `header` with nonces `start, start + step, …`; calls `found` for each hash at or
/// below `target`, until `generation` moves from `mine` or the run stops.
fn scan(
    run: &Run,
    throttle: &mut Throttle,
    (generation, mine): (&AtomicU64, u64),
    header: [u8; 80],
    target: U256,
    (start, step): (u32, u32),
    mut found: impl FnMut(u32),
) {
    let mut header = header;
    let mut nonce = start;
    loop {
        let batch = throttle.batch();
        throttle.pace(batch);
        if run.stopping() || generation.load(Ordering::Relaxed) != mine {
            return;
        }
        for _ in 0..batch {
            header[76..80].copy_from_slice(&nonce.to_le_bytes());
            if sha256d(&header).to_u256() <= target {
                found(nonce);
            }
            nonce = nonce.wrapping_add(step);
            if nonce < step {
                return; // the nonce space is done: ask for new work
            }
        }
    }
}

// ---------------------------------------------------------------- getwork over HTTP

struct HttpTarget {
    host: String,
    path: String,
}

fn parse_http_url(url: &str) -> Option<HttpTarget> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some(HttpTarget {
        host: host.to_string(),
        path: path.to_string(),
    })
}

struct HttpAnswer {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn ok(&self) -> bool {
        self.status.split_whitespace().nth(1) == Some("200")
    }

    /// The body as JSON (`Null` when it is not JSON).
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The largest reply body read (a block template with thousands of transactions fits).
const MAX_BODY: u64 = 32 << 20;

/// Reads a reply body: chunked (`Transfer-Encoding: chunked`, as Twisted answers HTTP/1.1
/// requests, so the original P2Pool), or `Content-Length` bytes, or up to the close; at most
/// `MAX_BODY` bytes either way.
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Result<Vec<u8>, String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        header("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut line = String::new();
            reader
                .by_ref()
                .take(1024)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if !line.ends_with('\n') {
                return Err(format!("bad chunk size line {line:?}"));
            }
            let digits = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(digits, 16)
                .map_err(|_| format!("bad chunk size {digits:?}"))?;
            if size == 0 {
                // Trailers, if any, end with an empty line; the connection closes after it.
                loop {
                    let mut trailer = String::new();
                    let n = reader
                        .by_ref()
                        .take(8192)
                        .read_line(&mut trailer)
                        .map_err(|e| e.to_string())?;
                    if n == 0 || trailer.trim_end().is_empty() {
                        return Ok(body);
                    }
                }
            }
            if body.len() as u64 + size > MAX_BODY {
                return Err(format!("reply body over {MAX_BODY} bytes"));
            }
            let start = body.len();
            body.resize(start + size as usize, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|e| format!("chunk cut short: {e}"))?;
            let mut end = [0u8; 2];
            reader
                .read_exact(&mut end)
                .map_err(|e| format!("chunk cut short: {e}"))?;
            if &end != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
    if let Some(length) = header("Content-Length") {
        let length: u64 = length
            .trim()
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if length > MAX_BODY {
            return Err(format!("reply body over {MAX_BODY} bytes"));
        }
        reader
            .take(length)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        if (body.len() as u64) < length {
            return Err("reply cut short".into());
        }
        return Ok(body);
    }
    reader
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > MAX_BODY {
        return Err(format!("reply body over {MAX_BODY} bytes"));
    }
    Ok(body)
}

/// One JSON-RPC call over a fresh connection (Connection: close), no client timeout; the
/// answer whatever its status (see `rpc`).
fn exchange(options: &Options, host: &str, path: &str, body: &Value) -> Result<HttpAnswer, String> {
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    let auth = base64_encode(format!("{}:{}", options.user, options.pass).as_bytes());
    let body = body.to_string();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/json\r\n\
         X-Mining-Extensions: midstate\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if options.chunked {
        head.push_str("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        // The body follows without waiting for `100 Continue` (which the answer loop
        // below skips).
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        stream
            .write_all(chunked.as_bytes())
            .map_err(|e| e.to_string())?;
    } else {
        head.push_str("\r\n");
        head.push_str(&body);
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let mut reader = BufReader::new(stream);
    let mut status;
    let mut headers = Vec::new();
    loop {
        status = head_line(&mut reader)?;
        headers.clear();
        loop {
            let line = head_line(&mut reader)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if headers.len() >= 100 {
                return Err("more than 100 reply headers".into());
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        if !status.contains(" 100 ") {
            break;
        }
    }
    let body = read_body(&mut reader, &headers)?;
    Ok(HttpAnswer {
        status: status.trim().to_string(),
        headers,
        body,
    })
}

/// One line of a reply's head (at most 8 KiB, ending in a line feed).
fn head_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader
        .by_ref()
        .take(8192)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !line.ends_with('\n') {
        return Err(if line.is_empty() {
            "connection closed before the reply".into()
        } else {
            format!(
                "reply head line cut short or over 8 KiB: {:?}",
                line.get(..80).unwrap_or(&line)
            )
        });
    }
    Ok(line)
}

/// An answered JSON-RPC call: HTTP 200 and a JSON body.
struct RpcAnswer {
    headers: Vec<(String, String)>,
    body: Value,
}

impl RpcAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One JSON-RPC call; an error unless the answer is HTTP 200 with a JSON body.
fn rpc(options: &Options, host: &str, path: &str, body: &Value) -> Result<RpcAnswer, String> {
    let answer = exchange(options, host, path, body)?;
    if !answer.ok() {
        return Err(format!("HTTP {}", answer.status));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("bad JSON: {e}"))?;
    Ok(RpcAnswer {
        headers: answer.headers,
        body,
    })
}

struct GetworkUnit {
    header: [u8; 80],
    target: U256,
}

fn read_unit(result: &Value) -> Option<GetworkUnit> {
    let data = hex::decode(result.get("data")?.as_str()?).ok()?;
    let target = hex::decode(result.get("target")?.as_str()?).ok()?;
    if data.len() != 128 || target.len() != 32 {
        return None;
    }
    let mut bytes = data;
    swap4(&mut bytes);
    let mut header = [0u8; 80];
    header.copy_from_slice(&bytes[..80]);
    let mut t = [0u8; 32];
    t.copy_from_slice(&target);
    Some(GetworkUnit {
        header,
        target: U256::from_le_bytes(t),
    })
}

fn getwork(run: &Arc<Run>) -> Result<(), String> {
    let options = &run.options;
    let target = parse_http_url(&options.url).ok_or("the url must be http://HOST:PORT/")?;
    // cpuminer asks for a block template first and mines with getwork when that fails in
    // any way: an error with or without a code (the original P2Pool answers -32601, unknown
    // method), an HTTP error status, a body that is not JSON. This miner has no
    // getblocktemplate mining: it mines with getwork whatever the answer, and says why.
    let gbt = exchange(
        options,
        &target.host,
        &target.path,
        &json!({"method": "getblocktemplate", "params": [{"capabilities": ["coinbasetxn"]}], "id": 0}),
    )?;
    let answer = gbt.json();
    if gbt.ok() && answer["error"].is_null() && !answer["result"].is_null() {
        say("gbt answered; mining with getwork");
    } else if answer.is_null() {
        say(&format!(
            "gbt refused (HTTP {}, no JSON); falling back to getwork",
            gbt.status
        ));
    } else {
        say(&format!(
            "gbt refused ({}); falling back to getwork",
            answer["error"]
        ));
    }
    let work: Arc<Mutex<Option<GetworkUnit>>> = Arc::new(Mutex::new(None));
    let generation = Arc::new(AtomicU64::new(0));
    let fetch = |run: &Run| -> Result<Option<String>, String> {
        let answer = rpc(
            &run.options,
            &target.host,
            &target.path,
            &json!({"method": "getwork", "params": [], "id": 0}),
        )?;
        let unit = read_unit(&answer.body["result"])
            .ok_or_else(|| format!("no work: {}", answer.body["error"]))?;
        *lock(&work) = Some(unit);
        generation.fetch_add(1, Ordering::Relaxed);
        say("work getwork");
        Ok(answer.header("X-Long-Polling").map(str::to_string))
    };
    let long_poll = loop {
        match fetch(run) {
            Ok(lp) => break lp,
            Err(e) => {
                say(&format!("error {e}"));
                if run.stopping() {
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(500));
            }
        }
    };
    if let Some(long_poll) = long_poll {
        // A relative path is joined to the URL; a full http:// URL names its own host.
        let (host, path) = match parse_http_url(&long_poll) {
            Some(other) => (other.host, other.path),
            None if long_poll.starts_with('/') => (target.host.clone(), long_poll),
            None => (target.host.clone(), format!("/{long_poll}")),
        };
        let run = run.clone();
        let work = work.clone();
        let generation = generation.clone();
        spawn("longpoll", move || {
            while !run.stopping() {
                match rpc(
                    &run.options,
                    &host,
                    &path,
                    &json!({"method": "getwork", "params": [], "id": 0}),
                ) {
                    Ok(answer) => {
                        if let Some(unit) = read_unit(&answer.body["result"]) {
                            *lock(&work) = Some(unit);
                            generation.fetch_add(1, Ordering::Relaxed);
                            say("work longpoll");
                        } else {
                            thread::sleep(Duration::from_millis(200));
                        }
                    }
                    Err(e) => {
                        say(&format!("error long poll: {e}"));
                        thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        });
    }
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let run = run.clone();
        let work = work.clone();
        let generation = generation.clone();
        let host = target.host.clone();
        let path = target.path.clone();
        handles.push(spawn(&format!("mine_{t}"), move || {
            let mut throttle = Throttle::new(run.options.hashrate);
            while !run.stopping() {
                let mine = generation.load(Ordering::Relaxed);
                let Some((header, target)) = lock(&work).as_ref().map(|u| (u.header, u.target))
                else {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let step = run.options.threads as u32;
                scan(
                    &run,
                    &mut throttle,
                    (&generation, mine),
                    header,
                    target,
                    (t as u32, step),
                    |nonce| {
                        let mut data = [0u8; 128];
                        data[..80].copy_from_slice(&header);
                        data[76..80].copy_from_slice(&nonce.to_le_bytes());
                        data[80] = 0x80;
                        data[126] = 0x02;
                        data[127] = 0x80;
                        swap4(&mut data);
                        let call =
                            json!({"method": "getwork", "params": [hex::encode(data)], "id": 1});
                        match rpc(&run.options, &host, &path, &call) {
                            Ok(answer) => {
                                let ok = answer.body["result"] == json!(true);
                                let reason = answer.header("X-Reject-Reason").unwrap_or("false");
                                run.result(ok, reason);
                            }
                            Err(e) => run.result(false, &e),
                        }
                    },
                );
                // The nonce range is done or the work moved: without a long poll, refresh.
                if generation.load(Ordering::Relaxed) == mine && !run.stopping() {
                    let answer = rpc(
                        &run.options,
                        &host,
                        &path,
                        &json!({"method": "getwork", "params": [], "id": 0}),
                    );
                    if let Ok(a) = answer
                        && let Some(unit) = read_unit(&a.body["result"])
                    {
                        *lock(&work) = Some(unit);
                        generation.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

// ---------------------------------------------------------------- Stratum

#[derive(Clone)]
struct StratumJob {
    id: String,
    prevhash: Vec<u8>,
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<Vec<u8>>,
    version: u32,
    nbits: u32,
    ntime: u32,
    target: U256,
}

fn stratum(run: &Arc<Run>) -> Result<(), String> {
    let options = &run.options;
    let host = options
        .url
        .strip_prefix("stratum+tcp://")
        .ok_or("the url must be stratum+tcp://HOST:PORT")?
        .trim_end_matches('/')
        .to_string();
    let stream = TcpStream::connect(&host).map_err(|e| format!("connect {host}: {e}"))?;
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(|e| e.to_string())?));
    let send = {
        let writer = writer.clone();
        move |v: Value| {
            let mut w = lock(&writer);
            let _ = w.write_all(format!("{v}\n").as_bytes());
        }
    };
    let mut reader = BufReader::new(stream);
    if options.version_rolling {
        send(json!({"id": 0, "method": "mining.configure",
            "params": [["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]}));
    }
    send(json!({"id": 1, "method": "mining.subscribe", "params": ["p2pool-testminer/0.1"]}));
    let mut mask = 0u32;
    let (en1, en2_size) = loop {
        let v = read_json_line(&mut reader)?;
        if v["id"] == json!(0) {
            mask = v["result"]["version-rolling.mask"]
                .as_str()
                .and_then(|m| u32::from_str_radix(m, 16).ok())
                .unwrap_or(0);
        } else if v["id"] == json!(1) {
            let en1 = hex::decode(v["result"][1].as_str().unwrap_or_default())
                .map_err(|_| format!("bad subscribe answer: {v}"))?;
            let size = v["result"][2].as_u64().unwrap_or(0) as usize;
            if !(1..=100).contains(&size) {
                return Err(format!("bad extranonce2 size: {v}"));
            }
            break (en1, size);
        }
    };
    send(json!({"id": 2, "method": "mining.authorize", "params": [options.user, options.pass]}));
    let job: Arc<Mutex<Option<StratumJob>>> = Arc::new(Mutex::new(None));
    let generation = Arc::new(AtomicU64::new(0));
    let mut difficulty = 1.0f64;
    let mut authorized = false;
    // Before authorizing, read in this thread; then a reader thread takes over.
    while !authorized {
        let v = read_json_line(&mut reader)?;
        if v["id"] == json!(2) {
            if v["result"] != json!(true) {
                say(&format!("unauthorized {}", v["error"]));
                return Err(format!("authorize refused: {}", v["error"]));
            }
            authorized = true;
            send(json!({"id": 3, "method": "mining.extranonce.subscribe", "params": []}));
        } else {
            handle_stratum_message(run, &v, &job, &generation, &mut difficulty);
        }
    }
    {
        let run = run.clone();
        let job = job.clone();
        let generation = generation.clone();
        spawn("stratum_read", move || {
            loop {
                match read_json_line(&mut reader) {
                    Ok(v) => handle_stratum_message(&run, &v, &job, &generation, &mut difficulty),
                    Err(e) => {
                        say(&format!("error {e}"));
                        run.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
    }
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let run = run.clone();
        let job = job.clone();
        let generation = generation.clone();
        let send = send.clone();
        let en1 = en1.clone();
        handles.push(spawn(&format!("mine_{t}"), move || {
            let mut en2_counter: u64 = (t as u64) << 56;
            let mut throttle = Throttle::new(run.options.hashrate);
            while !run.stopping() {
                let mine = generation.load(Ordering::Relaxed);
                let Some(j) = lock(&job).clone() else {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                };
                en2_counter += 1;
                let mut en2 = en2_counter.to_le_bytes().to_vec();
                en2.resize(en2_size, 0);
                let mut coinbase = j.coinb1.clone();
                coinbase.extend_from_slice(&en1);
                coinbase.extend_from_slice(&en2);
                coinbase.extend_from_slice(&j.coinb2);
                let mut root = sha256d(&coinbase).0;
                for step in &j.branch {
                    let mut pair = root.to_vec();
                    pair.extend_from_slice(step);
                    root = sha256d(&pair).0;
                }
                let version = if mask != 0 {
                    (j.version & !mask) | ((t as u32 + 1) << 13 & mask)
                } else {
                    j.version
                };
                let mut header = [0u8; 80];
                header[0..4].copy_from_slice(&version.to_le_bytes());
                let mut prev = j.prevhash.clone();
                swap4(&mut prev);
                header[4..36].copy_from_slice(&prev);
                header[36..68].copy_from_slice(&root);
                header[68..72].copy_from_slice(&j.ntime.to_le_bytes());
                header[72..76].copy_from_slice(&j.nbits.to_le_bytes());
                scan(
                    &run,
                    &mut throttle,
                    (&generation, mine),
                    header,
                    j.target,
                    (0, 1),
                    |nonce| {
                        let mut params = vec![
                            json!(run.options.user),
                            json!(j.id),
                            json!(hex::encode(&en2)),
                            json!(format!("{:08x}", j.ntime)),
                            json!(format!("{nonce:08x}")),
                        ];
                        if mask != 0 {
                            params.push(json!(format!("{:08x}", version & mask)));
                        }
                        send(json!({"id": 4, "method": "mining.submit", "params": params}));
                    },
                );
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn read_json_line(reader: &mut BufReader<TcpStream>) -> Result<Value, String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    serde_json::from_str(&line).map_err(|e| format!("bad line {line:?}: {e}"))
}

fn handle_stratum_message(
    run: &Run,
    v: &Value,
    job: &Mutex<Option<StratumJob>>,
    generation: &AtomicU64,
    difficulty: &mut f64,
) {
    match v["method"].as_str() {
        Some("mining.set_difficulty") => {
            if let Some(d) = v["params"][0].as_f64() {
                *difficulty = d;
            }
        }
        Some("mining.notify") => {
            let p = &v["params"];
            let hexv =
                |i: usize| hex::decode(p[i].as_str().unwrap_or_default()).unwrap_or_default();
            let word =
                |i: usize| u32::from_str_radix(p[i].as_str().unwrap_or_default(), 16).unwrap_or(0);
            let branch = p[4]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| hex::decode(h.as_str().unwrap_or_default()).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            let new = StratumJob {
                id: p[0].as_str().unwrap_or_default().to_string(),
                prevhash: hexv(1),
                coinb1: hexv(2),
                coinb2: hexv(3),
                branch,
                version: word(5),
                nbits: word(6),
                ntime: word(7),
                target: difficulty_to_target(*difficulty),
            };
            if new.prevhash.len() != 32 {
                say(&format!("error bad notify {v}"));
                return;
            }
            *lock(job) = Some(new);
            generation.fetch_add(1, Ordering::Relaxed);
            say(&format!("work stratum clean={}", p[8]));
        }
        Some("mining.ping") => {}
        Some(_) => {}
        None => {
            if v["id"] == json!(4) {
                let ok = v["result"] == json!(true);
                let reason = v["error"][1].as_str().unwrap_or("false").to_string();
                run.result(ok, &reason);
            }
        }
    }
}

fn main() -> ExitCode {
    let options = parse_args();
    let run = Arc::new(Run {
        options,
        stop: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        started: Instant::now(),
    });
    let result = match run.options.protocol.as_str() {
        "getwork" => getwork(&run),
        "stratum" => stratum(&run),
        _ => usage(),
    };
    say(&format!(
        "summary accepted={} rejected={}",
        run.accepted.load(Ordering::Relaxed),
        run.rejected.load(Ordering::Relaxed)
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pool-testminer: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_chunked_body_is_joined_across_chunks_with_extensions_and_trailers() {
        let wire = b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: y\r\n\r\n";
        let body = read_body(
            &mut &wire[..],
            &headers(&[("Transfer-Encoding", "chunked")]),
        );
        assert_eq!(body.as_deref(), Ok(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn a_chunked_body_over_the_bound_or_malformed_is_refused_without_reading_it_all() {
        let chunked = headers(&[("Transfer-Encoding", "chunked")]);
        // A chunk announced larger than the bound is refused before its bytes are read.
        let huge = format!("{:x}\r\n", MAX_BODY + 1);
        let err = read_body(&mut huge.as_bytes(), &chunked).unwrap_err();
        assert!(err.contains("over"), "{err}");
        // A size line that never ends is refused after 1 KiB.
        let endless = vec![b'1'; 1 << 20];
        assert!(read_body(&mut &endless[..], &chunked).is_err());
        // Not hexadecimal, a cut chunk, a chunk without its CRLF.
        assert!(read_body(&mut &b"zz\r\n"[..], &chunked).is_err());
        assert!(read_body(&mut &b"8\r\nabc"[..], &chunked).is_err());
        assert!(read_body(&mut &b"3\r\nabcXY0\r\n\r\n"[..], &chunked).is_err());
    }

    #[test]
    fn a_sized_body_reads_content_length_bytes_and_an_unsized_one_up_to_the_close() {
        let sized = read_body(&mut &b"abcdef"[..], &headers(&[("Content-Length", "3")]));
        assert_eq!(sized.as_deref(), Ok(&b"abc"[..]));
        assert!(read_body(&mut &b"ab"[..], &headers(&[("Content-Length", "3")])).is_err());
        let unsized_body = read_body(&mut &b"abc"[..], &[]);
        assert_eq!(unsized_body.as_deref(), Ok(&b"abc"[..]));
    }
}
