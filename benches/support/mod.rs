//! What the benchmarks share: a no-op inner service, a typical request, and
//! one call polled to completion.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::Service;

/// Answers every request at once with an empty 200, dropping the request.
#[derive(Clone)]
pub struct Noop;

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

/// A typical request: a URI and two headers.
pub fn request() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items?page=2")
        .header("accept", "application/json")
        .header("user-agent", "bench/1.0")
        .body(Empty::new())
        .unwrap()
}

/// Calls `svc` once and polls the response future to completion.
pub fn call<S, B>(svc: &mut S, req: Request<B>) -> S::Response
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
