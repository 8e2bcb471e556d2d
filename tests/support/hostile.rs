//! A hand-driven peer for the hostile-peer tests: a TCP socket bound to a chosen loopback
//! address (127.0.0.2 and up, so that bans hit only it) that writes whatever bytes a test
//! wants and reads the node's frames.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use p2pool::bitcoin::frame::{Frame, FrameError, Framing};
use p2pool::p2p::message::{Message, NetAddress, Version};

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

unsafe extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    fn close(fd: i32) -> i32;
}

const AF_INET: i32 = 2;
const SOCK_STREAM: i32 = 1;

fn sockaddr(ip: Ipv4Addr, port: u16) -> SockaddrIn {
    SockaddrIn {
        family: AF_INET as u16,
        port: port.to_be(),
        addr: ip.octets(),
        zero: [0; 8],
    }
}

/// A TCP connection to `to` from the loopback address `from` (std cannot bind before
/// connecting, so this calls the C library std already links).
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    let local = sockaddr(from, 0);
    let remote = sockaddr(*to.ip(), to.port());
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain socket calls on a descriptor this function owns; the structs are
    // sockaddr_in as Linux lays it out, and outlive the calls.
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if bind(fd, &local, len) != 0 || connect(fd, &remote, len) != 0 {
            let e = io::Error::last_os_error();
            close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

pub struct Hostile {
    pub stream: TcpStream,
    pub framing: Framing,
    buf: Vec<u8>,
}

pub fn version(nonce: u64, sub_version: &str) -> Message {
    Message::Version(Version {
        version: 1,
        services: 0,
        addr_to: NetAddress::new(0, "127.0.0.1".parse().unwrap(), 1),
        addr_from: NetAddress::new(0, "127.0.0.2".parse().unwrap(), 1),
        nonce,
        sub_version: sub_version.into(),
        mode: 1,
        best_share_hash: None,
    })
}

impl Hostile {
    pub fn connect(from: Ipv4Addr, to: SocketAddr, framing: Framing) -> Hostile {
        let stream = connect_from(from, to).expect("hostile socket connects");
        Hostile {
            stream,
            framing,
            buf: Vec::new(),
        }
    }

    /// A connection already made (e.g. with [`connect_from`], which may fail).
    pub fn from_stream(stream: TcpStream, framing: Framing) -> Hostile {
        Hostile {
            stream,
            framing,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, msg: &Message) -> io::Result<()> {
        let frame = msg.to_frame(&self.framing).expect("test frame encodes");
        self.stream.write_all(&frame)
    }

    /// Says version with a random nonce.
    pub fn handshake(&mut self) -> io::Result<()> {
        self.send(&version(rand_nonce(), "hostile"))
    }

    /// The next frame within `timeout`: `Ok(None)` on timeout, `Err` once the node closed.
    pub fn next_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        let until = Instant::now() + timeout;
        loop {
            match self.framing.decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Frames until one with `command` arrives; `None` on timeout or close.
    pub fn wait_for(&mut self, command: &str, timeout: Duration) -> Option<Frame> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            match self.next_frame(until.saturating_duration_since(Instant::now())) {
                Ok(Some(f)) if f.command == command => return Some(f),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
        None
    }

    /// Whether the node closes the connection within `timeout` (frames are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            match self.next_frame(until.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

pub fn rand_nonce() -> u64 {
    p2pool::p2p::random_u64()
}

/// Maps a frame error to text, for assertions.
pub fn describe(e: &FrameError) -> String {
    e.to_string()
}
