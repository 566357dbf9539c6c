//! The record layer (`records.rs`) held against rustls, in-process, and
//! against the records of RFC 8448.
//!
//! Differential: a real TLS 1.3 handshake between rustls's unbuffered
//! client and server, in memory, for each cipher suite; the server then
//! moves to our record layer as a connection does (`handed_over`, with
//! rustls's `KernelConnection`). Every record our layer seals must be the
//! very bytes rustls's own record protection (`Tls13AeadAlgorithm`'s
//! `MessageEncrypter`) seals for the same plaintext, with the keys the
//! *client's* rustls key schedule derives, through every KeyUpdate in both
//! directions; and our layer must open what rustls seals for the client.
//!
//! Known answers: RFC 8448 §3 ("Simple 1-RTT Handshake") gives the
//! application traffic keys and IVs of both sides and the records sealed
//! with them; our layer seals and opens exactly those.

use std::io::IoSlice;
use std::sync::Arc;

use pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use ring::aead;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::cipher::{MessageEncrypter, OutboundChunks, OutboundPlainMessage};
use rustls::kernel::KernelConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{
    ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite,
};

use super::records::{KeyBytes, KeySchedule, Opened, RecordLayer, KEY_UPDATE, MAX_FRAGMENT};
use super::transport::encode_into;

/// Runs one side of the handshake until it waits for the other: what it
/// sends goes to `out`, what it takes is removed from `input`. True once
/// it may write application data.
macro_rules! drive {
    ($conn:expr, $input:expr, $out:expr) => {{
        let mut writable = false;
        for _ in 0..64 {
            let UnbufferedStatus { discard, state } = $conn.process_tls_records(&mut $input[..]);
            let stop = match state.expect("TLS handshake") {
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into($out, |buf| encode.encode(buf)).expect("encode");
                    false
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::BlockedHandshake => true,
                ConnectionState::WriteTraffic(_) => {
                    writable = true;
                    true
                }
                _ => panic!("unexpected TLS state in the handshake"),
            };
            $input.drain(..discard);
            if stop {
                break;
            }
        }
        writable
    }};
}

fn tls13(suite: SupportedCipherSuite) -> &'static Tls13CipherSuite {
    match suite {
        SupportedCipherSuite::Tls13(suite) => suite,
        _ => unreachable!("a TLS 1.3 suite"),
    }
}

