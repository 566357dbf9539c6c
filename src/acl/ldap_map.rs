//! `clients.ldap.acl` and `clients.ldap.publish_topics` once validated: group
//! DN → grant, looked up with the group DNs an LDAP search found. DNs
//! compare case-insensitively, with whitespace around `,` and `=` ignored.

use std::collections::HashMap;

use super::Grant;

/// `clients.ldap.acl` and `clients.ldap.publish_topics`, by normalised group DN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapAclMap {
    groups: HashMap<String, Grant>,
}

impl LdapAclMap {
    /// The union of the grants of every configured group among `group_dns`
    /// (the DNs an LDAP lookup found). DNs compare case-insensitively, with
    /// whitespace around `,` and `=` ignored.
    pub fn grant_for(&self, group_dns: &[String]) -> Grant {
        let mut grant = Grant::default();
        for dn in group_dns {
            if let Some(g) = self.groups.get(&normalize_dn(dn)) {
                grant.merge(g);
            }
        }
        grant
    }

    /// Adds `grant` to `dn`'s (merged with what that group already has,
    /// under any spelling of the DN).
    pub fn add(&mut self, dn: &str, grant: &Grant) {
        self.groups
            .entry(normalize_dn(dn))
            .or_default()
            .merge(grant);
    }

    /// Number of configured groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// No configured group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Lower-case, whitespace around RDN separators and `=` removed, inner runs of
/// whitespace collapsed to one space.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|part| part.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spellings_of_a_dn_merge() {
        let mut map = LdapAclMap::default();
        let seg = |t: &[&str]| Grant {
            segments: vec![strings(t)],
            publish_topics: vec![],
        };
        map.add("cn=ops,dc=example,dc=org", &seg(&["infra"]));
        map.add("CN=Ops , DC=Example,DC=org", &seg(&["db"]));
        assert_eq!(map.len(), 1);
        let g = map.grant_for(&strings(&["cn=OPS,dc=example,dc=org"]));
        assert_eq!(g.segments, vec![strings(&["infra"]), strings(&["db"])]);
        assert_eq!(map.grant_for(&[]), Grant::default());
    }

    #[test]
    fn dn_normalisation() {
        assert_eq!(
            normalize_dn(" CN = Admins ,  OU=Groups,dc=Example , dc=ORG "),
            "cn=admins,ou=groups,dc=example,dc=org"
        );
        assert_eq!(normalize_dn("cn=Big   Team,dc=x"), "cn=big team,dc=x");
        assert_ne!(normalize_dn("cn=a,dc=x"), normalize_dn("cn=b,dc=x"));
        assert_eq!(normalize_dn(""), "");
    }
}
