//! Stratum v1 lines (worker/stratum.rs), through the real server on loopback: the request
//! parser has no public function of its own (it is `Session::handle_line`, which needs a
//! connection), so the input is sent as a miner would, one line at a time, on a new
//! connection, each line followed by a `mining.ping` whose answer says the line was handled.
//!
//! Placeholders let the fuzzer refer to what the server sent: `$J` becomes the last job id,
//! `$T` the last job's ntime, `$A` a valid payout address.
//!
//! Asserts: the server never panics, answers every line within 10 s or closes the
//! connection, and every line it sends is a JSON object.
#![no_main]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use p2pool_fuzz::{linger_zero, live_workers, replace_all};
use serde_json::Value;

#[derive(Default)]
struct Seen {
    job: String,
    ntime: String,
}

/// Reads the server's lines until the answer to ping `marker`; false when the connection
/// closed first.
fn read_until(reader: &mut BufReader<TcpStream>, marker: &str, seen: &mut Seen) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("stratum server silent for 10 s")
            }
            Err(_) => return false,
        }
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(&line) else {
            panic!("stratum server sent a line that is not a JSON object: {line:?}");
        };
        if msg.get("id").and_then(Value::as_str) == Some(marker) {
            return true;
        }
        if msg.get("method").and_then(Value::as_str) == Some("mining.notify")
            && let Some(params) = msg.get("params").and_then(Value::as_array)
        {
            if let Some(job) = params.first().and_then(Value::as_str) {
                seen.job = job.to_string();
            }
            if let Some(ntime) = params.get(7).and_then(Value::as_str) {
                seen.ntime = ntime.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let live = live_workers();
    let stream = TcpStream::connect(live.workers.stratum_addr()).expect("connects");
    linger_zero(&stream);
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut seen = Seen::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line = replace_all(line, b"$J", seen.job.as_bytes());
        let line = replace_all(&line, b"$T", seen.ntime.as_bytes());
        let mut line = replace_all(&line, b"$A", live.address.as_bytes());
        let marker = format!("fuzz-{i}");
        line.push(b'\n');
        line.extend_from_slice(
            format!("{{\"id\":\"{marker}\",\"method\":\"mining.ping\"}}\n").as_bytes(),
        );
        if writer.write_all(&line).is_err() {
            return;
        }
        if !read_until(&mut reader, &marker, &mut seen) {
            return;
        }
    }
});
