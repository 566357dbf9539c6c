//! The credential cache: successful LDAP lookups, remembered for a short time.
//!
//! A reconnect storm (every subscriber of a restarted proxy coming back at once
//! with the same credentials) must not become a bind storm against the
//! directory. So a successful `(user, password)` → groups answer is kept for
//! `ttl`, shared by all workers.
//!
//! Invariants:
//! - The plain password is never stored: the key is the user name plus a keyed
//!   64-bit SipHash of the password, with a random key drawn per cache (so per
//!   process start). An attacker who never sees the digests cannot aim for a
//!   collision; guessing one online is 2^-64 per try.
//! - A vouched-for lookup (no password: the caller verified the user) is
//!   keyed apart from every password's, so neither can answer for the other.
//! - Only successes are cached: a wrong password always goes to the server, so
//!   a password change or a fixed typo takes effect at once, and the cache
//!   cannot be filled without valid credentials.
//! - At most `capacity` entries: expired entries are purged first, then the
//!   entry closest to expiry is evicted.
//! - Time is passed in (`now`), so tests do not sleep.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::proof::Proof;

/// Cached group lists keyed by (user, keyed password digest).
#[derive(Debug)]
pub struct CredentialCache {
    ttl: Duration,
    capacity: usize,
    hasher: RandomState,
    /// Keyed by user and password digest; `None`: a vouched-for lookup
    /// (no password), which no password's entry can stand in for.
    entries: HashMap<(String, Option<u64>), Entry>,
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    groups: Vec<String>,
}

impl CredentialCache {
    /// A cache keeping answers for `ttl` (zero disables it), with at most
    /// `capacity` entries (zero disables it too).
    pub fn new(ttl: Duration, capacity: usize) -> CredentialCache {
        CredentialCache {
            ttl,
            capacity,
            hasher: RandomState::new(),
            entries: HashMap::new(),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn key(&self, user: &str, proof: &Proof) -> (String, Option<u64>) {
        let digest = match proof {
            Proof::Password(password) => Some(self.hasher.hash_one(password.as_bytes())),
            Proof::Vouched => None,
        };
        (user.to_owned(), digest)
    }

    /// The groups remembered for these credentials, if still fresh.
    pub fn get(&mut self, user: &str, proof: &Proof, now: Instant) -> Option<Vec<String>> {
        if !self.enabled() {
            return None;
        }
        let key = self.key(user, proof);
        match self.entries.get(&key) {
            Some(entry) if entry.expires > now => Some(entry.groups.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remember a successful answer until `now + ttl`.
    pub fn put(&mut self, user: &str, proof: &Proof, groups: &[String], now: Instant) {
        if !self.enabled() {
            return;
        }
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let key = self.key(user, proof);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(
            key,
            Entry {
                expires,
                groups: groups.to_vec(),
            },
        );
    }

    /// Number of entries held (fresh or not yet purged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(password: &str) -> Proof {
        Proof::Password(password.to_owned())
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hit_until_ttl_then_miss() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(Duration::from_secs(60), 10);
        assert_eq!(c.get("alice", &pw("pw"), t0), None);
        c.put("alice", &pw("pw"), &groups(&["cn=a"]), t0);
        assert_eq!(c.get("alice", &pw("pw"), t0), Some(groups(&["cn=a"])));
        assert_eq!(
            c.get("alice", &pw("pw"), t0 + Duration::from_secs(59)),
            Some(groups(&["cn=a"]))
        );
        assert_eq!(
            c.get("alice", &pw("pw"), t0 + Duration::from_secs(60)),
            None
        );
        assert!(c.is_empty(), "an expired entry is removed when seen");
    }

    #[test]
    fn keyed_on_user_and_password() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(Duration::from_secs(60), 10);
        c.put("alice", &pw("pw"), &groups(&["cn=a"]), t0);
        assert_eq!(c.get("alice", &pw("other"), t0), None);
        assert_eq!(c.get("bob", &pw("pw"), t0), None);
        assert_eq!(c.get("Alice", &pw("pw"), t0), None);
    }

    #[test]
    fn a_vouched_lookup_is_its_own_entry() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(Duration::from_secs(60), 10);
        c.put("alice", &Proof::Vouched, &groups(&["cn=a"]), t0);
        assert_eq!(c.get("alice", &pw(""), t0), None);
        assert_eq!(c.get("alice", &Proof::Vouched, t0), Some(groups(&["cn=a"])));
        c.put("bob", &pw("pw"), &groups(&["cn=b"]), t0);
        assert_eq!(c.get("bob", &Proof::Vouched, t0), None);
    }

    #[test]
    fn never_holds_the_plain_password() {
        let mut c = CredentialCache::new(Duration::from_secs(60), 10);
        c.put("alice", &pw("very-secret-password"), &[], Instant::now());
        let dump = format!("{c:?}");
        assert!(!dump.contains("very-secret-password"), "{dump}");
    }

    #[test]
    fn zero_ttl_or_capacity_disables() {
        let t0 = Instant::now();
        for mut c in [
            CredentialCache::new(Duration::ZERO, 10),
            CredentialCache::new(Duration::from_secs(1), 0),
        ] {
            c.put("alice", &pw("pw"), &[], t0);
            assert_eq!(c.get("alice", &pw("pw"), t0), None);
            assert!(c.is_empty());
        }
    }

    #[test]
    fn bounded_purges_expired_then_evicts_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = CredentialCache::new(s(10), 3);
        c.put("a", &pw("pw"), &[], t0);
        c.put("b", &pw("pw"), &[], t0 + s(1));
        c.put("c", &pw("pw"), &[], t0 + s(2));
        // Full, nothing expired: the oldest ("a") goes.
        c.put("d", &pw("pw"), &[], t0 + s(3));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("a", &pw("pw"), t0 + s(3)), None);
        assert!(c.get("b", &pw("pw"), t0 + s(3)).is_some());
        // Full, "b" and "c" expired by t0+12.5: both purged, nothing else lost.
        c.put("e", &pw("pw"), &[], t0 + s(12) + Duration::from_millis(500));
        assert_eq!(c.len(), 2);
        assert!(c.get("d", &pw("pw"), t0 + s(12)).is_some());
        assert!(c.get("e", &pw("pw"), t0 + s(12)).is_some());
        // Re-putting an existing key does not evict anything.
        c.put("e", &pw("pw"), &["x".into()], t0 + s(12));
        assert_eq!(c.len(), 2);
    }
}
