//! The cache with a store, in one process: several caches sharing a
//! [`MemoryStore`] stand in for the replicas of a fleet. Paused, frozen
//! clock; the store's lock times to live run on tokio's clock, so every
//! timing here is exact.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{FrozenClock, settle_until};
use tokio::task::JoinHandle;
use tokio::time::{Instant, advance};
use tower_bearer::source::BoxFuture;
use tower_bearer::store::{
    HeldLock, MemoryStore, StoreError, StoreKey, StoreLock, StoredToken, TokenStore,
};
use tower_bearer::{Error, Token, TokenCache, TokenCacheBuilder, TokenSource, source};

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

/// A source that counts its calls (shared by every cache of a test, like a
/// token endpoint) and issues `tok-1`, `tok-2`, … living `lifetime`.
fn counting(requests: &Arc<AtomicUsize>, lifetime: Duration) -> impl TokenSource {
    let requests = requests.clone();
    source::from_fn(move |_previous| {
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("tok-{n}")).with_expires_in(lifetime)) }
    })
}

fn key() -> StoreKey {
    StoreKey::new(["store_memory", "api"])
}

/// Lets every task that can run do so, without moving the clock. Nothing
/// here does real I/O, so a few rounds are enough.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn spawn_token(cache: &TokenCache) -> JoinHandle<Result<Token, Error>> {
    let cache = cache.clone();
    tokio::spawn(async move { cache.token().await })
}

#[tokio::test(start_paused = true)]
async fn fleet_of_8_caches_makes_one_token_request_per_token_lifetime() {
    // Tokens live 100 s and are used for all of it: no refresh ahead, no
    // leeway, so a token's lifetime is its refresh period, and the 300 s
    // the test runs hold exactly 3 of them (requests at 0, 100 and 200 s;
    // the next would be at 300 s, which the test stops short of). Each
    // simulated second, every cache serves 3 calls.
    const LIFETIME: Duration = Duration::from_secs(100);
    const CACHES: usize = 8;
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let caches: Vec<TokenCache> = (0..CACHES)
        .map(|_| {
            TokenCache::builder(counting(&requests, LIFETIME))
                .no_refresh_ahead()
                .leeway(Duration::ZERO)
                .store(store.clone(), key())
                .build()
                .unwrap()
        })
        .collect();

    let start = Instant::now();
    let mut calls = 0;
    while Instant::now() - start < 3 * LIFETIME {
        let pending: Vec<_> = caches
            .iter()
            .flat_map(|cache| [spawn_token(cache), spawn_token(cache), spawn_token(cache)])
            .collect();
        // Callers whose cache waits for another cache's token wait one poll
        // interval of the store (100 ms).
        settle().await;
        advance(MS(100)).await;
        settle().await;
        for call in pending {
            assert!(call.is_finished(), "a call still waits after 100 ms");
            call.await.unwrap().unwrap();
            calls += 1;
        }
        advance(MS(900)).await;
    }

    assert_eq!(calls, 300 * 3 * CACHES);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "one token request per lifetime"
    );
    let stats: Vec<_> = caches.iter().map(TokenCache::stats).collect();
    let fetched: u64 = stats.iter().map(|s| s.token_requests).sum();
    let adopted: u64 = stats.iter().map(|s| s.adopted_from_store).sum();
    assert_eq!(fetched, 3, "{stats:#?}");
    assert_eq!(adopted, 3 * (CACHES as u64 - 1), "{stats:#?}");
    assert!(stats.iter().all(|s| s.store_errors == 0), "{stats:#?}");
}

