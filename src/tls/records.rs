//! The TLS 1.3 record layer of an established connection.
//!
//! Once a TLS 1.3 handshake is over and rustls has sealed the connection's
//! first write (so a KeyUpdate it owes has gone out), rustls hands over the
//! traffic keys with their sequence numbers and keeps only its key
//! schedule: `dangerous_into_kernel_connection`, the API meant for kernel
//! TLS, whose `KernelConnection` derives every later key
//! (`update_tx_secret`, `update_rx_secret`). This file seals and opens the
//! records with ring's AEAD, as rustls would; it derives no key itself.
//! Why: rustls's connection state is ~3.3 KB of heap per connection that
//! an idle subscriber never uses.
//!
//! Per connection this keeps rustls's key schedule (~800 bytes) and, for
//! each direction, the raw key and IV and a sequence number. ring's
//! expanded key (544 bytes: the AES round keys and GHASH table) exists only
//! while its direction is busy: it is kept while the direction is used at
//! least once a second (`WARM_MS`), and otherwise built for the call that
//! needs it and wiped after (an idle subscriber's ping every few seconds).
//! Sealing writes each record straight from the frames into the output:
//! one copy, one record per 16 KiB.
//!
//! Covered (RFC 8446 §5, §4.6.3, §6, §7.2): application data (padding
//! stripped), alerts (close_notify ends reading; up to 4 user_canceled are
//! ignored; any other alert is fatal), KeyUpdate both ways (at most 32 in a
//! row without application data, as rustls and BoringSSL allow; one split
//! across records is joined; one not at the end of its record is refused),
//! and the key update this side makes before AES-GCM's confidentiality
//! limit. Anything else after the handshake is an `unexpected_message`.
//!
//! Invariants:
//! - a nonce is used once per key: each record takes the next sequence
//!   number, which never wraps (the key is updated long before), and a key
//!   update starts a new key at 0;
//! - a KeyUpdate the peer asks for goes out before this side's next
//!   record, sealed under the key it retires; several requests before that
//!   record are answered once (as rustls does);
//! - every key, IV and expanded key held here is wiped when dropped or
//!   replaced (`KeyBytes`, `RingKey`); none of them is `Clone`. rustls's
//!   own copies are wiped by rustls (its `AeadKey`, its key schedule) or
//!   here (`take_keys`).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use zeroize::Zeroize;

/// TLS record header: content type, legacy version, length.
pub(super) const HEADER: usize = 5;
pub(super) const TAG: usize = 16;
/// The largest plaintext a record carries (RFC 8446 §5.1).
pub(super) const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest protected record body a peer may send (§5.2): plaintext,
/// content type, padding and tag together.
pub(super) const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;

pub(super) const APPLICATION_DATA: u8 = 23;
pub(super) const ALERT: u8 = 21;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const KEY_UPDATE: u8 = 24;

/// Alert descriptions this side sends or reads.
const CLOSE_NOTIFY: u8 = 0;
pub(super) const UNEXPECTED_MESSAGE: u8 = 10;
pub(super) const BAD_RECORD_MAC: u8 = 20;
pub(super) const RECORD_OVERFLOW: u8 = 22;
pub(super) const ILLEGAL_PARAMETER: u8 = 47;
pub(super) const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;

/// KeyUpdate(update_not_requested): the one handshake message this side
/// sends after the handshake.
pub(super) const KEY_UPDATE_NOT_REQUESTED: [u8; 5] = [KEY_UPDATE, 0, 0, 1, 0];

/// KeyUpdates a peer may send in a row without application data between
/// them (rustls and BoringSSL allow 32; here, empty records do not count
/// as data); the next is `unexpected_message`.
pub const MAX_KEY_UPDATES_IN_A_ROW: u8 = 32;
/// user_canceled alerts accepted over a connection (rustls: 4 warnings).
const MAX_USER_CANCELED: u8 = 4;
/// AES-GCM may seal at most 2^24.5 records under one key (RFC 8446
/// §5.5); this side moves to a fresh key well before, at 2^24.
pub const AES_GCM_RECORDS_PER_KEY: u64 = 1 << 24;
/// ChaCha20-Poly1305 has no such limit; a fresh key long before the
/// sequence number could wrap.
const CHACHA_RECORDS_PER_KEY: u64 = 1 << 62;
/// A direction used again within this many milliseconds keeps ring's
/// expanded key.
const WARM_MS: u32 = 1000;

/// Where the keys after a KeyUpdate come from: rustls's key schedule
/// (`KernelConnection`), or the tests' and the fuzzer's stand-in.
pub trait KeySchedule {
    /// The next sending key and its first sequence number.
    fn next_tx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)>;
    /// The next receiving key and its first sequence number.
    fn next_rx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)>;
}

