//! What `XINFO STREAM` says about the stream's ends, and what it means for
//! a reader whose position may have gone: nothing, a trim that overtook it
//! ([`Gap::Trimmed`]), or a stream that started over ([`Gap::Reset`]).
//!
//! Trimming (`XADD ... MAXLEN ~`) removes the oldest entries and does *not*
//! move `max-deleted-entry-id` (only `XDEL` does), so the trim is told by
//! the first entry: a position older than it was trimmed away. A stream
//! that is behind the position (`last-generated-id`), or whose
//! `entries-added` went down, started over.

use crate::id::StreamId;
use crate::message::Gap;
use crate::resp::Reply;

/// The fields of an `XINFO STREAM` reply a reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// The oldest entry still in the stream (`None`: it is empty).
    pub first: Option<StreamId>,
    /// The newest ID ever given out, deleted or not.
    pub last_generated: StreamId,
    /// Entries ever appended (Redis 7 and later).
    pub entries_added: Option<u64>,
    /// Entries in the stream now.
    pub length: u64,
}

impl StreamInfo {
    /// Reads the reply (RESP2: a flat array of names and values).
    pub fn parse(reply: &Reply) -> StreamInfo {
        let mut info = StreamInfo::default();
        let Some(items) = reply.array() else {
            return info;
        };
        for kv in items.chunks(2) {
            let [k, v] = kv else { continue };
            match k.text() {
                Some("first-entry") => {
                    info.first = v
                        .array()
                        .and_then(|e| e.first())
                        .and_then(Reply::text)
                        .and_then(StreamId::parse)
                }
                Some("last-generated-id") => {
                    info.last_generated = v.text().and_then(StreamId::parse).unwrap_or_default()
                }
                Some("length") => {
                    info.length = v.int().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
                }
                Some("entries-added") => {
                    info.entries_added = v.int().and_then(|n| u64::try_from(n).ok())
                }
                _ => {}
            }
        }
        info
    }

    /// Where the entry before the first one stands on the scale of
    /// `entries-added` (entries are only ever trimmed from the front).
    pub fn before_first(&self) -> Option<u64> {
        Some(self.entries_added?.saturating_sub(self.length))
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

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn info(first: Option<StreamId>, last: StreamId, added: Option<u64>) -> StreamInfo {
        StreamInfo {
            first,
            last_generated: last,
            entries_added: added,
            length: 0,
        }
    }

    #[test]
    fn parses_a_resp2_reply() {
        let reply = Reply::Array(vec![
            bulk("length"),
            Reply::Int(100),
            bulk("last-generated-id"),
            bulk("1795979346398-10"),
            bulk("max-deleted-entry-id"),
            bulk("0-0"),
            bulk("entries-added"),
            Reply::Int(300),
            bulk("first-entry"),
            Reply::Array(vec![
                bulk("1795979346341-9"),
                Reply::Array(vec![bulk("f"), bulk("201")]),
            ]),
            bulk("last-entry"),
            Reply::Nil,
        ]);
        assert_eq!(
            StreamInfo::parse(&reply),
            StreamInfo {
                length: 100,
                ..info(Some(id(1795979346341, 9)), id(1795979346398, 10), Some(300))
            }
        );
    }

    #[test]
    fn an_empty_or_odd_reply_has_no_first_entry() {
        let reply = Reply::Array(vec![bulk("first-entry"), Reply::Nil]);
        assert_eq!(StreamInfo::parse(&reply), StreamInfo::default());
        assert_eq!(StreamInfo::parse(&Reply::Nil), StreamInfo::default());
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
