//! The Redis store against a real `redis-server` (a private one per test,
//! on a free loopback port: see `support::redis`; a missing binary fails
//! the tests). Redis keeps its own time, so these tests run on real time:
//! traffic for a few seconds, token lifetimes of 1–2 s.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::redis::RedisServer;
use support::rotating::RotatingServer;
use support::{
    TestServer, api_server, h2_client, http_client, http_source, read_response, settle_until,
    token_server,
};
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::RefreshTokenGrant;
use tower_bearer::store::{RedisStore, StoreKey, StoredToken, TokenStore};
use tower_bearer::{AuthLayer, CacheStats, Error, Token, TokenCache, source};

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

fn key() -> StoreKey {
    StoreKey::new(["store_redis", "api"])
}

/// A raw connection, to look at what the store wrote.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A cache of the fleet: tokens from `tokens`, used for their whole
/// lifetime (no refresh ahead, no leeway), shared through `store`.
fn replica(tokens: &TestServer, store: Option<&RedisStore>) -> TokenCache {
    let builder = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .no_refresh_ahead()
        .leeway(Duration::ZERO);
    match store {
        Some(store) => builder.store(store.clone(), key()),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Calls `api` through each cache from 2 callers per cache, one call every
/// 5 ms each, for `duration`. Returns the number of successful calls, and
/// fails the test on any failed one.
async fn traffic(caches: &[TokenCache], api: &TestServer, duration: Duration) -> usize {
    let end = Instant::now() + duration;
    let mut callers = Vec::new();
    for cache in caches {
        let client = AuthLayer::new(cache.clone()).layer(h2_client());
        for _ in 0..2 {
            let (client, url) = (client.clone(), api.url("/"));
            callers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while Instant::now() < end {
                    let request = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                    match client.clone().oneshot(request).await {
                        Ok(rsp) => match read_response(rsp).await {
                            (StatusCode::OK, _) => ok += 1,
                            (status, _) => failed.push(status.to_string()),
                        },
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(MS(5)).await;
                }
                (ok, failed)
            }));
        }
    }
    let mut calls = 0;
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        calls += ok;
    }
    calls
}

fn total(caches: &[TokenCache]) -> CacheStats {
    let mut sum = CacheStats::default();
    for s in caches.iter().map(TokenCache::stats) {
        sum.token_requests += s.token_requests;
        sum.adopted_from_store += s.adopted_from_store;
        sum.store_errors += s.store_errors;
        sum.store_waits += s.store_waits;
    }
    sum
}

// === the store itself ===

#[tokio::test]
async fn redis_store_saves_with_a_ttl_and_locks_with_unique_values() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let mut conn = raw(&redis).await;
    let key = key();

    // A token without a refresh token lives in Redis until it expires.
    let token = Token::new("at-1").with_expires_in(S(120));
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.token_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((118_000..=120_000).contains(&ttl), "{ttl}");
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.access_token().secret(), "at-1");

    // With a refresh token, at least the refresh-token time to live.
    let token = token.with_refresh_token("rt-1");
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.token_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 29 * 24 * 3600 * 1000, "{ttl}");

    // The lock: exclusive, with a time to live, released only by its holder.
    let lock = store.try_lock(&key, S(5)).await.unwrap().expect("free");
    assert!(store.try_lock(&key, S(5)).await.unwrap().is_none());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.lock_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((4_000..=5_000).contains(&ttl), "{ttl}");
    assert!(lock.extend(S(20)).await.unwrap());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.lock_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 19_000, "{ttl}");
    // Someone else's lock (ours lapsed and was taken over) is left alone.
    let _: () = redis::cmd("SET")
        .arg(store.lock_key(&key))
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!lock.extend(S(20)).await.unwrap());
    lock.release().await.unwrap();
    let holder: Option<String> = redis::cmd("GET")
        .arg(store.lock_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some("someone-else"));
    let _: () = redis::cmd("DEL")
        .arg(store.lock_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    let lock = store
        .try_lock(&key, S(5))
        .await
        .unwrap()
        .expect("free again");
    // Dropped: released by a task of its own, in a round trip or two.
    drop(lock);
    let mut tries = 0;
    while store.try_lock(&key, S(5)).await.unwrap().is_none() {
        tries += 1;
        assert!(tries < 100, "a dropped lock was not released");
    }
}

