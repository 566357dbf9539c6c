//! The TLS `Transport` in-process, over loopback sockets, against a rustls
//! client on the same thread (every loop bounded), on both record layers
//! (`server.tls.record_layer`: compact, the default, and rustls):
//! - what an idle TLS connection costs in heap: a counting allocator
//!   measures the bytes still allocated for server-side connections that
//!   finished a handshake, read a request and wrote a response, then went
//!   quiet (a guard for issue 15: an idle subscriber over TLS should not
//!   cost much more than one over plaintext);
//! - reads give the same bytes however the records arrive: many small
//!   records at once, a record a byte at a time, a reader with little
//!   room; close_notify reads as end of stream; TLS 1.2 both ways; a
//!   TLS 1.3 key update from the client, after the server's first write
//!   and before it; the server's cipher suite order (AES-128-GCM first
//!   with AES hardware, else ChaCha20) wins;
//! - an orderly close sends the records a write started, then
//!   close_notify, even when the socket takes them only as the client
//!   reads; after a fatal alert, nothing more.
#![cfg(feature = "tls")] // the TLS transport

#[path = "common/pki.rs"]
mod pki;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki_types::ServerName;
use pubsubd::config::{RecordLayerKind, TlsConfig};
use pubsubd::tls::{load_config, ServerConfig, Transport};

/// Counts live heap bytes and blocks of the threads that ask for it.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted (const, no
    /// destructor: safe to read inside the allocator).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only adds counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && counted() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && counted() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNECTIONS: usize = 100;
const WARM_UP: usize = 200;
/// Heap an idle TLS 1.3 connection may hold on the compact record layer:
/// 968 bytes in 2 blocks (the boxed stream with rustls's key schedule
/// inline and each direction's raw key; the key schedule's own block).
/// ring's expanded keys are not kept while a connection is idle.
const MAX_IDLE_HEAP: f64 = 1024.0;
/// And on rustls throughout (`record_layer: rustls`): rustls's
/// unbuffered connection, 4 017 bytes in 9 blocks (the buffered
/// `ServerConnection` was 7.7 KB).
const MAX_IDLE_HEAP_RUSTLS: f64 = 4608.0;
/// Both record layers.
const LAYERS: [RecordLayerKind; 2] = [RecordLayerKind::Compact, RecordLayerKind::Rustls];
const DEADLINE: Duration = Duration::from_secs(20);
const REQUEST: &[u8] = b"GET /memory HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
    Transfer-Encoding: chunked\r\n\r\n";

