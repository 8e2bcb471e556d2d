//! `Work`: an immutable snapshot of everything needed to hand out jobs, built on the node
//! thread whenever the best share or the template changes. Miner threads build per-miner
//! coinbases from it without the tracker: the share target and the payout window are
//! computed once here (`gentx::window`), and `gentx::build_generation` finishes each
//! miner's generation transaction.
//!
//! The share nonce is the node policy's: run id (4 bytes, random per process) ‖
//! extranonce1 (4 bytes, a counter per connection or getwork request) ‖ extranonce2 (4
//! bytes, the miner's). It ends the coinbase script, so a Stratum coinbase splits around
//! the two extranonces into coinb1 and coinb2.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ruint::aliases::{U256, U512};

use crate::bitcoin::block::{Block, BlockHeader};
use crate::bitcoin::encode::compact_size_len;
use crate::bitcoin::fit::{CoinbaseCost, FitError};
use crate::bitcoin::hash::{Hash256, sha256d_parts};
use crate::bitcoin::merkle::{self, BranchStep};
use crate::bitcoin::script;
use crate::bitcoin::target::Bits;
use crate::bitcoin::template::Template;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet};
use crate::sharechain::chain::ShareChain;
use crate::sharechain::gentx::{self, ByScript, GentxError, GentxRequest, Weights, Window};
use crate::sharechain::share::{
    ModernFields, Share, Share1a, Share1b, ShareData, ShareError, ShareInfo,
};
use crate::sharechain::verify;
use crate::thread::lock;

pub const RUN_ID_SIZE: usize = 4;
pub const EXTRANONCE1_SIZE: usize = 4;
pub const EXTRANONCE2_SIZE: usize = 4;
/// The share nonce: run id ‖ extranonce1 ‖ extranonce2.
pub const NONCE_SIZE: usize = RUN_ID_SIZE + EXTRANONCE1_SIZE + EXTRANONCE2_SIZE;
/// Most coinbases cached per work (one per payout script).
const MAX_CACHED_COINBASES: usize = 4096;

/// A random 64-bit number (not for secrets: fee draws, run ids, fake block hashes).
pub fn random_u64() -> u64 {
    rand::random()
}

/// This process's run identifier, the first bytes of every share nonce it hands out.
pub fn run_id() -> [u8; RUN_ID_SIZE] {
    static ID: OnceLock<[u8; RUN_ID_SIZE]> = OnceLock::new();
    *ID.get_or_init(|| {
        let v = random_u64().to_le_bytes();
        [v[0], v[1], v[2], v[3]]
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    Generation(GentxError),
    Fit(FitError),
}

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkError::Generation(e) => write!(f, "cannot build work: {e}"),
            WorkError::Fit(e) => write!(f, "cannot build work: {e}"),
        }
    }
}

impl std::error::Error for WorkError {}

impl From<GentxError> for WorkError {
    fn from(e: GentxError) -> Self {
        WorkError::Generation(e)
    }
}

/// One miner's generation transaction on a work: the transaction with the nonce's
/// extranonces zeroed, and its non-witness bytes split around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coinbase {
    pub payout: Vec<u8>,
    pub tx: Transaction,
    /// The bytes before extranonce1.
    pub coinb1: Vec<u8>,
    /// The bytes after extranonce2.
    pub coinb2: Vec<u8>,
    /// Stratum's `mining.notify` params after the job id, rendered once per coinbase
    /// (every miner paid by this script on this work shares them).
    pub notify_params: OnceLock<String>,
}

