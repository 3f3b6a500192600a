//! B4: retries, permanent failures, stale-while-error and the cooldown that
//! keeps a dead token endpoint from being hammered. Paused clock, real
//! loopback servers: the test kit's faults where they serve, servers of
//! their own for a dead endpoint under load and custom sources.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{
    FrozenClock, TestServer, api_server, h2_client, http_client, http_source, read_response,
    settle_until, text, token_json,
};
use tokio::task::JoinHandle;
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt};
use tower_bearer::test_kit::{Fault, TestAuthServer};
use tower_bearer::{AuthLayer, Error, ErrorKind, TokenCache};

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

/// A token endpoint that issues `tok-1` (lifetime `expires_in`), then
/// answers 503 for as long as `down` is set, and tokens again after.
async fn flaky_token_server(expires_in: u64, down: Arc<AtomicBool>) -> TestServer {
    TestServer::start(move |n, _| {
        let down = down.clone();
        async move {
            if n > 1 && down.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "<html>maintenance</html>")
            } else {
                token_json(&format!("tok-{n}"), expires_in)
            }
        }
    })
    .await
}

/// Every token request the cache started has ended (the first succeeded,
/// every later one failed): none is waiting for its answer.
fn no_attempt_under_way(cache: &TokenCache) -> bool {
    let stats = cache.stats();
    stats.token_requests == stats.failed_token_requests + 1
}

#[tokio::test(start_paused = true)]
async fn b4_dead_endpoint_sees_a_bounded_number_of_requests_under_load() {
    // The bound for 10 simulated minutes at 1,000 calls per second, with the
    // default settings (3 attempts per refresh, cooldown 1 s doubling to
    // 30 s with equal jitter, so at least 0.5, 1, 2, 4, 8, then 15 s apart):
    // at most 3 requests per refresh, and at most 5 + 600 / 15 + 1 refreshes,
    // plus the first token. Documented in `cache` (Failures).
    const SECONDS: u64 = 600;
    const CALLS_PER_STEP: usize = 100;
    const STEP: Duration = Duration::from_millis(100);
    const BOUND: usize = 1 + 3 * (5 + SECONDS as usize / 15 + 1);

    // 600,000 real HTTP/2 calls: about 10 s here, 22 s with the CPU loaded.
    let _clock = FrozenClock::freeze().await;
    let down = Arc::new(AtomicBool::new(true));
    let tokens = flaky_token_server(300, down).await;
    let api = api_server(|_| true).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(h2_client());
    // The first token: usable until 300 s − 30 s leeway (60 s, capped at a
    // tenth of the lifetime).
    cache.token().await.unwrap();
    let start = Instant::now();
    let usable_until = start + S(270);

    // Calls are spawned so that those waiting for a refresh do not stop the
    // clock. A call counts as made when it first runs; each must be done
    // within 1 s of simulated time after that (a refresh's backoff is at most
    // 100 + 200 ms), which keeps the pile bounded.
    // After the last calls were made, the clock keeps moving step by step
    // until they are done too: a refresh under way sets each backoff timer
    // only once its previous attempt's real I/O is over, so one big
    // `advance` would leave it waiting for ever.
    let (mut ok, mut failed) = (0, 0);
    let mut pending: Vec<(Arc<OnceLock<Instant>>, JoinHandle<_>)> = Vec::new();
    loop {
        let elapsed = Instant::now() - start;
        let making = elapsed < S(SECONDS);
        if !making && pending.is_empty() {
            break;
        }
        assert!(
            elapsed < S(SECONDS + 2),
            "calls still pending 2 s after the last one was made"
        );
        for _ in 0..if making { CALLS_PER_STEP } else { 0 } {
            let client = client.clone();
            let req = Request::get(api.url("/"))
                .body(Full::<Bytes>::default())
                .unwrap();
            let made = Arc::new(OnceLock::new());
            let call = tokio::spawn({
                let made = made.clone();
                async move {
                    made.set(Instant::now()).unwrap();
                    let rsp = client.oneshot(req).await?;
                    Ok::<_, tower::BoxError>(read_response(rsp).await.0)
                }
            });
            pending.push((made, call));
        }
        // All of this step's calls are made at this instant, and every
        // token request under way has its answer (the endpoint answers at
        // once: its real I/O takes no simulated time, however loaded the
        // machine, so a backoff timer is set before the clock moves on).
        settle_until(|| {
            pending.iter().all(|(made, _)| made.get().is_some()) && no_attempt_under_way(&cache)
        })
        .await;
        advance(STEP).await;
        let now = Instant::now();
        settle_until(|| {
            no_attempt_under_way(&cache)
                && pending.iter().all(|(made, call)| {
                    call.is_finished() || made.get().is_some_and(|at| now - *at < S(1))
                })
        })
        .await;
        let (done, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, call)| call.is_finished());
        pending = rest;
        for (made, call) in done {
            let made = *made.get().unwrap();
            match call.await.unwrap() {
                Ok(status) => {
                    assert!(
                        made < usable_until,
                        "a call at {:?} got a token",
                        made - start
                    );
                    assert_eq!(status, StatusCode::OK);
                    ok += 1;
                }
                Err(err) => {
                    assert!(made >= usable_until, "a call at {:?} failed", made - start);
                    let err = err.downcast_ref::<Error>().expect("a typed token error");
                    assert_eq!(err.kind(), ErrorKind::Status);
                    assert_eq!(err.http_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
                    assert!(err.is_transient());
                    failed += 1;
                }
            }
        }
    }
    assert_eq!(ok, 270 * 1000, "every call until expiry − leeway succeeded");
    assert_eq!(failed, 330 * 1000, "every call after got the typed error");
    let requests = tokens.requests();
    eprintln!("dead endpoint: {requests} token requests in {SECONDS} s (bound {BOUND})");
    assert!(
        requests <= BOUND,
        "{requests} token requests, bound {BOUND}"
    );
    // It never stops trying either: at least one refresh per 30 s of outage.
    assert!(requests > 3 * (330 / 30), "{requests} token requests");
    assert_eq!(api.requests(), 270 * 1000);
}

