//! `jsonwebtoken`'s signature checks done by `ring`, the crypto library the
//! tree already has (rustls's provider, the TLS 1.3 record layer), rather
//! than a second one (aws-lc-rs, or RustCrypto's rsa/p256/ed25519-dalek).
//! Verification only: pubsubd never signs a token.
//!
//! Invariants:
//! - A key is used only by its own family's algorithms: an HMAC check
//!   needs an HMAC (`secret`) key, an RSA/EC/Ed check a public key, so a
//!   public key's bytes can never serve as an HMAC secret (algorithm
//!   confusion), whatever a token's header says.
//! - RSA keys are 2048 to 8192 bits (ring's `*_2048_8192_*`); ECDSA
//!   signatures are the fixed-length `r || s` of RFC 7518 3.4.
//! - Nothing here panics: `jsonwebtoken`'s JWK helpers that a verifier
//!   never needs answer with an error.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{digest, hmac, signature as sig};

/// The provider; installed once per process by [`install`].
static RING: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _: &EllipticCurve| Err(unsupported()),
        compute_digest,
    },
};

/// Makes `ring` the process's `jsonwebtoken` provider (idempotent).
pub fn install() {
    // Fails only if a provider is installed already: this one, since the
    // crate's own backends are not compiled in.
    let _ = RING.install_default();
}

fn unsupported() -> Error {
    ErrorKind::Provider("not supported by pubsubd's verify-only provider".into()).into()
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(unsupported())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

/// One algorithm with one key.
struct RingVerifier {
    algorithm: Algorithm,
    check: Check,
}

enum Check {
    Hmac(hmac::Key),
    /// A public key as DER (RSA: PKCS#1 `RSAPublicKey`), an EC point or
    /// an Ed25519 key.
    Public(&'static dyn sig::VerificationAlgorithm, Vec<u8>),
    /// An RSA key given as modulus and exponent (a JWK).
    RsaParts(&'static sig::RsaParameters, Vec<u8>, Vec<u8>),
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let check = match (algorithm, key.kind()) {
        (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, kind) => {
            let DecodingKeyKind::SecretOrDer(secret) = kind else {
                return Err(ErrorKind::InvalidKeyFormat.into());
            };
            let hmac_alg = match algorithm {
                Algorithm::HS256 => hmac::HMAC_SHA256,
                Algorithm::HS384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            Check::Hmac(hmac::Key::new(hmac_alg, secret))
        }
        (_, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            let params = rsa_parameters(algorithm).ok_or(ErrorKind::InvalidAlgorithm)?;
            Check::RsaParts(params, n.clone(), e.clone())
        }
        (_, DecodingKeyKind::SecretOrDer(bytes)) => {
            let alg: &'static dyn sig::VerificationAlgorithm = match algorithm {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
                Algorithm::EdDSA => &sig::ED25519,
                rsa => rsa_parameters(rsa).ok_or(ErrorKind::InvalidAlgorithm)?,
            };
            Check::Public(alg, bytes.clone())
        }
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        check,
    }))
}

fn rsa_parameters(algorithm: &Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.check {
            Check::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Check::Public(alg, key) => sig::UnparsedPublicKey::new(*alg, key)
                .verify(message, signature)
                .is_ok(),
            Check::RsaParts(params, n, e) => sig::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
