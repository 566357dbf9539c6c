//! One stream entry: the fields every node writes and reads.
//!
//! `c` is the event's cursor (what readers de-duplicate on), `e` the event
//! as its storage line (what every node rebuilds the same bytes from), `n`
//! the node that accepted it, `k` the publisher's `Idempotency-Key` (only
//! when it sent one: readers deliver the first entry with a key and drop
//! later ones).

use crate::id::StreamId;
use crate::resp::{self, ProtocolError, Reply, Walker};

pub const FIELD_CURSOR: &str = "c";
pub const FIELD_EVENT: &str = "e";
pub const FIELD_NODE: &str = "n";
pub const FIELD_KEY: &str = "k";

/// An entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: StreamId,
    pub cursor: String,
    pub event: String,
    pub node: String,
    /// The publisher's `Idempotency-Key`.
    pub key: Option<String>,
}

/// Why a stream reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub &'static str);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply from Redis: {}", self.0)
    }
}

/// Takes the bytes of a bulk string as text (no copy).
fn take_text(v: &mut Reply) -> Option<String> {
    match std::mem::replace(v, Reply::Nil) {
        Reply::Bulk(b) => String::from_utf8(b).ok(),
        Reply::Simple(s) => Some(s),
        _ => None,
    }
}

/// `[id, [field, value, ...]]` → an entry; `None` for an entry that lacks
/// our fields (someone else's data under the key), which is skipped. The
/// reply's strings are moved out, not copied.
pub fn parse_entry(v: Reply) -> Result<(StreamId, Option<Entry>), ShapeError> {
    let Reply::Array(mut parts) = v else {
        return Err(ShapeError("an entry is not an array"));
    };
    if parts.len() < 2 {
        return Err(ShapeError("an entry lacks its id or fields"));
    }
    let id = parts[0]
        .text()
        .and_then(StreamId::parse)
        .ok_or(ShapeError("an entry id is not ms-seq"))?;
    let mut fields = match std::mem::replace(&mut parts[1], Reply::Nil) {
        Reply::Array(items) => items,
        Reply::Nil => Vec::new(),
        _ => return Err(ShapeError("entry fields are not a list")),
    };
    let (mut cursor, mut event, mut node, mut key) = (None, None, None, None);
    for kv in fields.chunks_mut(2) {
        let [k, v] = kv else { continue };
        let slot = match k.text() {
            Some(FIELD_CURSOR) => &mut cursor,
            Some(FIELD_EVENT) => &mut event,
            Some(FIELD_NODE) => &mut node,
            Some(FIELD_KEY) => &mut key,
            _ => continue,
        };
        *slot = take_text(v);
    }
    let (Some(cursor), Some(event)) = (cursor, event) else {
        return Ok((id, None));
    };
    Ok((
        id,
        Some(Entry {
            id,
            cursor,
            event,
            node: node.unwrap_or_default(),
            key,
        }),
    ))
}

/// A list of entries (`XRANGE`, `XREVRANGE`, one stream of `XREAD`).
pub fn parse_entries(v: Reply) -> Result<Vec<(StreamId, Option<Entry>)>, ShapeError> {
    match v {
        Reply::Nil => Ok(Vec::new()),
        Reply::Array(items) => items.into_iter().map(parse_entry).collect(),
        _ => Err(ShapeError("entries are not a list")),
    }
}

/// The entries of the one stream in an `XREAD` reply (nil: none).
pub fn parse_xread(v: Reply) -> Result<Vec<(StreamId, Option<Entry>)>, ShapeError> {
    match v {
        Reply::Nil => Ok(Vec::new()),
        Reply::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Reply::Array(pair)) => match pair.into_iter().nth(1) {
                Some(entries) => parse_entries(entries),
                None => Err(ShapeError("XREAD stream without entries")),
            },
            Some(_) => Err(ShapeError("XREAD stream is not a pair")),
        },
        _ => Err(ShapeError("XREAD reply is not a list")),
    }
}

/// An `XREAD` reply read in place: its entries, or Redis's error.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Entries(Vec<(StreamId, Option<Entry>)>),
    Error(String),
}

/// Parses an `XREAD` reply straight from its bytes (one stream asked for),
/// copying only the fields an [`Entry`] keeps: no [`Reply`] tree, no field
/// names or ids allocated. For [`crate::wire::Wire::read_with`], which
/// hands it a complete reply.
pub fn parse_xread_bytes(buf: &[u8]) -> Result<Option<(Read, usize)>, ProtocolError> {
    let mut w = Walker::new(buf);
    if w.peek() == Some(b'-') {
        return Ok(resp::parse(buf)?.map(|(reply, used)| {
            let text = match reply {
                Reply::Error(e) => e,
                _ => String::new(),
            };
            (Read::Error(text), used)
        }));
    }
    let mut out = Vec::new();
    let Some(streams) = w.array()? else {
        return Ok(None);
    };
    for i in 0..streams.unwrap_or(0) {
        if w.array()?.ok_or(INCOMPLETE)? != Some(2) {
            return Err(ProtocolError("XREAD stream is not a pair"));
        }
        w.bulk()?.ok_or(INCOMPLETE)?;
        if i > 0 {
            w.skip()?.ok_or(INCOMPLETE)?;
            continue;
        }
        let Some(n) = w.array()?.ok_or(INCOMPLETE)? else {
            continue;
        };
        out.reserve(n.min(crate::settings::READ_COUNT));
        for _ in 0..n {
            out.push(entry_bytes(&mut w)?);
        }
    }
    Ok(Some((Read::Entries(out), w.at)))
}

