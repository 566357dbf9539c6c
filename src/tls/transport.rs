//! TLS inside the reactor: loading the PEM certificate chain and key into a
//! rustls server config, and the `Transport` a connection reads and writes,
//! plain TCP or rustls over TCP, both non-blocking.
//!
//! TLS runs on rustls's unbuffered API: rustls keeps only the session
//! (keys, handshake state); the bytes in flight are ours. Records are read
//! into, and encrypted into, scratch buffers shared by every connection of
//! the loop's one thread, so an idle connection holds no buffer at all.
//! A connection keeps bytes of its own only while they wait (`Held`): the
//! tail of a record not yet complete, plaintext its reader had no room
//! for, records the socket did not take. Each is freed once empty, and
//! the box holding them once all three are.
//!
//! A write encrypts what it is given (at most `MAX_PLAINTEXT_PER_WRITE`,
//! one record per 16 KiB) and hands the records to the socket in one
//! `write`; while records are still waiting for the socket it takes
//! nothing more, so the connection's own output queue stays the one place
//! where pending output is counted and capped.
//!
//! A TLS 1.3 connection leaves rustls right after rustls has sealed its
//! first write after the handshake (when nothing received waits in
//! between; a KeyUpdate rustls owes goes out with that write): from then
//! on `records.rs` seals and opens its records with the keys rustls hands
//! over, rustls's key schedule derives the keys after every KeyUpdate, and
//! the rest of the rustls state (~2.5 KB) is dropped. TLS 1.2, and every
//! connection with `server.tls.record_layer: rustls`, stays on rustls
//! throughout.
//!
//! An orderly close (`Transport::close`) sends the rest of the records a
//! write started and then close_notify; after a fatal alert, nothing more.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{CipherSuiteCommon, SupportedCipherSuite, Tls13CipherSuite};

use super::error::{Cause, TlsError};
use super::records::{Fatal, RecordLayer};
use crate::config::{RecordLayerKind, TlsConfig};

/// Plaintext encrypted by one `write` at most: four full records.
const MAX_PLAINTEXT_PER_WRITE: usize = 64 * 1024;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 32 * 1024;
/// Received bytes a connection may hold before they make a whole record or
/// handshake message (rustls refuses handshake messages over 64 KiB).
const MAX_INCOMING: usize = 64 * 1024 + 18 * 1024;
/// TLS record header, and the most a record adds to its plaintext (TLS 1.2
/// AES-GCM: explicit nonce and tag; TLS 1.3: content type and tag).
const RECORD_OVERHEAD: usize = 5 + 8 + 16 + 1;
const MAX_FRAGMENT: usize = 16 * 1024;

/// What the connections of a TLS listener share: rustls's configuration,
/// and which record layer their TLS 1.3 records go through.
pub struct ServerConfig {
    rustls: Arc<rustls::ServerConfig>,
    layer: Layer,
}

/// Whether a TLS 1.3 connection moves to `records.rs` after its first write.
#[derive(Debug, Clone, Copy)]
enum Layer {
    /// Stays on rustls.
    Rustls,
    /// Moves; a test may lower how many records are sealed per key.
    Compact { records_per_key: Option<u64> },
}

impl ServerConfig {
    /// rustls's configuration (for tests and benchmarks).
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.rustls
    }
}

