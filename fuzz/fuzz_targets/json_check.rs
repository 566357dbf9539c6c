//! Differential: `json_check::check` against serde_json. They must agree
//! on valid / invalid and on "the top level is an object"; the shape flags
//! must be right.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::json_check::check;

fuzz_target!(|body: &[u8]| {
    let ours = check(body);
    let theirs = std::str::from_utf8(body)
        .ok()
        .and_then(|text| {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .ok()
                .map(|_| text)
        })
        .map(|text| text.trim_start().starts_with('{'));
    assert_eq!(
        ours.map(|s| s.object),
        theirs,
        "{:?}",
        String::from_utf8_lossy(body)
    );
    if let Some(shape) = ours {
        let breaks = body.iter().any(|&c| c == b'\n' || c == b'\r');
        assert_eq!(shape.one_line, !breaks);
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
            if map.keys().any(|k| k.starts_with("pubsub_")) {
                assert!(shape.own_keys);
            }
        }
    }
});
