//! Request bodies on the worker port, read so that no client can stall the handler threads.
//!
//! tiny_http reads a body of at most 1,024 bytes with a Content-Length (and no `Expect`)
//! together with the headers, on its own per-connection thread; every other body
//! (larger, chunked, or after `100 Continue`) stays on the socket and is read by whoever
//! holds the `Request`. So a request whose body is still on the socket is handed to a
//! short-lived `http_body` thread (at most `MAX_READERS` at once) that reads it within
//! `DEADLINE` and then answers it. Our tiny_http (vendor/tiny_http) bounds each socket
//! read by the worker's HTTP timeout, and never reads a body nobody read: a request dropped
//! with its body unread (refused as too large, too slow, or past `MAX_READERS`) closes its
//! connection instead.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tiny_http::Request;

/// Bodies up to this long with a Content-Length arrive with the headers (tiny_http's rule).
const BUFFERED: usize = 1024;
/// Most `http_body` threads at once; past it, requests are read on the handler thread.
pub const MAX_READERS: usize = 256;
/// Longest a body may take to arrive once its first read returned.
pub const DEADLINE: Duration = Duration::from_secs(10);

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

/// Reads the whole body, up to `cap` bytes and within `deadline` (checked after each
/// read; a client that sends nothing holds the reader until the socket's read timeout).
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
}
