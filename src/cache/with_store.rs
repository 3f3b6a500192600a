//! A refresh with a store: load, lock, wait, adopt or fetch, save. The
//! order and the failure handling are documented for users in the `store`
//! module ("How a cache uses its store"); this file implements them.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{Config, Held, StoreSettings};
use super::entry::{Entry, authorization_value, effective_expiry};
use super::fetch::{Report, fetch};
use super::schedule::Freshness;
use super::stats::Counters;
use crate::source::Restriction;
use crate::store::{StoreError, StoreLock, StoredToken, instant_to_wall};
use crate::{Error, Token, TokenSource};

/// How often a cache waiting for another cache's refresh looks at the
/// store (and tries the lock): 100 ms. A refresh takes a round trip to the
/// token endpoint, tens of milliseconds to seconds; polling ten times a
/// second costs one or two store commands per poll, and only while
/// someone else refreshes.
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest one store operation may take before the cache gives up on
/// it and carries on alone: 5 s. Stores answer in milliseconds; the Redis
/// store gives up after 1 s by itself.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a refresh got, and whether it asked the source for it.
pub(crate) struct Obtained {
    pub(crate) token: Token,
    /// `true` when this cache fetched it, `false` when it came from the
    /// store.
    pub(crate) fetched: bool,
}

/// What to do with a stored token.
enum Verdict {
    /// Install it instead of fetching.
    Install(Token),
    /// Fetch, handing it to the source as `previous`: it carries the
    /// newest refresh token of the lineage.
    Previous(Token),
    /// It is our own token, one we held before, or unusable; nothing to
    /// learn from it.
    Ignore,
}

/// Judges a stored token against the cache's current one (B1, B2).
///
/// * A token this cache has held (the current one, or one it replaced or
///   saw rejected) is ignored: see [`Held`].
/// * No token yet: install it while it is usable, however stale: a
///   restart must not cost a token request, and a stale token starts a
///   refresh ahead at the next call anyway.
/// * Replacing a token: install it when it is still fresh, so the refresh
///   is done; else fetch, with it as `previous`.
///
/// Times are not compared across caches: a stored token's times come from
/// the wall clock of the process that fetched it, and a skew between
/// replicas must not make a newer token look older (its refresh token
/// would be skipped, and ours, already spent, sent instead).
fn judge(stored: StoredToken, current: Option<&Entry>, held: &Held, config: &Config) -> Verdict {
    if held.contains(stored.access_token()) {
        return Verdict::Ignore;
    }
    let token = stored.to_token();
    if authorization_value(&token).is_err() {
        tracing::warn!("ignoring a stored token that cannot be sent in a header");
        return Verdict::Ignore;
    }
    let expires = effective_expiry(&token, config.default_lifetime);
    // No jitter: "fresh" means before the latest refresh-ahead point.
    let schedule = config.timing.schedule(token.issued_at(), expires, 0.0);
    let now = Instant::now();
    let install = match current {
        None => schedule.usable_until > now,
        Some(_) => schedule.freshness(now) == Freshness::Fresh,
    };
    if install {
        Verdict::Install(token)
    } else {
        Verdict::Previous(token)
    }
}

/// One refresh with a store. See the `store` module documentation.
pub(crate) async fn refresh(
    settings: &StoreSettings,
    source: &dyn TokenSource,
    current: Option<&Entry>,
    config: &Config,
    counters: &Counters,
    report: Report<'_>,
) -> Result<Obtained, Error> {
    if let Some(current) = current {
        settings.held.remember(current.token.access_token());
    }
    let result = Refresh {
        settings,
        source,
        current,
        config,
        counters,
        report,
        latest: None,
    }
    .run()
    .await;
    if let Ok(obtained) = &result {
        settings.held.remember(obtained.token.access_token());
    }
    result
}

/// What one refresh with a store works with.
struct Refresh<'a> {
    settings: &'a StoreSettings,
    source: &'a dyn TokenSource,
    /// The token being replaced, if any.
    current: Option<&'a Entry>,
    config: &'a Config,
    counters: &'a Counters,
    /// Tells the callers waiting for this refresh that it is still working.
    report: Report<'a>,
    /// The newest stored token seen and not installed: handed to the source
    /// as `previous`, because its refresh token is the newest of the
    /// lineage (B5).
    latest: Option<Token>,
}

