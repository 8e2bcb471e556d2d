//! The share chain: shares, and (in later work) the tracker, generation transaction,
//! verification, best-share selection and the store.

pub mod forest;
pub mod gentx;
pub mod share;
pub mod store;
pub mod tracker;
pub mod verify;

#[cfg(test)]
pub(crate) mod test_chain;
