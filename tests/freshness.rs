//! B1, B2, B11: when tokens are reused, refreshed ahead, and refetched, on
//! tokio's paused clock against a real token endpoint.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{
    FrozenClock, TestServer, api_server, http_client, http_source, settle_until, token_json,
};
use tokio::time::{Instant, advance};
use tower::{Service, ServiceExt};
use tower_bearer::test_kit::TestAuthServer;
use tower_bearer::{AuthLayer, TokenCache};

const S: fn(u64) -> Duration = Duration::from_secs;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn b1_token_is_used_until_expiry_minus_leeway_then_refetched() {
    // The kit's API refuses an expired token: every call below must be OK.
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await; // one-hour tokens
    let cache = TokenCache::builder(server.client_credentials())
        .leeway(S(60))
        .no_refresh_ahead()
        .build()
        .unwrap();
    let mut client = AuthLayer::new(cache.clone()).layer_service(http_client());
    let start = Instant::now();
    let last_bearer = || server.api_requests().pop().and_then(|r| r.bearer);

    let first = client
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(server.stats().token_requests, 1);

    // Just before 3540 s the first token is still sent.
    advance(S(3539)).await;
    let rsp = client
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/b")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(last_bearer().as_deref(), Some("at-1"));

    // At 3540 s it is not: the call waits for a new one.
    advance(S(1)).await;
    assert_eq!(Instant::now() - start, S(3540));
    let rsp = client
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/c")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(server.stats().token_requests, 2);
    assert_eq!(last_bearer().as_deref(), Some("at-2"));
    assert_eq!(cache.stats().token_requests, 2);
    assert_eq!(server.stats().api_rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn b1_short_lived_token_is_reused_until_a_tenth_of_its_lifetime_remains() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::builder().lifetime(S(4)).start().await;
    let cache = TokenCache::builder(server.client_credentials())
        .no_refresh_ahead()
        .build()
        .unwrap();

    for _ in 0..35 {
        assert_eq!(cache.token().await.unwrap().access_token().secret(), "at-1");
        advance(Duration::from_millis(100)).await;
    }
    // 3.5 s: still the first token, one request.
    assert_eq!(cache.token().await.unwrap().access_token().secret(), "at-1");
    assert_eq!(server.stats().token_requests, 1);
    // 3.6 s: the 60 s leeway, capped at a tenth of 4 s, is reached.
    advance(Duration::from_millis(100)).await;
    assert_eq!(cache.token().await.unwrap().access_token().secret(), "at-2");
    assert_eq!(server.stats().token_requests, 2);
}

#[tokio::test(start_paused = true)]
async fn b2_stale_token_is_served_at_once_while_one_slow_refresh_runs() {
    let _clock = FrozenClock::freeze().await;
    // The first token comes at once; later ones take 5 s.
    let tokens = TestServer::start(|n, _| async move {
        if n > 1 {
            tokio::time::sleep(S(5)).await;
        }
        token_json(&format!("tok-{n}"), 100)
    })
    .await;
    let api = api_server(|_| true).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .leeway(S(10))
        .refresh_ahead(0.8)
        .jitter(0.0)
        .build()
        .unwrap();
    let mut client = AuthLayer::new(cache.clone()).layer_service(http_client());
    client
        .ready()
        .await
        .unwrap()
        .call(get(&api.url("/")))
        .await
        .unwrap();
    let issued = Instant::now();

    // 80 s: stale. Each call completes at once, on the frozen clock, with the
    // stale token, while exactly one refresh waits for the slow endpoint.
    advance(S(80)).await;
    for _ in 0..50 {
        let rsp = client
            .ready()
            .await
            .unwrap()
            .call(get(&api.url("/")))
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(Instant::now() - issued, S(80), "no caller waited");
    }
    settle_until(|| tokens.requests() == 2).await;
    assert!(
        api.seen()
            .iter()
            .all(|s| s.authorization() == Some("Bearer tok-1"))
    );

    // The refresh lands after the endpoint's 5 s; later calls use its token.
    advance(S(5)).await;
    settle_until(|| support::cached_token(&cache).as_deref() == Some("tok-2")).await;
    let rsp = client
        .ready()
        .await
        .unwrap()
        .call(get(&api.url("/")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        api.seen().last().unwrap().authorization(),
        Some("Bearer tok-2")
    );
    assert_eq!(tokens.requests(), 2, "exactly one background refresh");
}

trait LayerExt {
    fn layer_service<S>(self, inner: S) -> tower_bearer::AuthService<S>;
}

impl LayerExt for AuthLayer {
    fn layer_service<S>(self, inner: S) -> tower_bearer::AuthService<S> {
        tower::Layer::layer(&self, inner)
    }
}

/// A source that spends its task's whole coop budget after fetching, as a
/// source doing 128 ready operations may (a local cache, a busy channel):
/// whatever its refresh task does next in the same poll finds no budget
/// left, so a timer it arms then is never registered.
fn budget_spending_source(url: String) -> impl tower_bearer::TokenSource {
    let client = http_client();
    tower_bearer::source::from_fn(move |_previous| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let token = support::post_for_token(client, url).await?;
            while tokio::task::coop::has_budget_remaining() {
                tokio::task::consume_budget().await;
            }
            Ok(token)
        }
    })
}

/// A token endpoint issuing 10 s tokens, an API that accepts any, and a
/// cache whose source spent its coop budget: the first token is fetched,
/// then the clock is an hour past its end.
struct AnHourLate {
    tokens: TestServer,
    api: TestServer,
    cache: TokenCache,
    _clock: FrozenClock,
}