#[tokio::test]
async fn redis_odd_values_are_ignored_or_overwritten_never_a_panic() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let mut conn = raw(&redis).await;
    let token_key = store.token_key(&key());
    let tokens = token_server(300).await;

    for odd in [
        &b"garbage"[..],
        b"",
        b"{\"version\":\"9\"}",
        b"\xff\xfe",
        b"{\"version\":1,\"access_token\":\"\",\"issued_at_ms\":0}",
    ] {
        let _: () = redis::cmd("SET")
            .arg(&token_key)
            .arg(odd)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(store.load(&key()).await.unwrap().is_none());
    }
    // A key of another type: the store errs, the cache carries on and its
    // save replaces the key.
    let _: () = redis::cmd("DEL")
        .arg(&token_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&token_key)
        .arg("a")
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(store.load(&key()).await.unwrap_err().is_unavailable());
    let cache = replica(&tokens, Some(&store));
    let token = cache.token().await.unwrap();
    assert_eq!(token.access_token().secret(), "tok-1");
    assert!(cache.stats().store_errors >= 1);
    let stored = store.load(&key()).await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "tok-1");
    // Debug never shows the password of the URL.
    let with_password = RedisStore::new("redis://:hunter2@127.0.0.1:1/0").unwrap();
    assert!(!format!("{with_password:?}").contains("hunter2"));
}

#[tokio::test]
async fn redis_a_newer_builds_entry_is_left_as_it_is_and_the_cache_carries_on() {
    // A rolling upgrade: a newer build stored a token in a format version
    // this build does not know. This build neither reads nor replaces it,
    // and its cache fetches tokens on its own.
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let mut conn = raw(&redis).await;
    let token_key = store.token_key(&key());
    let newer = r#"{"version":3,"sealed":"…","refresh_token":"only-here"}"#;
    let _: () = redis::cmd("SET")
        .arg(&token_key)
        .arg(newer)
        .query_async(&mut conn)
        .await
        .unwrap();

    assert!(store.load(&key()).await.unwrap_err().is_unknown_version());
    let token = StoredToken::from_token(&Token::new("mine"));
    let refused = store.save(&key(), &token).await.unwrap_err();
    assert!(refused.is_unknown_version(), "{refused}");
    let tokens = token_server(300).await;
    let cache = replica(&tokens, Some(&store));
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
    assert!(cache.stats().store_errors >= 1, "{:?}", cache.stats());

    let kept: String = redis::cmd("GET")
        .arg(&token_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, newer);
}

#[tokio::test]
async fn redis_endless_times_to_live_are_capped_not_refused() {
    // `Duration::MAX` as a lock or refresh-token time to live means "as long
    // as Redis can": Redis refuses a PX that overflows its clock, and every
    // lock and save would fail, the cache going on alone every time.
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url())
        .unwrap()
        .refresh_token_ttl(Duration::MAX);
    let key = key();
    let token = Token::new("at-1")
        .with_refresh_token("rt-1")
        .with_expires_in(S(60));
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    let lock = store
        .try_lock(&key, Duration::MAX)
        .await
        .unwrap()
        .expect("free");
    assert!(lock.extend(Duration::MAX).await.unwrap());
    lock.release().await.unwrap();

    let tokens = token_server(300).await;
    let build = || {
        TokenCache::builder(http_source(http_client(), tokens.url("/token")))
            .store(store.clone(), StoreKey::new(["store_redis", "endless"]))
            .store_lock_ttl(Duration::MAX)
            .build()
            .unwrap()
    };
    let caches = [build(), build()];
    for cache in &caches {
        cache.token().await.unwrap();
    }
    let stats = total(&caches);
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    assert_eq!(tokens.requests(), 1, "{stats:?}");
}

