//! The OAuth2 grants against in-process token endpoints: failure
//! classification and retries (B4), refresh tokens (B5), transport safety
//! (B9), client authentication on the wire, odd responses, and property
//! tests of the response parser.
#![cfg(feature = "hyper-client")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use support::{FrozenClock, TestServer, api_server, http_client, json, settle_until, text};
use tokio::time::advance;
use tower::{Service, ServiceExt};
use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, MAX_EXPIRES_IN, PasswordGrant, RefreshTokenGrant,
    TokenEndpoint, TokenEndpointBuilder,
};
use tower_bearer::source::BoxFuture;
use tower_bearer::{AuthLayer, Error, ErrorKind, OAuthErrorCode, Token, TokenCache, TokenSource};

const MS: fn(u64) -> Duration = Duration::from_millis;

// === fixtures ===

fn endpoint(server: &TestServer, auth: ClientAuth) -> TokenEndpointBuilder {
    TokenEndpoint::builder(server.url("/token"), auth)
}

fn client_credentials(server: &TestServer) -> ClientCredentialsGrant {
    ClientCredentialsGrant::new(
        endpoint(server, ClientAuth::basic("client", "client-secret"))
            .build()
            .unwrap(),
    )
}

fn password(server: &TestServer) -> PasswordGrant {
    PasswordGrant::new(
        endpoint(server, ClientAuth::basic("client", "client-secret"))
            .build()
            .unwrap(),
        "alice",
        "alice-password",
    )
}

/// A token response with extra members.
fn token_with(access_token: &str, extra: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = json!({"access_token": access_token, "token_type": "Bearer"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    json(StatusCode::OK, body)
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json(
        status,
        json!({"error": code, "error_description": "grant request is invalid"}),
    )
}

/// A token source that counts the attempts that have *finished*, so a
/// test can wait for the cache to have seen a failure (and started its
/// backoff) before it moves the frozen clock.
#[derive(Clone)]
struct Observed<S> {
    inner: S,
    finished: Arc<AtomicUsize>,
}

impl<S> Observed<S> {
    fn new(inner: S) -> Self {
        Observed {
            inner,
            finished: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
}

impl<S: TokenSource> TokenSource for Observed<S> {
    fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let result = self.inner.fetch(previous).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            result
        })
    }
}

/// The form parameters of every request the server saw.
fn forms(server: &TestServer) -> Vec<std::collections::HashMap<String, String>> {
    server.seen().iter().map(|s| s.form()).collect()
}

// === B4: failures and retries ===

#[tokio::test(start_paused = true)]
async fn b4_two_503s_then_200_succeed_after_three_requests() {
    let _clock = FrozenClock::freeze().await;
    let server = TestServer::start(|n, _| async move {
        if n <= 2 {
            text(StatusCode::SERVICE_UNAVAILABLE, "busy")
        } else {
            support::token_json("tok", 3600)
        }
    })
    .await;
    let source = Observed::new(client_credentials(&server));
    let cache = TokenCache::builder(source.clone())
        .backoff(MS(100), MS(400))
        .build()
        .unwrap();
    let waiting = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });

    settle_until(|| source.finished() == 1).await;
    advance(MS(100)).await; // the first backoff is at most 100 ms
    settle_until(|| source.finished() == 2).await;
    advance(MS(200)).await; // the second at most 200 ms
    let token = waiting.await.unwrap().unwrap();

    assert_eq!(token.access_token().secret(), "tok");
    assert_eq!(server.requests(), 3);
    assert_eq!(cache.stats().token_requests, 3);
}