impl AnHourLate {
    async fn start() -> Self {
        let clock = FrozenClock::freeze().await;
        let tokens = support::token_server(10).await;
        let api = api_server(|_| true).await;
        let cache = TokenCache::new(budget_spending_source(tokens.url("/token")));
        assert_eq!(cached(&cache).await, "tok-1");
        advance(S(3600)).await;
        AnHourLate {
            tokens,
            api,
            cache,
            _clock: clock,
        }
    }

    /// The tokens the API saw, all of them new ones.
    fn assert_no_expired_token_was_sent(&self, calls: usize) {
        let seen: Vec<_> = self
            .api
            .seen()
            .iter()
            .map(|s| s.authorization().unwrap_or("-").to_owned())
            .collect();
        assert_eq!(seen.len(), calls);
        assert!(
            seen.iter().all(|t| t == "Bearer tok-2"),
            "{} of {calls} calls carried an expired token",
            seen.iter().filter(|t| *t == "Bearer tok-1").count()
        );
        assert_eq!(self.tokens.requests(), 2);
    }
}

async fn cached(cache: &TokenCache) -> String {
    cache
        .token()
        .await
        .unwrap()
        .access_token()
        .secret()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn b1_a_direct_service_never_sends_a_token_past_its_usable_end() {
    let late = AnHourLate::start().await;
    let mut client = AuthLayer::new(late.cache.clone()).layer_service(http_client());
    for _ in 0..300 {
        let rsp = client
            .ready()
            .await
            .unwrap()
            .call(get(&late.api.url("/")))
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    late.assert_no_expired_token_was_sent(300);
}

#[tokio::test(start_paused = true)]
async fn b1_a_clone_per_request_never_sends_a_token_past_its_usable_end() {
    let late = AnHourLate::start().await;
    let client = AuthLayer::new(late.cache.clone()).layer_service(http_client());
    for _ in 0..1000 {
        let rsp = client
            .clone()
            .oneshot(get(&late.api.url("/")))
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    late.assert_no_expired_token_was_sent(1000);
}

#[tokio::test(start_paused = true)]
async fn b1_routed_requests_never_carry_a_token_past_its_usable_end() {
    use tower_bearer::route::{Origin, RouteLayer};

    let late = AnHourLate::start().await;
    let origin = Origin::parse(&late.api.url("")).unwrap();
    let routed = tower::Layer::layer(
        &RouteLayer::only(origin, AuthLayer::new(late.cache.clone())),
        http_client(),
    );
    for _ in 0..1000 {
        let rsp = routed
            .clone()
            .oneshot(get(&late.api.url("/")))
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    late.assert_no_expired_token_was_sent(1000);
}

#[test]
fn b1_one_block_on_per_call_never_sends_a_token_past_its_usable_end() {
    // A synchronous facade: a current-thread runtime driven only inside
    // `block_on`, one per call. The servers run on a runtime of their own.
    let servers = support::ServerRuntime::default();
    let tokens = servers.start(support::token_server(10));
    let api = servers.start(api_server(|_| true));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let _clock = rt.block_on(FrozenClock::freeze());
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let mut client = AuthLayer::new(cache).layer_service(http_client());
    let mut call = |rt: &tokio::runtime::Runtime, idle: Option<Duration>| {
        rt.block_on(async {
            if let Some(idle) = idle {
                // The clock moves on while nothing runs: the call below is
                // polled before the runtime's drivers have run once.
                let _ = support::now_or_never(advance(idle));
            }
            let rsp = client
                .ready()
                .await
                .unwrap()
                .call(get(&api.url("/")))
                .await
                .unwrap();
            assert_eq!(rsp.status(), StatusCode::OK);
        })
    };

    call(&rt, None);
    // An idle period longer than the token's whole life.
    call(&rt, Some(S(20)));

    let seen: Vec<_> = api
        .seen()
        .iter()
        .map(|s| s.authorization().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["Bearer tok-1", "Bearer tok-2"]);
}

#[test]
fn b1_a_token_is_never_sent_past_its_end_when_the_runtime_that_fetched_it_is_never_driven_again() {
    use std::sync::{Arc, Mutex};

    // Runtime A fetches the token, then is kept alive but never driven
    // again: nothing it could run on the token's behalf ever runs.
    let a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let issued = Arc::new(Mutex::new(0));
    let cache = a.block_on({
        let issued = issued.clone();
        async move {
            let cache =
                TokenCache::builder(tower_bearer::source::from_fn(move |_| {
                    let n = {
                        let mut n = issued.lock().unwrap();
                        *n += 1;
                        *n
                    };
                    async move {
                        Ok(tower_bearer::Token::new(format!("tok-{n}")).with_expires_in(S(60)))
                    }
                }))
                .leeway(Duration::ZERO)
                .no_refresh_ahead()
                .build()
                .unwrap();
            cache.token().await.unwrap();
            cache
        }
    });

    // Runtime B, 61 s later by its clock: the token's end has passed.
    let b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let sent = b.block_on(async move {
        advance(S(61)).await;
        let echo = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
            Ok::<_, std::convert::Infallible>(http::Response::new(auth))
        });
        let mut client = AuthLayer::new(cache).layer_service(echo);
        let mut sent = Vec::new();
        for _ in 0..300 {
            let rsp = client
                .ready()
                .await
                .unwrap()
                .call(Request::new(Full::default()))
                .await
                .unwrap();
            sent.push(rsp.into_body());
        }
        sent
    });
    assert!(sent.iter().all(|t| t == "Bearer tok-2"), "{sent:?}");
    drop(a);
}