impl Coinbase {
    /// The txid with these extranonces.
    pub fn txid(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Hash256 {
        sha256d_parts(&[&self.coinb1, extranonce1, extranonce2, &self.coinb2])
    }

    /// The transaction with these extranonces.
    pub fn with_extranonce(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Transaction {
        let mut tx = self.tx.clone();
        let script = &mut tx.inputs[0].script_sig;
        let at = script.len() - EXTRANONCE1_SIZE - EXTRANONCE2_SIZE;
        script[at..at + EXTRANONCE1_SIZE].copy_from_slice(extranonce1);
        script[at + EXTRANONCE1_SIZE..].copy_from_slice(extranonce2);
        tx
    }
}

/// A solution that meets the share target: the share, and the block when it is one.
#[derive(Debug, Clone)]
pub struct Found {
    pub share: Share,
    pub block: Option<Block>,
}

/// Everything needed to hand out jobs on the current best share and template.
#[derive(Debug)]
pub struct Work {
    /// Increases with every work built by this process.
    pub id: u64,
    pub net: Network,
    pub template: Arc<Template>,
    /// The share mined on.
    pub best: Option<Hash256>,
    pub share_target: Bits,
    /// The header timestamp: max(now, the template's mintime, median of the last 11
    /// shares + 1).
    pub timestamp: u32,
    /// The coinbase value after fitting.
    pub subsidy: u64,
    /// The template transactions in the block, by index, ascending.
    pub keep: Vec<usize>,
    /// The coinbase's merkle branch among the kept transactions.
    pub branch: Vec<BranchStep>,
    pub modern: Option<ModernFields>,
    /// The block height being mined (the template's).
    pub height: u32,
    /// Seconds (node clock) when the work was built.
    pub built_at: u64,
    /// While the best chain races (node policy, doc/protocol.md #38): at most one share
    /// of ours per this long; a solution sooner is a pseudo-share.
    pub pace: Option<std::time::Duration>,
    weights: Weights,
    by_script: Vec<(Vec<u8>, U512)>,
    coinbases: Mutex<HashMap<Vec<u8>, Arc<Coinbase>>>,
}

/// The payout script the worst-case coinbase pays: the longest standard template.
fn worst_payout() -> Vec<u8> {
    script::p2pk(&[4; 65])
}

impl Work {
    /// Builds the work on `best` (the node's best share) and `template`, at `now` (Unix
    /// seconds, bitcoind's clock). Runs on the node thread: it reads the tracker.
    pub fn build(
        chain: &ShareChain,
        template: &Arc<Template>,
        best: Option<Hash256>,
        now: u64,
    ) -> Result<Work, WorkError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let net = chain.network().clone();
        let tracker = chain.tracker();
        let window = gentx::window(tracker, &net, best, template.bits)?;
        let modern_of = |commitment: Option<[u8; 32]>| {
            (net.rules == RuleSet::Modern).then_some(ModernFields {
                block_height: template.height,
                witness_commitment: commitment.unwrap_or([0; 32]),
            })
        };
        // Fit the template beside the largest coinbase any miner can get: every script of
        // the window paid, plus a new finder with the longest payout script.
        let worst = gentx::build_generation(
            &net,
            &window,
            &GentxRequest {
                previous_share_hash: best,
                new_script: &worst_payout(),
                subsidy: template.coinbase_value,
                nonce: &[0; NONCE_SIZE],
                block_bits: template.bits,
                modern: modern_of(template.segwit.then_some([1; 32])),
            },
        )?;
        let fitted = template
            .fit(CoinbaseCost::of(&worst.tx, template))
            .map_err(WorkError::Fit)?;
        let modern = modern_of(fitted.witness_commitment(template));
        let median = verify::median_timestamp(tracker, best).map_or(0, |m| m.saturating_add(1));
        let now32 = u32::try_from(now).unwrap_or(u32::MAX);
        let timestamp = now32.max(template.min_time).max(median);
        Ok(Work {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            template: template.clone(),
            best,
            share_target: window.target,
            timestamp,
            subsidy: fitted.coinbase_value,
            branch: fitted.coinbase_branch(template),
            keep: fitted.keep,
            modern,
            height: template.height,
            built_at: now,
            pace: None,
            weights: window.weights.clone(),
            by_script: window
                .by_script
                .iter()
                .map(|(s, w)| (s.to_vec(), w))
                .collect(),
            coinbases: Mutex::new(HashMap::new()),
            net,
        })
    }

    /// The share target as a number.
    pub fn share_target(&self) -> U256 {
        self.share_target.to_target()
    }

    pub fn block_target(&self) -> U256 {
        self.template.bits.to_target()
    }

    pub fn previous_block(&self) -> Hash256 {
        self.template.previous_block
    }

    /// Whether a job on `self` still builds on what `current` builds on: the same block
    /// and the same best share. A solution on a job that is not is stale.
    pub fn same_tip(&self, current: &Work) -> bool {
        self.best == current.best && self.previous_block() == current.previous_block()
    }

    /// The generation transaction paying `payout`, cached per work.
    pub fn coinbase(&self, payout: &[u8]) -> Result<Arc<Coinbase>, WorkError> {
        if let Some(c) = lock(&self.coinbases).get(payout) {
            return Ok(c.clone());
        }
        let by_script: Vec<(&[u8], U512)> = self
            .by_script
            .iter()
            .map(|(s, w)| (s.as_slice(), *w))
            .collect();
        let window = Window {
            previous_share_hash: self.best,
            target: self.share_target,
            weights: self.weights.clone(),
            by_script: ByScript::List(by_script),
        };
        let mut nonce = [0u8; NONCE_SIZE];
        nonce[..RUN_ID_SIZE].copy_from_slice(&run_id());
        let generated = gentx::build_generation(
            &self.net,
            &window,
            &GentxRequest {
                previous_share_hash: self.best,
                new_script: payout,
                subsidy: self.subsidy,
                nonce: &nonce,
                block_bits: self.template.bits,
                modern: self.modern,
            },
        )?;
        let tx = generated.tx;
        let bytes = tx.to_stripped_bytes();
        // version ‖ input count ‖ outpoint ‖ script length ‖ script: the nonce ends the
        // script, and the extranonces end the nonce.
        let script_len = tx.inputs[0].script_sig.len();
        let script_end = 4 + 1 + 36 + compact_size_len(script_len as u64) + script_len;
        let coinbase = Arc::new(Coinbase {
            payout: payout.to_vec(),
            coinb1: bytes[..script_end - EXTRANONCE1_SIZE - EXTRANONCE2_SIZE].to_vec(),
            coinb2: bytes[script_end..].to_vec(),
            tx,
            notify_params: OnceLock::new(),
        });
        let mut cache = lock(&self.coinbases);
        if cache.len() < MAX_CACHED_COINBASES {
            cache.insert(payout.to_vec(), coinbase.clone());
        }
        Ok(coinbase)
    }

    /// The header of a job with this merkle root, nonce 0.
    pub fn header(&self, merkle_root: Hash256) -> BlockHeader {
        BlockHeader {
            version: self.template.version,
            previous_block: self.template.previous_block,
            merkle_root,
            timestamp: self.timestamp,
            bits: self.template.bits,
            nonce: 0,
        }
    }

    pub fn merkle_root(&self, coinbase_txid: Hash256) -> Hash256 {
        merkle::apply_branch(coinbase_txid, &self.branch)
    }

    /// The template transactions in the block.
    pub fn other_txs(&self) -> Vec<Transaction> {
        self.keep
            .iter()
            .map(|&i| self.template.transactions[i].tx.clone())
            .collect()
    }

    /// The share (and block) of a solution whose header meets the share target.
    pub fn found(
        &self,
        coinbase: &Coinbase,
        extranonce1: &[u8],
        extranonce2: &[u8],
        header: BlockHeader,
    ) -> Result<Found, ShareError> {
        let mut nonce = Vec::with_capacity(NONCE_SIZE);
        nonce.extend_from_slice(&run_id());
        nonce.extend_from_slice(extranonce1);
        nonce.extend_from_slice(extranonce2);
        let info = ShareInfo {
            share_data: ShareData {
                previous_share_hash: self.best,
                target: self.share_target,
                nonce,
            },
            new_script: coinbase.payout.clone(),
            subsidy: self.subsidy,
            modern: self.modern,
        };
        if header.hash().to_u256() <= header.bits.to_target() {
            let other_txs = self.other_txs();
            let gentx = coinbase.with_extranonce(extranonce1, extranonce2);
            let block = Block::assemble(header, &gentx, other_txs.clone());
            let share = Share::from_share1b(
                Share1b {
                    header,
                    info,
                    other_txs,
                },
                &self.net,
            )?;
            Ok(Found {
                share,
                block: Some(block),
            })
        } else {
            let share = Share::from_share1a(
                Share1a {
                    header,
                    info,
                    merkle_branch: self.branch.clone(),
                },
                &self.net,
            )?;
            Ok(Found { share, block: None })
        }
    }
}
