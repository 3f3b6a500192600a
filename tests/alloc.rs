//! The per-request path with a fresh token adds no heap allocation (B7:
//! the header is built once per token, copied once per thread, and
//! shared), and the retry copy adds one. Counted with a global allocator
//! that tallies the allocations of the current thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tower::{Layer, Service};
use tower_bearer::reject::Return;
use tower_bearer::{AuthLayer, Token, TokenCache, source};
use tower_http::auth::{AddAuthorization, AddAuthorizationLayer};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// thread-local counter is a `const` initialised `Cell`, so counting never
// allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Answers every request at once with an empty 200.
#[derive(Clone)]
struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(req);
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Allocations made by one call of `svc` (the request is built before
/// counting starts; dropping it inside the service frees, never allocates).
fn allocations_per_call<S, B>(svc: &mut S, make: impl Fn() -> Request<B>) -> usize
where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut counts = Vec::new();
    for _ in 0..5 {
        let req = make();
        let before = ALLOCATIONS.with(Cell::get);
        assert!(svc.poll_ready(&mut cx).is_ready());
        {
            let mut fut = pin!(svc.call(req));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(result) => drop(result.unwrap()),
                Poll::Pending => panic!("a fresh token never waits"),
            }
        }
        counts.push(ALLOCATIONS.with(Cell::get) - before);
    }
    // The first call may warm lazily initialised state; the rest must agree.
    assert!(counts[1..].windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    counts[4]
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items?page=2")
        .header("accept", "application/json")
        .header("user-agent", "alloc-test/1.0")
        .body(Empty::new())
        .unwrap()
}

fn streaming_post() -> Request<UnsyncBoxBody<Bytes, Infallible>> {
    let chunks = futures_util::stream::iter([Ok(http_body::Frame::data(Bytes::from_static(b"x")))]);
    Request::post("https://api.example.com/v1/upload")
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap()
}

fn fresh_cache(rt: &tokio::runtime::Runtime) -> TokenCache {
    let cache = TokenCache::new(source::from_fn(|_| async {
        Ok(Token::new("a-fresh-token").with_expires_in(Duration::from_secs(3600)))
    }));
    rt.block_on(cache.token()).unwrap();
    cache
}

/// tower-http's `AddAuthorization`: a fixed header value, cloned into each
/// request. The floor for a layer that attaches a token.
fn floor() -> AddAuthorization<Noop> {
    AddAuthorizationLayer::bearer("a-fresh-token")
        .as_sensitive(true)
        .layer(Noop)
}

fn plain() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items")
        .body(Empty::new())
        .unwrap()
}

#[test]
fn b7_fresh_token_path_allocates_no_more_than_a_fixed_header() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let cache = fresh_cache(&rt);

    let mut auth = AuthLayer::new(cache.clone())
        .on_rejection(Return)
        .layer(Noop);
    for make in [plain, get] {
        let floor = allocations_per_call(&mut floor(), make);
        assert_eq!(allocations_per_call(&mut auth, make), floor);
    }
    // A request with two headers: adding a third allocates nothing, so
    // nothing at all is allocated on the path.
    assert_eq!(
        allocations_per_call(&mut auth, get),
        allocations_per_call(&mut Noop, get)
    );

    // With retries on (the default), a body that cannot be replayed keeps
    // no copy: still nothing added.
    let floor_stream = allocations_per_call(&mut floor(), streaming_post);
    let mut auth_retry = AuthLayer::new(cache.clone()).layer(Noop);
    assert_eq!(
        allocations_per_call(&mut auth_retry, streaming_post),
        floor_stream
    );
}

fn eight_headers() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items?page=2")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("user-agent", "alloc-test/1.0 (tower-bearer)")
        .header("x-request-id", "3f0e9d2c-6a8b-4c1e-9f7d-2b5a8c4e1d90")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-tenant", "blue")
        .header("cache-control", "no-cache")
        .header("x-client-version", "2026.11.30")
        .body(Empty::new())
        .unwrap()
}

#[test]
fn b6_the_retry_copy_of_a_replayable_request_is_one_allocation() {
    // The default `RetryOnce` keeps a copy of each replayable request
    // until its response is in, inside the response future: a clone of the
    // inner service, the request head, the body copy, and the headers'
    // bytes in one buffer of their own (no `HeaderMap`, no header value
    // clones). One allocation beyond what the request costs without the
    // layer, for eight typical headers as for two; none without headers.
    // See BENCHMARKS.md and `RetryOnce`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let cache = fresh_cache(&rt);

    let full = || {
        Request::post("https://api.example.com/v1/items")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"id\":7}")))
            .unwrap()
    };
    let mut auth_retry = AuthLayer::new(cache.clone()).layer(Noop);
    let floor_plain = allocations_per_call(&mut floor(), plain);
    let with_copy = allocations_per_call(&mut auth_retry, plain);
    assert_eq!(
        with_copy, floor_plain,
        "GET without headers: nothing to copy"
    );
    let bare = allocations_per_call(&mut Noop, get);
    let with_copy = allocations_per_call(&mut auth_retry, get);
    assert_eq!(
        with_copy - bare,
        1,
        "GET with two headers: {with_copy} vs {bare}"
    );
    let bare = allocations_per_call(&mut Noop, eight_headers);
    let with_copy = allocations_per_call(&mut auth_retry, eight_headers);
    assert_eq!(
        with_copy - bare,
        1,
        "GET with eight headers: {with_copy} vs {bare}"
    );
    let bare = allocations_per_call(&mut Noop, full);
    let with_copy = allocations_per_call(&mut auth_retry, full);
    assert_eq!(
        with_copy - bare,
        1,
        "POST with a body: {with_copy} vs {bare}"
    );
}

/// The response future of a request sent with a bearer token is the inner
/// future and 16 bytes (the token's thread copy and the classifier), so
/// that the future of a small inner service stays within the 128 bytes
/// that compilers move inline rather than with a `memcpy` call. This pins
/// a shape, not a time: a DPoP proof's URI once sat here and made every
/// bearer call pay for moving it (`BENCHMARKS.md`).
#[test]
fn b7_a_bearer_requests_future_is_the_inner_future_and_16_bytes() {
    type Inner = Ready<Result<Response<Empty<Bytes>>, Infallible>>;
    type Returning = tower_bearer::future::ResponseFuture<
        Noop,
        Empty<Bytes>,
        tower_bearer::reject::Standard,
        Return,
    >;
    assert_eq!(std::mem::size_of::<Inner>(), 112);
    assert!(
        std::mem::size_of::<Returning>() <= std::mem::size_of::<Inner>() + 16,
        "{} bytes",
        std::mem::size_of::<Returning>()
    );
}
