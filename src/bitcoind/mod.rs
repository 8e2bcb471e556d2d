//! The bitcoind side: the JSON-RPC client, the template feed, the block submitter, the
//! P2P link that relays found blocks, and block heights. Each service runs its own
//! thread(s) and talks to the node over channels; the formats they read and write are in
//! `bitcoin`.

pub mod feed;
pub mod heights;
pub mod link;
pub mod rpc;
pub mod submit;
