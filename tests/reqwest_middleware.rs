//! `AuthMiddleware` in a real `reqwest_middleware` client against the
//! test kit's token endpoint and API (and, for step-up, servers of its
//! own): the token attached, a rejection retried once with
//! the request's body, composition with `reqwest-retry` and
//! `reqwest-tracing`, one cache shared with a tower stack; and `AuthLayer`
//! over `tower-reqwest`'s adapter.
#![cfg(feature = "reqwest-middleware")]

mod support;

use std::time::Duration;

use http::StatusCode;
use reqwest_middleware::ClientBuilder;
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_tracing::TracingMiddleware;
use support::{TestServer, text, token_server};
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::reqwest_middleware::AuthMiddleware;
use tower_bearer::test_kit::{Fault, TestAuthServer};
use tower_bearer::{AuthLayer, Error, TokenCache};

/// The test kit's token endpoint and API, with a cache for its client.
async fn kit() -> (TestAuthServer, TokenCache) {
    let server = TestAuthServer::start().await;
    let cache = TokenCache::new(server.client_credentials());
    (server, cache)
}

/// The `tower_bearer::Error` a middleware error carries.
fn token_error(error: reqwest_middleware::Error) -> Error {
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("not a middleware error: {error:?}");
    };
    error.downcast::<Error>().expect("a tower_bearer::Error")
}

#[tokio::test]
async fn middleware_attaches_the_token_and_retries_a_rejected_request_once_with_its_body() {
    let (server, cache) = kit().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache.clone()))
        .build();

    let response = client
        .post(server.url("/v1/things"))
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let seen = server.api_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].bearer.as_deref(), seen[0].status),
        (Some("at-1"), StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        (seen[1].bearer.as_deref(), seen[1].status),
        (Some("at-2"), StatusCode::OK)
    );
    assert_eq!(seen[0].body, r#"{"name":"x"}"#);
    assert_eq!(
        seen[1].body, seen[0].body,
        "the retry carries the same body"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.token_requests, stats.rejections, stats.retries),
        (2, 1, 1)
    );

    // The next call uses the new token at once.
    let response = client.get(server.url("/v1/again")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = server.stats();
    assert_eq!((stats.api_requests, stats.token_requests), (3, 2));
}

#[tokio::test]
async fn middleware_composes_with_reqwest_retry_and_reqwest_tracing() {
    // The API fails its first request with 503; reqwest-retry, above the
    // token middleware, sends it again, with the token attached each time.
    let (server, cache) = kit().await;
    server.fail_next_api(StatusCode::SERVICE_UNAVAILABLE);
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(10))
        .build_with_max_retries(2);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(TracingMiddleware::default())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .with(AuthMiddleware::new(cache.clone()))
        .build();

    let response = client.get(server.url("/v1/things")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Vec<_> = server
        .api_requests()
        .into_iter()
        .map(|r| (r.bearer, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("at-1".to_owned()), StatusCode::SERVICE_UNAVAILABLE),
            (Some("at-1".to_owned()), StatusCode::OK)
        ]
    );
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(cache.stats().rejections, 0);
}

#[tokio::test]
async fn middleware_and_a_tower_stack_share_one_cache() {
    let (server, cache) = kit().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    // The first token is rejected through the middleware...
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache.clone()))
        .build();
    let response = client.get(server.url("/a")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // ...and the tower stack over the same cache uses its successor.
    let tower_client = AuthLayer::new(cache.clone()).layer(
        tower_bearer::reqwest::HttpService::new(reqwest::Client::new()),
    );
    let request = http::Request::get(server.url("/b"))
        .body(reqwest::Body::from(""))
        .unwrap();
    let response = tower_client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = server.api_requests();
    assert_eq!(
        (seen[2].path.as_str(), seen[2].bearer.as_deref()),
        ("/b", Some("at-2"))
    );
    assert_eq!(server.stats().token_requests, 2);
}

#[tokio::test]
async fn middleware_without_a_token_sends_nothing_and_fails_with_the_typed_error() {
    let (server, cache) = kit().await;
    server.fail_next(Fault::InvalidClient);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache))
        .build();
    let error = client.get(server.url("/a")).send().await.unwrap_err();
    let error = token_error(error);
    assert!(error.is_permanent(), "{error}");
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.api_requests), (1, 0));
}

#[tokio::test]
async fn auth_layer_over_tower_reqwest_retries_a_rejected_request_with_its_body() {
    // The reqwest-to-tower adapter some users already have.
    let (server, cache) = kit().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let service = AuthLayer::new(cache.clone())
        .layer(tower_reqwest::HttpClientLayer.layer(reqwest::Client::new()));
    let request = http::Request::post(server.url("/v1/things"))
        .body(reqwest::Body::from("payload"))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = server.api_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, "payload");
    assert_eq!(seen[1].bearer.as_deref(), Some("at-2"));
    assert_eq!(cache.stats().retries, 1);
}

#[tokio::test]
async fn middleware_steps_up_to_the_demanded_scope_once_when_opted_in() {
    let tokens = token_server(3600).await;
    let api = TestServer::start(|_n, seen| async move {
        match seen.authorization() {
            Some("Bearer tok-1") => http::Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header(
                    "www-authenticate",
                    r#"Bearer error="insufficient_scope", scope="files:write""#,
                )
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"more",
                )))
                .unwrap(),
            _ => text(StatusCode::OK, "written"),
        }
    })
    .await;
    let cache = TokenCache::new(ClientCredentialsGrant::new(
        TokenEndpoint::builder(tokens.url("/token"), ClientAuth::basic("app", "app-secret"))
            .scope("files:read")
            .build()
            .unwrap(),
    ));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(
            AuthMiddleware::new(cache.clone())
                .classify(tower_bearer::reject::Standard::new().step_up(true)),
        )
        .build();
    let response = client.put(api.url("/f")).body("data").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let asked: Vec<_> = tokens
        .seen()
        .iter()
        .map(|s| s.form()["scope"].clone())
        .collect();
    assert_eq!(asked, ["files:read", "files:read files:write"]);
    assert_eq!(api.seen()[1].body, "data");

    // Not opted in: the 403 comes back, with its challenges.
    let plain = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache.clone()))
        .build();
    let response = plain.put(api.url("/f")).body("data").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenges = response
        .extensions()
        .get::<tower_bearer::challenge::Challenges>()
        .expect("challenges in the extensions");
    assert_eq!(
        challenges.bearer().and_then(|b| b.scope()),
        Some("files:write")
    );
}

#[tokio::test]
async fn middleware_refuses_token_params_its_source_cannot_ask_for_with_a_typed_error() {
    let (server, _) = kit().await;
    let fixed = TokenCache::new(tower_bearer::source::StaticToken::new("k"));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(fixed))
        .build();
    let error = client
        .get(server.url("/v1"))
        .with_extension(tower_bearer::TokenParams::new().scope("admin"))
        .send()
        .await
        .unwrap_err();
    let error = token_error(error);
    assert_eq!(error.kind(), tower_bearer::ErrorKind::Unsendable);
    assert!(error.to_string().contains("TokenParams"), "{error}");
    assert_eq!(server.stats().api_requests, 0);
}