impl Refresh<'_> {
    /// Load; lock, or wait for the holder and take over when it is gone.
    async fn run(mut self) -> Result<Obtained, Error> {
        let settings = self.settings;
        let mut deadline = None;
        loop {
            // 1. Load (and, while waiting, 3. poll): a restart, or another
            // cache was faster. A load that fails (an entry this build
            // cannot read, a blip) does not keep the cache from the lock:
            // if the store is down, the lock fails too.
            match self.look(None).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(error) => failed(self.counters, &error, "load"),
            }
            // 2. Lock.
            let ttl = self.lock_ttl();
            (self.report)(Some(STORE_TIMEOUT));
            match bounded(settings.store.try_lock(&settings.key, ttl)).await {
                Ok(Some(lock)) => return self.hold(lock, ttl).await,
                Ok(None) => {}
                Err(error) => return self.alone(error).await,
            }
            // 3. Wait: someone else holds the lock.
            let wait = settings
                .wait
                .unwrap_or_else(|| ttl.saturating_add(settings.refresh_bound));
            let deadline = *deadline.get_or_insert_with(|| {
                Counters::bump(&self.counters.store_waits);
                tracing::debug!(key = %settings.key, "another cache is refreshing this token; waiting for it");
                crate::token::later(Instant::now(), wait)
            });
            if Instant::now() >= deadline {
                tracing::warn!(
                    key = %settings.key,
                    wait_ms = wait.as_millis() as u64,
                    "the holder of the refresh lock has not stored a token in time; going on without the lock"
                );
                return self
                    .without_lock(StoreError::unavailable(
                        "the holder of the refresh lock did not store a token in time",
                    ))
                    .await;
            }
            (self.report)(Some(STORE_POLL_INTERVAL));
            tokio::time::sleep(STORE_POLL_INTERVAL).await;
        }
    }

    /// The lock's time to live: the configured one, or a tenth of the
    /// lifetime of the token being replaced (bounded, see
    /// [`default_store_lock_ttl`](super::default_store_lock_ttl)).
    fn lock_ttl(&self) -> Duration {
        if let Some(ttl) = self.settings.lock_ttl {
            return ttl;
        }
        match self.current.map(|e| &e.token).or(self.latest.as_ref()) {
            Some(token) => {
                let expires = effective_expiry(token, self.config.default_lifetime);
                super::default_store_lock_ttl(expires.saturating_duration_since(token.issued_at()))
            }
            None => super::MAX_DEFAULT_STORE_LOCK_TTL,
        }
    }

    /// Loads the stored token, and installs it when [`judge`] says so or
    /// remembers it as the newest of the lineage. With `migrate` (only
    /// while holding the lock, so that one cache does it), a key that
    /// replaces an older one ([`StoreKey::previous`](crate::store::StoreKey::previous)) reads the older one
    /// when nothing is stored under it, and a token installed from there
    /// is saved under the new key at once.
    async fn look(&mut self, locked: Locked<'_>) -> Result<Option<Obtained>, StoreError> {
        let settings = self.settings;
        (self.report)(Some(STORE_TIMEOUT));
        let mut stored = bounded(settings.store.load(&settings.key)).await?;
        let mut migrated = false;
        if stored.is_none()
            && locked.is_some()
            && let Some(previous) = settings.key.previous()
        {
            stored = bounded(settings.store.load(previous)).await?;
            if stored.is_some() {
                migrated = true;
                tracing::info!(
                    key = %settings.key,
                    previous = %previous,
                    "taking over the token stored under the key this one replaces"
                );
            }
        }
        let Some(stored) = stored else {
            return Ok(None);
        };
        match judge(stored, self.current, &settings.held, self.config) {
            Verdict::Install(token) => {
                Counters::bump(&self.counters.adopted_from_store);
                tracing::debug!("token taken from the store");
                if migrated {
                    save(settings, locked, &token, self.config, self.counters).await;
                }
                Ok(Some(Obtained {
                    token,
                    fetched: false,
                }))
            }
            // The token fetched with its refresh token is saved under the
            // new key, like every fetched token.
            Verdict::Previous(token) => {
                self.latest = Some(token);
                Ok(None)
            }
            Verdict::Ignore => Ok(None),
        }
    }

    /// Holding the lock: look once more, else fetch and save; then release.
    ///
    /// The lock is extended for as long as it is held, the save included:
    /// were it allowed to lapse between the token request and the save,
    /// another cache could take it, find the old token in the store and
    /// refresh again — with a rotating refresh token, with the one this
    /// refresh has just spent (B5).
    async fn hold(mut self, lock: StoreLock, ttl: Duration) -> Result<Obtained, Error> {
        let result = renewing(&lock, ttl, async {
            // Whoever held the lock before may have stored a token just now.
            match self.look(Some((&lock, ttl))).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                // Another writer's entry (a newer build's during a rolling
                // upgrade, or one encrypted with a key this store lacks):
                // it may hold the newest refresh token, which this cache
                // cannot read, so the one it has may be spent. Sending it
                // could revoke the grant: the outage rule, lock or not.
                Err(error) if error.is_anothers() => {
                    failed(self.counters, &error, "load");
                    return self.without_lock(error).await;
                }
                Err(error) => failed(self.counters, &error, "load"),
            }
            // B5: the new (maybe rotated) refresh token is in the store
            // before the lock is released and before anyone gets the access
            // token.
            let obtained = self.fetch_holding().await?;
            if obtained.fetched {
                (self.report)(Some(STORE_TIMEOUT));
                save(
                    self.settings,
                    Some((&lock, ttl)),
                    &obtained.token,
                    self.config,
                    self.counters,
                )
                .await;
            }
            Ok(obtained)
        })
        .await;
        release(lock).await;
        result
    }

    /// The store failed: carry on without it, by the outage rule.
    async fn alone(self, error: StoreError) -> Result<Obtained, Error> {
        failed(self.counters, &error, "use");
        self.without_lock(error).await
    }

    /// Fetches holding the lock. A refused refresh token (B5) is not the
    /// end: another cache may have rotated it and stored its successor (one
    /// that refreshed without the lock, or whose lock lapsed), so the store
    /// is read again first, and its token installed or refreshed from.
    /// Only then does the source fall back to its primary grant, or the
    /// refresh fail.
    async fn fetch_holding(&mut self) -> Result<Obtained, Error> {
        let mut reread = false;
        loop {
            let sent = self.previous().and_then(Token::refresh_token).cloned();
            let result = fetch(
                self.source,
                self.previous(),
                Some(Restriction::NoFallback),
                &self.config.retries,
                self.counters,
                self.report,
            )
            .await;
            let error = match result {
                Ok(token) => {
                    return Ok(Obtained {
                        token,
                        fetched: true,
                    });
                }
                Err(error) if refused(&error) => error,
                Err(error) => return Err(error),
            };
            if !reread {
                reread = true;
                tracing::info!(
                    "the refresh token was refused; reading the store for a newer one first"
                );
                match self.look(None).await {
                    Ok(Some(done)) => return Ok(done),
                    Ok(None) => {}
                    Err(store_error) => failed(self.counters, &store_error, "load"),
                }
                let newer = self
                    .latest
                    .as_ref()
                    .and_then(Token::refresh_token)
                    .is_some_and(|rt| Some(rt) != sent.as_ref());
                if newer {
                    continue;
                }
            }
            // B5: fall back to the primary grant, if the source has one.
            let previous = self.previous();
            if self
                .source
                .fetch_restricted(previous, Restriction::NoRefreshToken)
                .is_none()
            {
                return Err(error);
            }
            let token = fetch(
                self.source,
                previous,
                Some(Restriction::NoRefreshToken),
                &self.config.retries,
                self.counters,
                self.report,
            )
            .await?;
            return Ok(Obtained {
                token,
                fetched: true,
            });
        }
    }

    /// No lock (the store is unreachable, or its holder took too long), or
    /// a newer build's entry under the lock: the outage rule. A refresh token the store shares is never sent
    /// without the lock, since another cache may be sending it too: the
    /// source's primary grant is used when it has one; a source without
    /// refresh tokens is asked as usual; otherwise the refresh fails, the
    /// cache keeps serving its token while it is usable, and the next
    /// refresh tries the store again. Nothing is saved without the lock.
    async fn without_lock(&self, error: StoreError) -> Result<Obtained, Error> {
        let previous = self.previous();
        let restriction = if self
            .source
            .fetch_restricted(previous, Restriction::NoRefreshToken)
            .is_some()
        {
            Some(Restriction::NoRefreshToken)
        } else if previous.and_then(Token::refresh_token).is_some()
            || self
                .source
                .fetch_restricted(previous, Restriction::NoFallback)
                .is_some()
        {
            // A refresh token is at stake (the token's, or the source's
            // own: a grant that has no other way to a token).
            tracing::warn!(
                key = %self.settings.key,
                "the token store cannot be used, and the refresh token it shares is not sent \
                 without its lock; keeping the current token and trying the store again at the \
                 next refresh"
            );
            return Err(Error::store(
                "the token store cannot be used, and its refresh token is not sent without the store's lock",
                error,
            ));
        } else {
            None
        };
        let token = fetch(
            self.source,
            previous,
            restriction,
            &self.config.retries,
            self.counters,
            self.report,
        )
        .await?;
        Ok(Obtained {
            token,
            fetched: true,
        })
    }

    /// The token the source replaces: the newest stored one, else ours.
    fn previous(&self) -> Option<&Token> {
        self.latest.as_ref().or(self.current.map(|e| &e.token))
    }
}

