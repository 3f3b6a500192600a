//! Counters a cache keeps for tests, demos and users' metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters, from [`TokenCache::stats`](crate::TokenCache::stats).
///
/// ```
/// use tower_bearer::{source::StaticToken, TokenCache};
///
/// let cache = TokenCache::new(StaticToken::new("key"));
/// let stats = cache.stats();
/// assert_eq!(stats.token_requests, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Attempts made to get a token from the source (each retry counts).
    pub token_requests: u64,
    /// Token requests that failed (each failed attempt counts).
    pub failed_token_requests: u64,
    /// Refreshes that ended without a token, after their retries.
    pub refresh_failures: u64,
    /// Responses that rejected a token this cache handed out (401, or gRPC
    /// UNAUTHENTICATED), as reported by the layers using it.
    pub rejections: u64,
    /// Requests sent a second time with a new token after a rejection.
    pub retries: u64,
    /// Refreshes that installed a token from the store (saved by another
    /// cache, another replica or an earlier run) instead of asking the
    /// source: no token request.
    pub adopted_from_store: u64,
    /// Refreshes that found another cache holding the store's refresh lock
    /// and waited for its token.
    pub store_waits: u64,
    /// Store operations that failed (unreachable, timed out); the cache then
    /// carried on without the store.
    pub store_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// The cache's name: the `cache` label of its metrics.
    pub(crate) name: Arc<str>,
    pub(crate) token_requests: AtomicU64,
    pub(crate) failed_token_requests: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) adopted_from_store: AtomicU64,
    pub(crate) store_waits: AtomicU64,
    pub(crate) store_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn named(name: Arc<str>) -> Counters {
        Counters {
            name,
            ..Counters::default()
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            token_requests: self.token_requests.load(Ordering::Relaxed),
            failed_token_requests: self.failed_token_requests.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            adopted_from_store: self.adopted_from_store.load(Ordering::Relaxed),
            store_waits: self.store_waits.load(Ordering::Relaxed),
            store_errors: self.store_errors.load(Ordering::Relaxed),
        }
    }
}