#[tokio::test(start_paused = true)]
async fn stale_caches_take_the_token_another_cache_refreshed_ahead() {
    // Default refresh ahead (80 %, jitter up to 5 %): the first cache to
    // turn stale refreshes, the others find its token fresh in the store.
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let caches: Vec<TokenCache> = (0..4)
        .map(|_| {
            TokenCache::builder(counting(&requests, S(100)))
                .store(store.clone(), key())
                .build()
                .unwrap()
        })
        .collect();
    for cache in &caches {
        let call = spawn_token(cache);
        settle().await;
        advance(MS(100)).await;
        settle().await;
        call.await.unwrap().unwrap();
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // Into the stale window of every cache (≥ 80 s − 5 s of jitter).
    advance(S(81)).await;
    for cache in &caches {
        let token = spawn_token(cache);
        settle().await;
        advance(MS(100)).await;
        settle().await;
        token.await.unwrap().unwrap();
    }
    settle().await;
    advance(MS(100)).await;
    settle().await;

    assert_eq!(requests.load(Ordering::SeqCst), 2);
    for cache in &caches {
        assert_eq!(support::cached_token(cache).as_deref(), Some("tok-2"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_lock_holder_delays_the_others_by_at_most_the_lock_ttl() {
    const TTL: Duration = Duration::from_secs(10);
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    // Another process took the lock and died: nobody releases it.
    let lock = store.try_lock(&key(), TTL).await.unwrap().unwrap();
    std::mem::forget(lock);
    let taken = Instant::now();
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .store(store.clone(), key())
        .store_lock_ttl(TTL)
        .build()
        .unwrap();

    let call = spawn_token(&cache);
    settle().await;
    assert_eq!(cache.stats().store_waits, 1);
    while !call.is_finished() {
        advance(MS(100)).await;
        settle().await;
        assert!(Instant::now() - taken <= TTL + MS(100), "still waiting");
    }

    let waited = Instant::now() - taken;
    assert!(
        waited >= TTL,
        "took over a lock that had not lapsed: {waited:?}"
    );
    call.await.unwrap().unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lock_holder_releases_its_lock_at_once() {
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let started = Arc::new(AtomicUsize::new(0));
    // The holder's token endpoint never answers.
    let hanging = {
        let started = started.clone();
        source::from_fn(move |_| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Token, Error>>()
        })
    };
    let holder = TokenCache::builder(hanging)
        .store(store.clone(), key())
        .build()
        .unwrap();
    let waiter = TokenCache::builder(counting(&requests, S(300)))
        .store(store.clone(), key())
        .build()
        .unwrap();
    let holder_call = spawn_token(&holder);
    settle_until(|| started.load(Ordering::SeqCst) == 1).await;
    let waiter_call = spawn_token(&waiter);
    settle().await;
    assert_eq!(waiter.stats().store_waits, 1);

    // The holder goes away: its refresh (and the lock guard in it) is
    // dropped, which releases the lock.
    holder_call.abort();
    drop(holder);
    settle().await;
    let dropped = Instant::now();
    while !waiter_call.is_finished() {
        advance(MS(100)).await;
        settle().await;
        assert!(
            Instant::now() - dropped <= MS(100),
            "the lock was not released"
        );
    }

    assert_eq!(
        waiter_call.await.unwrap().unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_live_holder_keeps_its_lock_by_extending_it() {
    // The holder's token request takes 20 s, twice the lock's time to live.
    // It extends the lock every 10/3 s, so the waiter never takes over: it
    // gets the holder's token, and the endpoint sees one request.
    const TTL: Duration = Duration::from_secs(10);
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let slow = {
        let requests = requests.clone();
        source::from_fn(move |_| {
            let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(S(20)).await;
                Ok(Token::new(format!("tok-{n}")).with_expires_in(S(300)))
            }
        })
    };
    let build = |source| -> TokenCache {
        TokenCache::builder_from_arc(source)
            .store(store.clone(), key())
            .store_lock_ttl(TTL)
            .attempt_timeout(S(60))
            .build()
            .unwrap()
    };
    let slow: Arc<dyn TokenSource> = Arc::new(slow);
    let holder = build(slow);
    let waiter = build(Arc::new(counting(&requests, S(300))));
    let holder_call = spawn_token(&holder);
    settle_until(|| requests.load(Ordering::SeqCst) == 1).await;
    let waiter_call = spawn_token(&waiter);
    settle().await;

    for _ in 0..210 {
        advance(MS(100)).await;
        settle().await;
    }

    assert_eq!(
        holder_call.await.unwrap().unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(
        waiter_call.await.unwrap().unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(waiter.stats().adopted_from_store, 1);
}

/// A [`MemoryStore`] whose saves take `delay` (a slow disk, a slow Redis).
#[derive(Clone)]
struct SlowSaves {
    inner: MemoryStore,
    delay: Duration,
}

impl TokenStore for SlowSaves {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        self.inner.load(key)
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.save(key, token).await
        })
    }
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        self.inner.try_lock(key, ttl)
    }
}

#[tokio::test(start_paused = true)]
async fn b5_the_holder_keeps_its_lock_until_its_token_is_saved() {
    // The save takes 3 s, three times the lock's time to live. Had the
    // holder stopped extending its lock when the token request returned,
    // the lock would lapse mid-save and the waiter would refresh again
    // (with a rotating refresh token: with the one the holder just spent).
    const TTL: Duration = Duration::from_secs(1);
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = SlowSaves {
        inner: MemoryStore::new(),
        delay: S(3),
    };
    let build = || -> TokenCache {
        TokenCache::builder(counting(&requests, S(300)))
            .store(store.clone(), key())
            .store_lock_ttl(TTL)
            .build()
            .unwrap()
    };
    let (holder, waiter) = (build(), build());
    let holder_call = spawn_token(&holder);
    settle_until(|| requests.load(Ordering::SeqCst) == 1).await;
    let waiter_call = spawn_token(&waiter);
    settle().await;
    assert_eq!(waiter.stats().store_waits, 1);

    for _ in 0..40 {
        advance(MS(100)).await;
        settle().await;
    }

    for call in [holder_call, waiter_call] {
        let token = call.await.unwrap().unwrap();
        assert_eq!(token.access_token().secret(), "tok-1");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(waiter.stats().adopted_from_store, 1);
}

/// A [`MemoryStore`] whose locks fail to extend the first `failures` times
/// (a store that blinks while a refresh holds its lock).
#[derive(Clone)]
struct BlinkingExtends {
    inner: MemoryStore,
    failures: Arc<AtomicUsize>,
}

struct BlinkingLock {
    inner: StoreLock,
    failures: Arc<AtomicUsize>,
}

impl HeldLock for BlinkingLock {
    fn extend(&self, ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(StoreError::unavailable("connection reset"));
            }
            self.inner.extend(ttl).await
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(self.inner.release())
    }
}

impl TokenStore for BlinkingExtends {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        self.inner.load(key)
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.save(key, token)
    }
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        Box::pin(async move {
            let lock = self.inner.try_lock(key, ttl).await?;
            Ok(lock.map(|inner| {
                StoreLock::new(BlinkingLock {
                    inner,
                    failures: self.failures.clone(),
                })
            }))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_lock_extension_is_retried_before_the_lock_lapses() {
    // The holder's token request takes 6 s; its lock lives 3 s. Its first
    // three extensions fail (the store blinks). Tried again only a third of
    // the time to live later, the lock would lapse (at 3 s) before an
    // extension got through, and the waiter would refresh too; tried again
    // a poll interval later, the fourth extension (at 1.3 s) keeps it.
    const TTL: Duration = Duration::from_secs(3);
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = BlinkingExtends {
        inner: MemoryStore::new(),
        failures: Arc::new(AtomicUsize::new(3)),
    };
    let slow = {
        let requests = requests.clone();
        source::from_fn(move |_| {
            let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(S(6)).await;
                Ok(Token::new(format!("tok-{n}")).with_expires_in(S(300)))
            }
        })
    };
    let build = |source: Arc<dyn TokenSource>| -> TokenCache {
        TokenCache::builder_from_arc(source)
            .store(store.clone(), key())
            .store_lock_ttl(TTL)
            .build()
            .unwrap()
    };
    let holder = build(Arc::new(slow));
    let waiter = build(Arc::new(counting(&requests, S(300))));
    let holder_call = spawn_token(&holder);
    settle_until(|| requests.load(Ordering::SeqCst) == 1).await;
    // Off the holder's beat, so that no poll of the waiter and extension of
    // the holder fall on one instant.
    advance(MS(50)).await;
    let waiter_call = spawn_token(&waiter);
    settle().await;
    assert_eq!(waiter.stats().store_waits, 1);

    for _ in 0..70 {
        advance(MS(100)).await;
        settle().await;
    }

    for call in [holder_call, waiter_call] {
        let token = call.await.unwrap().unwrap();
        assert_eq!(token.access_token().secret(), "tok-1");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(store.failures.load(Ordering::SeqCst), 0);
}

/// A store that is always down.
struct DownStore;

impl TokenStore for DownStore {
    fn load<'a>(
        &'a self,
        _: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("connection refused")) })
    }
    fn save<'a>(
        &'a self,
        _: &'a StoreKey,
        _: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("connection refused")) })
    }
    fn try_lock<'a>(
        &'a self,
        _: &'a StoreKey,
        _: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("connection refused")) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_is_bypassed_and_counted() {
    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .store(DownStore, key())
        .build()
        .unwrap();

    let token = cache.token().await.unwrap();

    assert_eq!(token.access_token().secret(), "tok-1");
    let stats = cache.stats();
    assert_eq!(stats.token_requests, 1);
    // The load and the lock failed; without the lock nothing is saved
    // (the outage rule).
    assert_eq!(stats.store_errors, 2, "load, then lock: {stats:?}");
    assert_eq!(stats.refresh_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn on_refresh_sees_each_fetched_token_before_it_is_handed_out() {
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let build = |name: &'static str| -> TokenCache {
        let seen = seen.clone();
        let store_for_hook = store.clone();
        TokenCache::builder(counting(&requests, S(300)))
            .store(store.clone(), key())
            .on_refresh(move |token| {
                // The store already has it: hooks run after the save.
                let stored = store_for_hook.get(&key()).expect("saved before the hook");
                assert_eq!(stored.access_token(), token.access_token());
                seen.lock()
                    .unwrap()
                    .push(format!("{name}:{}", token.access_token().secret()));
            })
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));

    a.token().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["a:tok-1"],
        "called before token() returned"
    );
    b.token().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["a:tok-1"],
        "not called for a token from the store"
    );
    assert!(b.invalidate(&b.token().await.unwrap()));
    b.token().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["a:tok-1", "b:tok-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_does_not_fail_the_refresh() {
    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .on_refresh(|_| panic!("hook bug"))
        .build()
        .unwrap();
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_not_taken_back_from_the_store() {
    // B6 with a store: the store still holds the token the server just
    // rejected; the refresh must fetch, not install it again.
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .store(store.clone(), key())
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();

    assert!(cache.invalidate(&first));
    let second = cache.token().await.unwrap();

    assert_eq!(second.access_token().secret(), "tok-2");
    assert_eq!(
        store.get(&key()).unwrap().access_token().secret(),
        "tok-2",
        "the new token replaced the rejected one in the store"
    );
}

/// A [`MemoryStore`] whose saves fail while `failing` is set (a full disk,
/// a Redis that answers reads but refuses writes).
#[derive(Clone, Default)]
struct FailingSaves {
    inner: MemoryStore,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl FailingSaves {
    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl TokenStore for FailingSaves {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        self.inner.load(key)
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::unavailable("read-only")) });
        }
        self.inner.save(key, token)
    }
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        self.inner.try_lock(key, ttl)
    }
}