/// Builds the TLS config from `server.tls`; errors name the file.
pub fn load_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let read_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let failed = |what, source: Option<Cause>| TlsError::Certificates {
            path: path.to_owned(),
            what,
            source,
        };
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| failed("cannot read certificate file", Some(Box::new(e))))?
            .collect::<Result<_, _>>()
            .map_err(|e| failed("invalid PEM in", Some(Box::new(e))))?;
        if certs.is_empty() {
            return Err(failed("no certificate found in", None));
        }
        Ok(certs)
    };
    let mut certs = read_certs(&tls.cert)?;
    if let Some(chain) = &tls.chain {
        certs.extend(read_certs(chain)?);
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| TlsError::Key {
        path: tls.key.clone(),
        source: Box::new(e),
    })?;
    let mut cipher_suites = preferred_cipher_suites();
    if let Some(records) = tls.testing_records_per_key {
        cipher_suites = with_record_limit(cipher_suites, records);
    }
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup {
            what: "the protocol versions",
            source: Box::new(e),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch {
            key: tls.key.clone(),
            cert: tls.cert.clone(),
            source: Box::new(e),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server's order, not the client's: every subscriber's stream is
    // sealed here, so the suite cheapest for this CPU is worth choosing.
    config.ignore_client_order = true;
    // TLS 1.3 connections move to our record layer after the handshake
    // (records.rs): rustls hands over the keys and its key schedule.
    let layer = match tls.record_layer {
        RecordLayerKind::Compact => Layer::Compact {
            records_per_key: tls.testing_records_per_key,
        },
        RecordLayerKind::Rustls => Layer::Rustls,
    };
    config.enable_secret_extraction = matches!(layer, Layer::Compact { .. });
    // Stateless session tickets (a key rotated by rustls, 12 h life): any
    // number of clients can resume, and the server keeps nothing per
    // session. The default, a 256-entry session cache holding two tickets
    // per client, failed every resumption once ~128 clients came back at
    // once (each full handshake evicting the next client's ticket).
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Setup {
        what: "session tickets",
        source: Box::new(e),
    })?;
    Ok(Arc::new(ServerConfig {
        rustls: Arc::new(config),
        layer,
    }))
}

/// The TLS 1.3 suites with their confidentiality limit lowered to
/// `records` (`server.tls.testing_records_per_key`, for tests only), so
/// rustls's own key update comes every `records` records on connections
/// that stay on rustls. rustls takes suites as `'static`: each is made
/// once per value and kept.
fn with_record_limit(suites: Vec<SupportedCipherSuite>, records: u64) -> Vec<SupportedCipherSuite> {
    type Made = Vec<(u64, rustls::CipherSuite, &'static Tls13CipherSuite)>;
    static MADE: std::sync::Mutex<Made> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    suites
        .into_iter()
        .map(|suite| {
            let SupportedCipherSuite::Tls13(tls13) = suite else {
                return suite;
            };
            let id = tls13.common.suite;
            let limited = match made.iter().find(|(r, s, _)| (*r, *s) == (records, id)) {
                Some((_, _, limited)) => *limited,
                None => {
                    let limited: &'static Tls13CipherSuite =
                        Box::leak(Box::new(Tls13CipherSuite {
                            common: CipherSuiteCommon {
                                confidentiality_limit: records
                                    .min(tls13.common.confidentiality_limit),
                                ..tls13.common
                            },
                            ..*tls13
                        }));
                    made.push((records, id, limited));
                    limited
                }
            };
            SupportedCipherSuite::Tls13(limited)
        })
        .collect()
}

/// The cipher suites in this server's order of preference: AES-128-GCM
/// first where the CPU has AES and carry-less multiply instructions (there
/// it seals ~8 % cheaper than AES-256-GCM, with 128-bit security), else
/// ChaCha20-Poly1305 first (software AES is slow and not constant-time).
/// The same rank orders the TLS 1.3 and the TLS 1.2 suites.
pub fn preferred_cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::CipherSuite as S;
    let aes_hardware = aes_hardware();
    let rank = |suite: &rustls::SupportedCipherSuite| match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => match aes_hardware {
            true => 0,
            false => 1,
        },
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => match aes_hardware {
            true => 2,
            false => 0,
        },
        _ => match aes_hardware {
            true => 1,
            false => 2,
        },
    };
    let mut suites = rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec();
    // Stable: TLS 1.3 suites keep coming before TLS 1.2 ones of a rank.
    suites.sort_by_key(|suite| (suite.version() != &rustls::version::TLS13, rank(suite)));
    suites
}

