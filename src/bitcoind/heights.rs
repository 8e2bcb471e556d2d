//! Block heights by hash, for ranking shares by the height of their previous block: asked of
//! bitcoind with `getblockheader` and cached (a block's height never changes). A block
//! bitcoind does not know is `None`, never cached, since it may arrive later.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select};
use log::debug;

use super::rpc::{Client, RpcError};
use crate::bitcoin::hash::Hash256;
use crate::thread::{Shutdown, lock};

const LOG: &str = "heights";

/// How many heights are kept before the cache starts afresh. A payout window spans a few
/// hundred Bitcoin blocks at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Bitcoin Core's code for an unknown block.
const CODE_NOT_FOUND: i64 = -5;

/// A shared, cached height lookup. Cheap to clone; every clone shares the cache.
#[derive(Debug, Clone)]
pub struct Heights {
    rpc: Arc<Client>,
    cache: Arc<Mutex<HashMap<Hash256, u64>>>,
    capacity: usize,
}

impl Heights {
    pub fn new(rpc: Arc<Client>) -> Heights {
        Heights {
            rpc,
            cache: Arc::default(),
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// The height of `hash` from the cache alone.
    pub fn cached(&self, hash: &Hash256) -> Option<u64> {
        self.lock().get(hash).copied()
    }

    /// Records a height learnt elsewhere (a template's parent is at its height − 1).
    pub fn insert(&self, hash: Hash256, height: u64) {
        let mut cache = self.lock();
        if cache.len() >= self.capacity && !cache.contains_key(&hash) {
            cache.clear();
        }
        cache.insert(hash, height);
    }

    /// The height of `hash`: from the cache, else from bitcoind. `Ok(None)` when bitcoind
    /// does not know the block; an error when bitcoind could not be asked.
    pub fn get(&self, hash: &Hash256) -> Result<Option<u64>, RpcError> {
        if let Some(height) = self.cached(hash) {
            return Ok(Some(height));
        }
        match self.rpc.get_block_header(hash) {
            Ok(header) => {
                self.insert(*hash, header.height);
                Ok(Some(header.height))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hash256, u64>> {
        lock(&self.cache)
    }
}

/// Queued height lookups at most; more are asked again at a later think.
const ASK_QUEUE: usize = 256;
/// The pause after a failed lookup, so that a bitcoind that is down is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A height looked up for the node (`None`: bitcoind does not know the block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeightAnswer {
    pub block: Hash256,
    pub height: Option<u64>,
}

/// Looks heights up on its own thread (`heights`), so that nobody waits on bitcoind for
/// one: [`HeightLookup::ask`] never blocks, and the answer lands in the shared cache and
/// on the returned channel.
pub struct HeightLookup {
    asks: Sender<Hash256>,
    /// Asked and not answered yet (each block is asked once at a time).
    pending: Arc<Mutex<HashSet<Hash256>>>,
    shutdown: Shutdown,
}

impl HeightLookup {
    pub fn start(heights: Heights) -> std::io::Result<(HeightLookup, Receiver<HeightAnswer>)> {
        let (asks, asked) = bounded::<Hash256>(ASK_QUEUE);
        let (answers, answered) = bounded(ASK_QUEUE);
        let pending: Arc<Mutex<HashSet<Hash256>>> = Arc::default();
        let shutdown = Shutdown::new();
        {
            let pending = pending.clone();
            let shutdown = shutdown.clone();
            crate::thread::spawn("heights", move || {
                loop {
                    let block = select! {
                        recv(asked) -> block => match block {
                            Ok(block) => block,
                            Err(_) => return,
                        },
                        recv(shutdown.signal()) -> _ => return,
                    };
                    let height = heights.get(&block);
                    lock(&pending).remove(&block);
                    match height {
                        Ok(height) => {
                            // Full: the cache has it; the node reads it at its next think.
                            let _ = answers.try_send(HeightAnswer { block, height });
                        }
                        Err(e) => {
                            debug!(target: LOG, "height of block {block}: {e}");
                            if shutdown.sleep(RETRY_PAUSE) {
                                return;
                            }
                        }
                    }
                }
            })?;
        }
        Ok((
            HeightLookup {
                asks,
                pending,
                shutdown,
            },
            answered,
        ))
    }

    /// Asks for a block's height; never blocks (a full queue or a block already asked for
    /// is left for later).
    pub fn ask(&self, block: Hash256) {
        if self.shutdown.is_stopped() {
            return;
        }
        let mut pending = lock(&self.pending);
        if pending.len() >= ASK_QUEUE || !pending.insert(block) {
            return;
        }
        if self.asks.try_send(block).is_err() {
            pending.remove(&block);
        }
    }

    /// Stops the thread after the lookup in hand (it is not waited for, so that a stalled
    /// bitcoind cannot hold up shutdown; it ends within one RPC timeout).
    pub fn stop(self) {
        self.shutdown.stop();
    }
}

impl Drop for HeightLookup {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

/// Core answers -5 for an unknown block; bcoin -1 with "Block not found".
fn is_not_found(e: &RpcError) -> bool {
    match e {
        RpcError::Rpc { code, message, .. } => {
            *code == Some(CODE_NOT_FOUND) || message.to_ascii_lowercase().contains("not found")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::hash::sha256d;
    use crate::bitcoind::rpc::{Auth, Call};

    fn heights() -> Heights {
        Heights::new(Arc::new(Client::new(
            "127.0.0.1",
            9,
            Auth::user_pass("u", "p"),
        )))
    }

    #[test]
    fn cached_heights_need_no_bitcoind() {
        let h = heights();
        let hash = sha256d(b"block");
        assert_eq!(h.cached(&hash), None);
        h.insert(hash, 812);
        assert_eq!(h.get(&hash).unwrap(), Some(812));
        assert_eq!(h.clone().cached(&hash), Some(812), "clones share the cache");
    }

    #[test]
    fn cache_starts_afresh_when_full() {
        let mut h = heights();
        h.capacity = 3;
        for i in 0..3u8 {
            h.insert(sha256d(&[i]), u64::from(i));
        }
        assert_eq!(h.len(), 3);
        h.insert(sha256d(&[0]), 0);
        assert_eq!(h.len(), 3, "replacing a known hash keeps the rest");
        h.insert(sha256d(&[9]), 9);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn not_found_is_told_apart_from_other_errors() {
        let call = Call {
            method: "getblockheader".into(),
            addr: "127.0.0.1:9".into(),
        };
        let rpc = |code, message: &str| RpcError::Rpc {
            call: call.clone(),
            code,
            message: message.into(),
        };
        assert!(is_not_found(&rpc(Some(-5), "Block not found")));
        assert!(is_not_found(&rpc(Some(-1), "Block not found")));
        assert!(!is_not_found(&rpc(Some(-1), "something else")));
        assert!(!is_not_found(&RpcError::ConnectionRefused {
            addr: "127.0.0.1:9".into()
        }));
    }
}