const SUITES: [SupportedCipherSuite; 3] = [
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// rustls's record protection for one direction, keyed by rustls, and
/// where its sequence stands.
struct Rustls {
    encrypter: Box<dyn MessageEncrypter>,
    seq: u64,
}

impl Rustls {
    fn new(suite: &Tls13CipherSuite, (seq, secrets): (u64, ConnectionTrafficSecrets)) -> Rustls {
        let (ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) = secrets
        else {
            unreachable!("a suite of ring's");
        };
        Rustls {
            encrypter: suite.aead_alg.encrypter(key, iv),
            seq,
        }
    }

    /// One record, as rustls seals it.
    fn seal(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
        let message = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let record = self
            .encrypter
            .encrypt(message, self.seq)
            .expect("rustls seals");
        self.seq += 1;
        record.encode()
    }
}

/// After a handshake: our record layer on the server side, and on the
/// client side rustls's key schedule and record protection both ways.
struct Rig {
    suite: &'static Tls13CipherSuite,
    ours: RecordLayer,
    client: KernelConnection<ClientConnectionData>,
    /// Seals as the server would (the client's receiving keys).
    server_to_client: Rustls,
    /// Seals as the client does.
    client_to_server: Rustls,
    /// KeyUpdates the server's writes have crossed.
    updates: usize,
}

impl Rig {
    fn new(suite: SupportedCipherSuite, records_per_key: u64) -> Rig {
        let suite13 = tls13(suite);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert = CertificateDer::from(cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        server.enable_secret_extraction = true;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;

        let name = ServerName::try_from("localhost").expect("name");
        let mut client = UnbufferedClientConnection::new(Arc::new(client), name).expect("client");
        let mut server = UnbufferedServerConnection::new(Arc::new(server)).expect("server");
        let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
        let mut done = false;
        for _ in 0..16 {
            let client_done = drive!(client, to_client, &mut to_server);
            let server_done = drive!(server, to_server, &mut to_client);
            if client_done && server_done && to_client.is_empty() && to_server.is_empty() {
                done = true;
                break;
            }
        }
        assert!(done, "the handshake completed");
        let (server_keys, server_schedule) = server
            .dangerous_into_kernel_connection()
            .expect("server keys");
        let (client_keys, client) = client
            .dangerous_into_kernel_connection()
            .expect("client keys");
        // The session tickets went out under the server's first key.
        assert!(server_keys.tx.0 > 0 && client_keys.rx.0 == server_keys.tx.0);
        let ours = RecordLayer::handed_over(server_keys, server_schedule, Some(records_per_key))
            .expect("record layer");
        Rig {
            suite: suite13,
            ours,
            client,
            server_to_client: Rustls::new(suite13, client_keys.rx),
            client_to_server: Rustls::new(suite13, client_keys.tx),
            updates: 0,
        }
    }

    /// The records rustls seals for what the server writes: one per 16 KiB,
    /// each after a KeyUpdate when the key has sealed `records_per_key`
    /// (the client's key schedule giving the next key), or when `owed`.
    fn expected(&mut self, data: &[u8], records_per_key: u64, owed: &mut bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for fragment in data.chunks(MAX_FRAGMENT) {
            if std::mem::take(owed) || self.server_to_client.seq >= records_per_key {
                wire.extend(
                    self.server_to_client
                        .seal(ContentType::Handshake, &[KEY_UPDATE, 0, 0, 1, 0]),
                );
                let next = self.client.update_rx_secret().expect("next key");
                self.server_to_client = Rustls::new(self.suite, next);
                self.updates += 1;
            }
            wire.extend(
                self.server_to_client
                    .seal(ContentType::ApplicationData, fragment),
            );
        }
        wire
    }

    fn ours_sealed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let taken = self
            .ours
            .seal(&[IoSlice::new(data)], usize::MAX, &mut wire)
            .expect("seal");
        assert_eq!(taken, data.len());
        wire
    }

    /// What our layer opens of `wire`.
    fn ours_opened(&mut self, wire: &mut [u8]) -> (Vec<u8>, Opened) {
        let mut data = Vec::new();
        match self.ours.open(wire, &mut |d| data.extend_from_slice(d)) {
            Ok(opened) => (data, opened),
            Err(fatal) => panic!("our layer refused rustls's records: {}", fatal.error),
        }
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn our_records_are_rustls_records_through_every_key_update() {
    const RECORDS_PER_KEY: u64 = 3;
    for suite in SUITES {
        let mut rig = Rig::new(suite, RECORDS_PER_KEY);
        let mut owed = false;
        for (i, size) in [1, 250, 16_384, 16_385, 40_000, 3, 7, 1, 100_000, 2]
            .into_iter()
            .enumerate()
        {
            let data = pattern(size, i as u8);
            let expected = rig.expected(&data, RECORDS_PER_KEY, &mut owed);
            assert_eq!(
                rig.ours_sealed(&data),
                expected,
                "{suite:?}, write {i} ({size} bytes)"
            );
        }
        assert!(
            rig.updates >= 4,
            "{suite:?}: {} key updates crossed",
            rig.updates
        );
        // close_notify, too.
        let mut ours = Vec::new();
        rig.ours.seal_close_notify(&mut ours).expect("close_notify");
        assert_eq!(
            ours,
            rig.server_to_client.seal(ContentType::Alert, &[1, 0]),
            "{suite:?}"
        );
    }
}

#[test]
fn rustls_records_open_and_client_key_updates_are_followed_and_answered() {
    for suite in SUITES {
        let mut rig = Rig::new(suite, u64::MAX);
        for step in 0..6u8 {
            // Data, then a KeyUpdate (every other one asking for ours), then
            // data under the client's next key, as rustls seals them.
            let request = step % 2;
            let mut wire = rig
                .client_to_server
                .seal(ContentType::ApplicationData, &pattern(300, step));
            wire.extend(
                rig.client_to_server
                    .seal(ContentType::Handshake, &[KEY_UPDATE, 0, 0, 1, request]),
            );
            let next = rig.client.update_tx_secret().expect("client's next key");
            rig.client_to_server = Rustls::new(rig.suite, next);
            wire.extend(
                rig.client_to_server
                    .seal(ContentType::ApplicationData, b"after"),
            );
            let (data, opened) = rig.ours_opened(&mut wire);
            assert_eq!(opened.consumed, wire.len());
            assert_eq!(&data[..300], &pattern(300, step)[..], "{suite:?}");
            assert_eq!(&data[300..], b"after");
            // Our next write starts with the KeyUpdate asked for.
            let mut owed = request == 1;
            let expected = rig.expected(b"answer", u64::MAX, &mut owed);
            assert_eq!(
                rig.ours_sealed(b"answer"),
                expected,
                "{suite:?}, step {step}"
            );
        }
        assert_eq!(rig.updates, 3, "{suite:?}: one answer per request");
        let mut alert = rig.client_to_server.seal(ContentType::Alert, &[1, 0]);
        assert!(rig.ours_opened(&mut alert).1.closed);
    }
}

/// A key schedule for known answers: no KeyUpdate happens there.
struct NoUpdates;

impl KeySchedule for NoUpdates {
    fn next_tx(&mut self, _: &'static aead::Algorithm) -> std::io::Result<(u64, KeyBytes)> {
        Err(std::io::Error::other("no key update in RFC 8448's trace"))
    }

    fn next_rx(&mut self, _: &'static aead::Algorithm) -> std::io::Result<(u64, KeyBytes)> {
        Err(std::io::Error::other("no key update in RFC 8448's trace"))
    }
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|d| (d as char).to_digit(16).expect("hex digit") as u8)
        .collect();
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

// RFC 8448 §3, Simple 1-RTT Handshake (TLS_AES_128_GCM_SHA256): the
// application traffic keys and IVs, and the records sealed with them.
const CLIENT_KEY: &str = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51";
const CLIENT_IV: &str = "5b 78 92 3d ee 08 57 90 33 e5 23 d9";
const SERVER_KEY: &str = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56";
const SERVER_IV: &str = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84";
/// {client} send application_data record (sequence number 0).
const CLIENT_DATA: &str = "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef
    ac ea 42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f
    5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4";
/// {server} send application_data record (1: after the NewSessionTicket).
const SERVER_DATA: &str = "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69
    32 fc 32 25 d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b
    f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d";
/// {client} send alert record: close_notify (1).
const CLIENT_ALERT: &str =
    "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3";
/// {server} send alert record: close_notify (2).
const SERVER_ALERT: &str =
    "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9";

#[test]
fn rfc8448_simple_1rtt_records_are_sealed_and_opened_exactly() {
    let aead = &aead::AES_128_GCM;
    let keys = |key: &str, iv: &str| KeyBytes::new(aead, &hex(key), &hex(iv)).expect("RFC keys");
    let mut server = RecordLayer::with_keys(
        aead,
        (1, keys(SERVER_KEY, SERVER_IV)),
        (0, keys(CLIENT_KEY, CLIENT_IV)),
        NoUpdates,
        None,
    );
    // Both sides send the 50 bytes 00 01 .. 31.
    let payload: Vec<u8> = (0..50).collect();
    let mut data = Vec::new();
    let mut record = hex(CLIENT_DATA);
    let opened = server.open(&mut record, &mut |d| data.extend_from_slice(d));
    assert!(opened.is_ok_and(|o| o.consumed == record.len() && !o.closed));
    assert_eq!(data, payload);

    let mut sealed = Vec::new();
    server
        .seal(&[IoSlice::new(&payload)], usize::MAX, &mut sealed)
        .expect("seal");
    assert_eq!(sealed, hex(SERVER_DATA));

    let mut record = hex(CLIENT_ALERT);
    let opened = server.open(&mut record, &mut |_| panic!("no data"));
    assert!(opened.is_ok_and(|o| o.closed), "close_notify");

    let mut sealed = Vec::new();
    server.seal_close_notify(&mut sealed).expect("close_notify");
    assert_eq!(sealed, hex(SERVER_ALERT));
}
