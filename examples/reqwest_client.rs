//! tower-bearer with reqwest: `HttpService` makes a `reqwest::Client` a
//! `Service<http::Request<reqwest::Body>>` that `AuthLayer` can wrap.
//!
//! Runs with no setup: it starts a token endpoint and an API on loopback. The
//! API rejects the first token, so the first call shows 401 → refresh →
//! retry (the JSON body is buffered, so it can be sent again).
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
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
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::reqwest::HttpService;
use tower_bearer::{AuthLayer, BoxError, ConfigError, TokenCache};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tokens = serve(token_endpoint()).await;
    let api = serve(Router::new().route("/v1/orders", post(create_order))).await;
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token"))?);

    let reqwest_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let api_client = ServiceBuilder::new()
        .layer(AuthLayer::new(cache.clone()))
        .service(HttpService::new(reqwest_client));

    for item in ["tea", "scones"] {
        let body = format!(r#"{{"item": "{item}"}}"#);
        say(&format!("client: POST /v1/orders {body}"));
        let request = Request::post(format!("http://{api}/v1/orders"))
            .header("content-type", "application/json")
            .body(reqwest::Body::from(body))?;
        let response = api_client.clone().oneshot(request).await?;
        // Back to reqwest's response type for its helpers.
        let response = reqwest::Response::from(response);
        let status = response.status();
        say(&format!("client: {status} {}", response.text().await?));
    }
    say(&format!("cache: {:?}", cache.stats()));
    Ok(())
}

/// The API: rejects `tok-1` (as if it had been revoked).
async fn create_order(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = String::from_utf8_lossy(&body);
    if auth.is_empty() || auth == "Bearer tok-1" {
        say(&format!("api: 401 for {auth:?} (body {text})"));
        return (StatusCode::UNAUTHORIZED, "invalid_token".into());
    }
    say(&format!("api: 201 for {auth:?} (body {text})"));
    (StatusCode::CREATED, format!("created {text}"))
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
