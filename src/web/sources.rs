//! Wiring the p2p and worker handles to the web: their status types as the web's views.
//!
//! The node (or `main`) sets the sources once both sides run:
//! `web.set_peers(web::peer_source(p2p.peers()))` and, with the miners' statistics
//! reachable from a closure, `web.set_miners(Arc::new(move || web::miner_views(&stats())))`.

use std::sync::Arc;

use super::status::{MinerView, PeerSource, PeerView};
use crate::p2p::{PeerStatus, Peers};
use crate::worker::MinerStats;

impl From<&PeerStatus> for PeerView {
    fn from(p: &PeerStatus) -> PeerView {
        PeerView {
            addr: p.addr.to_string(),
            inbound: p.inbound,
            version: p.version,
            sub_version: p.sub_version.clone(),
            mode: p.mode,
            connected_since: p.connected_since,
        }
    }
}

impl From<&MinerStats> for MinerView {
    fn from(m: &MinerStats) -> MinerView {
        MinerView {
            address: m.address.clone(),
            worker: m.worker.clone(),
            protocol: m.protocol.to_owned(),
            hashrate: m.hashrate,
            difficulty: m.difficulty,
            accepted: m.accepted,
            stale: m.stale,
            rejected: m.rejected,
            shares: m.shares,
            last_seen: m.last_seen,
        }
    }
}

/// Reads every connection from the p2p side's handle at each request.
pub fn peer_source(peers: Peers) -> PeerSource {
    Arc::new(move || peers.status().peers.iter().map(PeerView::from).collect())
}

/// The worker side's statistics as the web's views.
pub fn miner_views(stats: &[MinerStats]) -> Vec<MinerView> {
    stats.iter().map(MinerView::from).collect()
}
