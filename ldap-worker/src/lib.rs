//! A small pool of threads doing LDAP binds and group searches for pubsubd, so
//! that the reactor thread never touches LDAP.
//!
//! The reactor submits an [`LdapJob`] with [`LdapPool::try_submit`] (never
//! blocks: a full queue hands the job back), and later drains [`LdapReply`]s
//! from [`LdapPool::replies`] after the `notify` callback it passed to
//! [`LdapPool::start`] (a `mio::Waker::wake`) has fired. The reply carries the
//! job's `tag` so the reactor can match it to a connection and drop it if that
//! connection is gone (STYLE.md point 3: tag = token + serial).
//!
//! Invariants:
//! - Every job accepted by `try_submit` gets exactly one reply, even if the
//!   lookup panics (caught, answered `None`), unless the pool is dropped first.
//! - `groups: None` means "grant nothing": bind failed, empty user or password,
//!   server unreachable, timeout, search error. A [`Proof::Vouched`] job
//!   does no bind as the user (the caller verified them): its searches run
//!   anonymously.
//! - The job queue is bounded (`queue`), and so is the reply queue
//!   (`queue + workers`): a reactor that stops draining replies stalls the
//!   workers, then the job queue fills and `try_submit` refuses; nothing grows.
//! - Passwords are never logged nor stored in clear (see [`cache`]).
//! - Dropping the pool closes the job channel; each worker exits after its
//!   current job. [`LdapPool::shutdown`] does the same and waits for them.
//!
//! Layout: [`LdapSettings`] (`settings.rs`) is what the pool is told, [`worker`]
//! one LDAP conversation, [`cache`] the credential cache.

pub mod cache;
mod proof;
mod settings;
mod stats;
pub mod worker;

pub use proof::Proof;
pub use settings::LdapSettings;
pub use stats::StatsSnapshot;
pub use worker::filter_is_valid;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cache::CredentialCache;

/// A lookup to do: bind as `user` with its password (or, for a user the
/// caller has verified itself, no bind), then search for groups.
pub struct LdapJob {
    /// Opaque to the pool; comes back in the reply.
    pub tag: u64,
    pub user: String,
    pub proof: Proof,
}

impl fmt::Debug for LdapJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proof = match self.proof {
            Proof::Password(_) => "password <redacted>",
            Proof::Vouched => "vouched for",
        };
        f.debug_struct("LdapJob")
            .field("tag", &self.tag)
            .field("user", &self.user)
            .field("proof", &proof)
            .finish()
    }
}

/// The answer to one [`LdapJob`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapReply {
    pub tag: u64,
    /// `None`: bind failed, error or timeout: grant nothing. `Some(dns)`: the
    /// bind succeeded and these entries matched the membership searches
    /// (possibly none).
    pub groups: Option<Vec<String>>,
}

/// Why the pool could not start.
#[derive(Debug)]
pub enum StartError {
    /// The TLS client configuration (e.g. the CA file) is unusable.
    Tls(String),
    /// A worker thread could not be spawned.
    Spawn(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(why) => write!(f, "TLS setup: {why}"),
            StartError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Tls(_) => None,
            StartError::Spawn(e) => Some(e),
        }
    }
}

/// The worker threads and the two channels that connect them to the reactor.
pub struct LdapPool {
    jobs: Option<Sender<LdapJob>>,
    replies: Receiver<LdapReply>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

struct Shared {
    stats: stats::PoolStats,
    settings: LdapSettings,
    tls: Arc<rustls::ClientConfig>,
    cache: Mutex<CredentialCache>,
    notify: Box<dyn Fn() + Send + Sync>,
}

impl LdapPool {
    /// Start `settings.workers` threads. `notify` is called (from a worker
    /// thread) after each reply has been sent.
    pub fn start(
        settings: LdapSettings,
        notify: Box<dyn Fn() + Send + Sync>,
    ) -> Result<LdapPool, StartError> {
        let tls = worker::tls_config(settings.ca_file.as_deref()).map_err(StartError::Tls)?;
        let workers = settings.workers.max(1);
        let queue = settings.queue.max(1);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<LdapJob>(queue);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded::<LdapReply>(queue + workers);
        let shared = Arc::new(Shared {
            cache: Mutex::new(CredentialCache::new(
                settings.cache_ttl,
                settings.cache_entries,
            )),
            stats: stats::PoolStats::default(),
            settings,
            tls,
            notify,
        });
        let mut pool = LdapPool {
            jobs: Some(job_tx),
            replies: reply_rx,
            threads: Vec::with_capacity(workers),
            shared: Arc::clone(&shared),
        };
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            let jobs = job_rx.clone();
            let replies = reply_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ldap-worker-{i}"))
                .spawn(move || work(&shared, &jobs, &replies))
                .map_err(StartError::Spawn)?;
            pool.threads.push(handle);
        }
        log::info!(
            "LDAP: {workers} workers for {} (queue {queue}, timeout {:?}, cache {:?})",
            shared.settings.uri,
            shared.settings.timeout,
            shared.settings.cache_ttl
        );
        Ok(pool)
    }

