//! Property tests (a fuzz target that runs on stable Rust) for the sans-io
//! HTTP parsers: no input makes them panic or buffer past their caps, and
//! how the bytes are split across reads never changes the result.

use proptest::prelude::*;
use pubsubd::http::{parse_head, BodyDecoder, BodyKind, HttpError};

/// Bytes that look like HTTP often enough to reach deep parser states.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"PUT /a/b HTTP/1.0\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"ffffffffffffffffffff\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(token, 0..12).prop_map(|parts| parts.concat())
}

/// Feeds `input` to a decoder in pieces cut at `cuts`.
fn decode_in_pieces(
    kind: BodyKind,
    input: &[u8],
    cuts: &[usize],
    max: usize,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut decoder = BodyDecoder::new(kind);
    let mut body = Vec::new();
    let mut used = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for end in bounds {
        // Like the reactor: unconsumed bytes stay in front of the next read.
        while used < end {
            let p = decoder.feed(&input[used..end], &mut body, max)?;
            assert!(body.len() <= max, "decoder passed its cap");
            used += p.consumed;
            if p.done {
                return Ok(Some((body, used)));
            }
            if p.consumed == 0 {
                break;
            }
        }
    }
    Ok(None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn heads_never_panic(input in http_ish(), max_headers in 1usize..70) {
        if let Ok(Some((_, used))) = parse_head(&input, max_headers) {
            prop_assert!(used <= input.len());
        }
    }

    #[test]
    fn chunked_split_does_not_matter(input in http_ish(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let whole = decode_in_pieces(BodyKind::Chunked, &input, &[], 64);
        let split = decode_in_pieces(BodyKind::Chunked, &input, &cuts, 64);
        prop_assert_eq!(whole, split);
    }

    // Length(0) never reaches a decoder (parse_head makes it BodyKind::None),
    // and with no input it would never be fed: lengths start at 1.
    #[test]
    fn length_bodies_respect_cap(input in proptest::collection::vec(any::<u8>(), 0..300), len in 1u64..400, cap in 0usize..300) {
        match decode_in_pieces(BodyKind::Length(len), &input, &[7, 50], cap) {
            Ok(Some((body, used))) => {
                prop_assert_eq!(body.len() as u64, len);
                prop_assert_eq!(used as u64, len);
            }
            Ok(None) => prop_assert!((input.len() as u64) < len),
            Err(e) => {
                prop_assert_eq!(e, HttpError::BodyTooLarge);
                prop_assert!(len > cap as u64);
            }
        }
    }
}
