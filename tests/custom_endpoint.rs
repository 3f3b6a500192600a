//! `CustomGrant`: a token endpoint with requests of its own (a JSON login, a
//! JSON refresh) gets the rules of the built-in grants (B4, B5, B8, B9).
//! Real token endpoints on loopback, tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use support::{FrozenClock, TestServer, text};
use tokio::time::advance;
use tower_bearer::oauth::{ClientAuth, CustomGrant, RequestBody, TokenEndpoint};
use tower_bearer::{ErrorKind, TokenCache};

const S: fn(u64) -> Duration = Duration::from_secs;

/// A JSON endpoint as the seed describes it: a login with username and
/// password, a refresh with `grant_type` and `refresh_token`, at one URL.
/// It rotates refresh tokens, and refuses a spent one with `refuse_with`.
struct JsonAuth {
    server: TestServer,
    /// The refresh token that may be used next.
    current: Arc<Mutex<Option<String>>>,
}

impl JsonAuth {
    async fn start(expires_in: u64, refuse_with: StatusCode) -> JsonAuth {
        let current: Arc<Mutex<Option<String>>> = Arc::default();
        let server = TestServer::start({
            let current = current.clone();
            move |n, seen| {
                let current = current.clone();
                async move {
                    let body: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
                    let mut current = current.lock().unwrap();
                    if body["grant_type"] == "refresh_token" {
                        if body["refresh_token"] != json!(current.as_deref()) {
                            *current = None;
                            return text(refuse_with, "refresh token refused");
                        }
                    } else if body["username"] != "demo" || body["password"] != "demo-password" {
                        return text(StatusCode::UNAUTHORIZED, "bad credentials");
                    }
                    *current = Some(format!("refresh-{n}"));
                    support::json(
                        StatusCode::OK,
                        json!({
                            "access_token": format!("access-{n}"),
                            "refresh_token": format!("refresh-{n}"),
                            "token_type": "bearer",
                            "expires_in": expires_in,
                        }),
                    )
                }
            }
        })
        .await;
        JsonAuth { server, current }
    }

    fn grant(&self) -> CustomGrant {
        let endpoint =
            TokenEndpoint::builder(self.server.url("/auth/token"), ClientAuth::anonymous())
                .build()
                .unwrap();
        CustomGrant::builder(endpoint, login())
            .refresh(|refresh_token| {
                RequestBody::json(json!({
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token.secret(),
                }))
            })
            .build()
    }

    /// The JSON bodies the server received.
    fn bodies(&self) -> Vec<Value> {
        self.server
            .seen()
            .iter()
            .map(|seen| serde_json::from_slice(&seen.body).unwrap())
            .collect()
    }
}

fn login() -> RequestBody {
    RequestBody::json(json!({"username": "demo", "password": "demo-password"}))
}

async fn access_token(cache: &TokenCache) -> String {
    cache
        .token()
        .await
        .unwrap()
        .access_token()
        .secret()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn b5_a_custom_endpoint_logs_in_once_then_refreshes_with_each_rotated_refresh_token() {
    let _clock = FrozenClock::freeze().await;
    let auth = JsonAuth::start(60, StatusCode::BAD_REQUEST).await;
    let grant = auth.grant();
    let cache = TokenCache::new(grant.clone());

    assert_eq!(access_token(&cache).await, "access-1");
    for n in 2..=5 {
        // Past the usable end of a 60 s token: the call waits for a refresh.
        advance(S(55)).await;
        assert_eq!(access_token(&cache).await, format!("access-{n}"));
    }

    let bodies = auth.bodies();
    assert_eq!(
        bodies[0],
        json!({"username": "demo", "password": "demo-password"})
    );
    for (n, body) in bodies.iter().enumerate().skip(1) {
        // Each refresh sends the refresh token of the one before: rotated,
        // never a spent one.
        assert_eq!(
            *body,
            json!({"grant_type": "refresh_token", "refresh_token": format!("refresh-{n}")})
        );
    }
    let seen = auth.server.seen();
    assert!(
        seen.iter()
            .all(|s| s.headers["content-type"] == "application/json"
                && !s.headers.contains_key("authorization"))
    );
    let stats = grant.stats();
    assert_eq!(
        (
            stats.primary,
            stats.refreshes,
            stats.rotations,
            stats.fallbacks
        ),
        (1, 4, 4, 0)
    );
    assert_eq!(
        grant.refresh_token().map(|r| r.secret().to_owned()),
        auth.current.lock().unwrap().clone()
    );
}

#[tokio::test(start_paused = true)]
async fn b5_a_custom_refresh_refused_with_400_or_401_falls_back_to_the_login() {
    let _clock = FrozenClock::freeze().await;
    for refused in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED] {
        let auth = JsonAuth::start(60, refused).await;
        let grant = auth.grant();
        let cache = TokenCache::new(grant.clone());
        assert_eq!(access_token(&cache).await, "access-1");
        // The server forgets the refresh token (a restart, a revocation).
        *auth.current.lock().unwrap() = None;

        advance(S(55)).await;
        // In the same attempt: the refresh is refused, the login runs.
        assert_eq!(access_token(&cache).await, "access-3");
        let bodies = auth.bodies();
        assert_eq!(bodies.len(), 3, "{refused}");
        assert_eq!(bodies[1]["refresh_token"], "refresh-1");
        assert_eq!(bodies[2]["username"], "demo");
        assert_eq!(grant.stats().fallbacks, 1);
        assert_eq!(
            cache.stats().token_requests,
            2,
            "one attempt for the refresh"
        );

        // The refused refresh token is never sent again.
        advance(S(55)).await;
        assert_eq!(access_token(&cache).await, "access-4");
        assert_eq!(auth.bodies()[3]["refresh_token"], "refresh-3");
    }
}

