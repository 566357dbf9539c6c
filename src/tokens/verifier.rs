//! The token verifier: `clients.tokens`'s key loaded (a PEM public key, a
//! JWKS file, or the shared secret) and each token checked against it.
//!
//! Order of the checks, cheapest first, nothing decoded before the length
//! is known to be bounded: length ≤ [`MAX_TOKEN_LEN`]; the header parses
//! and its `alg` is one of `algorithms` (so `none`, which `jsonwebtoken`
//! cannot even parse, and an HS* header against a public key are refused
//! before any cryptography); a key of that algorithm's family (and `kid`,
//! for a JWKS) exists; the signature (`ring_provider.rs`); the claims:
//! `exp` required, `iss`/`aud` when configured; then `exp` and `nbf`
//! against the hub's clock with the leeway.
//!
//! Invariants: a key file holds public keys only (a private key or a JWKS
//! `oct` key is refused at load, so a public key never becomes an HMAC
//! secret); the time checks use the time passed in (the hub's clock).

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::claims::Claims;
use super::{carrier, ring_provider, Bearer, Refusal, TokenCheck, MAX_TOKEN_LEN};
use crate::config::{ConfigError, TokenKey, TokensConfig};
use crate::http::RequestHead;

/// The largest key file read (a JWKS of a few dozen keys is ~50 KB).
const MAX_KEY_FILE: u64 = 1 << 20;
/// Most keys taken from a JWKS.
const MAX_KEYS: usize = 64;

/// `clients.tokens`, ready to verify.
pub struct Tokens {
    keys: Vec<Key>,
    /// One per accepted algorithm (`jsonwebtoken` wants every algorithm
    /// of a `Validation` to be of the key's family).
    validations: Vec<(Algorithm, Validation)>,
    leeway: f64,
    cookie: Option<String>,
    query: Option<String>,
    /// What `--check-config` and the start-up log say.
    summary: String,
}

struct Key {
    kid: Option<String>,
    /// A JWK's own `alg`: the only algorithm it verifies.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl Tokens {
    /// Loads the key `config` names; `None` when tokens are not configured.
    pub fn load(config: Option<&TokensConfig>) -> Result<Option<Tokens>, ConfigError> {
        let Some(config) = config else {
            return Ok(None);
        };
        ring_provider::install();
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| {
                    ConfigError::new("clients.tokens.algorithms", format!("unknown {name}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let (keys, source) = match &config.key {
            TokenKey::Secret(secret) => {
                let key = DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| ConfigError::new("clients.tokens.secret", e.to_string()))?;
                let key = Key {
                    kid: None,
                    alg: None,
                    key,
                };
                (vec![key], "a shared secret".to_owned())
            }
            TokenKey::File(path) => {
                let keys = load_key_file(path)?;
                let n = keys.len();
                let what = if n == 1 { "key" } else { "keys" };
                (keys, format!("{n} {what} from {}", path.display()))
            }
        };
        for alg in &algorithms {
            if !keys.iter().any(|k| k.verifies(*alg)) {
                return Err(ConfigError::new(
                    "clients.tokens.algorithms",
                    format!("no key for {alg:?} ({source})"),
                ));
            }
        }
        let validations = algorithms
            .iter()
            .map(|alg| (*alg, validation(*alg, config)))
            .collect();
        let mut summary = format!("tokens: {} with {source}", config.algorithms.join(", "));
        if let Some(issuer) = &config.issuer {
            summary.push_str(&format!(", issuer {issuer:?}"));
        }
        if !config.audience.is_empty() {
            summary.push_str(&format!(", audience {:?}", config.audience));
        }
        if let Some(cookie) = &config.cookie {
            summary.push_str(&format!(", cookie {cookie}"));
        }
        if let Some(query) = &config.query {
            summary.push_str(&format!(", query parameter {query}"));
        }
        Ok(Some(Tokens {
            keys,
            validations,
            leeway: config.leeway.as_secs_f64(),
            cookie: config.cookie.clone(),
            query: config.query.clone(),
            summary,
        }))
    }

    /// What `--check-config` says of `clients.tokens`: the key is loaded.
    pub fn check_config(config: Option<&TokensConfig>) -> Result<Option<String>, ConfigError> {
        Ok(Tokens::load(config)?.map(|t| t.summary))
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The token `head` carries (its cookie only if `cookie_ok`), checked
    /// at `now()` (epoch seconds; not asked for a request without a token).
    pub fn check(
        &self,
        head: &RequestHead,
        cookie_ok: bool,
        now: impl FnOnce() -> f64,
    ) -> TokenCheck {
        let cookie = self.cookie.as_deref().filter(|_| cookie_ok);
        match carrier::find(head, cookie, self.query.as_deref()) {
            None => TokenCheck::Absent,
            Some(token) => match self.verify(&token, now()) {
                Ok(bearer) => TokenCheck::Valid(bearer),
                Err(why) => TokenCheck::Refused(why),
            },
        }
    }

    /// Verifies one token at `now` (epoch seconds).
    pub fn verify(&self, token: &str, now: f64) -> Result<Bearer, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Refusal::Algorithm);
        };
        let key = self.key_for(header.alg, header.kid.as_deref())?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        let exp = claims.exp.ok_or(Refusal::Missing("exp"))?;
        if !exp.is_finite() || now >= exp + self.leeway {
            return Err(Refusal::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| !nbf.is_finite() || now < nbf - self.leeway)
        {
            return Err(Refusal::NotYetValid);
        }
        Ok(Bearer {
            holder: claims.holder()?,
            expires: exp,
        })
    }

