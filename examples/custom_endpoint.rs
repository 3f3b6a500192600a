//! A custom, non-standard token endpoint, plugged in with a closure.
//!
//! The API in this example wants a token from `POST /auth/login` with a JSON
//! body, and answers `{access_token, refresh_token, token_type, expires_in}`.
//! Later tokens come from `POST /auth/refresh` with the refresh token. None
//! of that is OAuth2-standard, and it does not need to be: a `TokenSource`
//! is any async function from the previous token to the next one.
//!
//! ```sh
//! cargo run --example custom_endpoint
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::{AuthLayer, Error, Token, TokenCache, TokenType, source};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What the endpoint answers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

/// One token request: log in the first time, refresh after that.
async fn fetch_token(
    client: HttpClient,
    base: String,
    previous: Option<Token>,
) -> Result<Token, Error> {
    let (path, body) = match previous.as_ref().and_then(|t| t.refresh_token()) {
        Some(refresh) => (
            "/auth/refresh",
            serde_json::json!({ "refresh_token": refresh.secret() }),
        ),
        None => (
            "/auth/login",
            serde_json::json!({ "user": "demo", "password": "demo-password" }),
        ),
    };
    let req = http::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(Error::permanent)?;
    // Connection failures are worth retrying; the cache does the retrying.
    let rsp = client.request(req).await.map_err(Error::connect)?;
    let status = rsp.status();
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .map_err(Error::connect)?
        .to_bytes();
    if !status.is_success() {
        // 5xx and 429 are transient, the rest permanent.
        return Err(Error::status(status, None));
    }
    let parsed: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|_| Error::invalid_response("not a token response"))?;
    // Build the token now: `expires_in` counts from the response's arrival.
    let mut token = Token::new(parsed.access_token).with_token_type(TokenType::parse(
        parsed.token_type.as_deref().unwrap_or("bearer"),
    ));
    if let Some(seconds) = parsed.expires_in {
        token = token.with_expires_in(Duration::from_secs(seconds));
    }
    // Keep the refresh token: the new one if the server rotated it, else the old one.
    let refresh = parsed.refresh_token.or_else(|| {
        previous
            .as_ref()
            .and_then(|t| t.refresh_token())
            .map(|r| r.secret().to_owned())
    });
    if let Some(refresh) = refresh {
        token = token.with_refresh_token(refresh);
    }
    Ok(token)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let base = start_server().await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let source = {
        let (client, base) = (client.clone(), base.clone());
        source::from_fn(move |previous| fetch_token(client.clone(), base.clone(), previous))
    };
    let cache = TokenCache::builder(source)
        .leeway(Duration::from_millis(500))
        .build()?;
    let api = ServiceBuilder::new()
        .layer(AuthLayer::new(cache.clone()))
        .service(client);

    for i in 1..=6 {
        let req = http::Request::get(format!("{base}/api/me")).body(Full::default())?;
        let rsp = api.clone().oneshot(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        println!("call {i}: {status} {}", String::from_utf8_lossy(&body));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let stats = cache.stats();
    println!("custom_endpoint: token_requests={}", stats.token_requests);
    Ok(())
}

/// The non-standard auth server and its API, on 127.0.0.1.
async fn start_server() -> Result<String, BoxError> {
    let issued = Arc::new(AtomicUsize::new(0));
    let token = |kind: &'static str, issued: Arc<AtomicUsize>| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        println!("  server: {kind} → token #{n}");
        Json(serde_json::json!({
            "access_token": format!("access-{n}"),
            "refresh_token": format!("refresh-{n}"),
            "token_type": "bearer",
            "expires_in": 2,
        }))
    };
    let app = axum::Router::new()
        .route(
            "/auth/login",
            post({
                let issued = issued.clone();
                move || async move { token("login", issued) }
            }),
        )
        .route(
            "/auth/refresh",
            post({
                let issued = issued.clone();
                move || async move { token("refresh", issued) }
            }),
        )
        .route(
            "/api/me",
            get(|headers: HeaderMap| async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some(auth) if auth.starts_with("Bearer access-") => (
                        StatusCode::OK,
                        format!(
                            "hello, holder of token #{}",
                            &auth["Bearer access-".len()..]
                        ),
                    ),
                    _ => (StatusCode::UNAUTHORIZED, "who are you?".to_owned()),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
