//! B6 with real request bodies: hyper-util clients sending `Full<Bytes>` and
//! streaming bodies through `ReplayBody`, against an API that rejects the
//! first token.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::{FrozenClock, TestServer, api_server, http_client, http_source};
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::body::{ReplayBody, ReplayBodyLayer};
use tower_bearer::{AuthLayer, BoxError, TokenCache};

type Chunks = Channel<Bytes, BoxError>;

/// Three chunks and a trailer, sent one at a time while the request is under
/// way (the channel holds one chunk, so each waits for the client to take the
/// one before).
const CHUNKS: [&str; 3] = ["first chunk|", "second chunk|", "third chunk"];
const WHOLE: &str = "first chunk|second chunk|third chunk";

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("sha256=c0ffee"));
    trailers
}

/// A streaming body and the task that feeds it.
fn streaming_body(chunks: &'static [&'static str], trailers: Option<HeaderMap>) -> Chunks {
    let (mut tx, body): (Sender<Bytes, BoxError>, Chunks) = Channel::new(1);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx
                .send_data(Bytes::from_static(chunk.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            tokio::task::yield_now().await;
        }
        if let Some(trailers) = trailers {
            let _ = tx.send_trailers(trailers).await;
        }
    });
    body
}

/// A cache over a real token endpoint that issues `tok-1`, `tok-2`, …
async fn cache_and_tokens() -> (TokenCache, TestServer) {
    let tokens = support::token_server(3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    (cache, tokens)
}

#[tokio::test(start_paused = true)]
async fn b6_streaming_body_rejected_once_is_resent_with_the_same_bytes_and_trailers() {
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let api = api_server(|token| token != "tok-1").await;
    // HTTP/2, so the request can carry trailers.
    let client: Client<HttpConnector, ReplayBody<Chunks>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(AuthLayer::new(cache.clone()))
        .service(client);

    let request = Request::post(api.url("/upload"))
        .body(streaming_body(&CHUNKS, Some(trailers())))
        .unwrap();
    let response = api_client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.requests(), 2, "sent once, retried once");
    assert_eq!(tokens.requests(), 2);
    let seen = api.seen();
    assert_eq!(seen[0].authorization(), Some("Bearer tok-1"));
    assert_eq!(seen[1].authorization(), Some("Bearer tok-2"));
    for attempt in &seen {
        assert_eq!(attempt.body, WHOLE);
        assert_eq!(attempt.trailers.as_ref(), Some(&trailers()));
    }
    assert_eq!(cache.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn b6_streaming_body_over_http1_is_resent_whole() {
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let api = api_server(|token| token != "tok-1").await;
    let client: Client<HttpConnector, ReplayBody<Chunks>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(AuthLayer::new(cache))
        .service(client);

    let request = Request::put(api.url("/doc"))
        .body(streaming_body(&CHUNKS, None))
        .unwrap();
    let response = api_client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 2);
    let bodies: Vec<_> = api.seen().into_iter().map(|seen| seen.body).collect();
    assert_eq!(bodies, [WHOLE, WHOLE]);
}

#[tokio::test(start_paused = true)]
async fn b6_body_larger_than_the_cap_is_not_retried_and_the_next_request_gets_a_fresh_token() {
    const CAP: usize = 16;
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let api = api_server(|token| token != "tok-1").await;
    let client: Client<HttpConnector, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::with_cap(CAP))
        .layer(AuthLayer::new(cache.clone()))
        .service(client);

    // Its size hint says 64 bytes: it is not recorded at all.
    let upload = Full::new(Bytes::from(vec![b'u'; 4 * CAP]));
    let rejected = api_client
        .clone()
        .oneshot(Request::post(api.url("/upload")).body(upload).unwrap())
        .await
        .unwrap();

    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        rejected.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#,
        "the rejection is returned unchanged"
    );
    assert_eq!(api.requests(), 1, "not retried");
    assert_eq!(tokens.requests(), 1);
    assert_eq!(cache.stats().retries, 0);

    // The rejected token was invalidated: the next request gets a new one.
    let small = Full::new(Bytes::from_static(b"small"));
    let ok = api_client
        .oneshot(Request::post(api.url("/small")).body(small).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 2);
    assert_eq!(api.seen()[1].authorization(), Some("Bearer tok-2"));
}