#[tokio::test(start_paused = true)]
async fn b6_a_rejected_token_is_not_taken_back_from_the_store_after_a_failed_save() {
    // tok-1 is rejected, and the save of its successor fails: the store
    // still holds tok-1. When tok-2 is replaced in turn, tok-1 is a
    // different token, and fresh by its times, but this cache has held it
    // (and seen it rejected): it must not come back.
    let requests = Arc::new(AtomicUsize::new(0));
    let store = FailingSaves::default();
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .store(store.clone(), key())
        .build()
        .unwrap();
    let tok1 = cache.token().await.unwrap();
    assert!(cache.invalidate(&tok1));
    store.fail(true);
    let tok2 = cache.token().await.unwrap();
    assert_eq!(tok2.access_token().secret(), "tok-2");
    store.fail(false);

    assert!(cache.invalidate(&tok2));
    // tok-2 came from a refresh that a rejection caused: its own rejection
    // holds it for the rejection throttle's cooldown (B6), at most 1 s here.
    tokio::time::advance(S(1)).await;
    let next = cache.token().await.unwrap();

    assert_eq!(next.access_token().secret(), "tok-3");
    assert_eq!(cache.stats().adopted_from_store, 0);
    assert_eq!(
        store.inner.get(&key()).unwrap().access_token().secret(),
        "tok-3"
    );
}