#[tokio::test(start_paused = true)]
async fn b4_429_with_retry_after_2s_delays_the_next_attempt_by_2s() {
    let _clock = FrozenClock::freeze().await;
    let server = TestServer::start(|n, _| async move {
        if n == 1 {
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "2")
                .body(Full::default())
                .unwrap()
        } else {
            support::token_json("tok", 3600)
        }
    })
    .await;
    let source = Observed::new(client_credentials(&server));
    let cache = TokenCache::new(source.clone());
    let waiting = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });

    settle_until(|| source.finished() == 1).await;
    advance(MS(1999)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    // The cache counts an attempt as it starts it, in the poll in which its
    // backoff timer fires: unlike the server's count, this needs no I/O to
    // show an early retry.
    assert_eq!(
        cache.stats().token_requests,
        1,
        "retried before Retry-After passed"
    );
    assert!(!waiting.is_finished());

    advance(MS(1)).await;
    settle_until(|| server.requests() == 2).await;
    let token = waiting.await.unwrap().unwrap();
    assert_eq!(token.access_token().secret(), "tok");
}

#[tokio::test]
async fn b4_invalid_client_is_a_typed_error_after_exactly_one_request() {
    let server = TestServer::start(|_, _| async {
        json(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        )
    })
    .await;
    let grant = client_credentials(&server);
    let cache = TokenCache::new(grant.clone());

    let err = cache.token().await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::OAuth);
    let oauth = err.oauth_error().unwrap();
    assert_eq!(oauth.code(), &OAuthErrorCode::InvalidClient);
    assert_eq!(oauth.description(), Some("client authentication failed"));
    assert_eq!(oauth.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(err.is_permanent());
    assert_eq!(server.requests(), 1);
    assert_eq!(grant.stats().requests, 1);
}

#[tokio::test]
async fn b4_permanent_oauth_errors_are_not_retried() {
    for code in [
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    ] {
        let server =
            TestServer::start(
                move |_, _| async move { oauth_error(StatusCode::BAD_REQUEST, code) },
            )
            .await;
        let cache = TokenCache::new(client_credentials(&server));
        let err = cache.token().await.unwrap_err();
        assert_eq!(err.oauth_error().unwrap().code().as_str(), code);
        assert!(err.is_permanent(), "{code}");
        assert_eq!(server.requests(), 1, "{code}");
    }
}

#[tokio::test]
async fn b4_refused_connection_is_a_transient_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(url, ClientAuth::basic("c", "s"))
            .build()
            .unwrap(),
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
}

#[tokio::test(start_paused = true)]
async fn b4_endpoint_timeout_is_a_transient_timeout_error() {
    let _clock = FrozenClock::freeze().await;
    let server = TestServer::start(|_, _| std::future::pending()).await;
    let grant = ClientCredentialsGrant::new(
        endpoint(&server, ClientAuth::basic("c", "s"))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let attempt = tokio::spawn(async move { grant.fetch(None).await });
    settle_until(|| server.requests() == 1).await;
    advance(Duration::from_secs(5)).await;
    let err = attempt.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());
}

// === odd responses: each a typed outcome ===

#[tokio::test]
async fn html_502_page_is_a_transient_status_error_quoting_only_its_title() {
    let server = TestServer::start(|_, _| async {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(
                b"<html><head><title>502 Bad Gateway</title></head>\
                  <body><pre>upstream sent client-secret</pre></body></html>",
            )))
            .unwrap()
    })
    .await;
    let err = client_credentials(&server).fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.http_status(), Some(StatusCode::BAD_GATEWAY));
    assert!(err.is_transient());
    let message = err.to_string();
    assert!(message.contains("\"502 Bad Gateway\""), "{message}");
    assert!(!message.contains("client-secret"), "{message}");
    assert!(!message.contains("<pre>"), "{message}");
}

#[tokio::test]
async fn truncated_json_is_a_permanent_invalid_response() {
    let server = TestServer::start(|_, _| async {
        json_text(StatusCode::OK, r#"{"access_token":"abc","expires_in":36"#)
    })
    .await;
    let err = client_credentials(&server).fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(err.is_permanent());
}

fn json_text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn b9_ten_mib_response_is_refused_as_too_large() {
    let server = TestServer::start(|_, _| async {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(vec![b' '; 10 * 1024 * 1024])))
            .unwrap()
    })
    .await;
    let err = client_credentials(&server).fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
    assert!(err.to_string().contains("65536"), "{err}");
}

