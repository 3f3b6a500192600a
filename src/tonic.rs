//! tonic: a ready-made stack that puts fresh tokens on gRPC calls and
//! retries a call rejected with UNAUTHENTICATED once, for generated clients.
//!
//! tonic's interceptors are synchronous, so they cannot wait for a token
//! refresh; a tower layer in front of the `Channel` can. [`AuthChannel`]
//! wraps any `Service<http::Request<tonic::body::Body>>` (a
//! `tonic::transport::Channel`, or one with its own layers) and is itself
//! one, so a generated client takes it as is:
//! `HealthClient::new(AuthChannel::new(channel, cache))`.
//!
//! # Example
//!
//! ```no_run
//! use tonic::transport::Channel;
//! use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
//! use tower_bearer::{source::StaticToken, tonic::AuthChannel, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TokenCache::new(StaticToken::new("t0k3n"));
//! let channel = Channel::from_static("http://127.0.0.1:50051").connect().await?;
//!
//! let mut health = HealthClient::new(AuthChannel::new(channel, cache));
//! let status = health.check(HealthCheckRequest { service: String::new() }).await?;
//! # drop(status);
//! # Ok(())
//! # }
//! ```
//!
//! Or as a layer: `ServiceBuilder::new().layer(AuthChannelLayer::new(cache)).service(channel)`.
//!
//! # What it does
//!
//! [`AuthChannel`] is three small services:
//! [`ReplayBodyService`] wraps the request body in a
//! [`ReplayBody`] (recorded up to 64 KiB by default), [`AuthService`]
//! attaches the token and handles rejections, and [`IntoTonicBody`] boxes the
//! body back into a `tonic::body::Body` for the channel. Written by hand it
//! is the `map_request` dance:
//!
//! ```text
//! ServiceBuilder::new()
//!     .map_request(|r: Request<Body>| r.map(ReplayBody::new))
//!     .layer(AuthLayer::new(cache))
//!     .map_request(|r: Request<ReplayBody<Body>>| r.map(Body::new))
//!     .service(channel)
//! ```
//!
//! A plain `AuthLayer` over a channel works too, but never retries: a
//! `tonic::body::Body` cannot be copied (it is replayable only when empty,
//! and gRPC requests never are).
//!
//! # Rejections
//!
//! A gRPC server rejects a token with status 16 (UNAUTHENTICATED), usually
//! in the *trailers-only* form: HTTP 200 with `grpc-status: 16` among the
//! response headers. That counts as a rejection (B6), as does an HTTP 401
//! from a proxy in front of the server: the token is invalidated and the
//! call is sent once more with a new one. If the retry is rejected too, the
//! client sees `Code::Unauthenticated`.
//!
//! A status sent in trailers *after* response data (a streaming call that
//! failed mid-way) is not seen: by then the response belongs to the caller,
//! and the call is not retried. The token is not invalidated either.
//!
//! The call is also not retried when its request message was larger than the
//! cap, or when the channel was still sending it as the rejection arrived
//! and did not let go of it within the release wait (see below).
//!
//! # Errors
//!
//! A call that cannot get a token fails with a `tonic::Status` (boxed in
//! the [`BoxError`], where a generated client finds it): a transient token
//! failure (the token endpoint down or slow, a 5xx, a 429) is
//! `Code::Unavailable`, which retry policies treat as retryable, and a
//! permanent one (`invalid_client`, `invalid_grant`, a 4xx, a response
//! that is not a token) is `Code::Unauthenticated`. The message is the
//! [`Error`](crate::Error)'s display, which never holds a secret, and the
//! `Error` is the status's `source()`. The channel's own errors are passed
//! on as they are.
//!
//! # The release wait
//!
//! A gRPC server that rejects a call answers before it reads the request,
//! so the rejection often arrives while HTTP/2 is still sending the
//! message. The server then resets the stream, and the channel drops the
//! request body: a few microseconds to a round trip later. [`AuthChannel`]
//! holds the rejection until that has happened, so that the retry can send
//! the recorded message, but never longer than the release wait
//! ([`DEFAULT_RELEASE_WAIT`], 1 s, set with
//! [`AuthChannelLayer::release_wait`]). A channel that keeps the body (a
//! client-streaming call whose stream waits for the response, a server or
//! proxy that does not reset the stream) would otherwise hold the call
//! forever; after the wait, the rejection is returned unchanged, and the
//! token has been invalidated for the next call. With
//! [`Return`](crate::reject::Return) there is no retry and so no wait.
//!
//! # Readiness
//!
//! A `Channel` is a `tower::buffer::Buffer` inside: a clone of a ready
//! channel is not ready, and calling it panics ("send_item called without
//! first calling poll_reserve"). [`AuthChannel`] never does that: the first
//! attempt goes to the channel that was polled ready, and the retry (and a
//! call that waited for a token) goes to a clone that it polls ready first.
//!
//! # Routing by host
//!
//! Above a `Channel`, request URIs carry only the path
//! (`/grpc.health.v1.Health/Check`): the channel adds its origin below. So a
//! [`RouteLayer`](crate::route::RouteLayer) above a channel sends no token at
//! all. Use one `AuthChannel` per channel, with the cache that belongs to
//! that channel's server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::replay::Released;
use crate::body::{DEFAULT_REPLAY_CAP, ReplayBody, ReplayBodyService, TryCloneBody};
use crate::future::ResponseFuture;
use crate::reject::{Classify, OnRejection, RetryOnce, Standard, Verdict};
use crate::{AuthLayer, AuthService, BoxError, TokenCache};

