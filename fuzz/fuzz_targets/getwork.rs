//! getwork (worker/getwork.rs, worker/http.rs): the submitted `data` reader, directly, and
//! JSON-RPC bodies POSTed to the real getwork server on loopback (the body parser,
//! `json_rpc`, is private and needs a request). In the body, `$D` becomes the `data` of a
//! real unit fetched from the server (so a submission reaches the solution checks).
//!
//! Asserts: a header read from `data` is written back the same by `WorkUnit`; the server
//! never panics, answers within 10 s with 200 or 400, and a 200 body is empty (a null id) or a
//! JSON-RPC answer.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2pool::worker::getwork::{WorkUnit, decode_data};
use p2pool::worker::http::base64_encode;
use p2pool_fuzz::{linger_zero, live_workers, replace_all};
use ruint::aliases::U256;
use serde_json::Value;

/// POSTs `body` to `/`; the status and body of the answer.
fn post(body: &[u8]) -> (u16, Vec<u8>) {
    let live = live_workers();
    let mut stream = TcpStream::connect(live.workers.worker_addr()).expect("connects");
    linger_zero(&stream);
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = base64_encode(format!("{}:x", live.address).as_bytes());
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).expect("request sent");
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "getwork server silent for 10 s"
        );
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.as_bytes().to_vec())
}

/// A current unit's `data`, fetched again every minute (units are remembered 300 s).
fn unit_data() -> String {
    static UNIT: Mutex<Option<(Instant, String)>> = Mutex::new(None);
    let mut unit = UNIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, data)) = unit.as_ref()
        && at.elapsed() < Duration::from_secs(60)
    {
        return data.clone();
    }
    let (status, body) = post(br#"{"method":"getwork","params":[],"id":1}"#);
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    let data = answer["result"]["data"]
        .as_str()
        .expect("a unit")
        .to_string();
    *unit = Some((Instant::now(), data.clone()));
    data
}

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input)
        && let Ok(header) = decode_data(text)
    {
        let unit = WorkUnit::new(&header, U256::ZERO, None);
        let again = decode_data(&unit.data).expect("a unit's data decodes");
        let mut bare = header;
        bare.nonce = 0;
        assert_eq!(again, bare);
    }
    let body = if input.windows(2).any(|w| w == b"$D") {
        replace_all(input, b"$D", unit_data().as_bytes())
    } else {
        input.to_vec()
    };
    let (status, answer) = post(&body);
    match status {
        200 if answer.is_empty() => {} // a request with a null id: no reply body
        200 => {
            let answer: Value = serde_json::from_slice(&answer).expect("a JSON answer");
            assert!(answer.get("id").is_some(), "{answer}");
            assert!(answer.get("result").is_some() || answer.get("error").is_some());
        }
        400 => {}
        other => panic!("getwork answered {other}"),
    }
});
