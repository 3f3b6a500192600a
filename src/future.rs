//! [`ResponseFuture`]: the per-request state machine of
//! [`AuthService`](crate::AuthService).
//!
//! The common case stays unboxed: the request went out with a cached token,
//! and the future polls the inner service's future directly (`Sent`). The
//! rare cases, waiting for a token and the retry after a rejection, are
//! `async fn`s behind one box (`Boxed`), as linkerd does for its retries.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;

use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::TryCloneBody;
use crate::reject::{Classify, OnRejection, Verdict};
use crate::source::BoxFuture;
use crate::{BoxError, TokenCache};

pin_project! {
    /// Response future for [`AuthService`](crate::AuthService).
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, S::Response>,
        // What the `Calling` state needs once the response is in; `None` for
        // requests that carried their own `Authorization`.
        sent: Option<Sent<S, B, C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        // The request is with the inner service.
        Calling { #[pin] fut: F },
        // Waiting for a token, or retrying after a rejection.
        Boxed { fut: BoxFuture<'static, Result<R, BoxError>> },
    }
}

/// What a request sent with a cached token needs to handle a rejection.
pub(crate) struct Sent<S, B, C> {
    pub(crate) cache: TokenCache,
    /// The generation of the token the request carried.
    pub(crate) generation: u64,
    pub(crate) classify: C,
    /// A service (polled ready only when needed) and a copy of the request,
    /// for the one retry, boxed so that the common future stays small;
    /// `None` when the body cannot be replayed or
    /// retries are off.
    pub(crate) replay: Option<Box<(S, Replay<B>)>>,
}

/// A copy of a request, taken before it was sent (with the `Authorization`
/// it was sent with).
pub(crate) struct Replay<B> {
    request: Request<B>,
}

impl<B> Replay<B> {
    /// Copies method, URI, version, headers and extensions of `req` around
    /// `body` (`Request<B>` itself is `Clone` only for `B: Clone`). Taken
    /// after the token's header went in, so the copy knows which token the
    /// first attempt carried.
    pub(crate) fn with_body(req: &Request<B>, body: B) -> Self {
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Replay { request: copy }
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            sent: None,
        }
    }

    pub(crate) fn sent(fut: S::Future, sent: Sent<S, B, C>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            sent: Some(sent),
        }
    }

    pub(crate) fn acquiring(
        fut: impl Future<Output = Result<S::Response, BoxError>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            state: State::Boxed { fut: Box::pin(fut) },
            sent: None,
        }
    }
}

