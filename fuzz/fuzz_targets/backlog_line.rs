//! A backlog storage line: no panic; a line that loads is written back as
//! a line that loads to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::backlog::{parse_storage_line, storage_line};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = parse_storage_line(line, 7) {
        let again = storage_line(&event);
        let back = match parse_storage_line(again.trim_end(), 7) {
            Ok(e) => e,
            Err(e) => panic!("{line:?} → {again:?} does not load: {e}"),
        };
        assert_eq!(back.topics, event.topics);
        assert_eq!(back.private, event.private);
        assert_eq!(back.cursor, event.cursor);
        assert_eq!(back.line.json(), event.line.json());
        assert!(
            back.timestamp == event.timestamp
                || (back.timestamp.is_nan() && event.timestamp.is_nan())
        );
    }
});
