//! The TLS 1.3 record layer of an established connection.
//!
//! Once a TLS 1.3 handshake is over, rustls hands over the traffic keys
//! and their sequence numbers (`dangerous_into_kernel_connection`, the API
//! meant for kernel TLS) and is dropped. Records are then sealed and
//! opened here with ring's AEAD. Why: rustls's connection state is ~3.3 KB
//! of heap per connection that an idle subscriber never uses. This keeps
//! the sending key (~0.5 KB), the two traffic secrets (for key updates),
//! and builds the opening key only when the peer first sends something
//! (most subscribers send nothing after their request). Sealing writes
//! each record straight from the frames into the output: one copy, one
//! record per 16 KiB.
//!
//! The traffic secrets come from rustls's `KeyLog` hook, caught on this
//! thread while rustls runs the handshake (`capture_secrets`), and are
//! checked against the keys rustls hands over.
//!
//! Covered (RFC 8446 §5, §4.6.3, §7.2): application data, alerts
//! (close_notify closes, any other alert is fatal), KeyUpdate in both
//! directions, and the key update this side makes before AES-GCM's
//! confidentiality limit. Anything else after the handshake is an
//! `unexpected_message`.

use std::cell::RefCell;
use std::io::{self, IoSlice};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// TLS record header: content type, legacy version, length.
const HEADER: usize = 5;
const TAG: usize = 16;
/// The largest plaintext a record carries (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest protected record body a peer may send (§5.2): plaintext,
/// content type, padding and tag together.
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;

/// Alert descriptions this side sends.
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;

/// Bytes waiting for the socket past which a key update the peer asks
/// for is not answered but ends the connection.
const MAX_PENDING_REPLIES: usize = 128 * 1024;
/// AES-GCM may seal at most 2^24.5 records under one key (RFC 8446
/// §5.5); this side moves to a fresh key well before, at 2^24.
const AES_GCM_RECORDS_PER_KEY: u64 = 1 << 24;

/// A traffic secret: 32 bytes (SHA-256 suites) or 48 (SHA-384).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Secret {
    fn new(bytes: &[u8]) -> Option<Secret> {
        let mut secret = Secret {
            bytes: [0; 48],
            len: u8::try_from(bytes.len()).ok()?,
        };
        secret.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(secret)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The application traffic secrets of one connection.
#[derive(Debug, Default)]
pub struct TrafficSecrets {
    client: Option<Secret>,
    server: Option<Secret>,
}

thread_local! {
    /// What `CaptureSecrets` was given since `capture_secrets` last looked.
    static CAPTURED: RefCell<TrafficSecrets> = RefCell::new(TrafficSecrets::default());
}

/// rustls's key log, kept for the record layer: it is called, on the
/// thread running the handshake, with the secrets as they are derived.
#[derive(Debug)]
pub struct CaptureSecrets;

impl rustls::KeyLog for CaptureSecrets {
    fn will_log(&self, label: &str) -> bool {
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        CAPTURED.with(|captured| {
            let mut captured = captured.borrow_mut();
            match label {
                "CLIENT_TRAFFIC_SECRET_0" => captured.client = Secret::new(secret),
                "SERVER_TRAFFIC_SECRET_0" => captured.server = Secret::new(secret),
                _ => {}
            }
        });
    }
}

/// Moves the secrets rustls logged during the call just made for this
/// connection into `into` (the calls of one thread never interleave).
pub fn capture_secrets(into: &mut Option<Box<TrafficSecrets>>) {
    CAPTURED.with(|captured| {
        let mut captured = captured.borrow_mut();
        if captured.client.is_none() && captured.server.is_none() {
            return;
        }
        let slot = into.get_or_insert_with(Default::default);
        if let Some(client) = captured.client.take() {
            slot.client = Some(client);
        }
        if let Some(server) = captured.server.take() {
            slot.server = Some(server);
        }
    });
}

/// A TLS 1.3 cipher suite: its AEAD and its hash.
#[derive(Clone, Copy)]
struct Suite {
    aead: &'static aead::Algorithm,
    hkdf: hkdf::Algorithm,
}

/// A length, as ring's HKDF wants it.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Suite {
    /// HKDF-Expand-Label(secret, label, "", len) (RFC 8446 §7.1).
    fn expand_label(&self, secret: &[u8], label: &[u8], out: &mut [u8]) -> io::Result<()> {
        let len = u16::try_from(out.len())
            .expect("short output")
            .to_be_bytes();
        let label_len = [u8::try_from(6 + label.len()).expect("short label")];
        let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
        hkdf::Prk::new_less_safe(self.hkdf, secret)
            .expand(&info, Len(out.len()))
            .and_then(|okm| okm.fill(out))
            .map_err(|_| io::Error::other("TLS key derivation failed"))
    }

    /// The key and IV a traffic secret stands for (§7.3).
    fn traffic_keys(&self, secret: &Secret) -> io::Result<([u8; 32], [u8; 12])> {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 12];
        self.expand_label(secret.as_bytes(), b"key", &mut key[..self.aead.key_len()])?;
        self.expand_label(secret.as_bytes(), b"iv", &mut iv)?;
        Ok((key, iv))
    }

    /// The next traffic secret after a KeyUpdate (§7.2).
    fn next_secret(&self, secret: &Secret) -> io::Result<Secret> {
        let mut next = secret.clone();
        self.expand_label(
            secret.as_bytes(),
            b"traffic upd",
            &mut next.bytes[..usize::from(secret.len)],
        )?;
        Ok(next)
    }
}

