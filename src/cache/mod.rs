//! [`TokenCache`]: one token, kept fresh, shared by every request and every
//! layer that holds a handle to it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bearer::{source, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TokenCache::builder(source::from_fn(|_previous| async {
//!     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
//! }))
//! .leeway(Duration::from_secs(30))
//! .build()?;
//!
//! let token = cache.token().await?;
//! assert_eq!(token.access_token().secret(), "t0k3n");
//! assert_eq!(cache.stats().token_requests, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Lifecycle of a token
//!
//! | phase | from | what callers get |
//! | --- | --- | --- |
//! | fresh | receipt | the token |
//! | stale | `refresh_ahead` × lifetime (80 %, minus up to 5 % jitter) | the token at once; one background refresh starts (B2) |
//! | expired | expiry − leeway (60 s, at most a tenth of the lifetime) | they wait for the single refresh (B1, B3) |
//!
//! # The schedule with the default settings
//!
//! With continuous traffic a token is replaced when it turns stale, so the
//! token endpoint sees at most 1 / 0.75 ≈ 1.33 requests per token lifetime,
//! whatever the lifetime (the leeway is capped at a tenth of the lifetime so
//! that the refresh-ahead point always comes first):
//!
//! | token lifetime | leeway | usable until | stale from (jitter) | token requests per lifetime, at most |
//! | --- | --- | --- | --- | --- |
//! | 3 s | 0.3 s | 2.7 s | 2.25 s – 2.4 s | 1.33 |
//! | 60 s | 6 s | 54 s | 45 s – 48 s | 1.33 |
//! | 5 min | 30 s | 4 min 30 s | 3 min 45 s – 4 min | 1.33 |
//! | 1 h | 1 min | 59 min | 45 min – 48 min | 1.33 |
//! | 24 h | 1 min | 23 h 59 min | 18 h – 19 h 12 min | 1.33 |
//!
//! (Produced by the test `schedule_table_in_the_docs_is_the_code_s`, which
//! fails when this table and the code disagree; `tests/schedule.rs` counts
//! the token requests against a real token endpoint.)
//!
//! # Freshness, on every call (B1)
//!
//! Every call compares tokio's clock (`tokio::time::Instant::now()`) with
//! the token's usable end and refresh-ahead point, at the moment of the
//! call: no timer, no counter, no per-runtime state stands in for it. So a
//! token is never attached after its usable end, whatever drives the call
//! (a task, one `block_on` per call, a clone of the service per request, a
//! task that has spent its coop budget, a runtime without a time driver,
//! several runtimes sharing one cache, the paused clock of a test). The
//! read costs a clock read and an atomic load; see [`read`](self) for how it
//! avoids writing memory other threads write.
//!
//! **System suspend.** tokio's clock is the monotonic clock
//! (`CLOCK_MONOTONIC` on Linux), which stops while the machine is
//! suspended: after a resume, a token looks as usable as when the machine
//! went to sleep, though its server may count the time asleep. The first
//! call with it then gets a 401, which invalidates the token and sends the
//! request once more with a new one (B6); nothing stays broken. A cache
//! that must not send a token a suspended machine slept through should
//! call [`TokenCache::invalidate`] on resume.
//!
//! # Failures (B4)
//!
//! A refresh makes up to `max_attempts` token requests (default 3): transient
//! failures (connection errors, timeouts, 5xx, 429) are retried after an
//! exponential backoff with full jitter (100 ms doubling, at most 5 s), or
//! after the server's `Retry-After`. Permanent failures (`invalid_client`,
//! `invalid_grant`, …) are not retried.
//!
//! After a failed refresh no new one starts until a cooldown has passed: 1 s
//! after the first failure, doubling with each failure in a row up to 30 s,
//! with "equal jitter" (between half and all of that), and never shorter than
//! a `Retry-After` the server sent. Meanwhile a still-usable token keeps being
//! served; callers with no usable token get the failure at once, without a
//! token request. A refresh that panics (a panicking source, a runtime
//! without a time driver) counts as failed like any other.
//!
//! So however many calls arrive, a dead token endpoint sees at most
//! `max_attempts` requests per cooldown: with the defaults, once the cooldown
//! has reached its 30 s ceiling, at most 3 requests every 15 s.
//!
//! # Rejections (B6)
//!
//! A response that rejects a token (401, gRPC UNAUTHENTICATED) invalidates
//! that token, compare-and-swap by generation, so a hundred concurrent
//! rejections of one token cause one refresh. The retry's own rejection
//! invalidates the retry's token too.
//!
//! Refreshes caused by rejections are throttled. When the token that such a
//! refresh fetched is rejected in its turn, the next refresh waits the
//! cooldown above (1 s, doubling per rejected token in a row, up to 30 s,
//! with equal jitter); until then the rejected token keeps being sent, and
//! callers get the server's 401 (or UNAUTHENTICATED), not an error of ours.
//! Against an API that rejects every token, the token endpoint therefore
//! sees at most 9 requests in the first minute and 2 per 30 s after that,
//! however many requests the API gets (`tests/rejection.rs` checks 1,000
//! requests per second for 60 s).
//!
//! # Stores and hooks
//!
//! With [`TokenCacheBuilder::store`], the refresh loads from and saves to a
//! [`TokenStore`], so tokens survive restarts
//! and are shared by several caches, processes or replicas, one of which
//! refreshes while the others wait for its token; see the
//! [`store`](crate::store) module. [`TokenCacheBuilder::on_refresh`] is
//! called with each new token, for users who persist it elsewhere. Neither
//! is on the per-request path.
//!
//! # Metrics
//!
//! With the feature `metrics`, a cache records through the
//! [`metrics`](https://docs.rs/metrics) facade, so any exporter works
//! (Prometheus, OpenTelemetry through its bridge, StatsD). Names follow
//! OpenTelemetry's semantic-convention style; every metric has the label
//! `cache`, the cache's [`name`](TokenCacheBuilder::name) (default
//! `default`). [`describe_metrics`] registers the units and descriptions.
//! Nothing is recorded on the per-request path of a call that finds a
//! usable token.
//!
//! | name | kind | unit | labels | what |
//! | --- | --- | --- | --- | --- |
//! | `tower_bearer.token.requests` | counter | requests | `outcome`: `ok`, `transient`, `permanent` | token requests (each attempt) |
//! | `tower_bearer.token.request.duration` | histogram | seconds | `outcome` | token-request latency |
//! | `tower_bearer.refreshes` | counter | refreshes | `reason`: `first`, `expired`, `ahead`, `rejected` | refreshes started |
//! | `tower_bearer.token.age_at_refresh` | histogram | seconds | `reason` | age of the replaced token when its refresh started |
//! | `tower_bearer.rejections` | counter | responses | | responses that rejected a token of this cache |
//! | `tower_bearer.retries` | counter | requests | | requests sent once more after a rejection or a step-up |
//! | `tower_bearer.waits` | counter | calls | | calls that had no usable token and waited for a refresh |
//! | `tower_bearer.token.expires_in` | gauge | seconds | | time to expiry of the token just installed |
//!
//! The names are also constants of this module ([`TOKEN_REQUESTS`], …).
//!
//! # Background work
//!
//! Refreshes run as tokio tasks on the runtime of the caller that started
//! them, so that no caller's cancellation cancels them (B3). Refresh ahead is
//! driven by use: an idle cache does not refresh, and its next call starts a
//! refresh. When the last handle is dropped, a refresh under way is aborted;
//! nothing outlives the cache (B2), except, with a store, the release of a
//! refresh lock the aborted refresh held: one store command, on a task of its
//! own, so that other caches need not wait for the lock to lapse. To shut
//! down without cutting a refresh short (and maybe losing a refresh token
//! the server already rotated), await [`TokenCache::settle`] first.
//!
//! A caller never waits on a refresh that nobody drives. A refresh tells its
//! waiters before each step how long the step may take (a token request:
//! the attempt timeout; a backoff; a store operation); a caller on another
//! runtime that hears nothing for that long, on its own clock, aborts the
//! refresh and starts a new one on its own runtime. This is what keeps a
//! synchronous facade working, whose runtime is driven only inside its
//! `block_on`: a refresh started there may sit idle until its next call.
//! Without an attempt timeout (`no_attempt_timeout`), callers wait as long
//! as the refresh takes.

