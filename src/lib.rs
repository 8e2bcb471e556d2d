//! p2pool: a decentralized Bitcoin mining pool node in the mold of the original P2Pool.
//!
//! Layers, lowest first: `bitcoin` (formats and primitives), `network` (the parameters
//! of each P2Pool network), `sharechain` (shares and consensus), `p2p` (the P2Pool
//! wire protocol). Lower layers never import upper ones.

pub mod bitcoin;
pub mod config;
pub mod logging;
pub mod network;
pub mod node;
pub mod p2p;
pub mod sharechain;
pub mod web;
pub mod worker;

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
