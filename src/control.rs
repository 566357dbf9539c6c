//! The handle that stops or reloads a running server from outside its
//! thread: `main` turns signals into calls on it, tests and embedders call
//! it directly. A request sets a flag and wakes the event loop, which acts
//! on it at the start of its next turn; asking before the loop runs is fine.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use mio::Waker;

const SHUTDOWN: u8 = 1;
const RELOAD_ACL: u8 = 2;
const RELOAD_CONFIG: u8 = 4;

/// A cloneable, thread-safe handle on one server.
#[derive(Clone, Default)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    asked: AtomicU8,
    waker: OnceLock<Arc<Waker>>,
}

/// What was asked since the loop last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Asked {
    pub shutdown: bool,
    pub reload_acl: bool,
    pub reload_config: bool,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Stop accepting, end every stream cleanly, write the backlog out and
    /// return from `run` (SIGTERM, SIGINT).
    pub fn shutdown(&self) {
        self.ask(SHUTDOWN);
    }

    /// Re-read the ACL file; an invalid one keeps the old (SIGUSR2).
    pub fn reload_acl(&self) {
        self.ask(RELOAD_ACL);
    }

    /// Re-read the configuration file and the TLS files; an invalid file
    /// keeps the running configuration (SIGHUP).
    pub fn reload_config(&self) {
        self.ask(RELOAD_CONFIG);
    }

    fn ask(&self, what: u8) {
        self.inner.asked.fetch_or(what, Ordering::AcqRel);
        if let Some(waker) = self.inner.waker.get() {
            let _ = waker.wake();
        }
    }

    /// Called once by the event loop that serves these requests.
    pub(crate) fn attach(&self, waker: Arc<Waker>) {
        let _ = self.inner.waker.set(waker);
    }

    /// Takes what was asked since the last call.
    pub(crate) fn take(&self) -> Asked {
        let asked = self.inner.asked.swap(0, Ordering::AcqRel);
        Asked {
            shutdown: asked & SHUTDOWN != 0,
            reload_acl: asked & RELOAD_ACL != 0,
            reload_config: asked & RELOAD_CONFIG != 0,
        }
    }
}
