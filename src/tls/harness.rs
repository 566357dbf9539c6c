//! Test tools for the TLS 1.3 record layer (`records.rs`), for its unit
//! tests and its fuzz target (`fuzz/fuzz_targets/tls_records.rs`): a
//! made-up key schedule, so two `RecordLayer`s can talk without a
//! handshake (a server and its client, agreeing on every key after every
//! KeyUpdate); `Rfc`, what RFC 8446 says a server makes of the records a
//! client sends, written from the RFC and not from `records.rs`; and the
//! fuzz harness that checks one against the other.
//!
//! Compiled for tests and under cargo-fuzz only (`cfg(fuzzing)`).

use std::io::{self, IoSlice};

use ring::aead;

use super::records::{
    KeyBytes, KeySchedule, RecordLayer, ALERT, APPLICATION_DATA, BAD_RECORD_MAC, DECODE_ERROR,
    HANDSHAKE, HEADER, ILLEGAL_PARAMETER, KEY_UPDATE, KEY_UPDATE_NOT_REQUESTED, MAX_CIPHERTEXT,
    MAX_FRAGMENT, RECORD_OVERFLOW, UNEXPECTED_MESSAGE,
};

/// The three TLS 1.3 AEADs, for tests and the fuzz harness.
pub(super) const ALL_AEADS: [&aead::Algorithm; 3] = [
    &aead::AES_128_GCM,
    &aead::AES_256_GCM,
    &aead::CHACHA20_POLY1305,
];

/// A key schedule for tests and the fuzz harness: the key of (writer,
/// generation) is made up from those two, so the two ends of a made-up
/// session agree on every key after every KeyUpdate.
pub(super) struct MadeUp {
    /// Who seals with this side's sending key, and with its receiving key.
    writers: (u8, u8),
    /// KeyUpdates so far in each direction.
    pub(super) generations: (u32, u32),
}

impl MadeUp {
    pub(super) fn keys(aead: &'static aead::Algorithm, writer: u8, generation: u32) -> KeyBytes {
        let mut key = [0x5a_u8; 32];
        key[0] = writer;
        key[1..5].copy_from_slice(&generation.to_be_bytes());
        let mut iv = [0xa5_u8; 12];
        iv[0] = writer;
        iv[1..5].copy_from_slice(&generation.to_be_bytes());
        KeyBytes::new(aead, &key[..aead.key_len()], &iv).expect("lengths of the suite")
    }
}

impl KeySchedule for MadeUp {
    fn next_tx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)> {
        self.generations.0 += 1;
        Ok((0, MadeUp::keys(aead, self.writers.0, self.generations.0)))
    }

    fn next_rx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)> {
        self.generations.1 += 1;
        Ok((0, MadeUp::keys(aead, self.writers.1, self.generations.1)))
    }
}

/// Who seals in a made-up session.
const CLIENT: u8 = 1;
const SERVER: u8 = 2;

/// This side (the server) and its peer (the client, which sends with this
/// side's receiving keys and receives with its sending ones); sequence
/// numbers mid-stream.
pub(super) fn made_up_session(
    aead: &'static aead::Algorithm,
) -> (RecordLayer<MadeUp>, RecordLayer<MadeUp>) {
    let side = |writers: (u8, u8), seqs: (u64, u64)| {
        RecordLayer::with_keys(
            aead,
            (seqs.0, MadeUp::keys(aead, writers.0, 0)),
            (seqs.1, MadeUp::keys(aead, writers.1, 0)),
            MadeUp {
                writers,
                generations: (0, 0),
            },
            None,
        )
    };
    (
        side((SERVER, CLIENT), (3, 5)),
        side((CLIENT, SERVER), (5, 3)),
    )
}

/// What RFC 8446 says the server makes of the records a client sends, one
/// record at a time: the fuzz harness's oracle, written from the RFC and
/// not from the code above.
#[derive(Default)]
struct Rfc {
    /// How the stream has ended, if it has.
    end: Option<End>,
    /// Application data delivered so far.
    delivered: Vec<u8>,
    /// The handshake message begun in earlier records.
    partial: Vec<u8>,
    key_updates_in_a_row: u32,
    user_canceled: u32,
    /// A KeyUpdate asked this side to update; not yet answered.
    owed: bool,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum End {
    Closed,
    Fatal(u8),
}

impl Rfc {
    /// A record of `content_type` carrying `content`; true if it was a
    /// whole KeyUpdate (its sender moves to a new key after it).
    fn record(&mut self, content_type: u8, content: &[u8]) -> bool {
        if self.end.is_some() {
            return false;
        }
        let outcome = self.judge(content_type, content);
        match outcome {
            Ok(key_update) => key_update,
            Err(end) => {
                self.end = Some(end);
                false
            }
        }
    }