/// The refresh lock a step runs under, with its time to live; `None`
/// without one.
type Locked<'a> = Option<(&'a StoreLock, Duration)>;

/// Whether `error` refused a refresh token (B5): a grant says so, and so
/// does `invalid_grant` from any source.
fn refused(error: &Error) -> bool {
    error.refused_refresh_token()
        || error
            .oauth_error()
            .is_some_and(|e| *e.code() == crate::OAuthErrorCode::InvalidGrant)
}

/// Saves `token` with the expiry the cache computed for it; with the lock
/// `held`, only while this cache still holds it (fencing: a holder whose
/// lock lapsed must not overwrite its successor's token). A failure is
/// logged and counted; the token is handed out all the same.
async fn save(
    settings: &StoreSettings,
    locked: Locked<'_>,
    token: &Token,
    config: &Config,
    counters: &Counters,
) {
    let expires = effective_expiry(token, config.default_lifetime);
    let (now_i, now_w) = crate::store::clocks_now();
    let stored =
        StoredToken::from_token(token).with_expires_at(instant_to_wall(expires, now_i, now_w));
    let saved = match locked {
        Some((lock, ttl)) => bounded(save_if_held(settings, &stored, lock, ttl)).await,
        None => bounded(settings.store.save(&settings.key, &stored))
            .await
            .map(|()| true),
    };
    match saved {
        Ok(true) => tracing::debug!(key = %settings.key, "token saved to the store"),
        Ok(false) => failed(
            counters,
            &StoreError::unavailable(
                "the refresh lock was lost before the save (the store was out of reach for \
                 longer than its time to live); not saving over the next holder's token",
            ),
            "save",
        ),
        Err(error) => failed(counters, &error, "save"),
    }
}

