//! `retry::RetryConnectionErrors` above the auth layer
//! (`retry → timeout → AuthLayer → client`): idempotent requests whose
//! connection failed are sent again; token failures, timeouts, responses
//! and non-idempotent requests are not. Real servers on loopback.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{FrozenClock, TestServer, api_server, http_client, http_source, text, token_server};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tower::retry::budget::TpsBudget;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::retry::RetryConnectionErrors;
use tower_bearer::{AuthLayer, TokenCache};

/// A server whose first `broken` connections read a request and close
/// without answering (as a server does that has just closed an idle
/// keep-alive connection), and whose later ones answer 200. Counts
/// connections.
async fn closing_server(broken: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let api = api_server(|_| true).await;
    tokio::spawn({
        let connections = connections.clone();
        async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = connections.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= broken {
                    // Read the request head, then close.
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    drop(stream);
                } else {
                    // Hand the connection to a real API.
                    let api_addr = api.addr;
                    tokio::spawn(async move {
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(api_addr).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                    });
                }
            }
        }
    });
    (format!("http://{addr}"), connections)
}

async fn cache() -> (TokenCache, TestServer) {
    let tokens = token_server(3600).await;
    let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
    (cache, tokens)
}

fn request(method: Method, url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_request_whose_connection_closed_early_is_sent_again_a_post_is_not() {
    let _clock = FrozenClock::freeze().await;
    let (cache, _tokens) = cache().await;
    let (base, connections) = closing_server(1).await;
    let api = ServiceBuilder::new()
        .retry(RetryConnectionErrors::new())
        .timeout(Duration::from_secs(10))
        .layer(AuthLayer::new(cache.clone()))
        .service(http_client());

    let response = api
        .clone()
        .oneshot(request(Method::GET, &format!("{base}/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "sent again on a new connection"
    );

    let (base, connections) = closing_server(1).await;
    let error = api
        .oneshot(request(Method::POST, &format!("{base}/b")))
        .await
        .unwrap_err();
    assert!(
        tower_bearer::retry::is_connection_error(error.as_ref()),
        "{error}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a POST is never sent twice"
    );
    assert_eq!(cache.stats().retries, 0, "no 401 anywhere");
}

#[tokio::test(start_paused = true)]
async fn connection_failures_are_retried_as_often_as_set_and_the_budget_allows() {
    let _clock = FrozenClock::freeze().await;
    let (cache, _tokens) = cache().await;
    let get = |base: &str| request(Method::GET, &format!("{base}/"));

    // Two retries: three connections, all closed.
    let (base, connections) = closing_server(usize::MAX).await;
    let api = ServiceBuilder::new()
        .retry(RetryConnectionErrors::new().retries(2))
        .layer(AuthLayer::new(cache.clone()))
        .service(http_client());
    api.oneshot(get(&base)).await.unwrap_err();
    assert_eq!(connections.load(Ordering::SeqCst), 3);

    // An empty budget: no retry at all.
    let (base, connections) = closing_server(usize::MAX).await;
    let api = ServiceBuilder::new()
        .retry(
            RetryConnectionErrors::new()
                .retries(2)
                .budget(TpsBudget::new(Duration::from_secs(10), 0, 0.0)),
        )
        .layer(AuthLayer::new(cache))
        .service(http_client());
    api.oneshot(get(&base)).await.unwrap_err();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn token_failures_timeouts_and_responses_are_never_retried_by_the_policy() {
    let _clock = FrozenClock::freeze().await;
    let get = |url: String| request(Method::GET, &url);

    // The token endpoint is down: the cache makes its own 3 attempts, and
    // the policy adds none.
    let tokens =
        TestServer::start(|_, _| async { text(StatusCode::SERVICE_UNAVAILABLE, "down") }).await;
    let failing = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let api_server = api_server(|_| true).await;
    let api = ServiceBuilder::new()
        .retry(RetryConnectionErrors::new())
        .layer(AuthLayer::new(failing))
        .service(http_client());
    let error: BoxError = api.oneshot(get(api_server.url("/"))).await.unwrap_err();
    assert!(
        error.downcast_ref::<tower_bearer::Error>().is_some(),
        "{error}"
    );
    assert_eq!(tokens.requests(), 3);
    assert_eq!(api_server.requests(), 0);

    // A timeout: the time is spent, not retried.
    let (cache, _tokens) = cache().await;
    let slow = TestServer::start(|_, _| async {
        std::future::pending::<()>().await;
        text(StatusCode::OK, "never")
    })
    .await;
    let api = ServiceBuilder::new()
        .retry(RetryConnectionErrors::new())
        .timeout(Duration::from_secs(1))
        .layer(AuthLayer::new(cache.clone()))
        .service(http_client());
    let call = tokio::spawn(api.clone().oneshot(get(slow.url("/"))));
    support::settle_until(|| slow.requests() == 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let error = call.await.unwrap().unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(slow.requests(), 1);

    // A response, even a 503, is the caller's.
    let busy =
        TestServer::start(|_, _| async { text(StatusCode::SERVICE_UNAVAILABLE, "busy") }).await;
    let response = api.oneshot(get(busy.url("/"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.requests(), 1);
}
