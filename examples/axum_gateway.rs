//! An axum gateway that keeps an authenticated client in its `State` and
//! forwards requests to an upstream API, streaming request bodies included.
//!
//! Runs with no setup: it starts a token endpoint, an upstream API that
//! rejects the first token, and the gateway, all on loopback, then sends a
//! few requests through the gateway.
//!
//! ```text
//! cargo run --example axum_gateway
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use http::Request;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::body::{ReplayBody, ReplayBodyLayer, ReplayBodyService};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, AuthService, BoxError, ConfigError, TokenCache};

/// The authenticated upstream client: incoming bodies are recorded (up to
/// 64 KiB) while forwarded, so a rejected token can be retried.
type Upstream = ReplayBodyService<AuthService<Client<HttpConnector, ReplayBody<Body>>>>;

#[derive(Clone)]
struct Gateway {
    upstream: Upstream,
    base: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tokens = serve(token_endpoint()).await;
    let upstream_api = serve(Router::new().route("/v1/{*path}", any(upstream))).await;
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token"))?);

    let client = Client::builder(TokioExecutor::new()).build_http();
    let gateway = Gateway {
        upstream: ServiceBuilder::new()
            .layer(ReplayBodyLayer::new())
            .layer(AuthLayer::new(cache.clone()))
            .service(client),
        base: format!("http://{upstream_api}/v1"),
    };
    let app = Router::new()
        .route("/api/{*path}", any(forward))
        .with_state(gateway);
    let gateway_addr = serve(app).await;

    // Callers of the gateway know nothing about tokens.
    let caller: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for (path, body) in [
        ("/api/orders", "tea for two"),
        ("/api/orders", "more scones"),
    ] {
        say(&format!("caller: POST {path} {body:?}"));
        let request = Request::post(format!("http://{gateway_addr}{path}"))
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::from(body))?;
        let response = caller.request(request).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        say(&format!(
            "caller: {status} {}",
            String::from_utf8_lossy(&text)
        ));
    }
    say(&format!("cache: {:?}", cache.stats()));
    Ok(())
}

/// The gateway's handler: forward method, path, content type and the body
/// (as it streams in) upstream, with the gateway's token.
async fn forward(State(gateway): State<Gateway>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().trim_start_matches("/api");
    let mut upstream = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", gateway.base));
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
        upstream = upstream.header(CONTENT_TYPE, content_type);
    }
    // The caller's own `Authorization` (if any) is not forwarded: it is
    // not dropped in, so the gateway's token is attached.
    let Ok(upstream) = upstream.body(body) else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    say(&format!(
        "gateway: forwarding {} {}",
        upstream.method(),
        upstream.uri().path()
    ));
    match gateway.upstream.oneshot(upstream).await {
        Ok(response) => response.map(Body::new).into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The upstream API: rejects `tok-1` (as if revoked).
async fn upstream(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let auth = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = String::from_utf8_lossy(&body);
    if auth.is_empty() || auth == "Bearer tok-1" {
        say(&format!("upstream: 401 for {auth:?} (body {text:?})"));
        return (StatusCode::UNAUTHORIZED, "invalid_token".into());
    }
    say(&format!("upstream: 200 for {auth:?} (body {text:?})"));
    (StatusCode::OK, format!("upstream got {text:?}"))
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
