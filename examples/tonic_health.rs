//! tower-bearer in front of a tonic `Channel`, used by a generated client
//! (tonic-health's `HealthClient`; no protoc needed).
//!
//! Runs with no setup: it starts a token endpoint and a gRPC health server on
//! loopback. The server's interceptor rejects `tok-1` with UNAUTHENTICATED,
//! so the first call shows rejection → refresh → retry.
//!
//! ```text
//! cargo run --example tonic_health --features tonic
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::routing::post;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::tonic::AuthChannel;
use tower_bearer::{BoxError, ConfigError, TokenCache};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tokens = serve(token_endpoint()).await;
    let grpc = grpc_health_server().await;
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token"))?);

    let channel = Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    // The whole integration: wrap the channel, hand it to the generated client.
    let mut health = HealthClient::new(AuthChannel::new(channel, cache.clone()));

    for call in 1..=3 {
        say(&format!("client: Health/Check #{call}"));
        let response = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        say(&format!("client: {:?}", response.get_ref().status()));
    }
    say(&format!("cache: {:?}", cache.stats()));
    Ok(())
}

/// A gRPC health server whose interceptor rejects `tok-1` (as if revoked).
async fn grpc_health_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let check_token = |request: tonic::Request<()>| {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if auth.is_empty() || auth == "Bearer tok-1" {
            say(&format!("grpc server: UNAUTHENTICATED for {auth:?}"));
            return Err(tonic::Status::unauthenticated("invalid token"));
        }
        say(&format!("grpc server: OK for {auth:?}"));
        Ok(request)
    };
    let service = tonic::service::interceptor::InterceptedService::new(health, check_token);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
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