#[tokio::test]
async fn b1_expires_in_as_the_string_3600_is_one_hour() {
    let server =
        TestServer::start(|_, _| async { token_with("tok", json!({"expires_in": "3600"})) }).await;
    let token = client_credentials(&server).fetch(None).await.unwrap();
    assert_eq!(
        token.expires_at(),
        Some(token.issued_at() + Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn b1_expires_in_1e30_is_capped_to_one_year() {
    let server =
        TestServer::start(|_, _| async { token_with("tok", json!({"expires_in": 1e30})) }).await;
    let token = client_credentials(&server).fetch(None).await.unwrap();
    assert_eq!(token.expires_at(), Some(token.issued_at() + MAX_EXPIRES_IN));
    assert_eq!(MAX_EXPIRES_IN, Duration::from_secs(365 * 24 * 3600));
}

#[tokio::test]
async fn b1_expires_in_zero_or_negative_is_used_once_then_refetched() {
    for expires_in in [json!(0), json!(-5), json!("-5")] {
        let server = TestServer::start(move |n, _| {
            let expires_in = expires_in.clone();
            async move { token_with(&format!("tok-{n}"), json!({ "expires_in": expires_in })) }
        })
        .await;
        let cache = TokenCache::new(client_credentials(&server));
        let first = cache.token().await.unwrap();
        assert_eq!(first.expires_at(), Some(first.issued_at()));
        assert_eq!(first.access_token().secret(), "tok-1");
        let second = cache.token().await.unwrap();
        assert_eq!(second.access_token().secret(), "tok-2");
        assert_eq!(server.requests(), 2);
    }
}

#[tokio::test]
async fn missing_access_token_is_a_permanent_invalid_response() {
    let server = TestServer::start(|_, _| async {
        json(
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3600}),
        )
    })
    .await;
    let cache = TokenCache::new(client_credentials(&server));
    let err = cache.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(err.to_string().contains("access_token"), "{err}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn mac_token_type_is_refused_as_unsupported() {
    let server = TestServer::start(|_, _| async {
        json(
            StatusCode::OK,
            json!({"access_token": "tok", "token_type": "mac", "mac_key": "k"}),
        )
    })
    .await;
    let err = client_credentials(&server).fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(err.is_permanent());
    assert!(err.to_string().contains("unsupported token type"), "{err}");
}

#[tokio::test]
async fn a_200_carrying_error_is_an_oauth_error() {
    let server =
        TestServer::start(|_, _| async { oauth_error(StatusCode::OK, "invalid_scope") }).await;
    let err = client_credentials(&server).fetch(None).await.unwrap_err();
    assert_eq!(
        err.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidScope
    );
    assert_eq!(err.http_status(), Some(StatusCode::OK));
}

#[tokio::test]
async fn b9_redirects_are_not_followed() {
    let server = TestServer::start(|n, _| async move {
        if n == 1 {
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", "/elsewhere")
                .body(Full::default())
                .unwrap()
        } else {
            support::token_json("tok", 3600)
        }
    })
    .await;
    let cache = TokenCache::new(client_credentials(&server));
    let err = cache.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.http_status(), Some(StatusCode::FOUND));
    assert!(err.is_permanent());
    assert_eq!(server.requests(), 1);
}

// === the request on the wire ===

#[tokio::test]
async fn client_secret_basic_sends_form_encoded_credentials_in_the_header_only() {
    let server = TestServer::start(|_, _| async { support::token_json("tok", 60) }).await;
    let secret = "s3cr3t with space:colon/slash+plus%percent&amp=eq";
    let grant = ClientCredentialsGrant::new(
        endpoint(&server, ClientAuth::basic("peer special:client", secret))
            .build()
            .unwrap(),
    );
    grant.fetch(None).await.unwrap();

    let seen = &server.seen()[0];
    let encoded = seen
        .authorization()
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "peer%20special%3Aclient:s3cr3t%20with%20space%3Acolon%2Fslash%2Bplus%25percent%26amp%3Deq"
    );
    let form = seen.form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert!(!form.contains_key("client_id"));
    assert!(!form.contains_key("client_secret"));
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test]
async fn client_secret_post_and_none_send_the_client_in_the_body() {
    let server = TestServer::start(|_, _| async { support::token_json("tok", 60) }).await;
    for (auth, secret) in [
        (ClientAuth::post("app", "p+ss word"), Some("p+ss word")),
        (ClientAuth::none("app"), None),
    ] {
        ClientCredentialsGrant::new(endpoint(&server, auth).build().unwrap())
            .fetch(None)
            .await
            .unwrap();
        let seen = server.seen().pop().unwrap();
        assert!(seen.authorization().is_none());
        let form = seen.form();
        assert_eq!(form["client_id"], "app");
        assert_eq!(form.get("client_secret").map(String::as_str), secret);
    }
}

