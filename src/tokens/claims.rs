//! A token's claims, and its `pubsub` claim as a grant in the ACL file's
//! own shape: `{"acl": {"segment": ["topic", ...], ...}, "topics":
//! [secured topics it may publish]}`, both optional.
//!
//! Stricter than the ACL file: the issuer is a program, so a `pubsub`
//! claim of the wrong shape (an unknown key, a topic that is not a string)
//! refuses the token with a reason, where the ACL file would warn and
//! skip: a typo then shows as a clear 401, not as silently missing events.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Holder, Refusal};
use crate::acl::Grant;

/// The claims pubsubd reads; others are ignored.
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// Required (`jsonwebtoken`'s `required_spec_claims` says which is
    /// missing); a number, whole or not.
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub sub: Option<String>,
    pub pubsub: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PubsubClaim {
    #[serde(default)]
    acl: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

impl Claims {
    /// Whose grants the token carries.
    pub fn holder(self) -> Result<Holder, Refusal> {
        let Some(pubsub) = self.pubsub else {
            return Ok(match self.sub {
                Some(user) if !user.is_empty() => Holder::User(user),
                _ => Holder::Nobody,
            });
        };
        let claim =
            PubsubClaim::deserialize(pubsub).map_err(|e| Refusal::PubsubClaim(e.to_string()))?;
        let mut grant = Grant::default();
        for topics in claim.acl.into_iter().flat_map(BTreeMap::into_values) {
            if !grant.segments.contains(&topics) {
                grant.segments.push(topics);
            }
        }
        for topic in claim.topics.into_iter().flatten() {
            if !grant.publish_topics.contains(&topic) {
                grant.publish_topics.push(topic);
            }
        }
        Ok(Holder::Grant(grant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holder(claims: serde_json::Value) -> Result<Holder, Refusal> {
        serde_json::from_value::<Claims>(claims)
            .expect("claims")
            .holder()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_issue_example_grants_what_an_acl_entry_grants() {
        let h = holder(json!({"sub": "alice", "exp": 1,
            "pubsub": {"acl": {"seg": ["internal", "foo"]}, "topics": ["bread"]}}));
        let grant = Grant {
            segments: vec![strings(&["internal", "foo"])],
            publish_topics: strings(&["bread"]),
        };
        assert_eq!(h, Ok(Holder::Grant(grant.clone())));
        assert!(grant.can_see(&strings(&["foo", "internal", "x"])));
        assert!(!grant.can_see(&strings(&["foo"])));
        // Either part may be left out; an empty claim grants nothing.
        let h = holder(json!({"exp": 1, "pubsub": {"topics": ["bread", "bread"]}}));
        assert_eq!(
            h,
            Ok(Holder::Grant(Grant {
                segments: vec![],
                publish_topics: strings(&["bread"])
            }))
        );
        assert_eq!(
            holder(json!({"exp": 1, "pubsub": {}})),
            Ok(Holder::Grant(Grant::default()))
        );
    }

    #[test]
    fn without_pubsub_the_subject_is_the_user() {
        assert_eq!(
            holder(json!({"sub": "bob", "exp": 1})),
            Ok(Holder::User("bob".into()))
        );
        assert_eq!(holder(json!({"exp": 1})), Ok(Holder::Nobody));
        assert_eq!(holder(json!({"exp": 1, "sub": ""})), Ok(Holder::Nobody));
    }

    #[test]
    fn a_claim_of_the_wrong_shape_refuses_the_token() {
        for bad in [
            json!({"acls": {"a": ["x"]}}),
            json!({"acl": {"a": "x"}}),
            json!({"acl": {"a": [1]}}),
            json!({"topics": "bread"}),
            json!(["x"]),
            json!("all"),
        ] {
            let h = holder(json!({"exp": 1, "pubsub": bad}));
            assert!(matches!(h, Err(Refusal::PubsubClaim(_))), "{bad}: {h:?}");
        }
    }
}
