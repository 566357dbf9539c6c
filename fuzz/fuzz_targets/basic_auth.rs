//! HTTP Basic parsing: no panic on any header value, and what it returns
//! round-trips (the user never holds `:`; encoding it again parses back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::basic_auth::parse_basic_auth;

fuzz_target!(|value: &[u8]| {
    if let Some((user, password)) = parse_basic_auth(value) {
        assert!(!user.contains(':'));
        let again = format!("Basic {}", encode(format!("{user}:{password}").as_bytes()));
        assert_eq!(
            parse_basic_auth(again.as_bytes()),
            Some((user.clone(), password.clone()))
        );
    }
});

/// Standard base64 with padding (the fuzz crate keeps its dependencies few).
fn encode(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
