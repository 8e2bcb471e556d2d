//! The HTTP server on the worker port (tiny_http): JSON-RPC getwork on `POST /`, long
//! polling on `/long-polling` (parked in the long-poll thread, not in a handler thread),
//! and every other request handed to the web side through `WebRoutes`.
//!
//! Bodies are read up to a cap (tiny_http decodes chunked bodies, which win over a
//! Content-Length, and answers `Expect: 100-continue` when the body is read); a body still
//! on the socket is read on an `http_body` thread within a deadline (`body`), so slow
//! clients never hold the handler threads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use serde_json::{Value, json};
use tiny_http::{Header, Limits, Method, Request, Response, Server};

use super::body;
use super::longpoll::LongPollHandle;
use super::service::{self, ClientInfo, RpcError, Service};
use super::{LOG, Shared, WorkerError};
use crate::thread::Waker;

/// A handler thread's pause after an error from the server's queue (a failed accept).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What the web side (dashboard, JSON API) answers on the worker port.
pub trait WebRoutes: Send + Sync {
    /// The reply to a request that is neither JSON-RPC nor a long poll, or `None` for 404.
    /// `path` has no query string; `query` is what followed `?` (may be empty).
    fn handle(&self, method: &str, path: &str, query: &str) -> Option<HttpReply>;
}

/// A reply from the web side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl HttpReply {
    pub fn json(value: &Value) -> HttpReply {
        HttpReply {
            status: 200,
            content_type: "application/json".into(),
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }
}

pub const LONG_POLL_PATH: &str = "/long-polling";

/// The running HTTP server.
pub(crate) struct HttpServer {
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    /// Unblocks every handler thread at the workers' shutdown.
    _wake: Waker,
}

/// What a handler thread needs.
pub(crate) struct Context {
    pub service: Arc<Service>,
    pub longpoll: LongPollHandle,
    pub web: Option<Arc<dyn WebRoutes>>,
    /// Threads reading request bodies.
    pub readers: Arc<body::Readers>,
}

