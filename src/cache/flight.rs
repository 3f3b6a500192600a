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
//! # Nobody waits on a refresh nobody drives
//!
//! The task runs on the runtime of the caller that started it. A caller on
//! another runtime cannot tell whether that runtime is still driven (a
//! synchronous facade's runtime runs only inside its `block_on`), so it
//! waits with a patience of its own, on its own clock: the refresh reports
//! each step (a token request, bounded by the attempt timeout; a backoff; a
//! store operation), and a caller that sees no report within the step's
//! bound takes the refresh over: it aborts the task (which then never sends
//! anything more) and starts a new one on its own runtime. A caller on the
//! refresh's own runtime drives it by waiting, and needs no patience.
//!
//! # Failures and panics
//!
//! A refresh that ends without a token, for whatever reason (the source
//! failed, timed out, or panicked; the runtime had no time driver), records
//! a failure, and the cooldown applies (B4). The task's guard does that
//! even when the task unwinds.
//!
//! # Locking
//!
//! The per-request path never locks: it reads `published` (see `read`).
//! The `flight` mutex is taken only to start a refresh, to finish one, to
//! invalidate, and by callers that have no usable token; it is never held
//! across an `.await`.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::config::Config;
use super::entry::Entry;
use super::fetch::fetch;
use super::random;
use super::schedule::MAX_RETRY_AFTER;
use super::stats::Counters;
use super::telemetry;
use super::variants::Family;
use super::with_store::{self, Obtained};
use crate::{Error, Token, TokenSource};

/// What a refresh hands its waiters.
pub(crate) type Outcome = Result<Arc<Entry>, Error>;

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
    /// The `reason` label of the refresh metrics.
    fn metric(self) -> &'static str {
        match self {
            Reason::Cold => "first",
            Reason::Stale => "ahead",
            Reason::Expired => "expired",
            Reason::Rejected => "rejected",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Reason::Cold => "cold",
            Reason::Stale => "stale",
            Reason::Expired => "expired",
            Reason::Rejected => "rejected",
        }
    }
}

/// What a refresh has told its waiters so far.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Under way; the next report comes within this long (`None`: no
    /// bound, the attempt timeout is off).
    Working(Option<Duration>),
    /// Over.
    Done(Outcome),
}

/// The version of the entry in `current`, alone on its cache line: every
/// call on every thread reads it, and only a publication writes it.
#[repr(align(128))]
pub(crate) struct Published {
    pub(crate) version: AtomicU64,
}

/// The state shared by every handle of one cache.
pub(crate) struct Shared {
    /// The per-request path reads this, and nothing else of `Shared` while
    /// the token is fresh.
    pub(crate) published: Published,
    /// The token callers get.
    pub(crate) current: ArcSwapOption<Entry>,
    /// Nanoseconds after `epoch` before which a stale token does not try to
    /// start a background refresh: `u64::MAX` while one runs, the end of the
    /// cooldown after a failure, 0 otherwise. Lets the stale path skip the
    /// lock.
    next_background: AtomicU64,
    epoch: Instant,
    flight: Mutex<Flight>,
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) config: Config,
    pub(crate) counters: Arc<Counters>,
    /// The variants this cache keeps, or the cache that keeps this one.
    pub(crate) family: Family<Shared>,
}

/// Refresh bookkeeping, behind the `flight` lock.
#[derive(Default)]
struct Flight {
    /// The refresh under way, if any.
    running: Option<Running>,
    /// The last refresh's failure while no refresh has succeeded since.
    failure: Option<Failure>,
    /// Refreshes that failed in a row; drives the cooldown.
    failures_in_row: u32,
    /// The generation of the last installed token.
    generation: u64,
    /// The id of the next refresh.
    next_id: u64,
}

/// A refresh under way.
struct Running {
    id: u64,
    /// Subscribe to get its progress and outcome.
    rx: watch::Receiver<Progress>,
    /// Its task, aborted when the cache is dropped or the refresh taken over.
    task: AbortHandle,
    /// The runtime its task runs on.
    runtime: tokio::runtime::Id,
}