impl KeySchedule for KernelConnection<ServerConnectionData> {
    fn next_tx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)> {
        let (seq, secrets) = self.update_tx_secret().map_err(io::Error::other)?;
        Ok((seq, take_keys(secrets, aead)?))
    }

    fn next_rx(&mut self, aead: &'static aead::Algorithm) -> io::Result<(u64, KeyBytes)> {
        let (seq, secrets) = self.update_rx_secret().map_err(io::Error::other)?;
        Ok((seq, take_keys(secrets, aead)?))
    }
}

/// A traffic key and IV (RFC 8446 §7.3), wiped when dropped. The key is
/// 16 or 32 bytes (`aead.key_len()`), kept in 32.
pub struct KeyBytes {
    key: [u8; 32],
    iv: [u8; 12],
}

impl KeyBytes {
    /// From a key of `aead`'s length and a 12-byte IV.
    pub(super) fn new(aead: &'static aead::Algorithm, key: &[u8], iv: &[u8]) -> io::Result<Self> {
        let mut bytes = KeyBytes {
            key: [0; 32],
            iv: [0; 12],
        };
        if key.len() != aead.key_len() || iv.len() != bytes.iv.len() {
            return Err(io::Error::other(
                "TLS traffic key or IV of the wrong length",
            ));
        }
        bytes.key[..key.len()].copy_from_slice(key);
        bytes.iv.copy_from_slice(iv);
        Ok(bytes)
    }

    fn wipe(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// The AEAD a handed-over key is for, if this layer has it.
fn algorithm(secrets: &ConnectionTrafficSecrets) -> Option<&'static aead::Algorithm> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => Some(&aead::AES_128_GCM),
        ConnectionTrafficSecrets::Aes256Gcm { .. } => Some(&aead::AES_256_GCM),
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Some(&aead::CHACHA20_POLY1305),
        _ => None,
    }
}

/// Copies the key and IV out of what rustls handed over (for `aead`), and
/// wipes rustls's copy: its `AeadKey` wipes itself, its `Iv` does not.
fn take_keys(
    secrets: ConnectionTrafficSecrets,
    aead: &'static aead::Algorithm,
) -> io::Result<KeyBytes> {
    let mut slot = MaybeUninit::new(secrets);
    // SAFETY: `slot` was initialized just above; it is read here, dropped
    // once below, and after that only overwritten with zeros.
    let handed = unsafe { slot.assume_init_ref() };
    let taken = match handed {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }
            if algorithm(handed) == Some(aead) =>
        {
            KeyBytes::new(aead, key.as_ref(), iv.as_ref())
        }
        _ => Err(io::Error::other("TLS traffic key of another cipher suite")),
    };
    // SAFETY: initialized, and dropped only here; `zeroize` then writes
    // zeros over the dropped value's bytes, which `MaybeUninit` allows.
    unsafe { slot.assume_init_drop() };
    slot.zeroize();
    taken
}

/// ring's expanded key (AES round keys and GHASH table, or the ChaCha20
/// key), wiped when dropped: ring keeps no destructor of its own.
struct RingKey(MaybeUninit<LessSafeKey>);

impl RingKey {
    fn new(aead: &'static aead::Algorithm, keys: &KeyBytes) -> io::Result<RingKey> {
        let key = UnboundKey::new(aead, &keys.key[..aead.key_len()])
            .map_err(|_| io::Error::other("TLS traffic key of the wrong length"))?;
        Ok(RingKey(MaybeUninit::new(LessSafeKey::new(key))))
    }

    fn get(&self) -> &LessSafeKey {
        // SAFETY: initialized in `new`; only `drop` ends it.
        unsafe { self.0.assume_init_ref() }
    }
}