/// Saves `stored` only while `lock` is held: atomically when the store can
/// ([`TokenStore::save_if_held`](crate::store::TokenStore::save_if_held)),
/// else by extending the lock to `ttl` and saving if that worked.
async fn save_if_held(
    settings: &StoreSettings,
    stored: &StoredToken,
    lock: &StoreLock,
    ttl: Duration,
) -> Result<bool, StoreError> {
    if let Some(fenced) = settings.store.save_if_held(&settings.key, stored, lock) {
        return fenced.await;
    }
    if !lock.extend(ttl).await? {
        return Ok(false);
    }
    settings
        .store
        .save(&settings.key, stored)
        .await
        .map(|()| true)
}

async fn release(lock: StoreLock) {
    if let Err(error) = bounded(lock.release()).await {
        tracing::debug!(%error, "could not release the refresh lock; it lapses at the end of its time to live");
    }
}

fn failed(counters: &Counters, error: &StoreError, what: &'static str) {
    Counters::bump(&counters.store_errors);
    tracing::warn!(%error, operation = what, "token store failed; carrying on without it");
}

/// A store operation, given up after [`STORE_TIMEOUT`].
async fn bounded<T>(op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_TIMEOUT, op)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                "the token store did not answer in time",
            ))
        })
}

/// Runs `work` while extending `lock` every third of its time to live, so
/// that a live holder keeps it however long its retries and its store take,
/// and a dead one (whose future is dropped with this one) loses it within
/// `ttl`.
///
/// A failed extension is tried again a poll interval later, not a third of
/// the time to live later: otherwise two failures in a row (a store that
/// blinks for two thirds of the time to live) would let the lock lapse
/// under a live holder. Each extension is given at most a third of the time
/// to live, for the same reason.
async fn renewing<F: Future>(lock: &StoreLock, ttl: Duration, work: F) -> F::Output {
    let every = ttl / 3;
    let retry = every.min(STORE_POLL_INTERVAL);
    let renew = async {
        let mut pause = every;
        loop {
            tokio::time::sleep(pause).await;
            pause = retry;
            match tokio::time::timeout(every.min(STORE_TIMEOUT), lock.extend(ttl)).await {
                Ok(Ok(true)) => pause = every,
                Ok(Ok(false)) => {
                    tracing::warn!(
                        "lost the refresh lock while refreshing; another cache may refresh too"
                    );
                    return std::future::pending::<()>().await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "could not extend the refresh lock"),
                Err(_) => tracing::debug!("could not extend the refresh lock in time"),
            }
        }
    };
    let mut work = pin!(work);
    let mut renew = pin!(renew);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let _ = renew.as_mut().poll(cx);
        Poll::Pending
    })
    .await
}
