//! Sample chains: real, valid shares mined on easy networks, for tests, benches and
//! experiments. The proof of work is ground for real; nothing here is faked.

use ruint::aliases::U256;

use crate::bitcoin::block::{self, BlockHeader};
use crate::bitcoin::hash::{Hash256, sha256d};
use crate::bitcoin::merkle;
use crate::bitcoin::script;
use crate::bitcoin::target::Bits;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet, WeightCap};

use super::gentx::{self, GentxRequest};
use super::share::{ModernFields, Share, Share1a, Share1b, ShareInfo};
use super::tracker::Tracker;

/// A legacy network like the vectors' (MAX_TARGET 2^248 − 1, short window).
pub fn legacy_net(donation: bool) -> Network {
    let mut net = Network::built_in("regtest").expect("regtest is built in");
    net.name = "unit".into();
    net.rules = RuleSet::Legacy2011;
    net.share_period = 10;
    net.chain_length = 12;
    net.target_lookbehind = 4;
    net.spread = 3;
    net.weight_cap = WeightCap::Block;
    net.max_target = U256::MAX >> 8;
    net.donation_script = donation.then(|| script::p2pk(&[4; 65]));
    net
}

/// A modern network with the same easy parameters.
pub fn modern_net() -> Network {
    let mut net = legacy_net(false);
    net.rules = RuleSet::Modern;
    net
}

pub fn payout(n: u8) -> Vec<u8> {
    script::p2pkh(&[n; 20])
}

/// What to vary in a share; everything else is derived so that the share is valid.
#[derive(Debug, Clone)]
pub struct Spec {
    pub previous: Option<Hash256>,
    pub timestamp: u32,
    pub new_script: Vec<u8>,
    pub subsidy: u64,
    pub block_bits: Bits,
    /// Overrides the computed target (to build invalid shares).
    pub claimed_target: Option<Bits>,
    /// The Bitcoin block the share builds on.
    pub previous_block: Hash256,
    /// `Some` mines a block share (meeting `block_bits`) carrying these transactions.
    pub other_txs: Option<Vec<Transaction>>,
}

impl Spec {
    pub fn new(previous: Option<Hash256>, timestamp: u32, new_script: Vec<u8>) -> Spec {
        Spec {
            previous,
            timestamp,
            new_script,
            subsidy: 5_000_000_000,
            block_bits: Bits(0x1f1fffff),
            claimed_target: None,
            previous_block: sha256d(b"test block"),
            other_txs: None,
        }
    }
}

/// The witness commitment of a block with `other_txs` after its generation transaction.
pub fn commitment_for(other_txs: &[Transaction]) -> [u8; 32] {
    let wtxids: Vec<Hash256> = other_txs.iter().map(Transaction::wtxid).collect();
    block::witness_commitment_for(&wtxids).0
}

/// Mines a share for `spec` on top of `tracker`: regenerates the gentx, builds the header
/// and grinds the header nonce until the share meets its target but not the block's (or,
/// for a block share, until it meets the block's too).
pub fn mine(tracker: &Tracker, net: &Network, spec: &Spec) -> Share {
    let commitment = match &spec.other_txs {
        Some(txs) => commitment_for(txs),
        None => [0; 32],
    };
    let modern = (net.rules == RuleSet::Modern).then_some(ModernFields {
        block_height: 1000,
        witness_commitment: commitment,
    });
    let nonce = spec.timestamp.to_le_bytes().to_vec();
    let generated = gentx::generate_transaction(
        tracker,
        net,
        &GentxRequest {
            previous_share_hash: spec.previous,
            new_script: &spec.new_script,
            subsidy: spec.subsidy,
            nonce: &nonce,
            block_bits: spec.block_bits,
            modern,
        },
    )
    .expect("test share regenerates");
    let mut share_data = generated.share_data;
    if let Some(claimed) = spec.claimed_target {
        share_data.target = claimed;
    }
    let mut txids = vec![generated.tx.txid()];
    if let Some(txs) = &spec.other_txs {
        txids.extend(txs.iter().map(Transaction::txid));
    }
    let mut header = BlockHeader {
        version: 1,
        previous_block: spec.previous_block,
        merkle_root: merkle::root(&txids),
        timestamp: spec.timestamp,
        bits: spec.block_bits,
        nonce: 0,
    };
    let target = share_data.target.to_target();
    let block = spec.block_bits.to_target();
    loop {
        let pow = header.hash().to_u256();
        if pow <= target && (pow > block) != spec.other_txs.is_some() {
            break;
        }
        header.nonce += 1;
    }
    let info = ShareInfo {
        share_data,
        new_script: spec.new_script.clone(),
        subsidy: spec.subsidy,
        modern,
    };
    match &spec.other_txs {
        Some(txs) => Share::from_share1b(
            Share1b {
                header,
                info,
                other_txs: txs.clone(),
            },
            net,
        ),
        None => Share::from_share1a(
            Share1a {
                header,
                info,
                merkle_branch: vec![],
            },
            net,
        ),
    }
    .expect("test share passes the stateless checks")
}

/// A chain of `n` valid shares, `period` seconds apart, paying `scripts` in turn.
pub fn chain(net: &Network, n: usize, period: u32, scripts: &[Vec<u8>]) -> (Tracker, Vec<Hash256>) {
    let mut tracker = Tracker::new();
    let mut hashes = Vec::with_capacity(n);
    for i in 0..n {
        let spec = Spec::new(
            hashes.last().copied(),
            1_600_000_000 + period * i as u32,
            scripts[i % scripts.len()].clone(),
        );
        let share = mine(&tracker, net, &spec);
        hashes.push(share.hash);
        tracker.add(share, 0, None);
    }
    (tracker, hashes)
}

/// A share1a that passes every stateless check at the network's MAX_TARGET (ground to meet
/// it), naming `parent` whether or not anyone has it: what a peer with no hash rate can make
/// by the thousand. `salt` makes each one different.
pub fn cheap_share1a(net: &Network, parent: Option<Hash256>, salt: u32) -> Share1a {
    let target = Bits::from_target_floor(net.max_target);
    let info = ShareInfo {
        share_data: super::share::ShareData {
            previous_share_hash: parent,
            target,
            nonce: salt.to_le_bytes().to_vec(),
        },
        new_script: payout(9),
        subsidy: 5_000_000_000,
        modern: (net.rules == RuleSet::Modern).then_some(ModernFields {
            block_height: 1,
            witness_commitment: [0; 32],
        }),
    };
    let mut header = BlockHeader {
        version: 1,
        previous_block: Hash256::ZERO,
        merkle_root: sha256d(&salt.to_le_bytes()),
        timestamp: 1_600_000_000 + salt,
        bits: Bits(0x1d00ffff),
        nonce: 0,
    };
    while header.hash().to_u256() > target.to_target() {
        header.nonce += 1;
    }
    Share1a {
        header,
        info,
        merkle_branch: vec![],
    }
}

/// [`cheap_share1a`] as the share it passes the stateless checks as.
pub fn cheap_share(net: &Network, parent: Option<Hash256>, salt: u32) -> Share {
    Share::from_share1a(cheap_share1a(net, parent, salt), net)
        .expect("a cheap share passes the stateless checks")
}
