//! Framing (bitcoin/frame.rs): buffer decode and stream read, with the 8-byte P2Pool prefix
//! and the 4-byte Bitcoin magic. Byte 0 picks the framing and payload limit, byte 1 the read
//! chunk size; the rest is the stream.
//!
//! Asserts: a decoded frame re-encodes to exactly the bytes it was read from and decodes
//! again to itself; the stream reader (whole and in small chunks) agrees with the buffer
//! decoder frame by frame.
#![no_main]

use std::io::{self, Cursor, Read};

use libfuzzer_sys::fuzz_target;
use p2pool::bitcoin::frame::{Frame, FrameError, Framing};
use p2pool_fuzz::modern_net;

/// A reader handing out at most `chunk` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn framing(selector: u8) -> Framing {
    let net = modern_net();
    let max = match (selector >> 1) & 3 {
        0 => 0,
        1 => 64,
        2 => 4096,
        _ => net.rules.max_payload(),
    };
    if selector & 1 == 0 {
        Framing::p2pool(net.prefix, max)
    } else {
        Framing::bitcoin(net.bitcoin.magic, max)
    }
}

fn check(framing: &Framing, stream: &[u8], chunk: usize) {
    let mut whole = Cursor::new(stream);
    let mut chunked = Chunked {
        data: stream,
        chunk,
    };
    let mut at = 0;
    loop {
        let decoded = framing.decode(&stream[at..]);
        let read = framing.read(&mut whole);
        let read_chunked = framing.read(&mut chunked);
        match decoded {
            Ok(Some((frame, used))) => {
                assert!(used >= framing.header_len() && at + used <= stream.len());
                assert!(frame.payload.len() <= framing.max_payload());
                let encoded = framing
                    .encode(&frame.command, &frame.payload)
                    .expect("a decoded frame encodes");
                assert_eq!(encoded, &stream[at..at + used], "re-encoding differs");
                let again = framing.decode(&encoded).expect("re-decodes");
                assert_eq!(again, Some((frame.clone(), used)));
                assert_eq!(read.expect("stream read agrees"), frame);
                assert_eq!(read_chunked.expect("chunked read agrees"), frame);
                assert_eq!(whole.position() as usize, at + used);
                at += used;
            }
            Ok(None) => {
                // More bytes needed: the stream readers hit the end.
                assert!(matches!(read, Err(FrameError::Io(_))), "{read:?}");
                assert!(matches!(read_chunked, Err(FrameError::Io(_))));
                return;
            }
            Err(_) => {
                assert!(read.is_err() && read_chunked.is_err());
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunk, stream @ ..] = data else {
        return;
    };
    let framing = framing(*selector);
    check(&framing, stream, usize::from(*chunk % 16) + 1);
    // A frame built from the input as a payload always decodes back.
    let command = ["version", "share1bs", "x", "abcdefghijkl"][usize::from(*chunk >> 6)];
    if let Ok(bytes) = framing.encode(command, stream) {
        let (frame, used) = framing.decode(&bytes).expect("decodes").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(
            frame,
            Frame {
                command: command.into(),
                payload: stream.to_vec()
            }
        );
    }
});