mod config;
mod entry;
mod fetch;
mod flight;
mod random;
pub(crate) mod read;
mod schedule;
mod stats;
mod telemetry;
mod variants;
mod with_store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use self::config::{Config, OnRefresh, StoreSettings};
use self::flight::Shared;
use self::read::Local;
pub(crate) use self::schedule::Freshness;
use self::schedule::{Retries, Timing};
use self::variants::{Family, Lru};
use crate::store::{StoreKey, TokenStore};
use crate::{ConfigError, Error, Token, TokenParams, TokenSource};

pub use self::stats::CacheStats;
pub use self::telemetry::{
    REFRESHES, REJECTIONS, RETRIES, TOKEN_AGE_AT_REFRESH, TOKEN_EXPIRES_IN, TOKEN_REQUEST_DURATION,
    TOKEN_REQUESTS, WAITS, describe_metrics,
};
pub use self::variants::DEFAULT_MAX_VARIANTS;
pub use self::with_store::{STORE_POLL_INTERVAL, STORE_TIMEOUT};

/// Default time before expiry at which a token stops being sent (B1).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default fraction of the lifetime after which a token is refreshed ahead.
pub const DEFAULT_REFRESH_AHEAD: f64 = 0.8;
/// Default jitter: up to this fraction of the lifetime is taken off the
/// refresh-ahead point, so replicas started together do not refresh together.
pub const DEFAULT_JITTER: f64 = 0.05;
/// Default lifetime of a token whose expiry is unknown (no `expires_in`, not
/// a JWT). 15 minutes, as AWS's smithy-rs uses for identities without expiry:
/// short enough to pick up rotated credentials, long enough not to matter.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Token requests per refresh by default, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default per-attempt timeout of a token request.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest default time to live of a store's refresh lock: 1 s; see
/// [`default_store_lock_ttl`].
pub const MIN_DEFAULT_STORE_LOCK_TTL: Duration = Duration::from_secs(1);

