//! A tokio timer that does not panic on a runtime without a time driver.

use std::panic::catch_unwind;
use std::time::Duration;

use tokio::time::Sleep;

/// A tokio sleep of `duration`, or `None` where no timer can be made: on a
/// runtime built without its time driver (making one panics there; the
/// default panic hook prints that panic once), or outside a runtime.
pub(crate) fn sleep(duration: Duration) -> Option<Sleep> {
    tokio::runtime::Handle::try_current().ok()?;
    catch_unwind(|| tokio::time::sleep(duration)).ok()
}
