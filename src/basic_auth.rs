//! HTTP Basic credentials (RFC 7617): the `Authorization` header value →
//! user and password. Decoding is the `base64` crate's, configured to accept
//! what our own decoder used to: the standard alphabet, padding optional but
//! correct when present, non-zero trailing bits ignored; ASCII whitespace
//! anywhere in the token is dropped first.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Longest `Authorization` header value [`parse_basic_auth`] looks at.
pub const MAX_AUTH_HEADER: usize = 8 * 1024;

/// Standard alphabet; `Zg` and `Zg==` accepted (`Zg=` is refused in
/// [`base64_decode`]); `Zh` decodes like `Zg` (clients are not all careful
/// with the last bits).
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Parse an `Authorization` header value: `Basic base64(user:password)`. The
/// scheme is case-insensitive; whitespace around and inside the token is
/// tolerated, and so is missing padding. Invalid base64, invalid UTF-8, no `:`
/// or another scheme → `None`. The password may contain `:`.
pub fn parse_basic_auth(header_value: &[u8]) -> Option<(String, String)> {
    if header_value.len() > MAX_AUTH_HEADER {
        return None;
    }
    let value = header_value.trim_ascii();
    let split = value.iter().position(|b| b.is_ascii_whitespace())?;
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(token)?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard-alphabet base64 with ASCII whitespace skipped (see [`BASIC`]).
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    // Padding is optional, but when present it must complete the last
    // quantum: the crate's `Indifferent` mode also takes `Zg=`.
    if compact.contains(&b'=') && !compact.len().is_multiple_of(4) {
        return None;
    }
    BASIC.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_parsing() {
        let ok = |h: &str, u: &str, p: &str| {
            assert_eq!(
                parse_basic_auth(h.as_bytes()),
                Some((u.to_string(), p.to_string())),
                "{h:?}"
            )
        };
        ok("Basic YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("basic YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("BASIC YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("  Basic \t YWxpY2U6czNjcmV0 \r\n", "alice", "s3cret");
        ok("Basic YWxp Y2U6 czNj cmV0", "alice", "s3cret");
        // "a:b:c" → password "b:c"; "a:" → empty password; ":" → empty both.
        ok("Basic YTpiOmM=", "a", "b:c");
        ok("Basic YTpiOmM", "a", "b:c");
        ok("Basic YTo=", "a", "");
        ok("Basic Og==", "", "");
        // UTF-8 user and password (RFC 7617 charset=UTF-8): "jürgen:pässword"
        ok("Basic asO8cmdlbjpww6Rzc3dvcmQ=", "jürgen", "pässword");
        let none = |h: &[u8]| assert_eq!(parse_basic_auth(h), None, "{h:?}");
        none(b"");
        none(b"Basic");
        none(b"Basic ");
        none(b"Basic    ");
        none(b"BasicYWxpY2U6czNjcmV0");
        none(b"Bearer YWxpY2U6czNjcmV0");
        none(b"Digest username=\"alice\"");
        none(b"Basic YWxpY2U"); // "alice": no colon
        none(b"Basic YWxpY2U6czNjcmV0!"); // not base64
        none(b"Basic YWxpY2U6czNjcmV0=="); // wrong padding
        none(b"Basic YTo=YTo="); // data after padding
        none(b"Basic Y"); // 1 mod 4
        none(b"Basic YWxpY2U6czNjcmV0 extra!");
        none(b"Basic //79:"); // invalid UTF-8 after decoding
        none(b"Basic \xff\xfe");
        let long = format!("Basic {}", "QUFB".repeat(MAX_AUTH_HEADER / 4));
        none(long.as_bytes());
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zg", "f"),
            ("Zm8", "fo"),
        ] {
            assert_eq!(
                base64_decode(enc.as_bytes()),
                Some(dec.as_bytes().to_vec()),
                "{enc}"
            );
        }
        assert_eq!(base64_decode(b"+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(
            base64_decode(b"-_-_"),
            None,
            "URL-safe alphabet is not Basic's"
        );
        assert_eq!(base64_decode(b"Zg="), None);
        assert_eq!(base64_decode(b"Zm9v="), None);
        assert_eq!(base64_decode(b"Zm9vY"), None);
        assert_eq!(base64_decode(b"="), None);
    }

    #[test]
    fn trailing_bits_and_inner_whitespace() {
        assert_eq!(base64_decode(b"Zh"), Some(b"f".to_vec()));
        assert_eq!(base64_decode(b"Zh=="), Some(b"f".to_vec()));
        assert_eq!(base64_decode(b"Zm\t9\r\nv"), Some(b"foo".to_vec()));
        assert_eq!(base64_decode(b"Zg = ="), Some(b"f".to_vec()));
    }

    /// Every token of up to 6 symbols from an alphabet that exercises data,
    /// padding, whitespace and invalid bytes decodes exactly as the old
    /// hand-written decoder did.
    #[test]
    fn same_results_as_the_hand_written_decoder() {
        const SYMBOLS: &[u8] = b"AZgh+=/ -";
        let mut token = Vec::new();
        let mut checked = 0usize;
        for len in 0..=6u32 {
            for mut n in 0..SYMBOLS.len().pow(len) {
                token.clear();
                for _ in 0..len {
                    token.push(SYMBOLS[n % SYMBOLS.len()]);
                    n /= SYMBOLS.len();
                }
                assert_eq!(base64_decode(&token), hand_decoder(&token), "{token:?}");
                checked += 1;
            }
        }
        assert!(checked > 500_000);
    }

    /// The hand-written decoder this file used before the `base64` crate,
    /// kept as the reference the crate's configuration is checked against.
    /// ASCII whitespace is skipped;
    /// padding is optional, but if present it must complete the last quantum and
    /// end the input.
    fn hand_decoder(input: &[u8]) -> Option<Vec<u8>> {
        fn value(c: u8) -> Option<u32> {
            match c {
                b'A'..=b'Z' => Some(u32::from(c - b'A')),
                b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
                b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
                b'+' => Some(62),
                b'/' => Some(63),
                _ => None,
            }
        }
        let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
        let mut acc = 0u32;
        let mut n = 0usize; // data characters seen
        let mut padding = 0usize;
        for &c in input {
            if c.is_ascii_whitespace() {
                continue;
            }
            if c == b'=' {
                padding += 1;
                continue;
            }
            if padding > 0 {
                return None; // data after padding
            }
            acc = (acc << 6) | value(c)?;
            n += 1;
            if n.is_multiple_of(4) {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                acc = 0;
            }
        }
        match (n % 4, padding) {
            (0, 0) => {}
            (2, 0) | (2, 2) => out.push((acc >> 4) as u8),
            (3, 0) | (3, 1) => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            _ => return None,
        }
        Some(out)
    }
}
