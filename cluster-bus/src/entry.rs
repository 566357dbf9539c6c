//! One stream entry: the fields every node writes and reads.
//!
//! `c` is the event's cursor (what readers de-duplicate on), `e` the event
//! as its storage line (what every node rebuilds the same bytes from), `n`
//! the node that accepted it.

use redis::Value;

use crate::id::StreamId;

pub const FIELD_CURSOR: &str = "c";
pub const FIELD_EVENT: &str = "e";
pub const FIELD_NODE: &str = "n";

/// An entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: StreamId,
    pub cursor: String,
    pub event: String,
    pub node: String,
}

/// Why a stream reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub &'static str);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply from Redis: {}", self.0)
    }
}

/// The text of a bulk or simple string.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]` → an entry; `None` for an entry that lacks
/// our fields (someone else's data under the key), which is skipped.
pub fn parse_entry(v: &Value) -> Result<Option<Entry>, ShapeError> {
    let Value::Array(parts) = v else {
        return Err(ShapeError("an entry is not an array"));
    };
    let (Some(id), Some(fields)) = (parts.first(), parts.get(1)) else {
        return Err(ShapeError("an entry lacks its id or fields"));
    };
    let id = text(id)
        .and_then(|t| StreamId::parse(&t))
        .ok_or(ShapeError("an entry id is not ms-seq"))?;
    let pairs: Vec<(String, String)> = match fields {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        Value::Nil => Vec::new(),
        _ => return Err(ShapeError("entry fields are not a list")),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(cursor), Some(event)) = (field(FIELD_CURSOR), field(FIELD_EVENT)) else {
        return Ok(None);
    };
    Ok(Some(Entry {
        id,
        cursor,
        event,
        node: field(FIELD_NODE).unwrap_or_default(),
    }))
}

/// A list of entries (`XRANGE`, `XREVRANGE`, one stream of `XREAD`).
pub fn parse_entries(v: &Value) -> Result<Vec<(StreamId, Option<Entry>)>, ShapeError> {
    let Value::Array(items) = v else {
        return match v {
            Value::Nil => Ok(Vec::new()),
            _ => Err(ShapeError("entries are not a list")),
        };
    };
    items
        .iter()
        .map(|item| {
            let entry = parse_entry(item)?;
            let id = match &entry {
                Some(e) => e.id,
                None => entry_id(item).ok_or(ShapeError("an entry id is not ms-seq"))?,
            };
            Ok((id, entry))
        })
        .collect()
}

fn entry_id(item: &Value) -> Option<StreamId> {
    let Value::Array(parts) = item else {
        return None;
    };
    StreamId::parse(&text(parts.first()?)?)
}

/// The entries of the one stream in an `XREAD` reply (nil: none).
pub fn parse_xread(v: &Value) -> Result<Vec<(StreamId, Option<Entry>)>, ShapeError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.get(1) {
                Some(entries) => parse_entries(entries),
                None => Err(ShapeError("XREAD stream without entries")),
            },
            Some(_) => Err(ShapeError("XREAD stream is not a pair")),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        _ => Err(ShapeError("XREAD reply is not a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn entries_and_foreign_entries() {
        let list = Value::Array(vec![
            raw_entry("5-1", &[("c", "cur"), ("e", "{}"), ("n", "node-a")]),
            raw_entry("6-0", &[("other", "x")]),
        ]);
        let got = parse_entries(&list).unwrap();
        assert_eq!(got.len(), 2);
        let e = got[0].1.as_ref().unwrap();
        assert_eq!(e.id, StreamId { ms: 5, seq: 1 });
        assert_eq!((e.cursor.as_str(), e.event.as_str()), ("cur", "{}"));
        assert_eq!(e.node, "node-a");
        assert_eq!(got[1], (StreamId { ms: 6, seq: 0 }, None));
    }

    #[test]
    fn xread_replies() {
        assert!(parse_xread(&Value::Nil).unwrap().is_empty());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("key"),
            Value::Array(vec![raw_entry("1-0", &[("c", "a"), ("e", "{}")])]),
        ])]);
        let got = parse_xread(&reply).unwrap();
        assert_eq!(got[0].1.as_ref().unwrap().cursor, "a");
        assert!(parse_xread(&Value::Int(3)).is_err());
    }
}