/// A tonic request body can be replayed only when it is at its end (no
/// data, no trailers). Wrap it in a [`ReplayBody`] (or use [`AuthChannel`])
/// to retry gRPC calls.
impl TryCloneBody for ::tonic::body::Body {
    fn try_clone_body(&self) -> Option<Self> {
        crate::body::known_empty(self).then(::tonic::body::Body::empty)
    }
}

/// How long a rejection is held at most, waiting for the channel to let go
/// of the request body so that the call can be retried: 1 s, as for any
/// stack (see [`crate::body::DEFAULT_RELEASE_WAIT`] and [the release
/// wait](self#the-release-wait)).
pub const DEFAULT_RELEASE_WAIT: Duration = crate::body::DEFAULT_RELEASE_WAIT;

/// Applies [`AuthChannel`]: fresh tokens and one retry after
/// UNAUTHENTICATED, for a tonic channel. See the [module documentation](self).
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tonic::transport::Channel;
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::ServiceBuilder;
/// use tower_bearer::{source::StaticToken, tonic::AuthChannelLayer, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = TokenCache::new(StaticToken::new("t0k3n"));
/// let channel = Channel::from_static("http://127.0.0.1:50051").connect().await?;
/// let channel = ServiceBuilder::new()
///     .layer(
///         AuthChannelLayer::new(cache)
///             .replay_cap(16 * 1024)                      // larger messages are sent once
///             .release_wait(Duration::from_millis(200)),  // hold a rejection at most this long
///     )
///     .service(channel);
/// let health = HealthClient::new(channel);
/// # drop(health);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthChannelLayer<C = Standard, R = RetryOnce> {
    auth: AuthLayer<C, R>,
    classify: C,
    cap: usize,
    release_wait: Duration,
}

impl AuthChannelLayer {
    /// Tokens from `cache`, with the [`Standard`] rejection rules, request
    /// messages recorded up to [`DEFAULT_REPLAY_CAP`] bytes and rejections
    /// held up to [`DEFAULT_RELEASE_WAIT`].
    pub fn new(cache: TokenCache) -> Self {
        AuthChannelLayer {
            auth: AuthLayer::new(cache),
            classify: Standard::new(),
            cap: DEFAULT_REPLAY_CAP,
            release_wait: DEFAULT_RELEASE_WAIT,
        }
    }
}

