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
use tower_bearer::{AuthLayer, TokenCache};

const S: fn(u64) -> Duration = Duration::from_secs;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn b1_token_is_used_until_expiry_minus_leeway_then_refetched() {
    let _clock = FrozenClock::freeze().await;
    let tokens = support::token_server(3600).await;
    let api = api_server(|_| true).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .leeway(S(60))
        .no_refresh_ahead()
        .build()
        .unwrap();
    let mut client = AuthLayer::new(cache.clone()).layer_service(http_client());
    let start = Instant::now();

    let first = client
        .ready()
        .await
        .unwrap()
        .call(get(&api.url("/a")))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 1);

    // Just before 3540 s the first token is still sent.
    advance(S(3539)).await;
    let rsp = client
        .ready()
        .await
        .unwrap()
        .call(get(&api.url("/b")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 1);
    assert_eq!(
        api.seen().last().unwrap().authorization(),
        Some("Bearer tok-1")
    );

    // At 3540 s it is not: the call waits for a new one.
    advance(S(1)).await;
    assert_eq!(Instant::now() - start, S(3540));
    let rsp = client
        .ready()
        .await
        .unwrap()
        .call(get(&api.url("/c")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 2);
    assert_eq!(
        api.seen().last().unwrap().authorization(),
        Some("Bearer tok-2")
    );
    assert_eq!(cache.stats().token_requests, 2);
}

#[tokio::test(start_paused = true)]
async fn b1_short_lived_token_is_reused_for_half_its_lifetime() {
    let _clock = FrozenClock::freeze().await;
    let tokens = support::token_server(4).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .no_refresh_ahead()
        .build()
        .unwrap();

    for _ in 0..19 {
        assert_eq!(
            cache.token().await.unwrap().access_token().secret(),
            "tok-1"
        );
        advance(Duration::from_millis(100)).await;
    }
    // 1.9 s: still the first token, one request.
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(tokens.requests(), 1);
    // 2 s: the 60 s leeway, capped at half of 4 s, is reached.
    advance(Duration::from_millis(100)).await;
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-2"
    );
    assert_eq!(tokens.requests(), 2);
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