#[tokio::test(start_paused = true)]
async fn b5_an_older_stored_token_never_lends_its_refresh_token() {
    // The store fell behind this cache (a save failed): it holds tok-1 with
    // rt-1, which the refresh to tok-2 spent. The next refresh must send
    // rt-2, this cache's own, not the store's stale rt-1 (a reuse). tok-1
    // lives 0 s, so it is expired and only its refresh token could be used.
    let store = FailingSaves::default();
    let sent: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let rotating = {
        let (sent, n) = (sent.clone(), Arc::new(AtomicUsize::new(0)));
        source::from_fn(move |previous: Option<Token>| {
            sent.lock().unwrap().push(
                previous
                    .as_ref()
                    .and_then(Token::refresh_token)
                    .map(|rt| rt.secret().to_owned()),
            );
            let n = n.fetch_add(1, Ordering::SeqCst) + 1;
            let lifetime = if n == 1 { S(0) } else { S(100) };
            async move {
                Ok(Token::new(format!("tok-{n}"))
                    .with_refresh_token(format!("rt-{n}"))
                    .with_expires_in(lifetime))
            }
        })
    };
    let cache = TokenCache::builder(rotating)
        .store(store.clone(), key())
        .build()
        .unwrap();
    cache.token().await.unwrap();
    store.fail(true);
    let tok2 = cache.token().await.unwrap();
    assert_eq!(tok2.access_token().secret(), "tok-2");
    store.fail(false);

    assert!(cache.invalidate(&tok2));
    let tok3 = cache.token().await.unwrap();

    assert_eq!(tok3.access_token().secret(), "tok-3");
    assert_eq!(
        *sent.lock().unwrap(),
        [None, Some("rt-1".to_owned()), Some("rt-2".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stored_token_issued_in_the_future_is_not_used_past_its_expiry() {
    // Stored times are another clock's (or corrupt): an issue time ahead of
    // this clock, after the token's own expiry, must not stretch the usable
    // window (which never ends before the issue time) past that expiry.
    let store = MemoryStore::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let issued_ms = now_ms + 3_600_000; // an hour ahead
    let expired_ms = now_ms - 1_000;
    let json = format!(
        r#"{{"version":1,"access_token":"skewed","issued_at_ms":{issued_ms},"expires_at_ms":{expired_ms}}}"#
    );
    store
        .save(&key(), &StoredToken::from_json(json.as_bytes()).unwrap())
        .await
        .unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests, S(300)))
        .store(store.clone(), key())
        .build()
        .unwrap();

    let token = cache.token().await.unwrap();

    assert_eq!(token.access_token().secret(), "tok-1");
    assert_eq!(cache.stats().adopted_from_store, 0);
}

#[tokio::test(start_paused = true)]
async fn b11_stored_tokens_age_with_the_paused_clock() {
    // Stored tokens carry wall-clock times. With tokio's clock paused, the
    // wall clock the conversions use must move with `advance` too: a token
    // stored 150 s (of tokio time) ago that lived 100 s is expired for a
    // cache that starts now, however little real time passed.
    let _clock = FrozenClock::freeze().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let build = || {
        TokenCache::builder(counting(&requests, S(100)))
            .store(store.clone(), key())
            .build()
            .unwrap()
    };
    let first = build();
    assert_eq!(
        first.token().await.unwrap().access_token().secret(),
        "tok-1"
    );

    advance(S(150)).await;
    let second = build();
    let token = second.token().await.unwrap();

    assert_eq!(token.access_token().secret(), "tok-2");
    assert_eq!(second.stats().adopted_from_store, 0);
    // And the other way round: frozen for a (real) while, the stored token
    // loses no tokio time.
    let third = build();
    assert_eq!(
        third.token().await.unwrap().access_token().secret(),
        "tok-2"
    );
    let stored = store.get(&key()).unwrap().to_token();
    let left = stored.expires_at().unwrap() - tokio::time::Instant::now();
    assert!(left <= S(100) && left > S(100) - MS(2), "{left:?}");
}

#[test]
fn store_settings_are_checked_when_the_cache_is_built() {
    let builder = || -> TokenCacheBuilder {
        TokenCache::builder(source::StaticToken::new("k")).store(MemoryStore::new(), key())
    };
    assert!(builder().store_lock_ttl(MS(1)).build().is_err());
    assert!(builder().store_lock_ttl(S(1)).build().is_ok());
    // Endless settings are settings, not overflows.
    assert!(
        builder()
            .attempt_timeout(Duration::MAX)
            .backoff(S(1), Duration::MAX)
            .max_attempts(u32::MAX)
            .store_lock_ttl(Duration::MAX)
            .build()
            .is_ok()
    );
    assert!(builder().store_wait(Duration::MAX).build().is_ok());
    // Order does not matter.
    assert!(
        TokenCache::builder(source::StaticToken::new("k"))
            .store_lock_ttl(MS(1))
            .store(MemoryStore::new(), key())
            .build()
            .is_err()
    );
}

/// A `MemoryStore` that records the time to live of every lock asked of it.
#[derive(Clone, Default)]
struct RecordingTtls {
    store: MemoryStore,
    ttls: Arc<Mutex<Vec<Duration>>>,
}

impl RecordingTtls {
    fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.ttls.lock().unwrap())
    }
}

