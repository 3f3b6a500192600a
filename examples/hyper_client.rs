//! tower-bearer over a hyper-util client: `Full<Bytes>` bodies, and a
//! streaming body made replayable with `ReplayBodyLayer`.
//!
//! Runs with no setup: it starts a token endpoint and an API on loopback. The
//! API rejects the first token, so the first call shows 401 → refresh →
//! retry.
//!
//! ```text
//! cargo run --example hyper_client
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use http::Request;
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::body::{ReplayBody, ReplayBodyLayer};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, BoxError, ConfigError, TokenCache};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tokens = serve(token_endpoint()).await;
    let api = serve(Router::new().route("/v1/echo", post(echo))).await;
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token"))?);

    // 1. A hyper-util client with buffered bodies: `Full<Bytes>` is copied
    //    (a reference count) before it is sent, for the one retry.
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api_client = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .layer(AuthLayer::new(cache.clone()))
        .service(client);
    for body in [r#"{"n": 1}"#, r#"{"n": 2}"#] {
        say(&format!("client: POST /v1/echo {body}"));
        let request = Request::post(format!("http://{api}/v1/echo")).body(Full::from(body))?;
        let response = api_client.clone().oneshot(request).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        say(&format!(
            "client: {status} {}",
            String::from_utf8_lossy(&text)
        ));
    }

    // 2. A streaming body: chunks produced while the request is sent. The
    //    ReplayBodyLayer records them (up to 64 KiB) so the retry can send
    //    them again. A fresh cache, so this one starts with a rejected token.
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token"))?);
    let client: Client<HttpConnector, ReplayBody<Channel<Bytes, BoxError>>> =
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(AuthLayer::new(cache.clone()))
        .service(client);
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        for chunk in ["streamed ", "in ", "three chunks"] {
            let _ = tx.send_data(Bytes::from_static(chunk.as_bytes())).await;
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-chunks", http::HeaderValue::from_static("3"));
        let _ = tx.send_trailers(trailers).await;
    });
    say("client: POST /v1/echo (streaming body, HTTP/2, with trailers)");
    let response = api_client
        .oneshot(Request::post(format!("http://{api}/v1/echo")).body(body)?)
        .await?;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    say(&format!(
        "client: {status} {}",
        String::from_utf8_lossy(&text)
    ));
    say(&format!("cache: {:?}", cache.stats()));
    Ok(())
}

/// The API: echoes the body; rejects `tok-1` and `tok-3`, as if they had
/// been revoked, so that each part starts with a rejected token.
async fn echo(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = String::from_utf8_lossy(&body);
    if matches!(auth, "Bearer tok-1" | "Bearer tok-3" | "") {
        say(&format!("api: 401 for {auth:?} (body {text:?})"));
        return (StatusCode::UNAUTHORIZED, "invalid_token".into());
    }
    say(&format!("api: 200 for {auth:?} (body {text:?})"));
    (StatusCode::OK, format!("echo: {text}"))
}

// === the same small fixtures in every example ===

fn say(line: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    println!("[{:>4} ms] {line}", start.elapsed().as_millis());
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A token endpoint: issues `tok-1`, `tok-2`, … each valid for an hour.
fn token_endpoint() -> Router {
    let issued = Arc::new(AtomicUsize::new(0));
    Router::new().route(
        "/token",
        post(move || {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            say(&format!("token endpoint: issued tok-{n}"));
            async move {
                axum::Json(serde_json::json!({
                    "access_token": format!("tok-{n}"),
                    "token_type": "bearer",
                    "expires_in": 3600,
                }))
            }
        }),
    )
}

/// Tokens from the token endpoint at `url`, with the standard client
/// credentials grant: `tower_bearer::oauth` sends the request and reads the
/// response.
fn token_source(url: String) -> Result<ClientCredentialsGrant, ConfigError> {
    let endpoint =
        TokenEndpoint::builder(url, ClientAuth::basic("example-client", "example-secret"))
            .build()?;
    Ok(ClientCredentialsGrant::new(endpoint))
}
