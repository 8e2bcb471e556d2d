//! Bitcoin: encodings, hashes, transactions, blocks, scripts, addresses, targets and
//! message framing. Knows nothing of P2Pool.

pub mod address;
pub mod block;
pub mod chain;
pub mod encode;
pub mod fit;
pub mod frame;
pub mod hash;
pub mod merkle;
pub mod script;
pub mod target;
pub mod template;
pub mod tx;
