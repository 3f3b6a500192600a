//! The state every handle of a cache shares, and the single flight that
//! refreshes it.
//!
//! # How a refresh runs
//!
//! A refresh is a tokio task of its own, started under the `flight` lock by
//! whichever caller first needs it (B3). It belongs to no caller, so a caller
//! that gives up (its future dropped, its timeout fired) cancels nothing for
//! the others. Callers that need the result subscribe to the flight's `watch`
//! channel; every one of them receives the same outcome, success or the same
//! shared [`Error`].
//!
//! The task holds a `Weak` to the shared state, never an `Arc`: when the last
//! handle is dropped, `Shared`'s `Drop` aborts the task, so background work
//! never outlives the cache and never keeps a runtime busy (B2).
//!
//! # Locking
//!
//! Readers never lock: the current entry is an `ArcSwapOption`. The `flight`
//! mutex is taken only to start a refresh, to finish one, to invalidate, and
//! by callers that have no usable token; it is never held across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::entry::Entry;
use super::policy::{MAX_RETRY_AFTER, Retries, Timing};
use super::random;
use super::stats::Counters;
use super::with_store::{self, Obtained, OnRefresh, StoreSettings};
use crate::{Error, Token, TokenSource};

/// What a refresh hands its waiters.
pub(crate) type Outcome = Result<Arc<Entry>, Error>;

/// Settings fixed when the cache is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) timing: Timing,
    pub(crate) retries: Retries,
    pub(crate) default_lifetime: Duration,
    /// The store shared with other caches, processes or runs, if any.
    pub(crate) store: Option<StoreSettings>,
    /// Called with each token this cache fetched, before it is handed out.
    pub(crate) on_refresh: Option<OnRefresh>,
}

/// Why a refresh started; logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No token yet.
    Cold,
    /// The token is stale: refresh ahead in the background (B2).
    Stale,
    /// The token is no longer usable (B1).
    Expired,
    /// The server rejected the token (B6).
    Rejected,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Cold => "cold",
            Reason::Stale => "stale",
            Reason::Expired => "expired",
            Reason::Rejected => "rejected",
        }
    }
}

/// The state shared by every handle of one cache.
pub(crate) struct Shared {
    /// The token callers get. The per-request path reads only this.
    pub(crate) current: ArcSwapOption<Entry>,
    /// Nanoseconds after `epoch` before which a stale token does not try to
    /// start a background refresh: `u64::MAX` while one runs, the end of the
    /// cooldown after a failure, 0 otherwise. Lets the stale path skip the
    /// lock.
    next_background: AtomicU64,
    epoch: Instant,
    flight: Mutex<Flight>,
    source: Arc<dyn TokenSource>,
    pub(crate) config: Config,
    pub(crate) counters: Arc<Counters>,
}

/// Refresh bookkeeping, behind the `flight` lock.
#[derive(Default)]
struct Flight {
    /// The refresh under way, if any: subscribe to get its outcome.
    running: Option<watch::Receiver<Option<Outcome>>>,
    /// Its task, aborted when the cache is dropped.
    task: Option<AbortHandle>,
    /// The last refresh's failure while no refresh has succeeded since.
    failure: Option<Failure>,
    /// Refreshes that failed in a row; drives the cooldown.
    failures_in_row: u32,
    /// The generation of the last installed token.
    generation: u64,
}

struct Failure {
    error: Error,
    /// No new refresh starts before this instant (B4 cooldown).
    retry_at: Instant,
}

