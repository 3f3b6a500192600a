//! B3 single flight, and background work that ends with the cache.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{
    FrozenClock, TestServer, api_server, h2_client, http_client, http_source, read_response,
    settle_until, token_json,
};
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};

use tower_bearer::{AuthLayer, AuthService, Error, ErrorKind, Token, TokenCache, source};

/// A token endpoint that holds every answer until the test opens the gate.
async fn gated_token_server(gate: Arc<Notify>, expires_in: u64) -> TestServer {
    TestServer::start(move |n, _| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            token_json(&format!("tok-{n}"), expires_in)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_ten_thousand_concurrent_calls_on_a_cold_cache_make_one_token_request() {
    const CALLS: usize = 10_000;
    let gate = Arc::new(Notify::new());
    let tokens = gated_token_server(gate.clone(), 3600).await;
    let api = api_server(|token| token == "tok-1").await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(h2_client());

    let started = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (client, started, url) = (client.clone(), started.clone(), api.url("/items"));
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                let req = Request::get(url).body(Full::<Bytes>::default()).unwrap();
                let rsp = client.oneshot(req).await?;
                Ok::<_, tower::BoxError>(read_response(rsp).await)
            })
        })
        .collect();

    // Every call has reached the cache, and the one token request is held
    // at the endpoint: all of them are waiting for the same refresh.
    settle_until(|| started.load(Ordering::SeqCst) == CALLS && tokens.requests() == 1).await;
    gate.notify_one();

    for call in calls {
        // The API answers with the token it accepted.
        let expected = (StatusCode::OK, "tok-1".to_owned());
        assert_eq!(call.await.unwrap().unwrap(), expected);
    }
    assert_eq!(tokens.requests(), 1);
    assert_eq!(api.requests(), CALLS);
    assert_eq!(cache.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn b3_dropped_driver_hands_the_refresh_to_the_other_waiters() {
    let _clock = FrozenClock::freeze().await;
    let gate = Arc::new(Notify::new());
    let tokens = gated_token_server(gate.clone(), 3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));

    let spawn_waiter = |cache: TokenCache| tokio::spawn(async move { cache.token().await });
    let first = spawn_waiter(cache.clone());
    settle_until(|| tokens.requests() == 1).await;
    let second = spawn_waiter(cache.clone());
    let third = spawn_waiter(cache.clone());
    tokio::task::yield_now().await;

    // The caller whose call started the refresh gives up.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    gate.notify_one();
    for waiter in [second, third] {
        let token = waiter.await.unwrap().unwrap();
        assert_eq!(token.access_token().secret(), "tok-1");
    }
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn b3_one_failure_reaches_every_waiter_as_the_same_error() {
    let _clock = FrozenClock::freeze().await;
    let gate = Arc::new(Notify::new());
    let tokens = TestServer::start({
        let gate = gate.clone();
        move |_, _| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                support::json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid_client"}),
                )
            }
        }
    })
    .await;
    // The endpoint's 400 is permanent for this source: no retries.
    let client = http_client();
    let url = tokens.url("/token");
    let cache = TokenCache::new(source::from_fn(move |_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let req = Request::post(url).body(Full::<Bytes>::default()).unwrap();
            let rsp = client.request(req).await.map_err(Error::connect)?;
            Err::<Token, _>(Error::permanent(format!("status {}", rsp.status())))
        }
    }));

    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    settle_until(|| tokens.requests() == 1).await;
    gate.notify_one();
    let errors: Vec<Error> = futures_join(waiters).await;
    assert_eq!(tokens.requests(), 1);
    assert!(errors.iter().all(|e| e.kind() == ErrorKind::Source));
    assert!(
        errors.iter().all(|e| e.ptr_eq(&errors[0])),
        "one shared error"
    );
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<Result<Token, Error>>>) -> Vec<Error> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap().unwrap_err());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn b2_background_refresh_ends_when_the_last_handle_is_dropped() {
    let _clock = FrozenClock::freeze().await;
    let gate = Arc::new(Notify::new());
    let tokens = gated_token_server(gate.clone(), 3600).await;
    // Held by the source and by each fetch under way.
    let witness = Arc::new(());
    let source = {
        let (witness, client, url) = (witness.clone(), http_client(), tokens.url("/token"));
        source::from_fn(move |_| {
            let held_by_this_fetch = witness.clone();
            let fetch = support::post_for_token(client.clone(), url.clone());
            async move {
                let _held = held_by_this_fetch;
                fetch.await
            }
        })
    };
    let cache = TokenCache::new(source);
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    settle_until(|| tokens.requests() == 1).await;
    assert_eq!(
        Arc::strong_count(&witness),
        3,
        "test, source, fetch under way"
    );

    // Every handle goes away while the refresh is still in flight: the
    // refresh and the source are dropped, nothing keeps running.
    waiter.abort();
    let _ = waiter.await;
    drop(cache);
    settle_until(|| Arc::strong_count(&witness) == 1).await;
}

