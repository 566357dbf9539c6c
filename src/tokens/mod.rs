//! Signed tokens (JWT) for browsers and services: `clients.tokens`. A
//! token stands in for Basic credentials: its `pubsub` claim grants what
//! an ACL entry grants, in the ACL file's own shape, or, without one, its
//! `sub` names a user of the ACL file (or LDAP) whose grants apply.
//!
//! The hub asks [`Tokens::check`] from its one credential check
//! (`hub/auth.rs`), so every transport that goes through that check gets
//! tokens: a subscription, a publish, a WebSocket handshake.
//!
//! Layout: `verifier.rs` loads the key and verifies a token (claims,
//! `exp`/`nbf` with the leeway, issuer, audience); `ring_provider.rs` does
//! its signature checks with `ring`; `carrier.rs` finds the token in a
//! request (`Authorization: Bearer`, the cookie, the query parameter);
//! `claims.rs` turns the `pubsub` claim into a grant. Without the
//! `tokens` feature, `off.rs` stands in: `Tokens` is a type with no values,
//! so the hub's `Option<Tokens>` is always `None` and needs no cfg.
//!
//! Invariants: a token is never logged, nor any URL that carries one (a
//! log shows `RequestHead::target_for_log`, which leaves out query
//! values); a token longer than [`MAX_TOKEN_LEN`] is refused before it is
//! decoded.

#[cfg(feature = "tokens")]
mod carrier;
#[cfg(feature = "tokens")]
mod claims;
#[cfg(not(feature = "tokens"))]
mod off;
#[cfg(feature = "tokens")]
mod ring_provider;
#[cfg(all(test, feature = "tokens"))]
pub(crate) mod test_keys;
#[cfg(feature = "tokens")]
mod verifier;

use std::fmt;

#[cfg(not(feature = "tokens"))]
pub use off::Tokens;
#[cfg(feature = "tokens")]
pub use verifier::Tokens;

use crate::acl::Grant;

/// Whether this build accepts tokens (the hub's token tests skip
/// without).
pub const ENABLED: bool = cfg!(feature = "tokens");

/// An HS256 token for `claims` signed with `secret`, for the hub's tests
/// (empty in a build without tokens, where they skip).
#[cfg(test)]
pub(crate) fn hs256_for_tests(secret: &str, claims: &serde_json::Value) -> String {
    #[cfg(feature = "tokens")]
    return test_keys::SigningKey::hmac("HS256", secret.as_bytes()).token(claims);
    #[cfg(not(feature = "tokens"))]
    {
        let _ = (secret, claims);
        String::new()
    }
}

/// The longest token accepted (bytes): far above any real token (an RS512
/// signature is 683 characters), far below the request head's own bound.
pub const MAX_TOKEN_LEN: usize = 8192;

/// What a request's token makes it.
#[derive(Debug)]
pub enum TokenCheck {
    /// No token in the request (or Basic credentials instead).
    Absent,
    /// A token that does not verify: the request gets 401.
    Refused(Refusal),
    /// A valid token.
    Valid(Bearer),
}

/// The holder of a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct Bearer {
    pub holder: Holder,
    /// Its `exp` (epoch seconds): a stream it opens ends then, and a
    /// subscription whose token is past it (though within the leeway, which
    /// a publish still gets) is refused rather than opened only to end.
    pub expires: f64,
}

/// Whose grants a valid token carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Holder {
    /// The `pubsub` claim's own grant.
    Grant(Grant),
    /// No `pubsub` claim: the user `sub` names.
    User(String),
    /// Neither: a valid token that grants nothing private.
    Nobody,
}

/// Why a token was refused; said in the 401's body and the debug log
/// (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooLong,
    Malformed,
    /// Its `alg` is not in `algorithms` (`none` never is).
    Algorithm,
    /// No configured key matches its `kid` and `alg`.
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    /// A required claim is missing (`exp`; `iss`/`aud` when configured).
    Missing(&'static str),
    Issuer,
    Audience,
    /// The `pubsub` claim is not in the ACL file's shape.
    PubsubClaim(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLong => write!(f, "longer than {MAX_TOKEN_LEN} bytes"),
            Refusal::Malformed => f.write_str("not a well-formed JWT"),
            Refusal::Algorithm => f.write_str("its algorithm is not accepted"),
            Refusal::UnknownKey => f.write_str("no key for its kid and algorithm"),
            Refusal::Signature => f.write_str("bad signature"),
            Refusal::Expired => f.write_str("expired"),
            Refusal::NotYetValid => f.write_str("not valid yet (nbf)"),
            Refusal::Missing(claim) => write!(f, "no {claim} claim"),
            Refusal::Issuer => f.write_str("wrong issuer"),
            Refusal::Audience => f.write_str("wrong audience"),
            Refusal::PubsubClaim(why) => write!(f, "pubsub claim: {why}"),
        }
    }
}
