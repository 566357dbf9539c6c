//! The cost of one fan-out flush over TLS, for callgrind: a server-side
//! `Transport` writes FLUSHES times FRAMES shared 250-byte frames in one
//! vectored write (as the reactor flushes a subscriber's queue) to a client
//! thread that reads them. Instructions per flush are the inclusive cost of
//! `flush` divided by FLUSHES (see bench/README.md):
//!
//! ```sh
//! cargo build --release --example tls_flush
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/tls_flush FRAMES FLUSHES [plain]
//! callgrind_annotate --inclusive=yes cg.out | grep 'tls_flush::flush'
//! ```
//!
//! Not a timed benchmark: the frames go over loopback to a reader that
//! decrypts them on another thread; only the writing side is counted.

// The tests' certificate maker (a throw-away self-signed leaf).
#[path = "../tests/common/pki.rs"]
mod pki;

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, ServerName};
use pubsubd::config::TlsConfig;
use pubsubd::tls::{load_config, Transport};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let frames: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let flushes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let plain = args.get(3).is_some_and(|a| a == "plain");

    let dir = std::env::temp_dir().join(format!("pubsubd-tls-flush-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (cert, key) = pki::self_signed();
    std::fs::write(dir.join("cert.pem"), &cert).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key.pem"), &key).map_err(|e| e.to_string())?;
    let tls = TlsConfig::new(0, dir.join("cert.pem"), dir.join("key.pem"));
    let server_config = load_config(&tls).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ca = cert;
    let reader = std::thread::spawn(move || read_all(addr, &ca, plain));
    let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let socket = mio::net::TcpStream::from_std(socket);
    let mut server = if plain {
        Transport::Plain(socket)
    } else {
        Transport::tls(socket, server_config).map_err(|e| e.to_string())?
    };
    // The reader's first byte arrives once the handshake is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut one = [0u8; 1];
    loop {
        if Instant::now() > deadline {
            return Err("no handshake".into());
        }
        match server.read(&mut one) {
            Ok(1) => break,
            Ok(_) => return Err("reader went away".into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }

    let frame: Rc<[u8]> = vec![b'x'; 250].into();
    let queue: Vec<Rc<[u8]>> = (0..frames).map(|_| frame.clone()).collect();
    let mut written = 0;
    for _ in 0..flushes {
        let slices: Vec<IoSlice<'_>> = queue.iter().map(|f| IoSlice::new(f)).collect();
        written += flush(&mut server, &slices)?;
    }
    drop(server);
    let read = reader.join().map_err(|_| "reader panicked")??;
    eprintln!("{flushes} flushes of {frames} frames: wrote {written} bytes, read {read}");
    Ok(())
}

/// One flush: everything queued in one vectored write, as the reactor does.
#[inline(never)]
fn flush(server: &mut Transport, slices: &[IoSlice<'_>]) -> Result<usize, String> {
    let want: usize = slices.iter().map(|s| s.len()).sum();
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while done < want {
        if Instant::now() > deadline {
            return Err("the reader stopped reading".into());
        }
        // Skip what was written (only ever whole slices here or none).
        let mut skip = done;
        let rest: Vec<IoSlice<'_>> = slices
            .iter()
            .filter_map(|s| {
                if skip >= s.len() {
                    skip -= s.len();
                    None
                } else {
                    let s = IoSlice::new(&s[skip..]);
                    skip = 0;
                    Some(s)
                }
            })
            .collect();
        match server.write_vectored(&rest) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
        match server.flush_pending() {
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(done)
}

/// The client: sends one byte, then reads (and decrypts) until EOF.
fn read_all(addr: std::net::SocketAddr, ca: &str, plain: bool) -> Result<usize, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    if plain {
        sock.write_all(b"x").map_err(|e| e.to_string())?;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"x").map_err(|e| e.to_string())?;
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            // The server drops the socket without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
            Err(e) => return Err(e.to_string()),
        }
    }
}
