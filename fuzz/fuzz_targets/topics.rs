//! Topic and subscription path parsing: no panic; topics are never empty
//! and never hold `/`; a subscription matches an event carrying exactly
//! the topics of one of its batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::topics::{parse_topics, Subscription};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topics) = parse_topics(path) {
        for t in &topics {
            assert!(!t.is_empty(), "empty topic from {path:?}");
        }
        if !path.contains(',') {
            if let Ok(sub) = Subscription::parse(path) {
                assert!(sub.matches(&topics));
            }
        }
    }
    if let Ok(sub) = Subscription::parse(path) {
        for batch in path.split(',') {
            if let Ok(topics) = parse_topics(batch) {
                assert!(sub.matches(&topics), "{path:?} vs batch {batch:?}");
            }
        }
    }
});
