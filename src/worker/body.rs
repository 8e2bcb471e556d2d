//! Request bodies on the worker port, read so that no client can stall the handler threads.
//!
//! tiny_http reads a body of at most 1,024 bytes with a Content-Length (and no `Expect`)
//! together with the headers, on its own per-connection thread; every other body
//! (larger, chunked, or after `100 Continue`) stays on the socket and is read by whoever
//! holds the `Request`, with no read timeout. Dropping such a `Request` unread also reads
//! (and throws away) the rest of the declared Content-Length, allocating it in one piece.
//! So a request whose body is still on the socket is handed to a short-lived `http_body`
//! thread (at most `MAX_READERS` at once) that reads it within `DEADLINE` and then answers
//! it; a request that declares an absurd Content-Length is answered 413 and its connection
//! abandoned rather than dropped (see `abandon`).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::warn;
use tiny_http::{Request, Response};

use super::LOG;

/// Bodies up to this long with a Content-Length arrive with the headers (tiny_http's rule).
const BUFFERED: usize = 1024;
/// Most `http_body` threads at once; past it, requests are read on the handler thread.
pub const MAX_READERS: usize = 256;
/// Longest a body may take to arrive once its first read returned.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// A declared Content-Length above this is never dropped (tiny_http would allocate it).
const ABSURD: usize = 64 * 1024 * 1024;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the cap.
    TooLarge(usize),
    /// Not all there within the deadline.
    TooSlow(Duration),
    Io(io::Error),
}

impl BodyError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge(_) => 413,
            BodyError::TooSlow(_) => 408,
            BodyError::Io(_) => 400,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge(cap) => write!(f, "request body over {cap} bytes"),
            BodyError::TooSlow(d) => write!(f, "request body not received within {d:?}"),
            BodyError::Io(e) => write!(f, "request body not read: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Whether the body is still on the socket (reading it may block).
pub fn on_socket(request: &Request) -> bool {
    header(request, "Transfer-Encoding").is_some()
        || header(request, "Expect").is_some()
        || request.body_length().is_some_and(|n| n > BUFFERED)
}

/// Whether the declared Content-Length is too large to let tiny_http drain it.
pub fn absurd(request: &Request) -> bool {
    header(request, "Transfer-Encoding").is_none()
        && request.body_length().is_some_and(|n| n > ABSURD)
}

/// Reads the whole body, up to `cap` bytes and within `deadline`. A client that sends
/// nothing at all still holds the reading thread until it closes (no socket timeout can be
/// set through tiny_http), which is why readers are counted.
pub fn read(request: &mut Request, cap: usize, deadline: Duration) -> Result<Vec<u8>, BodyError> {
    if request.body_length().is_some_and(|n| n > cap) {
        return Err(BodyError::TooLarge(cap));
    }
    let start = Instant::now();
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    let reader = request.as_reader();
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BodyError::Io(e)),
        };
        if body.len() + n > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk[..n]);
        if start.elapsed() > deadline {
            return Err(BodyError::TooSlow(deadline));
        }
    }
}

/// Counts `http_body` threads.
#[derive(Default)]
pub struct Readers {
    running: AtomicUsize,
    abandoned: AtomicUsize,
}

/// One reader's place, given back on drop.
pub struct Slot(Arc<Readers>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Readers {
    /// A place for one more reader, or `None` at `MAX_READERS`.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        let before = self.running.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.clone());
        (before < MAX_READERS).then_some(slot)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Answers 413 to a request with an absurd Content-Length and abandons its connection:
    /// tiny_http 0.12 drains an unread body on drop into one allocation of the declared
    /// length, which aborts the process when it cannot be had. The connection's socket and
    /// tiny_http's thread for it are leaked (two file descriptors each): a slow leak is
    /// better than a crash, until tiny_http is patched.
    pub fn abandon(&self, request: Request, cap: usize) {
        let n = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(
            target: LOG,
            "http body of absurd length refused, connection abandoned ({n} so far)"
        );
        let response =
            Response::from_string(format!("request body over {cap} bytes")).with_status_code(413);
        std::mem::forget(request.upgrade("close", response));
    }
}
