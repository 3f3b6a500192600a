//! Several APIs in one process, one shared hyper-util client underneath:
//! a `RouteLayer` picks the token by the request's origin and sends none to
//! origins it has no token for (B9); and two layers sharing one cache share
//! one token.
//!
//! Runs with no setup: it starts two token endpoints (one per API), two
//! APIs and an unrelated server on loopback.
//!
//! ```text
//! cargo run --example several_apis
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::route::{Origin, RouteLayer};
use tower_bearer::{AuthLayer, BoxError, ConfigError, TokenCache};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let billing_tokens = serve(token_endpoint_for("billing")).await;
    let maps_tokens = serve(token_endpoint_for("maps")).await;
    let billing = serve(api("billing", "billing-1")).await;
    let maps = serve(api("maps", "")).await;
    let elsewhere = serve(api("elsewhere", "")).await;

    let billing_cache = TokenCache::new(token_source(format!("http://{billing_tokens}/token"))?);
    let maps_cache = TokenCache::new(token_source(format!("http://{maps_tokens}/token"))?);

    // One client, one connection pool, for every API.
    let shared: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    // 1. One layer in front of the shared client, a token per origin.
    let routes = RouteLayer::new()
        .route(
            Origin::parse(&format!("http://{billing}"))?,
            AuthLayer::new(billing_cache.clone()),
        )
        .route(
            Origin::parse(&format!("http://{maps}"))?,
            AuthLayer::new(maps_cache.clone()),
        );
    let client = ServiceBuilder::new().layer(routes).service(shared.clone());
    for url in [
        format!("http://{billing}/v1/invoices"),
        format!("http://{maps}/v1/tiles"),
        format!("http://{elsewhere}/v1/anything"),
        format!("http://localhost:{}/v1/invoices", billing.port()),
    ] {
        say(&format!("client: GET {url}"));
        let response = client.clone().oneshot(get_request(&url)).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        say(&format!(
            "client: {status} {}",
            String::from_utf8_lossy(&text)
        ));
    }

    // 2. Two layers over clones of the shared client, sharing one cache:
    //    both send the same token, fetched once.
    let invoices = AuthLayer::new(maps_cache.clone()).layer(shared.clone());
    let tiles = AuthLayer::new(maps_cache.clone()).layer(shared);
    let (a, b) = tokio::join!(
        invoices.oneshot(get_request(&format!("http://{maps}/v1/a"))),
        tiles.oneshot(get_request(&format!("http://{maps}/v1/b"))),
    );
    say(&format!(
        "client: two layers, one cache: {} and {}",
        a?.status(),
        b?.status()
    ));
    say(&format!("billing cache: {:?}", billing_cache.stats()));
    say(&format!("maps cache: {:?}", maps_cache.stats()));
    Ok(())
}

fn get_request(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

/// An API that accepts its own tokens (`{name}-N`) except `revoked`, and
/// reports what it saw.
fn api(name: &'static str, revoked: &'static str) -> Router {
    Router::new().route(
        "/v1/{*path}",
        get(move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let token = auth.strip_prefix("Bearer ").unwrap_or("");
            let ours = token.starts_with(&format!("{name}-")) && token != revoked;
            let status = if ours {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            say(&format!("{name} api: {} for {auth:?}", status.as_u16()));
            (status, format!("{name} saw {auth:?}"))
        }),
    )
}

/// A token endpoint issuing `{prefix}-1`, `{prefix}-2`, …
fn token_endpoint_for(prefix: &'static str) -> Router {
    let issued = Arc::new(AtomicUsize::new(0));
    Router::new().route(
        "/token",
        post(move || {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            say(&format!("{prefix} token endpoint: issued {prefix}-{n}"));
            async move {
                axum::Json(serde_json::json!({
                    "access_token": format!("{prefix}-{n}"),
                    "token_type": "bearer",
                    "expires_in": 3600,
                }))
            }
        }),
    )
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

/// Tokens from the token endpoint at `url`, with the standard client
/// credentials grant: `tower_bearer::oauth` sends the request and reads the
/// response.
fn token_source(url: String) -> Result<ClientCredentialsGrant, ConfigError> {
    let endpoint =
        TokenEndpoint::builder(url, ClientAuth::basic("example-client", "example-secret"))
            .build()?;
    Ok(ClientCredentialsGrant::new(endpoint))
}
