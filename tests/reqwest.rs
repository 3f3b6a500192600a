//! B6 through reqwest: `tower_bearer::reqwest::HttpService` makes a
//! `reqwest::Client` an `http::Request` service for `AuthLayer`, against the
//! test kit's API told to reject the first token.
#![cfg(feature = "reqwest")]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{FrozenClock, TestServer, http_client, http_source};
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::reqwest::HttpService;
use tower_bearer::test_kit::TestAuthServer;
use tower_bearer::{AuthLayer, TokenCache};

async fn cache_and_tokens() -> (TokenCache, TestServer) {
    let tokens = support::token_server(3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    (cache, tokens)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn b6_buffered_body_rejected_once_is_retried_through_the_adapter() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let cache = TokenCache::new(server.client_credentials());
    let api_client = ServiceBuilder::new()
        .layer(AuthLayer::new(cache.clone()))
        .service(HttpService::new(client()));

    let request = Request::post(server.url("/v1/orders"))
        .header("content-type", "application/json")
        .body(reqwest::Body::from(r#"{"item": "tea"}"#))
        .unwrap();
    let response = api_client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let text = reqwest::Response::from(response).text().await.unwrap();
    assert!(text.contains(r#""path":"/v1/orders""#), "{text}");
    assert_eq!(server.stats().token_requests, 2);
    let seen = server.api_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].bearer.as_deref(), Some("at-1"));
    assert_eq!(seen[1].bearer.as_deref(), Some("at-2"));
    for attempt in &seen {
        assert_eq!(attempt.body, r#"{"item": "tea"}"#);
        assert_eq!(attempt.headers["content-type"], "application/json");
    }
    assert_eq!(cache.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn b6_streaming_reqwest_body_is_sent_once_and_the_token_invalidated() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let api_client = ServiceBuilder::new()
        .layer(AuthLayer::new(TokenCache::new(server.client_credentials())))
        .service(HttpService::new(client()));

    // `Body::wrap` makes a streaming body: reqwest cannot copy it.
    let streaming = reqwest::Body::wrap(Full::new(Bytes::from_static(b"stream")));
    assert!(streaming.as_bytes().is_none());
    let rejected = api_client
        .clone()
        .oneshot(
            Request::put(server.url("/v1/blob"))
                .body(streaming)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    let stats = server.stats();
    assert_eq!((stats.api_requests, stats.token_requests), (1, 1));

    let ok = api_client
        .oneshot(
            Request::get(server.url("/v1/blob"))
                .body(reqwest::Body::from(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(server.stats().token_requests, 2);
    assert_eq!(server.api_requests()[1].bearer.as_deref(), Some("at-2"));
}

#[tokio::test(start_paused = true)]
async fn a_uri_reqwest_cannot_send_to_is_an_error_not_a_panic() {
    let _clock = FrozenClock::freeze().await;
    let (cache, _tokens) = cache_and_tokens().await;
    let api_client = ServiceBuilder::new()
        .layer(AuthLayer::new(cache))
        .service(HttpService::new(client()));

    let path_only = Request::get("/no/host")
        .body(reqwest::Body::from(""))
        .unwrap();
    let error = api_client.oneshot(path_only).await.unwrap_err();
    assert!(error.downcast_ref::<reqwest::Error>().is_some(), "{error}");
}