#[tokio::test]
async fn scope_audience_and_repeated_resources_are_sent_with_the_primary_grant() {
    let server = TestServer::start(|_, _| async { support::token_json("tok", 60) }).await;
    let grant = ClientCredentialsGrant::new(
        endpoint(&server, ClientAuth::basic("c", "s"))
            .scope("api:read api:write")
            .audience("https://api.example")
            .resource("urn:a")
            .resource("urn:b")
            .build()
            .unwrap(),
    );
    grant.fetch(None).await.unwrap();
    let body = String::from_utf8(server.seen()[0].body.to_vec()).unwrap();
    assert_eq!(
        body,
        "grant_type=client_credentials&scope=api%3Aread+api%3Awrite\
         &audience=https%3A%2F%2Fapi.example&resource=urn%3Aa&resource=urn%3Ab"
    );
}

#[tokio::test]
async fn password_grant_sends_username_and_password() {
    let server = TestServer::start(|_, _| async { support::token_json("tok", 60) }).await;
    password(&server).fetch(None).await.unwrap();
    let form = &forms(&server)[0];
    assert_eq!(form["grant_type"], "password");
    assert_eq!(form["username"], "alice");
    assert_eq!(form["password"], "alice-password");
}

// === B5: refresh tokens ===

/// A token endpoint that issues `at-n`, and with each response the refresh
/// token `rotate(n)` says (none for `None`). A refresh with a token listed
/// in `refuse` gets `invalid_grant`.
async fn refreshing_server(
    rotate: fn(usize, &str) -> Option<String>,
    refuse: &'static [&'static str],
) -> TestServer {
    TestServer::start(move |n, seen| async move {
        let form = seen.form();
        let grant = form.get("grant_type").cloned().unwrap_or_default();
        if grant == "refresh_token" && refuse.contains(&form["refresh_token"].as_str()) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        let mut extra = json!({"expires_in": 3600});
        if let Some(rt) = rotate(n, &grant) {
            extra["refresh_token"] = json!(rt);
        }
        token_with(&format!("at-{n}"), extra)
    })
    .await
}

/// Forces the next `token()` to refresh, as a 401 would. Then lets the
/// rejection throttle pass: a token from a refresh that a rejection caused,
/// rejected in its turn, is replaced only after a cooldown of at most 1 s
/// at first (B6). Needs the paused, frozen clock.
async fn refresh(cache: &TokenCache) -> Result<Token, Error> {
    let current = cache.token().await?;
    assert!(cache.invalidate(&current));
    tokio::time::advance(Duration::from_secs(1)).await;
    cache.token().await
}