impl<C, R> AuthChannelLayer<C, R> {
    /// Replaces the rules that decide whether a response rejected its token
    /// (see [`AuthLayer::classify`]).
    pub fn classify<C2: Classify>(self, classify: C2) -> AuthChannelLayer<C2, R> {
        AuthChannelLayer {
            auth: self.auth.classify(classify.clone()),
            classify,
            cap: self.cap,
            release_wait: self.release_wait,
        }
    }

    /// What to do after a rejection: [`RetryOnce`] (the default) or
    /// [`Return`](crate::reject::Return); see [`AuthLayer::on_rejection`].
    /// With `Return`, rejections are not held for the release wait.
    pub fn on_rejection<R2: OnRejection>(self, on_rejection: R2) -> AuthChannelLayer<C, R2> {
        AuthChannelLayer {
            auth: self.auth.on_rejection(on_rejection),
            classify: self.classify,
            cap: self.cap,
            release_wait: self.release_wait,
        }
    }

    /// How long a rejection is held at most, waiting for the channel to let
    /// go of the request body (default [`DEFAULT_RELEASE_WAIT`]); see [the
    /// release wait](self#the-release-wait). After it, the rejection is
    /// returned without a retry. `Duration::ZERO` never holds a rejection.
    pub fn release_wait(mut self, wait: Duration) -> Self {
        self.release_wait = wait;
        self
    }

    /// Records request messages up to `cap` bytes for the retry (default
    /// [`DEFAULT_REPLAY_CAP`]); larger ones are sent once.
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }
}

impl<C, R: fmt::Debug> fmt::Debug for AuthChannelLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChannelLayer")
            .field("auth", &self.auth)
            .field("cap", &self.cap)
            .field("release_wait", &self.release_wait)
            .finish()
    }
}

impl<S, C: Clone, R: OnRejection> Layer<S> for AuthChannelLayer<C, R> {
    type Service = AuthChannel<S, C, R>;

    fn layer(&self, channel: S) -> Self::Service {
        // Holding a rejection is only worth it when it may be retried.
        let release_wait = if R::RETRIES {
            self.release_wait
        } else {
            Duration::ZERO
        };
        AuthChannel {
            inner: ReplayBodyService::with_cap(
                // The release wait is `IntoTonicBody`'s here, below the auth
                // layer: it holds the rejection itself, so the auth layer
                // does not wait a second time.
                self.auth
                    .clone()
                    .release_wait(Duration::ZERO)
                    .layer(IntoTonicBody {
                        inner: channel,
                        classify: self.classify.clone(),
                        release_wait,
                    }),
                self.cap,
            ),
        }
    }
}

/// A tonic channel (any `Service<http::Request<tonic::body::Body>>`) that
/// attaches fresh tokens and retries once after UNAUTHENTICATED. See the
/// [module documentation](self).
///
/// `Clone` when the channel is; fails with [`BoxError`], which a generated
/// client turns into a `tonic::Status`: a token failure is already one,
/// `Code::Unavailable` when transient and `Code::Unauthenticated` when
/// permanent (see [errors](self#errors)).
///
/// # Example
///
/// With a stand-in for a `tonic::transport::Channel` that rejects the first
/// token the way a tonic server does (trailers-only, `grpc-status: 16`):
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use tonic::body::Body;
/// use tower::ServiceExt;
/// use tower_bearer::{source, tonic::AuthChannel, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// // Issues tok-1, tok-2, …
/// let issued = Arc::new(AtomicUsize::new(0));
/// let cache = TokenCache::new(source::from_fn(move |_previous| {
///     let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
///     async move { Ok(Token::new(format!("tok-{n}"))) }
/// }));
/// let channel = tower::service_fn(|req: http::Request<Body>| async move {
///     let status = if req.headers()["authorization"] == "Bearer tok-1" { "16" } else { "0" };
///     let response = http::Response::builder().header("grpc-status", status).body(Body::empty());
///     Ok::<_, http::Error>(response?)
/// });
///
/// let request = http::Request::post("/grpc.health.v1.Health/Check").body(Body::empty())?;
/// let response = AuthChannel::new(channel, cache.clone()).oneshot(request).await?;
/// assert_eq!(response.headers()["grpc-status"], "0");
/// assert_eq!(cache.stats().retries, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthChannel<S, C = Standard, R = RetryOnce> {
    inner: ReplayBodyService<AuthService<IntoTonicBody<S, C>, C, R>>,
}

