//! Message framing shared by the P2Pool protocol (8-byte prefix) and the Bitcoin P2P
//! protocol (4-byte magic):
//!
//! `magic ‖ command[12] (ASCII, NUL-padded) ‖ length u32 LE ‖ sha256d(payload)[0..4] ‖ payload`
//!
//! The reader checks the magic, the command, the length against the limit and the
//! checksum before anything is dispatched; it never resynchronises on garbage.

use std::fmt;
use std::io::{self, Read};

use super::hash::sha256d;

pub const COMMAND_SIZE: usize = 12;

/// The magic and payload limit of one protocol on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    magic: Vec<u8>,
    max_payload: usize,
}

impl Framing {
    /// A P2Pool framing with its 8-byte PREFIX.
    pub fn p2pool(prefix: [u8; 8], max_payload: usize) -> Framing {
        Framing {
            magic: prefix.to_vec(),
            max_payload,
        }
    }

    /// A Bitcoin P2P framing with its 4-byte magic.
    pub fn bitcoin(magic: [u8; 4], max_payload: usize) -> Framing {
        Framing {
            magic: magic.to_vec(),
            max_payload,
        }
    }

    pub fn magic(&self) -> &[u8] {
        &self.magic
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes before the payload: magic, command, length, checksum.
    pub fn header_len(&self) -> usize {
        self.magic.len() + COMMAND_SIZE + 8
    }

    /// Builds a complete frame.
    pub fn encode(&self, command: &str, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let cmd = command_bytes(command)?;
        if payload.len() > self.max_payload {
            return Err(FrameError::Oversize {
                len: payload.len() as u64,
                max: self.max_payload,
            });
        }
        let mut out = Vec::with_capacity(self.header_len() + payload.len());
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&cmd);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&sha256d(payload).0[..4]);
        out.extend_from_slice(payload);
        Ok(out)
    }

    /// Reads one frame from a stream. The payload buffer grows only as bytes arrive, so
    /// a header that announces a large payload allocates nothing by itself.
    pub fn read<R: Read>(&self, r: &mut R) -> Result<Frame, FrameError> {
        let mut header = vec![0u8; self.header_len()];
        r.read_exact(&mut header)?;
        let (command, len, checksum) = self.parse_header(&header)?;
        let mut payload = Vec::with_capacity(len.min(64 * 1024));
        r.take(len as u64).read_to_end(&mut payload)?;
        if payload.len() != len {
            return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        check_checksum(&payload, checksum)?;
        Ok(Frame { command, payload })
    }

    /// Decodes one frame from the front of `buf`, returning it and the bytes it used.
    /// `Ok(None)` means more bytes are needed.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(header) = buf.get(..self.header_len()) else {
            // Refuse a wrong magic as soon as it can be seen.
            let n = buf.len().min(self.magic.len());
            if buf[..n] != self.magic[..n] {
                return Err(FrameError::BadMagic {
                    got: buf[..n].to_vec(),
                });
            }
            return Ok(None);
        };
        let (command, len, checksum) = self.parse_header(header)?;
        let end = self.header_len() + len;
        let Some(payload) = buf.get(self.header_len()..end) else {
            return Ok(None);
        };
        check_checksum(payload, checksum)?;
        Ok(Some((
            Frame {
                command,
                payload: payload.to_vec(),
            },
            end,
        )))
    }

    fn parse_header(&self, header: &[u8]) -> Result<(String, usize, [u8; 4]), FrameError> {
        let m = self.magic.len();
        if header[..m] != self.magic[..] {
            return Err(FrameError::BadMagic {
                got: header[..m].to_vec(),
            });
        }
        let command = parse_command(&header[m..m + COMMAND_SIZE])?;
        let mut word = [0u8; 4];
        word.copy_from_slice(&header[m + COMMAND_SIZE..m + COMMAND_SIZE + 4]);
        let len = u32::from_le_bytes(word) as usize;
        if len > self.max_payload {
            return Err(FrameError::Oversize {
                len: len as u64,
                max: self.max_payload,
            });
        }
        word.copy_from_slice(&header[m + COMMAND_SIZE + 4..m + COMMAND_SIZE + 8]);
        Ok((command, len, word))
    }
}

fn check_checksum(payload: &[u8], expected: [u8; 4]) -> Result<(), FrameError> {
    let mut got = [0u8; 4];
    got.copy_from_slice(&sha256d(payload).0[..4]);
    if got != expected {
        return Err(FrameError::BadChecksum { expected, got });
    }
    Ok(())
}

/// A command name as 12 NUL-padded bytes.
fn command_bytes(command: &str) -> Result<[u8; COMMAND_SIZE], FrameError> {
    let bytes = command.as_bytes();
    if bytes.is_empty() || bytes.len() > COMMAND_SIZE || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(FrameError::BadCommand {
            raw: bytes.to_vec(),
        });
    }
    let mut out = [0u8; COMMAND_SIZE];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// A command must be 1 to 12 printable ASCII bytes followed only by NULs.
