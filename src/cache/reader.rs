//! The per-request read of the current token, for one service instance.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::entry::Entry;
use super::flight::Shared;
use super::policy::Freshness;
use super::{Current, TokenCache};

/// Reads a cache's current token through a per-instance copy of the
/// pointer: while the token is unchanged, a read is one atomic load (no
/// reference count, no debt list) plus the clock read that decides its
/// freshness. Each [`AuthService`](crate::AuthService) owns one, since
/// `Service::call` takes `&mut self`.
///
/// The copy keeps the token it last saw alive until its next read; that is
/// one small allocation per service instance, never a stale answer: every
/// read compares against the shared pointer first.
#[derive(Clone)]
pub(crate) struct Reader {
    cache: arc_swap::Cache<CurrentOf, Option<Arc<Entry>>>,
    shared: Arc<Shared>,
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
        }
    }

    /// The header and generation to send, when the token is fresh or stale;
    /// a stale token also makes sure a background refresh runs (B2).
    #[inline]
    pub(crate) fn current(&mut self) -> Option<Current> {
        let now = Instant::now();
        let (current, freshness) = {
            let entry = self.cache.load().as_ref()?;
            let freshness = entry.schedule.freshness(now);
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
            self.shared.refresh_in_background(now);
        }
        Some(current)
    }
}