#[tokio::test(start_paused = true)]
async fn b4_custom_endpoint_failures_are_classified_like_any_token_endpoints() {
    let _clock = FrozenClock::freeze().await;
    // Two 503s, then a token: transient, retried by the cache.
    let server = TestServer::start(|n, _| async move {
        if n < 3 {
            text(StatusCode::SERVICE_UNAVAILABLE, "<html>busy</html>")
        } else {
            support::token_json("access-3", 3600)
        }
    })
    .await;
    let endpoint = TokenEndpoint::builder(server.url("/login"), ClientAuth::anonymous())
        .build()
        .unwrap();
    let cache = TokenCache::builder(CustomGrant::builder(endpoint, login()).build())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(access_token(&cache).await, "access-3");
    assert_eq!(server.requests(), 3);

    // Bad credentials: permanent, one request, a typed error.
    let auth = JsonAuth::start(60, StatusCode::BAD_REQUEST).await;
    let endpoint = TokenEndpoint::builder(auth.server.url("/auth/token"), ClientAuth::anonymous())
        .build()
        .unwrap();
    let wrong = RequestBody::json(json!({"username": "demo", "password": "wrong"}));
    let cache = TokenCache::new(CustomGrant::builder(endpoint, wrong).build());
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Status);
    assert_eq!(error.http_status(), Some(StatusCode::UNAUTHORIZED));
    assert!(error.is_permanent());
    assert_eq!(auth.server.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn b8_no_string_of_a_custom_login_reaches_errors_or_debug_output() {
    let _clock = FrozenClock::freeze().await;
    // An error page that quotes the request back.
    let server = TestServer::start(|_, seen| async move {
        let echoed = String::from_utf8_lossy(&seen.body).into_owned();
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("<html><title>failed: {echoed}</title></html>"),
        )
    })
    .await;
    let endpoint = TokenEndpoint::builder(server.url("/login"), ClientAuth::anonymous())
        .build()
        .unwrap();
    let login = RequestBody::json(json!({"username": "demo", "password": "hunter2-secret"}));
    let builder = CustomGrant::builder(endpoint, login);
    assert!(!format!("{builder:?}").contains("hunter2"));
    let grant = builder.build();
    assert!(!format!("{grant:?}").contains("hunter2"));
    let cache = TokenCache::builder(grant).max_attempts(1).build().unwrap();
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.http_status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_custom_endpoint_may_name_its_fields_and_take_a_form_and_client_credentials() {
    let _clock = FrozenClock::freeze().await;
    let server = TestServer::start(|_, _| async move {
        support::json(
            StatusCode::OK,
            json!({"token": "t0k3n", "ttl": "120", "renew": "r3n3w"}),
        )
    })
    .await;
    let endpoint = TokenEndpoint::builder(
        server.url("/session"),
        ClientAuth::post("my-app", "app-secret"),
    )
    .build()
    .unwrap();
    let grant = CustomGrant::builder(
        endpoint,
        RequestBody::form([("user", "demo"), ("pass", "pw")]),
    )
    .access_token_field("token")
    .expires_in_field("ttl")
    .refresh_token_field("renew")
    .build();
    let token = TokenCache::new(grant).token().await.unwrap();
    assert_eq!(token.access_token().secret(), "t0k3n");
    assert_eq!(token.refresh_token().unwrap().secret(), "r3n3w");
    assert_eq!(
        token.expires_at(),
        Some(token.issued_at() + Duration::from_secs(120))
    );
    let seen = &server.seen()[0];
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let form = seen.form();
    assert_eq!(form["user"], "demo");
    assert_eq!(form["client_id"], "my-app");
    assert_eq!(form["client_secret"], "app-secret");

    // A JSON body gets the client's fields too; Basic adds its header.
    for (auth, field) in [
        (ClientAuth::post("my-app", "app-secret"), true),
        (ClientAuth::basic("my-app", "app-secret"), false),
    ] {
        let server = TestServer::start(|_, _| async { support::token_json("t", 60) }).await;
        let endpoint = TokenEndpoint::builder(server.url("/login"), auth)
            .build()
            .unwrap();
        TokenCache::new(CustomGrant::builder(endpoint, login()).build())
            .token()
            .await
            .unwrap();
        let seen = &server.seen()[0];
        let body: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body["username"], "demo");
        assert_eq!(body.get("client_id").is_some(), field);
        assert_eq!(seen.headers.contains_key("authorization"), !field);
    }
}

#[tokio::test]
async fn b9_a_custom_endpoint_follows_the_transport_rules() {
    let error = TokenEndpoint::builder("http://auth.example/login", ClientAuth::anonymous())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("https"), "{error}");
}
