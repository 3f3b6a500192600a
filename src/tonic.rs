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
//! (the server answered before reading the request; for unary calls the
//! request is normally sent in full first).
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

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::replay::Released;
use crate::body::{DEFAULT_REPLAY_CAP, ReplayBody, ReplayBodyService, TryCloneBody};
use crate::future::ResponseFuture;
use crate::reject::{Classify, OnRejection, Standard, Verdict};
use crate::{AuthLayer, AuthService, BoxError, TokenCache};

/// A tonic request body can be replayed only when it is at its end (no
/// data, no trailers). Wrap it in a [`ReplayBody`] (or use [`AuthChannel`])
/// to retry gRPC calls.
impl TryCloneBody for ::tonic::body::Body {
    fn try_clone_body(&self) -> Option<Self> {
        crate::body::known_empty(self).then(::tonic::body::Body::empty)
    }
}

/// Applies [`AuthChannel`]: fresh tokens and one retry after
/// UNAUTHENTICATED, for a tonic channel. See the [module documentation](self).
#[derive(Clone)]
pub struct AuthChannelLayer<C = Standard> {
    auth: AuthLayer<C>,
    classify: C,
    cap: usize,
}

impl AuthChannelLayer {
    /// Tokens from `cache`, with the [`Standard`] rejection rules and request
    /// messages recorded up to [`DEFAULT_REPLAY_CAP`] bytes.
    pub fn new(cache: TokenCache) -> Self {
        AuthChannelLayer {
            auth: AuthLayer::new(cache),
            classify: Standard,
            cap: DEFAULT_REPLAY_CAP,
        }
    }
}

impl<C> AuthChannelLayer<C> {
    /// Replaces the rules that decide whether a response rejected its token
    /// (see [`AuthLayer::classify`]).
    pub fn classify<C2: Classify>(self, classify: C2) -> AuthChannelLayer<C2> {
        AuthChannelLayer {
            auth: self.auth.classify(classify.clone()),
            classify,
            cap: self.cap,
        }
    }

    /// What to do after a rejection (default: retry once); see
    /// [`AuthLayer::on_rejection`].
    pub fn on_rejection(mut self, on_rejection: OnRejection) -> Self {
        self.auth = self.auth.on_rejection(on_rejection);
        self
    }

    /// Records request messages up to `cap` bytes for the retry (default
    /// [`DEFAULT_REPLAY_CAP`]); larger ones are sent once.
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }
}

impl<C> fmt::Debug for AuthChannelLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChannelLayer")
            .field("auth", &self.auth)
            .field("cap", &self.cap)
            .finish()
    }
}

impl<S, C: Clone> Layer<S> for AuthChannelLayer<C> {
    type Service = AuthChannel<S, C>;

    fn layer(&self, channel: S) -> Self::Service {
        AuthChannel {
            inner: ReplayBodyService::with_cap(
                self.auth.layer(IntoTonicBody {
                    inner: channel,
                    classify: self.classify.clone(),
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
/// client turns into a `tonic::Status` (token failures become
/// `Code::Unknown` with the [`Error`](crate::Error) as source).
#[derive(Clone)]
pub struct AuthChannel<S, C = Standard> {
    inner: ReplayBodyService<AuthService<IntoTonicBody<S, C>, C>>,
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

impl<S, C> AuthChannel<S, C> {
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

impl<S: fmt::Debug, C> fmt::Debug for AuthChannel<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthChannel")
            .field("channel", self.get_ref())
            .field("cache", self.cache())
            .finish_non_exhaustive()
    }
}

impl<S, C, ResB> Service<Request<::tonic::body::Body>> for AuthChannel<S, C>
where
    S: Service<Request<::tonic::body::Body>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<IntoTonicBody<S, C>, ReplayBody<::tonic::body::Body>, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<::tonic::body::Body>) -> Self::Future {
        self.inner.call(req)
    }
}

/// Boxes a [`ReplayBody`] back into a `tonic::body::Body` for the channel,
/// below [`AuthService`] in an [`AuthChannel`]. Public because it appears in
/// [`AuthChannel`]'s future type; you will rarely name it.
///
/// When a response rejects the token, it is held back until the channel has
/// let go of the request body (sent it to its end, or dropped it when the
/// server reset the stream), so that the retry can replay it. A gRPC server
/// that rejects a call answers before reading the request; without the
/// wait, the rejection would often arrive while HTTP/2 is still sending the
/// message, and the call would not be retried. HTTP/2 ends the stream on
/// such a response, so the wait is short.
#[derive(Clone, Debug)]
pub struct IntoTonicBody<S, C = Standard> {
    inner: S,
    classify: C,
}

impl<S> IntoTonicBody<S> {
    /// Wraps `channel`, with the [`Standard`] rejection rules.
    pub fn new(channel: S) -> Self {
        IntoTonicBody {
            inner: channel,
            classify: Standard,
        }
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
        let released = req.body().released();
        IntoTonicFuture {
            fut: self.inner.call(req.map(::tonic::body::Body::new)),
            released,
            classify: self.classify.clone(),
            rejected: None,
        }
    }
}

pin_project! {
    /// Response future for [`IntoTonicBody`].
    pub struct IntoTonicFuture<F, ResB, C> {
        #[pin]
        fut: F,
        released: Option<Released<::tonic::body::Body>>,
        classify: C,
        // A rejection, held until the request body was let go of.
        rejected: Option<Response<ResB>>,
    }
}

impl<F, ResB, E, C> Future for IntoTonicFuture<F, ResB, C>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    C: Classify,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.rejected.is_none() {
            let response = ready!(this.fut.poll(cx))?;
            let rejected = this
                .classify
                .classify(response.status(), response.headers())
                == Verdict::Rejected;
            if !rejected || this.released.is_none() {
                return Poll::Ready(Ok(response));
            }
            *this.rejected = Some(response);
        }
        if let Some(released) = this.released.as_ref() {
            ready!(released.poll_released(cx));
        }
        match this.rejected.take() {
            Some(response) => Poll::Ready(Ok(response)),
            // Polled again after it finished: nothing left to return.
            None => Poll::Pending,
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