/// Whether ring seals AES-GCM with hardware instructions here.
fn aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// What a connection's bytes travel over.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// rustls over a non-blocking TCP socket.
pub struct TlsStream {
    socket: TcpStream,
    session: Session,
    /// Bytes waiting, while some do; `None` on an idle connection.
    held: Option<Box<Held>>,
    /// The peer sent close_notify, or its socket reached EOF.
    closed: bool,
    /// This side sent an alert (fatal, or close_notify): nothing follows.
    ended: bool,
    /// The completed handshake has been reported (`take_handshake_done`).
    handshake_reported: bool,
}

/// What a connection holds only while it waits.
#[derive(Default)]
struct Held {
    /// Received bytes not yet a whole record (or handshake message).
    incoming: Vec<u8>,
    /// Decrypted bytes the last reader had no room for.
    plaintext: Vec<u8>,
    /// Records the socket has not taken yet, from `outgoing_sent` on.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.incoming.is_empty()
            && self.plaintext.is_empty()
            && self.outgoing_sent >= self.outgoing.len()
    }
}

/// The held bytes, made when something first has to wait.
fn held(slot: &mut Option<Box<Held>>) -> &mut Held {
    slot.get_or_insert_with(Box::default)
}

/// Who reads and writes the records.
#[allow(clippy::large_enum_variant)] // see `Records`
enum Session {
    /// rustls: the handshake, and all of a TLS 1.2 connection (and of any
    /// connection with `record_layer: rustls`); which layer TLS 1.3 moves to.
    Rustls(Box<UnbufferedServerConnection>, Layer),
    /// A TLS 1.3 connection once its handshake is done (records.rs).
    /// Not boxed: it is the long-lived state, read on every flush, and one
    /// pointer less to chase per flush shows at 10 000 subscribers, whose
    /// keys do not fit in the CPU's caches.
    Records(RecordLayer),
    /// Only after moving from one to the other failed.
    Gone,
}

impl Session {
    fn is_handshaking(&self) -> bool {
        matches!(self, Session::Rustls(c, _) if c.is_handshaking())
    }
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (incoming, plaintext, outgoing) = self.held.as_ref().map_or((0, 0, 0), |h| {
            let outgoing = h.outgoing.len().saturating_sub(h.outgoing_sent);
            (h.incoming.len(), h.plaintext.len(), outgoing)
        });
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .field("incoming", &incoming)
            .field("plaintext", &plaintext)
            .field("outgoing", &outgoing)
            .field("closed", &self.closed)
            .field("ended", &self.ended)
            .field("record_layer", &matches!(self.session, Session::Records(_)))
            .finish_non_exhaustive()
    }
}

/// The buffers every TLS connection of this thread works in.
#[derive(Default)]
struct Scratch {
    /// Received TLS bytes, decrypted in place.
    input: Vec<u8>,
    /// Plaintext gathered from the slices of one write.
    plain: Vec<u8>,
    /// Records encrypted by one write.
    output: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Transport {
    pub fn tls(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let tls =
            UnbufferedServerConnection::new(config.rustls.clone()).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream {
            socket,
            session: Session::Rustls(Box::new(tls), config.layer),
            held: None,
            closed: false,
            ended: false,
            handshake_reported: false,
        })))
    }

    /// The socket, for (de)registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// What a read just told of the TLS handshake, for the handshake
    /// counters: `Some(true)` when the handshake has completed (said once),
    /// `Some(false)` when the read ended one that had not (an error or
    /// EOF), `None` otherwise (plain TCP, still going, or long done).
    pub fn handshake_outcome(&mut self, read: &io::Result<usize>) -> Option<bool> {
        if self.take_handshake_done() {
            return Some(true);
        }
        if !self.is_handshaking() {
            return None;
        }
        let ended = match read {
            Ok(n) => *n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        };
        ended.then_some(false)
    }

    /// Whether a read shorter than asked took everything there was (plain
    /// TCP: more comes with a new edge), so reading again would only say
    /// WouldBlock. TLS may hold decrypted bytes back, so it reads on.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// True the first time it is asked after the TLS handshake completed
    /// (for the handshake counter), false before and after.
    pub fn take_handshake_done(&mut self) -> bool {
        match self {
            Transport::Tls(t) if !t.handshake_reported && !t.session.is_handshaking() => {
                t.handshake_reported = true;
                true
            }
            _ => false,
        }
    }

    /// A TLS connection whose handshake has not completed.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.session.is_handshaking())
    }

    /// Sends bytes that TLS has encrypted but not yet written. Returns
    /// true if some are still waiting for the socket.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(false),
            Transport::Tls(t) => t.tidy_after(TlsStream::send_outgoing),
        }
    }

    /// An orderly close, one step at a time: the first call ends a TLS
    /// session with close_notify (after the rest of the records a write
    /// started), each call sends what the socket takes. Returns true while
    /// bytes of the ending are still waiting for the socket; false when
    /// there is nothing (more) to send and the socket can be closed.
    pub fn close(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tidy_after(TlsStream::close),
        }
    }
}