fn parse_command(raw: &[u8]) -> Result<String, FrameError> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let (name, padding) = raw.split_at(len);
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) || padding.iter().any(|&b| b != 0)
    {
        return Err(FrameError::BadCommand { raw: raw.to_vec() });
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// A frame whose header checked out: a valid command and a payload with a good checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The stream does not start with the network's magic (garbage, or another network).
    BadMagic {
        got: Vec<u8>,
    },
    /// The command field is not 1–12 printable ASCII bytes padded with NULs.
    BadCommand {
        raw: Vec<u8>,
    },
    Oversize {
        len: u64,
        max: usize,
    },
    BadChecksum {
        expected: [u8; 4],
        got: [u8; 4],
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "frame i/o failed: {e}"),
            FrameError::BadMagic { got } => {
                write!(
                    f,
                    "frame has wrong magic {} (garbage or another network)",
                    hex::encode(got)
                )
            }
            FrameError::BadCommand { raw } => {
                write!(f, "frame has malformed command {}", hex::encode(raw))
            }
            FrameError::Oversize { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {max}")
            }
            FrameError::BadChecksum { expected, got } => write!(
                f,
                "frame checksum mismatch: header says {}, payload hashes to {}",
                hex::encode(expected),
                hex::encode(got)
            ),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: [u8; 8] = [0x24, 0x72, 0xef, 0x18, 0x1e, 0xfc, 0xd3, 0x7b];

    fn framing() -> Framing {
        Framing::p2pool(PREFIX, 1_000_000)
    }

    #[test]
    fn ping_frame_matches_the_original() {
        let frame = framing().encode("ping", &[]).unwrap();
        assert_eq!(
            hex::encode(&frame),
            "2472ef181efcd37b70696e670000000000000000000000005df6e0e2"
        );
        let back = framing().read(&mut &frame[..]).unwrap();
        assert_eq!(
            back,
            Frame {
                command: "ping".into(),
                payload: vec![]
            }
        );
        assert_eq!(framing().decode(&frame).unwrap().unwrap().1, frame.len());
    }

    #[test]
    fn bitcoin_framing_uses_a_four_byte_magic() {
        let f = Framing::bitcoin([0xf9, 0xbe, 0xb4, 0xd9], 4_000_000);
        let frame = f.encode("verack", &[]).unwrap();
        assert_eq!(
            hex::encode(&frame),
            "f9beb4d976657261636b000000000000000000005df6e0e2"
        );
        assert_eq!(f.read(&mut &frame[..]).unwrap().command, "verack");
    }

    #[test]
    fn bad_checksum_is_refused() {
        let mut frame = framing().encode("addrme", &[0x75, 0x24]).unwrap();
        *frame.last_mut().unwrap() ^= 1;
        assert!(matches!(
            framing().read(&mut &frame[..]),
            Err(FrameError::BadChecksum { .. })
        ));
        assert!(matches!(
            framing().decode(&frame),
            Err(FrameError::BadChecksum { .. })
        ));
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let mut frame = framing().encode("ping", &[]).unwrap();
        frame[20..24].copy_from_slice(&1_000_001u32.to_le_bytes());
        assert!(matches!(
            framing().read(&mut &frame[..]),
            Err(FrameError::Oversize { .. })
        ));
    }

    #[test]
    fn garbage_before_the_prefix_is_refused() {
        let mut bytes = vec![0u8];
        bytes.extend(framing().encode("ping", &[]).unwrap());
        assert!(matches!(
            framing().read(&mut &bytes[..]),
            Err(FrameError::BadMagic { .. })
        ));
        assert!(matches!(
            framing().decode(&bytes[..3]),
            Err(FrameError::BadMagic { .. })
        ));
    }

    #[test]
    fn malformed_commands_are_refused() {
        for raw in [
            &b"\0\0\0\0\0\0\0\0\0\0\0\0"[..],
            b"pi\0ng\0\0\0\0\0\0\0",
            b"p ing\0\0\0\0\0\0\0",
            b"pi\xffng\0\0\0\0\0\0\0",
        ] {
            let mut frame = framing().encode("ping", &[]).unwrap();
            frame[8..20].copy_from_slice(raw);
            assert!(matches!(
                framing().read(&mut &frame[..]),
                Err(FrameError::BadCommand { .. })
            ));
        }
        assert!(framing().encode("thirteen_char", &[]).is_err());
        assert!(framing().encode("", &[]).is_err());
    }

    #[test]
    fn truncated_frames_ask_for_more_bytes() {
        let frame = framing().encode("addrme", &[0x75, 0x24]).unwrap();
        for cut in 0..frame.len() {
            assert!(
                framing().decode(&frame[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
            assert!(framing().read(&mut &frame[..cut]).is_err());
        }
    }
}
