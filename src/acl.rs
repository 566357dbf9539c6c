//! Placeholder until the ACL module lands: no users, no private access.

/// What an authenticated user may see and publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub segments: Vec<Vec<String>>,
    pub publish_topics: Vec<String>,
}

impl Grant {
    /// True when some segment's topics are all among the event's topics.
    pub fn can_see(&self, event_topics: &[String]) -> bool {
        self.segments
            .iter()
            .any(|seg| seg.iter().all(|t| event_topics.contains(t)))
    }
}
