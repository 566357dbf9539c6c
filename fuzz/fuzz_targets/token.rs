//! The token verifier: no input makes it panic. Two ways in: the input as
//! a token (length, header, base64 and signature checks), and the input
//! as a header and claims (split at the first `\n`) signed here with the
//! verifier's own secret, which reaches what only a good signature
//! unlocks: the claims' parsing, the time checks, the `pubsub` claim.
//! Whatever is accepted must carry an expiry no further in the past of
//! `NOW` than the leeway (a publish still gets the leeway; a subscription
//! is refused at `exp`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pubsubd::tokens::Tokens;

const SECRET: &str = "the fuzz target's secret, 32 bytes";
const NOW: f64 = 1_800_000_000.0;
const LEEWAY_SECS: f64 = 30.0;

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let yaml = format!(
            "clients: {{tokens: {{secret: \"{SECRET}\", audience: [a, b], leeway: {LEEWAY_SECS}s}}}}"
        );
        let (config, _) = pubsubd::Config::parse(&yaml).expect("the target's config");
        Tokens::load(config.clients.tokens.as_ref())
            .expect("the target's key")
            .expect("tokens configured")
    })
}

fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn check(token: &str) {
    if let Ok(bearer) = tokens().verify(token, NOW) {
        assert!(
            bearer.expires + LEEWAY_SECS > NOW,
            "accepted a token expired beyond the leeway"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    let (header, claims) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&br#"{"alg":"HS256"}"#[..], data),
    };
    let message = format!("{}.{}", b64url(header), b64url(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, message.as_bytes());
    check(&format!("{message}.{}", b64url(tag.as_ref())));
});
