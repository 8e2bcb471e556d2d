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
/// The metadata key of the blocks counted by what became of them (JSON [`BlockCounts`]).
pub const COUNTS_KEY: &str = "found_block_counts";
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
    /// The finder's payout address (or script hex): the payout script of the share that
    /// is the block, whichever node's miner found it.
    #[serde(default)]
    pub finder: String,
    /// Found by this node's own miners (not in a peer's share).
    #[serde(default)]
    pub local: bool,
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
        local: bool,
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
            local,
            outcome: "pending".into(),
            value,
            payouts,
        }
    }
}

/// What became of a found block, from its outcome as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not answered yet.
    Pending,
    /// bitcoind has it on its best chain (`accepted`, or `duplicate`: it had it already).
    Accepted,
    /// Orphaned or stale: not on bitcoind's best chain (inconclusive, given up, a sibling
    /// accepted first, abandoned at shutdown).
    Stale,
    /// bitcoind refused it.
    Rejected,
}

impl Fate {
    pub fn of(outcome: &str) -> Fate {
        match outcome {
            "pending" => Fate::Pending,
            "accepted" | "duplicate" => Fate::Accepted,
            o if o.starts_with("rejected") => Fate::Rejected,
            _ => Fate::Stale,
        }
    }
}

/// Found blocks counted by what became of them, since the store began; counters, never
/// capped like the list. `found` ≥ the sum of the four fates (the difference: blocks
/// recorded before these counts were kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCounts {
    pub found: u64,
    pub pending: u64,
    pub accepted: u64,
    pub stale: u64,
    pub rejected: u64,
    /// Accepted blocks whose coinbase pays this node's payout address.
    pub paid_node: u64,
}

impl BlockCounts {
    fn slot(&mut self, fate: Fate) -> &mut u64 {
        match fate {
            Fate::Pending => &mut self.pending,
            Fate::Accepted => &mut self.accepted,
            Fate::Stale => &mut self.stale,
            Fate::Rejected => &mut self.rejected,
        }
    }
}

/// The found blocks, newest last (the newest `KEEP`), and every block counted.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub blocks: Vec<FoundBlock>,
    pub counts: BlockCounts,
    dirty: bool,
}

