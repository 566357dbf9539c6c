//! The `clients.tokens` section → [`TokensConfig`]: which signed tokens
//! (JWT) are accepted, and where a request may carry one. Pure: the key
//! file is read by the verifier (`tokens/`), at start-up, by
//! `--check-config` and on SIGHUP.
//!
//! ```yaml
//! clients:
//!   tokens:
//!     key: /etc/pubsubd/token.pub   # PEM public key (RS*/PS*/ES*/EdDSA) or a JWKS file
//!     # secret: ...                 # or a shared secret for HS256 (at least 32 bytes)
//!     algorithms: [ES256]
//!     issuer: ~                     # checked when set
//!     audience: ~                   # checked when set (a string or a list)
//!     cookie: pubsub_token          # also read from this cookie
//!     query: access_token           # and from this query parameter
//!     leeway: 30s                   # pubsubd's own: clock skew allowed on exp/nbf
//! ```
//!
//! Invariants:
//! - Exactly one of `key` and `secret`; a secret verifies only HS*
//!   algorithms and a key only asymmetric ones, so the configuration alone
//!   rules out algorithm confusion; `none` is never an algorithm.
//! - A secret is at least as long as its hash (32, 48, 64 bytes for HS256,
//!   HS384, HS512; RFC 7518 3.2) and never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::ConfigError;
use crate::yaml::{duration, entries, err, kind, nonempty_string, present, section, string};

const TOKENS: &str = "clients.tokens";

/// Every algorithm name accepted in `algorithms`, as JOSE spells it.
pub const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The most clock skew `leeway` may allow.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `clients.tokens`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensConfig {
    pub key: TokenKey,
    /// Canonical names from [`ALGORITHMS`], no duplicates, never empty.
    pub algorithms: Vec<String>,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// A token's `aud` must name one of these, when not empty.
    pub audience: Vec<String>,
    /// The cookie a token may come in, besides `Authorization: Bearer`.
    pub cookie: Option<String>,
    /// The query parameter a token may come in.
    pub query: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    pub leeway: Duration,
}

/// What verifies a token's signature.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// A PEM public key or a JWKS file.
    File(PathBuf),
    /// A shared HMAC secret (its UTF-8 bytes).
    Secret(String),
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKey::File(path) => f.debug_tuple("File").field(path).finish(),
            TokenKey::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

/// Validates `clients.tokens`; `~` means tokens are not accepted.
pub fn parse(v: &Value, warnings: &mut Vec<String>) -> Result<Option<TokensConfig>, ConfigError> {
    let Some(map) = section(v, TOKENS)? else {
        return Ok(None);
    };
    let at = |key: &str| format!("{TOKENS}.{key}");
    for (name, path, _) in entries(map, TOKENS)? {
        const KNOWN: [&str; 8] = [
            "key",
            "secret",
            "algorithms",
            "issuer",
            "audience",
            "cookie",
            "query",
            "leeway",
        ];
        if !KNOWN.contains(&name.as_str()) {
            warnings.push(format!("unknown configuration key '{path}' ignored"));
        }
    }
    let key = match (present(map, "key"), present(map, "secret")) {
        (Some(_), Some(_)) => return err(TOKENS, "set key or secret, not both"),
        (None, None) => {
            return err(
                TOKENS,
                "needs key (a PEM public key or JWKS file) or secret",
            )
        }
        (Some(v), None) => TokenKey::File(PathBuf::from(nonempty_string(v, &at("key"))?)),
        (None, Some(v)) => match v {
            Value::String(s) => TokenKey::Secret(s.clone()),
            other => {
                return err(
                    &at("secret"),
                    format!("must be a string, found {}", kind(other)),
                )
            }
        },
    };
    let algorithms = match present(map, "algorithms") {
        Some(v) => parse_algorithms(v, &at("algorithms"))?,
        None => match key {
            TokenKey::Secret(_) => vec!["HS256".to_owned()],
            TokenKey::File(_) => {
                return err(
                    &at("algorithms"),
                    "is required with key (for example [ES256], [RS256] or [EdDSA])",
                )
            }
        },
    };
    match &key {
        TokenKey::Secret(secret) => {
            for alg in &algorithms {
                let Some(min) = hmac_min_len(alg) else {
                    return err(
                        &at("algorithms"),
                        format!("{alg} needs a public key (key), not a shared secret"),
                    );
                };
                if secret.len() < min {
                    return err(
                        &at("secret"),
                        format!(
                            "must be at least {min} bytes for {alg}, found {}",
                            secret.len()
                        ),
                    );
                }
            }
        }
        TokenKey::File(_) => {
            if let Some(alg) = algorithms.iter().find(|a| hmac_min_len(a).is_some()) {
                return err(
                    &at("algorithms"),
                    format!("{alg} needs a shared secret (secret), not a public key"),
                );
            }
        }
    }
    let optional = |key: &str| -> Result<Option<String>, ConfigError> {
        present(map, key)
            .map(|v| nonempty_string(v, &at(key)))
            .transpose()
    };
    let issuer = optional("issuer")?;
    let audience = match present(map, "audience") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| nonempty_string(item, &at("audience")))
            .collect::<Result<_, _>>()?,
        Some(v) => vec![nonempty_string(v, &at("audience"))?],
    };
    let cookie = optional("cookie")?;
    if let Some(name) = &cookie {
        if !name.bytes().all(is_token_char) {
            return err(&at("cookie"), format!("{name:?} is not a cookie name"));
        }
    }
    let query = optional("query")?;
    if let Some(name) = &query {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return err(
                &at("query"),
                format!("{name:?}: a parameter name of letters, digits and -._~"),
            );
        }
    }
    let leeway = match present(map, "leeway") {
        None => Duration::from_secs(30),
        Some(v) => duration(v, &at("leeway"))?,
    };
    if leeway > MAX_LEEWAY {
        return err(&at("leeway"), "must be at most 5 minutes");
    }
    Ok(Some(TokensConfig {
        key,
        algorithms,
        issuer,
        audience,
        cookie,
        query,
        leeway,
    }))
}

