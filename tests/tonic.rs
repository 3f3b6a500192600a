//! B6 and B10 over gRPC: tonic-health's generated client through
//! `tower_bearer::tonic::AuthChannel`, against an in-process tonic server
//! whose interceptor checks the token, and a real token endpoint.
#![cfg(feature = "tonic")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel as BodyChannel, Sender};
use http_body_util::{BodyExt, Empty};

use support::{FrozenClock, TestServer, http_client, http_source};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::reject::Return;
use tower_bearer::tonic::{AuthChannel, AuthChannelLayer, DEFAULT_RELEASE_WAIT};
use tower_bearer::{AuthLayer, BoxError, Token, TokenCache, source};

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

// === the release wait ===

/// A channel that reads the first frame of each request body and then keeps
/// the body, as HTTP/2 does while a client-streaming call's stream waits for
/// the response, or when the server answers without resetting the stream;
/// it answers UNAUTHENTICATED (trailers-only). Counts its calls.
#[derive(Clone, Default)]
struct KeepingChannel {
    calls: Arc<AtomicUsize>,
    kept: Arc<Mutex<Vec<tonic::body::Body>>>,
}

impl tower::Service<http::Request<tonic::body::Body>> for KeepingChannel {
    type Response = http::Response<Empty<Bytes>>;
    type Error = BoxError;
    type Future = source::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let kept = self.kept.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            body.frame().await.expect("a first frame")?;
            kept.lock().unwrap().push(body);
            Ok(http::Response::builder()
                .header("grpc-status", "16")
                .body(Empty::new())
                .unwrap())
        })
    }
}

/// A request whose message stream sent one message and has not ended.
fn open_stream() -> (Sender<Bytes, BoxError>, http::Request<tonic::body::Body>) {
    let (mut tx, body) = BodyChannel::<Bytes, BoxError>::new(1);
    tx.try_send(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("room for one message");
    let request = http::Request::post("/grpc.health.v1.Health/Watch")
        .body(tonic::body::Body::new(body))
        .unwrap();
    (tx, request)
}

/// `tok-1`, `tok-2`, … with no server.
fn counting_cache() -> TokenCache {
    let issued = Arc::new(AtomicUsize::new(0));
    TokenCache::new(source::from_fn(move |_previous| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("tok-{n}"))) }
    }))
}

#[tokio::test(start_paused = true)]
async fn b6_rejection_is_returned_after_the_release_wait_when_the_channel_keeps_the_body() {
    let channel = KeepingChannel::default();
    let auth = AuthChannel::new(channel.clone(), counting_cache());
    let (_stream, request) = open_stream();
    let sent = Instant::now();

    let response = tokio::time::timeout(Duration::from_secs(60), auth.oneshot(request))
        .await
        .expect("the rejection is not held forever")
        .unwrap();

    assert_eq!(
        response.headers()["grpc-status"],
        "16",
        "returned unchanged"
    );
    assert_eq!(sent.elapsed(), DEFAULT_RELEASE_WAIT);
    assert_eq!(channel.calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn b6_release_wait_is_configurable_and_not_taken_when_rejections_are_returned() {
    async fn held<R: tower_bearer::reject::OnRejection>(
        layer: AuthChannelLayer<tower_bearer::reject::Standard, R>,
    ) -> Duration {
        let channel = KeepingChannel::default();
        let auth = tower::Layer::layer(&layer, channel.clone());
        let (_stream, request) = open_stream();
        let sent = Instant::now();

        let response = auth.oneshot(request).await.unwrap();

        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(channel.calls.load(Ordering::SeqCst), 1);
        sent.elapsed()
    }
    let wait = Duration::from_millis(250);
    let retrying = AuthChannelLayer::new(counting_cache()).release_wait(wait);
    assert_eq!(held(retrying).await, wait);
    let returning = AuthChannelLayer::new(counting_cache()).on_rejection(Return);
    assert_eq!(held(returning).await, Duration::ZERO);
}

/// A token endpoint that always answers `invalid_client`, or one that is
/// not there at all: the two kinds of token failure, through a real tonic
/// client, as the codes a retry policy keys on.
#[tokio::test]
async fn token_failures_become_unavailable_when_transient_and_unauthenticated_when_permanent() {
    let server = GrpcServer::start(|_| true).await;
    let refusing = TestServer::start(|_, _| async {
        support::json(
            http::StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client", "error_description": "unknown client"}),
        )
    })
    .await;
    let grant = |url: String| {
        let endpoint = tower_bearer::oauth::TokenEndpoint::builder(
            url,
            tower_bearer::oauth::ClientAuth::post("app", "s3cr3t-value"),
        )
        .build()
        .unwrap();
        TokenCache::builder(tower_bearer::oauth::ClientCredentialsGrant::new(endpoint))
            .max_attempts(1)
            .build()
            .unwrap()
    };

    let permanent = grant(refusing.url("/token"));
    let mut health = HealthClient::new(AuthChannel::new(server.channel().await, permanent));
    let status = health.check(check()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("invalid_client"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("s3cr3t-value"));
    let source = std::error::Error::source(&status).expect("the token error is the source");
    assert!(source.downcast_ref::<tower_bearer::Error>().is_some());

    // Nothing listens on this port: connection refused, a transient failure.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/token")
    };
    let transient = grant(dead);
    let mut health = HealthClient::new(AuthChannel::new(server.channel().await, transient));
    let status = health.check(check()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(server.seen().is_empty(), "no call went out without a token");
}

/// The same challenges as over HTTP, in the `www-authenticate` metadata of
/// an UNAUTHENTICATED answer: with step-ups on, the call is retried once
/// with a token for more scope.
#[tokio::test]
async fn grpc_insufficient_scope_in_metadata_steps_up_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (_reporter, health_service) = tonic_health::server::health_reporter();
    let log = seen.clone();
    let check_scope = move |req: tonic::Request<()>| {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        log.lock().unwrap().push(auth.clone());
        if auth.contains("write") {
            return Ok(req);
        }
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "www-authenticate",
            r#"Bearer error="insufficient_scope", scope="write""#
                .parse()
                .unwrap(),
        );
        Err(Status::with_metadata(
            Code::Unauthenticated,
            "more scope",
            metadata,
        ))
    };
    tokio::spawn(
        Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health_service,
                check_scope,
            ))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let tokens = TestServer::start(|n, seen: support::Seen| async move {
        let scope = seen.form().get("scope").cloned().unwrap_or_default();
        support::token_json(&format!("tok-{n}-{}", scope.replace(' ', "-")), 3600)
    })
    .await;
    let endpoint = tower_bearer::oauth::TokenEndpoint::builder(
        tokens.url("/token"),
        tower_bearer::oauth::ClientAuth::post("app", "s"),
    )
    .scope("read")
    .build()
    .unwrap();
    let cache = TokenCache::new(tower_bearer::oauth::ClientCredentialsGrant::new(endpoint));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Off by default: the denial reaches the caller.
    let mut plain = HealthClient::new(AuthChannel::new(channel.clone(), cache.clone()));
    let status = plain.check(check()).await.expect_err("denied");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(seen.lock().unwrap().len(), 1, "no retry");

    let layer = AuthChannelLayer::new(cache.clone())
        .classify(tower_bearer::reject::Standard::new().step_up(true));
    let mut stepping = HealthClient::new(ServiceBuilder::new().layer(layer).service(channel));
    stepping.check(check()).await.expect("the step-up succeeds");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "Bearer tok-1-read",
            "Bearer tok-1-read",
            "Bearer tok-2-read-write"
        ]
    );
    assert_eq!(tokens.requests(), 2);
}