/// The longest default time to live of a store's refresh lock: 10 s; see
/// [`default_store_lock_ttl`].
pub const MAX_DEFAULT_STORE_LOCK_TTL: Duration = Duration::from_secs(10);

/// The default time to live of a store's refresh lock for a token that
/// lives `lifetime`: a tenth of it, at least
/// [`MIN_DEFAULT_STORE_LOCK_TTL`] (1 s) and at most
/// [`MAX_DEFAULT_STORE_LOCK_TTL`] (10 s).
///
/// The time to live only bounds how long a holder that died without
/// releasing the lock (a crash) delays the others: a live holder extends
/// it every third of it. So it follows the token: a tenth keeps a crashed
/// holder's lapse well inside the part of a token's life that remains
/// after the refresh-ahead point, where 10 s for every token (the old
/// default) stalled a fleet of short-lived tokens for longer than they
/// live. The floor leaves room for a store's round trips and the
/// extensions; the ceiling is that old default, plenty for a holder of a
/// long-lived token to be taken over.
///
/// The lifetime is that of the token being replaced (the cache's, else the
/// one found in the store); a cache with no token yet uses the ceiling.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::cache::default_store_lock_ttl;
///
/// assert_eq!(default_store_lock_ttl(Duration::from_secs(60)), Duration::from_secs(6));
/// assert_eq!(default_store_lock_ttl(Duration::from_secs(5)), Duration::from_secs(1));
/// assert_eq!(default_store_lock_ttl(Duration::from_secs(3600)), Duration::from_secs(10));
/// ```
pub fn default_store_lock_ttl(lifetime: Duration) -> Duration {
    (lifetime / 10).clamp(MIN_DEFAULT_STORE_LOCK_TTL, MAX_DEFAULT_STORE_LOCK_TTL)
}

/// A token kept fresh for every caller. Cheap to clone: clones share one
/// token, one refresh and one set of counters.
///
/// Build it with [`TokenCache::new`] (defaults) or [`TokenCache::builder`],
/// then hand it to [`AuthLayer::new`](crate::AuthLayer::new). See the
/// [module documentation](self) for the token lifecycle, failure handling and
/// background work.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{source, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::Error> {
/// let cache = TokenCache::new(source::from_fn(|_previous| async {
///     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
/// }));
/// let other_handle = cache.clone();
///
/// // The first call fetches; later calls, on any handle, reuse the token.
/// let first = cache.token().await?;
/// let again = other_handle.token().await?;
/// assert_eq!(first.access_token().secret(), again.access_token().secret());
/// assert_eq!(cache.stats().token_requests, 1);
///
/// // After a rejection, only the rejected token is thrown away (B6).
/// assert!(cache.invalidate(&first));
/// assert!(!cache.invalidate(&first), "already gone");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

/// The token and generation the per-request path attaches.
pub(crate) struct Current {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) proofs: Option<crate::proof::Proofs>,
}