struct Failure {
    error: Error,
    /// No new refresh starts before this instant (B4 cooldown).
    retry_at: Instant,
}

/// A caller's place in a refresh.
struct Joined {
    id: u64,
    rx: watch::Receiver<Progress>,
    /// Whether the refresh runs on another runtime than the caller's.
    foreign: bool,
}

enum Join {
    Ready(Arc<Entry>),
    Wait(Joined),
}

enum Waited {
    Done(Outcome),
    /// The refresh reported nothing within its bound: nobody drives it.
    Stalled(u64),
}

impl Shared {
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        config: Config,
        family: Family<Shared>,
    ) -> Self {
        Shared {
            published: Published {
                version: AtomicU64::new(0),
            },
            current: ArcSwapOption::empty(),
            next_background: AtomicU64::new(0),
            epoch: Instant::now(),
            flight: Mutex::new(Flight::default()),
            counters: Arc::new(Counters::named(config.name.clone())),
            source,
            config,
            family,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flight> {
        // Nothing panics while holding the lock; if something ever did, the
        // state is still consistent field by field, so keep going.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `entry` the current token. Called with the flight lock held.
    fn publish(&self, entry: Arc<Entry>) {
        let version = entry.version;
        self.current.store(Some(entry));
        // After the entry: a reader that sees this version finds the entry.
        self.published.version.store(version, Ordering::Release);
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
        if let Err(error) = self.start(&mut flight, Reason::Stale, 0) {
            tracing::warn!(%error, "could not start a background token refresh");
        }
    }

    /// Waits for a usable token; with `after`, for one newer than that
    /// generation (the rejected token's).
    ///
    /// A caller that waited for a refresh gets that refresh's token even when
    /// its usable window is empty (`expires_in: 0` means "use once").
    pub(crate) async fn acquire(self: &Arc<Self>, after: Option<u64>) -> Outcome {
        let mut took_over = false;
        let mut counted = false;
        loop {
            let joined = match self.join(after)? {
                Join::Ready(entry) => return Ok(entry),
                Join::Wait(joined) => joined,
            };
            if !std::mem::replace(&mut counted, true) {
                telemetry::count(&self.counters, telemetry::WAITS);
            }
            match self.wait(joined).await {
                Waited::Done(outcome) => return outcome,
                Waited::Stalled(id) if !took_over => {
                    took_over = true;
                    self.abandon(id);
                }
                Waited::Stalled(_) => {
                    return Err(Error::interrupted(
                        "the token refresh made no progress on any runtime",
                    ));
                }
            }
        }
    }

    /// A usable token at once, or the refresh to wait for (joined or
    /// started), or the error that stands instead.
    fn join(self: &Arc<Self>, after: Option<u64>) -> Result<Join, Error> {
        let now = Instant::now();
        let accepts = |entry: &Entry| {
            after.is_none_or(|g| entry.generation > g) && entry.schedule.usable_until > now
        };
        if let Some(entry) = self.current.load_full()
            && accepts(&entry)
        {
            return Ok(Join::Ready(entry));
        }
        let mut flight = self.lock();
        // Re-check under the lock: a refresh may have finished meanwhile.
        let current = self.current.load_full();
        if let Some(entry) = &current
            && accepts(entry)
        {
            return Ok(Join::Ready(entry.clone()));
        }
        if let Some(running) = &flight.running {
            return Ok(Join::Wait(running.joined()));
        }
        if let Some(failure) = &flight.failure
            && now < failure.retry_at
        {
            return Err(failure.error.clone());
        }
        let (reason, streak) = match &current {
            None => (Reason::Cold, 0),
            Some(entry) if entry.rejected => {
                // B6: the rejected token is held while the rejection
                // throttle lasts; no refresh before its end.
                if now < entry.schedule.usable_until {
                    return Err(Error::interrupted(
                        "a rejected token is held while the rejection throttle lasts",
                    ));
                }
                (Reason::Rejected, entry.streak.saturating_add(1))
            }
            Some(_) => (Reason::Expired, 0),
        };
        self.start(&mut flight, reason, streak).map(Join::Wait)
    }

    /// Waits for the outcome of `joined`. A caller on the refresh's own
    /// runtime drives it by waiting; a caller on another runtime gives up
    /// when a step takes longer than its bound, on this caller's clock.
    async fn wait(&self, joined: Joined) -> Waited {
        let Joined {
            id,
            mut rx,
            foreign,
        } = joined;
        if foreign {
            loop {
                let within = match &*rx.borrow_and_update() {
                    Progress::Done(outcome) => return Waited::Done(outcome.clone()),
                    Progress::Working(within) => *within,
                };
                let Some(within) = within else { break };
                // A runtime without a time driver cannot time anything:
                // then wait like a caller on the refresh's runtime.
                let Some(sleep) = crate::timer::sleep(within) else {
                    break;
                };
                let mut sleep = pin!(sleep);
                let mut changed = pin!(rx.changed());
                let heard = poll_fn(|cx| {
                    if let Poll::Ready(changed) = changed.as_mut().poll(cx) {
                        return Poll::Ready(Some(changed));
                    }
                    sleep.as_mut().poll(cx).map(|()| None)
                })
                .await;
                match heard {
                    Some(Ok(())) => continue,
                    Some(Err(_)) => return Waited::Done(Err(ended())),
                    None => return Waited::Stalled(id),
                }
            }
        }
        let outcome = match rx
            .wait_for(|progress| matches!(progress, Progress::Done(_)))
            .await
        {
            Ok(progress) => match &*progress {
                Progress::Done(outcome) => outcome.clone(),
                Progress::Working(_) => Err(ended()),
            },
            Err(_) => Err(ended()),
        };
        Waited::Done(outcome)
    }

    /// Gives up on refresh `id`, which nobody drives: aborts its task, so
    /// that it never sends anything more, and clears the way for a new one.
    fn abandon(&self, id: u64) {
        let mut flight = self.lock();
        if let Some(running) = &flight.running
            && running.id == id
        {
            running.task.abort();
            flight.running = None;
            self.next_background.store(0, Ordering::Release);
            tracing::warn!(
                "the token refresh made no progress on the runtime that started it; \
                 a caller on another runtime takes it over"
            );
        }
    }

    /// Marks the token of `generation` as rejected, if it is still the
    /// current one (compare-and-swap, B6). Returns whether it was.
    ///
    /// A token from a refresh that a rejection caused, rejected in its
    /// turn, is held for a cooldown before the next refresh (1 s doubling
    /// to 30 s with the default settings, as after failed refreshes): an
    /// API that rejects every token gets a few token requests a minute,
    /// not one per request. Meanwhile the rejected token keeps being sent,
    /// so callers get the server's answer rather than an error of ours.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        let _flight = self.lock();
        let current = self.current.load_full();
        match current {
            Some(entry) if entry.generation == generation && !entry.rejected => {
                let hold = match entry.streak {
                    0 => Duration::ZERO,
                    streak => self.config.retries.cooldown(streak, random::unit()),
                };
                self.publish(Arc::new(entry.rejected(Instant::now(), hold)));
                if hold.is_zero() {
                    tracing::debug!(generation, "token rejected by the server; invalidated");
                } else {
                    tracing::warn!(
                        generation,
                        rejected_in_row = entry.streak,
                        hold_ms = hold.as_millis() as u64,
                        "a new token was rejected again; the next refresh waits"
                    );
                }
                true
            }
            _ => false,
        }
    }

    /// Starts a refresh. Called with the flight lock held and no refresh
    /// running. `streak` is what the new token's [`Entry::streak`] will be.
    fn start(
        self: &Arc<Self>,
        flight: &mut Flight,
        reason: Reason,
        streak: u32,
    ) -> Result<Joined, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::interrupted("no tokio runtime to run the token refresh on"))?;
        let id = flight.next_id;
        flight.next_id += 1;
        let (tx, rx) = watch::channel(Progress::Working(self.config.retries.attempt_timeout));
        let previous = self.current.load_full();
        telemetry::refresh(
            &self.counters,
            reason.metric(),
            previous
                .as_ref()
                .map(|entry| Instant::now().saturating_duration_since(entry.token.issued_at())),
        );
        self.next_background.store(u64::MAX, Ordering::Release);
        let guard = FlightGuard {
            shared: Arc::downgrade(self),
            id,
            streak,
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
        let running = Running {
            id,
            rx,
            task: task.abort_handle(),
            runtime: runtime.id(),
        };
        let joined = running.joined();
        flight.running = Some(running);
        Ok(joined)
    }

    /// Ends refresh `id`: installs its token or records its failure, and
    /// returns what its waiters get. A refresh that was taken over changes
    /// nothing.
    fn finish(&self, id: u64, streak: u32, result: Result<Token, Error>) -> Outcome {
        let now = Instant::now();
        let mut flight = self.lock();
        if flight.running.as_ref().is_none_or(|r| r.id != id) {
            return Err(ended());
        }
        flight.running = None;
        let generation = flight.generation + 1;
        let result = result.and_then(|token| {
            let c = &self.config;
            catch_unwind(AssertUnwindSafe(|| {
                Entry::new(
                    token,
                    generation,
                    streak,
                    &c.timing,
                    c.default_lifetime,
                    random::unit(),
                )
            }))
            .unwrap_or_else(|_| Err(Error::interrupted("installing the token panicked")))
        });
        match result {
            Ok(entry) => {
                let entry = Arc::new(entry);
                flight.generation = generation;
                flight.failure = None;
                flight.failures_in_row = 0;
                self.publish(entry.clone());
                self.next_background.store(0, Ordering::Release);
                telemetry::installed(
                    &self.counters,
                    entry.expires_at.saturating_duration_since(now),
                );
                tracing::debug!(
                    generation,
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

    /// Waits until the refresh under way, if any, has ended.
    pub(crate) async fn settle(&self) {
        let running = self.lock().running.as_ref().map(|r| r.rx.clone());
        if let Some(mut rx) = running {
            // An error means the flight ended without a word (its task was
            // aborted): nothing is under way any more either way.
            let _ = rx
                .wait_for(|progress| matches!(progress, Progress::Done(_)))
                .await;
        }
    }
}

impl Running {
    fn joined(&self) -> Joined {
        let foreign = tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() != self.runtime);
        Joined {
            id: self.id,
            rx: self.rx.clone(),
            foreign,
        }
    }
}

fn ended() -> Error {
    Error::interrupted("token refresh ended without a result")
}

impl Drop for Shared {
    fn drop(&mut self) {
        let flight = self
            .flight
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = flight.running.take() {
            running.task.abort();
        }
    }
}

/// Owned by the refresh task. If the task ends without reporting (the source
/// panicked, a timer could not be made), dropping the guard still ends the
/// flight as a failure, so no caller waits forever, the cooldown applies,
/// and the next caller after it can start a new refresh.
struct FlightGuard {
    shared: Weak<Shared>,
    id: u64,
    streak: u32,
    tx: Option<watch::Sender<Progress>>,
}

impl FlightGuard {
    /// Tells waiting callers that the refresh is still working, and how
    /// long its next step may take.
    fn report(&self, within: Option<Duration>) {
        if let Some(tx) = &self.tx {
            tx.send_replace(Progress::Working(within));
        }
    }

    fn complete(&mut self, result: Result<Token, Error>) {
        let Some(tx) = self.tx.take() else { return };
        // The cache is gone: nobody is waiting, nothing to install.
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let outcome = shared.finish(self.id, self.streak, result);
        tx.send_replace(Progress::Done(outcome));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.complete(Err(Error::interrupted(
                "the token refresh panicked (a panicking token source, or a runtime without its time driver)",
            )));
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
    tracing::debug!(reason = reason.as_str(), "token refresh started");
    let report = |within: Option<Duration>| guard.report(within);
    let result = match &config.store {
        Some(settings) => {
            with_store::refresh(
                settings,
                &*source,
                previous.as_deref(),
                &config,
                &counters,
                &report,
            )
            .await
        }
        None => {
            let previous = previous.as_ref().map(|entry| &entry.token);
            fetch(
                &*source,
                previous,
                None,
                &config.retries,
                &counters,
                &report,
            )
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
    guard.complete(result);
}