#[tokio::test(start_paused = true)]
async fn b4_transient_failures_are_retried_with_backoff_within_one_refresh() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next(Fault::Status(StatusCode::SERVICE_UNAVAILABLE));
    server.fail_next(Fault::HtmlErrorPage);
    let cache = TokenCache::new(server.client_credentials());
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    // First attempt, then a backoff of at most 100 ms, then at most 200 ms.
    settle_until(|| cache.stats().failed_token_requests == 1).await;
    advance(MS(100)).await;
    settle_until(|| cache.stats().failed_token_requests == 2).await;
    advance(MS(200)).await;
    let token = waiter.await.unwrap().unwrap();
    assert_eq!(token.access_token().secret(), "at-1");
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.faults), (3, 2));
    assert_eq!(cache.stats().token_requests, 3);
    assert_eq!(cache.stats().refresh_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn b4_permanent_failures_are_not_retried() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next(Fault::InvalidClient);
    let cache = TokenCache::new(server.client_credentials());
    let err = cache.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OAuth);
    assert!(err.is_permanent());
    assert_eq!(server.stats().token_requests, 1);
    // During the cooldown, callers get the same failure without a request.
    let again = cache.token().await.unwrap_err();
    assert!(again.ptr_eq(&err));
    assert_eq!(server.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn b4_a_failed_refresh_keeps_serving_the_usable_token_and_recovers() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::builder().lifetime(S(100)).start().await;
    let cache = TokenCache::builder(server.client_credentials())
        .leeway(S(10))
        .jitter(0.0)
        .max_attempts(1)
        .build()
        .unwrap();
    assert_eq!(support::cached_token(&cache), None);
    cache.token().await.unwrap();

    // 80 s: stale. The background refresh fails; the token is still served.
    server.fail_next(Fault::Status(StatusCode::SERVICE_UNAVAILABLE));
    advance(S(80)).await;
    assert_eq!(support::cached_token(&cache).as_deref(), Some("at-1"));
    settle_until(|| cache.stats().refresh_failures == 1).await;
    assert_eq!(support::cached_token(&cache).as_deref(), Some("at-1"));
    assert_eq!(server.stats().token_requests, 2);

    // Within the cooldown (at least 0.5 s) no new attempt is made.
    advance(MS(400)).await;
    assert_eq!(support::cached_token(&cache).as_deref(), Some("at-1"));
    assert_eq!(server.stats().token_requests, 2);

    // The endpoint is back; after the cooldown the next call refreshes.
    advance(MS(600)).await;
    assert_eq!(support::cached_token(&cache).as_deref(), Some("at-1"));
    settle_until(|| support::cached_token(&cache).as_deref() == Some("at-2")).await;
    assert_eq!(server.stats().token_requests, 3);
    assert_eq!(cache.stats().refresh_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn b4_retry_after_is_honoured_between_attempts() {
    let _clock = FrozenClock::freeze().await;
    let tokens = TestServer::start(|n, _| async move {
        if n == 1 {
            let mut rsp = text(StatusCode::TOO_MANY_REQUESTS, "slow down");
            rsp.headers_mut()
                .insert("retry-after", "2".parse().unwrap());
            rsp
        } else {
            token_json("tok-2", 3600)
        }
    })
    .await;
    let client = http_client();
    let url = tokens.url("/token");
    // A custom source that passes the server's Retry-After on.
    let source = tower_bearer::source::from_fn(move |_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let req = Request::post(url).body(Full::<Bytes>::default()).unwrap();
            let rsp = client.request(req).await.map_err(Error::connect)?;
            if rsp.status() == StatusCode::TOO_MANY_REQUESTS {
                let secs = rsp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                return Err(Error::status(rsp.status(), None).with_retry_after(S(secs)));
            }
            Ok(tower_bearer::Token::new("tok-after-retry-after"))
        }
    });
    let cache = TokenCache::new(source);
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    settle_until(|| cache.stats().failed_token_requests == 1).await;
    advance(MS(1999)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokens.requests(),
        1,
        "not before the 2 s the server asked for"
    );
    advance(MS(1)).await;
    let token = waiter.await.unwrap().unwrap();
    assert_eq!(token.access_token().secret(), "tok-after-retry-after");
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn b4_attempt_timeout_turns_a_hung_endpoint_into_a_transient_error() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next(Fault::NoAnswer);
    let cache = TokenCache::builder(server.client_credentials())
        .attempt_timeout(S(2))
        .max_attempts(1)
        .build()
        .unwrap();
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    settle_until(|| server.stats().token_requests == 1).await;
    advance(S(2)).await;
    let err = waiter.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());
}