/// What [`parse_xread_bytes`] reports for a reply cut short (it is only
/// given complete ones).
const INCOMPLETE: ProtocolError = ProtocolError("reply cut short");

fn entry_bytes(w: &mut Walker<'_>) -> Result<(StreamId, Option<Entry>), ProtocolError> {
    if w.array()?.ok_or(INCOMPLETE)? != Some(2) {
        return Err(ProtocolError("an entry is not [id, fields]"));
    }
    let id = w
        .bulk()?
        .ok_or(INCOMPLETE)?
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(StreamId::parse)
        .ok_or(ProtocolError("an entry id is not ms-seq"))?;
    let fields = w.array()?.ok_or(INCOMPLETE)?.unwrap_or(0);
    let (mut cursor, mut event, mut node, mut key) = (None, None, None, None);
    for _ in 0..fields / 2 {
        let name = w.bulk()?.ok_or(INCOMPLETE)?;
        let value = w.bulk()?.ok_or(INCOMPLETE)?;
        let slot = match name {
            Some(b"c") => &mut cursor,
            Some(b"e") => &mut event,
            Some(b"n") => &mut node,
            Some(b"k") => &mut key,
            _ => continue,
        };
        *slot = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
    }
    if fields % 2 == 1 {
        w.skip()?.ok_or(INCOMPLETE)?;
    }
    let (Some(cursor), Some(event)) = (cursor, event) else {
        return Ok((id, None));
    };
    Ok((
        id,
        Some(Entry {
            id,
            cursor,
            event,
            node: node.unwrap_or_default(),
            key,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Reply {
        Reply::Array(vec![
            bulk(id),
            Reply::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn entries_and_foreign_entries() {
        let list = Reply::Array(vec![
            raw_entry(
                "5-1",
                &[("c", "cur"), ("e", "{}"), ("n", "node-a"), ("k", "key-1")],
            ),
            raw_entry("6-0", &[("other", "x")]),
            raw_entry("7-0", &[("e", "{}"), ("c", "cur2")]),
        ]);
        let got = parse_entries(list).unwrap();
        assert_eq!(got.len(), 3);
        let e = got[0].1.as_ref().unwrap();
        assert_eq!(e.id, StreamId { ms: 5, seq: 1 });
        assert_eq!((e.cursor.as_str(), e.event.as_str()), ("cur", "{}"));
        assert_eq!(e.node, "node-a");
        assert_eq!(e.key.as_deref(), Some("key-1"));
        assert_eq!(got[1], (StreamId { ms: 6, seq: 0 }, None));
        let e = got[2].1.as_ref().unwrap();
        assert_eq!((e.cursor.as_str(), e.key.as_deref()), ("cur2", None));
    }

    #[test]
    fn xread_replies() {
        assert!(parse_xread(Reply::Nil).unwrap().is_empty());
        let reply = Reply::Array(vec![Reply::Array(vec![
            bulk("key"),
            Reply::Array(vec![raw_entry("1-0", &[("c", "a"), ("e", "{}")])]),
        ])]);
        let got = parse_xread(reply).unwrap();
        assert_eq!(got[0].1.as_ref().unwrap().cursor, "a");
        assert!(parse_xread(Reply::Int(3)).is_err());
        assert!(parse_entries(Reply::Array(vec![raw_entry("x", &[])])).is_err());
    }

    #[test]
    fn xread_bytes_agree_with_the_tree() {
        let wire = b"*1\r\n*2\r\n$1\r\ns\r\n*3\r\n*2\r\n$3\r\n5-1\r\n*8\r\n$1\r\nc\r\n$3\r\ncur\r\n$1\r\ne\r\n$2\r\n{}\r\n$1\r\nn\r\n$1\r\na\r\n$1\r\nk\r\n$2\r\nk1\r\n*2\r\n$3\r\n6-0\r\n*2\r\n$5\r\nother\r\n$1\r\nx\r\n*2\r\n$3\r\n7-0\r\n*-1\r\n";
        let (tree, _) = resp::parse(wire).unwrap().unwrap();
        let (read, used) = parse_xread_bytes(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(read, Read::Entries(parse_xread(tree).unwrap()));
        assert_eq!(
            parse_xread_bytes(b"*-1\r\n").unwrap().unwrap().0,
            Read::Entries(Vec::new())
        );
        assert_eq!(
            parse_xread_bytes(b"-ERR x\r\n").unwrap().unwrap().0,
            Read::Error("ERR x".into())
        );
        assert!(
            parse_xread_bytes(b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$1\r\nz\r\n*0\r\n").is_err()
        );
    }
}
