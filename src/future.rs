//! [`ResponseFuture`]: the per-request state machine of
//! [`AuthService`](crate::AuthService).
//!
//! The common case stays unboxed: the request went out with a cached token,
//! and the future polls the inner service's future directly (`Calling`).
//! The rare cases, waiting for a token and the retry after a rejection, are
//! `async fn`s behind one box (`Boxed`), as linkerd does for its retries.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Buf;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::TryCloneBody;
use crate::cache::read::Local;
use crate::challenge::Challenges;
use crate::copy::Head;
#[doc(hidden)]
pub use crate::copy::{NoCopy, Replay, Slot};
use crate::proof::Proofs;
use crate::reject::{Classify, OnRejection, RetryOnce, StepUp, Verdict};
use crate::source::BoxFuture;
use crate::{BoxError, TokenCache, TokenParams};

pin_project! {
    /// Response future for [`AuthService`](crate::AuthService).
    pub struct ResponseFuture<S, B, C, R = RetryOnce>
    where
        S: Service<Request<B>>,
        R: OnRejection,
    {
        #[pin]
        state: State<S::Future, S::Response>,
        // What the `Calling` state needs once the response is in; `None` for
        // requests that carried their own `Authorization`.
        sent: Option<Sent<S, B, C, R>>,
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
pub(crate) struct Sent<S, B, C, R: OnRejection> {
    /// The token the request carried (this thread's copy of it).
    pub(crate) token: Arc<Local>,
    pub(crate) classify: C,
    /// With [`RetryOnce`], a service (polled ready only when needed) and a
    /// copy of the request for the one retry; `None` when the body cannot
    /// be replayed. Nothing with [`Return`](crate::reject::Return).
    pub(crate) replay: R::Copy<S, B>,
    /// Put in the response's extensions, when the layer reports origins.
    pub(crate) origin: Option<TokenOrigin>,
}

impl<S, B, C, R> ResponseFuture<S, B, C, R>
where
    S: Service<Request<B>>,
    R: OnRejection,
{
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            sent: None,
        }
    }

    #[inline]
    pub(crate) fn sent(fut: S::Future, sent: Sent<S, B, C, R>) -> Self {
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

impl<S, B, C, R, ResB> ResponseFuture<S, B, C, R>
where
    R: OnRejection,
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Send + 'static,
{
    /// This future, putting `origin` in its response's extensions (unless
    /// a retry marked it [`TokenOrigin::Retried`]). A request sent with a
    /// token keeps it in its [`Sent`] (in its padding: the future does not
    /// grow); a boxed one is wrapped.
    pub(crate) fn reporting(self, origin: TokenOrigin) -> Self {
        let ResponseFuture { state, mut sent } = self;
        let state = match state {
            State::Boxed { fut } => State::Boxed {
                fut: Box::pin(async move {
                    let mut response = fut.await?;
                    if response.extensions().get::<TokenOrigin>().is_none() {
                        response.extensions_mut().insert(origin);
                    }
                    Ok(response)
                }),
            },
            calling => {
                if let Some(sent) = &mut sent {
                    sent.origin = Some(origin);
                }
                calling
            }
        };
        ResponseFuture { state, sent }
    }
}

impl<S, B, C, R, ResB> Future for ResponseFuture<S, B, C, R>
where
    R: OnRejection,
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: Body + Send + 'static,
{
    type Output = Result<Response<ResB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut state, sent) = (this.state, this.sent);
        loop {
            match state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let Some(kept) = sent.as_ref() else {
                        return Poll::Ready(Ok(response));
                    };
                    let verdict = kept
                        .classify
                        .classify(response.status(), response.headers());
                    if matches!(verdict, Verdict::Accepted) {
                        return Poll::Ready(Ok(with_origin(response, kept.origin)));
                    }
                    let origin = kept.origin;
                    match rejection(response, verdict, sent.take()) {
                        Ok(response) => return Poll::Ready(Ok(with_origin(response, origin))),
                        Err(retry) => state.set(State::Boxed { fut: retry }),
                    }
                }
                StateProj::Boxed { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// A response whose verdict is not [`Verdict::Accepted`]: invalidates a
/// rejected token (B6), and returns the response, or the retry to await
/// instead.
#[cold]
#[inline(never)]
#[allow(clippy::type_complexity)]
fn rejection<S, B, C, R, ResB>(
    response: Response<ResB>,
    verdict: Verdict,
    sent: Option<Sent<S, B, C, R>>,
) -> Result<Response<ResB>, BoxFuture<'static, Result<Response<ResB>, BoxError>>>
where
    R: OnRejection,
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: Body + Send + 'static,
{
    let Some(sent) = sent else {
        return Ok(response);
    };
    rejected(
        response,
        verdict,
        sent.token,
        sent.classify,
        sent.replay.into_replay(),
    )
}

/// [`rejection`] with the parts of what was sent.
#[allow(clippy::type_complexity)]
fn rejected<S, B, C, ResB>(
    response: Response<ResB>,
    verdict: Verdict,
    token: Arc<Local>,
    classify: C,
    replay: Option<Replay<S, B>>,
) -> Result<Response<ResB>, BoxFuture<'static, Result<Response<ResB>, BoxError>>>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: Body + Send + 'static,
{
    let Some(cache) = TokenCache::of(&token) else {
        return Ok(with_challenges(response));
    };
    let Some(next) = decide(&cache, verdict, token.generation, &token.header) else {
        return Ok(with_challenges(response));
    };
    let Some(Replay {
        service,
        head,
        body,
        release_wait,
    }) = replay
    else {
        return Ok(with_challenges(response));
    };
    Err(Box::pin(retry(
        response,
        Copy {
            service,
            head,
            body,
            release_wait,
        },
        cache,
        next,
        classify,
    )))
}

/// The response future of a request sent with a DPoP-bound token: keeps
/// the `DPoP-Nonce` the response gives for the origin of `uri` (the
/// request's, when a proof was added), then
/// settles the response like [`ResponseFuture`] does.
pub(crate) async fn proved<S, B, C, ResB>(
    fut: S::Future,
    token: Arc<Local>,
    classify: C,
    replay: Option<Replay<S, B>>,
    uri: Option<Uri>,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: Body + Send + 'static,
{
    let response = fut.await.map_err(Into::into)?;
    if let Some(uri) = &uri {
        observe_nonce(token.proofs.as_ref(), uri, response.headers());
    }
    let verdict = classify.classify(response.status(), response.headers());
    if matches!(verdict, Verdict::Accepted) {
        return Ok(response);
    }
    match rejected(response, verdict, token, classify, replay) {
        Ok(response) => Ok(response),
        Err(retry) => retry.await,
    }
}

/// What a verdict other than `Accepted` asks for, after invalidating a
/// rejected token (B6): a retry with a new token, a retry with a stepped-up
/// token, or nothing (`None`: return the response).
fn decide(
    cache: &TokenCache,
    verdict: Verdict,
    generation: u64,
    header: &HeaderValue,
) -> Option<Next> {
    match verdict {
        Verdict::Rejected => {
            // B6: invalidate the token we sent, and only that one.
            cache.record_rejection();
            cache.invalidate_generation(generation);
            Some(Next::NewToken(Rejected {
                generation,
                header: header.clone(),
            }))
        }
        Verdict::StepUp(step_up) => Some(Next::StepUp(step_up)),
        Verdict::Retry => Some(Next::SameToken),
        Verdict::Accepted | Verdict::Denied => None,
    }
}

/// Keeps the `DPoP-Nonce` a response gave for the origin of `uri`.
#[cold]
fn observe_nonce(proofs: Option<&Proofs>, uri: &Uri, headers: &http::HeaderMap) {
    if let Some(proofs) = proofs {
        proofs.observe(uri, headers);
    }
}

/// A response returned to the caller after a verdict other than
/// `Accepted`, with its challenges in its extensions.
fn with_challenges<B>(mut response: Response<B>) -> Response<B> {
    let challenges = Challenges::from_headers(response.headers());
    if !challenges.is_empty() {
        response.extensions_mut().insert(challenges);
    }
    response
}

/// What the retry sends, and with what.
struct Copy<S, B> {
    service: S,
    head: Head,
    body: B,
    release_wait: Duration,
}

/// What the retry's token is.
enum Next {
    /// A new token from the same cache, other than the rejected one.
    NewToken(Rejected),
    /// A token from the variant for the request's parameters stepped up.
    StepUp(StepUp),
    /// The cache's current token (the same one, usually) with a new proof.
    SameToken,
}

/// The token a rejection was for.
struct Rejected {
    generation: u64,
    header: HeaderValue,
}

/// The slow path: wait for a token, then send. `service` is a clone of the
/// inner service, polled ready only once the token is there.
pub(crate) async fn acquire_then_call<S, B, C, R, ResB>(
    mut service: S,
    mut req: Request<B>,
    cache: TokenCache,
    classify: C,
    release_wait: Duration,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    R: OnRejection,
    B: TryCloneBody,
    ResB: Body + Send + 'static,
{
    let current = cache.acquire(None).await?;
    let replay = match R::RETRIES {
        true => req
            .body()
            .try_clone_body()
            .map(|body| (Head::of(&req), body)),
        false => None,
    };
    req.headers_mut()
        .insert(AUTHORIZATION, current.header.clone());
    let uri = current
        .proofs
        .as_ref()
        .map(|proofs| proofs.prove(&mut req))
        .transpose()?;
    ready_service(&mut service).await?;
    let response = service.call(req).await.map_err(Into::into)?;
    if let Some(uri) = &uri {
        observe_nonce(current.proofs.as_ref(), uri, response.headers());
    }
    let verdict = classify.classify(response.status(), response.headers());
    if matches!(verdict, Verdict::Accepted) {
        return Ok(response);
    }
    let Some(next) = decide(&cache, verdict, current.generation, &current.header) else {
        return Ok(with_challenges(response));
    };
    match replay {
        Some((head, body)) => {
            let copy = Copy {
                service,
                head,
                body,
                release_wait,
            };
            retry(response, copy, cache, next, classify).await
        }
        None => Ok(with_challenges(response)),
    }
}

/// The one retry after a rejection (B6) or for a step-up. Returns the
/// response unchanged (with its challenges) when the body cannot be
/// replayed after all, when no new token can be had (among other reasons,
/// while the rejection throttle holds, or when the source cannot ask for
/// the step-up's parameters), or when the "new" token is the rejected
/// value again.
///
/// The retry's own response is returned whatever it says: a request is
/// sent at most twice. A rejection of the retry invalidates the retry's
/// token in its turn, like any rejection; the throttle keeps an API that
/// rejects every token from costing a token request per request.
async fn retry<S, B, C, ResB>(
    first: Response<ResB>,
    copy: Copy<S, B>,
    cache: TokenCache,
    next: Next,
    classify: C,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody,
    ResB: Body + Send + 'static,
{
    let Copy {
        mut service,
        head,
        mut body,
        release_wait,
    } = copy;
    if !body.is_replayable() {
        // The client may still hold the body it was sending when the
        // rejection came (the server answered before reading it to its
        // end). Hold the rejection until it lets go, for a while.
        if !release_wait.is_zero()
            && let Some(sleep) = crate::timer::sleep(release_wait)
        {
            let mut sleep = pin!(sleep);
            poll_fn(|cx| match body.poll_released(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => sleep.as_mut().poll(cx),
            })
            .await;
        }
        if !body.is_replayable() {
            tracing::debug!("rejected request body cannot be replayed; returning the rejection");
            return Ok(with_challenges(first));
        }
    }
    let (source, current) = match next {
        Next::NewToken(rejected) => {
            let current = match cache.acquire(Some(rejected.generation)).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::debug!(%error, "no new token for the retry; returning the rejection");
                    return Ok(with_challenges(first));
                }
            };
            if current.header == rejected.header {
                tracing::debug!("the new token is the rejected one; returning the rejection");
                return Ok(with_challenges(first));
            }
            (cache.clone(), current)
        }
        Next::StepUp(step_up) => {
            let params = match head.params() {
                Some(params) => step_up.apply(params),
                None => step_up.apply(&TokenParams::new()),
            };
            let Some(variant) = cache.variant(&params) else {
                tracing::debug!(
                    "the token source cannot ask for the step-up's parameters; returning the response"
                );
                return Ok(with_challenges(first));
            };
            match variant.acquire(None).await {
                Ok(current) => (variant, current),
                Err(error) => {
                    tracing::debug!(%error, "no token for the step-up; returning the response");
                    return Ok(with_challenges(first));
                }
            }
        }
        Next::SameToken => match cache.acquire(None).await {
            Ok(current) => (cache.clone(), current),
            Err(error) => {
                tracing::debug!(%error, "no token for the retry; returning the response");
                return Ok(with_challenges(first));
            }
        },
    };
    let Some(mut request) = head.into_request(body, current.header.clone()) else {
        return Ok(with_challenges(first));
    };
    let uri = match current
        .proofs
        .as_ref()
        .map(|proofs| proofs.prove(&mut request))
    {
        Some(Ok(uri)) => Some(uri),
        Some(Err(error)) => {
            tracing::debug!(%error, "no proof for the retry; returning the response");
            return Ok(with_challenges(first));
        }
        None => None,
    };
    discard(first);
    cache.record_retry();
    // NOTE: the service's readiness was used by the first call (or this is a
    // clone that was never polled); poll it again before sending.
    ready_service(&mut service).await?;
    let response = service.call(request).await.map_err(Into::into)?;
    if let Some(uri) = &uri {
        observe_nonce(current.proofs.as_ref(), uri, response.headers());
    }
    let response = match classify.classify(response.status(), response.headers()) {
        Verdict::Accepted => response,
        Verdict::Rejected => {
            // B6: the retry's token is invalidated too.
            source.record_rejection();
            source.invalidate_generation(current.generation);
            with_challenges(response)
        }
        Verdict::Denied | Verdict::StepUp(_) | Verdict::Retry => with_challenges(response),
    };
    Ok(retried(response))
}

/// Where the token of a request came from, in its response's extensions
/// when the layer [reports it](crate::AuthLayer::report_token_origin) (and
/// always in a response to a retried request). Read as the cache stood
/// when the call started.
///
/// ```
/// use tower_bearer::future::TokenOrigin;
///
/// # let response = http::Response::new(());
/// match response.extensions().get::<TokenOrigin>() {
///     Some(TokenOrigin::Waited) => println!("this call waited for a token"),
///     _ => {}
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenOrigin {
    /// The cache's fresh token.
    Cached,
    /// No usable token: the request waited for a refresh.
    Waited,
    /// A stale token, still usable, while a refresh ran in the background
    /// (B2).
    Stale,
    /// The request was sent once more, with a new token (after a
    /// rejection), a stepped-up one or a new proof.
    Retried,
}

/// `response`, with `origin` in its extensions when the layer reports
/// origins.
#[inline(always)]
fn with_origin<B>(response: Response<B>, origin: Option<TokenOrigin>) -> Response<B> {
    match origin {
        None => response,
        Some(origin) => insert_origin(response, origin),
    }
}

#[cold]
#[inline(never)]
fn insert_origin<B>(mut response: Response<B>, origin: TokenOrigin) -> Response<B> {
    response.extensions_mut().insert(origin);
    response
}

/// A response to a retried request, marked as one.
fn retried<B>(mut response: Response<B>) -> Response<B> {
    response.extensions_mut().insert(TokenOrigin::Retried);
    response
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
