//! Bitcoin: encodings, hashes, transactions, blocks, scripts, addresses, targets and
//! message framing. Knows nothing of P2Pool.

pub mod address;
pub mod block;
pub mod chain;
pub mod encode;
pub mod feed;
pub mod fit;
pub mod frame;
pub mod hash;
pub mod heights;
pub mod link;
pub mod merkle;
pub mod rpc;
pub mod script;
pub mod submit;
pub mod target;
pub mod template;
pub mod tx;