#[tokio::test(start_paused = true)]
async fn b6_stream_that_passes_the_cap_while_sent_is_not_retried() {
    const CAP: usize = 16;
    debug_assert!(WHOLE.len() > CAP);
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let api = api_server(|token| token != "tok-1").await;
    let client: Client<HttpConnector, ReplayBody<Chunks>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::with_cap(CAP))
        .layer(AuthLayer::new(cache))
        .service(client);

    let request = Request::post(api.url("/upload"))
        .body(streaming_body(&CHUNKS, None))
        .unwrap();
    let response = api_client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.requests(), 1);
    assert_eq!(
        api.seen()[0].body,
        WHOLE,
        "the first attempt was sent whole"
    );
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn b6_a_rejection_is_held_for_the_release_wait_then_returned_when_the_client_keeps_the_body()
{
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    // A client that has started sending the body (it read the first chunk)
    // when the 401 arrives, and keeps the rest of it for ever.
    let kept: Arc<Mutex<Vec<ReplayBody<Chunks>>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = {
        let (kept, calls) = (kept.clone(), calls.clone());
        tower::service_fn(move |req: Request<ReplayBody<Chunks>>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let kept = kept.clone();
            async move {
                let mut body = req.into_body();
                let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                assert_eq!(first, CHUNKS[0]);
                kept.lock().unwrap().push(body);
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body(Full::new(Bytes::from_static(b"early")))
                        .unwrap(),
                )
            }
        })
    };
    let api_client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(AuthLayer::new(cache))
        .service(client);

    let request = Request::post("http://api.test/upload")
        .body(streaming_body(&CHUNKS, None))
        .unwrap();
    let sent = tokio::time::Instant::now();
    let call = tokio::spawn(api_client.oneshot(request));
    support::settle_until(|| kept.lock().unwrap().len() == 1).await;
    tokio::time::advance(tower_bearer::body::DEFAULT_RELEASE_WAIT).await;
    let response = call.await.unwrap().unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sent.elapsed(), tower_bearer::body::DEFAULT_RELEASE_WAIT);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(tokens.requests(), 1, "no new token fetched for a retry");
    assert_eq!(kept.lock().unwrap().len(), 1);
}

/// A server that answers the first request 401 as soon as it has read the
/// first chunk of its body, and echoes the body of the next. The client
/// sends the rest of its first body only once the server has the second
/// request: the 401 arrives while the client is still sending.
async fn early_401_server(rest: Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (rest, count) = (rest.clone(), count.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (rest, count) = (rest.clone(), count.clone());
                        async move {
                            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            let mut body = req.into_body();
                            if n == 1 {
                                let _first = body.frame().await;
                                let rejection = Response::builder()
                                    .status(StatusCode::UNAUTHORIZED)
                                    .body(Full::new(Bytes::from_static(b"early")))
                                    .unwrap();
                                return Ok::<_, Infallible>(rejection);
                            }
                            rest.notify_one();
                            let whole = body.collect().await.map(|c| c.to_bytes());
                            Ok(Response::new(Full::new(whole.unwrap_or_default())))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b6_a_401_that_arrives_while_a_streamed_body_is_still_sent_is_retried_over_http1_and_http2()
{
    for http2 in [false, true] {
        for _ in 0..10 {
            let rest = Arc::new(tokio::sync::Notify::new());
            let addr = early_401_server(rest.clone()).await;
            let (cache, tokens) = cache_and_tokens().await;
            let mut builder = Client::builder(TokioExecutor::new());
            builder.http2_only(http2);
            let client: Client<HttpConnector, ReplayBody<Chunks>> = builder.build_http();
            let api = ServiceBuilder::new()
                .layer(ReplayBodyLayer::new())
                .layer(AuthLayer::new(cache))
                .service(client);
            let (mut tx, body): (Sender<Bytes, BoxError>, Chunks) = Channel::new(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"first|")).await;
                rest.notified().await;
                let _ = tx.send_data(Bytes::from_static(b"second")).await;
            });

            let request = Request::post(format!("http://{addr}/upload"))
                .body(body)
                .unwrap();
            let response = api.oneshot(request).await.unwrap();

            let (status, body) = support::read_response(response).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "first|second"),
                "HTTP/2: {http2}"
            );
            assert_eq!(tokens.requests(), 2);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn b6_full_body_through_hyper_util_is_retried_with_identical_bytes() {
    let _clock = FrozenClock::freeze().await;
    let (cache, tokens) = cache_and_tokens().await;
    let api = api_server(|token| token != "tok-1").await;
    let api_client = AuthLayer::new(cache).layer_service(http_client());

    let body = Full::new(Bytes::from_static(br#"{"amount": 42}"#));
    let response = api_client
        .oneshot(Request::post(api.url("/pay")).body(body).unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tokens.requests(), 2);
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[1].body, r#"{"amount": 42}"#);
}

trait LayerExt {
    fn layer_service<S>(self, inner: S) -> tower_bearer::AuthService<S>;
}

impl LayerExt for AuthLayer {
    fn layer_service<S>(self, inner: S) -> tower_bearer::AuthService<S> {
        tower::Layer::layer(&self, inner)
    }
}
