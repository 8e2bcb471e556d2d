//! Looking at a `p2pool` process from outside, over P2P only: a short-lived probe peer that
//! reads the best share a node announces in its `version` and asks it for its chain with
//! getshares, and a tap, a TCP relay between two peers that counts the frames and shares
//! crossing it in each direction.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use p2pool::bitcoin::frame::{Frame, Framing};
use p2pool::bitcoin::hash::Hash256;
use p2pool::network::Network;
use p2pool::p2p::message::{Message, NetAddress, Version};
use p2pool::p2p::random_u64;
use p2pool::sharechain::share::Share;

/// A loopback address.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A handshaken connection to a node that answers nothing and asks for nothing.
pub struct Probe {
    stream: TcpStream,
    framing: Framing,
    net: Network,
    buf: Vec<u8>,
    /// The node's `version`.
    pub version: Version,
}

impl Probe {
    /// Connects, says version and reads the node's; `None` if it does not answer in 5 s.
    pub fn connect(net: &Network, addr: SocketAddr) -> Option<Probe> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        let _ = stream.set_nodelay(true);
        let mut probe = Probe {
            stream,
            framing: net.framing(),
            net: net.clone(),
            buf: Vec::new(),
            version: empty_version(),
        };
        probe
            .send(&Message::Version(Version {
                version: 1,
                services: 0,
                addr_to: NetAddress::new(0, addr.ip(), addr.port()),
                addr_from: NetAddress::new(0, "127.0.0.1".parse().unwrap(), 1),
                nonce: random_u64(),
                sub_version: "network-test-probe".into(),
                mode: 1,
                best_share_hash: None,
            }))
            .ok()?;
        let frame = probe.wait_for(&["version"], Duration::from_secs(5))?;
        match Message::decode(&frame.command, &frame.payload, net.rules).ok()? {
            Message::Version(v) => probe.version = v,
            _ => return None,
        }
        Some(probe)
    }

    fn send(&mut self, msg: &Message) -> io::Result<()> {
        let frame = msg
            .to_frame(&self.framing)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.stream.write_all(&frame)
    }

    /// The next frame whose command is in `commands`; `None` on timeout or close.
    fn wait_for(&mut self, commands: &[&str], timeout: Duration) -> Option<Frame> {
        let until = Instant::now() + timeout;
        loop {
            while let Ok(Some((frame, used))) = self.framing.decode(&self.buf) {
                self.buf.drain(..used);
                if commands.contains(&frame.command.as_str()) {
                    return Some(frame);
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).ok()?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Asks for `tip` and up to `parents` ancestors and returns the shares' hashes as they
    /// arrive (newest first), once `want` have come or no more come for a second.
    pub fn get_chain(&mut self, tip: Hash256, parents: u64, want: usize) -> Vec<Hash256> {
        let asked = self.send(&Message::GetShares {
            hashes: vec![tip],
            parents,
            stops: vec![],
        });
        let mut out = Vec::new();
        if asked.is_err() {
            return out;
        }
        while out.len() < want {
            let Some(frame) = self.wait_for(&["share1as", "share1bs"], Duration::from_secs(1))
            else {
                break;
            };
            match Message::decode(&frame.command, &frame.payload, self.net.rules) {
                Ok(Message::Share1as(list)) => out.extend(
                    list.into_iter()
                        .filter_map(|a| Share::from_share1a(a, &self.net).ok())
                        .map(|s| s.hash),
                ),
                Ok(Message::Share1bs(list)) => out.extend(
                    list.into_iter()
                        .filter_map(|b| Share::from_share1b(b, &self.net).ok())
                        .map(|s| s.hash),
                ),
                _ => {}
            }
        }
        out
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn empty_version() -> Version {
    Version {
        version: 0,
        services: 0,
        addr_to: NetAddress::new(0, "127.0.0.1".parse().unwrap(), 0),
        addr_from: NetAddress::new(0, "127.0.0.1".parse().unwrap(), 0),
        nonce: 0,
        sub_version: String::new(),
        mode: 0,
        best_share_hash: None,
    }
}

/// The best share the node at `addr` announces now (`Some(None)`: it has none yet);
/// `None` if it does not answer.
pub fn best_of(net: &Network, addr: SocketAddr) -> Option<Option<Hash256>> {
    Probe::connect(net, addr).map(|p| p.version.best_share_hash)
}

/// Polls the node at `addr` every 250 ms until it announces `best`; false after `timeout`.
pub fn wait_best(net: &Network, addr: SocketAddr, best: Hash256, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if best_of(net, addr) == Some(Some(best)) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Which way a frame crossed a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// From the peer that dialled the tap to the target.
    Up,
    /// From the target back to the dialler.
    Down,
}

#[derive(Debug, Default, Clone)]
pub struct TapCounts {
    /// Frames per direction and command.
    pub frames: HashMap<(Way, String), usize>,
    /// Shares carried by share1as and share1bs, per direction.
    pub shares: HashMap<Way, usize>,
    /// Hashes carried by share0s, per direction.
    pub announced: HashMap<Way, usize>,
    /// Connections the tap forwarded.
    pub connections: usize,
}

impl TapCounts {
    pub fn frames(&self, way: Way, command: &str) -> usize {
        self.frames
            .get(&(way, command.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn shares(&self, way: Way) -> usize {
        self.shares.get(&way).copied().unwrap_or(0)
    }

    pub fn announced(&self, way: Way) -> usize {
        self.announced.get(&way).copied().unwrap_or(0)
    }
}

/// A TCP relay on loopback in front of `target` that forwards every byte unchanged and
/// counts the P2Pool frames in both directions.
pub struct Tap {
    pub addr: SocketAddr,
    counts: Arc<Mutex<TapCounts>>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    pub fn start(net: &Network, target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("tap binds");
        listener.set_nonblocking(true).expect("nonblocking tap");
        let addr = listener.local_addr().expect("tap address");
        let counts = Arc::new(Mutex::new(TapCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, s, o, net) = (counts.clone(), stop.clone(), open.clone(), net.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        c.lock().unwrap().connections += 1;
                        let _ = forward(&net, client, target, &c, &o);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        Tap {
            addr,
            counts,
            stop,
            open,
            thread: Some(thread),
        }
    }

    pub fn counts(&self) -> TapCounts {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn forward(
    net: &Network,
    client: TcpStream,
    target: SocketAddr,
    counts: &Arc<Mutex<TapCounts>>,
    open: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    {
        let mut open = open.lock().unwrap();
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    for (way, mut from, mut to) in [
        (Way::Up, client.try_clone()?, server.try_clone()?),
        (Way::Down, server, client),
    ] {
        let (net, counts) = (net.clone(), counts.clone());
        thread::spawn(move || {
            let framing = net.framing();
            let mut pending = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while let Ok(Some((frame, used))) = framing.decode(&pending) {
                            pending.drain(..used);
                            count(&net, way, &frame, &counts);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

fn count(net: &Network, way: Way, frame: &Frame, counts: &Mutex<TapCounts>) {
    let (shares, announced) = match Message::decode(&frame.command, &frame.payload, net.rules) {
        Ok(Message::Share1as(l)) => (l.len(), 0),
        Ok(Message::Share1bs(l)) => (l.len(), 0),
        Ok(Message::Share0s(l)) => (0, l.len()),
        _ => (0, 0),
    };
    let mut c = counts.lock().unwrap();
    *c.frames.entry((way, frame.command.clone())).or_default() += 1;
    *c.shares.entry(way).or_default() += shares;
    *c.announced.entry(way).or_default() += announced;
}
