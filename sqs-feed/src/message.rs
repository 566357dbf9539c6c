//! Received messages → events: the body must be a JSON object, its
//! `pubsub_path` says where it is published; MessageIds already taken are
//! remembered (bounded, oldest forgotten first) so a redelivery is not
//! published twice.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// MessageIds remembered per queue for de-duplication.
pub const SEEN_CAPACITY: usize = 10_000;

// Messages

/// One message taken from a queue, ready to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsEvent {
    /// The message's `pubsub_path`, or `/`.
    pub path: String,
    /// The body object as received (the reactor adds or overwrites the
    /// `pubsub_*` keys like a publish).
    pub object: Map<String, Value>,
}

/// Why a message body cannot be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    NotJson(String),
    NotAnObject,
    BadPath,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotJson(e) => write!(f, "body is not JSON ({e})"),
            BodyError::NotAnObject => f.write_str("body is not a JSON object"),
            BodyError::BadPath => f.write_str("pubsub_path is not a string"),
        }
    }
}

/// Turns a message body into an event: the body must be a JSON object;
/// its `pubsub_path` (default `/`) is where it is published.
pub fn event_from_body(body: &str) -> Result<SqsEvent, BodyError> {
    let object = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(BodyError::NotAnObject),
        Err(e) => return Err(BodyError::NotJson(e.to_string())),
    };
    let path = match object.get("pubsub_path") {
        None | Some(Value::Null) => "/".to_string(),
        Some(Value::String(p)) if p.starts_with('/') => p.clone(),
        Some(Value::String(p)) => format!("/{p}"),
        Some(_) => return Err(BodyError::BadPath),
    };
    Ok(SqsEvent { path, object })
}

/// What one message of a `ReceiveMessage` answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// New, and publishable.
    Event(SqsEvent),
    /// Its MessageId was taken before: not published again.
    Duplicate,
    /// Not publishable: logged (and deleted with `delete`).
    Bad(BodyError),
}

/// Sorts one received message and remembers its MessageId (a message
/// without one is always new).
pub fn triage(message: &Value, seen: &mut SeenIds) -> Taken {
    if let Some(id) = message.get("MessageId").and_then(Value::as_str) {
        if !seen.insert(id) {
            return Taken::Duplicate;
        }
    }
    let body = message
        .get("Body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match event_from_body(body) {
        Ok(event) => Taken::Event(event),
        Err(e) => Taken::Bad(e),
    }
}

/// The last `capacity` MessageIds taken; the oldest is forgotten first.
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl SeenIds {
    pub fn new(capacity: usize) -> SeenIds {
        SeenIds {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    #[cfg(test)]
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; returns false if it was already known.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let id: Arc<str> = id.into();
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies() {
        let e = event_from_body(r#"{"b": 1, "pubsub_path": "/private/x/y", "a": 2}"#).unwrap();
        assert_eq!(e.path, "/private/x/y");
        // Key order as received.
        assert_eq!(
            e.object.keys().collect::<Vec<_>>(),
            vec!["b", "pubsub_path", "a"]
        );
        assert_eq!(event_from_body(r#"{"x": 1}"#).unwrap().path, "/");
        assert_eq!(
            event_from_body(r#"{"pubsub_path": null}"#).unwrap().path,
            "/"
        );
        assert_eq!(
            event_from_body(r#"{"pubsub_path": "a/b"}"#).unwrap().path,
            "/a/b"
        );
        assert_eq!(event_from_body("[1]"), Err(BodyError::NotAnObject));
        assert_eq!(event_from_body("\"x\""), Err(BodyError::NotAnObject));
        assert_eq!(event_from_body("null"), Err(BodyError::NotAnObject));
        assert!(matches!(
            event_from_body("not json"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(event_from_body(""), Err(BodyError::NotJson(_))));
        assert!(matches!(
            event_from_body("{} {}"),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(
            event_from_body(r#"{"pubsub_path": 3}"#),
            Err(BodyError::BadPath)
        );
        let deep = "[".repeat(100_000);
        assert!(matches!(event_from_body(&deep), Err(BodyError::NotJson(_))));
    }

    #[test]
    fn seen_ids_are_bounded_oldest_first() {
        let mut seen = SeenIds::new(3);
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("c"));
        assert_eq!(seen.len(), 3);
        assert!(seen.insert("d")); // evicts "a"
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains("a"));
        assert!(seen.contains("b") && seen.contains("c") && seen.contains("d"));
        assert!(seen.insert("a")); // forgotten, so new again; evicts "b"
        assert!(!seen.contains("b"));
        let mut big = SeenIds::new(SEEN_CAPACITY);
        for i in 0..SEEN_CAPACITY * 3 {
            big.insert(&i.to_string());
        }
        assert_eq!(big.len(), SEEN_CAPACITY);
        assert_eq!(big.set.len(), SEEN_CAPACITY);
    }

    #[test]
    fn triage_messages() {
        let mut seen = SeenIds::new(10);
        let msg =
            |id: &str, body: &str| json!({"MessageId": id, "ReceiptHandle": "r", "Body": body});
        let Taken::Event(e) = triage(&msg("m1", r#"{"pubsub_path": "/a/b", "x": 1}"#), &mut seen)
        else {
            panic!("m1 is an event");
        };
        assert_eq!(e.path, "/a/b");
        assert_eq!(e.object["x"], 1);
        // The same MessageId again (a redelivery), whatever its body.
        assert_eq!(triage(&msg("m1", "{}"), &mut seen), Taken::Duplicate);
        assert_eq!(
            triage(&msg("m2", "[1]"), &mut seen),
            Taken::Bad(BodyError::NotAnObject)
        );
        // A bad body's id is remembered too: logged once, not on every redelivery.
        assert_eq!(triage(&msg("m2", "[1]"), &mut seen), Taken::Duplicate);
        assert!(matches!(
            triage(&json!({"MessageId": "m3"}), &mut seen),
            Taken::Bad(BodyError::NotJson(_))
        ));
        // Without a MessageId nothing can be de-duplicated.
        let anonymous = json!({"Body": "{}"});
        assert!(matches!(triage(&anonymous, &mut seen), Taken::Event(_)));
        assert!(matches!(triage(&anonymous, &mut seen), Taken::Event(_)));
    }
}
