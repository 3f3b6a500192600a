//! B8: no access token, refresh token or client secret reaches `Debug`,
//! `Display`, an error or a log line, through a full refresh cycle.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::{FrozenClock, TestServer, http_client, json, settle_until};
use tower::{Layer, ServiceExt};
use tower_bearer::{AuthLayer, Error, Token, TokenCache, source};

/// Every secret in this test contains this marker.
const MARKER: &str = "sekrit";
const CLIENT_SECRET: &str = "sekrit-client-secret";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn b8_no_secret_in_debug_display_errors_or_logs_through_a_refresh_cycle() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let _clock = FrozenClock::freeze().await;

    // Token endpoint: checks the client secret; answers 503 on request 3,
    // tokens otherwise, each with a refresh token.
    let tokens = TestServer::start(|n, seen| async move {
        assert_eq!(
            seen.form().get("client_secret").map(String::as_str),
            Some(CLIENT_SECRET)
        );
        if n == 3 {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "temporarily_unavailable"}),
            );
        }
        json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": format!("sekrit-access-{n}"),
                "refresh_token": format!("sekrit-refresh-{n}"),
                "token_type": "Bearer",
                "expires_in": 100,
            }),
        )
    })
    .await;
    // The API rejects the first token.
    let api = support::api_server(|token| token != "sekrit-access-1").await;

    let client = http_client();
    let url = tokens.url("/token");
    let source = source::from_fn(move |previous: Option<Token>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut form = format!("grant_type=client_credentials&client_secret={CLIENT_SECRET}");
            if let Some(rt) = previous.as_ref().and_then(|t| t.refresh_token()) {
                form = format!(
                    "grant_type=refresh_token&refresh_token={}&client_secret={CLIENT_SECRET}",
                    rt.secret()
                );
            }
            let rsp = client
                .request(
                    Request::post(url)
                        .body(Full::new(Bytes::from(form)))
                        .unwrap(),
                )
                .await
                .map_err(Error::connect)?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(Error::connect)?
                .to_bytes();
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| Error::invalid_response("not json"))?;
            if !status.is_success() {
                return Err(Error::status(status, None));
            }
            Ok(Token::new(value["access_token"].as_str().unwrap())
                .with_refresh_token(value["refresh_token"].as_str().unwrap())
                .with_expires_in(Duration::from_secs(100)))
        }
    });
    let cache = TokenCache::builder(source)
        .leeway(Duration::from_secs(10))
        .max_attempts(2)
        .build()
        .unwrap();
    let layer = AuthLayer::new(cache.clone());
    let service = layer.layer(http_client());

    // Cold fetch, 401 → refresh → retry.
    let rsp = service
        .clone()
        .oneshot(Request::get(api.url("/")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    // Stale: the background refresh fails once (503), then succeeds.
    tokio::time::advance(Duration::from_secs(80)).await;
    let _ = service
        .clone()
        .oneshot(Request::get(api.url("/")).body(Full::default()).unwrap())
        .await
        .unwrap();
    settle_until(|| cache.stats().failed_token_requests == 1).await;
    tokio::time::advance(Duration::from_millis(100)).await;
    settle_until(|| tokens.requests() == 4).await;
    settle_until(|| support::cached_token(&cache).as_deref() == Some("sekrit-access-4")).await;

    // Every value a user might print.
    let token = cache.token().await.unwrap();
    let failure = Error::status(StatusCode::BAD_GATEWAY, None);
    let printed = [
        format!("{token:?}"),
        format!("{:?}", token.access_token()),
        format!("{:?}", token.refresh_token()),
        format!("{cache:?}"),
        format!("{layer:?}"),
        format!("{service:?}"),
        format!("{:?}", cache.header_value().await.unwrap()),
        format!("{failure:?} {failure}"),
    ];
    for text in &printed {
        assert!(!text.contains(MARKER), "a secret was printed: {text}");
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token refresh started"),
        "the logs were captured: {logs}"
    );
    assert!(logs.contains("token refreshed"), "{logs}");
    assert!(logs.contains("token request failed"), "{logs}");
    assert!(!logs.contains(MARKER), "a secret was logged:\n{logs}");
}
