//! The share chain, pure consensus (no I/O, no clock of its own): shares and their
//! stateless checks, the forest and tracker (heights, ancestry and work in constant time,
//! whatever the arrival order), the generation transaction, verification, best-share
//! selection, and the chain that ties them (`think` returns its changes as values).

pub mod best;
pub mod chain;
pub mod forest;
pub mod gentx;
pub mod keyed;
#[cfg(any(test, feature = "fixtures"))]
pub mod sample;
pub mod share;
pub mod tracker;
pub mod verify;
