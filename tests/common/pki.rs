//! Throw-away certificates, made with rcgen at test time: the one way the
//! Rust tests (and the bench's) make them. A CA (`Ca::new`), intermediates,
//! leaves for `localhost` and 127.0.0.1, or one self-signed leaf; ECDSA
//! P-256, PEM text, written wherever the test wants them. (Shell scripts
//! have `make_test_pki` in tests/common/harness.sh.)
//!
//! Invariants: nothing here touches the disk or the network; every key is
//! new (no certificate is shared between tests). Standard library and
//! rcgen only, no other harness module, so that crates without the
//! harness (ldap-worker's tests, for slapd; the bench's) include it with
//! `#[path = ".../tests/common/pki.rs"] mod pki;`.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names every leaf is for.
pub const LEAF_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A throw-away certificate authority.
pub struct Ca {
    /// Its certificate (what a client trusts).
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(common_name: String) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let params = ca_params(format!("pubsubd test CA {name}"));
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("intermediate key");
        let mut params = ca_params(format!("pubsubd test intermediate {name}"));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by this
    /// CA: (certificate PEM, PKCS#8 key PEM).
    pub fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = leaf_params();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

fn leaf_params() -> CertificateParams {
    let mut params =
        CertificateParams::new(LEAF_NAMES.map(String::from).to_vec()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A self-signed server certificate for `localhost` and 127.0.0.1 (not a
/// CA: rustls refuses a CA as an end entity), which a client trusts as
/// itself: (certificate PEM, PKCS#8 key PEM).
pub fn self_signed() -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params().self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}
