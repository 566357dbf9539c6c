//! Test support, for the unit tests here and the black-box tests
//! (`tests/common/mod.rs` includes this file): throw-away key pairs made
//! by the `openssl` command, and tokens signed with `ring` directly, so a
//! test never trusts the code it tests to make its input.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// base64url without padding (RFC 7515 2).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A key that signs tokens for one algorithm.
pub struct SigningKey {
    pub alg: &'static str,
    /// The public key as PEM (SPKI); empty for an HMAC secret.
    pub public_pem: String,
    kind: Kind,
}

enum Kind {
    Hmac(ring::hmac::Key),
    Rsa(RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl SigningKey {
    /// HS256/384/512 with `secret`.
    pub fn hmac(alg: &'static str, secret: &[u8]) -> SigningKey {
        let hmac_alg = match alg {
            "HS256" => ring::hmac::HMAC_SHA256,
            "HS384" => ring::hmac::HMAC_SHA384,
            _ => ring::hmac::HMAC_SHA512,
        };
        SigningKey {
            alg,
            public_pem: String::new(),
            kind: Kind::Hmac(ring::hmac::Key::new(hmac_alg, secret)),
        }
    }

    /// A fresh key pair for `alg` (RS*, PS*, ES256, ES384, EdDSA).
    pub fn generate(alg: &'static str) -> SigningKey {
        let args: &[&str] = match alg {
            "ES256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ES384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "EdDSA" => &["-algorithm", "ed25519"],
            _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        };
        let traditional = openssl(&[&["genpkey"], args, &["-outform", "DER"]].concat(), &[]);
        // ring reads PKCS#8 only; genpkey's DER is the traditional form.
        let to_pkcs8 = [
            "pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-outform", "DER",
        ];
        let der = openssl(&to_pkcs8, &traditional);
        let public_pem = String::from_utf8(openssl(&["pkey", "-inform", "DER", "-pubout"], &der))
            .expect("PEM is text");
        let rng = SystemRandom::new();
        let kind = match alg {
            "ES256" | "ES384" => {
                let a = if alg == "ES256" {
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                Kind::Ecdsa(EcdsaKeyPair::from_pkcs8(a, &der, &rng).expect("EC key"))
            }
            "EdDSA" => Kind::Ed(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("Ed key")),
            _ => {
                let encoding: &'static dyn sig::RsaEncoding = match alg {
                    "RS256" => &sig::RSA_PKCS1_SHA256,
                    "RS384" => &sig::RSA_PKCS1_SHA384,
                    "RS512" => &sig::RSA_PKCS1_SHA512,
                    "PS256" => &sig::RSA_PSS_SHA256,
                    "PS384" => &sig::RSA_PSS_SHA384,
                    _ => &sig::RSA_PSS_SHA512,
                };
                Kind::Rsa(RsaKeyPair::from_pkcs8(&der).expect("RSA key"), encoding)
            }
        };
        SigningKey {
            alg,
            public_pem,
            kind,
        }
    }

    /// A token with the header `{"alg": <alg>, "typ": "JWT"}`.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(&json!({"alg": self.alg, "typ": "JWT"}), claims)
    }

    /// A token with any header, signed with this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        format!("{message}.{}", b64(&self.sign(message.as_bytes())))
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.kind {
            Kind::Hmac(key) => ring::hmac::sign(key, message).as_ref().to_vec(),
            Kind::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, message, &mut out)
                    .expect("RSA signature");
                out
            }
            Kind::Ecdsa(pair) => pair.sign(&rng, message).expect("ECDSA").as_ref().to_vec(),
            Kind::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

/// Runs `openssl ARGS` with `input` on stdin; its stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}