    /// Queue a job without blocking. A full queue (or a pool shutting down)
    /// hands the job back: the caller grants nothing and logs it.
    pub fn try_submit(&self, job: LdapJob) -> Result<(), LdapJob> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Where the answers arrive; drain it with `try_recv` after a wake-up.
    pub fn replies(&self) -> &Receiver<LdapReply> {
        &self.replies
    }

    /// Jobs queued and not yet picked up by a worker.
    pub fn queued(&self) -> usize {
        self.jobs.as_ref().map_or(0, |j| j.len())
    }

    /// The pool's counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot(self.queued())
    }

    /// Close the job queue and wait for every worker to finish its current job
    /// and exit (at most about `max_job_time`). Queued jobs are still answered.
    pub fn shutdown(mut self) {
        self.jobs = None;
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                log::error!("LDAP: a worker thread panicked");
            }
        }
    }
}

impl Drop for LdapPool {
    /// Close the job queue; the workers exit on their own after their current
    /// job (not waited for, so dropping never blocks the reactor).
    fn drop(&mut self) {
        self.jobs = None;
    }
}

fn work(shared: &Shared, jobs: &Receiver<LdapJob>, replies: &Sender<LdapReply>) {
    while let Ok(job) = jobs.recv() {
        let tag = job.tag;
        let groups = match catch_unwind(AssertUnwindSafe(|| handle(shared, &job))) {
            Ok(groups) => groups,
            Err(_) => {
                log::error!("LDAP: lookup for user {:?} panicked", job.user);
                None
            }
        };
        drop(job);
        if replies.send(LdapReply { tag, groups }).is_err() {
            break; // The pool is gone.
        }
        (shared.notify)();
    }
    log::debug!("LDAP: worker exits");
}

fn handle(shared: &Shared, job: &LdapJob) -> Option<Vec<String>> {
    let refused = job.user.is_empty() || matches!(&job.proof, Proof::Password(p) if p.is_empty());
    if !refused {
        let cached = lock(&shared.cache).get(&job.user, &job.proof, Instant::now());
        if let Some(groups) = cached {
            log::debug!("LDAP: user {:?} answered from the cache", job.user);
            shared.stats.cache_hit();
            return Some(groups);
        }
    }
    let started = Instant::now();
    let result = worker::lookup(&shared.settings, &shared.tls, &job.user, &job.proof);
    let reached = match &result {
        Err(worker::Failure::Connect(_)) => Some(false),
        Err(worker::Failure::Refused(_)) => None,
        _ => Some(true),
    };
    shared
        .stats
        .lookup(started.elapsed(), result.is_ok(), reached);
    let how = match job.proof {
        Proof::Password(_) => "authenticated",
        Proof::Vouched => "looked up (vouched for)",
    };
    match result {
        Ok(groups) => {
            log::info!(
                "LDAP: user {:?} {how}, {} group entries, {:?}",
                job.user,
                groups.len(),
                started.elapsed()
            );
            lock(&shared.cache).put(&job.user, &job.proof, &groups, Instant::now());
            Some(groups)
        }
        Err(why) => {
            log::info!(
                "LDAP: user {:?} not {how} ({why}), {:?}",
                job.user,
                started.elapsed()
            );
            None
        }
    }
}

fn lock(cache: &Mutex<CredentialCache>) -> std::sync::MutexGuard<'_, CredentialCache> {
    // A panic while holding the lock leaves the cache consistent enough (each
    // method leaves the map valid); keep serving.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn settings_unreachable() -> LdapSettings {
        LdapSettings {
            uri: "ldap://127.0.0.1:1".into(),
            user_dn: "uid=%s,dc=example,dc=org".into(),
            base_scope: "dc=example,dc=org".into(),
            workers: 2,
            queue: 8,
            timeout: Duration::from_secs(2),
            ..LdapSettings::default()
        }
    }

    #[test]
    fn job_debug_redacts_password() {
        let job = LdapJob {
            tag: 1,
            user: "alice".into(),
            proof: Proof::Password("hunter2".into()),
        };
        let s = format!("{job:?}");
        assert!(s.contains("alice") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn every_job_answered_and_notified() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let pool = LdapPool::start(
            settings_unreachable(),
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("start");
        for (tag, pw) in [(1, ""), (2, "pw"), (3, "pw")] {
            let job = LdapJob {
                tag,
                user: if tag == 3 {
                    String::new()
                } else {
                    "alice".into()
                },
                proof: Proof::Password(pw.into()),
            };
            pool.try_submit(job).expect("queue has room");
        }
        let mut tags = Vec::new();
        for _ in 0..3 {
            let reply = pool
                .replies()
                .recv_timeout(Duration::from_secs(10))
                .expect("a reply");
            assert_eq!(reply.groups, None);
            tags.push(reply.tag);
        }
        tags.sort_unstable();
        assert_eq!(tags, vec![1, 2, 3]);
        pool.shutdown();
        assert_eq!(wakes.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn bad_ca_file_fails_start() {
        let settings = LdapSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..settings_unreachable()
        };
        match LdapPool::start(settings, Box::new(|| {})) {
            Err(StartError::Tls(why)) => assert!(why.contains("/nonexistent/ca.pem"), "{why}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started with a missing CA file"),
        }
    }
}
