//! Deadlines the per-request path checks without reading the clock.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use tokio::time::{Instant, Sleep};

/// A tokio timer armed for one instant. Checking it reads the timer's state
/// (one atomic load), which tokio's time driver flips when the instant has
/// come: no clock read. With a paused clock the driver flips it during
/// `tokio::time::advance`, before the advancing task runs again, so tests see
/// the same instants as the clock.
///
/// The driver runs whenever the runtime's workers park or poll it (at least
/// every few dozen tasks), so in a live runtime a deadline is seen within a
/// millisecond or so. When the runtime shuts down its timers all fire, so a
/// deadline whose runtime is gone reads as passed: the safe side.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    /// Arms a timer for `at` on the current runtime's time driver.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one built without its time driver
    /// (`enable_time`); the cache only arms deadlines in its refresh task,
    /// which runs on a runtime.
    pub(crate) fn arm(at: Instant) -> Deadline {
        let mut sleep = Box::pin(tokio::time::sleep_until(at));
        // A timer is registered by its first poll. Its waker is never
        // needed: the state is read, not awaited.
        let _ = sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        Deadline { sleep }
    }

    /// Whether the instant has come (and the driver has seen it).
    #[inline]
    pub(crate) fn has_passed(&self) -> bool {
        self.sleep.is_elapsed()
    }
}