#[tokio::test(start_paused = true)]
async fn b3_a_panicking_source_fails_its_waiters_and_the_next_call_starts_again() {
    let _clock = FrozenClock::freeze().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(source::from_fn({
        let calls = calls.clone();
        move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    panic!("the source blew up");
                }
                Ok(Token::new("tok-after-panic").with_expires_in(Duration::from_secs(60)))
            }
        }
    }))
    .cooldown(Duration::from_secs(1), Duration::from_secs(1))
    .build()
    .unwrap();

    let err = cache.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted);
    assert!(err.is_transient());
    // During the cooldown the failure is returned at once, without a call.
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        ErrorKind::Interrupted
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    let token = cache.token().await.unwrap();
    assert_eq!(token.access_token().secret(), "tok-after-panic");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn b3_a_refresh_stranded_on_an_idle_runtime_is_taken_over_within_the_attempt_timeout() {
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
    // The servers run on a runtime of their own. The token endpoint never
    // answers its second request: the refresh that sends it is stranded
    // anyway, on a runtime nobody drives.
    let servers = support::ServerRuntime::default();
    let tokens = servers.start(TestServer::start(|n, _| async move {
        if n == 2 {
            std::future::pending::<()>().await;
        }
        token_json(&format!("tok-{n}"), 10)
    }));
    let api = servers.start(api_server(|_| true));
    let cache = TokenCache::builder(http_source(
        support::unpooled_client(),
        tokens.url("/token"),
    ))
    .attempt_timeout(ATTEMPT_TIMEOUT)
    .build()
    .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let call = |client: AuthService<support::HttpClient>, url: String| async move {
        let rsp = client
            .oneshot(Request::get(url).body(Full::<Bytes>::default()).unwrap())
            .await?;
        Ok::<_, tower::BoxError>(read_response(rsp).await)
    };

    // Runtime A, a synchronous facade's: driven only inside `block_on`.
    let a = runtime();
    let _a_clock = a.block_on(FrozenClock::freeze());
    let on_a = AuthLayer::new(cache.clone()).layer(support::unpooled_client());
    a.block_on(call(on_a.clone(), api.url("/"))).unwrap();
    // 8 s later the token is stale: the call is served at once, and starts
    // a background refresh on A, which then sits idle.
    a.block_on(async {
        tokio::time::advance(Duration::from_secs(8)).await;
        call(on_a.clone(), api.url("/")).await.unwrap();
        // The refresh has sent its token request.
        settle_until(|| cache.stats().token_requests == 2).await;
    });

    // Runtime B needs a token once the first has expired: it joins the
    // refresh, hears nothing from it for the attempt timeout (by B's own
    // clock), takes it over and gets a token.
    let b = runtime();
    let on_b = AuthLayer::new(cache.clone()).layer(support::unpooled_client());
    let (status, body) = b.block_on(async {
        let _clock = FrozenClock::freeze().await;
        tokio::time::advance(Duration::from_secs(10)).await;
        let joined = tokio::spawn(call(on_b, api.url("/")));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!joined.is_finished(), "the caller waits for the refresh");
        tokio::time::advance(ATTEMPT_TIMEOUT).await;
        settle_until(|| joined.is_finished()).await;
        joined.await.unwrap().unwrap()
    });
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tok-3"));
    assert_eq!(cache.stats().token_requests, 3);

    // B3 still holds: A's refresh was aborted, so driving A again sends
    // nothing more and installs nothing.
    a.block_on(async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(cache.stats().token_requests, 3);
    assert_eq!(support::cached_token(&cache).as_deref(), Some("tok-3"));
}
