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
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version,
};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::TryCloneBody;
use crate::cache::read::Local;
use crate::reject::{Classify, OnRejection, RetryOnce, Verdict};
use crate::source::BoxFuture;
use crate::{BoxError, TokenCache};

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
}

/// Where a response future keeps the copy of a request for the retry:
/// [`Replay`] with [`RetryOnce`], [`NoCopy`] with
/// [`Return`](crate::reject::Return). Not for use outside this crate.
#[doc(hidden)]
pub trait Slot<S, B>: Sized {
    /// Takes the copy, before the request is sent.
    #[doc(hidden)]
    fn capture(inner: &S, req: &Request<B>) -> Self
    where
        S: Clone,
        B: TryCloneBody;

    /// The copy, after a rejection.
    #[doc(hidden)]
    fn into_replay(self) -> Option<Replay<S, B>>;
}

/// No copy: [`Return`](crate::reject::Return) never retries. Not for use
/// outside this crate.
#[doc(hidden)]
#[derive(Debug)]
pub struct NoCopy;

impl<S, B> Slot<S, B> for NoCopy {
    #[inline]
    fn capture(_: &S, _: &Request<B>) -> Self {
        NoCopy
    }

    fn into_replay(self) -> Option<Replay<S, B>> {
        None
    }
}

impl<S, B> Slot<S, B> for Option<Replay<S, B>> {
    #[inline]
    fn capture(inner: &S, req: &Request<B>) -> Self
    where
        S: Clone,
        B: TryCloneBody,
    {
        let body = req.body().try_clone_body()?;
        Some(Replay {
            service: inner.clone(),
            head: Head::of(req),
            body,
        })
    }

    fn into_replay(self) -> Option<Replay<S, B>> {
        self
    }
}

/// The copy of a request kept for the one retry after a rejection, with a
/// clone of the inner service to send it with. Not for use outside this
/// crate.
#[doc(hidden)]
pub struct Replay<S, B> {
    service: S,
    head: Head,
    body: B,
}

/// A request without its body: method, URI, version, extensions and
/// headers (`Request<B>` itself is `Clone` only for `B: Clone`).
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    extensions: Extensions,
    headers: HeaderBytes,
}