    fn judge(&mut self, content_type: u8, content: &[u8]) -> Result<bool, End> {
        if !self.partial.is_empty() && content_type != HANDSHAKE {
            return Err(End::Fatal(UNEXPECTED_MESSAGE));
        }
        match content_type {
            APPLICATION_DATA => {
                // Only data counts between KeyUpdates, not empty records.
                if !content.is_empty() {
                    self.key_updates_in_a_row = 0;
                }
                self.delivered.extend_from_slice(content);
                Ok(false)
            }
            ALERT => match content {
                [1 | 2, 0] => Err(End::Closed),
                [1 | 2, 90] => {
                    self.user_canceled += 1;
                    match self.user_canceled > 4 {
                        true => Err(End::Fatal(UNEXPECTED_MESSAGE)),
                        false => Ok(false),
                    }
                }
                [1 | 2, _] => Err(End::Fatal(0)),
                [_, _] => Err(End::Fatal(ILLEGAL_PARAMETER)),
                _ => Err(End::Fatal(DECODE_ERROR)),
            },
            HANDSHAKE if content.is_empty() => Err(End::Fatal(DECODE_ERROR)),
            HANDSHAKE => {
                self.partial.extend_from_slice(content);
                let message = &self.partial;
                if message[0] != KEY_UPDATE {
                    return Err(End::Fatal(UNEXPECTED_MESSAGE));
                }
                if message.len() >= 4 && message[1..4] != [0, 0, 1] {
                    return Err(End::Fatal(DECODE_ERROR));
                }
                match message.len() {
                    0..=4 => Ok(false),
                    5 => {
                        let request = message[4];
                        self.partial.clear();
                        if request > 1 {
                            return Err(End::Fatal(ILLEGAL_PARAMETER));
                        }
                        self.key_updates_in_a_row += 1;
                        if self.key_updates_in_a_row > 32 {
                            return Err(End::Fatal(UNEXPECTED_MESSAGE));
                        }
                        self.owed |= request == 1;
                        Ok(true)
                    }
                    _ => Err(End::Fatal(UNEXPECTED_MESSAGE)),
                }
            }
            _ => Err(End::Fatal(UNEXPECTED_MESSAGE)),
        }
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/tls_records.rs`): a client
/// seals a sequence of records the input describes, valid and hostile
/// (application data, padding, alerts, KeyUpdates alone, in a burst, split
/// over records or followed by more bytes, unknown content types, forged
/// and oversize records), and this side opens them fed in pieces, keeping
/// the unconsumed tail as `TlsStream` does; now and then this side writes
/// and the client opens that. What is delivered each way and how the
/// stream ends must be what RFC 8446 says (`Rfc`), and nothing may panic.
pub fn fuzz_records(data: &[u8]) {
    let [suite, cut, limit, ops @ ..] = data else {
        return;
    };
    let mut ops = ops;
    let (mut us, mut peer) = made_up_session(ALL_AEADS[usize::from(*suite) % 3]);
    // A small key lifetime here, so this side updates its key often. The
    // client updates only where the input says, so `Rfc` sees each of its
    // KeyUpdates.
    us.records_per_key = u64::from(*limit % 8) + 1;
    peer.records_per_key = u64::MAX;
    let step = usize::from(*cut).max(1);

    let mut rfc = Rfc::default();
    let mut wire = Vec::new();
    let mut feed = Feed::default();
    // Seals one record from the client and tells `Rfc`.
    let send =
        |peer: &mut RecordLayer<MadeUp>, rfc: &mut Rfc, wire: &mut Vec<u8>, ct: u8, body: &[u8]| {
            peer.seal_message(ct, body, wire).expect("seal");
            if rfc.record(ct, body) {
                peer.update_tx().expect("update");
            }
        };
    while let [kind, n, tail @ ..] = ops {
        let count = usize::from(*n);
        // A burst (9) takes no body: its count is `n` itself.
        let n = match kind % 11 {
            9 => 0,
            _ => count.min(tail.len()),
        };
        let (body, rest) = tail.split_at(n);
        ops = rest;
        if rfc.end.is_some() {
            break;
        }
        match kind % 11 {
            0 => {
                let before = wire.len();
                peer.seal(&[IoSlice::new(body)], usize::MAX, &mut wire)
                    .expect("seal");
                // One record per 16 KiB.
                for piece in body.chunks(MAX_FRAGMENT) {
                    rfc.record(APPLICATION_DATA, piece);
                }
                assert!(body.is_empty() || wire.len() > before);
            }
            1 => send(&mut peer, &mut rfc, &mut wire, ALERT, body),
            2 => send(&mut peer, &mut rfc, &mut wire, HANDSHAKE, body),
            3 => {
                // Application data, its content type, then zeros.
                let mut padded = body.to_vec();
                padded.push(APPLICATION_DATA);
                padded.extend(std::iter::repeat_n(0, body.len() % 7));
                peer.seal_message(0, &padded, &mut wire).expect("seal");
                rfc.record(APPLICATION_DATA, body);
            }
            4 => {
                wire.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 17 + n as u8 % 200]);
                wire.extend(std::iter::repeat_n(0x5a, 17 + n % 200));
                rfc.end.get_or_insert(End::Fatal(BAD_RECORD_MAC));
            }
            5 => {
                let content_type = match body.first() {
                    Some(&t) if ![0, ALERT, HANDSHAKE, APPLICATION_DATA].contains(&t) => t,
                    _ => 99,
                };
                send(&mut peer, &mut rfc, &mut wire, content_type, body);
            }
            6 => {
                wire.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0x48, 0x01]);
                rfc.end.get_or_insert(End::Fatal(RECORD_OVERFLOW));
            }
            7 => {
                // A KeyUpdate split over two or three records.
                let request = body.first().copied().unwrap_or(1) % 3;
                let message = [KEY_UPDATE, 0, 0, 1, request];
                let first = 1 + usize::from(body.get(1).copied().unwrap_or(0)) % 4;
                let second = first + usize::from(body.get(2).copied().unwrap_or(0)) % (6 - first);
                let pieces = [
                    &message[..first],
                    &message[first..second],
                    &message[second..],
                ];
                for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
                    send(&mut peer, &mut rfc, &mut wire, HANDSHAKE, piece);
                }
            }
            8 => {
                // A KeyUpdate with more bytes after it in its record.
                let mut message = KEY_UPDATE_NOT_REQUESTED.to_vec();
                message.extend_from_slice(body);
                message.push(1);
                send(&mut peer, &mut rfc, &mut wire, HANDSHAKE, &message);
            }
            9 => {
                // A burst of KeyUpdates with nothing between them.
                for _ in 0..count % 40 {
                    send(
                        &mut peer,
                        &mut rfc,
                        &mut wire,
                        HANDSHAKE,
                        &KEY_UPDATE_NOT_REQUESTED,
                    );
                }
            }
            _ => {
                // This side writes: what the client has sent so far is read
                // first, then the client must open this side's records and
                // find a KeyUpdate first if one was asked for.
                feed.all(&mut us, &mut wire, step);
                if feed.end.is_some() {
                    break;
                }
                let mut ours = Vec::new();
                let taken = us
                    .seal(&[IoSlice::new(body)], usize::MAX, &mut ours)
                    .expect("seal");
                assert_eq!(taken, body.len());
                if body.is_empty() {
                    assert!(ours.is_empty());
                    continue;
                }
                // The first record alone: a KeyUpdate if one is owed.
                let first = HEADER + usize::from(u16::from_be_bytes([ours[3], ours[4]]));
                let updates = peer.schedule.generations.1;
                let mut got = Vec::new();
                let mut deliver = |d: &[u8]| got.extend_from_slice(d);
                let opened = peer.open(&mut ours[..first], &mut deliver);
                assert!(
                    opened.is_ok_and(|o| o.consumed == first),
                    "the client refused our record"
                );
                if std::mem::take(&mut rfc.owed) {
                    assert_eq!(
                        peer.schedule.generations.1,
                        updates + 1,
                        "no KeyUpdate first"
                    );
                }
                let opened = peer.open(&mut ours[first..], &mut deliver);
                assert!(
                    opened.is_ok_and(|o| o.consumed == ours.len() - first),
                    "the client refused our records"
                );
                assert_eq!(got, body);
            }
        }
    }
    feed.all(&mut us, &mut wire, step);
    // An oversize header is refused before its body arrives; anything
    // else that ends the stream was a whole record.
    if feed.end.is_none() {
        assert!(feed.pending.len() < HEADER + MAX_CIPHERTEXT);
    }
    assert_eq!(feed.end, rfc.end);
    assert_eq!(feed.got, rfc.delivered);
}

/// The client's records on their way to this side, fed in pieces.
#[derive(Default)]
struct Feed {
    pending: Vec<u8>,
    got: Vec<u8>,
    end: Option<End>,
}

impl Feed {
    /// Opens `wire`, `step` bytes at a time, as far as the stream goes.
    fn all(&mut self, us: &mut RecordLayer<MadeUp>, wire: &mut Vec<u8>, step: usize) {
        for piece in wire.chunks(step) {
            if self.end.is_some() {
                break;
            }
            self.pending.extend_from_slice(piece);
            let got = &mut self.got;
            match us.open(&mut self.pending, &mut |d| got.extend_from_slice(d)) {
                Ok(opened) => {
                    assert!(opened.consumed <= self.pending.len());
                    self.pending.drain(..opened.consumed);
                    if opened.closed {
                        self.end = Some(End::Closed);
                    }
                }
                Err(fatal) => self.end = Some(End::Fatal(fatal.alert)),
            }
        }
        wire.clear();
    }
}
