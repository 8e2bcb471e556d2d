//! A blocking JSON-RPC client for bitcoind (and bcoin) over plain HTTP.
//!
//! HTTP Basic auth with a user and password or with bitcoind's cookie file (re-read after a
//! 401, since bitcoind rewrites it on every start). Requests are JSON-RPC 2.0; answers are
//! parsed whatever the HTTP status, so 1.0-style servers (HTTP 500 or 404 with a JSON error
//! body) and bcoin (always 200 with both `result` and `error`) work too. Every call has a
//! timeout, every answer a size limit, and a node that is still warming up (-28) is waited for
//! within a bounded time. Credentials never appear in an error or a `Debug` output.
//!
//! ureq logs requests at `trace` level without redacting headers: keep `ureq` at `debug` or
//! quieter in any logger configuration.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::hash::Hash256;

/// The timeout of an ordinary call, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long calls keep retrying while the node answers -28 (warming up).
pub const DEFAULT_WARMUP_WAIT: Duration = Duration::from_secs(60);
/// The largest answer accepted: a 4 MB block template is about 8 MB of hex plus JSON.
pub const MAX_BODY: u64 = 32 * 1024 * 1024;
/// The largest cookie file read (bitcoind's is 75 bytes).
const MAX_COOKIE: u64 = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error messages from the server are cut to this many bytes.
const MAX_MESSAGE: usize = 512;

/// Bitcoin Core's error code for a node that is loading (warming up).
pub const CODE_WARMING_UP: i64 = -28;
/// JSON-RPC's error code for an unknown method.
pub const CODE_METHOD_NOT_FOUND: i64 = -32601;

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `rpcuser` and `rpcpassword` (bcoin: any user, the API key as password).
    UserPass { user: String, password: String },
    /// bitcoind's cookie file, `__cookie__:<hex>`, read when needed and again after a 401.
    Cookie(PathBuf),
}

impl Auth {
    pub fn user_pass(user: impl Into<String>, password: impl Into<String>) -> Auth {
        Auth::UserPass {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The cookie file of `chain` under a Bitcoin data directory (`<datadir>/regtest/.cookie`).
    pub fn cookie_in_datadir(datadir: &Path, chain: &ChainParams) -> Auth {
        let dir = if chain.cookie_dir.is_empty() {
            datadir.to_path_buf()
        } else {
            datadir.join(&chain.cookie_dir)
        };
        Auth::Cookie(dir.join(".cookie"))
    }

    /// What a rejection is about, for error messages; never the secret itself.
    fn subject(&self) -> String {
        match self {
            Auth::UserPass { .. } => "the rpc user and password".into(),
            Auth::Cookie(path) => format!("the cookie from {}", path.display()),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::UserPass { .. } => f.write_str("UserPass(<redacted>)"),
            Auth::Cookie(path) => f.debug_tuple("Cookie").field(path).finish(),
        }
    }
}

/// Bitcoin Core's default data directory: `~/.bitcoin`, or
/// `~/Library/Application Support/Bitcoin` on macOS. `None` without a home directory.
pub fn default_datadir() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?);
    if cfg!(target_os = "macos") {
        Some(home.join("Library/Application Support/Bitcoin"))
    } else {
        Some(home.join(".bitcoin"))
    }
}

/// The call an error is about: `getblocktemplate at 127.0.0.1:8332`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// `host:port`.
    pub addr: String,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.method, self.addr)
    }
}

