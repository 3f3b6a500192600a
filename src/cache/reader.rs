//! The per-request read of the current token, for one service instance.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::entry::Entry;
use super::flight::Shared;
use super::policy::Freshness;
use super::{Current, TokenCache};

/// Every this many reads, a reader also checks the token against the clock,
/// and trusts whichever says "older". The timers normally agree; this bounds
/// the damage if they cannot fire (their runtime is alive but never driven
/// again, a misuse): at most this many calls per service instance go out
/// with a token the clock already calls expired, and the 401 path covers
/// those.
const CLOCK_CHECK_EVERY: u32 = 256;

/// Reads a cache's current token through a per-instance copy of the
/// pointer. While the token is unchanged and fresh, a read is two atomic
/// loads (the shared pointer, compared with the copy; and the token's
/// refresh-ahead timer) and a reference-count increment for the header: no
/// lock, no clock read, no allocation. Each
/// [`AuthService`](crate::AuthService) owns one, since `Service::call`
/// takes `&mut self`.
///
/// The copy keeps the token it last saw alive until its next read; never a
/// stale answer: every read compares against the shared pointer first.
#[derive(Clone)]
pub(crate) struct Reader {
    cache: arc_swap::Cache<CurrentOf, Option<Arc<Entry>>>,
    shared: Arc<Shared>,
    /// Reads left until the next clock cross-check.
    until_clock_check: u32,
}

/// Points at the `current` slot of a cache's shared state.
#[derive(Clone)]
struct CurrentOf(Arc<Shared>);

impl Deref for CurrentOf {
    type Target = ArcSwapOption<Entry>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

impl Reader {
    pub(crate) fn new(cache: &TokenCache) -> Self {
        Reader {
            cache: arc_swap::Cache::new(CurrentOf(cache.shared.clone())),
            shared: cache.shared.clone(),
            until_clock_check: CLOCK_CHECK_EVERY,
        }
    }

    /// The header and generation to send, when the token is fresh or stale;
    /// a stale token also makes sure a background refresh runs (B2).
    #[inline]
    pub(crate) fn current(&mut self) -> Option<Current> {
        self.until_clock_check -= 1;
        let check_clock = self.until_clock_check == 0;
        if check_clock {
            self.until_clock_check = CLOCK_CHECK_EVERY;
        }
        let (current, freshness) = {
            let entry = self.cache.load().as_ref()?;
            let mut freshness = entry.freshness_by_timers();
            if check_clock {
                freshness = freshness.max(entry.schedule.freshness(Instant::now()));
            }
            if freshness == Freshness::Expired {
                return None;
            }
            let current = Current {
                header: entry.header.clone(),
                generation: entry.generation,
            };
            (current, freshness)
        };
        if freshness == Freshness::Stale {
            self.shared.refresh_in_background(Instant::now());
        }
        Some(current)
    }
}
