//! B6 and B10 over gRPC: tonic-health's generated client through
//! `tower_bearer::tonic::AuthChannel`, against an in-process tonic server
//! whose interceptor checks the token, and a real token endpoint.
#![cfg(feature = "tonic")]

mod support;

use std::sync::{Arc, Mutex};

use support::{FrozenClock, TestServer, http_client, http_source};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_bearer::tonic::AuthChannel;
use tower_bearer::{AuthLayer, TokenCache};

/// An in-process gRPC health server whose interceptor accepts the tokens
/// `accept` says yes to and answers UNAUTHENTICATED otherwise, recording the
/// `authorization` of every call it sees.
struct GrpcServer {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl GrpcServer {
    async fn start(accept: impl Fn(&str) -> bool + Clone + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let log = seen.clone();
        let check = move |req: tonic::Request<()>| {
            let auth = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(auth.clone());
            match auth.strip_prefix("Bearer ") {
                Some(token) if accept(token) => Ok(req),
                _ => Err(Status::unauthenticated("invalid token")),
            }
        };
        let service = tonic::service::interceptor::InterceptedService::new(health, check);
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        GrpcServer { addr, seen }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    /// The `authorization` of every call, in order.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn cache_and_tokens() -> (TokenCache, TestServer) {
    let tokens = support::token_server(3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    (cache, tokens)
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn b6_unauthenticated_unary_call_succeeds_after_exactly_one_refresh() {
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let server = GrpcServer::start(|token| token != "tok-1").await;
    let mut health = HealthClient::new(AuthChannel::new(server.channel().await, cache.clone()));

    let response = health.check(check()).await.expect("the retry succeeds");

    assert_eq!(response.get_ref().status(), ServingStatus::Serving);
    assert_eq!(server.seen(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(tokens.requests(), 2, "exactly one refresh");
    assert_eq!(cache.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn b6_server_that_always_rejects_sees_the_call_exactly_twice() {
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let server = GrpcServer::start(|_| false).await;
    let mut health = HealthClient::new(AuthChannel::new(server.channel().await, cache));

    let status = health.check(check()).await.expect_err("always rejected");

    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid token");
    assert_eq!(server.seen(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn b6_plain_auth_layer_over_a_channel_invalidates_but_does_not_retry() {
    // `tonic::body::Body` cannot be copied: without `AuthChannel` the
    // rejection comes back, and the next call gets a new token.
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let server = GrpcServer::start(|token| token != "tok-1").await;
    let plain = ServiceBuilder::new()
        .layer(AuthLayer::new(cache))
        .service(server.channel().await);
    let mut health = HealthClient::new(plain);

    let first = health.check(check()).await.expect_err("not retried");
    assert_eq!(first.code(), Code::Unauthenticated);
    assert_eq!(tokens.requests(), 1);

    health.check(check()).await.expect("a new token");
    assert_eq!(server.seen(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_concurrent_retries_over_one_buffered_channel_keep_readiness() {
    // A Channel is a Buffer: calling a clone that was not polled ready panics
    // ("send_item called without first calling poll_reserve"). Here 64
    // calls wait for the first token at once (each through a clone polled
    // ready only after the token came), and every call that carried tok-1
    // is rejected and retried through a clone of the channel. A real
    // multi-threaded runtime, no paused clock: nothing here waits on time.
    const CALLS: usize = 64;
    let (cache, tokens) = cache_and_tokens().await;
    let server = GrpcServer::start(|token| token != "tok-1").await;
    let channel = server.endpoint().buffer_size(2).connect().await.unwrap();
    let health = HealthClient::new(AuthChannel::new(channel, cache));
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut health = health.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                health.check(check()).await
            })
        })
        .collect();
    for call in calls {
        let response = call.await.expect("no panic").expect("the retry succeeds");
        assert_eq!(response.get_ref().status(), ServingStatus::Serving);
    }

    let seen = server.seen();
    let rejected = seen.iter().filter(|auth| *auth == "Bearer tok-1").count();
    let accepted = seen.iter().filter(|auth| *auth == "Bearer tok-2").count();
    assert_eq!(accepted, CALLS, "every call succeeded with the new token");
    assert_eq!(rejected + accepted, seen.len());
    assert!(rejected >= 1);
    assert_eq!(tokens.requests(), 2, "one refresh for all the rejections");
}
