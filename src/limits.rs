//! Operating-system limits the node sets for itself: the backlog of its listening sockets
//! and its open-files limit, so that thousands of miners connecting at once are neither
//! left to the kernel's SYN retransmit (1 s) nor refused for want of file descriptors; and
//! the allocator's mmap threshold, so that freed large buffers are not kept.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel may hold accepted-but-not-yet-taken on a listener (ckpool's
/// figure). The kernel caps it at `net.core.somaxconn` (4096 by default since Linux 5.4,
/// 128 before).
pub const LISTEN_BACKLOG: i32 = 8192;

/// File descriptors kept aside for everything but miners: the store, logs, bitcoind's RPC
/// and P2P link, peers, listeners.
const RESERVED_FILES: u64 = 512;
/// File descriptors of one HTTP connection at most (tiny_http keeps a clone for writing).
const FILES_PER_HTTP: u64 = 2;
/// File descriptors of one Stratum connection.
pub const FILES_PER_STRATUM: u64 = 1;

/// A TCP listener on `addr` with a backlog of [`LISTEN_BACKLOG`]: as
/// `std::net::TcpListener::bind` makes it otherwise (SO_REUSEADDR on Unix, close-on-exec,
/// an IPv6 socket dual-stack or not as the system's default says).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The open-files soft limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
}

impl OpenFiles {
    /// About how many Stratum miners fit in the limit, with `http` HTTP connections (their
    /// cap) and the node's own files kept aside.
    pub fn stratum_room(&self, http: usize) -> u64 {
        let http = u64::try_from(http).unwrap_or(u64::MAX);
        self.now
            .saturating_sub(RESERVED_FILES)
            .saturating_sub(http.saturating_mul(FILES_PER_HTTP))
            / FILES_PER_STRATUM
    }
}

/// Raises this process's open-files soft limit (RLIMIT_NOFILE) to its hard limit; std has
/// no API for it. On failure the limit stays as it was.
#[cfg(unix)]
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = files(limit.rlim_cur);
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFiles {
        before,
        now: files(limit.rlim_cur),
    })
}

/// An `rlim_t` as a count (it is a u64 wherever the node runs).
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn files(n: libc::rlim_t) -> u64 {
    u64::from(n)
}

/// No open-files limit to raise here.
#[cfg(not(unix))]
pub fn raise_open_files() -> io::Result<OpenFiles> {
    Err(io::Error::other("no open-files limit on this system"))
}

/// Makes freed large buffers go back to the system at once; false if the allocator refused
/// (it is then left as it was). Called once at start (`main`, and the Stratum scale bench,
/// which runs the server as the node does).
///
/// glibc raises its mmap threshold after the first large free and then serves buffers up to
/// 32 MiB from per-thread arenas (up to 8 per core), each keeping some 16 MiB of freed memory:
/// peers sending 8 MB junk frames, each read and decoded on its own connection thread, took
/// the node to ~390 MB of RSS that was free but never returned (doc/performance.md, hostile
/// peers). A fixed 1 MiB threshold makes every buffer that large its own mapping, unmapped
/// when freed (and turns the dynamic threshold off, which also keeps the heap's trim
/// threshold at its 128 KiB default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn bound_allocator() -> bool {
    // SAFETY: mallopt only changes the allocator's tunables, under its own locks.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) == 1 }
}

/// Elsewhere the allocator is left as it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn bound_allocator() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
        let files = raise_open_files().expect("getrlimit and setrlimit work");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_open_files.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(files.now, super::files(limit.rlim_max));
        assert!(files.before <= files.now);
        // Already at the hard limit: it stays.
        assert_eq!(raise_open_files().expect("again").now, files.now);
        assert_eq!(raise_open_files().expect("again").before, files.now);
    }

    #[test]
    fn room_for_miners_leaves_the_nodes_own_files_and_http_aside() {
        let files = OpenFiles {
            before: 1024,
            now: 1_048_576,
        };
        assert_eq!(files.stratum_room(1024), 1_048_576 - 512 - 2048);
        let small = OpenFiles {
            before: 256,
            now: 256,
        };
        assert_eq!(small.stratum_room(1024), 0);
    }

    #[test]
    fn listeners_take_ipv4_and_ipv6_and_a_port_reused_after_close() {
        let v4 = listen("127.0.0.1:0".parse().unwrap()).expect("binds");
        let port = v4.local_addr().unwrap();
        let client = std::net::TcpStream::connect(port).expect("connects");
        let (accepted, _) = v4.accept().expect("accepts");
        // The server side closes first: its port is in TIME_WAIT, which SO_REUSEADDR allows.
        drop(accepted);
        drop(client);
        drop(v4);
        listen(port).expect("the port binds again at once");
        if let Ok(v6) = listen("[::1]:0".parse().unwrap()) {
            let addr = v6.local_addr().unwrap();
            std::net::TcpStream::connect(addr).expect("connects over IPv6");
        }
    }
}