impl Drop for RingKey {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` and dropped only here; afterwards
        // its bytes are only overwritten with zeros.
        unsafe { self.0.assume_init_drop() };
        self.0.zeroize();
    }
}

/// Milliseconds on the monotonic clock, wrapping every 49 days: only short
/// differences are used. Read on every write, so the cheapest clock there
/// is (Linux's coarse one: a few milliseconds of resolution, no `rdtsc`),
/// and no `Instant` arithmetic.
fn clock_ms() -> u32 {
    #[cfg(target_os = "linux")]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(target_os = "linux"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given and nothing else;
    // it cannot fail for a monotonic clock (if it did, `now` stays zero and
    // a key is merely kept or wiped early).
    unsafe { libc::clock_gettime(CLOCK, &mut now) };
    (now.tv_sec as u32)
        .wrapping_mul(1000)
        .wrapping_add((now.tv_nsec / 1_000_000) as u32)
}

/// One direction's key: raw key and IV, where its sequence stands, and
/// ring's expanded key while the direction is busy.
struct Direction {
    keys: KeyBytes,
    seq: u64,
    expanded: Option<Box<RingKey>>,
    /// When the direction was last used (`clock_ms`).
    used_at: u32,
}

impl Direction {
    fn new(keys: KeyBytes, seq: u64, used_at: u32) -> Direction {
        Direction {
            keys,
            seq,
            expanded: None,
            used_at,
        }
    }

    /// Marks the direction used at `now`; true if it was used shortly
    /// before (then its expanded key is worth keeping).
    #[inline]
    fn touch(&mut self, now: u32) -> bool {
        let warm = now.wrapping_sub(self.used_at) < WARM_MS;
        self.used_at = now;
        warm
    }

    /// Wipes ring's expanded key unless the direction is busy.
    #[inline]
    fn cool_down(&mut self, warm: bool) {
        if !warm {
            self.expanded = None;
        }
    }

    /// ring's key, expanded if it is not at hand.
    #[inline]
    fn key(&mut self, aead: &'static aead::Algorithm) -> io::Result<&LessSafeKey> {
        if self.expanded.is_none() {
            self.expand(aead)?;
        }
        match &self.expanded {
            Some(key) => Ok(key.get()),
            None => unreachable!("expanded just above"),
        }
    }

    #[cold]
    fn expand(&mut self, aead: &'static aead::Algorithm) -> io::Result<()> {
        self.expanded = Some(Box::new(RingKey::new(aead, &self.keys)?));
        Ok(())
    }

    /// The next record's nonce: the IV XOR its sequence number (§5.3).
    #[inline]
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.keys.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("TLS sequence number exhausted"))?;
        let nonce = Nonce::assume_unique_for_key(nonce);
        Ok(nonce)
    }
}

/// A TLS 1.3 connection's records after the handshake; `K` is where the
/// keys after a KeyUpdate come from (rustls, outside tests).
pub struct RecordLayer<K = KernelConnection<ServerConnectionData>> {
    aead: &'static aead::Algorithm,
    tx: Direction,
    rx: Direction,
    /// Records sealed under one key before this side updates it.
    pub(super) records_per_key: u64,
    /// The peer asked for a KeyUpdate: this side's goes first next time.
    update_owed: bool,
    /// KeyUpdates received since the last record of application data
    /// that was not empty.
    key_updates_in_a_row: u8,
    user_canceled: u8,
    /// The first bytes of a handshake message that goes on in the next
    /// record (a KeyUpdate is 5 bytes, so at most 4 wait).
    partial: [u8; 4],
    partial_len: u8,
    pub(super) schedule: K,
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
    /// The record layer for the keys rustls handed over, with rustls's key
    /// schedule for the keys after them. `records_per_key`: the test-only
    /// lower limit (`server.tls.testing_records_per_key`).
    pub fn handed_over(
        handed: ExtractedSecrets,
        schedule: KernelConnection<ServerConnectionData>,
        records_per_key: Option<u64>,
    ) -> io::Result<RecordLayer> {
        let ExtractedSecrets {
            tx: (tx_seq, tx),
            rx: (rx_seq, rx),
        } = handed;
        let aead = algorithm(&tx)
            .ok_or_else(|| io::Error::other("TLS cipher suite without a record layer here"))?;
        let tx = take_keys(tx, aead)?;
        let rx = take_keys(rx, aead)?;
        Ok(RecordLayer::with_keys(
            aead,
            (tx_seq, tx),
            (rx_seq, rx),
            schedule,
            records_per_key,
        ))
    }
}

impl<K: KeySchedule> RecordLayer<K> {
    /// From the current keys of both directions and their sequence numbers.
    pub(super) fn with_keys(
        aead: &'static aead::Algorithm,
        (tx_seq, tx): (u64, KeyBytes),
        (rx_seq, rx): (u64, KeyBytes),
        schedule: K,
        records_per_key: Option<u64>,
    ) -> RecordLayer<K> {
        let limit = match aead == &aead::CHACHA20_POLY1305 {
            true => CHACHA_RECORDS_PER_KEY,
            false => AES_GCM_RECORDS_PER_KEY,
        };
        // Long ago: the first use counts as cold.
        let idle = clock_ms().wrapping_sub(WARM_MS);
        RecordLayer {
            aead,
            tx: Direction::new(tx, tx_seq, idle),
            rx: Direction::new(rx, rx_seq, idle),
            records_per_key: records_per_key.map_or(limit, |n| n.clamp(1, limit)),
            update_owed: false,
            key_updates_in_a_row: 0,
            user_canceled: 0,
            partial: [0; 4],
            partial_len: 0,
            schedule,
        }
    }

    /// Appends to `out` the records carrying the slices' bytes, at most
    /// `limit` of them. Returns how many bytes were taken.
    pub fn seal(
        &mut self,
        bufs: &[IoSlice<'_>],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        self.seal_at(clock_ms(), bufs, limit, out)
    }

    fn seal_at(
        &mut self,
        now: u32,
        bufs: &[IoSlice<'_>],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let warm = self.tx.touch(now);
        let result = self.seal_records(bufs, limit, out);
        self.tx.cool_down(warm);
        result
    }

    fn seal_records(
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

    /// Appends a fatal alert.
    pub fn seal_alert(&mut self, description: u8, out: &mut Vec<u8>) -> io::Result<()> {
        self.seal_message(ALERT, &[2, description], out)
    }

    /// Appends close_notify (RFC 8446 §6.1: before closing the write side).
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.seal_message(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// Seals one whole message of `content_type` as one record.
    pub(super) fn seal_message(
        &mut self,
        content_type: u8,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let warm = self.tx.touch(clock_ms());
        let result = self.begin_record(out).and_then(|start| {
            out.extend_from_slice(body);
            self.end_record(out, start, content_type)
        });
        self.tx.cool_down(warm);
        result
    }

    /// Writes a record header to `out`, first moving to a fresh key if the
    /// peer asked for it or the current one has sealed its share. Returns
    /// where the record starts.
    fn begin_record(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        if self.update_owed || self.tx.seq >= self.records_per_key {
            // KeyUpdate(update_not_requested), sealed under the old key.
            let start = out.len();
            out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
            out.extend_from_slice(&KEY_UPDATE_NOT_REQUESTED);
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
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key(self.aead)?
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| io::Error::other("TLS record sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Moves to the next sending key (rustls derives it); the old one is
    /// wiped.
    pub(super) fn update_tx(&mut self) -> io::Result<()> {
        let (seq, keys) = self.schedule.next_tx(self.aead)?;
        self.tx = Direction::new(keys, seq, self.tx.used_at);
        self.update_owed = false;
        Ok(())
    }

    fn update_rx(&mut self) -> io::Result<()> {
        let (seq, keys) = self.schedule.next_rx(self.aead)?;
        self.rx = Direction::new(keys, seq, self.rx.used_at);
        Ok(())
    }

    /// Opens the whole records at the front of `input` (decrypting in
    /// place); application data goes to `deliver`. A record not yet
    /// complete is left for the next call.
    pub fn open(
        &mut self,
        input: &mut [u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<Opened, Fatal> {
        self.open_at(clock_ms(), input, deliver)
    }

    fn open_at(
        &mut self,
        now: u32,
        input: &mut [u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<Opened, Fatal> {
        let warm = self.rx.touch(now);
        let result = self.open_records(input, deliver);
        self.rx.cool_down(warm);
        result
    }

    fn open_records(
        &mut self,
        input: &mut [u8],
        deliver: &mut dyn FnMut(&[u8]),
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
            let nonce = self.rx.next_nonce().map_err(internal)?;
            let plain = self
                .rx
                .key(self.aead)
                .map_err(internal)?
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
            if self.partial_len > 0 && content_type != HANDSHAKE {
                // §5.1: a handshake message's records come one after the
                // other.
                return Err(fatal(
                    UNEXPECTED_MESSAGE,
                    "a TLS record inside a split handshake message",
                ));
            }
            match content_type {
                APPLICATION_DATA => {
                    // Empty records do not count as data between KeyUpdates:
                    // they would let a peer have keys derived for nothing.
                    if !content.is_empty() {
                        self.key_updates_in_a_row = 0;
                    }
                    deliver(content);
                }
                ALERT => opened.closed = self.alert(content)?,
                HANDSHAKE => self.handshake(content)?,
                _ => return Err(fatal(UNEXPECTED_MESSAGE, "unexpected TLS content type")),
            }
        }
        Ok(opened)
    }

    /// An alert: true for close_notify.
    fn alert(&mut self, content: &[u8]) -> Result<bool, Fatal> {
        match content {
            [1 | 2, CLOSE_NOTIFY] => Ok(true),
            // user_canceled is followed by close_notify.
            [1 | 2, USER_CANCELED] if self.user_canceled < MAX_USER_CANCELED => {
                self.user_canceled += 1;
                Ok(false)
            }
            [1 | 2, USER_CANCELED] => Err(fatal(
                UNEXPECTED_MESSAGE,
                "too many TLS user_canceled alerts",
            )),
            [1 | 2, _] => Err(fatal(0, "the peer sent a fatal TLS alert")),
            [_, _] => Err(fatal(ILLEGAL_PARAMETER, "TLS alert of an unknown level")),
            _ => Err(fatal(DECODE_ERROR, "malformed TLS alert")),
        }
    }

    /// A handshake record: the one post-handshake message a client may
    /// send is KeyUpdate, whole or split over records, and it must end its
    /// record (the keys change after it, §5.1).
    fn handshake(&mut self, content: &[u8]) -> Result<(), Fatal> {
        if content.is_empty() {
            return Err(fatal(DECODE_ERROR, "empty TLS handshake record"));
        }
        let held = usize::from(self.partial_len);
        let total = held + content.len();
        let partial = self.partial;
        let byte = |i: usize| match i < held {
            true => partial[i],
            false => content[i - held],
        };
        if byte(0) != KEY_UPDATE {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "unexpected TLS handshake message after the handshake",
            ));
        }
        if total >= 4 && [byte(1), byte(2), byte(3)] != [0, 0, 1] {
            return Err(fatal(DECODE_ERROR, "malformed TLS KeyUpdate"));
        }
        if total < KEY_UPDATE_NOT_REQUESTED.len() {
            // The rest comes in the next record.
            self.partial[held..total].copy_from_slice(content);
            self.partial_len = total as u8;
            return Ok(());
        }
        if total > KEY_UPDATE_NOT_REQUESTED.len() {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "TLS KeyUpdate not at the end of its record",
            ));
        }
        let request = byte(4);
        self.partial_len = 0;
        if request > 1 {
            return Err(fatal(
                ILLEGAL_PARAMETER,
                "TLS KeyUpdate with an unknown request",
            ));
        }
        if self.key_updates_in_a_row >= MAX_KEY_UPDATES_IN_A_ROW {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "too many TLS KeyUpdates without application data",
            ));
        }
        self.key_updates_in_a_row += 1;
        self.update_rx().map_err(internal)?;
        if request == 1 {
            self.update_owed = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::harness::{fuzz_records, made_up_session, MadeUp, ALL_AEADS};
    use super::*;

    type Layer = RecordLayer<MadeUp>;

    /// What `to` makes of `wire`: the data, and how it ended.
    fn open(to: &mut Layer, wire: &mut [u8]) -> Result<(Vec<u8>, Opened), Fatal> {
        let mut data = Vec::new();
        let opened = to.open(wire, &mut |d| data.extend_from_slice(d))?;
        Ok((data, opened))
    }

    fn sealed(from: &mut Layer, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let taken = from
            .seal(&[IoSlice::new(data)], usize::MAX, &mut out)
            .expect("seal");
        assert_eq!(taken, data.len());
        out
    }

    /// One handshake record from `from`.
    fn handshake_record(from: &mut Layer, message: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        from.seal_message(HANDSHAKE, message, &mut wire)
            .expect("seal");
        wire
    }

    /// The alert a fatal error calls for.
    fn alert_of(result: Result<(Vec<u8>, Opened), Fatal>) -> u8 {
        match result {
            Ok(_) => panic!("opened what should have been refused"),
            Err(fatal) => fatal.alert,
        }
    }

    #[test]
    fn slices_round_trip_in_records_of_at_most_16_kib() {
        for aead in ALL_AEADS {
            let (mut us, mut peer) = made_up_session(aead);
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
            let (data, opened) = open(&mut peer, &mut wire).ok().expect("open");
            assert_eq!(&data[..11], b"hello world");
            assert_eq!(&data[11..], &big[..]);
            assert_eq!(opened.consumed, wire.len());
            assert!(!opened.closed);
        }
    }

    #[test]
    fn seal_takes_at_most_its_limit() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = Vec::new();
        let bufs = [IoSlice::new(b"abc"), IoSlice::new(b"defgh")];
        let taken = us.seal(&bufs, 5, &mut wire).expect("seal");
        assert_eq!(taken, 5);
        assert_eq!(open(&mut peer, &mut wire).ok().expect("open").0, b"abcde");
    }

    #[test]
    fn a_record_not_yet_whole_waits() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = sealed(&mut us, b"one");
        wire.extend(sealed(&mut us, b"two"));
        let first = wire.len() / 2;
        for cut in [0, 3, first - 1] {
            let (data, opened) = open(&mut peer, &mut wire.clone()[..cut])
                .ok()
                .expect("open");
            assert!(data.is_empty() && opened.consumed == 0, "cut at {cut}");
        }
        let (data, opened) = open(&mut peer, &mut wire[..first + 4]).ok().expect("open");
        assert_eq!((&data[..], opened.consumed), (&b"one"[..], first));
        let (data, _) = open(&mut peer, &mut wire[first..]).ok().expect("open");
        assert_eq!(data, b"two");
    }

    #[test]
    fn the_key_is_updated_before_its_record_limit() {
        for aead in ALL_AEADS {
            let (mut us, mut peer) = made_up_session(aead);
            us.records_per_key = 4;
            let mut wire = Vec::new();
            for i in 0..10u8 {
                wire.extend(sealed(&mut us, &[i; 3]));
            }
            // Sequence numbers 3, then a KeyUpdate at 4 and every 4 after.
            assert!(us.tx.seq < 4);
            assert_eq!(us.schedule.generations.0, 3);
            let (data, opened) = open(&mut peer, &mut wire).ok().expect("open");
            assert_eq!(data, (0..10u8).flat_map(|i| [i; 3]).collect::<Vec<_>>());
            assert_eq!(opened.consumed, wire.len());
            assert_eq!(peer.schedule.generations.1, 3, "the peer followed");
            assert!(!peer.update_owed, "update_not_requested needs no answer");
        }
    }

    #[test]
    fn a_key_update_the_peer_asks_for_goes_out_before_the_next_record() {
        for aead in ALL_AEADS {
            let (mut us, mut peer) = made_up_session(aead);
            let mut wire = handshake_record(&mut peer, &[KEY_UPDATE, 0, 0, 1, 1]);
            peer.update_tx().expect("update");
            wire.extend(sealed(&mut peer, b"after"));
            let (data, _) = open(&mut us, &mut wire).ok().expect("open");
            assert_eq!(data, b"after");
            assert_eq!(us.schedule.generations, (0, 1), "owed, not yet sent");
            let mut reply = sealed(&mut us, b"answer");
            assert_eq!(us.schedule.generations, (1, 1));
            let (data, _) = open(&mut peer, &mut reply).ok().expect("open");
            assert_eq!(data, b"answer");
            assert_eq!(peer.schedule.generations.1, 1);
        }
    }

    #[test]
    fn requests_before_one_write_are_answered_once() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = Vec::new();
        for _ in 0..3 {
            wire.extend(handshake_record(&mut peer, &[KEY_UPDATE, 0, 0, 1, 1]));
            peer.update_tx().expect("update");
            wire.extend(sealed(&mut peer, b"x"));
        }
        open(&mut us, &mut wire).ok().expect("open");
        let mut reply = sealed(&mut us, b"y");
        assert_eq!(us.schedule.generations, (1, 3));
        assert_eq!(open(&mut peer, &mut reply).ok().expect("open").0, b"y");
    }

    #[test]
    fn thirty_three_key_updates_in_a_row_are_refused() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[2]);
        let burst = |peer: &mut Layer, n: usize| {
            let mut wire = Vec::new();
            for _ in 0..n {
                wire.extend(handshake_record(peer, &KEY_UPDATE_NOT_REQUESTED));
                peer.update_tx().expect("update");
            }
            wire
        };
        // 32, application data, 32 more: fine.
        let mut wire = burst(&mut peer, 32);
        wire.extend(sealed(&mut peer, b"data"));
        wire.extend(burst(&mut peer, 32));
        assert_eq!(open(&mut us, &mut wire).ok().expect("open").0, b"data");
        // The 33rd in a row is not, empty application data between or not.
        let mut wire = sealed(&mut peer, b"");
        peer.seal_message(APPLICATION_DATA, b"", &mut wire)
            .expect("an empty record");
        wire.extend(burst(&mut peer, 1));
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn a_key_update_split_over_records_is_joined() {
        let message = [KEY_UPDATE, 0, 0, 1, 1];
        for cuts in [&[1][..], &[2], &[3], &[4], &[1, 2], &[2, 4], &[1, 2, 3, 4]] {
            let (mut us, mut peer) = made_up_session(ALL_AEADS[1]);
            let mut bounds = vec![0];
            bounds.extend_from_slice(cuts);
            bounds.push(message.len());
            // One open() per record: the join spans calls.
            for piece in bounds.windows(2) {
                let mut wire = handshake_record(&mut peer, &message[piece[0]..piece[1]]);
                let (data, opened) = open(&mut us, &mut wire).ok().expect("a piece");
                assert!(data.is_empty() && opened.consumed == wire.len());
            }
            peer.update_tx().expect("update");
            let mut wire = sealed(&mut peer, b"after");
            assert_eq!(
                open(&mut us, &mut wire).ok().expect("open").0,
                b"after",
                "{cuts:?}"
            );
            assert!(us.update_owed, "{cuts:?}");
        }
    }

    #[test]
    fn a_split_handshake_message_must_not_be_interrupted() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = handshake_record(&mut peer, &[KEY_UPDATE, 0]);
        wire.extend(sealed(&mut peer, b"in between"));
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);

        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = handshake_record(&mut peer, &[KEY_UPDATE, 0, 0]);
        peer.seal_alert(40, &mut wire).expect("alert");
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn a_key_update_must_end_its_record() {
        for message in [
            &[KEY_UPDATE, 0, 0, 1, 0, 23][..],
            &[KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0],
        ] {
            let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
            let mut wire = handshake_record(&mut peer, message);
            assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
        }
        // Also when the record finishing a split message goes on.
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = handshake_record(&mut peer, &[KEY_UPDATE, 0]);
        wire.extend(handshake_record(&mut peer, &[0, 1, 0, 99]));
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn padding_is_stripped_and_an_all_padding_record_refused() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = Vec::new();
        // end_record appends one more zero as the "content type": padding.
        peer.seal_message(0, &[b'h', b'i', APPLICATION_DATA, 0, 0, 0], &mut wire)
            .expect("seal");
        assert_eq!(open(&mut us, &mut wire).ok().expect("open").0, b"hi");

        let mut wire = Vec::new();
        peer.seal_message(0, &[0, 0], &mut wire).expect("seal");
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn close_notify_ends_reading_and_other_alerts_are_fatal() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = sealed(&mut peer, b"last");
        peer.seal_close_notify(&mut wire).expect("alert");
        let closed_at = wire.len();
        wire.extend(sealed(&mut peer, b"ignored"));
        let (data, opened) = open(&mut us, &mut wire).ok().expect("open");
        assert_eq!(data, b"last");
        assert_eq!(
            opened,
            Opened {
                consumed: closed_at,
                closed: true
            }
        );

        let alert = |body: &[u8]| {
            let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
            let mut wire = Vec::new();
            peer.seal_message(ALERT, body, &mut wire).expect("alert");
            alert_of(open(&mut us, &mut wire))
        };
        assert_eq!(alert(&[2, 40]), 0, "no alert answers an alert");
        assert_eq!(alert(&[2]), DECODE_ERROR);
        assert_eq!(alert(&[3, 40]), ILLEGAL_PARAMETER, "an unknown level");
    }

    #[test]
    fn user_canceled_is_ignored_four_times() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let mut wire = Vec::new();
        for _ in 0..4 {
            peer.seal_message(ALERT, &[1, USER_CANCELED], &mut wire)
                .expect("alert");
        }
        wire.extend(sealed(&mut peer, b"still here"));
        assert_eq!(
            open(&mut us, &mut wire).ok().expect("open").0,
            b"still here"
        );
        let mut wire = Vec::new();
        peer.seal_message(ALERT, &[1, USER_CANCELED], &mut wire)
            .expect("alert");
        assert_eq!(alert_of(open(&mut us, &mut wire)), UNEXPECTED_MESSAGE);
    }

    #[test]
    fn hostile_records_get_the_alert_they_call_for() {
        /// What a hostile peer sends, made with its keys.
        type Make = fn(&mut Layer) -> Vec<u8>;
        let cases: [(&str, Make, u8); 9] = [
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
                "a changed header",
                |peer| {
                    let mut wire = sealed(peer, b"data");
                    wire[2] = 1;
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
                |peer| handshake_record(peer, &[1, 0, 0, 0]),
                UNEXPECTED_MESSAGE,
            ),
            (
                "a KeyUpdate of the wrong length",
                |peer| handshake_record(peer, &[KEY_UPDATE, 0, 0, 2, 0, 0]),
                DECODE_ERROR,
            ),
            (
                "a KeyUpdate with an unknown request",
                |peer| handshake_record(peer, &[KEY_UPDATE, 0, 0, 1, 2]),
                ILLEGAL_PARAMETER,
            ),
            (
                "an empty handshake record",
                |peer| handshake_record(peer, &[]),
                DECODE_ERROR,
            ),
        ];
        for (what, make, alert) in cases {
            let (mut us, mut peer) = made_up_session(ALL_AEADS[1]);
            let mut wire = make(&mut peer);
            assert_eq!(alert_of(open(&mut us, &mut wire)), alert, "{what}");
        }
    }

    #[test]
    fn ring_keys_are_kept_only_while_busy() {
        let (mut us, mut peer) = made_up_session(ALL_AEADS[0]);
        let seal_at = |us: &mut Layer, now: u32| {
            let mut wire = Vec::new();
            us.seal_at(now, &[IoSlice::new(b"x")], usize::MAX, &mut wire)
                .expect("seal");
            wire
        };
        // The first write after a quiet spell builds the key for itself.
        let mut wire = seal_at(&mut us, 10_000);
        assert!(us.tx.expanded.is_none());
        // Writes within a second of each other keep it.
        wire.extend(seal_at(&mut us, 10_400));
        assert!(us.tx.expanded.is_some());
        wire.extend(seal_at(&mut us, 11_200));
        assert!(us.tx.expanded.is_some());
        // A write after a quiet spell wipes it after use.
        wire.extend(seal_at(&mut us, 20_000));
        assert!(us.tx.expanded.is_none());
        // The same for reading.
        peer.rx.touch(0);
        let mut data = Vec::new();
        let opened = peer.open_at(5_000, &mut wire, &mut |d| data.extend_from_slice(d));
        assert!(opened.is_ok() && data == b"xxxx");
        assert!(peer.rx.expanded.is_none());
        let mut wire = seal_at(&mut us, 20_100);
        let opened = peer.open_at(5_500, &mut wire, &mut |d| data.extend_from_slice(d));
        assert!(opened.is_ok() && data == b"xxxxx");
        assert!(peer.rx.expanded.is_some());
    }

    #[test]
    fn keys_are_wiped_when_dropped() {
        let aead = ALL_AEADS[0];
        let mut keys = KeyBytes::new(aead, &[7; 16], &[9; 12]).expect("keys");
        keys.wipe();
        assert_eq!((keys.key, keys.iv), ([0; 32], [0; 12]));

        let keys = KeyBytes::new(aead, &[7; 16], &[9; 12]).expect("keys");
        let mut ring = std::mem::ManuallyDrop::new(RingKey::new(aead, &keys).expect("key"));
        let bytes = |ring: &RingKey| {
            let size = std::mem::size_of::<RingKey>();
            // SAFETY: reads the bytes of a live allocation of that size;
            // after the drop below they are the zeros it wrote.
            unsafe { std::slice::from_raw_parts(ring as *const RingKey as *const u8, size) }
                .to_vec()
        };
        assert!(bytes(&ring).iter().any(|&b| b != 0), "an expanded key");
        // SAFETY: dropped once, and only read as bytes after.
        unsafe { std::mem::ManuallyDrop::drop(&mut ring) };
        assert!(bytes(&ring).iter().all(|&b| b == 0), "wiped");
    }

    #[test]
    fn handed_over_keys_must_be_of_their_suite() {
        use rustls::crypto::cipher::{AeadKey, Iv};
        let keys = |key: [u8; 32]| ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from(key),
            iv: Iv::new([1; 12]),
        };
        let taken = take_keys(keys([3; 32]), &aead::AES_256_GCM).expect("keys");
        assert_eq!((taken.key, taken.iv), ([3; 32], [1; 12]));
        assert!(take_keys(keys([3; 32]), &aead::AES_128_GCM).is_err());
        assert!(KeyBytes::new(&aead::AES_128_GCM, &[0; 32], &[0; 12]).is_err());
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let (mut us, _) = made_up_session(ALL_AEADS[2]);
        us.tx.seq = u64::MAX;
        assert!(us.tx.next_nonce().is_err());
        // ChaCha20 updates its key long before.
        assert_eq!(us.records_per_key, CHACHA_RECORDS_PER_KEY);
    }

    #[test]
    fn the_fuzz_harness_holds_for_a_sweep_of_inputs() {
        // Hand-picked sequences, then a deterministic pseudo-random sweep
        // (the fuzz target explores further; see fuzz/run.sh).
        let picked: [&[u8]; 9] = [
            &[0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 1, 2, 1, 0],
            &[
                1, 3, 9, 2, 5, KEY_UPDATE, 0, 0, 1, 1, 3, 3, b'a', b'b', b'c', 10, 2, b'o', b'k',
            ],
            &[2, 1, 63, 0, 3, b'x', b'y', b'z', 4, 10, 1, 2, 3],
            &[0, 7, 0, 6, 0, 0, 1, b'q'],
            &[1, 0, 5, 5, 2, 77, 1, 0, 2, b'o', b'k'],
            // A split KeyUpdate asking for an answer, then this side writes.
            &[0, 2, 3, 7, 3, 1, 2, 1, 0, 1, b'a', 10, 3, b'b', b'c', b'd'],
            // A KeyUpdate with a byte after it in its record.
            &[1, 5, 0, 8, 1, 0],
            // 35 KeyUpdates in a row: refused at the 33rd.
            &[2, 4, 4, 9, 35],
            // 30, data, 30: fine; then this side writes.
            &[0, 9, 1, 9, 30, 0, 1, b'd', 9, 30, 10, 1, b'e'],
        ];
        for input in picked {
            fuzz_records(input);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..400 {
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