impl<S, B, C, ResB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: Body + Send + 'static,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let Some(sent) = this.sent.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    if sent
                        .classify
                        .classify(response.status(), response.headers())
                        == Verdict::Accepted
                    {
                        return Poll::Ready(Ok(response));
                    }
                    // B6: invalidate only the token we sent.
                    sent.cache.record_rejection();
                    sent.cache.invalidate_generation(sent.generation);
                    let Some(replay) = sent.replay else {
                        return Poll::Ready(Ok(response));
                    };
                    let (service, replay) = *replay;
                    let fut = retry(
                        response,
                        service,
                        replay,
                        sent.cache,
                        sent.generation,
                        sent.classify,
                    );
                    this.state.set(State::Boxed { fut: Box::pin(fut) });
                }
                StateProj::Boxed { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// The slow path: wait for a token, then send. `service` is a clone of the
/// inner service, polled ready only once the token is there.
pub(crate) async fn acquire_then_call<S, B, C, ResB>(
    mut service: S,
    mut req: Request<B>,
    cache: TokenCache,
    classify: C,
    on_rejection: OnRejection,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody,
    ResB: Body + Send + 'static,
{
    let current = cache.acquire(None).await?;
    let body_copy = match on_rejection {
        OnRejection::RetryOnce => req.body().try_clone_body(),
        OnRejection::Return => None,
    };
    req.headers_mut().insert(AUTHORIZATION, current.header);
    // The same copy as on the fast path: taken once the header is in.
    let replay = body_copy.map(|body| Replay::with_body(&req, body));
    ready_service(&mut service).await?;
    let response = service.call(req).await.map_err(Into::into)?;
    if classify.classify(response.status(), response.headers()) == Verdict::Accepted {
        return Ok(response);
    }
    cache.record_rejection();
    cache.invalidate_generation(current.generation);
    match replay {
        Some(replay) => {
            retry(
                response,
                service,
                replay,
                cache,
                current.generation,
                classify,
            )
            .await
        }
        None => Ok(response),
    }
}

/// The one retry after a rejection (B6). Returns the rejection unchanged
/// when the body cannot be replayed after all, when no new token can be had,
/// or when the "new" token is the rejected value again.
///
/// A rejection of the retry is returned as it is, and does not invalidate the
/// brand-new token: the next request uses it, and if that is rejected too,
/// that request causes the next refresh. So an API that rejects every token
/// costs one token request per request, never more.
async fn retry<S, B, C, ResB>(
    rejected: Response<ResB>,
    mut service: S,
    replay: Replay<B>,
    cache: TokenCache,
    generation: u64,
    classify: C,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody,
    ResB: Body + Send + 'static,
{
    if !replay.request.body().is_replayable() {
        tracing::debug!("rejected request body cannot be replayed; returning the rejection");
        return Ok(rejected);
    }
    let current = match cache.acquire(Some(generation)).await {
        Ok(current) => current,
        Err(error) => {
            tracing::debug!(%error, "no new token for the retry; returning the rejection");
            return Ok(rejected);
        }
    };
    if replay.request.headers().get(AUTHORIZATION) == Some(&current.header) {
        tracing::debug!("the new token is the rejected one; returning the rejection");
        return Ok(rejected);
    }
    discard(rejected);
    let Replay { mut request } = replay;
    request.headers_mut().insert(AUTHORIZATION, current.header);
    cache.record_retry();
    // NOTE: the service's readiness was used by the first call (or this is a
    // clone that was never polled); poll it again before sending.
    ready_service(&mut service).await?;
    let response = service.call(request).await.map_err(Into::into)?;
    if classify.classify(response.status(), response.headers()) == Verdict::Rejected {
        cache.record_rejection();
    }
    Ok(response)
}

/// At most this much of a rejected response's body is read before it is
/// dropped for the retry.
const DISCARD_LIMIT: usize = 64 * 1024;
/// For at most this long.
const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Lets go of a rejection that is being retried, the way connections like.
///
/// Dropping a response whose body has not ended resets its HTTP/2 stream
/// and closes an HTTP/1.1 connection. Worse, h2 counts frames that arrive
/// after the reset, for streams it has forgotten, as its own errors, and
/// ends the whole connection after 1024 of them (GOAWAY
/// `too_many_internal_resets`): a burst of rejections over one connection
/// could take down every request on it. So a body that has not ended is
/// read to its end in the background, without delaying the retry: at most
/// [`DISCARD_LIMIT`] bytes for at most [`DISCARD_TIME`], then dropped as
/// it is.
fn discard<B>(rejected: Response<B>)
where
    B: Body + Send + 'static,
{
    let body = rejected.into_body();
    if body.is_end_stream() || body.size_hint().lower() > DISCARD_LIMIT as u64 {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = pin!(body);
        let mut left = DISCARD_LIMIT;
        let read_to_end = poll_fn(|cx| {
            loop {
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        let len = frame.data_ref().map_or(0, Buf::remaining);
                        match left.checked_sub(len) {
                            Some(rest) => left = rest,
                            None => return Poll::Ready(()),
                        }
                    }
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }
        });
        let _ = tokio::time::timeout(DISCARD_TIME, read_to_end).await;
    });
}

async fn ready_service<S, Req>(service: &mut S) -> Result<(), BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(Into::into)
}
