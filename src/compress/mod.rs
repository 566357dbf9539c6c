//! Compressed streams: gzip (`Content-Encoding: gzip` on a chunked, raw
//! or SSE stream) and WebSocket permessage-deflate, both built from one
//! kind of piece, a *segment*: the raw deflate blocks of one event's text,
//! compressed with no reference to anything before it and ended by a full
//! flush (the empty stored block `00 00 ff ff`), so it ends byte-aligned.
//! Such a segment is valid at any byte-aligned place of any deflate
//! stream, which is what lets one be built per event and shared by every
//! subscriber, each of whom has its own gzip stream (RFC 1951 §3.2.3:
//! blocks are independent but for back-references, and there are none
//! across events). A subscriber keeps no compressor, only its trailer's
//! running CRC-32 and length (8 bytes, [`GzipState`]), advanced per
//! delivery from each segment's [`CrcPart`] by CRC combination (zlib's
//! `crc32_combine`: one carry-less multiply by a per-segment constant).
//!
//! A gzip stream is: the 10-byte header, the segments, and at its end
//! (shutdown) an empty final block and the trailer (CRC-32, ISIZE). A
//! stream cut short (a dropped subscriber, a lost connection) ends
//! without them: everything up to its last segment decodes, and the
//! decoder reports the missing end.
//!
//! The compressor itself is `deflate.rs` (feature `compression`; one per
//! thread, reused); without the feature, `off.rs` says nothing can be
//! compressed and negotiation never asks for it. The CRC arithmetic here
//! is pure and always built.

#[cfg(feature = "compression")]
mod deflate;
#[cfg(not(feature = "compression"))]
mod off;

#[cfg(feature = "compression")]
pub use deflate::{crc32, segment, AVAILABLE};
#[cfg(not(feature = "compression"))]
pub use off::{crc32, segment, AVAILABLE};

/// The gzip member header (RFC 1952 §2.3): deflate, no flags, no time,
/// no extra flags, OS unknown.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty final block with fixed codes: BFINAL=1, BTYPE=01, end of block.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The sync marker that ends every segment, which permessage-deflate
/// leaves out of a message (RFC 7692 §7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The payload of a permessage-deflate message: `text`'s segment without
/// its sync tail.
pub fn message(text: &[u8]) -> Vec<u8> {
    let mut seg = segment(text);
    if seg.ends_with(&SYNC_TAIL) {
        seg.truncate(seg.len() - SYNC_TAIL.len());
    }
    seg
}

/// The start of a gzip stream's body: the header, then `first` (the SSE
/// `retry:` hint, or nothing) as a segment; and the trailer so far.
pub fn gzip_start(first: &[u8]) -> (Vec<u8>, GzipState) {
    let mut out = GZIP_HEADER.to_vec();
    let mut state = GzipState::default();
    if !first.is_empty() {
        out.extend_from_slice(&segment(first));
        state.append(&CrcPart::of(first));
    }
    (out, state)
}

/// What one segment's uncompressed text adds to a gzip trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcPart {
    crc: u32,
    len: u32,
    /// x^(8·len) mod the CRC polynomial: what a running CRC is multiplied
    /// by to append `len` bytes.
    shift: u32,
}

impl CrcPart {
    pub fn of(text: &[u8]) -> CrcPart {
        CrcPart {
            crc: crc32(text),
            len: text.len() as u32,
            shift: x8n_mod_p(text.len() as u64),
        }
    }
}

/// A gzip stream's running trailer: the CRC-32 and length (mod 2^32) of
/// everything its segments decode to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GzipState {
    crc: u32,
    len: u32,
}

impl GzipState {
    /// The stream is followed by `part`'s text.
    pub fn append(&mut self, part: &CrcPart) {
        self.crc = mul_mod_p(part.shift, self.crc) ^ part.crc;
        self.len = self.len.wrapping_add(part.len);
    }