struct Pki {
    dir: std::path::PathBuf,
    ca_pem: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(layer: RecordLayerKind) -> (Pki, TlsConfig) {
    let (cert, key) = pki::self_signed();
    // One directory per call: the tests of this file run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pubsubd-tls-transport-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), &cert).expect("write cert");
    std::fs::write(dir.join("key.pem"), &key).expect("write key");
    let mut tls = TlsConfig::new(0, dir.join("cert.pem"), dir.join("key.pem"));
    tls.record_layer = layer;
    (Pki { dir, ca_pem: cert }, tls)
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    client_config_for(ca_pem, rustls::DEFAULT_VERSIONS)
}

fn client_config_for(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Moves the client's records out and in, and what it reads to `got`.
fn pump_client(
    client: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    got: &mut Vec<u8>,
) -> io::Result<()> {
    while client.wants_write() {
        match client.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    match client.read_tls(sock) {
        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => {
            client.process_new_packets().map_err(io::Error::other)?;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    // Take all the plaintext there is (rustls refuses more records while
    // too much waits); bounded by what one read_tls brought.
    let mut buf = [0u8; 4096];
    loop {
        match client.reader().read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Both ends of one connection.
struct Pair {
    server: Transport,
    client: rustls::ClientConnection,
    csock: TcpStream,
}

/// One connection through handshake, request and response.
fn connected(
    listener: &TcpListener,
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
) -> Pair {
    connected_with(listener, server_config, client_config, |_| {})
}

/// One connection through handshake, request and response; `before`
/// runs once the server has read the request, before its first write.
fn connected_with(
    listener: &TcpListener,
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
    mut before: impl FnMut(&mut Pair),
) -> Pair {
    let csock = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    csock.set_nonblocking(true).expect("nonblocking");
    // As the reactor does for every accepted socket: without it each
    // handshake waits out a delayed ACK.
    csock.set_nodelay(true).expect("nodelay");
    let (ssock, _) = listener.accept().expect("accept");
    ssock.set_nonblocking(true).expect("nonblocking");
    ssock.set_nodelay(true).expect("nodelay");
    let server =
        Transport::tls(mio::net::TcpStream::from_std(ssock), server_config.clone()).expect("tls");
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = rustls::ClientConnection::new(client_config.clone(), name).expect("client");
    client.writer().write_all(REQUEST).expect("request");
    let mut pair = Pair {
        server,
        client,
        csock,
    };

    let deadline = Instant::now() + DEADLINE;
    let mut request = Vec::new();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = false;
    while response.len() < RESPONSE.len() {
        assert!(Instant::now() < deadline, "connection did not complete");
        pump_client(&mut pair.client, &mut pair.csock, &mut response).expect("client I/O");
        match pair.server.read(&mut buf) {
            Ok(0) => panic!("server saw EOF"),
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server read: {e}"),
        }
        if request.len() == REQUEST.len() && !answered {
            before(&mut pair);
            let n = pair
                .server
                .write_vectored(&[io::IoSlice::new(RESPONSE)])
                .expect("server write");
            assert_eq!(n, RESPONSE.len());
            answered = true;
        }
        pair.server.flush_pending().expect("server flush");
    }
    assert_eq!(request, REQUEST);
    assert_eq!(response, RESPONSE);
    pair
}

/// The server side of a connection that went quiet.
fn idle_connection(
    listener: &TcpListener,
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
) -> Transport {
    connected(listener, server_config, client_config).server
}

#[test]
fn idle_tls_connection_heap() {
    // One layer after the other: the counting is per thread, but the
    // allocator's own state is not.
    for (layer, max) in [
        (RecordLayerKind::Compact, MAX_IDLE_HEAP),
        (RecordLayerKind::Rustls, MAX_IDLE_HEAP_RUSTLS),
    ] {
        idle_heap(layer, max);
    }
}

fn idle_heap(layer: RecordLayerKind, max: f64) {
    let (pki, tls) = pki(layer);
    let server_config = load_config(&tls).expect("server config");
    let client_config = client_config(&pki.ca_pem);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");

    // Connections first, so one-time allocations are not counted: the
    // server's session cache (TLS 1.3 tickets, 256 entries shared by all
    // connections) fills up with the first hundred or so.
    for _ in 0..WARM_UP {
        drop(idle_connection(&listener, &server_config, &client_config));
    }
    let warm = idle_connection(&listener, &server_config, &client_config);
    COUNTED.with(|c| c.set(true));
    let (bytes0, blocks0) = (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    );
    let mut idle = Vec::with_capacity(CONNECTIONS);
    let (bytes_vec, blocks_vec) = (
        LIVE_BYTES.load(Ordering::Relaxed) - bytes0,
        LIVE_BLOCKS.load(Ordering::Relaxed) - blocks0,
    );
    for _ in 0..CONNECTIONS {
        idle.push(idle_connection(&listener, &server_config, &client_config));
    }
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - bytes0 - bytes_vec;
    let blocks = LIVE_BLOCKS.load(Ordering::Relaxed) - blocks0 - blocks_vec;
    COUNTED.with(|c| c.set(false));
    let per_conn = bytes as f64 / CONNECTIONS as f64;
    let blocks_per_conn = blocks as f64 / CONNECTIONS as f64;
    eprintln!(
        "idle TLS connection ({layer:?}): {per_conn:.0} heap bytes in {blocks_per_conn:.1} \
         blocks (Transport itself {} bytes inline)",
        std::mem::size_of::<Transport>()
    );
    assert!(
        per_conn <= max,
        "an idle TLS connection ({layer:?}) holds {per_conn:.0} heap bytes (at most {max})"
    );
    drop(idle);
    drop(warm);
}

/// A server on `layer`, a client config for it and a listener.
fn setup(
    layer: RecordLayerKind,
) -> (
    Pki,
    Arc<ServerConfig>,
    Arc<rustls::ClientConfig>,
    TcpListener,
) {
    let (pki, tls) = pki(layer);
    let server_config = load_config(&tls).expect("server config");
    let client_config = client_config(&pki.ca_pem);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    (pki, server_config, client_config, listener)
}

/// What the client encrypts for `data`, one record per `chunk` bytes.
fn records(client: &mut rustls::ClientConnection, data: &[u8], chunk: usize) -> Vec<u8> {
    for piece in data.chunks(chunk) {
        assert_eq!(client.writer().write(piece).expect("encrypt"), piece.len());
    }
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("records");
    }
    wire
}

/// Reads from the server side until `want` bytes came, `room` at a time.
fn read_all(server: &mut Transport, want: usize, room: usize) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = vec![0u8; room];
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "got {} of {want} bytes",
            got.len()
        );
        match server.read(&mut buf) {
            Ok(0) => panic!("EOF after {} of {want} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server read: {e}"),
        }
    }
    got
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn many_small_records_in_one_burst() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let Pair {
            mut server,
            mut client,
            mut csock,
        } = connected(&listener, &sc, &cc);
        let data = pattern(3000);
        let wire = records(&mut client, &data, 3);
        csock.set_nonblocking(false).expect("blocking");
        csock.write_all(&wire).expect("send");
        assert_eq!(read_all(&mut server, data.len(), 64 * 1024), data);
    }
}

#[test]
fn records_arriving_a_byte_at_a_time() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let Pair {
            mut server,
            mut client,
            mut csock,
        } = connected(&listener, &sc, &cc);
        let data = pattern(40_000);
        let wire = records(&mut client, &data, 20_000);
        csock.set_nonblocking(false).expect("blocking");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + DEADLINE;
        // The first record a byte at a time, then the rest in odd pieces.
        let (first, rest) = wire.split_at(100);
        let pieces = first.chunks(1).chain(rest.chunks(997));
        for piece in pieces {
            csock.write_all(piece).expect("send");
            loop {
                assert!(Instant::now() < deadline, "stuck at {} bytes", got.len());
                match server.read(&mut buf) {
                    Ok(0) => panic!("EOF after {} bytes", got.len()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Has the piece arrived? Then it was all taken.
                        if server_has_read_everything(&mut server) {
                            break;
                        }
                    }
                    Err(e) => panic!("server read: {e}"),
                }
            }
        }
        got.extend(read_all(&mut server, data.len() - got.len(), 64 * 1024));
        assert_eq!(got, data);
    }
}

