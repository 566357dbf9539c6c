//! Who may see private events and publish to secured topics: grants and the
//! publish rule. Pure logic: no sockets, no threads, no LDAP traffic (that is
//! the `ldap-worker` crate's job).
//!
//! Flow: `basic_auth::parse_basic_auth` → [`Acl::authenticate`] (the ACL
//! file, [`file`]) → `Granted(grant)`, or `UnknownUser` → (LDAP configured,
//! `config::ldap`) an `ldap_worker::LdapJob` → the reply's group DNs →
//! [`LdapAclMap::grant_for`] ([`ldap_map`]). A subscriber then sees a
//! private event when [`Grant::can_see`]; a publisher passes [`may_publish`].
//!
//! Invariants:
//! - Bad credentials are never an error, only "no grant".
//! - Topic names compare as exact strings; LDAP group DNs compare
//!   case-insensitively with insignificant whitespace removed.

pub mod file;
pub mod ldap_map;

pub use file::{Acl, AclError, AuthOutcome, MAX_HASH_ROUNDS};
pub use ldap_map::{normalize_dn, LdapAclMap};

/// What an authenticated user has: ACL segments (each a list of topics, all of
/// which an event must carry for the segment to match) and the secured topics
/// the user may publish to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub segments: Vec<Vec<String>>,
    pub publish_topics: Vec<String>,
}

impl Grant {
    /// True when some segment's topics are all among the event's topics. As in
    /// the reference (`all(el in topics for el in segment)`), an empty segment
    /// matches every event; a grant without segments matches none.
    pub fn can_see(&self, event_topics: &[String]) -> bool {
        self.segments
            .iter()
            .any(|segment| segment.iter().all(|t| event_topics.contains(t)))
    }

    /// Add `other`'s segments and publish topics (no duplicates).
    pub fn merge(&mut self, other: &Grant) {
        for segment in &other.segments {
            if !self.segments.contains(segment) {
                self.segments.push(segment.clone());
            }
        }
        for topic in &other.publish_topics {
            if !self.publish_topics.contains(topic) {
                self.publish_topics.push(topic.clone());
            }
        }
    }

    /// No segments and no publish topics.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.publish_topics.is_empty()
    }
}

/// The secured-topics rule (the reference's): if the event carries any topic
/// listed in `clients.secure_topics`, it may be published only by an
/// authenticated user whose `publish_topics` cover every secured topic present,
/// and then the client address does not matter; otherwise the address decides
/// (`ip_allowed`: inside `clients.payloaders`).
///
/// `path_topics` should be the request path's segments *including* a leading
/// `private`: the reference checks every segment of the path, so a secured
/// topic named `private` guards all private publishing.
pub fn may_publish(
    secure_topics: &[String],
    path_topics: &[String],
    grant: Option<&Grant>,
    ip_allowed: bool,
) -> bool {
    let mut secured = secure_topics
        .iter()
        .filter(|s| path_topics.contains(s))
        .peekable();
    if secured.peek().is_none() {
        return ip_allowed;
    }
    match grant {
        Some(grant) => secured.all(|s| grant.publish_topics.contains(s)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn can_see_matrix() {
        let g = Grant {
            segments: vec![
                strings(&["git", "private-repo.git"]),
                strings(&["email", "dev"]),
            ],
            publish_topics: vec![],
        };
        assert!(g.can_see(&strings(&["git", "private-repo.git"])));
        assert!(g.can_see(&strings(&["private-repo.git", "git", "commit"])));
        assert!(g.can_see(&strings(&["dev", "email"])));
        assert!(!g.can_see(&strings(&["git"])));
        assert!(!g.can_see(&strings(&["git", "other.git"])));
        assert!(!g.can_see(&strings(&["email", "git"])));
        assert!(!g.can_see(&[]));
        assert!(!Grant::default().can_see(&strings(&["git"])));
        assert!(!Grant::default().can_see(&[]));
        let everything = Grant {
            segments: vec![vec![]],
            publish_topics: vec![],
        };
        assert!(everything.can_see(&[]));
        assert!(everything.can_see(&strings(&["x"])));
    }

    #[test]
    fn merge_unions_without_duplicates() {
        let mut a = Grant {
            segments: vec![strings(&["a"])],
            publish_topics: strings(&["deploy"]),
        };
        a.merge(&Grant {
            segments: vec![strings(&["a"]), strings(&["b", "c"])],
            publish_topics: strings(&["deploy", "release"]),
        });
        assert_eq!(a.segments, vec![strings(&["a"]), strings(&["b", "c"])]);
        assert_eq!(a.publish_topics, strings(&["deploy", "release"]));
        assert!(!a.is_empty());
        assert!(Grant::default().is_empty());
    }

    #[test]
    fn secured_topics_rule() {
        let secure = strings(&["deploy", "release"]);
        let deployer = Grant {
            segments: vec![],
            publish_topics: strings(&["deploy"]),
        };
        let both = Grant {
            segments: vec![],
            publish_topics: strings(&["release", "deploy"]),
        };
        let none = Grant::default();
        let t = |s: &[&str]| strings(s);
        // No secured topic: the address decides, the grant does not matter.
        assert!(may_publish(&secure, &t(&["fruits"]), None, true));
        assert!(!may_publish(&secure, &t(&["fruits"]), None, false));
        assert!(!may_publish(&secure, &t(&["fruits"]), Some(&both), false));
        assert!(may_publish(&[], &t(&["deploy"]), None, true));
        // Secured topic: the grant decides, the address does not matter.
        assert!(!may_publish(&secure, &t(&["deploy", "x"]), None, true));
        assert!(!may_publish(&secure, &t(&["deploy"]), Some(&none), true));
        assert!(may_publish(
            &secure,
            &t(&["deploy", "x"]),
            Some(&deployer),
            false
        ));
        assert!(may_publish(
            &secure,
            &t(&["x", "deploy"]),
            Some(&deployer),
            true
        ));
        assert!(!may_publish(
            &secure,
            &t(&["deploy", "release"]),
            Some(&deployer),
            true
        ));
        assert!(may_publish(
            &secure,
            &t(&["release", "deploy"]),
            Some(&both),
            false
        ));
        // `private` is a path segment like any other.
        let private = strings(&["private"]);
        assert!(!may_publish(&private, &t(&["private", "x"]), None, true));
        assert!(may_publish(&private, &t(&["x"]), None, true));
    }
}