impl<S> AuthChannel<S> {
    /// Wraps `channel`, attaching tokens from `cache`; the same as
    /// `AuthChannelLayer::new(cache).layer(channel)`.
    pub fn new(channel: S, cache: TokenCache) -> Self {
        AuthChannelLayer::new(cache).layer(channel)
    }

    /// An [`AuthChannelLayer`] over `cache`.
    pub fn layer(cache: TokenCache) -> AuthChannelLayer {
        AuthChannelLayer::new(cache)
    }
}

impl<S, C, R> AuthChannel<S, C, R> {
    /// The channel.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().get_ref().inner
    }

    /// The channel, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner.get_mut().get_mut().inner
    }

    /// Consumes this service and returns the channel.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().into_inner().inner
    }

    /// The cache this service takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        self.inner.get_ref().cache()
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for AuthChannel<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChannel")
            .field("channel", self.get_ref())
            .field("cache", self.cache())
            .finish_non_exhaustive()
    }
}

impl<S, C, R, ResB> Service<Request<::tonic::body::Body>> for AuthChannel<S, C, R>
where
    S: Service<Request<::tonic::body::Body>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    R: OnRejection,
    ResB: http_body::Body + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = AuthChannelFuture<
        ResponseFuture<IntoTonicBody<S, C>, ReplayBody<::tonic::body::Body>, C, R>,
    >;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<::tonic::body::Body>) -> Self::Future {
        AuthChannelFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// Response future for [`AuthChannel`]: token failures become a
    /// `tonic::Status` a retry policy can key on (see [errors](self#errors)).
    pub struct AuthChannelFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T> Future for AuthChannelFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().inner.poll(cx)) {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(error) => Poll::Ready(Err(token_error_to_status(error))),
        }
    }
}

impl<F> fmt::Debug for AuthChannelFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChannelFuture").finish_non_exhaustive()
    }
}

/// A token failure as the `tonic::Status` it means: transient (the token
/// endpoint down, a 5xx, a timeout) as `UNAVAILABLE`, permanent
/// (`invalid_client`, `invalid_grant`, a refused configuration) as
/// `UNAUTHENTICATED`. The message is the error's display, which carries no
/// secret (B8); the error itself is the status's source. Other errors (the
/// channel's own) are left as they are.
fn token_error_to_status(error: BoxError) -> BoxError {
    match error.downcast::<crate::Error>() {
        Ok(error) => {
            let code = if error.is_transient() {
                ::tonic::Code::Unavailable
            } else {
                ::tonic::Code::Unauthenticated
            };
            let message = if error.kind() == crate::ErrorKind::Unsendable {
                error.to_string()
            } else {
                format!("could not get an access token: {error}")
            };
            let mut status = ::tonic::Status::new(code, message);
            status.set_source(std::sync::Arc::new(*error));
            Box::new(status)
        }
        Err(other) => other,
    }
}

/// Boxes a [`ReplayBody`] back into a `tonic::body::Body` for the channel,
/// below [`AuthService`] in an [`AuthChannel`]. Public because it appears in
/// [`AuthChannel`]'s future type; you will rarely name it.
///
/// When a response rejects the token, it is held back until the channel has
/// let go of the request body (sent it to its end, or dropped it when the
/// server reset the stream), so that the retry can replay it, but no longer
/// than the release wait: see [the release wait](self#the-release-wait).
#[derive(Clone, Debug)]
pub struct IntoTonicBody<S, C = Standard> {
    inner: S,
    classify: C,
    release_wait: Duration,
}

