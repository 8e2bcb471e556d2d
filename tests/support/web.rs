//! For the web tests: a filled `PoolStatus` with known figures, peers and miners to match,
//! the worker's HTTP server serving a `Web` on a real loopback socket, and a raw HTTP/1.1 client (so
//! tests see status lines, headers and HEAD answers exactly as sent).
//!
//! `WebServer` is the one piece to swap for a real node: everything else only needs the
//! address it listens on.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use p2pool::network::Network;
use p2pool::web::{
    BitcoindState, BlockCounts, FoundBlock, LocalShares, MinerView, PaidBlock, Payout, PeerView,
    PoolStatus, RecentShare, StatusBoard, Web, unix_now,
};
use p2pool::worker::{WorkerConfig, Workers};

/// The best share of the filled status.
pub const BEST_SHARE: &str = "000000a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccdd";
/// Its pool hash rate: 1.2345 TH/s (the dashboard shows "1.23 TH/s").
pub const POOL_HASHRATE: f64 = 1.2345e12;
/// The first miner's address (regtest P2WPKH).
pub const MINER_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
pub const OTHER_ADDRESS: &str = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry";

/// A status with every field set to a recognisable value.
pub fn filled_status() -> PoolStatus {
    let now = unix_now();
    let recent_shares = (0..40u64)
        .map(|i| RecentShare {
            time: now - i * 20,
            hash: format!("{:064x}", 0xabc000 + i),
            address: if i % 3 == 0 {
                MINER_ADDRESS
            } else {
                OTHER_ADDRESS
            }
            .to_owned(),
            work: POOL_HASHRATE * 20.0,
            local: i % 3 == 0,
            block: i == 7,
            stale_prop: if i % 5 == 0 { Some(0.02) } else { None },
        })
        .collect();
    PoolStatus {
        network: "regtest".into(),
        started_at: now - 3723,
        updated_at: now,
        best_share: BEST_SHARE.into(),
        best_height: 4321,
        shares_total: 9000,
        shares_verified: 8800,
        shares_in_chain: 8640,
        sync_have: 8640,
        sync_want: 8640,
        ready: true,
        not_ready_reason: String::new(),
        not_ready_cause: String::new(),
        pool_hashrate: POOL_HASHRATE,
        pool_nonstale_hashrate: 1.2e12,
        pool_stale_prop: 0.025,
        share_difficulty: 1234.5,
        min_share_difficulty: 1.5,
        block_difficulty: 4.5e6,
        block_height: 812_345,
        block_value: 312_500_000 + 12_345,
        local_shares: LocalShares {
            total: 40,
            orphan: 2,
            dead: 1,
        },
        payouts: vec![
            Payout {
                address: MINER_ADDRESS.into(),
                amount: 250_000_000,
            },
            Payout {
                address: OTHER_ADDRESS.into(),
                amount: 62_512_345,
            },
        ],
        bitcoind: BitcoindState {
            reachable: true,
            height: 812_344,
            last_error: String::new(),
        },
        recent_shares,
        found_blocks: vec![FoundBlock {
            time: now - 210,
            height: 812_340,
            hash: format!("{:064x}", 0xb10c),
            share: format!("{:064x}", 0xabc007),
            finder: MINER_ADDRESS.into(),
            local: true,
            status: "accepted".into(),
            value: 312_512_345,
        }],
        // More than the lists: older blocks are forgotten, and still counted.
        blocks: BlockCounts {
            found: 3,
            accepted: 2,
            stale: 1,
            rejected: 0,
            pending: 0,
            paid_node: 1,
        },
        paid_blocks: vec![PaidBlock {
            time: now - 210,
            height: 812_340,
            hash: format!("{:064x}", 0xb10c),
            total: 312_512_345,
            payouts: vec![Payout {
                address: MINER_ADDRESS.into(),
                amount: 312_512_345,
            }],
        }],
        fee_percent: 0.5,
        payout_address: MINER_ADDRESS.into(),
        warnings: vec![],
    }
}