impl Head {
    #[inline]
    fn of<B>(req: &Request<B>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            extensions: req.extensions().clone(),
            headers: HeaderBytes::of(req.headers()),
        }
    }

    /// The request to send again, with `authorization` in place of the
    /// rejected token; `None` if a header cannot be rebuilt (never, for
    /// headers that came from a `HeaderMap`).
    fn into_request<B>(self, body: B, authorization: HeaderValue) -> Option<Request<B>> {
        let mut headers = self.headers.into_map()?;
        headers.insert(AUTHORIZATION, authorization);
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.extensions_mut() = self.extensions;
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// The bytes of a request's headers, for the retry. A retry is rare; the
/// copy is taken for every replayable request. Cloning the `HeaderMap`
/// would allocate its two tables, and cloning a header value built from a
/// string moves its bytes to shared storage, an allocation per value;
/// copying the bytes into one buffer of the exact size allocates once, and
/// not at all for a request without headers.
///
/// Per value: the name's length (2 bytes) and the value's (4 bytes), little
/// endian, a sensitive flag (1 byte), the name, the value. The
/// `Authorization` the request carries is ours and is not copied: the retry
/// carries the new token.
struct HeaderBytes(Vec<u8>);

/// Bytes per header value besides the name and the value.
const PER_VALUE: usize = 7;

impl HeaderBytes {
    #[inline]
    fn of(headers: &HeaderMap) -> Self {
        let len: usize = headers
            .iter()
            .filter(|(name, _)| *name != AUTHORIZATION)
            .map(|(name, value)| PER_VALUE + name.as_str().len() + value.len())
            .sum();
        if len == 0 {
            return HeaderBytes(Vec::new());
        }
        let mut bytes = Vec::with_capacity(len);
        for (name, value) in headers {
            if name == AUTHORIZATION {
                continue;
            }
            // Names are far shorter than 64 KiB, values than 4 GiB (hyper
            // refuses a head of more than a few hundred KiB); a record
            // that says otherwise is cut, fails to parse, and the retry is
            // not sent.
            let name = name.as_str().as_bytes();
            let name = &name[..name.len().min(usize::from(u16::MAX))];
            let sensitive = value.is_sensitive();
            let value = value.as_bytes();
            let value = &value[..value.len().min(u32::MAX as usize)];
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.push(u8::from(sensitive));
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(value);
        }
        HeaderBytes(bytes)
    }

    fn into_map(self) -> Option<HeaderMap> {
        let bytes = self.0;
        let mut map = HeaderMap::new();
        let mut at = 0;
        while at < bytes.len() {
            let meta = bytes.get(at..at + PER_VALUE)?;
            let name_len = usize::from(u16::from_le_bytes([meta[0], meta[1]]));
            let value_len =
                usize::try_from(u32::from_le_bytes([meta[2], meta[3], meta[4], meta[5]])).ok()?;
            let sensitive = meta[6] == 1;
            let name_at = at + PER_VALUE;
            let value_at = name_at + name_len;
            let end = value_at + value_len;
            let name = HeaderName::from_bytes(bytes.get(name_at..value_at)?).ok()?;
            let mut value = HeaderValue::from_bytes(bytes.get(value_at..end)?).ok()?;
            value.set_sensitive(sensitive);
            map.append(name, value);
            at = end;
        }
        Some(map)
    }
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let rejected = this.sent.as_ref().is_some_and(|sent| {
                        sent.classify
                            .classify(response.status(), response.headers())
                            == Verdict::Rejected
                    });
                    if !rejected {
                        return Poll::Ready(Ok(response));
                    }
                    match rejection(response, this.sent.take()) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(retry) => this.state.set(State::Boxed { fut: retry }),
                    }
                }
                StateProj::Boxed { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// A response that rejected the token a request was sent with (B6):
/// invalidates that token, and returns the response, or the retry to
/// await instead.
#[cold]
#[inline(never)]
#[allow(clippy::type_complexity)]
fn rejection<S, B, C, R, ResB>(
    response: Response<ResB>,
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
    // B6: invalidate the token we sent, and only that one.
    let Some(cache) = TokenCache::of(&sent.token) else {
        return Ok(response);
    };
    cache.record_rejection();
    cache.invalidate_generation(sent.token.generation);
    let Some(Replay {
        service,
        head,
        body,
    }) = sent.replay.into_replay()
    else {
        return Ok(response);
    };
    let rejected = Rejected {
        generation: sent.token.generation,
        header: sent.token.header.clone(),
    };
    Err(Box::pin(retry(
        response,
        service,
        head,
        body,
        cache,
        rejected,
        sent.classify,
    )))
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
    ready_service(&mut service).await?;
    let response = service.call(req).await.map_err(Into::into)?;
    if classify.classify(response.status(), response.headers()) == Verdict::Accepted {
        return Ok(response);
    }
    // B6: invalidate the token we sent, and only that one.
    cache.record_rejection();
    cache.invalidate_generation(current.generation);
    match replay {
        Some((head, body)) => {
            let rejected = Rejected {
                generation: current.generation,
                header: current.header,
            };
            retry(response, service, head, body, cache, rejected, classify).await
        }
        None => Ok(response),
    }
}

/// The one retry after a rejection (B6). Returns the rejection unchanged
/// when the body cannot be replayed after all, when no new token can be had
/// (among other reasons, while the rejection throttle holds), or when the
/// "new" token is the rejected value again.
///
/// A rejection of the retry invalidates the retry's token in its turn, like
/// any rejection; the throttle keeps an API that rejects every token from
/// costing a token request per request.
async fn retry<S, B, C, ResB>(
    rejected: Response<ResB>,
    mut service: S,
    head: Head,
    body: B,
    cache: TokenCache,
    token: Rejected,
    classify: C,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody,
    ResB: Body + Send + 'static,
{
    if !body.is_replayable() {
        tracing::debug!("rejected request body cannot be replayed; returning the rejection");
        return Ok(rejected);
    }
    let current = match cache.acquire(Some(token.generation)).await {
        Ok(current) => current,
        Err(error) => {
            tracing::debug!(%error, "no new token for the retry; returning the rejection");
            return Ok(rejected);
        }
    };
    if current.header == token.header {
        tracing::debug!("the new token is the rejected one; returning the rejection");
        return Ok(rejected);
    }
    let Some(request) = head.into_request(body, current.header) else {
        return Ok(rejected);
    };
    discard(rejected);
    cache.record_retry();
    // NOTE: the service's readiness was used by the first call (or this is a
    // clone that was never polled); poll it again before sending.
    ready_service(&mut service).await?;
    let response = service.call(request).await.map_err(Into::into)?;
    if classify.classify(response.status(), response.headers()) == Verdict::Rejected {
        // B6: the retry's token is invalidated too.
        cache.record_rejection();
        cache.invalidate_generation(current.generation);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy<B>(req: &Request<B>, body: B) -> Request<B> {
        Head::of(req)
            .into_request(body, HeaderValue::from_static("Bearer new"))
            .unwrap()
    }

    #[test]
    fn the_retry_copy_keeps_every_header_but_ours_with_its_sensitivity() {
        let mut secret = HeaderValue::from_static("s3cr3t");
        secret.set_sensitive(true);
        let long = "v".repeat(70_000);
        let req = Request::post("https://api.example/v1?x=1")
            .header("accept", "application/json")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("x-api-key", secret)
            .header("x-long", long.as_str())
            .header(AUTHORIZATION, "Bearer old")
            .extension(7u32)
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        let copy = copy(&req, ());
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), Version::HTTP_2);
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        assert_eq!(copy.headers()["accept"], "application/json");
        let multi: Vec<_> = copy.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(copy.headers()["x-api-key"].is_sensitive());
        assert!(!copy.headers()["accept"].is_sensitive());
        assert_eq!(copy.headers()["x-long"], long.as_str());
        let auth: Vec<_> = copy.headers().get_all(AUTHORIZATION).iter().collect();
        assert_eq!(auth, ["Bearer new"]);
        assert_eq!(copy.headers().len(), 6);
    }

    #[test]
    fn a_request_with_no_headers_but_ours_copies_without_allocating() {
        let req = Request::get("/")
            .header(AUTHORIZATION, "Bearer old")
            .body(())
            .unwrap();
        assert_eq!(HeaderBytes::of(req.headers()).0.capacity(), 0);
        let req = Request::get("/").body(()).unwrap();
        assert_eq!(HeaderBytes::of(req.headers()).0.capacity(), 0);
        assert_eq!(copy(&req, ()).headers().len(), 1);
    }
}