/// True once the socket has nothing left to read (a bounded peek).
fn server_has_read_everything(server: &mut Transport) -> bool {
    let mut b = [0u8; 1];
    matches!(server.socket().peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn a_reader_with_little_room_gets_every_byte() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let Pair {
            mut server,
            mut client,
            mut csock,
        } = connected(&listener, &sc, &cc);
        let data = pattern(50_000);
        let wire = records(&mut client, &data, 16 * 1024);
        csock.set_nonblocking(false).expect("blocking");
        csock.write_all(&wire).expect("send");
        assert_eq!(read_all(&mut server, data.len(), 7), data);
    }
}

#[test]
fn close_notify_reads_as_end_of_stream() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let Pair {
            mut server,
            mut client,
            mut csock,
        } = connected(&listener, &sc, &cc);
        let mut wire = records(&mut client, b"last words", 100);
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("alert");
        }
        csock.set_nonblocking(false).expect("blocking");
        csock.write_all(&wire).expect("send");
        // The socket stays open: the end comes from TLS, not from TCP.
        assert_eq!(read_all(&mut server, 10, 1024), b"last words");
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 64];
        loop {
            assert!(Instant::now() < deadline, "no end of stream");
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => panic!("{n} more bytes"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
        drop(csock);
    }
}

