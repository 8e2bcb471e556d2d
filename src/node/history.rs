//! Blocks the pool found, with their submission outcome and who they paid, kept in the
//! store's metadata so the history survives restarts.

use serde::{Deserialize, Serialize};

use crate::bitcoin::address;
use crate::bitcoin::block::Block;
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::hash::Hash256;
use crate::store::{Batch, Store, StoreError};

/// The metadata key of the history (JSON).
pub const META_KEY: &str = "found_blocks";
/// The metadata key of the number of blocks ever found (u64, little-endian).
pub const TOTAL_KEY: &str = "found_blocks_total";
/// Blocks kept.
pub const KEEP: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundBlock {
    /// Block hash, 64 hex characters as bitcoind shows it.
    pub hash: String,
    pub height: u64,
    /// Unix seconds when the node first saw it.
    pub time: u64,
    /// The share that is the block.
    pub share: String,
    /// The finder's payout address (or script hex).
    #[serde(default)]
    pub finder: String,
    /// `pending` until the submitter reports, then its outcome.
    pub outcome: String,
    /// Total value of the generation transaction, satoshis.
    pub value: u64,
    /// The coinbase outputs: address (or script hex) and satoshis.
    pub payouts: Vec<(String, u64)>,
}

impl FoundBlock {
    pub fn new(
        block: &Block,
        height: u64,
        share: Hash256,
        finder: &[u8],
        now: u64,
        chain: &ChainParams,
    ) -> Self {
        let mut payouts = Vec::new();
        let mut value = 0u64;
        if let Some(cb) = block.txs.first() {
            for out in &cb.outputs {
                value = value.saturating_add(out.value);
                if out.value == 0 {
                    continue;
                }
                let who = address::from_script(&out.script_pubkey, chain)
                    .unwrap_or_else(|_| hex::encode(&out.script_pubkey));
                payouts.push((who, out.value));
            }
        }
        FoundBlock {
            hash: block.header.hash().to_hex(),
            height,
            time: now,
            share: share.to_hex(),
            finder: address::from_script(finder, chain).unwrap_or_else(|_| hex::encode(finder)),
            outcome: "pending".into(),
            value,
            payouts,
        }
    }
}

/// The found blocks, newest last (the newest `KEEP`), and how many there ever were.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub blocks: Vec<FoundBlock>,
    pub total: u64,
    dirty: bool,
}

impl History {
    /// The history in the store; an unreadable record starts a new one (it is only a log).
    pub fn load(store: &Store) -> Result<History, StoreError> {
        let blocks = store
            .meta(META_KEY)?
            .and_then(|bytes| serde_json::from_slice::<Vec<FoundBlock>>(&bytes).ok())
            .unwrap_or_default();
        let total = store
            .meta(TOTAL_KEY)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_le_bytes)
            .max(blocks.len() as u64);
        Ok(History {
            blocks,
            total,
            dirty: false,
        })
    }

    /// Records a block once (a second copy of the same block is ignored).
    pub fn found(&mut self, block: FoundBlock) -> bool {
        if self.blocks.iter().any(|b| b.hash == block.hash) {
            return false;
        }
        self.blocks.push(block);
        self.total += 1;
        if self.blocks.len() > KEEP {
            let extra = self.blocks.len() - KEEP;
            self.blocks.drain(..extra);
        }
        self.dirty = true;
        true
    }

    pub fn set_outcome(&mut self, hash: &Hash256, outcome: String) {
        let hex = hash.to_hex();
        if let Some(b) = self.blocks.iter_mut().find(|b| b.hash == hex) {
            b.outcome = outcome;
            self.dirty = true;
        }
    }

    /// Adds the history to `batch` when it changed.
    pub fn write_to(&mut self, batch: &mut Batch) {
        if self.dirty {
            if let Ok(bytes) = serde_json::to_vec(&self.blocks) {
                batch.put_meta.push((META_KEY.to_string(), bytes));
            }
            batch
                .put_meta
                .push((TOTAL_KEY.to_string(), self.total.to_le_bytes().to_vec()));
            self.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u64) -> FoundBlock {
        FoundBlock {
            hash: format!("{n:064x}"),
            height: n,
            time: n,
            share: format!("{n:064x}"),
            finder: "finder".into(),
            outcome: "pending".into(),
            value: 50,
            payouts: vec![("finder".into(), 50)],
        }
    }

    #[test]
    fn history_keeps_the_newest_blocks_counts_every_one_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), "test").unwrap();
        let mut history = History::load(&store).unwrap();
        assert_eq!((history.blocks.len(), history.total), (0, 0));
        for n in 0..KEEP as u64 + 50 {
            assert!(history.found(block(n)));
        }
        assert!(
            !history.found(block(KEEP as u64 + 49)),
            "a second copy is ignored"
        );
        history.set_outcome(
            &Hash256::from_hex(&format!("{:064x}", KEEP as u64 + 49)).unwrap(),
            "accepted".into(),
        );
        assert_eq!(history.blocks.len(), KEEP);
        assert_eq!(history.total, KEEP as u64 + 50);
        assert_eq!(history.blocks[0].height, 50, "the oldest are forgotten");
        let mut batch = Batch::default();
        history.write_to(&mut batch);
        store.apply(&batch).unwrap();
        drop(store);

        let store = Store::open(dir.path(), "test").unwrap();
        let again = History::load(&store).unwrap();
        assert_eq!(again.blocks, history.blocks);
        assert_eq!(again.total, KEEP as u64 + 50);
        assert_eq!(again.blocks.last().unwrap().outcome, "accepted");
    }
}
