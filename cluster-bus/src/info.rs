//! What `XINFO STREAM` says about the stream's ends, and what it means for
//! a reader whose position may have gone: nothing, a trim that overtook it
//! ([`Gap::Trimmed`]), or a stream that started over ([`Gap::Reset`]).
//!
//! Trimming (`XADD ... MAXLEN ~`) removes the oldest entries and does *not*
//! move `max-deleted-entry-id` (only `XDEL` does), so the trim is told by
//! the first entry: a position older than it was trimmed away. A stream
//! that is behind the position (`last-generated-id`), or whose
//! `entries-added` went down, started over.

use redis::Value;

use crate::entry::text;
use crate::id::StreamId;
use crate::message::Gap;

/// The fields of an `XINFO STREAM` reply a reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// The oldest entry still in the stream (`None`: it is empty).
    pub first: Option<StreamId>,
    /// The newest ID ever given out, deleted or not.
    pub last_generated: StreamId,
    /// Entries ever appended (Redis 7 and later).
    pub entries_added: Option<u64>,
}

impl StreamInfo {
    /// Reads the reply, RESP2 (a flat array) or RESP3 (a map).
    pub fn parse(reply: &Value) -> StreamInfo {
        let pairs: Vec<(String, &Value)> = match reply {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, kv.get(1)?)))
                .collect(),
            Value::Map(items) => items
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v)))
                .collect(),
            _ => Vec::new(),
        };
        let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let id = |v: &Value| text(v).and_then(|t| StreamId::parse(&t));
        StreamInfo {
            first: field("first-entry").and_then(|v| match v {
                Value::Array(entry) => entry.first().and_then(id),
                _ => None,
            }),
            last_generated: field("last-generated-id").and_then(id).unwrap_or_default(),
            entries_added: field("entries-added").and_then(|v| match v {
                Value::Int(n) => u64::try_from(*n).ok(),
                other => text(other)?.parse().ok(),
            }),
        }
    }

    /// What happened to entries after `position`, which this reader has
    /// delivered. `info` is `None` when the stream does not exist;
    /// `entries_seen` is the `entries-added` this reader saw last. A
    /// position trimmed away reads as a gap even if the very next entry
    /// survived: IDs are not dense, so nothing tells the two apart.
    pub fn gap_after(
        info: Option<&StreamInfo>,
        position: StreamId,
        entries_seen: Option<u64>,
    ) -> Option<Gap> {
        if position == StreamId::ZERO {
            return None;
        }
        let Some(info) = info else {
            return Some(Gap::Reset);
        };
        let went_down = matches!(
            (info.entries_added, entries_seen),
            (Some(now), Some(before)) if now < before
        );
        if info.last_generated < position || went_down {
            return Some(Gap::Reset);
        }
        match info.first {
            Some(first) if first <= position => None,
            // The oldest entry is newer than the position (or nothing is
            // left): the trim went past it.
            _ => Some(Gap::Trimmed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn info(first: Option<StreamId>, last: StreamId, added: Option<u64>) -> StreamInfo {
        StreamInfo {
            first,
            last_generated: last,
            entries_added: added,
        }
    }

    #[test]
    fn parses_a_resp2_reply() {
        let reply = Value::Array(vec![
            bulk("length"),
            Value::Int(100),
            bulk("last-generated-id"),
            bulk("1795979346398-10"),
            bulk("max-deleted-entry-id"),
            bulk("0-0"),
            bulk("entries-added"),
            Value::Int(300),
            bulk("first-entry"),
            Value::Array(vec![
                bulk("1795979346341-9"),
                Value::Array(vec![bulk("f"), bulk("201")]),
            ]),
            bulk("last-entry"),
            Value::Nil,
        ]);
        assert_eq!(
            StreamInfo::parse(&reply),
            info(Some(id(1795979346341, 9)), id(1795979346398, 10), Some(300))
        );
    }

    #[test]
    fn an_empty_or_odd_reply_has_no_first_entry() {
        let reply = Value::Array(vec![bulk("first-entry"), Value::Nil]);
        assert_eq!(StreamInfo::parse(&reply), StreamInfo::default());
        assert_eq!(StreamInfo::parse(&Value::Nil), StreamInfo::default());
    }

    #[test]
    fn a_position_still_in_the_stream_is_no_gap() {
        let now = info(Some(id(10, 0)), id(50, 0), Some(300));
        assert_eq!(
            StreamInfo::gap_after(Some(&now), id(10, 0), Some(200)),
            None
        );
        assert_eq!(StreamInfo::gap_after(Some(&now), id(40, 3), None), None);
    }

    #[test]
    fn a_position_older_than_the_first_entry_was_trimmed() {
        let now = info(Some(id(10, 0)), id(50, 0), Some(300));
        assert_eq!(
            StreamInfo::gap_after(Some(&now), id(9, 7), Some(120)),
            Some(Gap::Trimmed)
        );
        let emptied = info(None, id(50, 0), Some(300));
        assert_eq!(
            StreamInfo::gap_after(Some(&emptied), id(40, 0), None),
            Some(Gap::Trimmed)
        );
    }

    #[test]
    fn a_stream_behind_the_position_or_gone_started_over() {
        let behind = info(Some(id(1, 0)), id(5, 0), Some(3));
        assert_eq!(
            StreamInfo::gap_after(Some(&behind), id(9, 0), None),
            Some(Gap::Reset)
        );
        assert_eq!(
            StreamInfo::gap_after(None, id(9, 0), None),
            Some(Gap::Reset)
        );
        // Came back empty, then other nodes appended newer entries: the
        // IDs look like a trim, the counter does not.
        let refilled = info(Some(id(20, 0)), id(21, 0), Some(2));
        assert_eq!(
            StreamInfo::gap_after(Some(&refilled), id(9, 0), Some(300)),
            Some(Gap::Reset)
        );
    }

    #[test]
    fn nothing_delivered_yet_is_never_a_gap() {
        assert_eq!(StreamInfo::gap_after(None, StreamId::ZERO, None), None);
    }
}
