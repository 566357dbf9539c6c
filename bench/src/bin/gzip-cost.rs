//! `gzip-cost`: what compressed streams cost and save, per event, from
//! pubsubd's own framing code (not a timed test; no server, no sockets).
//!
//! For the load generator's event (a 200-byte body) and for a realistic
//! ASF commit event (about 1.5 KB of JSON), over a run of distinct events
//! (each with its own cursor, time and commit), it prints:
//! - bytes per event on the wire: plain chunked, pubsubd's shared gzip
//!   segment (chunked), a WebSocket text frame, its permessage-deflate
//!   frame, and what a compressor kept per subscriber across events (sync
//!   flush per event, chunked) would send;
//! - CPU: one shared segment (paid once per event and framing, whatever
//!   the subscriber count), a gzip delivery's trailer update (paid per
//!   subscriber), and a per-subscriber compressor's work per event (paid
//!   per subscriber);
//! - memory: the heap a per-subscriber compressor holds (a counting
//!   allocator), against the 8 bytes of trailer state a gzip subscriber
//!   keeps here.
//!
//!   cargo run --release -p pubsubd-bench --bin gzip-cost [EVENTS]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use flate2::{Compress, Compression, FlushCompress};
use pubsubd::compress::{CrcPart, GzipState};
use pubsubd::event::{parse_payload, Event, Framing};

/// Counts live heap bytes, to weigh a compressor.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The generator's event body for sequence number `i` (bench/src/proto.rs).
fn bench_body(i: usize) -> String {
    let head = format!(
        "{{\"r\":2,\"p\":{},\"s\":{i},\"t\":{},\"pad\":\"",
        i % 8,
        1_764_000_000_000_000_000u64 + i as u64 * 37_911
    );
    format!("{head}{}\"}}", "x".repeat(200 - head.len() - 2))
}