impl HttpServer {
    pub fn start(
        shared: Arc<Shared>,
        longpoll: LongPollHandle,
        web: Option<Arc<dyn WebRoutes>>,
    ) -> Result<HttpServer, WorkerError> {
        let config = &shared.config;
        let addr = config.worker_addr;
        let listener = crate::limits::listen(addr).map_err(|source| WorkerError::Bind {
            what: "getwork",
            addr,
            source,
        })?;
        let limits = Limits {
            max_connections: config.max_http_connections,
            read_timeout: config.http_timeout,
            write_timeout: config.http_timeout,
            head_timeout: config.http_timeout,
            // A chunked body's framing may double it at most, for an honest client.
            max_chunked_wire: 2 * config.max_body + 64 * 1024,
        };
        let server = Server::from_listener_limited(listener, None, limits).map_err(|e| {
            WorkerError::Bind {
                what: "getwork",
                addr,
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let server = Arc::new(server);
        let context = Arc::new(Context {
            service: longpoll.service(),
            longpoll,
            web,
            readers: Arc::default(),
        });
        let count = shared.config.http_threads.max(1);
        let wake = {
            let server = server.clone();
            shared.shutdown.on_stop(move || {
                for _ in 0..count {
                    server.unblock();
                }
            })
        };
        let mut threads = Vec::new();
        for i in 0..count {
            let server = server.clone();
            let context = context.clone();
            let s = shared.clone();
            let t = crate::thread::spawn(&format!("http_{i}"), move || {
                while !s.stopping() {
                    match server.recv() {
                        Ok(request) => handle(&context, request),
                        // Unblocked at shutdown, or an accept that failed (the server's
                        // own thread goes on accepting).
                        Err(e) => {
                            if !s.stopping() {
                                debug!(target: LOG, "http: {e}");
                                s.shutdown.sleep(ACCEPT_ERROR_PAUSE);
                            }
                        }
                    }
                }
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.shutdown.stop();
                    return Err(WorkerError::Spawn(e));
                }
            }
        }
        Ok(HttpServer {
            threads,
            addr: bound,
            _wake: wake,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Joins the handler threads, which end at the workers' shutdown.
    pub fn stop(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn make_header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// The user name of an HTTP Basic Authorization header.
pub fn basic_username(authorization: &str) -> String {
    let Some(encoded) = authorization
        .strip_prefix("Basic ")
        .or_else(|| authorization.strip_prefix("basic "))
    else {
        return String::new();
    };
    let decoded = base64_decode(encoded.trim()).unwrap_or_default();
    let text = String::from_utf8_lossy(&decoded);
    text.split(':').next().unwrap_or_default().to_string()
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` on a bad character.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub(crate) fn client_info(request: &Request) -> ClientInfo {
    let authorization = header(request, "Authorization")
        .unwrap_or_default()
        .to_string();
    let extensions = header(request, "X-Mining-Extensions").unwrap_or_default();
    let work_identifier =
        extensions.contains("workidentifier") || header(request, "X-Work-Identifier").is_some();
    ClientInfo {
        ip: request
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
        username: basic_username(&authorization),
        authorization,
        memory: service::memory_of(
            header(request, "User-Agent").unwrap_or_default(),
            work_identifier,
        ),
    }
}

/// The headers of every getwork and long-poll reply.
pub(crate) fn getwork_headers(request: &Request, stratum_port: u16) -> Vec<Header> {
    let host = header(request, "Host")
        .map(|h| {
            if let Some(rest) = h.strip_prefix('[') {
                format!("[{}]", rest.split(']').next().unwrap_or_default())
            } else {
                h.split(':').next().unwrap_or_default().to_string()
            }
        })
        .filter(|h| !h.is_empty() && h.len() < 256)
        .unwrap_or_else(|| "127.0.0.1".into());
    [
        ("Content-Type", "application/json".to_string()),
        ("X-Long-Polling", LONG_POLL_PATH.to_string()),
        ("X-Roll-NTime", "expire=60".to_string()),
        ("X-Stratum", format!("stratum+tcp://{host}:{stratum_port}")),
    ]
    .iter()
    .filter_map(|(n, v)| make_header(n, v))
    .collect()
}

/// A JSON-RPC reply body (R's envelope); `None` for a request with a null id.
pub(crate) fn envelope(id: &Value, result: Result<Value, RpcError>) -> Option<String> {
    if id.is_null() {
        return None;
    }
    let body = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result, "error": null}),
        Err(RpcError {
            code: Some(code),
            message,
        }) => json!({
            "jsonrpc": "2.0", "id": id, "result": null,
            "error": {"code": code, "message": message, "data": null},
        }),
        Err(RpcError {
            code: None,
            message,
        }) => json!({"jsonrpc": "2.0", "id": id, "result": null, "error": {"message": message}}),
    };
    Some(body.to_string())
}

pub(crate) fn respond(request: Request, status: u16, body: String, headers: Vec<Header>) {
    let mut response = Response::from_string(body).with_status_code(status);
    for h in headers {
        response.add_header(h);
    }
    if let Err(e) = request.respond(response) {
        debug!(target: LOG, "http reply not sent: {e}");
    }
}

fn handle(context: &Arc<Context>, request: Request) {
    if !body::on_socket(&request) {
        return dispatch(context, request);
    }
    // The body may come slowly: read it on a thread of its own, not a handler thread.
    if let Some(slot) = context.readers.enter() {
        let context = context.clone();
        let spawned = crate::thread::spawn("http_body", move || {
            let _slot = slot;
            dispatch(&context, request);
        });
        if let Err(e) = spawned {
            warn!(target: LOG, "cannot start an http body reader: {e}");
        }
        return;
    }
    // Never on a handler thread: the request is refused unread (its connection then
    // closes, since the body is left on the socket).
    warn!(target: LOG, "{} http bodies being read: one more refused", body::MAX_READERS);
    let _ = request.respond(
        Response::from_string("too many request bodies being read, try again")
            .with_status_code(503),
    );
}

/// Reads the body (when there is one to read) and answers the request.
fn dispatch(context: &Context, mut request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let shared = &context.service.shared;
    let stratum_port = shared.stratum_addr.port();
    let body = body::read(&mut request, shared.config.max_body, body::DEADLINE);
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            warn!(target: LOG, "http request from {:?} refused: {e}", request.remote_addr());
            let headers = make_header("Connection", "close").into_iter().collect();
            return respond(request, e.status(), e.to_string(), headers);
        }
    };
    if path == LONG_POLL_PATH {
        let client = client_info(&request);
        if context.service.should_park(&client) {
            context.longpoll.park(request, client);
        } else {
            let headers = getwork_headers(&request, stratum_port);
            let body = envelope(&json!(0), context.service.get_work(&client)).unwrap_or_default();
            respond(request, 200, body, headers);
        }
        return;
    }
    if *request.method() == Method::Post && path == "/" {
        return json_rpc(context, request, &body, stratum_port);
    }
    let method = request.method().as_str().to_string();
    let reply = context
        .web
        .as_ref()
        .and_then(|web| web.handle(&method, path, query));
    match reply {
        Some(reply) => {
            let mut headers: Vec<Header> = reply
                .headers
                .iter()
                .filter_map(|(n, v)| make_header(n, v))
                .collect();
            headers.extend(make_header("Content-Type", &reply.content_type));
            let mut response = Response::from_data(reply.body).with_status_code(reply.status);
            for h in headers {
                response.add_header(h);
            }
            let _ = request.respond(response);
        }
        None => respond(request, 404, "not found".into(), vec![]),
    }
}

fn json_rpc(context: &Context, request: Request, body: &[u8], stratum_port: u16) {
    let mut headers = getwork_headers(&request, stratum_port);
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let Ok(Value::Object(call)) = parsed else {
        let body = envelope(
            &json!(0),
            Err(RpcError::new(-32600, "bad request: not a JSON-RPC object")),
        );
        return respond(request, 400, body.unwrap_or_default(), headers);
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or("");
    let params = match call.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            let body = envelope(&id, Err(RpcError::new(-32600, "bad request: params")));
            return respond(request, 200, body.unwrap_or_default(), headers);
        }
    };
    let result = match (method, params.as_slice()) {
        ("getwork", []) => context.service.get_work(&client_info(&request)),
        ("getwork", [Value::String(data)]) => match context.service.submit(data) {
            Ok(None) => Ok(json!(true)),
            Ok(Some(reason)) => {
                headers.extend(make_header("X-Reject-Reason", reason));
                Ok(json!(false))
            }
            Err(e) => Err(e),
        },
        ("getwork", _) => Err(RpcError::new(-32602, "getwork takes at most one parameter")),
        ("getblocktemplate", _) => Err(RpcError {
            code: None,
            message: "use getwork or stratum".into(),
        }),
        _ => Err(RpcError::new(-32601, "method not found")),
    };
    respond(
        request,
        200,
        envelope(&id, result).unwrap_or_default(),
        headers,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_user_names_decode() {
        // "addr.w:x"
        assert_eq!(basic_username("Basic YWRkci53Ong="), "addr.w");
        assert_eq!(basic_username("Bearer x"), "");
        assert_eq!(basic_username("Basic !!!"), "");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        for s in ["", "a", "ab", "abc", "abcd"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"addr.w:x"), "YWRkci53Ong=");
    }

    #[test]
    fn envelopes_follow_r() {
        assert_eq!(envelope(&Value::Null, Ok(json!(1))), None);
        let e: Value = serde_json::from_str(
            &envelope(
                &json!(3),
                Err(RpcError {
                    code: None,
                    message: "m".into(),
                }),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(e["error"].get("code").is_none());
    }
}
