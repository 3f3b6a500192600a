//! Shared fixtures for the integration tests: real HTTP servers on
//! 127.0.0.1:0 (a token endpoint and a protected API, with counters and
//! programmable behaviour), a hyper-util client, a frozen tokio clock, and
//! the real oidc-provider authorization server (`peer`).
#![allow(dead_code, unreachable_pub)]

pub mod kit;
pub mod peer;
pub mod pki;
pub mod redis;
pub mod rotating;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A hyper-util legacy client for `Full<Bytes>` bodies (HTTP/1.1).
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A hyper-util client that opens a connection per request and keeps none:
/// for tests that use one client from several runtimes (a pooled
/// connection belongs to the runtime that opened it, and is dead for the
/// others when that runtime is not driven).
pub fn unpooled_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// Servers on a runtime of their own, driven by its own thread, for tests
/// whose clients run on runtimes that are not always driven.
pub struct ServerRuntime {
    runtime: tokio::runtime::Runtime,
}

impl Default for ServerRuntime {
    fn default() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        ServerRuntime { runtime }
    }
}

impl ServerRuntime {
    /// Starts a server on this runtime.
    pub fn start<T>(&self, server: impl Future<Output = T>) -> T {
        self.runtime.block_on(server)
    }
}

/// Reads a response whole, as a well-behaved client does, and returns its
/// status and body text.
///
/// Tests that send thousands of requests over one HTTP/2 connection must
/// read each body: a response dropped before its DATA frame arrived resets
/// the stream, and h2 counts frames that then arrive for streams it has
/// forgotten as its own errors, ending the connection after 1024 of them
/// (GOAWAY `too_many_internal_resets`).
pub async fn read_response<B>(rsp: Response<B>) -> (StatusCode, String)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A hyper-util legacy client speaking HTTP/2 only (prior knowledge), so
/// thousands of concurrent requests share one connection.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// What a test server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request's trailers, if it sent any (HTTP/2).
    pub trailers: Option<HeaderMap>,
}

impl Seen {
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The body parsed as `application/x-www-form-urlencoded`.
    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded_pairs(&self.body)
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A handler: the request number (1-based) and what was seen, to a response.
pub type Handler = Arc<dyn Fn(usize, Seen) -> BoxFut<Response<Full<Bytes>>> + Send + Sync>;

/// A real HTTP/1.1 + HTTP/2 server on 127.0.0.1:0 that counts and records
/// requests and answers them with a programmable handler.
#[derive(Clone)]
pub struct TestServer {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(usize, Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |n, seen| Box::pin(handler(n, seen)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count2, seen2) = (count.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, count, seen) = (handler.clone(), count2.clone(), seen2.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (handler, count, seen) =
                                (handler.clone(), count.clone(), seen.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let (body, trailers) = match body.collect().await {
                                    Ok(c) => {
                                        let trailers = c.trailers().cloned();
                                        (c.to_bytes(), trailers)
                                    }
                                    Err(_) => (Bytes::new(), None),
                                };
                                let record = Seen {
                                    method: parts.method,
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers,
                                    body,
                                    trailers,
                                };
                                seen.lock().unwrap().push(record.clone());
                                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                                Ok::<_, Infallible>(handler(n, record).await)
                            }
                        });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(20_000);
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            count,
            seen,
            task: Arc::new(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests answered (or being answered) so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting connections (existing ones keep going).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A plain response with a text body.
pub fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// The standard successful token response.
pub fn token_json(access_token: &str, expires_in: u64) -> Response<Full<Bytes>> {
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": expires_in,
        }),
    )
}

/// A token endpoint that issues `tok-1`, `tok-2`, … with `expires_in` seconds.
pub async fn token_server(expires_in: u64) -> TestServer {
    TestServer::start(move |n, _seen| async move { token_json(&format!("tok-{n}"), expires_in) })
        .await
}