/// What processing the received records came to.
enum Progress {
    /// Nothing more can happen without more bytes from the peer.
    NeedInput,
    /// The peer closed the TLS session.
    Closed,
}

impl TlsStream {
    /// Runs `f`, then frees the held bytes' box if nothing waits in it.
    fn tidy_after<T>(&mut self, f: impl FnOnce(&mut TlsStream) -> T) -> T {
        let result = f(self);
        if self.held.as_ref().is_some_and(|held| held.is_empty()) {
            self.held = None;
        }
        result
    }

    /// Writes waiting records until none are left or the socket would
    /// block (then returns true). An emptied buffer is freed.
    fn send_outgoing(&mut self) -> io::Result<bool> {
        let Some(held) = self.held.as_deref_mut() else {
            return Ok(false);
        };
        while held.outgoing_sent < held.outgoing.len() {
            match self.socket.write(&held.outgoing[held.outgoing_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => held.outgoing_sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        if !held.outgoing.is_empty() {
            held.outgoing = Vec::new();
            held.outgoing_sent = 0;
        }
        Ok(false)
    }

    fn has_outgoing(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.outgoing_sent < held.outgoing.len())
    }

    /// Runs rustls over the received bytes in `input[*start..]`: handshake
    /// records are answered (their replies appended to `outgoing`),
    /// application data is copied to `out` from `*filled` on and what does
    /// not fit to `plaintext`. `*start` moves past the consumed bytes.
    fn process(
        &mut self,
        input: &mut [u8],
        start: &mut usize,
        out: &mut [u8],
        filled: &mut usize,
    ) -> io::Result<Progress> {
        let tls = match &mut self.session {
            Session::Rustls(tls, _) => tls,
            Session::Records(_) => return self.open_records(input, start, out, filled),
            Session::Gone => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        loop {
            let UnbufferedStatus { mut discard, state } =
                tls.process_tls_records(&mut input[*start..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    *start += discard;
                    send_rustls_alert(tls, &mut held(&mut self.held).outgoing);
                    self.ended = true;
                    let _ = self.send_outgoing();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let progress = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        hand_out(record.payload, out, filled, &mut self.held);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut held(&mut self.held).outgoing, |buf| encode.encode(buf))?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The records stay in `outgoing` until the socket takes
                    // them; for rustls they are sent.
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    Some(Progress::NeedInput)
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => Some(Progress::Closed),
                ConnectionState::ReadEarlyData(_) => {
                    // Never accepted: the config allows no early data.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS early data",
                    ));
                }
                _ => {
                    return Err(io::Error::other("unexpected TLS connection state"));
                }
            };
            *start += discard;
            if let Some(progress) = progress {
                return Ok(progress);
            }
        }
    }

    /// `process` for the record layer: opens the whole records in
    /// `input[*start..]` (a KeyUpdate asking for one is answered with the
    /// next write), and on a fatal error sends the alert it calls for.
    fn open_records(
        &mut self,
        input: &mut [u8],
        start: &mut usize,
        out: &mut [u8],
        filled: &mut usize,
    ) -> io::Result<Progress> {
        let Session::Records(records) = &mut self.session else {
            unreachable!("called for the record layer only");
        };
        let slot = &mut self.held;
        let mut deliver = |data: &[u8]| hand_out(data, out, filled, slot);
        match records.open(&mut input[*start..], &mut deliver) {
            Ok(opened) => {
                *start += opened.consumed;
                Ok(match opened.closed {
                    true => Progress::Closed,
                    false => Progress::NeedInput,
                })
            }
            Err(Fatal { alert, error }) => {
                if alert != 0 {
                    // Best effort: the connection ends either way.
                    let _ = records.seal_alert(alert, &mut held(&mut self.held).outgoing);
                }
                self.ended = true;
                let _ = self.send_outgoing();
                Err(error)
            }
        }
    }

    /// Hands a TLS 1.3 connection whose handshake is over to the record
    /// layer, keeping from rustls only its key schedule.
    fn enter_record_layer(&mut self) -> io::Result<()> {
        let Session::Rustls(tls, Layer::Compact { records_per_key }) =
            std::mem::replace(&mut self.session, Session::Gone)
        else {
            unreachable!("called for connections moving to the record layer only");
        };
        let (keys, schedule) = (*tls)
            .dangerous_into_kernel_connection()
            .map_err(tls_error)?;
        self.session = Session::Records(RecordLayer::handed_over(keys, schedule, records_per_key)?);
        Ok(())
    }

    /// `Transport::close`: close_notify once (unless an alert ended the
    /// session already or the handshake is not over), then what is left.
    fn close(&mut self) -> bool {
        if !self.ended {
            self.ended = true;
            let sealed = match &mut self.session {
                Session::Records(records) => {
                    let outgoing = &mut held(&mut self.held).outgoing;
                    records.seal_close_notify(outgoing).is_ok()
                }
                Session::Rustls(tls, _) if !tls.is_handshaking() => {
                    rustls_close_notify(tls, &mut held(&mut self.held).outgoing)
                }
                _ => false,
            };
            if !sealed {
                return false;
            }
        }
        self.has_outgoing() && matches!(self.send_outgoing(), Ok(true))
    }

    /// `write_plain` for the record layer: seals what it is given into
    /// the output scratch and hands it to the socket.
    fn write_records(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Session::Records(records) = &mut self.session else {
            unreachable!("called for the record layer only");
        };
        let (taken, sealed) = SCRATCH.with(|scratch| {
            let output = &mut scratch.borrow_mut().output;
            output.clear();
            let taken = records.seal(bufs, MAX_PLAINTEXT_PER_WRITE, output)?;
            io::Result::Ok((taken, output.len()))
        })?;
        self.send_encrypted(sealed)?;
        Ok(taken)
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(held) = self.held.as_deref_mut().filter(|h| !h.plaintext.is_empty()) {
            let plaintext = &mut held.plaintext;
            let n = buf.len().min(plaintext.len());
            buf[..n].copy_from_slice(&plaintext[..n]);
            plaintext.drain(..n);
            if plaintext.is_empty() {
                *plaintext = Vec::new();
            }
            return Ok(n);
        }
        if self.closed {
            return Ok(0);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let input = &mut scratch.input;
            let incoming = self
                .held
                .as_deref_mut()
                .map(|h| std::mem::take(&mut h.incoming));
            let incoming = incoming.unwrap_or_default();
            let mut len = incoming.len();
            if input.len() < len {
                input.resize(len, 0);
            }
            input[..len].copy_from_slice(&incoming);
            drop(incoming);
            let result = self.read_records(input, &mut len, buf);
            // Keep the tail that is not a whole record yet.
            if len > 0 {
                held(&mut self.held)
                    .incoming
                    .extend_from_slice(&input[..len]);
            }
            result
        })
    }

