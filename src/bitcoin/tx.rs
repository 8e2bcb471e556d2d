//! Transactions, with and without witness (BIP144).
//!
//! A transaction is written in the witness form only when one of its inputs has a
//! non-empty witness; its txid is always over the form without witness.

use super::encode::{self, Decode, Encode, Reader, WriteExt};
use super::hash::{Hash256, sha256d};

/// Smallest encodings, used to bound counts before allocating.
const MIN_TXIN_SIZE: usize = 32 + 4 + 1 + 4;
const MIN_TXOUT_SIZE: usize = 8 + 1;

/// Witness items one buffer may decode to whatever its size: see [`encode::ITEMS_FREE`].
pub const WITNESS_ITEMS_FREE: usize = encode::ITEMS_FREE;
/// Bytes of input per witness item beyond the free ones: see [`encode::BYTES_PER_ITEM`].
pub const WITNESS_BYTES_PER_ITEM: usize = encode::BYTES_PER_ITEM;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutPoint {
    pub txid: Hash256,
    pub vout: u32,
}

impl OutPoint {
    /// The "no previous output" of a coinbase input.
    pub const NULL: OutPoint = OutPoint {
        txid: Hash256::ZERO,
        vout: 0xffff_ffff,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxIn {
    pub previous_output: OutPoint,
    pub script_sig: Vec<u8>,
    pub sequence: u32,
    /// The witness stack; empty for an input without witness.
    pub witness: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOut {
    pub value: u64,
    pub script_pubkey: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub version: u32,
    pub inputs: Vec<TxIn>,
    pub outputs: Vec<TxOut>,
    pub lock_time: u32,
}

impl Transaction {
    pub fn has_witness(&self) -> bool {
        self.inputs.iter().any(|i| !i.witness.is_empty())
    }

    /// The serialisation without witness data.
    pub fn encode_stripped_to(&self, out: &mut Vec<u8>) {
        out.put_u32_le(self.version);
        self.encode_ins_outs(out);
        out.put_u32_le(self.lock_time);
    }

    pub fn to_stripped_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_stripped_to(&mut out);
        out
    }

    fn encode_ins_outs(&self, out: &mut Vec<u8>) {
        out.put_compact_size(self.inputs.len() as u64);
        for input in &self.inputs {
            input.previous_output.txid.encode_to(out);
            out.put_u32_le(input.previous_output.vout);
            out.put_var_bytes(&input.script_sig);
            out.put_u32_le(input.sequence);
        }
        out.put_compact_size(self.outputs.len() as u64);
        for output in &self.outputs {
            out.put_u64_le(output.value);
            out.put_var_bytes(&output.script_pubkey);
        }
    }

    pub fn txid(&self) -> Hash256 {
        sha256d(&self.to_stripped_bytes())
    }

    /// The witness txid; equal to the txid for a transaction without witness.
    pub fn wtxid(&self) -> Hash256 {
        sha256d(&self.to_bytes())
    }

    pub fn stripped_size(&self) -> usize {
        self.to_stripped_bytes().len()
    }

    pub fn total_size(&self) -> usize {
        self.to_bytes().len()
    }

    /// BIP141 weight: stripped size × 3 + total size.
    pub fn weight(&self) -> usize {
        self.stripped_size() * 3 + self.total_size()
    }

    /// Reads a transaction; the BIP144 witness form is accepted only when
    /// `allow_witness` (the legacy rule set reads the 2011 form only).
    pub fn decode_with(r: &mut Reader<'_>, allow_witness: bool) -> encode::Result<Self> {
        let version = r.u32_le("transaction version")?;
        let segwit = allow_witness && r.peek() == Some(0);
        if segwit {
            r.u8("witness marker")?;
            if r.u8("witness flag")? != 1 {
                return Err(encode::Error::Invalid {
                    what: "transaction",
                    reason: "witness flag must be 1",
                });
            }
        }
        let mut inputs = r.list("transaction inputs", MIN_TXIN_SIZE, |r| {
            Ok(TxIn {
                previous_output: OutPoint {
                    txid: Hash256::decode_from(r)?,
                    vout: r.u32_le("input index")?,
                },
                script_sig: r.var_bytes("input script", r.remaining())?.to_vec(),
                sequence: r.u32_le("input sequence")?,
                witness: Vec::new(),
            })
        })?;
        if segwit && inputs.is_empty() {
            return Err(encode::Error::Invalid {
                what: "transaction",
                reason: "witness form with no inputs",
            });
        }
        let outputs = r.list("transaction outputs", MIN_TXOUT_SIZE, |r| {
            Ok(TxOut {
                value: r.u64_le("output value")?,
                script_pubkey: r.var_bytes("output script", r.remaining())?.to_vec(),
            })
        })?;
        if segwit {
            for input in &mut inputs {
                let n = r.count("witness items", 1)?;
                // Bounded per byte of the whole buffer before anything is allocated.
                r.take_items("witness items", n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(r.var_bytes("witness item", r.remaining())?.to_vec());
                }
                input.witness = items;
            }
            if inputs.iter().all(|i| i.witness.is_empty()) {
                return Err(encode::Error::Invalid {
                    what: "transaction",
                    reason: "witness form with every witness empty",
                });
            }
        }
        let lock_time = r.u32_le("transaction lock time")?;
        Ok(Transaction {
            version,
            inputs,
            outputs,
            lock_time,
        })
    }
}

impl Encode for Transaction {
    /// The witness form when the transaction has a witness, the plain form otherwise.
    fn encode_to(&self, out: &mut Vec<u8>) {
        if !self.has_witness() {
            return self.encode_stripped_to(out);
        }
        out.put_u32_le(self.version);
        out.extend_from_slice(&[0, 1]);
        self.encode_ins_outs(out);
        for input in &self.inputs {
            out.put_compact_size(input.witness.len() as u64);
            for item in &input.witness {
                out.put_var_bytes(item);
            }
        }
        out.put_u32_le(self.lock_time);
    }
}

impl Decode for Transaction {
    const NAME: &'static str = "transaction";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        Transaction::decode_with(r, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(witness: bool) -> Transaction {
        Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: sha256d(b"prev"),
                    vout: 1,
                },
                script_sig: vec![],
                sequence: 0xffff_fffd,
                witness: if witness {
                    vec![vec![0x30; 71], vec![0x02; 33]]
                } else {
                    vec![]
                },
            }],
            outputs: vec![TxOut {
                value: 1000,
                script_pubkey: vec![0x00, 0x14, 7, 7],
            }],
            lock_time: 0,
        }
    }

    #[test]
    fn witness_form_only_for_a_transaction_with_a_witness() {
        let plain = sample(false);
        assert_eq!(plain.to_bytes(), plain.to_stripped_bytes());
        assert_eq!(plain.txid(), plain.wtxid());
        let wit = sample(true);
        let bytes = wit.to_bytes();
        assert_eq!(&bytes[4..6], &[0, 1]);
        assert_ne!(wit.txid(), wit.wtxid());
        assert_eq!(wit.txid(), plain.txid());
        assert_eq!(Transaction::from_bytes(&bytes).unwrap(), wit);
        assert_eq!(wit.weight(), wit.stripped_size() * 3 + bytes.len());
    }

    #[test]
    fn witness_marker_with_a_bad_flag_is_refused() {
        let mut bytes = sample(true).to_bytes();
        bytes[5] = 2;
        assert!(Transaction::from_bytes(&bytes).is_err());
    }

    #[test]
    fn witness_form_with_only_empty_witnesses_is_refused() {
        let mut bytes = sample(true).to_bytes();
        // Replace the witness section (2 items) with a zero item count.
        let tx = sample(false).to_stripped_bytes();
        let lock = bytes.len() - 4;
        let wit_start = 6 + (tx.len() - 8);
        bytes.splice(wit_start..lock, [0u8]);
        let err = Transaction::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("every witness empty"), "{err}");
    }

    #[test]
    fn legacy_decoding_reads_a_zero_input_count_as_no_inputs() {
        let tx = Transaction {
            version: 1,
            inputs: vec![],
            outputs: vec![],
            lock_time: 0,
        };
        let bytes = tx.to_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Transaction::decode_with(&mut r, false).unwrap(), tx);
        assert!(Transaction::from_bytes(&bytes).is_err());
    }

    /// A witness transaction whose one input carries `items` witness items of `len` bytes.
    fn with_items(items: usize, len: usize) -> Transaction {
        let mut tx = sample(true);
        tx.inputs[0].witness = vec![vec![7u8; len]; items];
        tx
    }

    /// The memory a decoded transaction's witnesses hold: item headers and item bytes.
    fn witness_memory(tx: &Transaction) -> usize {
        tx.inputs
            .iter()
            .map(|i| {
                i.witness.capacity() * std::mem::size_of::<Vec<u8>>()
                    + i.witness.iter().map(Vec::capacity).sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn eight_megabytes_of_empty_witness_items_are_refused_before_allocating() {
        // 8,000,000 empty items: 192 MB of `Vec` headers if decoded.
        let n = 8_000_000usize;
        let mut bytes = sample(false).to_stripped_bytes();
        let lock = bytes.split_off(bytes.len() - 4);
        bytes.splice(4..4, [0u8, 1]);
        bytes.push(0xfe);
        bytes.extend_from_slice(&(n as u32).to_le_bytes());
        bytes.resize(bytes.len() + n, 0);
        bytes.extend_from_slice(&lock);
        let err = Transaction::from_bytes(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                encode::Error::Oversized {
                    what: "witness items",
                    ..
                }
            ),
            "{err}"
        );
        // Within the bound, the same shape decodes, holding at most 4× its input plus the
        // free items' headers.
        let tx = with_items(WITNESS_ITEMS_FREE + 10_000, 0);
        let bytes = tx.to_bytes();
        let decoded = Transaction::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, tx);
        assert!(
            witness_memory(&decoded)
                <= 4 * bytes.len() + WITNESS_ITEMS_FREE * std::mem::size_of::<Vec<u8>>()
        );
    }

    #[test]
    fn the_witness_budget_spans_every_transaction_of_one_buffer() {
        // Many small transactions each under the bound, together over it: a list of them
        // (as in a block or a share1b) is refused.
        let tx = with_items(1000, 0);
        let one = tx.to_bytes();
        let count = 2 * WITNESS_ITEMS_FREE / 1000;
        let mut buf = Vec::new();
        for _ in 0..count {
            buf.extend_from_slice(&one);
        }
        let read_all = |buf: &[u8]| -> encode::Result<usize> {
            let mut r = Reader::new(buf);
            let mut items = 0;
            while !r.is_empty() {
                let tx = Transaction::decode_from(&mut r)?;
                items += tx.inputs[0].witness.len();
            }
            Ok(items)
        };
        assert!(read_all(&buf).is_err());
        // Half as many decode, and again (a second decode of the same buffer starts anew).
        buf.truncate(one.len() * count / 2);
        assert_eq!(read_all(&buf).unwrap(), WITNESS_ITEMS_FREE);
        assert_eq!(read_all(&buf).unwrap(), WITNESS_ITEMS_FREE);
    }

    #[test]
    fn real_witnesses_decode() {
        // A standard tapscript spend may carry 1,000 empty items; a large inscription-like
        // item and a few signatures are ordinary.
        for tx in [
            with_items(1000, 0),
            with_items(1, 400_000),
            with_items(3, 72),
        ] {
            assert_eq!(Transaction::from_bytes(&tx.to_bytes()).unwrap(), tx);
        }
    }
}