/// An API that answers 200 with the token it saw when `accept(token)` says
/// so, 401 otherwise.
pub async fn api_server<F>(accept: F) -> TestServer
where
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    let accept = Arc::new(accept);
    TestServer::start(move |_n, seen| {
        let accept = accept.clone();
        async move {
            let token = seen
                .authorization()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            if !token.is_empty() && accept(&token) {
                text(StatusCode::OK, &token)
            } else {
                Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("www-authenticate", r#"Bearer error="invalid_token""#)
                    .body(Full::new(Bytes::from_static(b"unauthorized")))
                    .unwrap()
            }
        }
    })
    .await
}

/// A token source that POSTs to `url` and parses the standard JSON response,
/// written the way a user of the crate would write a custom source.
pub fn http_source(client: HttpClient, url: String) -> impl tower_bearer::TokenSource {
    tower_bearer::source::from_fn(move |_previous: Option<tower_bearer::Token>| {
        post_for_token(client.clone(), url.clone())
    })
}

/// One token request: POST, then parse `{access_token, expires_in}`.
pub async fn post_for_token(
    client: HttpClient,
    url: String,
) -> Result<tower_bearer::Token, tower_bearer::Error> {
    let req = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials",
        )))
        .unwrap();
    let rsp = client
        .request(req)
        .await
        .map_err(tower_bearer::Error::connect)?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(tower_bearer::Error::connect)?
        .to_bytes();
    if !status.is_success() {
        return Err(tower_bearer::Error::status(status, None));
    }
    #[derive(serde::Deserialize)]
    struct Body {
        access_token: String,
        expires_in: Option<u64>,
    }
    let parsed: Body = serde_json::from_slice(&body)
        .map_err(|_| tower_bearer::Error::invalid_response("not a token response"))?;
    let mut token = tower_bearer::Token::new(parsed.access_token);
    if let Some(secs) = parsed.expires_in {
        token = token.with_expires_in(Duration::from_secs(secs));
    }
    Ok(token)
}

/// Freezes tokio's clock for the rest of the test: time moves only with
/// `tokio::time::advance`, while real I/O on loopback goes on in real time.
///
/// `start_paused` alone is not enough with real sockets: whenever the runtime
/// idles (waiting for a socket), tokio auto-advances a paused clock to the
/// next timer, which would fire timeouts in the middle of an exchange. A
/// blocking task inhibits auto-advance (see `tokio::time::pause`), so one is
/// kept running until the guard is dropped.
pub struct FrozenClock {
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl FrozenClock {
    /// Call at the start of a `#[tokio::test(start_paused = true)]` test.
    pub async fn freeze() -> FrozenClock {
        let limit = Duration::from_secs(120);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = started_tx.send(());
            // A test that awaits a timer the frozen clock never reaches would
            // hang; turn that into a failure.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "a test ran {limit:?} of wall time on a frozen clock: it waits for a timer that only `advance` can fire"
                );
                std::process::abort();
            }
        });
        started_rx.await.unwrap();
        FrozenClock { release: Some(tx) }
    }
}

impl Drop for FrozenClock {
    fn drop(&mut self) {
        drop(self.release.take());
    }
}

/// Lets every task that can make progress do so (real I/O on loopback
/// included) without moving the clock, until `done()` holds. Fails after 60 s
/// of wall time: a condition that never comes is a test failure, not a hang.
pub async fn settle_until(mut done: impl FnMut() -> bool) {
    let wall = std::time::Instant::now();
    while !done() {
        assert!(
            wall.elapsed() < Duration::from_secs(60),
            "condition not reached within 60 s of wall time"
        );
        // A yield lets the scheduler poll the I/O driver between tasks.
        tokio::task::yield_now().await;
    }
}

/// Polls a future once; `Some` if it finished.
pub fn now_or_never<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// The access token the cache would hand out right now without waiting.
pub fn cached_token(cache: &tower_bearer::TokenCache) -> Option<String> {
    now_or_never(cache.token())
        .and_then(Result::ok)
        .map(|t| t.access_token().secret().to_owned())
}