/// Publishes six hours of shares (one every 20 s, the rate swelling and easing, a block
/// now and then) on `board`, then `status`: a chart with something to show.
pub fn publish_history(board: &StatusBoard, status: PoolStatus) {
    let now = unix_now();
    // Older than the filled status's own shares (the last 800 s).
    let count = 6 * 3600 / 20;
    let shares: Vec<RecentShare> = (40..count)
        .map(|i| {
            let age = i * 20;
            let phase = age as f64 / 3600.0;
            let rate =
                POOL_HASHRATE * (1.0 + 0.25 * (phase * 1.3).sin() + 0.1 * (phase * 5.0).cos());
            RecentShare {
                time: now - age,
                hash: format!("{:064x}", 0x5_0000_0000u64 + age),
                address: OTHER_ADDRESS.into(),
                work: rate * 20.0,
                local: i % 4 == 1,
                block: i % 400 == 123,
                stale_prop: None,
            }
        })
        .collect();
    for chunk in shares.chunks(500).rev() {
        board.publish(PoolStatus {
            recent_shares: chunk.to_vec(),
            ..PoolStatus::default()
        });
    }
    board.publish(status);
}

/// Two peers: one outbound, one inbound still handshaking.
pub fn sample_peers() -> Vec<PeerView> {
    vec![
        PeerView {
            addr: "127.0.0.1:49333".into(),
            inbound: false,
            version: Some(1),
            sub_version: Some("p2pool-rs/0.1.0".into()),
            mode: Some(1),
            connected_since: unix_now() - 600,
        },
        PeerView {
            addr: "127.0.0.1:51234".into(),
            inbound: true,
            version: None,
            sub_version: None,
            mode: None,
            connected_since: unix_now() - 5,
        },
    ]
}

/// Two miners of the same address, one on each protocol.
pub fn sample_miners() -> Vec<MinerView> {
    vec![
        MinerView {
            address: MINER_ADDRESS.into(),
            worker: "rig1".into(),
            protocol: "stratum".into(),
            hashrate: 5.0e9,
            difficulty: 64.0,
            accepted: 90,
            stale: 5,
            rejected: 5,
            shares: 3,
            last_seen: unix_now() - 2,
        },
        MinerView {
            address: MINER_ADDRESS.into(),
            worker: String::new(),
            protocol: "getwork".into(),
            hashrate: 1.0e9,
            difficulty: 1.0,
            accepted: 10,
            stale: 0,
            rejected: 0,
            shares: 0,
            last_seen: unix_now() - 30,
        },
    ]
}

/// A `Web` over a board holding `status` (published with the sample miners, as the node
/// publishes each status with its miners), with the sample peers and miners, checking
/// addresses as regtest's.
pub fn filled_web(status: PoolStatus) -> Web {
    let board = StatusBoard::new();
    board.publish_with_miners(status, &sample_miners());
    let web = Web::new(board);
    web.set_peers(Arc::new(sample_peers));
    web.set_miners(Arc::new(sample_miners));
    web.set_chain(
        Network::built_in("regtest")
            .expect("regtest is built in")
            .bitcoin,
    );
    web
}

/// Serves a `Web` on the worker port of a real worker server (getwork and Stratum on
/// loopback ports, no work yet), as the node does; stops on drop.
pub struct WebServer {
    pub addr: SocketAddr,
    workers: Option<Workers>,
}

impl WebServer {
    pub fn start(web: Web) -> WebServer {
        let net = Network::built_in("regtest").expect("regtest is built in");
        let mut config = WorkerConfig::new(net, vec![0x51]);
        config.worker_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.stratum_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (workers, _events) =
            Workers::start(config, Some(Arc::new(web))).expect("start the worker server");
        WebServer {
            addr: workers.worker_addr(),
            workers: Some(workers),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(workers) = self.workers.take() {
            workers.stop();
        }
    }
}

/// One HTTP answer as received.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer, within 5 s.
pub fn http(addr: SocketAddr, method: &str, target: &str) -> HttpAnswer {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut answer = HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if answer
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        answer.body = dechunk(&answer.body);
    }
    answer
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}