impl TokenCache {
    /// A cache over `source` with the default settings.
    pub fn new(source: impl TokenSource) -> Self {
        TokenCacheBuilder::new(Arc::new(source))
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder to configure a cache over `source`.
    pub fn builder(source: impl TokenSource) -> TokenCacheBuilder {
        TokenCacheBuilder::new(Arc::new(source))
    }

    /// A builder over a source that is already shared.
    pub fn builder_from_arc(source: Arc<dyn TokenSource>) -> TokenCacheBuilder {
        TokenCacheBuilder::new(source)
    }

    /// A usable token: the cached one when it is fresh or stale, else the
    /// result of the single refresh, waiting for it if needed.
    ///
    /// # Errors
    ///
    /// The refresh's [`Error`] when there is no usable token; during the
    /// cooldown after a failed refresh, that failure again, at once.
    pub async fn token(&self) -> Result<Token, Error> {
        Ok(self.entry().await?.token.clone())
    }

    /// The `Authorization` header value for a usable token, as
    /// [`token`](Self::token) would get it. Marked sensitive.
    ///
    /// # Errors
    ///
    /// As [`token`](Self::token); and a permanent
    /// [`ErrorKind::Unsendable`](crate::ErrorKind::Unsendable) error for a
    /// token exchange's `N_A` token, which is not an access token and is
    /// never sent in a header.
    pub async fn header_value(&self) -> Result<HeaderValue, Error> {
        let entry = self.entry().await?;
        if let Some(crate::proof::Proofs::NotAnAccessToken) = entry.proofs {
            return Err(crate::proof::not_an_access_token());
        }
        Ok(entry.header.clone())
    }

    async fn entry(&self) -> Result<Arc<entry::Entry>, Error> {
        let now = Instant::now();
        if let Some(entry) = self.shared.current.load_full() {
            match entry.schedule.freshness(now) {
                Freshness::Fresh => return Ok(entry),
                Freshness::Stale => {
                    self.shared.refresh_in_background(now);
                    return Ok(entry);
                }
                Freshness::Expired => {}
            }
        }
        self.shared.acquire(None).await
    }

    /// Tells the cache that the server rejected `token` (B6). If it is still
    /// the current token, it is replaced by the next refresh, which the next
    /// caller starts (after the rejection throttle, when tokens from
    /// rejection-caused refreshes keep being rejected: see the
    /// [module documentation](self#rejections-b6)); if it was already
    /// replaced, nothing happens, so a burst of rejections of one token
    /// causes one refresh. Returns whether the token was the current one.
    ///
    /// [`AuthService`](crate::AuthService) calls this itself; use it when you
    /// attach tokens by hand.
    pub fn invalidate(&self, token: &Token) -> bool {
        let generation = match &*self.shared.current.load() {
            Some(entry) if entry.token.access_token() == token.access_token() => entry.generation,
            _ => return false,
        };
        self.shared.invalidate(generation)
    }

    /// Waits until no refresh is under way: a refresh running now ends (its
    /// token saved to the store and passed to `on_refresh`, or its failure
    /// recorded) before this returns. Returns at once when none is running.
    ///
    /// Call it in a graceful shutdown, once requests have stopped and before
    /// the cache or the runtime is dropped: dropping the last handle aborts
    /// a refresh under way, and so does stopping the runtime, which can lose
    /// a refresh token the server already rotated. The wait is bounded by
    /// the refresh's own limits (`max_attempts` × `attempt_timeout`, plus
    /// backoff, plus the store's lock wait); wrap it in
    /// `tokio::time::timeout` for a tighter bound.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bearer::{source, Token, TokenCache};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = TokenCache::new(source::from_fn(|_previous| async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     Ok(Token::new("t0k3n"))
    /// }));
    /// let waiter = tokio::spawn({
    ///     let cache = cache.clone();
    ///     async move { cache.token().await }
    /// });
    /// tokio::task::yield_now().await; // the refresh is under way
    ///
    /// // Shutting down: let the refresh land first.
    /// cache.settle().await;
    /// assert_eq!(cache.stats().token_requests, 1);
    /// # waiter.await.unwrap().unwrap();
    /// # }
    /// ```
    pub async fn settle(&self) {
        self.shared.settle().await;
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.shared.counters.snapshot()
    }

    /// The token a call may carry now (the per-request path, B1, B2), or
    /// `None` when it must wait for one.
    #[inline]
    pub(crate) fn read(&self, seen: &mut Option<Arc<Local>>) -> Option<Arc<Local>> {
        read::read(&self.shared, seen)
    }

    /// The cache a per-request read came from, if it still exists.
    pub(crate) fn of(local: &Local) -> Option<TokenCache> {
        local.shared.upgrade().map(|shared| TokenCache { shared })
    }

    /// Waits for a usable token; with `after`, for one newer than that
    /// generation.
    pub(crate) async fn acquire(&self, after: Option<u64>) -> Result<Current, Error> {
        let entry = self.shared.acquire(after).await?;
        Ok(Current {
            header: entry.header.clone(),
            generation: entry.generation,
            proofs: entry.proofs.clone(),
        })
    }

    /// Invalidates the token of `generation` if it is still current.
    pub(crate) fn invalidate_generation(&self, generation: u64) -> bool {
        self.shared.invalidate(generation)
    }

    pub(crate) fn record_rejection(&self) {
        stats::Counters::bump(&self.shared.counters.rejections);
        telemetry::count(&self.shared.counters, telemetry::REJECTIONS);
    }

    /// A request is sent once more (after a rejection, a step-up or a DPoP
    /// nonce): counted, and recorded as an event in the request's span
    /// (whatever span the caller polls the request in).
    pub(crate) fn record_retry(&self) {
        tracing::info!(
            cache = %self.shared.counters.name,
            "tower_bearer: sending the request once more with a new token or proof"
        );
        stats::Counters::bump(&self.shared.counters.retries);
        telemetry::count(&self.shared.counters, telemetry::RETRIES);
    }

    /// How the cache's token stands now; `None` without a token.
    pub(crate) fn freshness_now(&self) -> Option<Freshness> {
        let entry = self.shared.current.load();
        entry
            .as_ref()
            .map(|entry| entry.schedule.freshness(Instant::now()))
    }

    /// `true` when both handles share one cache.
    pub fn ptr_eq(&self, other: &TokenCache) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The cache for tokens made with `params` (a scope, an audience,
    /// resource indicators, a claims request) instead of the source's own
    /// request: made on first use with
    /// [`TokenSource::with_params`], kept while it is among the
    /// [`max_variants`](TokenCacheBuilder::max_variants) most recently used
    /// (default [`DEFAULT_MAX_VARIANTS`]). Empty `params` are this cache.
    ///
    /// A variant is a cache of its own: its own token, single flight,
    /// refresh token and counters, and this cache's timing and retry
    /// settings. With a [store](crate::store), it keeps its token there
    /// under this cache's key [with its parameters](crate::store::StoreKey::with_params),
    /// so that the variants of caches in other processes share it; it has
    /// no `on_refresh` hook (that is set up for one token). `params` are
    /// always relative to the source's own request: a variant's variants
    /// are its root's.
    ///
    /// [`AuthService`](crate::AuthService) uses this for requests that
    /// carry [`TokenParams`] in their extensions, and for step-ups (see
    /// [`reject`](crate::reject)).
    ///
    /// Returns `None` when the source cannot make tokens for parameters
    /// (a closure, a static token, a refresh-token-only grant) or when this
    /// variant's root cache was dropped.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
    /// use tower_bearer::{TokenCache, TokenParams};
    ///
    /// # fn main() -> Result<(), tower_bearer::ConfigError> {
    /// let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::post("app", "s3cret"))
    ///     .scope("api:read")
    ///     .build()?;
    /// let cache = TokenCache::new(ClientCredentialsGrant::new(endpoint));
    ///
    /// let admin = cache.variant(&TokenParams::new().scope("api:read api:admin")).unwrap();
    /// let again = cache.variant(&TokenParams::new().scope("api:admin api:read")).unwrap();
    /// assert!(admin.ptr_eq(&again), "scopes are sets");
    /// assert!(cache.variant(&TokenParams::new()).unwrap().ptr_eq(&cache));
    /// # Ok(())
    /// # }
    /// ```
    pub fn variant(&self, params: &TokenParams) -> Option<TokenCache> {
        let root = match &self.shared.family {
            Family::Root(_) => self.shared.clone(),
            Family::Variant(root) => root.upgrade()?,
        };
        if params.is_empty() {
            return Some(TokenCache { shared: root });
        }
        let Family::Root(variants) = &root.family else {
            return None;
        };
        Lru::get_or_make(variants, params, || {
            let source = root.source.with_params(params)?;
            let config = Config {
                store: root
                    .config
                    .store
                    .as_ref()
                    .map(|store| store.for_params(params)),
                on_refresh: None,
                ..root.config.clone()
            };
            let family = Family::Variant(Arc::downgrade(&root));
            Some(Arc::new(Shared::new(source, config, family)))
        })
        .map(|shared| TokenCache { shared })
    }

    /// How many variants this cache (or its root) keeps now.
    pub fn variant_count(&self) -> usize {
        let root = match &self.shared.family {
            Family::Root(_) => self.shared.clone(),
            Family::Variant(root) => match root.upgrade() {
                Some(root) => root,
                None => return 0,
            },
        };
        match &root.family {
            Family::Root(variants) => Lru::len(variants),
            Family::Variant(_) => 0,
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        let state = match &*current {
            None => "empty",
            Some(entry) if entry.rejected => "rejected",
            Some(entry) => match entry.schedule.freshness(Instant::now()) {
                Freshness::Fresh => "fresh",
                Freshness::Stale => "stale",
                Freshness::Expired => "expired",
            },
        };
        let config = &self.shared.config;
        f.debug_struct("TokenCache")
            .field("state", &state)
            .field("refreshing", &self.shared.refreshing())
            .field("leeway", &config.timing.leeway)
            .field("refresh_ahead", &config.timing.refresh_ahead)
            .field("store", &config.store.as_ref().map(|s| &s.key))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Configures a [`TokenCache`]. Every setting has a default (see the
/// constants of this module); [`build`](Self::build) checks them.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{source::StaticToken, TokenCache};
///
/// let cache = TokenCache::builder(StaticToken::new("key"))
///     .leeway(Duration::from_secs(30))
///     .refresh_ahead(0.75)
///     .max_attempts(5)
///     .attempt_timeout(Duration::from_secs(5))
///     .build()
///     .expect("valid settings");
/// # drop(cache);
/// ```
#[must_use]
pub struct TokenCacheBuilder {
    source: Arc<dyn TokenSource>,
    config: Config,
    store_lock_ttl: Option<Duration>,
    store_wait: Option<Duration>,
    max_variants: usize,
}

impl TokenCacheBuilder {
    fn new(source: Arc<dyn TokenSource>) -> Self {
        TokenCacheBuilder {
            source,
            config: Config {
                timing: Timing {
                    leeway: DEFAULT_LEEWAY,
                    refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
                    jitter: DEFAULT_JITTER,
                },
                retries: Retries {
                    max_attempts: DEFAULT_MAX_ATTEMPTS,
                    initial_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    initial_cooldown: Duration::from_secs(1),
                    max_cooldown: Duration::from_secs(30),
                    attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
                },
                default_lifetime: DEFAULT_LIFETIME,
                store: None,
                on_refresh: None,
                name: Arc::from("default"),
            },
            store_lock_ttl: None,
            store_wait: None,
            max_variants: DEFAULT_MAX_VARIANTS,
        }
    }

    /// How many [variants](TokenCache::variant) (caches for per-request
    /// [`TokenParams`]) the cache keeps at most (default
    /// [`DEFAULT_MAX_VARIANTS`], 64); the least recently used is dropped
    /// first. At least 1.
    pub fn max_variants(mut self, max: usize) -> Self {
        self.max_variants = max;
        self
    }

    /// The cache's name (default `default`): the `cache` label of its
    /// [metrics](crate::cache#metrics) (feature `metrics`), so that the
    /// caches of several APIs can be told apart. Its variants share it.
    ///
    /// ```
    /// use tower_bearer::{source::StaticToken, TokenCache};
    ///
    /// let orders = TokenCache::builder(StaticToken::new("k")).name("orders").build()?;
    /// # drop(orders);
    /// # Ok::<_, tower_bearer::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Arc::from(name.into());
        self
    }

    /// How long before its expiry a token stops being sent (default 60 s).
    /// Capped at a tenth of each token's lifetime, so short-lived tokens are
    /// still reused (B1).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.config.timing.leeway = leeway;
        self
    }

    /// The fraction of a token's lifetime after which it is refreshed in the
    /// background while still being sent (default 0.8). Must be in `(0, 1]`.
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.config.timing.refresh_ahead = Some(fraction);
        self
    }

    /// Turns refresh ahead off: tokens are used until expiry − leeway, and the
    /// caller that finds one expired waits for the next.
    pub fn no_refresh_ahead(mut self) -> Self {
        self.config.timing.refresh_ahead = None;
        self
    }

    /// Up to this fraction of the lifetime is taken off the refresh-ahead
    /// point at random (default 0.05). Must be in `[0, 1)`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.timing.jitter = fraction;
        self
    }

    /// The lifetime assumed for tokens that come without an expiry and are
    /// not JWTs with an `exp` claim (default 15 minutes).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.default_lifetime = lifetime;
        self
    }

    /// Token requests per refresh, the first included (default 3). At least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.retries.max_attempts = attempts;
        self
    }

