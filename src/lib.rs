//! p2pool: a decentralized Bitcoin mining pool node in the mold of the original P2Pool.
//!
//! The modules, lowest layer first; a lower layer never imports an upper one.
//!
//! | module | what it is |
//! |---|---|
//! | [`bitcoin`] | pure Bitcoin formats: encodings, hashes, transactions, blocks, scripts, addresses, targets, merkle trees, templates and their fitting, message framing |
//! | [`network`] | the parameters of each P2Pool network |
//! | [`store`] | LMDB: shares, verified flags, the address book, found blocks, metadata (bytes: it knows no share) |
//! | [`sharechain`] | pure consensus: shares, the forest and tracker, the generation transaction, verification, best-share choice, the chain that ties them |
//! | [`bitcoind`] | the bitcoind services (RPC client, template feed, submitter, P2P link, heights), each on its own threads |
//! | [`p2p`] | the P2Pool network's sockets and their threads |
//! | [`worker`] | the miners' sockets (getwork with long polling, Stratum) and their threads |
//! | [`web`] | the dashboard and JSON API, served on the worker port |
//! | [`node`] | the node: share sync, found blocks, status, and the one thread that owns pool state |
//! | [`config`], [`logging`] | the command line and the logs |
//! | [`limits`] | the listen backlog and the open-files limit the node sets for itself |
//! | [`thread`] | one way to start a thread (named, its end logged) and to lock a mutex |

pub mod bitcoin;
pub mod bitcoind;
pub mod config;
pub mod limits;
pub mod logging;
pub mod network;
pub mod node;
pub mod p2p;
pub mod sharechain;
pub mod store;
pub mod thread;
pub mod web;
pub mod worker;

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
