//! Consensus encoding: a slice reader, little-endian helpers, CompactSize and the
//! `Encode`/`Decode` pair every wire type implements.
//!
//! Decoding always works on a byte slice of known length (a frame payload, a stored
//! record), so every length read from the input is checked against the bytes that are
//! actually left before anything is allocated.

use std::fmt;

/// A decoding failure. Every variant names what was being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input ended before `what` could be read.
    UnexpectedEnd {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A CompactSize used more bytes than its value needs.
    NonMinimalCompactSize { value: u64 },
    /// A length or count above the limit for `what`.
    Oversized {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// Bytes were left after a complete value.
    TrailingBytes { what: &'static str, count: usize },
    /// The bytes are well-formed in length but not a valid `what`.
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnexpectedEnd {
                what,
                needed,
                remaining,
            } => write!(
                f,
                "unexpected end of input reading {what}: need {needed} bytes, {remaining} left"
            ),
            Error::NonMinimalCompactSize { value } => {
                write!(f, "non-minimal compact size encoding of {value}")
            }
            Error::Oversized { what, len, max } => {
                write!(f, "{what} too large: {len} exceeds the limit of {max}")
            }
            Error::TrailingBytes { what, count } => {
                write!(f, "{count} trailing bytes after {what}")
            }
            Error::Invalid { what, reason } => write!(f, "invalid {what}: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A cursor over a byte slice. Reads never allocate more than what is left.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Items of per-item allocations (witness items) this buffer may still decode to.
    items_left: usize,
}

/// Items one buffer may decode to whatever its size (about 2.3 MiB of item headers).
///
/// A witness item takes one byte of input when empty but 24 bytes decoded (a `Vec<u8>`), so
/// without a bound an 8 MB frame of empty items decodes to 192 MB. Consensus has no limit on
/// the count (witness versions 0 and 1 cap the stack at 1,000 items, undefined versions at
/// nothing; a standard tapscript spend may carry 1,000 empty items), so the bound is on
/// memory per byte of input, counted over one whole buffer (a frame payload, a block, a
/// stored record), not per transaction, which a list of small transactions would multiply.
pub const ITEMS_FREE: usize = 100_000;
/// Bytes of input per item beyond [`ITEMS_FREE`]: at most one item per 8 bytes of the
/// buffer. The items' headers (24 bytes each) then take at most 3× the input and their data
/// at most 1×, so a buffer's witnesses hold at most 4 × its bytes + 2.3 MiB. Real
/// transactions average well over 8 bytes per item (signatures, keys, scripts).
pub const BYTES_PER_ITEM: usize = 8;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            items_left: ITEMS_FREE + buf.len() / BYTES_PER_ITEM,
        }
    }

    /// Takes `n` items from the buffer's item budget ([`ITEMS_FREE`], [`BYTES_PER_ITEM`]);
    /// `Oversized` when the buffer would decode to more.
    pub fn take_items(&mut self, what: &'static str, n: usize) -> Result<()> {
        let max = ITEMS_FREE + self.buf.len() / BYTES_PER_ITEM;
        match self.items_left.checked_sub(n) {
            Some(left) => {
                self.items_left = left;
                Ok(())
            }
            None => Err(Error::Oversized {
                what,
                len: (max - self.items_left + n) as u64,
                max: max as u64,
            }),
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Peek at the next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The bytes consumed between `start` and the current position.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start.min(self.pos)..self.pos]
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::UnexpectedEnd {
                what,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16_le(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u16_be(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32_le(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A CompactSize, rejecting non-minimal encodings.
    pub fn compact_size(&mut self, what: &'static str) -> Result<u64> {
        let value = match self.u8(what)? {
            0xfd => {
                let v = u64::from(self.u16_le(what)?);
                if v < 0xfd {
                    return Err(Error::NonMinimalCompactSize { value: v });
                }
                v
            }
            0xfe => {
                let v = u64::from(self.u32_le(what)?);
                if v <= 0xffff {
                    return Err(Error::NonMinimalCompactSize { value: v });
                }
                v
            }
            0xff => {
                let v = self.u64_le(what)?;
                if v <= 0xffff_ffff {
                    return Err(Error::NonMinimalCompactSize { value: v });
                }
                v
            }
            b => u64::from(b),
        };
        Ok(value)
    }

    /// A count of elements that each take at least `min_elem_size` bytes; refused when
    /// the input cannot possibly hold that many, so the caller may allocate `count`.
    pub fn count(&mut self, what: &'static str, min_elem_size: usize) -> Result<usize> {
        let n = self.compact_size(what)?;
        let max = (self.remaining() / min_elem_size.max(1)) as u64;
        if n > max {
            return Err(Error::Oversized { what, len: n, max });
        }
        Ok(n as usize)
    }

    /// A CompactSize-counted list whose elements each take at least `min_elem_size`
    /// bytes, read with `read_elem`.
    pub fn list<T>(
        &mut self,
        what: &'static str,
        min_elem_size: usize,
        mut read_elem: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.count(what, min_elem_size)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(read_elem(self)?);
        }
        Ok(out)
    }

    /// A CompactSize-prefixed byte string of at most `max` bytes.
    pub fn var_bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let n = self.compact_size(what)?;
        if n > max as u64 {
            return Err(Error::Oversized {
                what,
                len: n,
                max: max as u64,
            });
        }
        self.take(n as usize, what)
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self, what: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes { what, count }),
        }
    }
}

/// Append-only little-endian writer helpers on `Vec<u8>`.
pub trait WriteExt {
    fn put_u8(&mut self, v: u8);
    fn put_u16_le(&mut self, v: u16);
    fn put_u16_be(&mut self, v: u16);
    fn put_u32_le(&mut self, v: u32);
    fn put_u64_le(&mut self, v: u64);
    fn put_compact_size(&mut self, v: u64);
    fn put_var_bytes(&mut self, bytes: &[u8]);
}

impl WriteExt for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16_le(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u16_be(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32_le(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64_le(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_compact_size(&mut self, v: u64) {
        match v {
            0..=0xfc => self.push(v as u8),
            0xfd..=0xffff => {
                self.push(0xfd);
                self.put_u16_le(v as u16);
            }
            0x1_0000..=0xffff_ffff => {
                self.push(0xfe);
                self.put_u32_le(v as u32);
            }
            _ => {
                self.push(0xff);
                self.put_u64_le(v);
            }
        }
    }
    fn put_var_bytes(&mut self, bytes: &[u8]) {
        self.put_compact_size(bytes.len() as u64);
        self.extend_from_slice(bytes);
    }
}

/// The encoded size of a CompactSize.
pub fn compact_size_len(v: u64) -> usize {
    match v {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// A type with one canonical byte encoding.
pub trait Encode {
    fn encode_to(&self, out: &mut Vec<u8>);

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// A type that can be read from a slice of known length without outside context.
pub trait Decode: Sized {
    /// A short name for error messages.
    const NAME: &'static str;

    fn decode_from(r: &mut Reader<'_>) -> Result<Self>;

    /// Decodes exactly `bytes`, refusing trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let v = Self::decode_from(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_compact_size(v);
        out
    }

    #[test]
    fn compact_size_uses_the_shortest_form_at_each_boundary() {
        assert_eq!(cs(0xfc), vec![0xfc]);
        assert_eq!(cs(0xfd), vec![0xfd, 0xfd, 0x00]);
        assert_eq!(cs(0xffff), vec![0xfd, 0xff, 0xff]);
        assert_eq!(cs(0x10000), vec![0xfe, 0, 0, 1, 0]);
        assert_eq!(cs(0xffff_ffff), vec![0xfe, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(cs(0x1_0000_0000), vec![0xff, 0, 0, 0, 0, 1, 0, 0, 0]);
        for v in [
            0,
            0xfc,
            0xfd,
            0xffff,
            0x10000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ] {
            let bytes = cs(v);
            assert_eq!(bytes.len(), compact_size_len(v));
            let mut r = Reader::new(&bytes);
            assert_eq!(r.compact_size("n").unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn compact_size_rejects_non_minimal_forms() {
        for bytes in [
            &[0xfd, 0xfc, 0x00][..],
            &[0xfe, 0xff, 0xff, 0x00, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        ] {
            let err = Reader::new(bytes).compact_size("n").unwrap_err();
            assert!(matches!(err, Error::NonMinimalCompactSize { .. }), "{err}");
        }
    }

    #[test]
    fn count_larger_than_the_input_is_refused_before_allocation() {
        let bytes = [0xfe, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        let err = Reader::new(&bytes).count("hashes", 32).unwrap_err();
        assert_eq!(
            err,
            Error::Oversized {
                what: "hashes",
                len: 0x7fff_ffff,
                max: 0
            }
        );
    }

    #[test]
    fn var_bytes_over_the_limit_is_refused() {
        let mut bytes = vec![5];
        bytes.extend_from_slice(b"hello");
        assert!(Reader::new(&bytes).var_bytes("s", 4).is_err());
        assert_eq!(Reader::new(&bytes).var_bytes("s", 5).unwrap(), b"hello");
    }

    #[test]
    fn truncated_input_names_what_was_being_read() {
        let err = Reader::new(&[1, 2]).u32_le("version").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected end of input reading version: need 4 bytes, 2 left"
        );
    }
}