    /// The key that verifies `alg` (and `kid`, when the token names one
    /// and a key carries it): exactly one must fit.
    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<&Key, Refusal> {
        let mut fitting = self.keys.iter().filter(|k| k.verifies(alg));
        if let Some(kid) = kid {
            if let Some(key) = self
                .keys
                .iter()
                .find(|k| k.verifies(alg) && k.kid.as_deref() == Some(kid))
            {
                return Ok(key);
            }
        }
        match (fitting.next(), fitting.next()) {
            (Some(key), None) if key.kid.is_none() || kid.is_none() => Ok(key),
            _ => Err(Refusal::UnknownKey),
        }
    }
}

impl Key {
    fn verifies(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|own| own == alg)
    }
}

/// The claim checks `jsonwebtoken` does for `alg`: signature, `exp`
/// present, `iss` and `aud` when configured. Time is checked by the
/// caller against the hub's clock.
fn validation(alg: Algorithm, config: &TokensConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    if config.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
        ErrorKind::InvalidKeyFormat => Refusal::UnknownKey,
        ErrorKind::MissingRequiredClaim(claim) => Refusal::Missing(match claim.as_str() {
            "iss" => "iss",
            "aud" => "aud",
            _ => "exp",
        }),
        _ => Refusal::Malformed,
    }
}

