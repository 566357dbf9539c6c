//! The TLS 1.3 record layer after the handshake: records a peer seals
//! (application data, padding, alerts, KeyUpdate both ways, unknown types)
//! and forged ones, opened from arbitrary cuts. Nothing panics, and the
//! data delivered and how the stream ends are what RFC 8446 says (the
//! harness is `pubsubd::fuzz_records`, beside the code it checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pubsubd::fuzz_records(data);
});
