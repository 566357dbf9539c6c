//! Time, injected: the hub asks its `Clock` for the monotonic time (timers,
//! deadlines) and the wall-clock time (event timestamps, backlog ages), so
//! in-process tests can move time on instead of sleeping.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where the hub reads the time.
pub trait Clock {
    /// Monotonic time, for deadlines.
    fn now(&self) -> Instant;
    /// Seconds since the Unix epoch, as the reference's `time.time()`.
    fn epoch(&self) -> f64;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn epoch(&self) -> f64 {
        crate::event::epoch_now()
    }
}

/// A clock that moves only when told to (tests); clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed: Rc<Cell<Duration>>,
    epoch_at_start: f64,
}

impl ManualClock {
    /// Starts at the current instant and at `epoch` seconds on the wall clock.
    pub fn new(epoch: f64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            elapsed: Rc::new(Cell::new(Duration::ZERO)),
            epoch_at_start: epoch,
        }
    }

    /// Moves both clocks on by `d`.
    pub fn advance(&self, d: Duration) {
        self.elapsed.set(self.elapsed.get() + d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed.get()
    }

    fn epoch(&self) -> f64 {
        self.epoch_at_start + self.elapsed.get().as_secs_f64()
    }
}
