//! The share chain: shares, and (in later work) the tracker, generation transaction,
//! verification, best-share selection and the store.

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