impl Shared {
    pub(crate) fn new(source: Arc<dyn TokenSource>, config: Config) -> Self {
        Shared {
            current: ArcSwapOption::empty(),
            next_background: AtomicU64::new(0),
            epoch: Instant::now(),
            flight: Mutex::new(Flight::default()),
            source,
            config,
            counters: Arc::new(Counters::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flight> {
        // Nothing panics while holding the lock; if something ever did, the
        // state is still consistent field by field, so keep going.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// The stale path: make sure a background refresh is under way, unless
    /// one already is or the cooldown after a failure has not passed (B2, B4).
    #[cold]
    pub(crate) fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        if self.nanos(now) < self.next_background.load(Ordering::Acquire) {
            return;
        }
        let mut flight = self.lock();
        if flight.running.is_some() || flight.failure.as_ref().is_some_and(|f| now < f.retry_at) {
            return;
        }
        if let Err(error) = self.start(&mut flight, Reason::Stale) {
            tracing::warn!(%error, "could not start a background token refresh");
        }
    }

    /// Waits for a usable token; with `after`, for one newer than that
    /// generation (the rejected token's).
    ///
    /// A caller that waited for a refresh gets that refresh's token even when
    /// its usable window is empty (`expires_in: 0` means "use once").
    pub(crate) async fn acquire(self: &Arc<Self>, after: Option<u64>) -> Outcome {
        let accepts = |entry: &Entry, now: Instant| {
            after.is_none_or(|g| entry.generation > g) && entry.schedule.usable_until > now
        };
        let mut rx = {
            let now = Instant::now();
            if let Some(entry) = self.current.load_full()
                && accepts(&entry, now)
            {
                self.rearm_if_needed(&entry, now);
                return Ok(entry);
            }
            let mut flight = self.lock();
            // Re-check under the lock: a refresh may have finished meanwhile.
            let current = self.current.load_full();
            if let Some(entry) = &current
                && accepts(entry, now)
            {
                return Ok(entry.clone());
            }
            match &flight.running {
                Some(rx) => rx.clone(),
                None => {
                    if let Some(failure) = &flight.failure
                        && now < failure.retry_at
                    {
                        return Err(failure.error.clone());
                    }
                    let reason = match (&current, after) {
                        (None, _) => Reason::Cold,
                        (Some(_), Some(_)) => Reason::Rejected,
                        (Some(e), None) if e.invalidated => Reason::Rejected,
                        (Some(_), None) => Reason::Expired,
                    };
                    self.start(&mut flight, reason)?
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| Err(Error::interrupted("token refresh ended without a result"))),
            Err(_) => Err(Error::interrupted("token refresh ended without a result")),
        }
    }

    /// A usable token whose timers say otherwise had them armed on a runtime
    /// that has shut down (its timers all fire then): the per-request path
    /// would send every call the slow way. Publish the same token with
    /// timers on the current runtime.
    #[cold]
    fn rearm_if_needed(&self, entry: &Arc<Entry>, now: Instant) {
        if entry.invalidated
            || entry.freshness_by_timers() <= entry.schedule.freshness(now)
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let _flight = self.lock();
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, entry)) {
            drop(current);
            self.current.store(Some(Arc::new(entry.rearmed())));
            tracing::debug!("token timers re-armed on the current runtime");
        }
    }

    /// Marks the token of `generation` as rejected, if it is still the
    /// current one (compare-and-swap, B6). Returns whether it was.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        let _flight = self.lock();
        let current = self.current.load();
        match &*current {
            Some(entry) if entry.generation == generation && !entry.invalidated => {
                let replaced = Arc::new(entry.invalidated(Instant::now()));
                drop(current);
                self.current.store(Some(replaced));
                tracing::debug!(generation, "token rejected by the server; invalidated");
                true
            }
            _ => false,
        }
    }

    /// Starts a refresh. Called with the flight lock held and no refresh
    /// running.
    fn start(
        self: &Arc<Self>,
        flight: &mut Flight,
        reason: Reason,
    ) -> Result<watch::Receiver<Option<Outcome>>, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::interrupted("no tokio runtime to run the token refresh on"))?;
        let (tx, rx) = watch::channel(None);
        let previous = self.current.load_full();
        self.next_background.store(u64::MAX, Ordering::Release);
        let guard = FlightGuard {
            shared: Arc::downgrade(self),
            tx: Some(tx),
        };
        let task = runtime.spawn(run(
            guard,
            self.source.clone(),
            self.counters.clone(),
            self.config.clone(),
            previous,
            reason,
        ));
        flight.running = Some(rx.clone());
        flight.task = Some(task.abort_handle());
        Ok(rx)
    }

    /// Ends the refresh under way: installs its token or records its
    /// failure, and returns what its waiters get.
    fn finish(&self, result: Result<Token, Error>, started: Instant) -> Outcome {
        let now = Instant::now();
        let mut flight = self.lock();
        flight.running = None;
        flight.task = None;
        let generation = flight.generation + 1;
        let result = result.and_then(|token| {
            let c = &self.config;
            Entry::new(
                token,
                generation,
                &c.timing,
                c.default_lifetime,
                random::unit(),
            )
        });
        match result {
            Ok(entry) => {
                let entry = Arc::new(entry);
                flight.generation = generation;
                flight.failure = None;
                flight.failures_in_row = 0;
                self.current.store(Some(entry.clone()));
                self.next_background.store(0, Ordering::Release);
                tracing::debug!(
                    generation,
                    elapsed_ms = now.saturating_duration_since(started).as_millis() as u64,
                    usable_for_s = entry
                        .schedule
                        .usable_until
                        .saturating_duration_since(now)
                        .as_secs(),
                    "token refreshed"
                );
                Ok(entry)
            }
            Err(error) => {
                flight.failures_in_row = flight.failures_in_row.saturating_add(1);
                let mut cooldown = self
                    .config
                    .retries
                    .cooldown(flight.failures_in_row, random::unit());
                if let Some(asked) = error.retry_after() {
                    cooldown = cooldown.max(asked.min(MAX_RETRY_AFTER));
                }
                let retry_at = crate::token::later(now, cooldown);
                flight.failure = Some(Failure {
                    error: error.clone(),
                    retry_at,
                });
                self.next_background
                    .store(self.nanos(retry_at), Ordering::Release);
                Counters::bump(&self.counters.refresh_failures);
                let still_usable = self
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|e| e.schedule.usable_until > now);
                if still_usable {
                    tracing::warn!(
                        %error,
                        failures_in_row = flight.failures_in_row,
                        cooldown_ms = cooldown.as_millis() as u64,
                        "token refresh failed; still serving the current token"
                    );
                } else {
                    tracing::error!(
                        %error,
                        failures_in_row = flight.failures_in_row,
                        cooldown_ms = cooldown.as_millis() as u64,
                        "token refresh failed; no usable token"
                    );
                }
                Err(error)
            }
        }
    }

    /// Whether a refresh is under way (for `Debug`).
    pub(crate) fn refreshing(&self) -> bool {
        self.lock().running.is_some()
    }

    /// The outcome channel of the refresh under way, if any.
    pub(crate) fn running(&self) -> Option<watch::Receiver<Option<Outcome>>> {
        self.lock().running.clone()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let flight = self
            .flight
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = flight.task.take() {
            task.abort();
        }
    }
}

