//! Topics: parsing request paths into topic lists, subscription matching, and
//! the index that finds a published event's candidate subscribers.
//!
//! A subscription is one or more comma-separated batches; an event matches a
//! batch when every topic of the batch is among the event's topics (order
//! does not matter, extra event topics are fine). The index files each
//! batch under one of its topics, the one with the fewest connections filed
//! under it at the time (or under "everything" for `GET /`), so a publish
//! only visits connections that can match, and `/projectN/commits` does not
//! pile every subscriber under `commits`. Sets are ordered by connection
//! key, so fan-out writes to connections in the order they arrived.

use std::collections::{BTreeSet, HashMap};

/// A path that is not a valid topic list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTopic;

/// Splits a path (without query) into percent-decoded topics, ignoring
/// empty segments: `//a/%62//` → `["a", "b"]`.
pub fn parse_topics(path: &str) -> Result<Vec<String>, BadTopic> {
    // A plain byte loop: paths are short, and `str::split` costs more in
    // setting up its searcher than in searching them (every publish).
    let mut topics = Vec::with_capacity(4);
    let mut rest = path;
    while !rest.is_empty() {
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        if end > 0 {
            topics.push(percent_decode(&rest[..end])?);
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    Ok(topics)
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it
/// is. The result must be UTF-8.
pub fn percent_decode(segment: &str) -> Result<String, BadTopic> {
    if !segment.bytes().any(|b| b == b'%') {
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BadTopic)
}

/// What a subscriber asked for: batches of topics, any of which may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    batches: Vec<Vec<Box<str>>>,
    /// The index keys chosen when it was filed (`None`: "everything").
    filed_under: Vec<Option<Box<str>>>,
}

impl Subscription {
    /// `/apples/red,oranges/ripe` → two batches. `/` → one empty batch,
    /// which matches everything.
    pub fn parse(path: &str) -> Result<Subscription, BadTopic> {
        let mut batches = Vec::new();
        for batch in path.split(',') {
            let topics: Vec<Box<str>> = parse_topics(batch)?
                .into_iter()
                .map(String::into_boxed_str)
                .collect();
            if !batches.contains(&topics) {
                batches.push(topics);
            }
        }
        Ok(Subscription {
            batches,
            filed_under: Vec::new(),
        })
    }

    /// True when every topic of some batch is among `event_topics`.
    pub fn matches(&self, event_topics: &[String]) -> bool {
        self.batches.iter().any(|batch| {
            batch
                .iter()
                .all(|t| event_topics.iter().any(|e| **e == **t))
        })
    }
}

/// Connections (by slab key) filed by topic.
#[derive(Debug, Default)]
pub struct TopicIndex {
    by_topic: HashMap<Box<str>, BTreeSet<usize>>,
    everything: BTreeSet<usize>,
}

impl TopicIndex {
    /// Files each batch under its least crowded topic (ties: the later
    /// topic, usually the more specific) and records the choice in `sub`.
    pub fn insert(&mut self, conn: usize, sub: &mut Subscription) {
        let mut keys: Vec<Option<Box<str>>> = sub
            .batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .rev()
                    .min_by_key(|t| self.by_topic.get(&***t).map_or(0, BTreeSet::len))
                    .cloned()
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            match key {
                None => self.everything.insert(conn),
                Some(topic) => self.by_topic.entry(topic.clone()).or_default().insert(conn),
            };
        }
        sub.filed_under = keys;
    }

    pub fn remove(&mut self, conn: usize, sub: &Subscription) {
        for key in &sub.filed_under {
            match key {
                None => {
                    self.everything.remove(&conn);
                }
                Some(topic) => {
                    if let Some(set) = self.by_topic.get_mut(&**topic) {
                        set.remove(&conn);
                        if set.is_empty() {
                            self.by_topic.remove(&**topic);
                        }
                    }
                }
            }
        }
    }

    /// Every connection that may match an event with these topics. A
    /// connection can appear more than once; callers de-duplicate and
    /// confirm with [`Subscription::matches`].
    pub fn candidates<'a>(
        &'a self,
        event_topics: &'a [String],
    ) -> impl Iterator<Item = usize> + 'a {
        let filed = event_topics
            .iter()
            .enumerate()
            // A topic repeated in the event would visit its set twice.
            .filter(|(i, t)| !event_topics[..*i].contains(t))
            .filter_map(|(_, t)| self.by_topic.get(t.as_str()))
            .flatten();
        self.everything.iter().chain(filed).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_paths() {
        assert_eq!(parse_topics("//a///b/").unwrap(), topics(&["a", "b"]));
        assert_eq!(parse_topics("/").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_topics("/a%20b/%E2%9C%93").unwrap(),
            topics(&["a b", "✓"])
        );
        assert_eq!(parse_topics("/a%2Fb").unwrap(), topics(&["a/b"]));
        assert_eq!(parse_topics("/100%/x%4").unwrap(), topics(&["100%", "x%4"]));
        assert_eq!(parse_topics("/%ff"), Err(BadTopic));
    }

    /// PROTOCOL.md's matrix, every cell.
    #[test]
    fn the_matrix() {
        let events = [
            (topics(&["fruits"]), [true, false, false, false, false]),
            (
                topics(&["fruits", "apples"]),
                [true, true, false, false, true],
            ),
            (
                topics(&["fruits", "apples", "red"]),
                [true, true, true, false, true],
            ),
            (
                topics(&["fruits", "oranges"]),
                [true, false, false, true, false],
            ),
        ];
        let paths = [
            "/fruits",
            "/fruits/apples",
            "/fruits/apples/red",
            "/fruits/oranges",
            "/apples",
        ];
        for (event, expected) in &events {
            for (path, want) in paths.iter().zip(expected) {
                let sub = Subscription::parse(path).unwrap();
                assert_eq!(sub.matches(event), *want, "{path} vs {event:?}");
            }
        }
    }

    #[test]
    fn comma_batches_and_everything() {
        let sub = Subscription::parse("/apples/red,oranges/ripe").unwrap();
        assert!(sub.matches(&topics(&["red", "apples"])));
        assert!(sub.matches(&topics(&["oranges", "ripe", "x"])));
        assert!(!sub.matches(&topics(&["apples", "ripe"])));
        assert!(Subscription::parse("/").unwrap().matches(&topics(&["x"])));
        assert!(Subscription::parse("/").unwrap().matches(&[]));
    }

    #[test]
    fn index_finds_candidates() {
        let mut index = TopicIndex::default();
        let mut a = Subscription::parse("/fruits/apples").unwrap();
        let mut all = Subscription::parse("/").unwrap();
        let mut two = Subscription::parse("/x,y").unwrap();
        index.insert(1, &mut a);
        index.insert(2, &mut all);
        index.insert(3, &mut two);
        let find = |index: &TopicIndex, t: &[&str]| {
            let t = topics(t);
            let mut c: Vec<usize> = index.candidates(&t).collect();
            c.sort();
            c
        };
        assert_eq!(find(&index, &["fruits", "apples"]), vec![1, 2]);
        assert_eq!(find(&index, &["fruits"]), vec![2]);
        assert_eq!(find(&index, &["x", "y", "x"]), vec![2, 3, 3]);
        index.remove(1, &a);
        index.remove(3, &two);
        assert_eq!(find(&index, &["fruits", "apples", "x"]), vec![2]);
        assert!(index.by_topic.is_empty());
    }

    #[test]
    fn index_spreads_a_shared_topic() {
        let mut index = TopicIndex::default();
        let mut subs: Vec<Subscription> = (0..100)
            .map(|n| Subscription::parse(&format!("/project{n}/commits")).unwrap())
            .collect();
        for (key, sub) in subs.iter_mut().enumerate() {
            index.insert(key, sub);
        }
        let event = topics(&["project7", "commits"]);
        let visited = index.candidates(&event).count();
        assert!(
            visited <= 2,
            "visited {visited} connections for one project"
        );
        for (key, sub) in subs.iter().enumerate() {
            index.remove(key, sub);
        }
        assert!(index.by_topic.is_empty());
    }
}
