//! The compressor (feature `compression`): flate2's raw deflate on its
//! pure-Rust miniz_oxide backend, one per thread, created on first use
//! (about 300 KB, once for the whole server, never per subscriber) and
//! kept. Each segment ends with a full flush, which also forgets the
//! dictionary, so the next segment refers to nothing before it.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};

/// This build compresses.
pub const AVAILABLE: bool = true;

/// zlib's default level: events are small, so the difference in time to
/// level 1 is small too, and the bytes saved are what the feature is for.
const LEVEL: u32 = 6;

thread_local! {
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// `text` as one self-contained segment ending in `00 00 ff ff`.
pub fn segment(text: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = slot.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        match compress(c, text) {
            Some(out) => out,
            None => {
                // Never seen: start over with a new compressor, and send
                // this text stored (uncompressed), which is still valid.
                *slot = None;
                stored(text)
            }
        }
    })
}

fn compress(c: &mut Compress, text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 2 + 64);
    let start = c.total_in();
    // The buffer doubles each round: a bound that is never reached.
    for _ in 0..40 {
        let used = usize::try_from(c.total_in() - start).ok()?;
        let status = c
            .compress_vec(text.get(used..)?, &mut out, FlushCompress::Full)
            .ok()?;
        let all_in = usize::try_from(c.total_in() - start).ok()? == text.len();
        // Done when the input is in and the flush did not fill the buffer.
        if all_in && out.len() < out.capacity() && status != Status::BufError {
            return Some(out);
        }
        out.reserve(out.capacity().max(64));
    }
    None
}

/// `text` in stored blocks (at most 65 535 bytes each), then the sync
/// marker: valid deflate that any decoder takes.
fn stored(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 65_535 * 5 + 10);
    for block in text.chunks(65_535) {
        let len = block.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
    out
}

/// CRC-32 (gzip's).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_segments_decode() {
        for text in [&b""[..], b"abc", &[7u8; 70_000]] {
            assert_eq!(super::super::tests::inflate(&stored(text)), text);
        }
    }
}