    /// Reads from the socket and processes records until some plaintext
    /// came out, the peer closed, or the socket would block.
    fn read_records(
        &mut self,
        input: &mut Vec<u8>,
        len: &mut usize,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            let mut filled = 0;
            let mut start = 0;
            let progress = self.process(&mut input[..*len], &mut start, buf, &mut filled);
            // Keep only what is not a whole record yet, at the front.
            input.copy_within(start..*len, 0);
            *len -= start;
            // Handshake replies (and alerts) go out as soon as they exist.
            self.send_outgoing()?;
            match progress? {
                Progress::Closed => {
                    self.closed = true;
                    return Ok(filled);
                }
                Progress::NeedInput if filled > 0 => return Ok(filled),
                Progress::NeedInput => {}
            }
            if *len >= MAX_INCOMING {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS record or handshake message too large",
                ));
            }
            if input.len() < *len + READ_CHUNK {
                input.resize(*len + READ_CHUNK, 0);
            }
            match self.socket.read(&mut input[*len..*len + READ_CHUNK]) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(0);
                }
                Ok(n) => *len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records from earlier writes go first; while the socket is full,
        // take nothing more.
        if self.send_outgoing()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        if let Session::Records(_) = self.session {
            return self.write_records(bufs);
        }
        // Whatever rustls wants to send first (a key update, handshake
        // records), then the data, once the handshake allows it.
        loop {
            let tls = match &mut self.session {
                Session::Rustls(tls, _) => tls,
                Session::Records(_) => return self.write_records(bufs),
                Session::Gone => return Err(io::ErrorKind::BrokenPipe.into()),
            };
            let incoming = self
                .held
                .as_deref_mut()
                .map(|h| std::mem::take(&mut h.incoming));
            let mut incoming = incoming.unwrap_or_default();
            let UnbufferedStatus { discard, state } = tls.process_tls_records(&mut incoming);
            let result = match state.map_err(tls_error)? {
                ConnectionState::WriteTraffic(mut traffic) => Some(SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let Scratch { plain, output, .. } = &mut *scratch;
                    let data = gather(bufs, plain);
                    let want = records_size(data.len());
                    if output.len() < want {
                        output.resize(want, 0);
                    }
                    let n = match traffic.encrypt(data, output) {
                        Ok(n) => n,
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            output.resize(required_size, 0);
                            traffic.encrypt(data, output).map_err(io::Error::other)?
                        }
                        Err(e) => return Err(io::Error::other(e)),
                    };
                    Ok((data.len(), n))
                })),
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut held(&mut self.held).outgoing, |buf| encode.encode(buf))?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::ReadTraffic(mut records) => {
                    // Not expected here (reads take all records), but
                    // keep what arrived for the next read.
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        held(&mut self.held)
                            .plaintext
                            .extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::PeerClosed => {
                    // The next read reports it.
                    self.closed = true;
                    None
                }
                ConnectionState::Closed => Some(Err(io::ErrorKind::BrokenPipe.into())),
                // Still handshaking: wait for the peer.
                _ => Some(Err(io::ErrorKind::WouldBlock.into())),
            };
            incoming.drain(..discard);
            if !incoming.is_empty() {
                held(&mut self.held).incoming = incoming;
            }
            match result {
                None => {
                    if self.send_outgoing()? {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                Some(Err(e)) => return Err(e),
                Some(Ok((taken, encrypted))) => {
                    self.send_encrypted(encrypted)?;
                    if self.may_leave_rustls() {
                        self.enter_record_layer()?;
                    }
                    return Ok(taken);
                }
            }
        }
    }

    /// Whether a connection that rustls has just sealed a write for moves
    /// to the record layer now: TLS 1.3 with the compact layer, and no
    /// received bytes rustls may have begun on (a record not yet whole, a
    /// handshake message split over records). rustls's own writing is done
    /// (a KeyUpdate it owed went out first in this write).
    fn may_leave_rustls(&self) -> bool {
        self.held.as_ref().is_none_or(|h| h.incoming.is_empty())
            && matches!(&self.session, Session::Rustls(tls, Layer::Compact { .. })
                if tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
    }

    /// Writes the first `n` bytes of the output scratch to the socket;
    /// what it does not take waits in `outgoing`.
    fn send_encrypted(&mut self, n: usize) -> io::Result<()> {
        SCRATCH.with(|scratch| {
            let scratch = scratch.borrow();
            let records = &scratch.output[..n];
            let mut sent = 0;
            while sent < n {
                match self.socket.write(&records[sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            debug_assert!(!self.has_outgoing());
            if sent < n {
                let held = held(&mut self.held);
                held.outgoing.clear();
                held.outgoing_sent = 0;
                held.outgoing.extend_from_slice(&records[sent..]);
            }
            Ok(())
        })
    }
}

/// Copies decrypted `data` to the reader's `out` from `*filled` on, and
/// what does not fit to the held plaintext (for the next read).
fn hand_out(data: &[u8], out: &mut [u8], filled: &mut usize, slot: &mut Option<Box<Held>>) {
    let take = data.len().min(out.len() - *filled);
    out[*filled..*filled + take].copy_from_slice(&data[..take]);
    *filled += take;
    if take < data.len() {
        held(slot).plaintext.extend_from_slice(&data[take..]);
    }
}

/// close_notify from rustls, into `outgoing`; false if rustls could not
/// (not in a state to write).
fn rustls_close_notify(tls: &mut UnbufferedServerConnection, outgoing: &mut Vec<u8>) -> bool {
    // What rustls had queued goes first (at most a few records).
    for _ in 0..4 {
        let UnbufferedStatus { state, .. } = tls.process_tls_records(&mut []);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if encode_into(outgoing, |buf| encode.encode(buf)).is_err() {
                    return false;
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                let start = outgoing.len();
                let mut room = 64;
                loop {
                    outgoing.resize(start + room, 0);
                    match traffic.queue_close_notify(&mut outgoing[start..]) {
                        Ok(n) => {
                            outgoing.truncate(start + n);
                            return true;
                        }
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) if required_size > room => room = required_size,
                        Err(_) => {
                            outgoing.truncate(start);
                            return false;
                        }
                    }
                }
            }
            _ => return false,
        }
    }
    false
}

/// After a rustls error: encodes the alert rustls queued, if any.
fn send_rustls_alert(tls: &mut UnbufferedServerConnection, outgoing: &mut Vec<u8>) {
    for _ in 0..4 {
        let UnbufferedStatus { state, .. } = tls.process_tls_records(&mut []);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if encode_into(outgoing, |buf| encode.encode(buf)).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
}

/// The plaintext of one write: the first slice itself when it is all there
/// is (or big enough), else the slices copied into `plain`, up to
/// `MAX_PLAINTEXT_PER_WRITE`.
fn gather<'a>(bufs: &'a [IoSlice<'a>], plain: &'a mut Vec<u8>) -> &'a [u8] {
    let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
    let first = nonempty.next().map_or(&[][..], |b| &b[..]);
    if first.len() >= MAX_FRAGMENT || nonempty.next().is_none() {
        return &first[..first.len().min(MAX_PLAINTEXT_PER_WRITE)];
    }
    plain.clear();
    for b in bufs {
        let room = MAX_PLAINTEXT_PER_WRITE - plain.len();
        if room == 0 {
            break;
        }
        plain.extend_from_slice(&b[..b.len().min(room)]);
    }
    plain
}

/// The most `plaintext` bytes can take as records.
fn records_size(plaintext: usize) -> usize {
    plaintext + plaintext.div_ceil(MAX_FRAGMENT).max(1) * RECORD_OVERHEAD
}

/// Appends what `encode` writes to `out`, growing it as rustls asks.
pub(super) fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = 1024;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(io::Error::other(e));
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.tidy_after(|t| t.read_plain(buf)),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.tidy_after(|t| t.write_plain(bufs)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_pending()? {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    }
}