/// An ASF commit event as gitbox publishes them (shape and sizes of a
/// real one; the values vary per event).
fn commit_body(i: usize) -> String {
    let hash = format!(
        "{:040x}",
        (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834
    );
    let files: Vec<String> = (0..6)
        .map(|f| {
            format!(
                "\"src/main/java/org/apache/example/module{}/Component{}.java\"",
                (i + f) % 7,
                f
            )
        })
        .collect();
    format!(
        concat!(
            "{{\"commit\": {{\"repository\": \"git\", \"server\": \"gitbox\", \"project\": \"example\", ",
            "\"ref\": \"refs/heads/main\", \"hash\": \"{hash}\", \"sha\": \"{sha}\", ",
            "\"date\": \"2026-11-{day:02} 10:{min:02}:{sec:02} +0000\", \"authored\": \"2026-11-{day:02} 09:58:12 +0000\", ",
            "\"author\": \"Jane Committer\", \"email\": \"jane@apache.org\", ",
            "\"committer\": \"GitHub\", \"committer_email\": \"noreply@github.com\", ",
            "\"subject\": \"[EXAMPLE-{issue}] Fix the retry loop when the remote closes early (#{pr})\", ",
            "\"body\": \"[EXAMPLE-{issue}] Fix the retry loop when the remote closes early (#{pr})\\n\\n",
            "* Stop retrying once the deadline has passed\\n* Log the remote address with the error\\n",
            "* Add a test for an early close\\n\\nCo-authored-by: Another Dev <another@example.org>\", ",
            "\"files\": [{files}], \"changes\": {{\"added\": [], \"removed\": [], \"modified\": [{files}]}}, ",
            "\"log\": \"[EXAMPLE-{issue}] Fix the retry loop when the remote closes early (#{pr})\", ",
            "\"diff\": \"https://github.com/apache/example/commit/{hash}\", \"repository_url\": \"https://gitbox.apache.org/repos/asf/example.git\"}}}}"
        ),
        hash = hash,
        sha = &hash[..10],
        day = 1 + i % 28,
        min = i % 60,
        sec = (i * 7) % 60,
        issue = 1000 + i,
        pr = 4000 + i,
        files = files.join(", "),
    )
}

fn chunk_len(data: usize) -> usize {
    format!("{data:x}").len() + 2 + data + 2
}

fn measure(name: &str, path: &str, body: impl Fn(usize) -> String, n: usize) {
    let topics: Vec<String> = path
        .split('/')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let text = body(i);
            let payload = parse_payload(text.as_bytes()).expect("a JSON object");
            Event::publish(
                i as u64 + 1,
                path,
                topics.clone(),
                false,
                payload,
                1_764_000_000.0 + i as f64 * 0.37,
            )
        })
        .collect();
    let chunked = Framing::stream(true, false, false);
    let gzip = chunked.gzip(true);
    let (mut json, mut plain, mut shared, mut ws, mut wsd) = (0, 0, 0, 0, 0);
    // Shared segments: built once per event (timed), as the server does.
    let t0 = Instant::now();
    for e in &events {
        shared += e.line.gzip_frame(gzip, None).0.len();
    }
    let segment_ns = t0.elapsed().as_nanos() as f64 / n as f64;
    for e in &events {
        json += e.line.json().len();
        plain += e.line.frame(chunked, None).len();
        ws += e.line.frame(Framing::websocket(false), None).len();
        wsd += e.line.frame(Framing::websocket(true), None).len();
    }
    // The per-delivery trailer update of a gzip subscriber.
    let parts: Vec<CrcPart> = events
        .iter()
        .map(|e| CrcPart::of(format!("{}\n", e.line.json()).as_bytes()))
        .collect();
    let mut state = GzipState::default();
    let rounds = 200;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for p in &parts {
            state.append(std::hint::black_box(p));
        }
    }
    let append_ns = t0.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    std::hint::black_box(state.end());
    // A compressor kept per subscriber: context across events, a sync
    // flush after each (so each event can be decoded at once).
    let before = LIVE.load(Ordering::Relaxed);
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(1 << 20);
    let (mut streamed, mut kept) = (0, 0);
    let t0 = Instant::now();
    for (i, e) in events.iter().enumerate() {
        let text = format!("{}\n", e.line.json());
        out.clear();
        let start = c.total_in();
        while (c.total_in() - start) < text.len() as u64 || out.len() == out.capacity() {
            let used = (c.total_in() - start) as usize;
            c.compress_vec(&text.as_bytes()[used..], &mut out, FlushCompress::Sync)
                .expect("compress");
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
        }
        streamed += chunk_len(out.len());
        if i == 0 {
            kept = LIVE.load(Ordering::Relaxed) - before - out.capacity() as isize;
        }
    }
    let stream_ns = t0.elapsed().as_nanos() as f64 / n as f64;
    drop(c);
    let per = |x: usize| x as f64 / n as f64;
    println!(
        "## {name} ({} events, JSON {:.0} B on average)",
        n,
        per(json)
    );
    println!();
    println!("| | bytes per event | ÷ plain |");
    println!("|---|---|---|");
    for (what, bytes) in [
        ("plain chunked line", plain),
        ("gzip, one shared segment per event (pubsubd)", shared),
        (
            "gzip, a compressor per subscriber (context kept, sync flush)",
            streamed,
        ),
        ("WebSocket text frame", ws),
        (
            "WebSocket permessage-deflate frame (pubsubd, no context takeover)",
            wsd,
        ),
    ] {
        println!(
            "| {what} | {:.1} | {:.2} |",
            per(bytes),
            bytes as f64 / plain as f64
        );
    }
    println!();
    println!("| CPU | ns | paid |");
    println!("|---|---|---|");
    println!("| one shared gzip segment (compress + CRC) | {segment_ns:.0} | once per event and framing |");
    println!("| a gzip delivery's trailer update (CRC combine) | {append_ns:.1} | per subscriber and event |");
    println!(
        "| a per-subscriber compressor, one event | {stream_ns:.0} | per subscriber and event |"
    );
    println!();
    println!(
        "Memory: a per-subscriber compressor (flate2/miniz_oxide, level 6) holds {} bytes of heap; a gzip subscriber here keeps 8 bytes of trailer state.",
        kept
    );
    println!();
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    measure(
        "the load generator's event (200-byte body)",
        "/bench/load",
        bench_body,
        n,
    );
    measure("an ASF commit event", "/git/commit/example", commit_body, n);
}