#[tokio::test(start_paused = true)]
async fn b4_an_enormous_cooldown_is_a_long_wait_not_a_panic() {
    let _clock = FrozenClock::freeze().await;
    let tokens = TestServer::start(|_, _| async { text(StatusCode::BAD_REQUEST, "no") }).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .cooldown(Duration::MAX, Duration::MAX)
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    // The source's own error, not "the refresh was interrupted" (a panic in
    // the refresh task).
    assert_eq!(err.kind(), ErrorKind::Status);
    assert!(cache.token().await.unwrap_err().ptr_eq(&err));
    assert_eq!(tokens.requests(), 1);
}

/// A current-thread runtime built without its time driver: no tokio timer
/// can be made on it (making one panics).
fn runtime_without_time_driver() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap()
}

#[test]
fn b4_a_runtime_without_a_time_driver_gets_one_token_and_keeps_using_it() {
    // Without an attempt timeout a refresh needs no timer: the token is
    // fetched once and used, on a runtime that has no time driver.
    let servers = support::ServerRuntime::default();
    let tokens = servers.start(support::token_server(3600));
    let api = servers.start(api_server(|_| true));
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .no_attempt_timeout()
        .build()
        .unwrap();
    let client = AuthLayer::new(cache.clone()).layer(http_client());
    let rt = runtime_without_time_driver();
    for _ in 0..10 {
        let rsp = rt
            .block_on(
                client.clone().oneshot(
                    Request::get(api.url("/"))
                        .body(Full::<Bytes>::default())
                        .unwrap(),
                ),
            )
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    assert_eq!(tokens.requests(), 1);
    assert_eq!(cache.stats().refresh_failures, 0);
}

#[test]
fn b4_a_refresh_that_panics_counts_as_failed_and_the_cooldown_applies() {
    // With the default attempt timeout, a refresh on a runtime without a
    // time driver panics making its timer: a failed refresh like any
    // other, whose cooldown keeps the next calls from trying again.
    let servers = support::ServerRuntime::default();
    let tokens = servers.start(support::token_server(3600));
    let api = servers.start(api_server(|_| true));
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(http_client());
    let rt = runtime_without_time_driver();
    for _ in 0..10 {
        let err = rt
            .block_on(
                client.clone().oneshot(
                    Request::get(api.url("/"))
                        .body(Full::<Bytes>::default())
                        .unwrap(),
                ),
            )
            .unwrap_err();
        let err = err.downcast_ref::<Error>().expect("a typed token error");
        assert_eq!(err.kind(), ErrorKind::Interrupted);
    }
    let stats = cache.stats();
    assert_eq!((stats.token_requests, stats.refresh_failures), (1, 1));
    assert_eq!(tokens.requests(), 0, "the panic came before the request");
    assert_eq!(api.requests(), 0);
}
