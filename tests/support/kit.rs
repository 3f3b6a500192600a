//! Scenarios on the test kit (`tower_bearer::test_kit`), shared by the
//! tests that observe them from outside (metrics, tracing).

use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_bearer::test_kit::{Fault, TestAuthServer};
use tower_bearer::{AuthLayer, TokenCache};
use tracing::Instrument as _;

use super::http_client;

/// One call through `AuthLayer` against the test kit: a first token after a
/// 503 (transient), that token revoked, the call rejected, a new token and
/// the retry, in a span `request`.
pub async fn one_call_with_a_rejection(name: &str) -> (TestAuthServer, TokenCache) {
    let server = TestAuthServer::start().await;
    server.fail_next(Fault::Status(StatusCode::SERVICE_UNAVAILABLE));
    let cache = TokenCache::builder(server.client_credentials())
        .name(name)
        .build()
        .unwrap();
    assert_eq!(cache.token().await.unwrap().access_token().secret(), "at-1");
    server.revoke("at-1");
    let service = AuthLayer::new(cache.clone()).layer(http_client());
    let response = service
        .oneshot(
            Request::get(server.url("/v1"))
                .body(Full::default())
                .unwrap(),
        )
        .instrument(tracing::info_span!("request", path = "/v1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = server.stats();
    assert_eq!(stats.token_requests, 3, "503, at-1, at-2");
    assert_eq!((stats.api_requests, stats.api_rejections), (2, 1));
    (server, cache)
}