/// What went wrong with a call, and where.
#[derive(Debug)]
pub enum RpcError {
    /// Nothing listens at `host:port`.
    ConnectionRefused { addr: String },
    /// The call did not complete within its timeout.
    Timeout(Call, Duration),
    /// Any other failure to connect, send or receive.
    Transport(Call, String),
    /// HTTP 401: the credentials (`subject`, never the secret) were refused.
    AuthFailed { addr: String, subject: String },
    /// The cookie file could not be read or is not `user:password`.
    Cookie { path: PathBuf, reason: String },
    /// The server does not know the method (-32601).
    MethodNotFound(Call),
    /// The server answered with an error object.
    Rpc {
        call: Call,
        code: Option<i64>,
        message: String,
    },
    /// The server kept answering -28 for longer than the warm-up wait.
    WarmingUp {
        call: Call,
        waited: Duration,
        message: String,
    },
    /// The answer is not the JSON expected.
    BadJson(Call, String),
    /// A non-JSON answer with this HTTP status (403: bitcoind's `rpcallowip` refuses us).
    Http(Call, u16),
    /// The answer is larger than this many bytes.
    BodyTooLarge(Call, u64),
}

/// What an error says about bitcoind, for the operator: what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// Nothing answered: bitcoind is not running there, or not reachable (refused, timed
    /// out, no route, a name that does not resolve).
    NoAnswer,
    /// The credentials: the cookie file cannot be read, or bitcoind refused them (401).
    Credentials,
    /// bitcoind refuses this host (HTTP 403: its `rpcallowip`).
    Forbidden,
    /// bitcoind answered, with an error or something unusable (warming up, still
    /// downloading blocks, a method it lacks).
    Answered,
}

impl RpcError {
    /// Which kind of trouble this error is.
    pub fn trouble(&self) -> Trouble {
        match self {
            RpcError::ConnectionRefused { .. }
            | RpcError::Timeout(..)
            | RpcError::Transport(..) => Trouble::NoAnswer,
            RpcError::AuthFailed { .. } | RpcError::Cookie { .. } => Trouble::Credentials,
            RpcError::Http(_, 403) => Trouble::Forbidden,
            RpcError::MethodNotFound(_)
            | RpcError::Rpc { .. }
            | RpcError::WarmingUp { .. }
            | RpcError::BadJson(..)
            | RpcError::Http(..)
            | RpcError::BodyTooLarge(..) => Trouble::Answered,
        }
    }

