//! The coordinator's handle on its subscriber worker processes: spawns
//! them (each at most `per_process` connections, so no process nears the
//! open-files limit), sends commands and merges their reports.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::hist::Hist;
use crate::worker::{Report, WorkerOpts};

struct Proc {
    child: Child,
    stdin: ChildStdin,
}

pub struct Fleet {
    procs: Vec<Proc>,
    rx: mpsc::Receiver<(usize, Report)>,
    next_id: u64,
}

/// Reports of every worker, merged.
#[derive(Default, Clone)]
pub struct Merged {
    pub live: u64,
    pub in_phase: u64,
    pub stalled_live: u64,
    pub failed: u64,
    pub closed: u64,
    pub received: u64,
    pub stale: u64,
    pub pings: u64,
    pub other: u64,
    pub dups: u64,
    pub gaps: u64,
    pub bytes: u64,
    pub hist: Hist,
    pub window: Hist,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cpu_ns: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Merged {
    fn add(&mut self, r: &Report) {
        self.live += r.live;
        self.in_phase += r.in_phase;
        self.stalled_live += r.stalled_live;
        self.failed += r.failed;
        self.closed += r.closed;
        self.received += r.received;
        self.stale += r.stale;
        self.pings += r.pings;
        self.other += r.other;
        self.dups += r.dups;
        self.gaps += r.gaps;
        self.bytes += r.bytes;
        self.hist.merge_sparse(&r.hist);
        self.window.merge_sparse(&r.window);
        if r.first_ns != 0 && (self.first_ns == 0 || r.first_ns < self.first_ns) {
            self.first_ns = r.first_ns;
        }
        self.last_ns = self.last_ns.max(r.last_ns);
        self.cpu_ns += r.cpu_ns;
        for (k, v) in &r.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }
}

impl Fleet {
    /// Spawns enough workers for `opts.count` subscriptions (the first
    /// `opts.stalled` of them stalled, all in the first worker).
    pub fn spawn(opts: &WorkerOpts, per_process: usize) -> io::Result<Fleet> {
        let exe = std::env::current_exe()?;
        let per = per_process.max(1);
        let healthy = opts.count - opts.stalled;
        let nprocs = healthy.div_ceil(per).max(1);
        let (tx, rx) = mpsc::channel();
        let mut procs = Vec::new();
        let mut left = healthy;
        for w in 0..nprocs {
            let n = left.div_ceil(nprocs - w);
            left -= n;
            let stalled = if w == 0 { opts.stalled } else { 0 };
            // Spread source addresses: each worker its own block of 127.0.0.x.
            let src_count = 40u8;
            let src_first = 10 + (w as u8 % 6) * src_count;
            let mut cmd = Command::new(&exe);
            cmd.arg("worker");
            if let Some(ca) = &opts.tls_ca {
                cmd.arg("--tls-ca").arg(ca);
            }
            for (on, flag) in [
                (opts.ask.sse, "--sse"),
                (opts.ask.websocket, "--ws"),
                (opts.ask.gzip, "--gzip"),
            ] {
                if on {
                    cmd.arg(flag);
                }
            }
            let mut child = cmd
                .args(["--target", opts.proto.name()])
                .args(["--addr", &opts.addr.to_string()])
                .args(["--chan", &opts.chan])
                .args(["--count", &(n + stalled).to_string()])
                .args(["--stalled", &stalled.to_string()])
                .args(["--stalled-rcvbuf", &opts.stalled_rcvbuf.to_string()])
                .args(["--src-first", &src_first.to_string()])
                .args(["--src-count", &src_count.to_string()])
                .args(["--concurrency", &opts.concurrency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Report>(&line) {
                        Ok(r) => {
                            if tx.send((w, r)).is_err() {
                                break;
                            }
                        }
                        Err(e) => eprintln!("worker {w}: bad report ({e}): {line}"),
                    }
                }
            });
            procs.push(Proc { child, stdin });
        }
        Ok(Fleet {
            procs,
            rx,
            next_id: 1,
        })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    fn send(&mut self, cmd: &str) {
        for p in &mut self.procs {
            let _ = writeln!(p.stdin, "{cmd}");
            let _ = p.stdin.flush();
        }
    }

    /// Waits for every worker's `ready` (all its connections settled).
    pub fn wait_ready(&mut self, timeout: Duration) -> Merged {
        self.collect(|r| r.kind == "ready", timeout)
    }

    fn collect(&mut self, want: impl Fn(&Report) -> bool, timeout: Duration) -> Merged {
        let deadline = Instant::now() + timeout;
        let mut got = vec![false; self.procs.len()];
        let mut merged = Merged::default();
        while got.iter().any(|g| !g) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((w, r)) if want(&r) && !got[w] => {
                    got[w] = true;
                    merged.add(&r);
                }
                Ok(_) => {}
                Err(_) => {
                    let missing = got.iter().filter(|g| !**g).count();
                    eprintln!("warning: {missing} worker(s) did not answer in {timeout:?}");
                    *merged
                        .errors
                        .entry("worker did not answer".into())
                        .or_insert(0) += missing as u64;
                    break;
                }
            }
        }
        merged
    }

    /// Starts a measurement phase: counters zeroed, events of other runs ignored.
    pub fn reset(&mut self, run: u32) {
        self.send(&format!("reset {run}"));
    }

    /// Every worker's counters since the last reset (and latencies since the
    /// last report).
    pub fn report(&mut self) -> Merged {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&format!("report {id}"));
        self.collect(
            |r| r.kind == "report" && r.id == id,
            Duration::from_secs(20),
        )
    }

    /// Ends every worker (closing its connections), by PID if it will not go.
    pub fn quit(mut self) {
        self.send("quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.procs {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                }
            }
        }
    }
}