impl<S> IntoTonicBody<S> {
    /// Wraps `channel`, with the [`Standard`] rejection rules and rejections
    /// held up to [`DEFAULT_RELEASE_WAIT`].
    pub fn new(channel: S) -> Self {
        IntoTonicBody {
            inner: channel,
            classify: Standard::new(),
            release_wait: DEFAULT_RELEASE_WAIT,
        }
    }
}

impl<S, C> IntoTonicBody<S, C> {
    /// How long a rejection is held at most (see
    /// [`AuthChannelLayer::release_wait`]).
    pub fn release_wait(mut self, wait: Duration) -> Self {
        self.release_wait = wait;
        self
    }
}

impl<S, C, ResB> Service<Request<ReplayBody<::tonic::body::Body>>> for IntoTonicBody<S, C>
where
    S: Service<Request<::tonic::body::Body>, Response = Response<ResB>>,
    C: Classify,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = IntoTonicFuture<S::Future, ResB, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody<::tonic::body::Body>>) -> Self::Future {
        let released = if self.release_wait.is_zero() {
            None
        } else {
            req.body().released()
        };
        IntoTonicFuture {
            state: Hold::Calling {
                fut: self.inner.call(req.map(::tonic::body::Body::new)),
                released,
            },
            classify: self.classify.clone(),
            release_wait: self.release_wait,
        }
    }
}

pin_project! {
    /// Response future for [`IntoTonicBody`].
    pub struct IntoTonicFuture<F, ResB, C> {
        #[pin]
        state: Hold<F, ResB>,
        classify: C,
        release_wait: Duration,
    }
}

pin_project! {
    #[project = HoldProj]
    enum Hold<F, ResB> {
        // The channel has the request. `released` tells when it lets go of
        // the body; `None` when there is nothing to wait for (an unrecorded
        // body, or no release wait).
        Calling {
            #[pin]
            fut: F,
            released: Option<Released<::tonic::body::Body>>,
        },
        // A rejection, held until the channel lets go of the body or the
        // deadline passes, whichever comes first. `rejected` is `None` once
        // it was returned. The timer is boxed: only rejections pay for it.
        Holding {
            rejected: Option<Response<ResB>>,
            released: Released<::tonic::body::Body>,
            deadline: Pin<Box<Sleep>>,
        },
    }
}

impl<F, ResB, E, C> Future for IntoTonicFuture<F, ResB, C>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    C: Classify,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                HoldProj::Calling { fut, released } => {
                    let response = ready!(fut.poll(cx))?;
                    // Held only when it may be retried.
                    let rejected = matches!(
                        this.classify
                            .classify(response.status(), response.headers()),
                        Verdict::Rejected | Verdict::StepUp(_) | Verdict::Retry
                    );
                    let Some(released) = released.take().filter(|_| rejected) else {
                        return Poll::Ready(Ok(response));
                    };
                    this.state.set(Hold::Holding {
                        rejected: Some(response),
                        released,
                        deadline: Box::pin(tokio::time::sleep(*this.release_wait)),
                    });
                }
                HoldProj::Holding {
                    rejected,
                    released,
                    deadline,
                } => {
                    if released.poll_released(cx).is_pending() {
                        ready!(deadline.as_mut().poll(cx));
                        tracing::debug!(
                            wait_ms = this.release_wait.as_millis() as u64,
                            "the channel still holds the rejected request body; \
                             returning the rejection without a retry"
                        );
                    }
                    // `None` only when polled again after it finished:
                    // nothing is left to return.
                    return rejected
                        .take()
                        .map_or(Poll::Pending, |r| Poll::Ready(Ok(r)));
                }
            }
        }
    }
}

impl<F, ResB, C> fmt::Debug for IntoTonicFuture<F, ResB, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoTonicFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[test]
    fn body_with_no_data_but_trailers_to_come_is_not_copied_as_empty() {
        let trailers = std::future::ready(Some(Ok(http::HeaderMap::new())));
        let body = ::tonic::body::Body::new(Full::new(Bytes::new()).with_trailers(trailers));
        assert!(body.try_clone_body().is_none(), "the copy would lose them");
        assert!(::tonic::body::Body::empty().try_clone_body().is_some());
    }
}
