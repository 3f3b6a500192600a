//! B6 and B7: what happens when the API rejects a token, and which requests
//! the layer leaves alone. Real token endpoint and API on loopback: the
//! test kit's where it serves, servers of their own where a test scripts
//! more (an API that rejects everything, holds a body, answers gRPC late).

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{
    FrozenClock, TestServer, api_server, h2_client, http_client, http_source, read_response,
    settle_until, text, token_server,
};
use tokio::sync::Barrier;
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt};
use tower_bearer::reject::Return;
use tower_bearer::test_kit::TestAuthServer;
use tower_bearer::{AuthLayer, TokenCache, source::StaticToken};

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn unauthorized() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("www-authenticate", r#"Bearer error="invalid_token""#)
        .body(Full::new(Bytes::from_static(b"no")))
        .unwrap()
}

/// The bearer token of each request the test kit's API got.
fn kit_bearers(server: &TestAuthServer) -> Vec<String> {
    server
        .api_requests()
        .into_iter()
        .map(|r| r.bearer.unwrap_or_default())
        .collect()
}

fn tokens_seen(api: &TestServer) -> Vec<String> {
    api.seen()
        .iter()
        .map(|s| s.authorization().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b6_concurrent_401s_cause_one_refresh_and_one_retry_each() {
    const CALLS: usize = 100;
    let tokens = token_server(3600).await;
    // Every request with tok-1 is held until all 100 have arrived, then
    // rejected: the 100 rejections of tok-1 are truly concurrent.
    let barrier = Arc::new(Barrier::new(CALLS));
    let api = TestServer::start({
        let barrier = barrier.clone();
        move |_, seen| {
            let barrier = barrier.clone();
            async move {
                match seen.authorization() {
                    Some("Bearer tok-1") => {
                        barrier.wait().await;
                        unauthorized()
                    }
                    Some("Bearer tok-2") => text(StatusCode::OK, "ok"),
                    _ => text(StatusCode::BAD_REQUEST, "unexpected token"),
                }
            }
        }
    })
    .await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
    let client = AuthLayer::new(cache.clone()).layer(h2_client());

    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let client = client.clone();
            let url = api.url(&format!("/items/{i}"));
            tokio::spawn(async move {
                let rsp = client.oneshot(get(url)).await?;
                Ok::<_, tower::BoxError>(read_response(rsp).await.0)
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }

    assert_eq!(
        tokens.requests(),
        2,
        "one initial token, exactly one refresh"
    );
    let seen = tokens_seen(&api);
    assert_eq!(seen.len(), 2 * CALLS, "each request sent exactly twice");
    for i in 0..CALLS {
        let path = format!("/items/{i}");
        let tokens_for: Vec<_> = api
            .seen()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.authorization().unwrap().to_owned())
            .collect();
        assert_eq!(tokens_for, ["Bearer tok-1", "Bearer tok-2"], "{path}");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.rejections, stats.retries),
        (CALLS as u64, CALLS as u64)
    );
}

#[tokio::test(start_paused = true)]
async fn b6_a_rejected_retry_invalidates_its_token_and_rejections_in_a_row_wait_a_cooldown() {
    let _clock = FrozenClock::freeze().await;
    let tokens = token_server(3600).await;
    let api = api_server(|_| false).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(http_client());
    let call = || async {
        let rsp = client.clone().oneshot(get(api.url("/"))).await.unwrap();
        assert_eq!(
            rsp.status(),
            StatusCode::UNAUTHORIZED,
            "the caller gets the 401"
        );
    };

    // tok-1 is rejected: invalidated, refreshed at once, the request sent
    // again with tok-2, which is rejected too: tok-2 is invalidated as well.
    call().await;
    assert_eq!(tokens_seen(&api), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(tokens.requests(), 2);
    assert!(format!("{cache:?}").contains("state: \"rejected\""));

    // tok-2 came from a refresh that a rejection caused: its replacement
    // waits a cooldown (at most 1 s the first time). Until then it is still
    // sent, so the caller gets the server's 401, and no token is requested.
    call().await;
    assert_eq!(tokens.requests(), 2, "no refresh while the throttle holds");
    assert_eq!(
        tokens_seen(&api)[2..],
        ["Bearer tok-2"],
        "sent once, not retried"
    );

    // After the cooldown the next request gets a new token.
    advance(Duration::from_secs(1)).await;
    call().await;
    assert_eq!(tokens.requests(), 3);
    assert_eq!(tokens_seen(&api)[3..], ["Bearer tok-3"]);
    let stats = cache.stats();
    assert_eq!((stats.rejections, stats.retries), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn b6_an_api_that_rejects_every_token_sees_a_bounded_number_of_token_requests() {
    // 1,000 requests per second for 60 s against an API that rejects every
    // token. Tokens from refreshes caused by rejections that are rejected in
    // their turn wait a cooldown of 1 s doubling to 30 s, with equal jitter
    // (at least 0.5, 1, 2, 4, 8, 15, 15 s): the first token and its
    // replacement at 0 s, then at the earliest at 0.5, 1.5, 3.5, 7.5, 15.5,
    // 30.5 and 45.5 s. At most 9 in the first minute (documented in
    // `cache`, Rejections).
    const SECONDS: u64 = 60;
    const CALLS_PER_STEP: usize = 100;
    const STEP: Duration = Duration::from_millis(100);
    const BOUND: usize = 9;

    let _clock = FrozenClock::freeze().await;
    let tokens = token_server(3600).await;
    let api = api_server(|_| false).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(h2_client());
    let start = Instant::now();
    let mut calls = 0;
    while Instant::now() - start < Duration::from_secs(SECONDS) {
        let step: Vec<_> = (0..CALLS_PER_STEP)
            .map(|_| {
                let client = client.clone();
                let req = get(api.url("/"));
                tokio::spawn(async move {
                    let rsp = client.oneshot(req).await?;
                    Ok::<_, tower::BoxError>(read_response(rsp).await.0)
                })
            })
            .collect();
        for call in step {
            let status = call.await.unwrap().expect("never an error of ours");
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            calls += 1;
        }
        advance(STEP).await;
    }
    assert_eq!(calls, 60_000);
    let requests = tokens.requests();
    eprintln!("an API that rejects everything: {requests} token requests in {SECONDS} s");
    assert!(
        requests <= BOUND,
        "{requests} token requests, bound {BOUND}"
    );
    // The throttle slows refreshes down; it does not stop them.
    assert!(requests >= 6, "{requests} token requests");
}

#[tokio::test]
async fn b6_403_is_never_retried_and_keeps_the_token() {
    let tokens = token_server(3600).await;
    let api = TestServer::start(|_, _| async { text(StatusCode::FORBIDDEN, "not allowed") }).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache.clone()).layer(http_client());

    for _ in 0..3 {
        let rsp = client.clone().oneshot(get(api.url("/"))).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(api.requests(), 3);
    assert_eq!(tokens.requests(), 1);
    assert_eq!(tokens_seen(&api), ["Bearer tok-1"; 3]);
    assert_eq!(cache.stats().rejections, 0);
}

#[tokio::test]
async fn b7_a_request_with_its_own_authorization_is_sent_unchanged() {
    let server = TestAuthServer::start().await;
    let client = AuthLayer::new(TokenCache::new(server.client_credentials())).layer(http_client());

    let req = Request::get(server.url("/"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(Full::default())
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(
        rsp.status(),
        StatusCode::UNAUTHORIZED,
        "its 401 is not ours to retry"
    );
    let seen = server.api_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["authorization"], "Basic dXNlcjpwYXNz");
    assert_eq!(
        server.stats().token_requests,
        0,
        "no token was even fetched"
    );
}

#[tokio::test]
async fn b6_a_buffered_body_is_replayed_byte_for_byte() {
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let client = AuthLayer::new(TokenCache::new(server.client_credentials())).layer(http_client());

    let req = Request::post(server.url("/orders"))
        .header("content-type", "application/json")
        .header("x-request-id", "42")
        .body(Full::new(Bytes::from_static(br#"{"item":"tea","qty":2}"#)))
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);

    let seen = server.api_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].bearer.as_deref(), Some("at-1"));
    assert_eq!(seen[1].bearer.as_deref(), Some("at-2"));
    for attempt in &seen {
        assert_eq!(attempt.method, http::Method::POST);
        assert_eq!(attempt.path, "/orders");
        assert_eq!(&attempt.body[..], br#"{"item":"tea","qty":2}"#);
        assert_eq!(attempt.headers["x-request-id"], "42");
        assert_eq!(attempt.headers["content-type"], "application/json");
    }
}

type Streaming = UnsyncBoxBody<Bytes, std::io::Error>;

#[tokio::test]
async fn b6_a_streaming_body_is_not_retried_but_its_token_is_invalidated() {
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let cache = TokenCache::new(server.client_credentials());
    let hyper: Client<_, Streaming> = Client::builder(TokioExecutor::new()).build_http();
    let client = AuthLayer::new(cache.clone()).layer(hyper);

    let stream = futures_stream(vec![
        Bytes::from_static(b"chunk-1"),
        Bytes::from_static(b"chunk-2"),
    ]);
    let req = Request::post(server.url("/upload")).body(stream).unwrap();
    let rsp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED, "returned unchanged");
    let seen = server.api_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "chunk-1chunk-2");

    // The rejected token is gone: the next request gets a new one.
    let req = Request::post(server.url("/upload"))
        .body(futures_stream(vec![]))
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(kit_bearers(&server), ["at-1", "at-2"]);
    assert_eq!(server.stats().token_requests, 2);
}

/// A body that yields `chunks` one by one: it cannot be copied.
fn futures_stream(chunks: Vec<Bytes>) -> Streaming {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(c)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

#[tokio::test]
async fn b6_no_retry_when_the_new_token_is_the_rejected_one() {
    let api = api_server(|_| false).await;
    let cache = TokenCache::new(StaticToken::new("static-key"));
    let client = AuthLayer::new(cache.clone()).layer(http_client());

    let rsp = client.oneshot(get(api.url("/"))).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.requests(),
        1,
        "retrying with the same value would be pointless"
    );
    assert_eq!(cache.stats().retries, 0);
}

#[tokio::test]
async fn b6_no_retry_when_no_new_token_can_be_had_the_rejection_is_returned() {
    // The first token comes; then the endpoint fails permanently.
    let tokens = TestServer::start(|n, _| async move {
        if n == 1 {
            support::token_json("tok-1", 3600)
        } else {
            support::json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "invalid_client"}),
            )
        }
    })
    .await;
    let api = api_server(|_| false).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .max_attempts(1)
        .build()
        .unwrap();
    let client = AuthLayer::new(cache.clone()).layer(http_client());

    let rsp = client.oneshot(get(api.url("/"))).await.unwrap();
    assert_eq!(
        rsp.status(),
        StatusCode::UNAUTHORIZED,
        "the rejection, unchanged"
    );
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "unauthorized");
    assert_eq!(api.requests(), 1);
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn b6_on_rejection_return_invalidates_without_retrying() {
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let client = AuthLayer::new(TokenCache::new(server.client_credentials()))
        .on_rejection(Return)
        .layer(http_client());

    let rsp = client.clone().oneshot(get(server.url("/"))).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    let rsp = client.oneshot(get(server.url("/"))).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(kit_bearers(&server), ["at-1", "at-2"]);
}

#[tokio::test]
async fn b6_grpc_unauthenticated_in_headers_is_a_rejection() {
    // The kit answers a gRPC request's rejection as a gRPC server does: 200
    // with `grpc-status: 16` in the headers (a trailers-only response).
    let server = TestAuthServer::start().await;
    server.fail_next_api(StatusCode::UNAUTHORIZED);
    let client = AuthLayer::new(TokenCache::new(server.client_credentials())).layer(h2_client());

    let req = Request::post(server.url("/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    let (status, _) = read_response(rsp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kit_bearers(&server), ["at-1", "at-2"]);
    assert_eq!(server.stats().api_rejections, 1);
}

#[tokio::test]
async fn b6_a_stale_rejection_does_not_invalidate_the_newer_token() {
    let tokens = token_server(3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let first = cache.token().await.unwrap();
    assert!(cache.invalidate(&first));
    let second = cache.token().await.unwrap();
    assert_eq!(second.access_token().secret(), "tok-2");
    // A late 401 for the first token must not throw the second away.
    assert!(!cache.invalidate(&first));
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-2"
    );
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn b7_every_value_of_a_preset_authorization_is_kept_in_order() {
    let tokens = token_server(3600).await;
    let api = api_server(|_| true).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    // A cached token exists, so the fast path runs and must back out.
    cache.token().await.unwrap();
    let client = AuthLayer::new(cache).layer(http_client());

    let req = Request::get(api.url("/"))
        .header("x-before", "1")
        .header("authorization", "Custom one")
        .header("authorization", "Custom two")
        .header("x-after", "2")
        .body(Full::default())
        .unwrap();
    client.oneshot(req).await.unwrap();
    let seen = &api.seen()[0];
    let values: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(values, ["Custom one", "Custom two"]);
    assert_eq!(seen.headers["x-before"], "1");
    assert_eq!(seen.headers["x-after"], "2");
    assert_eq!(tokens.requests(), 1);
}

/// A 401 body held back until the server lets it go, which records whether
/// it was sent to its end before hyper dropped it.
struct HeldBody {
    release: Option<tokio::sync::oneshot::Receiver<()>>,
    data: Option<Bytes>,
    ended: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(release) = self.release.as_mut() {
            // A dropped sender holds the body for ever.
            if ready!(Pin::new(release).poll(cx)).is_err() {
                return Poll::Pending;
            }
            self.release = None;
        }
        match self.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                self.ended.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// An HTTP/2 API that rejects `tok-1` with a [`HeldBody`], and accepts
/// `tok-2`. With `release_on_retry`, the retry lets the 401 body go.
struct HeldApi {
    url: String,
    ended: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

async fn held_401_api(release_on_retry: bool) -> HeldApi {
    type Body = Either<HeldBody, Full<Bytes>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/items", listener.local_addr().unwrap());
    let (ended, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let release = Arc::new(Mutex::new(None));
    let task = tokio::spawn({
        let (ended, dropped) = (ended.clone(), dropped.clone());
        async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let auth = req.headers().get("authorization").cloned();
                let rsp: Response<Body> = if auth.as_ref().is_some_and(|v| v == "Bearer tok-1") {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    *release.lock().unwrap() = Some(tx);
                    let body = HeldBody {
                        release: Some(rx),
                        data: Some(Bytes::from_static(b"token expired")),
                        ended: ended.clone(),
                        dropped: dropped.clone(),
                    };
                    Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body(Either::Left(body))
                        .unwrap()
                } else {
                    let held = release.lock().unwrap().take();
                    if let (true, Some(tx)) = (release_on_retry, held) {
                        let _ = tx.send(());
                    }
                    Response::new(Either::Right(Full::new(Bytes::from_static(b"ok"))))
                };
                std::future::ready(Ok::<_, Infallible>(rsp))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
    });
    HeldApi {
        url,
        ended,
        dropped,
        _task: task,
    }
}

#[tokio::test]
async fn b6_the_rejected_body_is_read_to_its_end_so_http2_does_not_reset_the_stream() {
    // Dropping a 401 unread resets its HTTP/2 stream; frames the server had
    // already sent then count as h2 errors of the client, and 1024 of them
    // end the connection (GOAWAY too_many_internal_resets) with every
    // request on it. Here the 401's body is only sent after the retry
    // arrived: it must still reach its end.
    let tokens = token_server(3600).await;
    let api = held_401_api(true).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache).layer(h2_client());

    let rsp = client.oneshot(get(api.url.clone())).await.unwrap();
    assert_eq!(read_response(rsp).await, (StatusCode::OK, "ok".to_owned()));
    settle_until(|| api.dropped.load(Ordering::SeqCst)).await;
    assert!(
        api.ended.load(Ordering::SeqCst),
        "the 401 stream was reset instead of read to its end"
    );
}

#[tokio::test(start_paused = true)]
async fn b6_a_rejected_body_that_never_ends_is_dropped_after_one_second() {
    let _clock = FrozenClock::freeze().await;
    let tokens = token_server(3600).await;
    let api = held_401_api(false).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    let client = AuthLayer::new(cache).layer(h2_client());

    let rsp = client.oneshot(get(api.url.clone())).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    // The retry did not wait for the 401's body; it is still being read.
    tokio::time::advance(Duration::from_millis(999)).await;
    settle_until(|| true).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!api.dropped.load(Ordering::SeqCst));
    tokio::time::advance(Duration::from_millis(1)).await;
    settle_until(|| api.dropped.load(Ordering::SeqCst)).await;
    assert!(!api.ended.load(Ordering::SeqCst));
}