impl TokenStore for RecordingTtls {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        self.store.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.save(key, token)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        self.ttls.lock().unwrap().push(ttl);
        self.store.try_lock(key, ttl)
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_lock_ttl_is_a_tenth_of_the_replaced_tokens_lifetime_between_1_and_10_s() {
    let _clock = FrozenClock::freeze().await;
    for (lifetime, ttl) in [(S(20), S(2)), (S(5), S(1)), (S(3600), S(10))] {
        let requests = Arc::new(AtomicUsize::new(0));
        let store = RecordingTtls::default();
        let cache = TokenCache::builder(counting(&requests, lifetime))
            .store(store.clone(), key())
            .build()
            .unwrap();
        // No token yet: nothing to go by, the ceiling.
        cache.token().await.unwrap();
        assert_eq!(store.take(), [S(10)]);
        // Replacing a token: a tenth of its life, bounded. A crashed holder
        // of a 20 s token's lock now stalls the others for 2 s, not 10.
        advance(lifetime).await;
        cache.token().await.unwrap();
        assert_eq!(store.take(), [ttl], "a token living {lifetime:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }
    // A configured time to live is used as it is.
    let requests = Arc::new(AtomicUsize::new(0));
    let store = RecordingTtls::default();
    let cache = TokenCache::builder(counting(&requests, S(20)))
        .store(store.clone(), key())
        .store_lock_ttl(S(3))
        .build()
        .unwrap();
    cache.token().await.unwrap();
    advance(S(20)).await;
    cache.token().await.unwrap();
    assert_eq!(store.take(), [S(3), S(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_lock_saves_nothing_once_someone_else_holds_it() {
    let store = MemoryStore::new();
    let token = |value: &str| StoredToken::from_token(&Token::new(value));
    let (first_token, second_token, late_token) = (token("first"), token("second"), token("late"));
    let key = key();
    let first = store.try_lock(&key, S(1)).await.unwrap().unwrap();
    // Held: saved.
    let saved = store.save_if_held(&key, &first_token, &first).unwrap();
    assert!(saved.await.unwrap());
    advance(S(2)).await;
    let second = store.try_lock(&key, S(1)).await.unwrap().unwrap();
    let saved = store.save_if_held(&key, &second_token, &second).unwrap();
    assert!(saved.await.unwrap());
    // The first holder's lock lapsed and was taken: its save is refused.
    let late = store.save_if_held(&key, &late_token, &first).unwrap();
    assert!(!late.await.unwrap());
    assert_eq!(store.get(&key).unwrap().access_token().secret(), "second");
    // Another store's lock is not this store's to check.
    let other = MemoryStore::new();
    assert!(other.save_if_held(&key, &late_token, &second).is_none());
}
