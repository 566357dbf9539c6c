//! An SQS message body: no panic; a body that becomes an event has a path
//! starting with `/` and is a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = sqs_feed::message::event_from_body(body) {
        assert!(event.path.starts_with('/'));
        let _ = pubsubd::topics::parse_topics(&event.path);
    }
});
