//! `AuthLayer::report_token_origin`: each response says where its
//! request's token came from, against the test kit's server, on tokio's
//! frozen clock. Off by default: no extension, no allocation.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::{FrozenClock, http_client};
use tower::{Layer, ServiceExt};
use tower_bearer::future::TokenOrigin;
use tower_bearer::test_kit::TestAuthServer;
use tower_bearer::{AuthLayer, TokenCache, TokenParams};

#[tokio::test(start_paused = true)]
async fn each_response_says_where_its_token_came_from() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::builder()
        .lifetime(Duration::from_secs(100))
        .start()
        .await;
    let cache = TokenCache::new(server.client_credentials());
    let api = AuthLayer::new(cache.clone())
        .report_token_origin()
        .layer(http_client());
    let call = |request: Request<Full<bytes::Bytes>>| {
        let api = api.clone();
        async move {
            let response = api.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.extensions().get::<TokenOrigin>().copied()
        }
    };
    let get = || {
        Request::get(server.url("/v1"))
            .body(Full::default())
            .unwrap()
    };

    assert_eq!(call(get()).await, Some(TokenOrigin::Waited), "no token yet");
    assert_eq!(call(get()).await, Some(TokenOrigin::Cached));

    // Past the refresh-ahead point (80 % of 100 s, minus up to 5 %), before
    // the usable end (90 s): the stale token, while a refresh runs.
    tokio::time::advance(Duration::from_secs(85)).await;
    assert_eq!(call(get()).await, Some(TokenOrigin::Stale));
    cache.settle().await;
    assert_eq!(call(get()).await, Some(TokenOrigin::Cached));

    // Rejected, then sent once more.
    server.revoke_access_tokens();
    assert_eq!(call(get()).await, Some(TokenOrigin::Retried));
    assert_eq!(cache.stats().retries, 1);

    // A variant's first token is waited for.
    let mut request = get();
    request
        .extensions_mut()
        .insert(TokenParams::new().audience("orders"));
    assert_eq!(call(request).await, Some(TokenOrigin::Waited));

    // Not asked for: nothing, except on a retried request (a cache of its
    // own: a token that a rejection brought and that is rejected in its
    // turn is held for the rejection throttle, B6).
    let fresh = TokenCache::new(server.client_credentials());
    let plain = AuthLayer::new(fresh.clone()).layer(http_client());
    let response = plain.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.extensions().get::<TokenOrigin>(), None);
    server.revoke_access_tokens();
    let response = plain.oneshot(get()).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?} {:?} {fresh:?}",
        server.stats(),
        fresh.stats()
    );
    assert_eq!(
        response.extensions().get::<TokenOrigin>(),
        Some(&TokenOrigin::Retried)
    );
}

#[tokio::test]
async fn a_401_is_returned_unretried_once_the_last_cache_handle_went_with_a_oneshot() {
    // A known limit (README, guide): the response future holds the cache
    // weakly (the per-request path clones no shared handle), so a retry
    // needs a handle that outlives the call.
    let server = TestAuthServer::start().await;
    let api = AuthLayer::new(TokenCache::new(server.client_credentials())).layer(http_client());
    let get = || {
        Request::get(server.url("/v1"))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        api.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    server.revoke_access_tokens();
    let response = api.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.stats().token_requests, 1);
}