/// A PEM public key (SPKI `PUBLIC KEY`, PKCS#1 `RSA PUBLIC KEY`) or a
/// JWKS (`{"keys": [...]}`) of public keys.
fn load_key_file(path: &Path) -> Result<Vec<Key>, ConfigError> {
    let at = "clients.tokens.key";
    let fail = |why: String| ConfigError::new(at, format!("{}: {why}", path.display()));
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .len();
    if size > MAX_KEY_FILE {
        return Err(fail(format!("larger than {MAX_KEY_FILE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.trim_start().starts_with('{') {
        return load_jwks(&text).map_err(fail);
    }
    if text.contains("PRIVATE KEY") {
        return Err(fail(
            "holds a private key: give the public key (openssl pkey -in KEY -pubout)".into(),
        ));
    }
    let pem = text.as_bytes();
    let key = DecodingKey::from_ec_pem(pem)
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .or_else(|_| DecodingKey::from_rsa_pem(pem))
        .map_err(|_| fail("not a PEM public key (RSA, EC or Ed25519) nor a JWKS file".into()))?;
    check_point(&key).map_err(fail)?;
    Ok(vec![Key {
        kid: None,
        alg: None,
        key,
    }])
}

/// An EC key must be an uncompressed P-256 or P-384 point, an Ed25519 key
/// 32 bytes: anything else would fail every signature later, silently.
fn check_point(key: &DecodingKey) -> Result<(), String> {
    let Ok(bytes) = key.try_get_as_bytes() else {
        return Ok(());
    };
    match key.family() {
        AlgorithmFamily::Ec if ![65, 97].contains(&bytes.len()) || bytes[0] != 4 => {
            Err("an EC key must be on P-256 or P-384".into())
        }
        AlgorithmFamily::Ed if bytes.len() != 32 => Err("only Ed25519 keys are supported".into()),
        _ => Ok(()),
    }
}

fn load_jwks(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(format!(
                "key {i} is a shared secret (kty oct): a key file holds public keys only"
            ));
        }
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(jwk_algorithm(a).ok_or(format!("key {i}: alg {a:?} cannot sign"))?),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
        check_point(&key).map_err(|e| format!("key {i}: {e}"))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
        if keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
    }
    if keys.is_empty() {
        return Err("no signature key in the JWKS".into());
    }
    Ok(keys)
}

fn jwk_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_keys::{b64, SigningKey};
    use super::super::Holder;
    use super::*;
    use crate::acl::Grant;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    const NOW: f64 = 1_800_000_000.0;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(yaml: &str) -> TokensConfig {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
        crate::config::tokens::parse(&v, &mut Vec::new())
            .expect("valid")
            .expect("set")
    }

    /// A verifier for `key` (its PEM written to a temp file) with `extra`
    /// configuration lines.
    fn verifier_for(key: &SigningKey, extra: &str) -> Tokens {
        let yaml = if key.public_pem.is_empty() {
            format!("secret: {SECRET}\nalgorithms: [{}]\n{extra}", key.alg)
        } else {
            let path = temp_file(&format!("{}.pem", key.alg), &key.public_pem);
            format!(
                "key: {}\nalgorithms: [{}]\n{extra}",
                path.display(),
                key.alg
            )
        };
        Tokens::load(Some(&config(&yaml)))
            .expect("loads")
            .expect("set")
    }

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pubsubd-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write key");
        path
    }

    fn claims(exp: f64) -> Value {
        json!({"sub": "alice", "exp": exp, "pubsub": {"acl": {"s": ["internal"]}}})
    }

    fn granted() -> Holder {
        Holder::Grant(Grant {
            segments: vec![vec!["internal".into()]],
            publish_topics: vec![],
        })
    }

    #[test]
    fn every_algorithm_family_is_accepted() {
        let keys = [
            SigningKey::hmac("HS256", SECRET.as_bytes()),
            SigningKey::generate("RS256"),
            SigningKey::generate("PS256"),
            SigningKey::generate("ES256"),
            SigningKey::generate("ES384"),
            SigningKey::generate("EdDSA"),
        ];
        for key in &keys {
            let tokens = verifier_for(key, "");
            let bearer = tokens.verify(&key.token(&claims(NOW + 60.0)), NOW);
            assert_eq!(
                bearer,
                Ok(Bearer {
                    holder: granted(),
                    expires: NOW + 60.0
                }),
                "{}",
                key.alg
            );
        }
    }

    #[test]
    fn time_is_checked_with_the_leeway() {
        let key = SigningKey::hmac("HS256", SECRET.as_bytes());
        let tokens = verifier_for(&key, "");
        let at = |exp: f64, nbf: Option<f64>| {
            let mut c = claims(exp);
            if let Some(nbf) = nbf {
                c["nbf"] = json!(nbf);
            }
            tokens.verify(&key.token(&c), NOW).map(|_| ())
        };
        assert_eq!(at(NOW - 29.0, None), Ok(()), "within the 30 s leeway");
        assert_eq!(at(NOW - 30.0, None), Err(Refusal::Expired));
        assert_eq!(at(NOW - 3600.0, None), Err(Refusal::Expired));
        assert_eq!(at(NOW + 60.0, Some(NOW + 29.0)), Ok(()));
        assert_eq!(at(NOW + 60.0, Some(NOW + 31.0)), Err(Refusal::NotYetValid));
        let no_exp = key.token(&json!({"sub": "alice"}));
        assert_eq!(tokens.verify(&no_exp, NOW), Err(Refusal::Missing("exp")));
        let text_exp = key.token(&json!({"exp": "tomorrow"}));
        assert_eq!(tokens.verify(&text_exp, NOW), Err(Refusal::Malformed));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_set() {
        let key = SigningKey::generate("ES256");
        let tokens = verifier_for(&key, "issuer: https://id.example\naudience: pubsub\n");
        let with = |iss: Option<&str>, aud: Option<Value>| {
            let mut c = claims(NOW + 60.0);
            if let Some(iss) = iss {
                c["iss"] = json!(iss);
            }
            if let Some(aud) = aud {
                c["aud"] = aud;
            }
            tokens.verify(&key.token(&c), NOW).map(|_| ())
        };
        let iss = Some("https://id.example");
        assert_eq!(with(iss, Some(json!("pubsub"))), Ok(()));
        assert_eq!(with(iss, Some(json!(["other", "pubsub"]))), Ok(()));
        assert_eq!(
            with(Some("https://evil"), Some(json!("pubsub"))),
            Err(Refusal::Issuer)
        );
        assert_eq!(with(iss, Some(json!("other"))), Err(Refusal::Audience));
        assert_eq!(
            with(None, Some(json!("pubsub"))),
            Err(Refusal::Missing("iss"))
        );
        assert_eq!(with(iss, None), Err(Refusal::Missing("aud")));
        // Unset: not checked, whatever the token says.
        let open = verifier_for(&key, "");
        let mut c = claims(NOW + 60.0);
        c["iss"] = json!("anyone");
        c["aud"] = json!("anything");
        assert!(open.verify(&key.token(&c), NOW).is_ok());
    }

    #[test]
    fn forged_and_mangled_tokens_are_refused() {
        let key = SigningKey::generate("RS256");
        let tokens = verifier_for(&key, "");
        let good = key.token(&claims(NOW + 60.0));
        assert!(tokens.verify(&good, NOW).is_ok());
        // alg none, with and without a signature.
        let (head, body) = (
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims(NOW + 60.0).to_string().as_bytes()),
        );
        for none in [format!("{head}.{body}."), format!("{head}.{body}")] {
            assert_eq!(tokens.verify(&none, NOW), Err(Refusal::Malformed));
        }
        // Algorithm confusion: HS256 "signed" with the public key's PEM.
        let confused = SigningKey::hmac("HS256", key.public_pem.as_bytes());
        let forged = confused.token(&claims(NOW + 60.0));
        assert_eq!(tokens.verify(&forged, NOW), Err(Refusal::Algorithm));
        // A truncated signature (as text, and as bytes well encoded), a
        // changed claim, another key.
        let cut = tokens.verify(&good[..good.len() - 4], NOW);
        assert!(
            matches!(cut, Err(Refusal::Signature | Refusal::Malformed)),
            "{cut:?}"
        );
        let (signed, sig) = good.rsplit_once('.').expect("three parts");
        let sig_bytes = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
        let short = format!("{signed}.{}", b64(&sig_bytes[..sig_bytes.len() - 1]));
        assert_eq!(tokens.verify(&short, NOW), Err(Refusal::Signature));
        let (h, _) = signed.split_once('.').expect("three parts");
        let mut more = claims(NOW + 60.0);
        more["pubsub"]["acl"]["s"] = json!([]);
        let changed = format!("{h}.{}.{sig}", b64(more.to_string().as_bytes()));
        assert_eq!(tokens.verify(&changed, NOW), Err(Refusal::Signature));
        let stranger = SigningKey::generate("RS256").token(&claims(NOW + 60.0));
        assert_eq!(tokens.verify(&stranger, NOW), Err(Refusal::Signature));
        // Not a JWT at all; too long.
        for junk in ["", "abc", "a.b", "a.b.c.d", "..."] {
            assert!(tokens.verify(junk, NOW).is_err(), "{junk:?}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(tokens.verify(&long, NOW), Err(Refusal::TooLong));
    }

    #[test]
    fn a_public_key_is_never_an_hmac_secret() {
        // Even asked directly, the provider refuses the family mismatch.
        ring_provider::install();
        let key = SigningKey::generate("ES256");
        let decoding = DecodingKey::from_ec_pem(key.public_pem.as_bytes()).expect("EC key");
        let confused = SigningKey::hmac("HS256", key.public_pem.as_bytes());
        let token = confused.token(&claims(NOW + 60.0));
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        assert!(jsonwebtoken::decode::<Value>(&token, &decoding, &v).is_err());
        // And a JWKS with a shared secret in it does not load.
        let jwks = json!({"keys": [{"kty": "oct", "k": b64(SECRET.as_bytes())}]});
        let path = temp_file("oct.json", &jwks.to_string());
        let yaml = format!("key: {}\nalgorithms: [ES256]\n", path.display());
        let e = Tokens::load(Some(&config(&yaml))).err().expect("refused");
        assert!(e.to_string().contains("public keys only"), "{e}");
    }

    #[test]
    fn a_jwks_picks_the_key_by_kid() {
        let (a, b) = (SigningKey::generate("EdDSA"), SigningKey::generate("EdDSA"));
        let x = |k: &SigningKey| {
            let pem = DecodingKey::from_ed_pem(k.public_pem.as_bytes()).expect("Ed key");
            b64(pem.try_get_as_bytes().expect("bytes"))
        };
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x(&a), "kid": "a", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": x(&b), "kid": "b", "alg": "EdDSA"},
        ]});
        let path = temp_file("keys.json", &jwks.to_string());
        let yaml = format!("key: {}\nalgorithms: [EdDSA]\n", path.display());
        let tokens = Tokens::load(Some(&config(&yaml)))
            .expect("loads")
            .expect("set");
        assert!(
            tokens.summary().contains("2 keys from"),
            "{}",
            tokens.summary()
        );
        let token = |k: &SigningKey, kid: Option<&str>| {
            let mut header = json!({"alg": "EdDSA"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            tokens.verify(&k.token_with_header(&header, &claims(NOW + 60.0)), NOW)
        };
        assert!(token(&a, Some("a")).is_ok());
        assert!(token(&b, Some("b")).is_ok());
        assert_eq!(token(&a, Some("b")).err(), Some(Refusal::Signature));
        assert_eq!(token(&a, None).err(), Some(Refusal::UnknownKey));
        assert_eq!(token(&a, Some("c")).err(), Some(Refusal::UnknownKey));
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let load = |name: &str, text: &str, alg: &str| {
            let path = temp_file(name, text);
            let yaml = format!("key: {}\nalgorithms: [{alg}]\n", path.display());
            Tokens::load(Some(&config(&yaml)))
                .err()
                .expect("refused")
                .to_string()
        };
        let e = load("junk.pem", "hello", "ES256");
        assert!(e.starts_with("clients.tokens.key: "), "{e}");
        assert!(e.contains("not a PEM public key"), "{e}");
        let e = load(
            "private.pem",
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
            "ES256",
        );
        assert!(e.contains("holds a private key"), "{e}");
        let rsa = SigningKey::generate("RS256");
        let e = load("rsa.pem", &rsa.public_pem, "ES256");
        assert!(e.contains("no key for ES256"), "{e}");
        let e = load("empty.json", r#"{"keys": []}"#, "ES256");
        assert!(e.contains("no signature key"), "{e}");
        let missing = config("key: /nonexistent/token.pub\nalgorithms: [ES256]\n");
        let e = Tokens::load(Some(&missing))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("/nonexistent/token.pub: cannot read"), "{e}");
    }
}