    /// The JSON-RPC error code, when the server sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RpcError::Rpc { code, .. } => *code,
            RpcError::MethodNotFound(_) => Some(CODE_METHOD_NOT_FOUND),
            RpcError::WarmingUp { .. } => Some(CODE_WARMING_UP),
            _ => None,
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::ConnectionRefused { addr } => write!(f, "rpc connection refused at {addr}"),
            RpcError::Timeout(call, after) => {
                write!(f, "rpc {call} timed out after {} s", after.as_secs_f64())
            }
            RpcError::Transport(call, reason) => write!(f, "rpc {call} failed: {reason}"),
            RpcError::AuthFailed { addr, subject } => {
                write!(
                    f,
                    "rpc authentication failed at {addr}: it refused {subject}"
                )
            }
            RpcError::Cookie { path, reason } => {
                write!(
                    f,
                    "cannot use the rpc cookie file {}: {reason}",
                    path.display()
                )
            }
            RpcError::MethodNotFound(call) => write!(f, "rpc {call}: method not found (-32601)"),
            RpcError::Rpc {
                call,
                code,
                message,
            } => match code {
                Some(code) => write!(f, "rpc {call} failed with code {code}: {message}"),
                None => write!(f, "rpc {call} failed: {message}"),
            },
            RpcError::WarmingUp {
                call,
                waited,
                message,
            } => {
                let waited = waited.as_secs_f64();
                write!(
                    f,
                    "rpc {call}: still warming up (-28) after {waited} s: {message}"
                )
            }
            RpcError::BadJson(call, reason) => write!(f, "rpc {call}: bad json answer: {reason}"),
            RpcError::Http(call, status) => {
                write!(
                    f,
                    "rpc {call}: http status {status} without a json-rpc answer"
                )
            }
            RpcError::BodyTooLarge(call, limit) => {
                write!(
                    f,
                    "rpc {call}: answer larger than the limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for RpcError {}

pub type Result<T> = std::result::Result<T, RpcError>;

/// A blocking JSON-RPC client. Cheap calls from several threads are fine; each call opens its
/// own connection (no pooling, so a server's keep-alive timeout never bites).
pub struct Client {
    agent: ureq::Agent,
    url: String,
    addr: String,
    auth: Auth,
    /// The `Authorization` header made from the cookie file, once read.
    cookie: Mutex<Option<String>>,
    timeout: Duration,
    warmup_wait: Duration,
    next_id: AtomicU64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `http://host:port/`. Nothing is sent until the first call.
    pub fn new(host: &str, port: u16, auth: Auth) -> Client {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .max_idle_connections(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("p2pool/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            url: format!("http://{addr}/"),
            addr,
            auth,
            cookie: Mutex::new(None),
            timeout: DEFAULT_TIMEOUT,
            warmup_wait: DEFAULT_WARMUP_WAIT,
            next_id: AtomicU64::new(1),
        }
    }

    /// The timeout of each call (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// How long to keep retrying while the node warms up (default 60 s).
    pub fn with_warmup_wait(mut self, wait: Duration) -> Client {
        self.warmup_wait = wait;
        self
    }

    /// `host:port`, as errors name it.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Calls `method` with `params` (a JSON array) and returns the `result`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(method, params, self.timeout)
    }

    /// Calls `method` and decodes the `result` as `T`.
    pub fn call_as<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T> {
        self.call_with_timeout(method, params, self.timeout)
    }

    /// Calls `method` with its own timeout (a long poll, say), retrying while the node warms up.
    pub fn call_with_timeout<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = request.to_string();
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.call_once(method, body.as_bytes(), timeout) {
                Err(RpcError::Rpc {
                    call,
                    code: Some(CODE_WARMING_UP),
                    message,
                }) => {
                    let waited = start.elapsed();
                    if waited + delay > self.warmup_wait {
                        return Err(RpcError::WarmingUp {
                            call,
                            waited,
                            message,
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn call_of(&self, method: &str) -> Call {
        Call {
            method: method.into(),
            addr: self.addr.clone(),
        }
    }

    /// One request; a 401 with cookie auth re-reads the cookie and tries once more.
    fn call_once<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<T> {
        let mut reread = false;
        loop {
            let header = self.auth_header(reread)?;
            let (status, answer) = self.post(method, body, &header, timeout)?;
            match status {
                401 if matches!(self.auth, Auth::Cookie(_)) && !reread => reread = true,
                401 => {
                    return Err(RpcError::AuthFailed {
                        addr: self.addr.clone(),
                        subject: self.auth.subject(),
                    });
                }
                _ => return self.decode(method, status, &answer),
            }
        }
    }

    /// The `Authorization` header, reading the cookie file when needed or asked to.
    fn auth_header(&self, reread: bool) -> Result<String> {
        match &self.auth {
            Auth::UserPass { user, password } => {
                Ok(basic_header(format!("{user}:{password}").as_bytes()))
            }
            Auth::Cookie(path) => {
                let mut cached = crate::thread::lock(&self.cookie);
                match cached.as_ref() {
                    Some(header) if !reread => Ok(header.clone()),
                    _ => {
                        let header = read_cookie(path)?;
                        *cached = Some(header.clone());
                        Ok(header)
                    }
                }
            }
        }
    }

    /// Sends one request; returns the HTTP status and the whole (bounded) body.
    fn post(
        &self,
        method: &str,
        body: &[u8],
        header: &str,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let fail = |e: ureq::Error| self.transport_error(method, timeout, e);
        let mut response = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Authorization", header)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(fail)?;
        let status = response.status().as_u16();
        let answer = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(fail)?;
        Ok((status, answer))
    }

    fn transport_error(&self, method: &str, timeout: Duration, e: ureq::Error) -> RpcError {
        use std::io::ErrorKind;
        match e {
            ureq::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
                RpcError::ConnectionRefused {
                    addr: self.addr.clone(),
                }
            }
            ureq::Error::Timeout(_) => RpcError::Timeout(self.call_of(method), timeout),
            ureq::Error::Io(io) if io.kind() == ErrorKind::TimedOut => {
                RpcError::Timeout(self.call_of(method), timeout)
            }
            ureq::Error::BodyExceedsLimit(limit) => {
                RpcError::BodyTooLarge(self.call_of(method), limit)
            }
            other => RpcError::Transport(self.call_of(method), other.to_string()),
        }
    }

    /// Decodes an answer whatever its HTTP status: Core sends JSON error bodies with 404/500.
    fn decode<T: DeserializeOwned>(&self, method: &str, status: u16, answer: &[u8]) -> Result<T> {
        let call = self.call_of(method);
        let envelope: Envelope<T> = match serde_json::from_slice(answer) {
            Ok(envelope) => envelope,
            Err(e) if e.is_data() || status == 200 => {
                return Err(RpcError::BadJson(call, e.to_string()));
            }
            Err(_) => return Err(RpcError::Http(call, status)),
        };
        match (envelope.error, envelope.result) {
            (Some(error), _) => match error_parts(error) {
                (Some(CODE_METHOD_NOT_FOUND), _) => Err(RpcError::MethodNotFound(call)),
                (code, message) => Err(RpcError::Rpc {
                    call,
                    code,
                    message,
                }),
            },
            (None, Some(result)) => Ok(result),
            // A null (or missing) result: fine for `Value` and `Option<_>`, an error otherwise.
            (None, None) => serde_json::from_value(Value::Null)
                .map_err(|_| RpcError::BadJson(call, "null or missing result".into())),
        }
    }

    /// `getblockchaininfo`: the chain name, height and sync state.
    pub fn get_blockchain_info(&self) -> Result<BlockchainInfo> {
        self.call_as("getblockchaininfo", json!([]))
    }

    /// `getnetworkinfo`: the node's version string and connections.
    pub fn get_network_info(&self) -> Result<NetworkInfo> {
        self.call_as("getnetworkinfo", json!([]))
    }

    /// `getblockcount`: the height of the best chain.
    pub fn get_block_count(&self) -> Result<u64> {
        self.call_as("getblockcount", json!([]))
    }

    /// `getbestblockhash`: the tip of the best chain.
    pub fn get_best_block_hash(&self) -> Result<Hash256> {
        let hex: String = self.call_as("getbestblockhash", json!([]))?;
        hex.parse().map_err(|e: crate::bitcoin::hash::HexError| {
            RpcError::BadJson(self.call_of("getbestblockhash"), e.to_string())
        })
    }

    /// `getblockheader <hash> true`: height and links of a known block.
    pub fn get_block_header(&self, hash: &Hash256) -> Result<BlockHeaderInfo> {
        self.call_as("getblockheader", json!([hash.to_hex(), true]))
    }

    /// `getblocktemplate {"rules":["segwit"]}`, at once.
    pub fn get_block_template(&self) -> Result<Value> {
        self.call("getblocktemplate", block_template_params(None))
    }

    /// `getblocktemplate` long poll: returns when the template `longpollid` named is outdated
    /// (a new tip; on bcoin also a mempool change), or fails with `Timeout` after `timeout`.
    pub fn wait_block_template(&self, longpollid: &str, timeout: Duration) -> Result<Value> {
        self.call_with_timeout(
            "getblocktemplate",
            block_template_params(Some(longpollid)),
            timeout,
        )
    }

    /// `submitblock <hex>`: `None` when accepted, else the node's answer (`"duplicate"`,
    /// `"inconclusive"`, a reason; bcoin: `"rejected: <reason>"`). Undecodable data is an
    /// `Rpc` error (-22).
    pub fn submit_block(&self, block_hex: &str) -> Result<Option<String>> {
        self.call_as("submitblock", json!([block_hex]))
    }
}

/// The params of `getblocktemplate`, with a long-poll id or without.
pub fn block_template_params(longpollid: Option<&str>) -> Value {
    match longpollid {
        Some(id) => json!([{"rules": ["segwit"], "longpollid": id}]),
        None => json!([{"rules": ["segwit"]}]),
    }
}

/// The envelope of an answer; serde reads a missing `result` or `error` as `None`.
#[derive(Deserialize)]
struct Envelope<T> {
    result: Option<T>,
    error: Option<Value>,
}

/// The code and message of an error object (or whatever a server put there).
fn error_parts(error: Value) -> (Option<i64>, String) {
    let (code, message) = match error {
        Value::Object(mut fields) => {
            let code = fields.get("code").and_then(Value::as_i64);
            let message = match fields.remove("message") {
                Some(Value::String(s)) => s,
                _ => Value::Object(fields).to_string(),
            };
            (code, message)
        }
        Value::String(s) => (None, s),
        other => (None, other.to_string()),
    };
    (code, truncate(message))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Reads a cookie file (`user:password` on its first line) into a Basic header value.
fn read_cookie(path: &Path) -> Result<String> {
    let fail = |reason: String| RpcError::Cookie {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_COOKIE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_COOKIE {
        return Err(fail(format!("larger than {MAX_COOKIE} bytes")));
    }
    let line = text.lines().next().unwrap_or("").trim_end();
    match line.split_once(':') {
        Some((user, _)) if !user.is_empty() => Ok(basic_header(line.as_bytes())),
        _ => Err(fail("expected user:password on its first line".into())),
    }
}

fn basic_header(credentials: &[u8]) -> String {
    format!("Basic {}", base64(credentials))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hash_hex<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Hash256, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn opt_hash_hex<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Hash256>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// The parts of `getblockchaininfo` the node uses (Core and bcoin both have them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BlockchainInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    pub chain: String,
    pub blocks: u64,
    #[serde(default)]
    pub headers: u64,
    #[serde(rename = "bestblockhash", deserialize_with = "hash_hex")]
    pub best_block_hash: Hash256,
    /// Core only; bcoin does not say.
    #[serde(rename = "initialblockdownload", default)]
    pub initial_block_download: Option<bool>,
    #[serde(rename = "verificationprogress", default)]
    pub verification_progress: f64,
}

/// The parts of `getnetworkinfo` the node uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetworkInfo {
    /// The user agent, such as `/Satoshi:30.0.0/` or `/bcoin:v1.0.2/`.
    pub subversion: String,
    #[serde(rename = "protocolversion")]
    pub protocol_version: u32,
    #[serde(default)]
    pub connections: Option<u64>,
}

/// The parts of `getblockheader` (verbose) the node uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockHeaderInfo {
    #[serde(deserialize_with = "hash_hex")]
    pub hash: Hash256,
    pub height: u64,
    /// -1 for a block off the best chain (Core).
    pub confirmations: i64,
    pub time: u64,
    #[serde(
        rename = "previousblockhash",
        default,
        deserialize_with = "opt_hash_hex"
    )]
    pub previous_block_hash: Option<Hash256>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::new("127.0.0.1", 9, Auth::user_pass("alice", "s3cret"))
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(
            basic_header(b"Aladdin:open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn client_is_shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn debug_output_hides_credentials() {
        let auth = Auth::user_pass("alice", "s3cret");
        let shown = format!("{auth:?} {:?}", client());
        assert!(
            !shown.contains("alice") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("127.0.0.1:9"), "{shown}");
    }

    #[test]
    fn cookie_path_follows_the_chain_directory() {
        let dir = Path::new("/data");
        let regtest = Auth::cookie_in_datadir(dir, &ChainParams::regtest());
        assert_eq!(
            regtest,
            Auth::Cookie(PathBuf::from("/data/regtest/.cookie"))
        );
        let main = Auth::cookie_in_datadir(dir, &ChainParams::main());
        assert_eq!(main, Auth::Cookie(PathBuf::from("/data/.cookie")));
    }

    #[test]
    fn cookie_must_hold_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".cookie");
        std::fs::write(&path, "__cookie__:abc\n").unwrap();
        assert_eq!(read_cookie(&path).unwrap(), basic_header(b"__cookie__:abc"));
        std::fs::write(&path, "no-colon-here").unwrap();
        let err = read_cookie(&path).unwrap_err().to_string();
        assert!(
            err.contains("user:password") && !err.contains("no-colon"),
            "{err}"
        );
        std::fs::write(&path, "x".repeat(2000)).unwrap();
        let err = read_cookie(&path).unwrap_err().to_string();
        assert!(err.contains("larger than 1024 bytes"), "{err}");
        let err = read_cookie(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot use the rpc cookie file"), "{err}");
    }

    #[test]
    fn core_error_bodies_decode_whatever_the_status() {
        let c = client();
        // Core, JSON-RPC 1.0 request: HTTP 404 for an unknown method, 500 for other errors.
        let body =
            br#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":1}"#;
        let err = c.decode::<Value>("getwork", 404, body).unwrap_err();
        assert!(matches!(err, RpcError::MethodNotFound(_)), "{err}");
        let body =
            br#"{"result":null,"error":{"code":-22,"message":"Block decode failed"},"id":1}"#;
        let err = c.decode::<Value>("submitblock", 500, body).unwrap_err();
        assert_eq!(err.code(), Some(-22));
        assert_eq!(
            err.to_string(),
            "rpc submitblock at 127.0.0.1:9 failed with code -22: Block decode failed"
        );
        // Core, JSON-RPC 2.0: no `result` beside an error, no `error` beside a result.
        let body = br#"{"jsonrpc":"2.0","error":{"code":-5,"message":"Block not found"},"id":1}"#;
        assert_eq!(
            c.decode::<Value>("getblockheader", 200, body)
                .unwrap_err()
                .code(),
            Some(-5)
        );
        let body = br#"{"jsonrpc":"2.0","result":"inconclusive","id":1}"#;
        let answer: Option<String> = c.decode("submitblock", 200, body).unwrap();
        assert_eq!(answer.as_deref(), Some("inconclusive"));
        let body = br#"{"result":null,"error":null,"id":1}"#;
        assert_eq!(
            c.decode::<Option<String>>("submitblock", 200, body)
                .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_answers_are_typed_errors() {
        let c = client();
        let err = c
            .decode::<Value>("getblockcount", 502, b"<html>bad gateway</html>")
            .unwrap_err();
        assert!(matches!(err, RpcError::Http(_, 502)), "{err}");
        let err = c
            .decode::<Value>("getblockcount", 200, b"{\"result\":")
            .unwrap_err();
        assert!(matches!(err, RpcError::BadJson(..)), "{err}");
        let err = c
            .decode::<u64>("getblockcount", 200, br#"{"result":"ten"}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("rpc getblockcount at 127.0.0.1:9: bad json answer"),
            "{err}"
        );
        let err = c.decode::<BlockchainInfo>("getblockchaininfo", 200, br#"{"result":null}"#);
        assert!(matches!(err, Err(RpcError::BadJson(..))));
        // bcoin's answer to a malformed request: HTTP 500 and an error without a code.
        let body = br#"{"error":{"message":"Bad control character"}}"#;
        let err = c.decode::<Value>("getblockcount", 500, body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rpc getblockcount at 127.0.0.1:9 failed: Bad control character"
        );
    }

    #[test]
    fn long_server_messages_are_cut() {
        let message = "é".repeat(1000);
        let (_, cut) = error_parts(json!({"code": -1, "message": message}));
        assert!(cut.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