#[tokio::test(start_paused = true)]
async fn b5_rotated_refresh_token_replaces_the_old_one() {
    let _clock = FrozenClock::freeze().await;
    let server = refreshing_server(|n, _| Some(format!("rt-{n}")), &[]).await;
    let grant = client_credentials(&server);
    let cache = TokenCache::new(grant.clone());

    let first = cache.token().await.unwrap();
    assert_eq!(first.refresh_token().unwrap().secret(), "rt-1");
    let second = refresh(&cache).await.unwrap();
    assert_eq!(second.refresh_token().unwrap().secret(), "rt-2");
    let third = refresh(&cache).await.unwrap();
    assert_eq!(third.access_token().secret(), "at-3");

    let sent: Vec<_> = forms(&server)
        .iter()
        .map(|f| (f["grant_type"].clone(), f.get("refresh_token").cloned()))
        .collect();
    assert_eq!(
        sent,
        [
            ("client_credentials".to_owned(), None),
            ("refresh_token".to_owned(), Some("rt-1".to_owned())),
            ("refresh_token".to_owned(), Some("rt-2".to_owned())),
        ]
    );
    assert_eq!(grant.refresh_token().unwrap().secret(), "rt-3");
    let stats = grant.stats();
    assert_eq!((stats.primary, stats.refreshes, stats.rotations), (1, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn b5_response_without_refresh_token_keeps_the_old_one() {
    let _clock = FrozenClock::freeze().await;
    let server = refreshing_server(
        |_, grant| (grant == "password").then(|| "rt-only".to_owned()),
        &[],
    )
    .await;
    let grant = password(&server);
    let cache = TokenCache::new(grant.clone());

    cache.token().await.unwrap();
    let second = refresh(&cache).await.unwrap();
    // The token the cache holds carries the old refresh token (RFC 6749 §6).
    assert_eq!(second.refresh_token().unwrap().secret(), "rt-only");
    refresh(&cache).await.unwrap();

    let sent: Vec<_> = forms(&server)
        .iter()
        .map(|f| f.get("refresh_token").cloned())
        .collect();
    assert_eq!(
        sent,
        [None, Some("rt-only".to_owned()), Some("rt-only".to_owned())]
    );
    assert_eq!(grant.stats().rotations, 0);
}

#[tokio::test(start_paused = true)]
async fn b5_invalid_grant_on_refresh_falls_back_to_the_primary_grant() {
    let _clock = FrozenClock::freeze().await;
    let server = refreshing_server(|n, _| Some(format!("rt-{n}")), &["rt-1"]).await;
    let grant = password(&server);
    let cache = TokenCache::new(grant.clone());

    cache.token().await.unwrap();
    let after = refresh(&cache).await.unwrap();

    // One attempt for the cache: a refused refresh, then the password grant.
    assert_eq!(after.access_token().secret(), "at-3");
    assert_eq!(after.refresh_token().unwrap().secret(), "rt-3");
    let grants: Vec<_> = forms(&server)
        .iter()
        .map(|f| f["grant_type"].clone())
        .collect();
    assert_eq!(grants, ["password", "refresh_token", "password"]);
    assert_eq!(cache.stats().token_requests, 2);
    assert_eq!(grant.stats().fallbacks, 1);
}

#[tokio::test]
async fn b5_refresh_token_grant_reports_invalid_grant_and_stops_asking() {
    let server = refreshing_server(|_, _| None, &["rt-0"]).await;
    let grant = RefreshTokenGrant::new(
        endpoint(&server, ClientAuth::none("cli")).build().unwrap(),
        "rt-0",
    );
    let cache = TokenCache::new(grant.clone());

    let err = cache.token().await.unwrap_err();
    assert_eq!(
        err.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidGrant
    );
    assert!(err.is_permanent());
    assert!(grant.refresh_token().is_none());

    // Later attempts get the same error without a request.
    let again = grant.fetch(None).await.unwrap_err();
    assert_eq!(
        again.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidGrant
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn b5_refresh_token_grant_refreshes_from_the_given_token() {
    let _clock = FrozenClock::freeze().await;
    let server = refreshing_server(|n, _| Some(format!("rt-{n}")), &[]).await;
    let grant = RefreshTokenGrant::new(
        endpoint(&server, ClientAuth::none("cli")).build().unwrap(),
        "rt-0",
    );
    let cache = TokenCache::new(grant.clone());
    cache.token().await.unwrap();
    refresh(&cache).await.unwrap();
    let sent: Vec<_> = forms(&server)
        .iter()
        .map(|f| f["refresh_token"].clone())
        .collect();
    assert_eq!(sent, ["rt-0", "rt-1"]);
    assert_eq!(forms(&server)[0]["client_id"], "cli");
}

#[tokio::test]
async fn b5_a_rotated_or_refused_refresh_token_is_never_sent_again() {
    // Only the first client_credentials response and refreshes carry a
    // refresh token; rt-2 is refused.
    let server = refreshing_server(
        |n, grant| (grant != "client_credentials" || n == 1).then(|| format!("rt-{n}")),
        &["rt-2"],
    )
    .await;
    let grant = client_credentials(&server);

    // client_credentials → rt-1; refresh with rt-1 → rt-2, and rt-1 is spent.
    let first = grant.fetch(None).await.unwrap();
    let second = grant.fetch(Some(&first)).await.unwrap();
    assert_eq!(second.refresh_token().unwrap().secret(), "rt-2");
    // Handed the older token again, the grant still sends rt-2, not rt-1;
    // rt-2 is refused, and client credentials follow in the same attempt.
    grant.fetch(Some(&first)).await.unwrap();
    assert!(grant.refresh_token().is_none());
    // Tokens carrying rt-1 or rt-2 no longer make the grant send them.
    grant.fetch(Some(&second)).await.unwrap();
    grant.fetch(Some(&first)).await.unwrap();

    let sent: Vec<_> = forms(&server)
        .iter()
        .map(|f| (f["grant_type"].clone(), f.get("refresh_token").cloned()))
        .collect();
    let rt = |s: &str| ("refresh_token".to_owned(), Some(s.to_owned()));
    let cc = || ("client_credentials".to_owned(), None);
    assert_eq!(sent, [cc(), rt("rt-1"), rt("rt-2"), cc(), cc(), cc()]);
    assert_eq!(grant.stats().fallbacks, 1);
}

#[tokio::test]
async fn b5_refresh_token_of_a_restored_token_is_used_when_the_grant_has_none() {
    let server = refreshing_server(|n, _| Some(format!("rt-{n}")), &[]).await;
    let grant = password(&server);
    let restored = Token::new("old").with_refresh_token("stored-rt");
    grant.fetch(Some(&restored)).await.unwrap();
    let form = &forms(&server)[0];
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "stored-rt");
}

// === through AuthLayer ===

#[tokio::test]
async fn client_credentials_token_reaches_the_api_through_auth_layer() {
    let tokens =
        TestServer::start(|n, _| async move { support::token_json(&format!("tok-{n}"), 3600) })
            .await;
    let api = api_server(|t| t == "tok-1").await;
    let grant = client_credentials(&tokens);
    let mut client = tower::Layer::layer(
        &AuthLayer::new(TokenCache::new(grant.clone())),
        http_client(),
    );
    for _ in 0..3 {
        let rsp = client
            .ready()
            .await
            .unwrap()
            .call(
                Request::get(api.url("/read"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    assert_eq!(grant.stats().requests, 1);
}

// === transport replacement ===

#[tokio::test]
async fn any_tower_service_can_be_the_transport() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = tower::service_fn({
        let calls = calls.clone();
        move |req: Request<Full<Bytes>>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                assert_eq!(req.uri(), "https://idp.example/token");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"grant_type=client_credentials");
                Ok::<_, std::convert::Infallible>(support::token_json("via-custom", 60))
            }
        }
    });
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder("https://idp.example/token", ClientAuth::basic("c", "s"))
            .transport(transport)
            .build()
            .unwrap(),
    );
    let token = grant.fetch(None).await.unwrap();
    assert_eq!(token.access_token().secret(), "via-custom");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transport_errors_are_transient_connect_errors() {
    let transport = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("proxy refused"))
    });
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder("https://idp.example/token", ClientAuth::basic("c", "s"))
            .transport(transport)
            .build()
            .unwrap(),
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
}

// === property tests of the response parser ===

mod parser_properties {
    use http::{HeaderMap, HeaderValue, StatusCode};
    use proptest::prelude::*;
    use serde_json::Value;
    use tower_bearer::oauth::parse_token_response;

    fn status() -> impl Strategy<Value = StatusCode> {
        prop::sample::select(vec![
            200u16, 201, 204, 301, 302, 400, 401, 403, 429, 500, 502, 503,
        ])
        .prop_map(|s| StatusCode::from_u16(s).unwrap())
    }

    fn headers() -> impl Strategy<Value = HeaderMap> {
        (
            prop::option::of(prop_oneof![
                Just("text/html".to_owned()),
                Just("text/plain; charset=utf-8".to_owned()),
                Just("application/json".to_owned()),
                "[ -~]{0,60}",
            ]),
            prop::option::of(prop_oneof![
                Just("2".to_owned()),
                Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
                "[ -~]{0,30}",
            ]),
        )
            .prop_map(|(content_type, retry_after)| {
                let mut headers = HeaderMap::new();
                for (name, value) in [("content-type", content_type), ("retry-after", retry_after)]
                {
                    if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        headers.insert(name, v);
                    }
                }
                headers
            })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "scope",
                "error",
                "error_description",
                "error_uri",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{1,12}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop::sample::select(vec![
                "bearer",
                "BEARER",
                "mac",
                "DPoP",
                "3600",
                "-5",
                "0",
                "1e30",
                "inf",
                "NaN",
                "",
                "invalid_grant",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn token_like_object() -> impl Strategy<Value = Value> {
        prop::collection::vec((key(), json_value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }

    fn check(status: StatusCode, headers: &HeaderMap, body: &[u8]) {
        match parse_token_response(status, headers, body) {
            Ok(token) => {
                assert!(status.is_success(), "a token from a {status}");
                assert!(!token.access_token().secret().is_empty());
                if let Some(at) = token.expires_at() {
                    assert!(at - token.issued_at() <= tower_bearer::oauth::MAX_EXPIRES_IN);
                }
            }
            Err(error) => {
                assert!(error.to_string().len() < 700, "{error}");
            }
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(
            status in status(),
            headers in headers(),
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            check(status, &headers, &body);
        }

        #[test]
        fn parser_never_panics_on_arbitrary_json(
            status in status(),
            headers in headers(),
            value in prop_oneof![json_value(), token_like_object()],
        ) {
            check(status, &headers, value.to_string().as_bytes());
        }

        #[test]
        fn parser_accepts_any_bearer_token_with_any_expires_in(
            access_token in "[!-~]{1,64}",
            expires_in in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ) {
            let body = serde_json::json!({
                "access_token": access_token, "token_type": "bearer", "expires_in": expires_in,
            });
            let token = parse_token_response(StatusCode::OK, &HeaderMap::new(), body.to_string().as_bytes())
                .unwrap();
            prop_assert_eq!(token.access_token().secret(), access_token.as_str());
            prop_assert!(token.expires_at().is_some());
        }
    }
}

// === the built-in HTTPS transport ===

/// The TLS client is built with the ring provider passed explicitly: no
/// process-default provider is installed in this test binary, and a
/// rustls that fell back to it would panic. A plain-HTTP server cannot
/// complete the handshake, so the attempt is a transient connect error.
#[cfg(feature = "https")]
#[tokio::test]
async fn b9_https_endpoint_runs_through_rustls_with_an_explicit_provider() {
    let server = TestServer::start(|_, _| async { support::token_json("tok", 60) }).await;
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(
            format!("https://{}/token", server.addr),
            ClientAuth::basic("c", "s"),
        )
        .build()
        .unwrap(),
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
}
