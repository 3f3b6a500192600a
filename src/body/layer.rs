//! [`ReplayBodyLayer`]: wraps every request body in a [`ReplayBody`], so a
//! stack whose bodies stream can retry a rejected token.

use std::fmt;
use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::replay::{DEFAULT_REPLAY_CAP, ReplayBody};

/// Wraps request bodies in [`ReplayBody`]: a `Service<Request<ReplayBody<B>>>`
/// becomes a `Service<Request<B>>`.
///
/// Put it above [`AuthLayer`](crate::AuthLayer), so the auth layer sees
/// replayable bodies; the client below must accept `ReplayBody<B>` (a
/// hyper-util `Client<_, ReplayBody<B>>` does; for tonic use
/// `tower_bearer::tonic::AuthChannel`, which maps the body back).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{channel::Channel, BodyExt};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_bearer::body::{ReplayBody, ReplayBodyLayer};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// // A streaming body: chunks are sent while the request is under way.
/// let (mut tx, stream_body) = Channel::<Bytes, std::convert::Infallible>::new(1);
/// tokio::spawn(async move {
///     let _ = tx.send_data(Bytes::from_static(b"chunk 1, ")).await;
///     let _ = tx.send_data(Bytes::from_static(b"chunk 2")).await;
/// });
///
/// // The client takes `ReplayBody<B>` bodies, e.g. hyper-util's
/// // `Client<HttpConnector, ReplayBody<B>>`.
/// let client = tower::service_fn(|req: Request<ReplayBody<_>>| async move {
///     let body = req.into_body().collect().await?.to_bytes();
///     Ok::<_, tower_bearer::BoxError>(Response::new(String::from_utf8(body.to_vec())?))
/// });
/// let cache = TokenCache::new(StaticToken::new("t0k3n"));
/// let api = ServiceBuilder::new()
///     .layer(ReplayBodyLayer::new())
///     .layer(AuthLayer::new(cache))
///     .service(client);
///
/// let response = api.oneshot(Request::post("http://api.example/upload").body(stream_body)?).await?;
/// assert_eq!(response.body(), "chunk 1, chunk 2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct ReplayBodyLayer {
    cap: usize,
}

impl ReplayBodyLayer {
    /// Records bodies up to [`DEFAULT_REPLAY_CAP`] bytes.
    pub fn new() -> Self {
        Self::with_cap(DEFAULT_REPLAY_CAP)
    }

    /// Records bodies up to `cap` bytes; see [`ReplayBody::with_cap`].
    pub fn with_cap(cap: usize) -> Self {
        ReplayBodyLayer { cap }
    }
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayBodyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBodyLayer")
            .field("cap", &self.cap)
            .finish()
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayBodyService {
            inner,
            cap: self.cap,
        }
    }
}

/// Wraps each request body in a [`ReplayBody`] and calls the inner service.
/// See [`ReplayBodyLayer`].
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::ServiceExt;
/// use tower_bearer::body::{ReplayBody, ReplayBodyService};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// let inner = tower::service_fn(|req: Request<ReplayBody<Full<Bytes>>>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(req.body().is_recorded().to_string()))
/// });
/// let service = ReplayBodyService::with_cap(inner, 1024);
/// let response = service.oneshot(Request::new(Full::new(Bytes::from("small")))).await?;
/// assert_eq!(response.body(), "true");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    cap: usize,
}

impl<S> ReplayBodyService<S> {
    /// Wraps `inner`, recording bodies up to [`DEFAULT_REPLAY_CAP`] bytes.
    pub fn new(inner: S) -> Self {
        ReplayBodyLayer::new().layer(inner)
    }

    /// Wraps `inner`, recording bodies up to `cap` bytes.
    pub fn with_cap(inner: S, cap: usize) -> Self {
        ReplayBodyLayer::with_cap(cap).layer(inner)
    }

    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for ReplayBodyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBodyService")
            .field("inner", &self.inner)
            .field("cap", &self.cap)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for ReplayBodyService<S>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cap = self.cap;
        self.inner
            .call(req.map(|body| ReplayBody::with_cap(body, cap)))
    }
}