/// Owned by the refresh task. If the task ends without reporting (the source
/// panicked), dropping the guard still ends the flight, so no caller waits
/// forever and the next caller can start a new refresh.
struct FlightGuard {
    shared: Weak<Shared>,
    tx: Option<watch::Sender<Option<Outcome>>>,
}

impl FlightGuard {
    fn complete(&mut self, result: Result<Token, Error>, started: Instant) {
        let Some(tx) = self.tx.take() else { return };
        // The cache is gone: nobody is waiting, nothing to install.
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let outcome = shared.finish(result, started);
        tx.send_replace(Some(outcome));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.complete(
                Err(Error::interrupted(
                    "the refresh task panicked (a panicking token source, or a runtime without its time driver)",
                )),
                Instant::now(),
            );
        }
    }
}

/// The refresh task: one token, with retries (B4), through the store when
/// there is one. The token is saved to the store, and `on_refresh` called,
/// before the task hands it to the cache (B5: a rotated refresh token is
/// persisted before the new access token is used).
async fn run(
    mut guard: FlightGuard,
    source: Arc<dyn TokenSource>,
    counters: Arc<Counters>,
    config: Config,
    previous: Option<Arc<Entry>>,
    reason: Reason,
) {
    let started = Instant::now();
    tracing::debug!(reason = reason.as_str(), "token refresh started");
    let result = match &config.store {
        Some(settings) => {
            with_store::refresh(settings, &*source, previous.as_deref(), &config, &counters).await
        }
        None => {
            let previous = previous.as_ref().map(|entry| &entry.token);
            fetch(&*source, previous, &config.retries, &counters)
                .await
                .map(|token| Obtained {
                    token,
                    fetched: true,
                })
        }
    };
    let result = result.map(|obtained| {
        if obtained.fetched
            && let Some(hook) = &config.on_refresh
        {
            hook.call(&obtained.token);
        }
        obtained.token
    });
    guard.complete(result, started);
}

/// Asks the source for a token until it succeeds, fails permanently, or runs
/// out of attempts. Honours `Retry-After` when it is not longer than the
/// maximum backoff; a longer one ends the refresh, and the cooldown honours
/// it instead, so that waiting callers are not held for minutes.
pub(crate) async fn fetch(
    source: &dyn TokenSource,
    previous: Option<&Token>,
    retries: &Retries,
    counters: &Counters,
) -> Result<Token, Error> {
    let mut failures = 0u32;
    loop {
        Counters::bump(&counters.token_requests);
        let attempt = source.fetch(previous);
        let result = match retries.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| Err(Error::timeout(limit))),
            None => attempt.await,
        };
        let error = match result {
            Ok(token) => return Ok(token),
            Err(error) => error,
        };
        failures += 1;
        // Counted in the same poll that creates the backoff timer below, so
        // a test that sees this count knows the timer's deadline is set.
        Counters::bump(&counters.failed_token_requests);
        if error.is_permanent() || failures >= retries.max_attempts {
            return Err(error);
        }
        let delay = match error.retry_after() {
            Some(asked) if asked > retries.max_backoff => return Err(error),
            Some(asked) => asked,
            None => retries.backoff(failures - 1, random::unit()),
        };
        tracing::info!(
            %error,
            attempt = failures,
            delay_ms = delay.as_millis() as u64,
            "token request failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}