/// A key and where its sequence stands.
struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(suite: Suite, secret: &Secret, seq: u64) -> io::Result<Direction> {
        let (key, iv) = suite.traffic_keys(secret)?;
        let key = UnboundKey::new(suite.aead, &key[..suite.aead.key_len()])
            .map_err(|_| io::Error::other("TLS traffic key of the wrong length"))?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce: the IV XOR the sequence number (§5.3).
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// The receiving side: only a sequence number until the peer first sends
/// a record.
enum Receiver {
    Unkeyed(u64),
    Keyed(Box<Direction>),
}

/// A TLS 1.3 connection's records after the handshake.
pub struct RecordLayer {
    suite: Suite,
    tx: Direction,
    rx: Receiver,
    /// The current traffic secrets, each side's next one derives from.
    client_secret: Secret,
    server_secret: Secret,
    /// Records sealed under one key before this side updates it.
    records_per_key: u64,
}

/// What opening received records came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of whole records consumed from the front of the input.
    pub consumed: usize,
    /// The peer sent close_notify; nothing after it is read.
    pub closed: bool,
}

/// A fatal error: the alert to send the peer (0: none), and the error.
pub struct Fatal {
    pub alert: u8,
    pub error: io::Error,
}

fn fatal(alert: u8, what: &'static str) -> Fatal {
    Fatal {
        alert,
        error: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

fn internal(error: io::Error) -> Fatal {
    Fatal {
        alert: INTERNAL_ERROR,
        error,
    }
}

impl RecordLayer {
    /// The record layer for the keys rustls handed over, given the traffic
    /// secrets they were derived from (checked: they must match).
    pub fn new(handed_over: ExtractedSecrets, secrets: &TrafficSecrets) -> io::Result<RecordLayer> {
        let (tx_seq, tx) = &handed_over.tx;
        let (rx_seq, rx) = &handed_over.rx;
        let suite = match tx {
            ConnectionTrafficSecrets::Aes128Gcm { .. } => Suite {
                aead: &aead::AES_128_GCM,
                hkdf: hkdf::HKDF_SHA256,
            },
            ConnectionTrafficSecrets::Aes256Gcm { .. } => Suite {
                aead: &aead::AES_256_GCM,
                hkdf: hkdf::HKDF_SHA384,
            },
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Suite {
                aead: &aead::CHACHA20_POLY1305,
                hkdf: hkdf::HKDF_SHA256,
            },
            _ => {
                return Err(io::Error::other(
                    "TLS cipher suite without a record layer here",
                ))
            }
        };
        let (Some(client_secret), Some(server_secret)) = (&secrets.client, &secrets.server) else {
            return Err(io::Error::other("TLS traffic secrets were not captured"));
        };
        let matches = |secret: &Secret, handed: &ConnectionTrafficSecrets| {
            let (key, iv) = suite.traffic_keys(secret)?;
            let (ConnectionTrafficSecrets::Aes128Gcm { key: k, iv: i }
            | ConnectionTrafficSecrets::Aes256Gcm { key: k, iv: i }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key: k, iv: i }) = handed
            else {
                return Ok(false);
            };
            io::Result::Ok(&key[..suite.aead.key_len()] == k.as_ref() && iv[..] == *i.as_ref())
        };
        if !matches(server_secret, tx)? || !matches(client_secret, rx)? {
            return Err(io::Error::other(
                "captured TLS traffic secrets do not match the connection's keys",
            ));
        }
        RecordLayer::with_secrets(suite, client_secret, server_secret, *tx_seq, *rx_seq)
    }

    fn with_secrets(
        suite: Suite,
        client_secret: &Secret,
        server_secret: &Secret,
        tx_seq: u64,
        rx_seq: u64,
    ) -> io::Result<RecordLayer> {
        let records_per_key = match suite.aead == &aead::CHACHA20_POLY1305 {
            true => u64::MAX,
            false => AES_GCM_RECORDS_PER_KEY,
        };
        Ok(RecordLayer {
            suite,
            tx: Direction::new(suite, server_secret, tx_seq)?,
            rx: Receiver::Unkeyed(rx_seq),
            client_secret: client_secret.clone(),
            server_secret: server_secret.clone(),
            records_per_key,
        })
    }

    /// For tests: how many records are sealed under one key.
    #[cfg(test)]
    pub fn set_records_per_key(&mut self, records: u64) {
        self.records_per_key = records;
    }

    /// Appends to `out` the records carrying the slices' bytes, at most
    /// `limit` of them. Returns how many bytes were taken.
    pub fn seal(
        &mut self,
        bufs: &[IoSlice<'_>],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let mut taken = 0;
        let mut slices = bufs.iter().map(|b| &b[..]).filter(|b| !b.is_empty());
        let mut current: &[u8] = slices.next().unwrap_or(&[]);
        while !current.is_empty() && taken < limit {
            let start = self.begin_record(out)?;
            let mut room = MAX_FRAGMENT.min(limit - taken);
            while room > 0 && !current.is_empty() {
                let n = room.min(current.len());
                out.extend_from_slice(&current[..n]);
                current = &current[n..];
                room -= n;
                taken += n;
                if current.is_empty() {
                    current = slices.next().unwrap_or(&[]);
                }
            }
            self.end_record(out, start, APPLICATION_DATA)?;
        }
        Ok(taken)
    }

    /// Appends a fatal alert (best effort: the connection is closing).
    pub fn seal_alert(&mut self, description: u8, out: &mut Vec<u8>) {
        let _ = self.seal_message(ALERT, &[2, description], out);
    }

    /// Seals one whole message of `content_type` as one record.
    fn seal_message(&mut self, content_type: u8, body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let start = self.begin_record(out)?;
        out.extend_from_slice(body);
        self.end_record(out, start, content_type)
    }

    /// Writes a record header to `out`, first moving to a fresh key if the
    /// current one has sealed its share. Returns where the record starts.
    fn begin_record(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        if self.tx.seq >= self.records_per_key {
            // KeyUpdate(update_not_requested), sealed under the old key.
            let start = out.len();
            out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
            out.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
            self.end_record(out, start, HANDSHAKE)?;
            self.update_tx()?;
        }
        let start = out.len();
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
        Ok(start)
    }

    /// Adds the content type, seals the record begun at `start` in place,
    /// and appends its tag.
    fn end_record(&mut self, out: &mut Vec<u8>, start: usize, content_type: u8) -> io::Result<()> {
        out.push(content_type);
        let body = out.len() - start - HEADER;
        let length = u16::try_from(body + TAG).expect("a record is at most 16 KiB");
        out[start + 3..start + HEADER].copy_from_slice(&length.to_be_bytes());
        let header: [u8; HEADER] = out[start..start + HEADER].try_into().expect("5 bytes");
        let nonce = self.tx.next_nonce();
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| io::Error::other("TLS record sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn update_tx(&mut self) -> io::Result<()> {
        self.server_secret = self.suite.next_secret(&self.server_secret)?;
        self.tx = Direction::new(self.suite, &self.server_secret, 0)?;
        Ok(())
    }

    /// Opens the whole records at the front of `input` (decrypting in
    /// place). Application data goes to `deliver`; a key update the peer
    /// asks for is answered into `replies`. A record not yet complete is
    /// left for the next call.
    pub fn open(
        &mut self,
        input: &mut [u8],
        deliver: &mut dyn FnMut(&[u8]),
        replies: &mut Vec<u8>,
    ) -> Result<Opened, Fatal> {
        let mut opened = Opened::default();
        while !opened.closed {
            let rest = &mut input[opened.consumed..];
            if rest.len() < HEADER {
                break;
            }
            let header: [u8; HEADER] = rest[..HEADER].try_into().expect("5 bytes");
            let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != APPLICATION_DATA {
                return Err(fatal(
                    UNEXPECTED_MESSAGE,
                    "unprotected TLS record after the handshake",
                ));
            }
            if length > MAX_CIPHERTEXT {
                return Err(fatal(RECORD_OVERFLOW, "TLS record too large"));
            }
            if rest.len() < HEADER + length {
                break;
            }
            let body = &mut rest[HEADER..HEADER + length];
            let rx = self.receiving_key()?;
            let nonce = rx.next_nonce();
            let plain = rx
                .key
                .open_in_place(nonce, Aad::from(header), body)
                .map_err(|_| fatal(BAD_RECORD_MAC, "TLS record failed to decrypt"))?;
            // The content type is the last non-zero byte; zeros are padding.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(fatal(
                    UNEXPECTED_MESSAGE,
                    "TLS record without a content type",
                ));
            };
            if end > MAX_FRAGMENT {
                return Err(fatal(RECORD_OVERFLOW, "TLS record plaintext too large"));
            }
            let (content, content_type) = (&plain[..end], plain[end]);
            opened.consumed += HEADER + length;
            match content_type {
                APPLICATION_DATA => deliver(content),
                ALERT => match content {
                    [_, 0] => opened.closed = true,
                    // user_canceled is followed by close_notify.
                    [_, 90] => {}
                    [_, _] => return Err(fatal(0, "the peer sent a fatal TLS alert")),
                    _ => return Err(fatal(DECODE_ERROR, "malformed TLS alert")),
                },
                HANDSHAKE => self.key_update(content, replies)?,
                _ => return Err(fatal(UNEXPECTED_MESSAGE, "unexpected TLS content type")),
            }
        }
        Ok(opened)
    }

    /// The one post-handshake message a client may send: KeyUpdate, alone
    /// at the end of its record (the keys change after it).
    fn key_update(&mut self, message: &[u8], replies: &mut Vec<u8>) -> Result<(), Fatal> {
        let update_requested = match message {
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => *request == 1,
            [KEY_UPDATE, ..] => return Err(fatal(DECODE_ERROR, "malformed TLS KeyUpdate")),
            _ => {
                return Err(fatal(
                    UNEXPECTED_MESSAGE,
                    "unexpected TLS handshake message after the handshake",
                ))
            }
        };
        if update_requested && replies.len() > MAX_PENDING_REPLIES {
            // Each answer would wait for a peer that does not read.
            return Err(fatal(0, "TLS key updates asked faster than the peer reads"));
        }
        self.client_secret = self
            .suite
            .next_secret(&self.client_secret)
            .map_err(internal)?;
        let keyed = Direction::new(self.suite, &self.client_secret, 0).map_err(internal)?;
        self.rx = Receiver::Keyed(Box::new(keyed));
        if update_requested {
            self.seal_message(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], replies)
                .map_err(internal)?;
            self.update_tx().map_err(internal)?;
        }
        Ok(())
    }

    /// The opening key, built the first time it is needed.
    fn receiving_key(&mut self) -> Result<&mut Direction, Fatal> {
        if let Receiver::Unkeyed(seq) = self.rx {
            let keyed = Direction::new(self.suite, &self.client_secret, seq).map_err(internal)?;
            self.rx = Receiver::Keyed(Box::new(keyed));
        }
        match &mut self.rx {
            Receiver::Keyed(direction) => Ok(direction),
            Receiver::Unkeyed(_) => unreachable!("keyed just above"),
        }
    }
}