impl History {
    /// The history in the store; an unreadable record starts a new one (it is only a log).
    /// A store from before the counts were kept has them derived from the blocks listed.
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
        let counts = match store
            .meta(COUNTS_KEY)?
            .and_then(|bytes| serde_json::from_slice::<BlockCounts>(&bytes).ok())
        {
            Some(c) => c,
            None => {
                let mut c = BlockCounts {
                    found: total,
                    ..BlockCounts::default()
                };
                for b in &blocks {
                    *c.slot(Fate::of(&b.outcome)) += 1;
                }
                c
            }
        };
        Ok(History {
            blocks,
            counts,
            dirty: false,
        })
    }

    /// Blocks found since the store began.
    pub fn total(&self) -> u64 {
        self.counts.found
    }

    /// Records a block once (a second copy of the same block is ignored).
    pub fn found(&mut self, block: FoundBlock) -> bool {
        if self.blocks.iter().any(|b| b.hash == block.hash) {
            return false;
        }
        self.counts.found += 1;
        *self.counts.slot(Fate::of(&block.outcome)) += 1;
        self.blocks.push(block);
        if self.blocks.len() > KEEP {
            let extra = self.blocks.len() - KEEP;
            self.blocks.drain(..extra);
        }
        self.dirty = true;
        true
    }

    /// Records what became of a block; `payee` is this node's payout address (an accepted
    /// block paying it is counted in `paid_node`).
    pub fn set_outcome(&mut self, hash: &Hash256, outcome: String, payee: &str) {
        let hex = hash.to_hex();
        let Some(b) = self.blocks.iter_mut().find(|b| b.hash == hex) else {
            return;
        };
        let (was, now) = (Fate::of(&b.outcome), Fate::of(&outcome));
        let pays = !payee.is_empty() && b.payouts.iter().any(|(a, v)| a == payee && *v > 0);
        b.outcome = outcome;
        self.dirty = true;
        if was == now {
            return;
        }
        let old = self.counts.slot(was);
        *old = old.saturating_sub(1);
        *self.counts.slot(now) += 1;
        if pays && now == Fate::Accepted {
            self.counts.paid_node += 1;
        } else if pays && was == Fate::Accepted {
            self.counts.paid_node = self.counts.paid_node.saturating_sub(1);
        }
    }

    /// Adds the history to `batch` when it changed.
    pub fn write_to(&mut self, batch: &mut Batch) {
        if self.dirty {
            if let Ok(bytes) = serde_json::to_vec(&self.blocks) {
                batch.put_meta.push((META_KEY.to_string(), bytes));
            }
            if let Ok(bytes) = serde_json::to_vec(&self.counts) {
                batch.put_meta.push((COUNTS_KEY.to_string(), bytes));
            }
            batch.put_meta.push((
                TOTAL_KEY.to_string(),
                self.counts.found.to_le_bytes().to_vec(),
            ));
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
            local: false,
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
        assert_eq!((history.blocks.len(), history.total()), (0, 0));
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
            "finder",
        );
        assert_eq!(history.blocks.len(), KEEP);
        assert_eq!(history.total(), KEEP as u64 + 50);
        assert_eq!(history.blocks[0].height, 50, "the oldest are forgotten");
        let mut batch = Batch::default();
        history.write_to(&mut batch);
        store.apply(&batch).unwrap();
        drop(store);

        let store = Store::open(dir.path(), "test").unwrap();
        let again = History::load(&store).unwrap();
        assert_eq!(again.blocks, history.blocks);
        assert_eq!(again.total(), KEEP as u64 + 50);
        assert_eq!(again.counts, history.counts);
        assert_eq!(again.blocks.last().unwrap().outcome, "accepted");
    }

    #[test]
    fn blocks_are_counted_by_fate_past_the_kept_list_and_a_changed_outcome_moves_its_count() {
        let mut history = History::default();
        let n = KEEP as u64 + 40;
        for i in 0..n {
            history.found(block(i));
            let hash = Hash256::from_hex(&format!("{i:064x}")).unwrap();
            let outcome = match i % 4 {
                0 | 1 => "accepted",
                2 => "stale: block 00 on the same previous block was accepted; not submitted",
                _ => "rejected: high-hash",
            };
            history.set_outcome(&hash, outcome.into(), "finder");
        }
        history.found(block(n));
        let c = history.counts;
        assert_eq!(c.found, n + 1);
        assert_eq!(
            (c.accepted, c.stale, c.rejected, c.pending),
            (n / 2, n / 4, n / 4, 1)
        );
        assert_eq!(c.paid_node, n / 2, "each accepted block paid `finder`");
        assert_eq!(
            history.blocks.len(),
            KEEP,
            "the list is capped, the counts are not"
        );
        // Inconclusive, then bitcoind says it has it: one block, moved from stale to accepted.
        let last = Hash256::from_hex(&format!("{n:064x}")).unwrap();
        history.set_outcome(
            &last,
            "inconclusive (valid, not on the best chain)".into(),
            "",
        );
        history.set_outcome(&last, "duplicate".into(), "");
        let d = history.counts;
        assert_eq!(
            (d.accepted, d.stale, d.pending),
            (c.accepted + 1, c.stale, 0)
        );
        assert_eq!(
            d.paid_node, c.paid_node,
            "no payee given: not counted as paying us"
        );
    }

    #[test]
    fn a_store_without_counts_derives_them_from_the_listed_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), "test").unwrap();
        let mut accepted = block(1);
        accepted.outcome = "accepted".into();
        let mut batch = Batch::default();
        batch.put_meta.push((
            META_KEY.to_string(),
            serde_json::to_vec(&vec![accepted, block(2)]).unwrap(),
        ));
        batch
            .put_meta
            .push((TOTAL_KEY.to_string(), 5u64.to_le_bytes().to_vec()));
        store.apply(&batch).unwrap();
        let h = History::load(&store).unwrap();
        assert_eq!(
            (h.counts.found, h.counts.accepted, h.counts.pending),
            (5, 1, 1)
        );
    }
}
