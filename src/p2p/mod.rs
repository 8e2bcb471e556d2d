//! The P2Pool peer-to-peer protocol: messages (and, in later work, peers and the
//! address book).

pub mod message;