/// The three TLS 1.3 suites, for tests and the fuzz harness.
#[cfg(any(fuzzing, test))]
fn all_suites() -> [Suite; 3] {
    [
        Suite {
            aead: &aead::AES_128_GCM,
            hkdf: hkdf::HKDF_SHA256,
        },
        Suite {
            aead: &aead::AES_256_GCM,
            hkdf: hkdf::HKDF_SHA384,
        },
        Suite {
            aead: &aead::CHACHA20_POLY1305,
            hkdf: hkdf::HKDF_SHA256,
        },
    ]
}

/// A secret of the suite's hash length, every byte `byte`.
#[cfg(any(fuzzing, test))]
fn made_up_secret(suite: Suite, byte: u8) -> Secret {
    let len = if suite.hkdf == hkdf::HKDF_SHA384 {
        48
    } else {
        32
    };
    Secret::new(&vec![byte; len]).expect("secret")
}

/// This side (the server: client secret all 1s, server secret all 2s) and
/// its peer, which sends with this side's receiving secret and receives
/// with its sending one; sequence numbers mid-stream.
#[cfg(any(fuzzing, test))]
fn made_up_session(suite: Suite) -> (RecordLayer, RecordLayer) {
    let (client, server) = (made_up_secret(suite, 1), made_up_secret(suite, 2));
    let us = RecordLayer::with_secrets(suite, &client, &server, 3, 5).expect("us");
    let peer = RecordLayer::with_secrets(suite, &server, &client, 5, 3).expect("peer");
    (us, peer)
}

