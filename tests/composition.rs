//! B10: `AuthService` in tower stacks: timeout, retry, buffer, limit,
//! tower-http's trace layer, over hyper-util's client (against the test
//! kit's token endpoint and API where it serves); readiness.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use support::{FrozenClock, HttpClient, TestServer, http_client, http_source, settle_until, text};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::buffer::Buffer;
use tower::retry::Policy;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_bearer::test_kit::{Fault, TestAuthServer};
use tower_bearer::{AuthLayer, AuthService, Error, ErrorKind, OAuthErrorCode, TokenCache};
use tower_http::trace::TraceLayer;

/// Retries errors (timeouts, connection failures, token failures), never
/// responses: 401s are `AuthLayer`'s business.
#[derive(Clone)]
struct RetryErrors {
    left: usize,
}

impl<B: Clone, Res> Policy<Request<B>, Res, BoxError> for RetryErrors {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Err(_) if self.left > 0 => {
                self.left -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(req.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn b10_retry_timeout_trace_and_auth_over_hyper_util_end_to_end() {
    let _clock = FrozenClock::freeze().await;
    let tokens = support::token_server(3600).await;
    // The first request hangs; the second is rejected (the API wants
    // tok-2); the third succeeds.
    let api = TestServer::start(|n, seen| async move {
        match (n, seen.authorization()) {
            (1, _) => std::future::pending().await,
            (_, Some("Bearer tok-2")) => text(StatusCode::OK, "hello"),
            _ => text(StatusCode::UNAUTHORIZED, "who are you"),
        }
    })
    .await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .retry(RetryErrors { left: 1 })
        .timeout(Duration::from_secs(2))
        .layer(AuthLayer::new(cache.clone()))
        .service(http_client());

    let call = tokio::spawn(
        stack.oneshot(
            Request::get(api.url("/hello"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        ),
    );
    settle_until(|| api.requests() == 1).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let rsp = call.await.unwrap().unwrap();

    assert_eq!(rsp.status(), StatusCode::OK);
    let seen: Vec<_> = api
        .seen()
        .iter()
        .map(|s| s.authorization().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(tokens.requests(), 2);
    let stats = cache.stats();
    assert_eq!((stats.rejections, stats.retries), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn b10_token_errors_reach_the_caller_as_a_downcastable_error_through_timeout() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    server.fail_next(Fault::InvalidClient);
    let cache = TokenCache::new(server.client_credentials());
    let stack = ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .layer(AuthLayer::new(cache))
        .service(http_client());
    let err = stack
        .oneshot(
            Request::get(server.url("/v1"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let err = err.downcast_ref::<Error>().expect("a tower_bearer::Error");
    assert_eq!(err.kind(), ErrorKind::OAuth);
    assert_eq!(
        err.oauth_error().map(|e| e.code()),
        Some(&OAuthErrorCode::InvalidClient)
    );
    assert!(err.is_permanent());
    assert_eq!(server.stats().api_requests, 0);
}

#[tokio::test]
async fn b10_poll_ready_is_pending_while_the_inner_service_is() {
    let cache = TokenCache::new(tower_bearer::source::StaticToken::new("key"));
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Empty<Bytes>>>();
    let mut svc = tokio_test::task::spawn(AuthLayer::new(cache).layer(mock));

    handle.allow(0);
    assert_pending!(svc.enter(|cx, s| s.get_mut().poll_ready(cx)));
    handle.allow(1);
    assert!(
        svc.is_woken(),
        "the inner service's wake-up reaches the caller"
    );
    assert_ready_ok!(svc.enter(|cx, s| s.get_mut().poll_ready(cx)));
}

#[tokio::test]
async fn b10_inner_service_is_called_only_after_it_was_polled_ready() {
    // With no token yet the call waits for one, then polls its own clone of
    // the inner service ready: the mock allows exactly one request, and it
    // is the one after the token arrived.
    let cache = TokenCache::new(tower_bearer::source::StaticToken::new("key"));
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Empty<Bytes>>>();
    handle.allow(1);
    let mut svc = AuthLayer::new(cache).layer(mock);
    svc.ready().await.unwrap();
    let call = tokio::spawn(svc.call(Request::new(Full::default())));
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer key");
    respond.send_response(Response::new(Empty::new()));
    call.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_buffered_inner_service_retries_without_using_unready_clones() {
    // `Buffer` clones are not ready; sending on one that was not polled
    // ready panics. The 401 retry polls its own clone ready first.
    let server = TestAuthServer::start().await;
    let cache = TokenCache::new(server.client_credentials());
    // Every call starts with at-1, which the API no longer accepts.
    cache.token().await.unwrap();
    server.revoke("at-1");
    let buffered: Buffer<Request<Full<Bytes>>, _> = Buffer::new(http_client(), 8);
    let client = AuthLayer::new(cache.clone()).layer(buffered);
    let barrier = Arc::new(tokio::sync::Barrier::new(32));

    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (client, barrier, url) = (client.clone(), barrier.clone(), server.url("/"));
            tokio::spawn(async move {
                barrier.wait().await;
                let req = Request::get(url).body(Full::<Bytes>::default()).unwrap();
                client.oneshot(req).await.map(|r| r.status())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(server.stats().token_requests, 2);
    assert_eq!(cache.stats().rejections, 32);
}

#[tokio::test]
async fn b10_concurrency_limit_inside_the_auth_layer() {
    let server = TestAuthServer::start().await;
    let cache = TokenCache::new(server.client_credentials());
    let client = ServiceBuilder::new()
        .layer(AuthLayer::new(cache))
        .concurrency_limit(2)
        .service(http_client());
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let req = Request::get(server.url("/"))
                .body(Full::<Bytes>::default())
                .unwrap();
            tokio::spawn(client.clone().oneshot(req))
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.api_requests), (1, 10));
}

#[test]
fn b10_service_layer_and_cache_are_send_sync_clone_static() {
    fn assert_all<T: Send + Sync + Clone + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert_all::<TokenCache>();
    assert_all::<AuthLayer>();
    assert_all::<AuthService<HttpClient>>();
    assert_all::<Error>();
    assert_send::<<AuthService<HttpClient> as Service<Request<Full<Bytes>>>>::Future>();
}
