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
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_bearer::tonic::AuthChannel;
use tower_bearer::{BoxError, Error, Token, TokenCache, TokenSource, source};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tokens = serve(token_endpoint()).await;
    let grpc = grpc_health_server().await;
    let cache = TokenCache::new(token_source(format!("http://{tokens}/token")));

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

/// A custom token source: POST to `url`, read the JSON.
fn token_source(url: String) -> impl TokenSource {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    source::from_fn(move |_previous| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let request = Request::post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::from("grant_type=client_credentials"))
                .map_err(Error::permanent)?;
            let response = client.request(request).await.map_err(Error::connect)?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(Error::connect)?;
            let json: serde_json::Value = serde_json::from_slice(&body.to_bytes())
                .map_err(|_| Error::invalid_response("not JSON"))?;
            let access_token = json["access_token"]
                .as_str()
                .ok_or_else(|| Error::invalid_response("no access_token"))?;
            let lifetime = Duration::from_secs(json["expires_in"].as_u64().unwrap_or(3600));
            Ok(Token::new(access_token).with_expires_in(lifetime))
        }
    })
}