fn parse_algorithms(v: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    let items = match v {
        Value::Sequence(items) => items.clone(),
        other => vec![other.clone()],
    };
    let mut algorithms: Vec<String> = Vec::new();
    for item in &items {
        let name = string(item, path)?;
        if name.trim().eq_ignore_ascii_case("none") {
            return err(path, "none is never accepted: a token must be signed");
        }
        let Some(canonical) = ALGORITHMS
            .iter()
            .find(|a| a.eq_ignore_ascii_case(name.trim()))
        else {
            return err(
                path,
                format!(
                    "unknown algorithm {name:?} (one of {})",
                    ALGORITHMS.join(", ")
                ),
            );
        };
        if !algorithms.iter().any(|a| a == canonical) {
            algorithms.push((*canonical).to_owned());
        }
    }
    if algorithms.is_empty() {
        return err(path, "must name at least one algorithm");
    }
    Ok(algorithms)
}

/// The shortest secret an HMAC algorithm accepts; `None`: not HMAC.
fn hmac_min_len(alg: &str) -> Option<usize> {
    match alg {
        "HS256" => Some(32),
        "HS384" => Some(48),
        "HS512" => Some(64),
        _ => None,
    }
}

/// RFC 6265's cookie-name: an RFC 7230 token.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Option<TokensConfig>, ConfigError> {
        let v: Value = serde_yaml::from_str(text).expect("yaml");
        parse(&v, &mut Vec::new())
    }

    fn error(text: &str) -> String {
        parse_text(text).expect_err(text).to_string()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_issue_example_parses() {
        let c = parse_text(
            "key: /etc/pubsubd/token.pub\nalgorithms: [ES256]\nissuer: ~\naudience: ~\n\
             cookie: pubsub_token\nquery: access_token\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.key, TokenKey::File("/etc/pubsubd/token.pub".into()));
        assert_eq!(c.algorithms, ["ES256"]);
        assert_eq!((c.issuer, c.audience), (None, vec![]));
        assert_eq!(c.cookie.as_deref(), Some("pubsub_token"));
        assert_eq!(c.query.as_deref(), Some("access_token"));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(parse_text("~").unwrap(), None);
    }

    #[test]
    fn a_secret_defaults_to_hs256_and_is_never_shown() {
        let c = parse_text(&format!("secret: {SECRET}\naudience: [a, b]\nleeway: 2s\n"))
            .unwrap()
            .unwrap();
        assert_eq!(c.algorithms, ["HS256"]);
        assert_eq!(c.audience, ["a", "b"]);
        assert_eq!(c.leeway, Duration::from_secs(2));
        assert!(!format!("{c:?}").contains(SECRET), "{c:?}");
    }

    #[test]
    fn algorithm_names_are_canonical_and_checked() {
        let c = parse_text("key: k.pem\nalgorithms: [eddsa, rs256, RS256]\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.algorithms, ["EdDSA", "RS256"]);
        assert!(error("key: k.pem\nalgorithms: [none]\n").contains("never accepted"));
        assert!(error("key: k.pem\nalgorithms: [ES512]\n").contains("unknown algorithm"));
        assert!(error("key: k.pem\nalgorithms: []\n").contains("at least one"));
        assert!(error("key: k.pem\n").contains("is required with key"));
    }

    #[test]
    fn a_secret_and_a_key_each_verify_their_own_family_only() {
        let e = error("key: k.pem\nalgorithms: [ES256, HS256]\n");
        assert!(
            e.starts_with("clients.tokens.algorithms: HS256 needs a shared secret"),
            "{e}"
        );
        let e = error(&format!("secret: {SECRET}\nalgorithms: [RS256]\n"));
        assert!(e.contains("RS256 needs a public key"), "{e}");
        let e = error(&format!("secret: {SECRET}\nkey: k.pem\n"));
        assert!(e.contains("not both"), "{e}");
        assert!(error("issuer: x\n").contains("needs key"));
    }

    #[test]
    fn short_secrets_are_refused() {
        let e = error("secret: short\n");
        assert_eq!(
            e,
            "clients.tokens.secret: must be at least 32 bytes for HS256, found 5"
        );
        let e = error(&format!("secret: {SECRET}\nalgorithms: [HS512]\n"));
        assert!(e.contains("at least 64 bytes for HS512"), "{e}");
        assert!(error("secret: 12345\n").contains("must be a string"));
    }

    #[test]
    fn names_and_leeway_are_checked() {
        let base = format!("secret: {SECRET}\n");
        assert!(error(&format!("{base}cookie: 'a b'\n")).contains("not a cookie name"));
        assert!(error(&format!("{base}query: 'a&b'\n")).contains("parameter name"));
        assert!(error(&format!("{base}leeway: 10m\n")).contains("at most 5 minutes"));
        assert!(error(&format!("{base}issuer: ''\n")).contains("must not be empty"));
        let mut warnings = Vec::new();
        let v: Value = serde_yaml::from_str(&format!("{base}colour: blue\n")).unwrap();
        parse(&v, &mut warnings).unwrap();
        assert_eq!(
            warnings,
            ["unknown configuration key 'clients.tokens.colour' ignored"]
        );
    }
}