    /// The end of the stream: an empty final block, then CRC-32 and ISIZE
    /// (little-endian).
    pub fn end(&self) -> [u8; 10] {
        let mut out = [0u8; 10];
        out[..2].copy_from_slice(&FINAL_BLOCK);
        out[2..6].copy_from_slice(&self.crc.to_le_bytes());
        out[6..].copy_from_slice(&self.len.to_le_bytes());
        out
    }
}

/// The reflected CRC-32 polynomial (gzip's, zlib's).
const POLY: u32 = 0xedb8_8320;

/// a·b modulo the polynomial, in CRC-32's reflected bit order (zlib's
/// `multmodp`).
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        if m == 0 {
            return p;
        }
    }
}

/// x^(8n) modulo the polynomial (zlib's `x2nmodp(n, 3)`), by squaring.
fn x8n_mod_p(mut n: u64) -> u32 {
    // x^(2^k) for k = 3, 4, …: x^8 to start with (x^1 is 1 << 30).
    let mut square = 1u32 << 30;
    for _ in 0..3 {
        square = mul_mod_p(square, square);
    }
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(square, p);
        }
        square = mul_mod_p(square, square);
        n >>= 1;
    }
    p
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use super::*;
    use std::io::Read;

    /// A few texts of the shapes events have: short, repetitive, empty,
    /// long, and random bytes (which deflate cannot shrink).
    fn texts() -> Vec<Vec<u8>> {
        let mut seed = 0x2545_f491_u64;
        let mut noise = vec![0u8; 70_000];
        for b in &mut noise {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        vec![
            b"{\"a\":1}\n".to_vec(),
            br#"{"commit": {"author": "alice", "files": ["a", "a", "a"]}}"#.repeat(40),
            Vec::new(),
            noise,
            b"retry: 3000\n\n".to_vec(),
        ]
    }

    #[test]
    fn combined_crcs_are_the_crc_of_the_whole() {
        let mut state = GzipState::default();
        let mut whole = Vec::new();
        for text in texts().iter().cycle().take(12) {
            state.append(&CrcPart::of(text));
            whole.extend_from_slice(text);
            assert_eq!(state.crc, crc32fast::hash(&whole));
            assert_eq!(state.len, whole.len() as u32);
        }
    }

    /// Raw deflate up to a sync point, decoded by a fresh decoder.
    pub(super) fn inflate(deflate: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(deflate.len() * 20 + 1024);
        flate2::Decompress::new(false)
            .decompress_vec(deflate, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn each_segment_stands_alone() {
        for text in texts() {
            let seg = segment(&text);
            assert!(seg.ends_with(&SYNC_TAIL));
            assert_eq!(inflate(&seg), text);
        }
    }

    /// Segments in any order, behind one header, with the computed end:
    /// a gzip stream that decoders accept whole (CRC and length checked).
    #[test]
    fn shared_segments_make_valid_gzip_streams() {
        let texts = texts();
        let segments: Vec<Vec<u8>> = texts.iter().map(|t| segment(t)).collect();
        for order in [[0, 1, 2, 3, 4, 1, 0], [4, 3, 3, 1, 0, 2, 4]] {
            let mut stream = GZIP_HEADER.to_vec();
            let (mut state, mut want) = (GzipState::default(), Vec::new());
            for i in order {
                stream.extend_from_slice(&segments[i]);
                state.append(&CrcPart::of(&texts[i]));
                want.extend_from_slice(&texts[i]);
            }
            stream.extend_from_slice(&state.end());
            let mut got = Vec::new();
            flate2::read::GzDecoder::new(&stream[..])
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, want);
            // A wrong trailer is caught: the test can fail.
            let n = stream.len();
            stream[n - 5] ^= 1;
            let mut bad = Vec::new();
            assert!(flate2::read::GzDecoder::new(&stream[..])
                .read_to_end(&mut bad)
                .is_err());
        }
    }

    #[test]
    fn permessage_deflate_messages() {
        let text = br#"{"a": "hello hello hello hello"}"#;
        let mut msg = message(text);
        assert!(msg.len() < text.len());
        msg.extend_from_slice(&SYNC_TAIL);
        assert_eq!(inflate(&msg), text);
    }
}