    /// The backoff between attempts of one refresh: a random delay up to
    /// `initial` × 2ⁿ, capped at `max` (defaults 100 ms and 5 s). A
    /// `Retry-After` up to `max` is honoured instead.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retries.initial_backoff = initial;
        self.config.retries.max_backoff = max;
        self
    }

    /// The pause after a failed refresh before another may start: `initial`
    /// after the first failure, doubling per failure in a row up to `max`
    /// (defaults 1 s and 30 s).
    pub fn cooldown(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retries.initial_cooldown = initial;
        self.config.retries.max_cooldown = max;
        self
    }

    /// The time limit of each token request (default 10 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.retries.attempt_timeout = Some(timeout);
        self
    }

    /// Removes the per-attempt time limit: a request takes as long as the
    /// source takes. Put a timeout inside the source instead.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.config.retries.attempt_timeout = None;
        self
    }

    /// Keeps tokens in `store` under `key`, to survive restarts and to share
    /// one token with other caches, processes or replicas: see the
    /// [`store`](crate::store) module. For the OAuth2 grants, the key is
    /// their `store_key()`.
    ///
    /// The store is used by refreshes only, never on the per-request path.
    /// A token the cache fetches is saved before it is handed out; if the
    /// save fails, the failure is logged and the token handed out anyway.
    pub fn store(mut self, store: impl TokenStore, key: StoreKey) -> Self {
        self.config.store = Some(StoreSettings {
            store: Arc::new(store),
            key,
            lock_ttl: self.store_lock_ttl,
            wait: self.store_wait,
            refresh_bound: Duration::ZERO,
            held: Arc::default(),
        });
        self
    }

    /// The time to live of the store's refresh lock (by default a tenth of
    /// the token's lifetime, between 1 and 10 s: see
    /// [`default_store_lock_ttl`]): at most this long does a holder
    /// that died delay the others (a [`FileStore`](crate::store::FileStore)
    /// lock ends with its process, whatever this says). The holder extends
    /// it every third of it for as long as it holds it, and tries again a
    /// [poll interval](crate::cache::STORE_POLL_INTERVAL) after a failed
    /// extension.
    ///
    /// At least 10 ms, and well above the store's round trip: an extension
    /// that takes a third of it counts as failed. `Duration::MAX` is
    /// allowed (a `RedisStore` caps it at what Redis accepts) and means
    /// that a crashed holder's lock never lapses: the others then wait
    /// [`store_wait`](Self::store_wait).
    pub fn store_lock_ttl(mut self, ttl: Duration) -> Self {
        self.store_lock_ttl = Some(ttl);
        if let Some(store) = &mut self.config.store {
            store.lock_ttl = Some(ttl);
        }
        self
    }

    /// How long a refresh waits for another cache holding the store's
    /// refresh lock before it fetches a token on its own. By default the
    /// lock's time to live plus the longest a refresh with this cache's
    /// retry settings can take (`max_attempts` × (`attempt_timeout` +
    /// maximum backoff)), or plus 60 s without an attempt timeout.
    ///
    /// Fetching without the lock while the holder still refreshes is what
    /// the lock prevents: with a shared *rotating* refresh token both send
    /// the same one, and a server with reuse detection revokes the grant.
    /// Keep it above the longest refresh of every cache sharing the store.
    pub fn store_wait(mut self, wait: Duration) -> Self {
        self.store_wait = Some(wait);
        if let Some(store) = &mut self.config.store {
            store.wait = Some(wait);
        }
        self
    }

    /// Calls `hook` with each token this cache fetched from its source,
    /// after it was saved to the store (if any) and before it is handed
    /// out: a hook that persists the token (and its possibly rotated
    /// refresh token) synchronously has it persisted before anyone uses it.
    ///
    /// Not called for tokens taken from the store: the cache that fetched
    /// them called its own hook. The hook runs on the refresh task: keep it
    /// short and never block on async work. A panic in it is logged and
    /// does not fail the refresh. Never log the token's secrets (B8).
    pub fn on_refresh(mut self, hook: impl Fn(&Token) + Send + Sync + 'static) -> Self {
        self.config.on_refresh = Some(OnRefresh(Arc::new(hook)));
        self
    }

    /// Checks the settings and builds the cache.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting that cannot work.
    pub fn build(mut self) -> Result<TokenCache, ConfigError> {
        let Config {
            timing,
            retries,
            default_lifetime,
            store,
            on_refresh: _,
            name: _,
        } = &mut self.config;
        if let Some(ratio) = timing.refresh_ahead
            && !(ratio > 0.0 && ratio <= 1.0)
        {
            return Err(ConfigError::new("refresh_ahead must be in (0, 1]"));
        }
        if !(0.0..1.0).contains(&timing.jitter) {
            return Err(ConfigError::new("jitter must be in [0, 1)"));
        }
        if retries.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts must be at least 1"));
        }
        if retries.initial_backoff > retries.max_backoff {
            return Err(ConfigError::new("the initial backoff exceeds the maximum"));
        }
        if retries.initial_cooldown > retries.max_cooldown {
            return Err(ConfigError::new("the initial cooldown exceeds the maximum"));
        }
        if retries.attempt_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("attempt_timeout must not be zero"));
        }
        if self.max_variants == 0 {
            return Err(ConfigError::new("max_variants must be at least 1"));
        }
        if default_lifetime.is_zero() {
            return Err(ConfigError::new("default_lifetime must not be zero"));
        }
        if let Some(store) = store {
            if store
                .lock_ttl
                .is_some_and(|ttl| ttl < Duration::from_millis(10))
            {
                return Err(ConfigError::new("store_lock_ttl must be at least 10 ms"));
            }
            if let Some(reason) = store.key.unusable_reason() {
                return Err(ConfigError::new(reason));
            }
            store.refresh_bound = match retries.attempt_timeout {
                Some(timeout) => timeout
                    .saturating_add(retries.max_backoff)
                    .saturating_mul(retries.max_attempts),
                None => Duration::from_secs(60),
            };
        }
        Ok(TokenCache {
            shared: Arc::new(Shared::new(
                self.source,
                self.config,
                Family::root(self.max_variants),
            )),
        })
    }
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::schedule::Timing;
    use super::*;

    /// The table of the module docs, from the code.
    fn schedule_table() -> String {
        let timing = Timing {
            leeway: DEFAULT_LEEWAY,
            refresh_ahead: Some(DEFAULT_REFRESH_AHEAD),
            jitter: DEFAULT_JITTER,
        };
        let mut table = String::from(
            "| token lifetime | leeway | usable until | stale from (jitter) | token requests per lifetime, at most |\n\
             | --- | --- | --- | --- | --- |\n",
        );
        let t0 = Instant::now();
        for (secs, name) in [
            (3, "3 s"),
            (60, "60 s"),
            (300, "5 min"),
            (3600, "1 h"),
            (86_400, "24 h"),
        ] {
            let lifetime = Duration::from_secs(secs);
            let earliest = timing.schedule(t0, t0 + lifetime, 0.999_999_999);
            let latest = timing.schedule(t0, t0 + lifetime, 0.0);
            assert_eq!(earliest.usable_until, latest.usable_until);
            let usable = latest.usable_until - t0;
            let stale_min = earliest.stale_at - t0;
            let stale_max = latest.stale_at - t0;
            let per_lifetime = lifetime.as_secs_f64() / stale_min.as_secs_f64();
            table += &format!(
                "| {name} | {} | {} | {} – {} | {per_lifetime:.2} |\n",
                human(lifetime - usable),
                human(usable),
                human(stale_min),
                human(stale_max),
            );
        }
        table
    }

    /// `90 s` as `1 min 30 s`, to a hundredth of a second.
    fn human(d: Duration) -> String {
        let hundredths = (d.as_secs_f64() * 100.0).round() as u64;
        let (h, rest) = (hundredths / 360_000, hundredths % 360_000);
        let (m, rest) = (rest / 6_000, rest % 6_000);
        let s = rest as f64 / 100.0;
        let mut parts = Vec::new();
        if h > 0 {
            parts.push(format!("{h} h"));
        }
        if m > 0 {
            parts.push(format!("{m} min"));
        }
        if s > 0.0 || parts.is_empty() {
            parts.push(format!("{s} s"));
        }
        parts.join(" ")
    }

    #[tokio::test]
    async fn schedule_table_in_the_docs_is_the_code_s() {
        let table = schedule_table();
        let docs: String = include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! "))
            .filter(|line| line.starts_with('|'))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            docs.contains(&table),
            "the docs' schedule table should be:\n{table}"
        );
    }
}