#[tokio::test]
async fn redis_commands_give_up_after_the_timeout_even_while_connecting() {
    // A Redis that accepts connections and never answers (hung, or a black
    // hole behind a proxy). Each command must give up after the store's
    // timeout - not after the connection manager's connection attempts,
    // retries and backoff - so that the cache goes on alone quickly.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/")).unwrap();
    let timeout = tower_bearer::store::DEFAULT_REDIS_TIMEOUT;

    // The first command connects; the second finds the connection attempt
    // still under way (retried after a backoff).
    for attempt in 0..2 {
        let started = Instant::now();
        let error = store.load(&key()).await.unwrap_err();
        let took = started.elapsed();
        assert!(error.is_unavailable(), "{error}");
        // Two connection attempts and a backoff would take over twice the
        // timeout; the margin is for a slow machine.
        assert!(
            took < timeout * 8 / 5,
            "command {attempt} took {took:?}, the timeout is {timeout:?}"
        );
    }
}

#[tokio::test]
async fn redis_a_lock_whose_answer_timed_out_is_released_not_left_to_lapse() {
    // Redis is slow (paused for writes here): the SET NX of the lock reaches
    // it, but its answer comes after the store's timeout. The store reports
    // an error, so no cache holds the lock: it must not stay in Redis for
    // its whole time to live, making every other replica wait for nobody.
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap().timeout(MS(300));
    store.load(&key()).await.unwrap(); // connected
    let mut conn = raw(&redis).await;
    let paused = Instant::now();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();

    let error = store.try_lock(&key(), S(60)).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");

    // Redis runs the SET when the pause ends, and then what the store sent
    // after it on the same connection: once a load gets through, the
    // release has run, and the lock is gone, not held for 60 s.
    while store.load(&key()).await.is_err() {
        assert!(paused.elapsed() < S(10), "Redis stayed paused");
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg(store.lock_key(&key()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the lock of a failed try_lock is still held");
    assert!(store.try_lock(&key(), S(60)).await.unwrap().is_some());
}

/// A loopback TCP proxy to Redis that can stop forwarding (a network
/// partition between one replica and Redis) and resume (it heals; nothing
/// is lost, only late).
struct Partition {
    url: String,
    blocked: Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    async fn to(redis: &RedisServer) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let port = redis.port;
        let flag = blocked.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, flag.clone()));
                tokio::spawn(forward(server_read, client_write, flag.clone()));
            }
        });
        Partition { url, blocked }
    }

    fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blocked: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while blocked.load(Ordering::SeqCst) {
            tokio::time::sleep(MS(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_holder_that_lost_its_lock_does_not_save_over_its_successor() {
    // Replica A holds the refresh lock and waits on a slow token endpoint;
    // meanwhile it cannot reach Redis for longer than the lock's time to
    // live, so the lock lapses. Replica B takes it, refreshes and saves.
    // When A's token arrives, A must not save it over B's: with a rotating
    // refresh token, that would put a spent refresh token back.
    let redis = RedisServer::start();
    let partition = Partition::to(&redis).await;
    let via_partition = RedisStore::new(&partition.url).unwrap().timeout(MS(200));
    let direct = RedisStore::new(&redis.url()).unwrap().timeout(MS(200));
    let slow = source::from_fn(|_| async {
        tokio::time::sleep(MS(1_500)).await;
        Ok(Token::new("from-a").with_expires_in(S(3600)))
    });
    let fast = source::from_fn(|_| async { Ok(Token::new("from-b").with_expires_in(S(3600))) });
    let a = TokenCache::builder(slow)
        .store(via_partition, key())
        .store_lock_ttl(MS(300))
        .build()
        .unwrap();
    let b = TokenCache::builder(fast)
        .store(direct.clone(), key())
        .store_lock_ttl(MS(300))
        .build()
        .unwrap();

    let a_refresh = tokio::spawn({
        let a = a.clone();
        async move { a.token().await }
    });
    // A has the lock and is waiting for its token endpoint.
    let mut conn = raw(&redis).await;
    let lock_key = direct.lock_key(&key());
    let started = Instant::now();
    loop {
        let held: i64 = redis::cmd("EXISTS")
            .arg(&lock_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if held == 1 {
            break;
        }
        assert!(started.elapsed() < S(5), "A never took the lock");
        tokio::time::sleep(MS(5)).await;
    }
    partition.set_blocked(true);
    tokio::time::sleep(MS(500)).await; // the lock lapses: A cannot extend it

    let from_b = b.token().await.unwrap();
    assert_eq!(from_b.access_token().secret(), "from-b");
    partition.set_blocked(false);

    let from_a = a_refresh.await.unwrap().unwrap();
    // A's callers get A's token; the store keeps B's.
    assert_eq!(from_a.access_token().secret(), "from-a");
    let stored = direct.load(&key()).await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "from-b");
    assert!(a.stats().store_errors >= 1, "{:?}", a.stats());
}

// === a fleet ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fleet_of_8_caches_makes_exactly_3_token_requests_in_3_lifetimes() {
    // 8 caches stand in for 8 replicas. Tokens live 2 s and are used for
    // all of it (no refresh ahead, no leeway), so one token lifetime is one
    // refresh period: requests at about 0, 2 and 4 s. Traffic stops at
    // 5.5 s, before the fourth; whichever cache finds the token expired
    // first refreshes, the other 7 take its token from Redis.
    const CACHES: usize = 8;
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let tokens = token_server(2).await;
    let api = api_server(|_| true).await;
    let caches: Vec<TokenCache> = (0..CACHES)
        .map(|_| replica(&tokens, Some(&store)))
        .collect();

    let calls = traffic(&caches, &api, MS(5_500)).await;

    let stats = total(&caches);
    eprintln!("{calls} calls; {stats:?}");
    assert_eq!(tokens.requests(), 3, "{stats:?}");
    assert_eq!(stats.token_requests, 3, "{stats:?}");
    assert_eq!(
        stats.adopted_from_store,
        3 * (CACHES as u64 - 1),
        "{stats:?}"
    );
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    assert!(calls > 1000, "{calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crashed_lock_holder_delays_the_others_by_at_most_the_lock_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let tokens = token_server(300).await;
    // Another replica took the lock and crashed: nobody will release it.
    let lock = store.try_lock(&key(), TTL).await.unwrap().unwrap();
    std::mem::forget(lock);
    let taken = Instant::now();
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .store(store.clone(), key())
        .store_lock_ttl(TTL)
        .build()
        .unwrap();

    let token = cache.token().await.unwrap();

    let waited = taken.elapsed();
    assert_eq!(token.access_token().secret(), "tok-1");
    assert!(
        waited >= TTL - MS(50),
        "did not wait for the lock: {waited:?}"
    );
    // The lock's time to live, a poll (100 ms) and one token request; the
    // margin is for a slow, busy machine. A waiter that never took the
    // lapsed lock over would wait for `store_wait` (46 s here).
    assert!(
        waited <= TTL + S(1),
        "waited {waited:?}, more than the lock TTL, a poll and a token request"
    );
    assert_eq!(cache.stats().store_waits, 1);
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lock_holder_dropped_mid_refresh_releases_its_lock_at_once() {
    // The lock lives 3 s and is extended every second: had the dropped
    // holder not released it, it would lapse 2 to 3 s after the drop. Its
    // release lets the other replica take over at its next poll (100 ms).
    const TTL: Duration = Duration::from_secs(3);
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let tokens = token_server(300).await;
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
        .store_lock_ttl(TTL)
        .build()
        .unwrap();
    let other = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .store(store.clone(), key())
        .store_lock_ttl(TTL)
        .build()
        .unwrap();
    let holder_call = tokio::spawn({
        let holder = holder.clone();
        async move { holder.token().await }
    });
    settle_until(|| started.load(Ordering::SeqCst) == 1).await;
    let other_call = tokio::spawn({
        let other = other.clone();
        async move { other.token().await }
    });
    settle_until(|| other.stats().store_waits == 1).await;

    // The holder goes away: its refresh future is dropped mid-request.
    holder_call.abort();
    drop(holder);
    let died = Instant::now();
    let token = other_call.await.unwrap().unwrap();

    let delay = died.elapsed();
    assert_eq!(token.access_token().secret(), "tok-1");
    // A poll, a release and a token request; the margin is for a slow,
    // busy machine, and still well short of the 2 s a lapse would take.
    assert!(
        delay < TTL / 2,
        "the others were delayed {delay:?}: the lock lapsed instead of being released"
    );
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_calls_keep_succeeding_and_sharing_resumes_after_restart() {
    // Two replicas, tokens of 1 s used for all of it.
    let mut redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let tokens = token_server(1).await;
    let api = api_server(|_| true).await;
    let caches = [
        replica(&tokens, Some(&store)),
        replica(&tokens, Some(&store)),
    ];

    // Shared: one token request per lifetime (3 lifetimes: at most 3 + the
    // edge of the window).
    traffic(&caches, &api, S(3)).await;
    let shared = total(&caches);
    assert!(shared.adopted_from_store >= 2, "{shared:?}");
    assert_eq!(shared.store_errors, 0, "{shared:?}");

    // Redis dies: every call still succeeds; each replica fetches alone.
    redis.stop();
    let before = tokens.requests();
    traffic(&caches, &api, S(3)).await;
    let alone = total(&caches);
    assert!(alone.store_errors > shared.store_errors, "{alone:?}");
    assert!(
        tokens.requests() - before >= 4,
        "each replica fetched on its own: {alone:?}"
    );

    // Redis is back (empty): after one more lifetime they share again.
    redis.restart();
    traffic(&caches, &api, S(2)).await;
    let resumed = total(&caches);
    let before = tokens.requests();
    traffic(&caches, &api, S(2)).await;
    let after = total(&caches);
    assert!(
        after.adopted_from_store > resumed.adopted_from_store,
        "sharing did not resume: {resumed:?} then {after:?}"
    );
    assert!(
        tokens.requests() - before <= 3,
        "{} token requests in 2 lifetimes of 2 replicas: not shared ({after:?})",
        tokens.requests() - before
    );
    assert_eq!(after.store_errors, resumed.store_errors, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_the_first_refresh_after_a_restart_is_still_shared() {
    // Four replicas, each with a `RedisStore` of its own (as separate
    // processes have), tokens of 2 s used for all of it. Redis restarts
    // (empty) while they are idle: the first command of each on its old
    // connection meets a closed socket. That command is sent again on a
    // fresh connection, so the refresh after the restart is shared like
    // any other: one token request, no store error.
    let mut redis = RedisServer::start();
    let tokens = token_server(2).await;
    let caches: Vec<TokenCache> = (0..4)
        .map(|_| {
            let store = RedisStore::new(&redis.url()).unwrap();
            replica(&tokens, Some(&store))
        })
        .collect();
    for cache in &caches {
        cache.token().await.unwrap();
    }
    assert_eq!(tokens.requests(), 1);

    redis.restart();
    // Idle until the token has expired.
    tokio::time::sleep(MS(2_200)).await;
    let refreshed = futures_util::future::join_all(caches.iter().map(|c| c.token())).await;
    for token in refreshed {
        token.unwrap();
    }

    let stats = total(&caches);
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    assert_eq!(tokens.requests(), 2, "{stats:?}");
    assert_eq!(stats.adopted_from_store, 3 + 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_longer_than_a_token_lives_no_refresh_token_is_sent_twice() {
    // Four replicas share one user's rotating refresh token through Redis;
    // the server revokes the grant when a spent refresh token comes back.
    // Redis is down for longer than a token lives: no replica may refresh
    // without the lock (each would send the same refresh token). They keep
    // failing (the token expired) until Redis is back, then exactly one
    // spends the refresh token and the others take its token.
    let mut redis = RedisServer::start();
    let server = RotatingServer::start(2, "redis").await;
    let first = TokenCache::new(server.password()).token().await.unwrap();
    let refresh_token = first.refresh_token().unwrap().clone();
    let caches: Vec<TokenCache> = (0..4)
        .map(|_| {
            let grant =
                RefreshTokenGrant::new(server.endpoint(), refresh_token.clone()).subject("alice");
            let store = RedisStore::new(&redis.url()).unwrap();
            let key = grant.store_key();
            TokenCache::builder(grant)
                .no_refresh_ahead()
                .leeway(Duration::ZERO)
                .store(store, key)
                .build()
                .unwrap()
        })
        .collect();
    // The first replica refreshes with it; the others take its token.
    for cache in &caches {
        cache.token().await.unwrap();
    }
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());

    redis.stop();
    tokio::time::sleep(MS(3_000)).await;
    for cache in &caches {
        let error = cache.token().await.unwrap_err();
        assert!(error.is_transient(), "{error}");
    }
    assert_eq!(
        server.requests().len(),
        2,
        "a refresh token was sent without the lock: {:?}",
        server.requests()
    );

    redis.restart();
    let deadline = Instant::now() + S(30);
    let mut tokens = Vec::new();
    for cache in &caches {
        loop {
            match cache.token().await {
                Ok(token) => break tokens.push(token),
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "no token after Redis came back: {error}"
                    );
                    tokio::time::sleep(MS(100)).await;
                }
            }
        }
    }
    assert!(!server.revoked(), "{:?}", server.requests());
    assert_eq!(server.requests().len(), 3, "{:?}", server.requests());
    let shared = tokens[0].access_token().clone();
    assert!(tokens.iter().all(|t| *t.access_token() == shared));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_replicas_with_a_primary_grant_use_it_not_the_shared_refresh_token() {
    // Password-grant replicas share a rotating refresh token through Redis.
    // While Redis is down, a refresh uses the password grant (no refresh
    // token sent), so the replicas keep working and the grant stays valid.
    let mut redis = RedisServer::start();
    let server = RotatingServer::start(2, "redis").await;
    let caches: Vec<TokenCache> = (0..4)
        .map(|_| {
            let grant = server.password();
            let store = RedisStore::new(&redis.url()).unwrap();
            let key = grant.store_key();
            TokenCache::builder(grant)
                .no_refresh_ahead()
                .leeway(Duration::ZERO)
                .store(store, key)
                .build()
                .unwrap()
        })
        .collect();
    for cache in &caches {
        cache.token().await.unwrap();
    }
    redis.stop();
    tokio::time::sleep(MS(2_500)).await;
    let before = server.requests().len();
    for cache in &caches {
        cache.token().await.unwrap();
    }
    let during: Vec<String> = server.requests()[before..].to_vec();
    assert_eq!(during, ["password"; 4], "{:?}", server.requests());
    assert!(!server.revoked());
}

// === measurements for BENCHMARKS.md ===

/// Token requests per token lifetime for N = 1, 2, 4, 8 replicas, with and
/// without Redis, with the default refresh ahead (at 80 % of the lifetime,
/// minus up to 5 % jitter) and a leeway of 5 % of the lifetime (as 60 s is
/// of a one-hour token; the default 60 s would be capped at half of these
/// 2-s tokens and make refresh ahead start at 40 %). One cache alone then
/// refreshes every 75–80 % of a lifetime: 1.25–1.33 requests per lifetime.
/// Run with
/// `cargo test --release --all-features --test store_redis -- --ignored --nocapture fleet_table`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: about 4 minutes"]
async fn fleet_table() {
    const LIFETIME: u64 = 2;
    const LIFETIMES: u64 = 10;
    let redis = RedisServer::start();
    // A Redis that is down for the whole run (nothing listens on its port).
    let mut down = RedisServer::start();
    down.stop();
    println!("| replicas | without a store | with RedisStore | with RedisStore, Redis down |");
    println!("| ---: | ---: | ---: | ---: |");
    for n in [1usize, 2, 4, 8] {
        let mut row = Vec::new();
        for (shared, url) in [
            (false, redis.url()),
            (true, redis.url()),
            (true, down.url()),
        ] {
            let store = RedisStore::new(&url)
                .unwrap()
                .key_prefix(format!("table-{n}-{shared}-{:?}:", SystemTime::now()));
            let tokens = token_server(LIFETIME).await;
            let api = api_server(|_| true).await;
            let caches: Vec<TokenCache> = (0..n)
                .map(|_| {
                    let builder =
                        TokenCache::builder(http_source(http_client(), tokens.url("/token")))
                            .leeway(MS(100));
                    if shared {
                        builder.store(store.clone(), key())
                    } else {
                        builder
                    }
                    .build()
                    .unwrap()
                })
                .collect();
            traffic(&caches, &api, S(LIFETIME * LIFETIMES)).await;
            row.push(tokens.requests() as f64 / LIFETIMES as f64);
        }
        println!("| {n} | {:.2} | {:.2} | {:.2} |", row[0], row[1], row[2]);
    }
}
