//! The per-request cost of attaching a fresh token.
//!
//! One run measures, per call (request in, response out, future polled to
//! completion; building the request is outside the timing):
//!
//! * `bare`: the no-op inner service alone;
//! * `add_authorization`: tower-http's `AddAuthorization` (a fixed, sensitive
//!   header value), the baseline to beat;
//! * `auth_service/return`: `AuthService` with a fresh cached token, when no
//!   retry copy is kept (`OnRejection::Return`, or a body that cannot be
//!   replayed): the token path alone;
//! * `auth_service/retry_once`: the default, `OnRejection::RetryOnce`, with a
//!   replayable (empty) body: the token path plus the copy of the request
//!   head kept for the one retry after a 401.
//!
//! Run with `cargo bench --bench hot_path`; results are in BENCHMARKS.md.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_bearer::reject::OnRejection;
use tower_bearer::{AuthLayer, Token, TokenCache, source};
use tower_http::auth::AddAuthorizationLayer;

/// Answers every request at once with an empty 200, dropping the request.
#[derive(Clone)]
struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(req);
        ready(Ok(Response::new(())))
    }
}

/// A typical request: a URI and two headers.
fn request() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items?page=2")
        .header("accept", "application/json")
        .header("user-agent", "bench/1.0")
        .body(Empty::new())
        .unwrap()
}

/// Calls `svc` once and polls the response future to completion.
fn call<S, B>(svc: &mut S, req: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("a fresh token never waits"),
    }
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";

fn warm_cache(rt: &tokio::runtime::Runtime) -> TokenCache {
    let cache = TokenCache::new(source::from_fn(|_| async {
        Ok(Token::new(TOKEN).with_expires_in(Duration::from_secs(24 * 3600)))
    }));
    rt.block_on(cache.token()).unwrap();
    cache
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let cache = warm_cache(&rt);

    let mut group = c.benchmark_group("hot_path");
    let mut bare = Noop;
    group.bench_function("bare", |b| {
        b.iter_batched(request, |req| call(&mut bare, req), BatchSize::SmallInput)
    });

    let mut add = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(Noop);
    group.bench_function("add_authorization", |b| {
        b.iter_batched(request, |req| call(&mut add, req), BatchSize::SmallInput)
    });

    let mut auth = AuthLayer::new(cache.clone())
        .on_rejection(OnRejection::Return)
        .layer(Noop);
    group.bench_function("auth_service/return", |b| {
        b.iter_batched(request, |req| call(&mut auth, req), BatchSize::SmallInput)
    });

    let mut auth_retry = AuthLayer::new(cache.clone()).layer(Noop);
    group.bench_function("auth_service/retry_once", |b| {
        b.iter_batched(
            request,
            |req| call(&mut auth_retry, req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = hot_path
}
criterion_main!(benches);
