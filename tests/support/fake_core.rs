//! A fake Bitcoin Core JSON-RPC server, only for what a real bcoin cannot show (Core's
//! `inconclusive` and `bad-cb-height` answers, a rule this node does not know).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use serde_json::{Value, json};

/// Serves `answer(method, params) -> result` on a free loopback port, answering as Core
/// answers a JSON-RPC 2.0 request (HTTP 200, `result` alone). Returns the port.
pub fn serve<F>(answer: F) -> u16
where
    F: Fn(&str, &Value) -> Value + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let port = listener.local_addr().expect("local address").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = read_body(&stream) else {
                continue;
            };
            let method = request["method"].as_str().unwrap_or_default().to_string();
            let result = answer(&method, &request["params"]);
            let body = json!({"jsonrpc": "2.0", "result": result, "id": request["id"]});
            respond(&mut stream, &body.to_string());
        }
    });
    port
}

fn read_body(stream: &TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

fn respond(stream: &mut TcpStream, body: &str) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}