/// The fuzz target's body (`fuzz/fuzz_targets/tls_records.rs`): a peer
/// seals a sequence of records the input describes, valid and hostile;
/// this side opens them fed in pieces, keeping the unconsumed tail as
/// `TlsStream` does. The data delivered and how the stream ends must be
/// what RFC 8446 says for that sequence, and nothing may panic.
#[cfg(any(fuzzing, test))]
pub fn fuzz_records(data: &[u8]) {
    #[derive(Debug, PartialEq, Clone, Copy)]
    enum End {
        Open,
        Closed,
        Fatal(u8),
    }
    let [suite, cut, limit, ops @ ..] = data else {
        return;
    };
    let mut ops = ops;
    let (mut us, mut peer) = made_up_session(all_suites()[usize::from(*suite) % 3]);
    // Small key lifetimes, so key updates happen both ways.
    us.records_per_key = u64::from(*limit % 8) + 1;
    peer.records_per_key = u64::from(*limit / 8 % 8) + 1;

    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut end = End::Open;
    while let [kind, n, tail @ ..] = ops {
        let n = usize::from(*n).min(tail.len());
        let (body, rest) = tail.split_at(n);
        ops = rest;
        let outcome = match kind % 7 {
            0 => {
                peer.seal(&[IoSlice::new(body)], usize::MAX, &mut wire)
                    .expect("seal");
                None
            }
            1 => {
                peer.seal_message(ALERT, body, &mut wire).expect("seal");
                match body {
                    [_, 0] => Some(End::Closed),
                    [_, 90] => None,
                    [_, _] => Some(End::Fatal(0)),
                    _ => Some(End::Fatal(DECODE_ERROR)),
                }
            }
            2 => {
                peer.seal_message(HANDSHAKE, body, &mut wire).expect("seal");
                match body {
                    [KEY_UPDATE, 0, 0, 1, 0 | 1] => {
                        peer.update_tx().expect("update");
                        None
                    }
                    [KEY_UPDATE, ..] => Some(End::Fatal(DECODE_ERROR)),
                    _ => Some(End::Fatal(UNEXPECTED_MESSAGE)),
                }
            }
            3 => {
                // Application data, its content type, then zeros.
                let start = peer.begin_record(&mut wire).expect("begin");
                wire.extend_from_slice(body);
                wire.push(APPLICATION_DATA);
                wire.extend(std::iter::repeat_n(0, body.len() % 7));
                peer.end_record(&mut wire, start, 0).expect("end");
                None
            }
            4 => {
                wire.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 17 + n as u8 % 200]);
                wire.extend(std::iter::repeat_n(0x5a, 17 + n % 200));
                Some(End::Fatal(BAD_RECORD_MAC))
            }
            5 => {
                let content_type = match body.first() {
                    Some(&t) if ![0, ALERT, HANDSHAKE, APPLICATION_DATA].contains(&t) => t,
                    _ => 99,
                };
                peer.seal_message(content_type, body, &mut wire)
                    .expect("seal");
                Some(End::Fatal(UNEXPECTED_MESSAGE))
            }
            _ => {
                wire.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0x48, 0x01]);
                Some(End::Fatal(RECORD_OVERFLOW))
            }
        };
        if end == End::Open {
            if matches!(kind % 7, 0 | 3) {
                expected.extend_from_slice(body);
            }
            if let Some(outcome) = outcome {
                end = outcome;
            }
        }
    }

    let step = usize::from(*cut).max(1);
    let mut got = Vec::new();
    let mut replies = Vec::new();
    let mut pending = Vec::new();
    let mut outcome = End::Open;
    for piece in wire.chunks(step) {
        pending.extend_from_slice(piece);
        match us.open(
            &mut pending,
            &mut |d| got.extend_from_slice(d),
            &mut replies,
        ) {
            Ok(opened) => {
                assert!(opened.consumed <= pending.len());
                pending.drain(..opened.consumed);
                if opened.closed {
                    outcome = End::Closed;
                    break;
                }
            }
            Err(fatal) => {
                outcome = End::Fatal(fatal.alert);
                break;
            }
        }
    }
    // An oversize header is refused before its body arrives; anything
    // else that ends the stream was a whole record.
    if outcome == End::Open {
        assert!(pending.len() < HEADER + MAX_CIPHERTEXT);
    }
    assert_eq!(outcome, end);
    assert_eq!(got, expected);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites() -> [Suite; 3] {
        all_suites()
    }

    fn secret(suite: Suite, byte: u8) -> Secret {
        made_up_secret(suite, byte)
    }

    fn pair(suite: Suite) -> (RecordLayer, RecordLayer) {
        made_up_session(suite)
    }

    /// What `to` makes of `wire`: the data, how it ended, its replies.
    fn open(to: &mut RecordLayer, wire: &mut [u8]) -> Result<(Vec<u8>, Opened, Vec<u8>), Fatal> {
        let mut data = Vec::new();
        let mut replies = Vec::new();
        let opened = to.open(wire, &mut |d| data.extend_from_slice(d), &mut replies)?;
        Ok((data, opened, replies))
    }

    fn sealed(from: &mut RecordLayer, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let taken = from
            .seal(&[IoSlice::new(data)], usize::MAX, &mut out)
            .expect("seal");
        assert_eq!(taken, data.len());
        out
    }

    /// The alert a fatal error calls for.
    fn alert_of(result: Result<(Vec<u8>, Opened, Vec<u8>), Fatal>) -> u8 {
        match result {
            Ok(_) => panic!("opened what should have been refused"),
            Err(fatal) => fatal.alert,
        }
    }

    #[test]
    fn slices_round_trip_in_records_of_at_most_16_kib() {
        for suite in suites() {
            let (mut us, mut peer) = pair(suite);
            let big = vec![7u8; 40_000];
            let slices = [
                IoSlice::new(b"hello "),
                IoSlice::new(b""),
                IoSlice::new(b"world"),
                IoSlice::new(&big),
            ];
            let mut wire = Vec::new();
            let taken = us.seal(&slices, usize::MAX, &mut wire).expect("seal");
            assert_eq!(taken, 11 + big.len());
            // Three records: 16 KiB, 16 KiB, the rest.
            assert_eq!(wire.len(), taken + 3 * (HEADER + 1 + TAG));
            let (data, opened, replies) = open(&mut peer, &mut wire).ok().expect("open");
            assert_eq!(&data[..11], b"hello world");
            assert_eq!(&data[11..], &big[..]);
            assert_eq!(opened.consumed, wire.len());
            assert!(!opened.closed && replies.is_empty());
        }
    }

    #[test]
    fn seal_takes_at_most_its_limit() {
        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = Vec::new();
        let taken = us
            .seal(
                &[IoSlice::new(b"abc"), IoSlice::new(b"defgh")],
                5,
                &mut wire,
            )
            .expect("seal");
        assert_eq!(taken, 5);
        assert_eq!(open(&mut peer, &mut wire).ok().expect("open").0, b"abcde");
    }

    #[test]
    fn a_record_not_yet_whole_waits() {
        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = sealed(&mut us, b"one");
        wire.extend(sealed(&mut us, b"two"));
        let first = wire.len() / 2;
        for cut in [0, 3, first - 1] {
            let (data, opened, _) = open(&mut peer, &mut wire.clone()[..cut])
                .ok()
                .expect("open");
            assert!(data.is_empty() && opened.consumed == 0, "cut at {cut}");
        }
        let (data, opened, _) = open(&mut peer, &mut wire[..first + 4]).ok().expect("open");
        assert_eq!((&data[..], opened.consumed), (&b"one"[..], first));
        let (data, _, _) = open(&mut peer, &mut wire[first..]).ok().expect("open");
        assert_eq!(data, b"two");
    }

    #[test]
    fn the_key_is_updated_before_its_record_limit() {
        for suite in suites() {
            let (mut us, mut peer) = pair(suite);
            us.set_records_per_key(4);
            let mut wire = Vec::new();
            for i in 0..10u8 {
                wire.extend(sealed(&mut us, &[i; 3]));
            }
            // Sequence numbers 3, 4.., a key update at 4, then every 4.
            assert!(us.tx.seq < 4);
            assert_ne!(us.server_secret, secret(suite, 2));
            let (data, opened, replies) = open(&mut peer, &mut wire).ok().expect("open");
            assert_eq!(data, (0..10u8).flat_map(|i| [i; 3]).collect::<Vec<_>>());
            assert_eq!(opened.consumed, wire.len());
            assert!(replies.is_empty(), "update_not_requested needs no answer");
            assert_eq!(peer.client_secret, us.server_secret);
        }
    }

    #[test]
    fn a_key_update_the_peer_asks_for_is_answered() {
        for suite in suites() {
            let (mut us, mut peer) = pair(suite);
            let mut wire = Vec::new();
            peer.seal_message(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1], &mut wire)
                .expect("key update");
            peer.update_tx().expect("update");
            wire.extend(sealed(&mut peer, b"after"));
            let (data, _, mut replies) = open(&mut us, &mut wire).ok().expect("open");
            assert_eq!(data, b"after");
            assert!(
                !replies.is_empty(),
                "KeyUpdate(update_not_requested) sent back"
            );
            replies.extend(sealed(&mut us, b"answer"));
            let (data, _, replies) = open(&mut peer, &mut replies).ok().expect("open");
            assert_eq!(data, b"answer");
            assert!(replies.is_empty());
        }
    }

    #[test]
    fn key_update_requests_from_a_peer_that_does_not_read_end_the_connection() {
        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = Vec::new();
        peer.seal_message(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1], &mut wire)
            .expect("key update");
        let mut replies = vec![0u8; MAX_PENDING_REPLIES + 1];
        let result = us.open(&mut wire, &mut |_| {}, &mut replies);
        assert!(result.is_err());
        assert_eq!(replies.len(), MAX_PENDING_REPLIES + 1, "nothing added");
    }

    #[test]
    fn padding_is_stripped_and_an_all_padding_record_refused() {
        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = Vec::new();
        let start = peer.begin_record(&mut wire).expect("begin");
        wire.extend_from_slice(&[b'h', b'i', APPLICATION_DATA, 0, 0, 0]);
        // end_record appends one more zero as the "content type": padding.
        peer.end_record(&mut wire, start, 0).expect("end");
        assert_eq!(open(&mut us, &mut wire).ok().expect("open").0, b"hi");

        let mut wire = Vec::new();
        let start = peer.begin_record(&mut wire).expect("begin");
        wire.extend_from_slice(&[0, 0]);
        peer.end_record(&mut wire, start, 0).expect("end");
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn close_notify_ends_reading_and_other_alerts_are_fatal() {
        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = sealed(&mut peer, b"last");
        peer.seal_message(ALERT, &[1, 0], &mut wire).expect("alert");
        let closed_at = wire.len();
        wire.extend(sealed(&mut peer, b"ignored"));
        let (data, opened, _) = open(&mut us, &mut wire).ok().expect("open");
        assert_eq!(data, b"last");
        assert_eq!(
            opened,
            Opened {
                consumed: closed_at,
                closed: true
            }
        );

        let (mut us, mut peer) = pair(suites()[0]);
        let mut wire = Vec::new();
        peer.seal_message(ALERT, &[2, 40], &mut wire)
            .expect("alert");
        assert_eq!(
            alert_of(open(&mut us, &mut wire)),
            0,
            "no alert answers an alert"
        );
        let mut wire = Vec::new();
        peer.seal_message(ALERT, &[2], &mut wire).expect("alert");
        assert_eq!(alert_of(open(&mut us, &mut wire)), DECODE_ERROR);
    }

    #[test]
    fn hostile_records_get_the_alert_they_call_for() {
        /// What a hostile peer sends, made with its keys.
        type Make = fn(&mut RecordLayer) -> Vec<u8>;
        let cases: [(&str, Make, u8); 6] = [
            (
                "a flipped bit",
                |peer| {
                    let mut wire = sealed(peer, b"data");
                    wire[HEADER + 1] ^= 1;
                    wire
                },
                BAD_RECORD_MAC,
            ),
            (
                "an unprotected alert",
                |_| vec![ALERT, 3, 3, 0, 2, 2, 40],
                UNEXPECTED_MESSAGE,
            ),
            (
                "a length past the limit, before its body came",
                |_| vec![APPLICATION_DATA, 3, 3, 0x48, 0x01],
                RECORD_OVERFLOW,
            ),
            (
                "an unknown content type",
                |peer| {
                    let mut wire = Vec::new();
                    peer.seal_message(99, b"x", &mut wire).expect("seal");
                    wire
                },
                UNEXPECTED_MESSAGE,
            ),
            (
                "a handshake message other than KeyUpdate",
                |peer| {
                    let mut wire = Vec::new();
                    peer.seal_message(HANDSHAKE, &[1, 0, 0, 0], &mut wire)
                        .expect("seal");
                    wire
                },
                UNEXPECTED_MESSAGE,
            ),
            (
                "a malformed KeyUpdate",
                |peer| {
                    let mut wire = Vec::new();
                    peer.seal_message(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 2], &mut wire)
                        .expect("seal");
                    wire
                },
                DECODE_ERROR,
            ),
        ];
        for (what, make, alert) in cases {
            let (mut us, mut peer) = pair(suites()[1]);
            let mut wire = make(&mut peer);
            assert_eq!(alert_of(open(&mut us, &mut wire)), alert, "{what}");
        }
    }

    #[test]
    fn handed_over_keys_must_match_the_captured_secrets() {
        // AES-256: rustls's AeadKey converts only from 32 bytes.
        let suite = suites()[1];
        let (client, server) = (secret(suite, 1), secret(suite, 2));
        let keys = |secret: &Secret| {
            let (key, iv) = suite.traffic_keys(secret).expect("keys");
            ConnectionTrafficSecrets::Aes256Gcm {
                key: rustls::crypto::cipher::AeadKey::from(key),
                iv: rustls::crypto::cipher::Iv::new(iv),
            }
        };
        let handed = || ExtractedSecrets {
            tx: (7, keys(&server)),
            rx: (9, keys(&client)),
        };
        let captured = |client: &Secret, server: &Secret| TrafficSecrets {
            client: Some(client.clone()),
            server: Some(server.clone()),
        };
        let layer = RecordLayer::new(handed(), &captured(&client, &server)).expect("matching");
        assert_eq!(layer.tx.seq, 7);
        assert!(matches!(layer.rx, Receiver::Unkeyed(9)));
        assert!(RecordLayer::new(handed(), &captured(&server, &client)).is_err());
        assert!(RecordLayer::new(handed(), &TrafficSecrets::default()).is_err());
    }

    #[test]
    fn the_fuzz_harness_holds_for_a_sweep_of_inputs() {
        // Hand-picked sequences, then a deterministic pseudo-random sweep
        // (the fuzz target explores further; see fuzz/run.sh).
        let picked: [&[u8]; 5] = [
            &[0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 1, 2, 1, 0],
            &[
                1, 3, 9, 2, 5, KEY_UPDATE, 0, 0, 1, 1, 3, 3, b'a', b'b', b'c',
            ],
            &[2, 1, 63, 0, 3, b'x', b'y', b'z', 4, 10, 1, 2, 3],
            &[0, 7, 0, 6, 0, 0, 1, b'q'],
            &[1, 0, 5, 5, 2, 77, 1, 0, 2, b'o', b'k'],
        ];
        for input in picked {
            fuzz_records(input);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..300 {
            let len = (state % 96) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            fuzz_records(&input);
        }
    }
}