/// The server writes `data`; the client reads it all.
fn server_to_client(pair: &mut Pair, data: &[u8]) {
    let deadline = Instant::now() + DEADLINE;
    let mut written = 0;
    let mut got = Vec::new();
    while got.len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "client got {} of {} bytes",
            got.len(),
            data.len()
        );
        if written < data.len() {
            match pair
                .server
                .write_vectored(&[io::IoSlice::new(&data[written..])])
            {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server write: {e}"),
            }
        }
        pair.server.flush_pending().expect("server flush");
        pump_client(&mut pair.client, &mut pair.csock, &mut got).expect("client I/O");
    }
    assert_eq!(got, data);
}

#[test]
fn tls12_reads_and_writes() {
    for layer in LAYERS {
        let (pki, sc, _, listener) = setup(layer);
        let cc = client_config_for(&pki.ca_pem, &[&rustls::version::TLS12]);
        let mut pair = connected(&listener, &sc, &cc);
        assert_eq!(
            pair.client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let data = pattern(30_000);
        let wire = records(&mut pair.client, &data, 1000);
        pair.csock.set_nonblocking(false).expect("blocking");
        pair.csock.write_all(&wire).expect("send");
        assert_eq!(read_all(&mut pair.server, data.len(), 4096), data);
        pair.csock.set_nonblocking(true).expect("nonblocking");
        server_to_client(&mut pair, &pattern(100_000));
    }
}

#[test]
fn the_connection_goes_on_after_a_client_key_update() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let mut pair = connected(&listener, &sc, &cc);
        // rustls asks the peer to update its keys too.
        pair.client.refresh_traffic_keys().expect("key update");
        let wire = records(&mut pair.client, b"after the update", 100);
        pair.csock.set_nonblocking(false).expect("blocking");
        pair.csock.write_all(&wire).expect("send");
        assert_eq!(read_all(&mut pair.server, 16, 1024), b"after the update");
        pair.csock.set_nonblocking(true).expect("nonblocking");
        // rustls's server answers with its own key_update before this record;
        // the client must still read it.
        server_to_client(&mut pair, b"and the answer");
    }
}

#[test]
fn the_server_picks_the_suite_cheapest_for_its_cpu() {
    for layer in LAYERS {
        // The rustls client offers AES-256-GCM first; the server's order wins.
        let aes_hardware = cfg!(target_arch = "x86_64") && {
            #[cfg(target_arch = "x86_64")]
            {
                std::arch::is_x86_feature_detected!("aes")
                    && std::arch::is_x86_feature_detected!("pclmulqdq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        };
        let (pki, sc, cc, listener) = setup(layer);
        for (cc, with_aes, without_aes) in [
            (
                cc,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                client_config_for(&pki.ca_pem, &[&rustls::version::TLS12]),
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ] {
            let mut pair = connected(&listener, &sc, &cc);
            let want = if aes_hardware { with_aes } else { without_aes };
            assert_eq!(
                pair.client.negotiated_cipher_suite().map(|s| s.suite()),
                Some(want)
            );
            // The stream still works both ways under it.
            server_to_client(&mut pair, &pattern(20_000));
        }
    }
}

#[test]
fn a_key_update_before_the_server_first_writes_is_followed() {
    // Issue 23's bug: the client's KeyUpdate (asking for the server's)
    // reaches rustls before the first write; rustls moves both keys and
    // owes a KeyUpdate, which must go out before that write's records,
    // and the record layer must go on from rustls's keys after it.
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let mut pair = connected_with(&listener, &sc, &cc, |pair| {
            pair.client.refresh_traffic_keys().expect("key update");
            let wire = records(&mut pair.client, b"more before the answer", 100);
            pair.csock.set_nonblocking(false).expect("blocking");
            pair.csock.write_all(&wire).expect("send");
            pair.csock.set_nonblocking(true).expect("nonblocking");
            assert_eq!(
                read_all(&mut pair.server, 22, 1024),
                b"more before the answer",
                "{layer:?}"
            );
        });
        // After the first write (the response): the stream both ways.
        server_to_client(&mut pair, &pattern(50_000));
        let wire = records(&mut pair.client, b"and after", 100);
        pair.csock.set_nonblocking(false).expect("blocking");
        pair.csock.write_all(&wire).expect("send");
        assert_eq!(
            read_all(&mut pair.server, 9, 1024),
            b"and after",
            "{layer:?}"
        );
        pair.csock.set_nonblocking(true).expect("nonblocking");
        // Another round, on the record layer now (compact).
        pair.client.refresh_traffic_keys().expect("key update");
        let wire = records(&mut pair.client, b"third", 100);
        pair.csock.set_nonblocking(false).expect("blocking");
        pair.csock.write_all(&wire).expect("send");
        assert_eq!(read_all(&mut pair.server, 5, 1024), b"third", "{layer:?}");
        pair.csock.set_nonblocking(true).expect("nonblocking");
        server_to_client(&mut pair, b"fourth");
    }
}

/// What the client reads until the connection ends, and whether it ended
/// with close_notify (rustls reports EOF without one as an error).
fn read_to_end(pair: &mut Pair) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    pair.csock.set_nonblocking(false).expect("blocking");
    pair.csock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    loop {
        assert!(
            Instant::now() < deadline,
            "no end after {} bytes",
            got.len()
        );
        let eof = match pair.client.read_tls(&mut pair.csock) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => true,
        };
        if pair.client.process_new_packets().is_err() {
            return (got, false);
        }
        loop {
            match pair.client.reader().read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return (got, false),
            }
        }
        if eof {
            return (got, false);
        }
    }
}

