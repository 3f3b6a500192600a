//! The test kit users point their own code at (feature `test-kit`): what
//! it scripts is what the crate's own rules meet, checked through real
//! caches, layers and tonic channels.

use std::time::Duration;

use http::StatusCode;
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::RefreshTokenGrant;
use tower_bearer::test_kit::{Fault, TestAuthServer};
use tower_bearer::{AuthLayer, ErrorKind, OAuthErrorCode, TokenCache};

fn http_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

fn get(url: String) -> http::Request<Full<bytes::Bytes>> {
    http::Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test]
async fn test_kit_rotates_refresh_tokens_and_revokes_a_grant_whose_spent_token_comes_back() {
    let server = TestAuthServer::builder()
        .user("alice", "alice-password")
        .start()
        .await;
    let grant = server.password_grant("alice", "alice-password");
    let cache = TokenCache::new(grant.clone());
    let first = cache.token().await.unwrap();
    assert_eq!(first.access_token().secret(), "at-1");
    assert_eq!(first.refresh_token().unwrap().secret(), "rt-1");
    cache.invalidate(&first);
    let second = cache.token().await.unwrap();
    assert_eq!(second.refresh_token().unwrap().secret(), "rt-2");
    let stats = server.stats();
    assert_eq!((stats.password, stats.refreshes), (1, 1));

    // The spent rt-1, sent again: invalid_grant, and the grant is revoked:
    // rt-2 and at-2 stop working too.
    let replay = TokenCache::new(RefreshTokenGrant::new(server.endpoint(), "rt-1"));
    let error = replay.token().await.unwrap_err();
    assert_eq!(
        error.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidGrant
    );
    assert_eq!(server.stats().reused_refresh_tokens, 1);
    let api = AuthLayer::new(TokenCache::new(RefreshTokenGrant::new(
        server.endpoint(),
        "rt-2",
    )))
    .layer(http_client());
    let error = api.oneshot(get(server.url("/v1"))).await.unwrap_err();
    let error = error.downcast_ref::<tower_bearer::Error>().unwrap();
    assert_eq!(
        error.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidGrant
    );

    // A wrong password is refused.
    let wrong = TokenCache::new(server.password_grant("alice", "nope"));
    assert!(wrong.token().await.unwrap_err().is_permanent());
}

#[tokio::test]
async fn test_kit_faults_are_served_in_order_and_each_is_typed_by_the_cache() {
    let server = TestAuthServer::start().await;
    let cases = [
        (
            Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Status,
            true,
        ),
        (
            Fault::TooManyRequests {
                retry_after: Duration::from_secs(2),
            },
            // `{"error":"slow_down"}` with a 429: an OAuth error, transient.
            ErrorKind::OAuth,
            true,
        ),
        (Fault::HtmlErrorPage, ErrorKind::Status, true),
        (Fault::GarbageJson, ErrorKind::InvalidResponse, false),
        (Fault::InvalidClient, ErrorKind::OAuth, false),
        (Fault::InvalidGrant, ErrorKind::OAuth, false),
    ];
    for (fault, kind, transient) in cases {
        server.fail_next(fault.clone());
        let cache = TokenCache::builder(server.client_credentials())
            .max_attempts(1)
            .build()
            .unwrap();
        let error = cache.token().await.unwrap_err();
        assert_eq!(error.kind(), kind, "{fault:?}: {error}");
        assert_eq!(error.is_transient(), transient, "{fault:?}: {error}");
        if matches!(fault, Fault::TooManyRequests { .. }) {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
        }
        assert!(!format!("{error} {error:?}").contains("at-garbage"));
    }
    // A slow answer is an answer; no answer is a timeout.
    server.fail_next(Fault::Slow(Duration::from_millis(50)));
    assert!(
        TokenCache::new(server.client_credentials())
            .token()
            .await
            .is_ok()
    );
    server.fail_next(Fault::NoAnswer);
    let cache = TokenCache::builder(server.client_credentials())
        .max_attempts(1)
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(cache.token().await.unwrap_err().kind(), ErrorKind::Timeout);
    let stats = server.stats();
    assert_eq!(stats.faults, 8);
    assert_eq!(stats.token_requests, 8);
    assert_eq!(stats.client_credentials, 1);
}

#[tokio::test]
async fn test_kit_api_refuses_a_revoked_token_and_the_layer_gets_a_new_one() {
    let server = TestAuthServer::builder()
        .lifetime(Duration::from_secs(2))
        .start()
        .await;
    let cache = TokenCache::builder(server.client_credentials())
        .no_refresh_ahead()
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let api = AuthLayer::new(cache.clone()).layer(http_client());
    let body = |response: http::Response<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt as _;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };

    let response = api
        .clone()
        .oneshot(get(server.url("/v1/me")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json = body(response).await;
    assert_eq!(json["client_id"], tower_bearer::test_kit::TEST_CLIENT_ID);
    assert_eq!(json["path"], "/v1/me");

    server.revoke("at-1");
    let response = api
        .clone()
        .oneshot(get(server.url("/v1/me")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a new token, one retry");
    assert_eq!(cache.stats().retries, 1);

    let stats = server.stats();
    assert_eq!(stats.api_rejections, 1);
    assert_eq!(stats.api_requests, 3);
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn test_kit_answers_grpc_calls_for_tonic_clients() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tower_bearer::tonic::AuthChannel;

    let server = TestAuthServer::start().await;
    let cache = TokenCache::new(server.client_credentials());
    let channel = tonic::transport::Endpoint::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(AuthChannel::new(channel, cache.clone()));
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    health.check(request()).await.expect("a good token");
    server.revoke_access_tokens();
    health
        .check(request())
        .await
        .expect("UNAUTHENTICATED, then a new token");
    assert_eq!(cache.stats().retries, 1);
    assert_eq!(server.stats().api_rejections, 1);
}

#[test]
fn test_kit_builder_debug_shows_the_client_id_and_users_but_no_secret() {
    let builder = TestAuthServer::builder()
        .client("my-client", "client-secret-1234")
        .user("alice", "alice-password-1234");
    let shown = format!("{builder:?}");
    assert!(
        shown.contains("my-client") && shown.contains("alice"),
        "{shown}"
    );
    assert!(!shown.contains("client-secret-1234"), "{shown}");
    assert!(!shown.contains("alice-password-1234"), "{shown}");
}