#[test]
fn close_sends_the_records_begun_then_close_notify() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let mut pair = connected(&listener, &sc, &cc);
        // The client does not read: the server writes until the socket is
        // full, so the last write's records wait in part.
        let chunk = pattern(64 * 1024);
        let mut written = 0;
        loop {
            match pair.server.write_vectored(&[io::IoSlice::new(&chunk)]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("server write: {e}"),
            }
            assert!(written < 64 << 20, "the socket never filled");
        }
        assert!(
            pair.server.close(),
            "{layer:?}: bytes still wait for the socket"
        );
        // As `Closing` does: a step now and then while the client reads.
        let server = std::thread::spawn({
            let mut server = std::mem::replace(&mut pair.server, Transport::Plain(dummy_socket()));
            move || {
                let deadline = Instant::now() + DEADLINE;
                while server.close() {
                    assert!(Instant::now() < deadline, "the close never finished");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let (got, clean) = read_to_end(&mut pair);
        server.join().expect("server thread");
        assert_eq!(got.len(), written, "{layer:?}: every byte written arrives");
        assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]));
        assert!(clean, "{layer:?}: the stream ends with close_notify");
    }
}

#[test]
fn an_idle_connection_closes_with_close_notify_at_once() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let mut pair = connected(&listener, &sc, &cc);
        assert!(!pair.server.close(), "{layer:?}: the socket took it all");
        drop(std::mem::replace(
            &mut pair.server,
            Transport::Plain(dummy_socket()),
        ));
        let (got, clean) = read_to_end(&mut pair);
        assert!(got.is_empty() && clean, "{layer:?}");
    }
}

#[test]
fn after_a_fatal_alert_close_sends_nothing_more() {
    for layer in LAYERS {
        let (_pki, sc, cc, listener) = setup(layer);
        let mut pair = connected(&listener, &sc, &cc);
        // A record that fails to decrypt: the server answers with
        // bad_record_mac and the read fails.
        let mut forged = vec![0x17, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        pair.csock.set_nonblocking(false).expect("blocking");
        pair.csock.write_all(&forged).expect("send");
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 64];
        loop {
            assert!(Instant::now() < deadline, "{layer:?}: no error");
            match pair.server.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
                Ok(n) => panic!("{layer:?}: read {n} bytes of a forged record"),
            }
        }
        assert!(!pair.server.close(), "{layer:?}");
        drop(std::mem::replace(
            &mut pair.server,
            Transport::Plain(dummy_socket()),
        ));
        // The client sees the alert, not a close_notify.
        pair.csock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut wire = Vec::new();
        let _ = pair.csock.read_to_end(&mut wire);
        let _ = pair.client.read_tls(&mut &wire[..]);
        let err = pair
            .client
            .process_new_packets()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("BadRecordMac")),
            "{layer:?}: {err:?}"
        );
    }
}

/// A connected socket with nothing on it, to stand in for a moved one.
fn dummy_socket() -> mio::net::TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    drop(listener);
    mio::net::TcpStream::from_std(client)
}
