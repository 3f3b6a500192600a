//! reqwest: [`HttpService`] makes a `reqwest::Client` a
//! `Service<http::Request<reqwest::Body>>`, so [`AuthLayer`](crate::AuthLayer)
//! can wrap it.
//!
//! reqwest's `Client` is a tower service for `reqwest::Request` only, and
//! `AuthLayer` works on `http::Request`s. The adapter converts each request
//! with `reqwest::Request::try_from` and each response with
//! `http::Response::from`; nothing else changes, so the client's own
//! settings (timeouts, proxies, TLS, its own retries) still apply below.
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_bearer::{reqwest::HttpService, source::StaticToken, AuthLayer, TokenCache};
//!
//! # async fn run() -> Result<(), tower_bearer::BoxError> {
//! let cache = TokenCache::new(StaticToken::new("t0k3n"));
//! let api = ServiceBuilder::new()
//!     .layer(AuthLayer::new(cache))
//!     .service(HttpService::new(reqwest::Client::new()));
//!
//! let request = Request::post("http://127.0.0.1:8080/v1/things")
//!     .body(reqwest::Body::from(r#"{"name": "x"}"#))?;
//! let response = api.oneshot(request).await?;
//! // Back to reqwest's response type, if you like its helpers:
//! let text = reqwest::Response::from(response).text().await?;
//! # drop(text);
//! # Ok(())
//! # }
//! ```
//!
//! # Retries
//!
//! A 401 is retried once when the request body is buffered (built from
//! bytes or a string: `reqwest::Body::as_bytes` is `Some`); the bytes are
//! copied before the first send. A streaming body (`reqwest::Body::wrap_stream`)
//! is sent once, and its 401 returned after the token was invalidated.
//!
//! # Readiness
//!
//! `reqwest::Client` has no backpressure: [`HttpService`] is always ready,
//! and clones of it are as ready as the original.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::TryCloneBody;

/// A buffered `reqwest::Body` is copied (its bytes are); a streaming one
/// cannot be.
impl TryCloneBody for ::reqwest::Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|bytes| ::reqwest::Body::from(bytes::Bytes::copy_from_slice(bytes)))
    }
}

/// A `reqwest::Client` as a `Service<http::Request<reqwest::Body>>`. See
/// the [module documentation](self).
///
/// Cheap to clone (the client is), always ready.
///
/// # Example
///
/// ```
/// use http::Request;
/// use tower::ServiceExt;
/// use tower_bearer::reqwest::HttpService;
///
/// # async fn run() -> Result<(), tower_bearer::BoxError> {
/// let client = HttpService::new(reqwest::Client::new());
/// let request = Request::get("http://127.0.0.1:8080/health").body(reqwest::Body::from(""))?;
/// let response = client.oneshot(request).await?;
/// # drop(response);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct HttpService {
    client: ::reqwest::Client,
}

impl HttpService {
    /// Wraps `client`.
    pub fn new(client: ::reqwest::Client) -> Self {
        HttpService { client }
    }

    /// The client.
    pub fn get_ref(&self) -> &::reqwest::Client {
        &self.client
    }

    /// Consumes this service and returns the client.
    pub fn into_inner(self) -> ::reqwest::Client {
        self.client
    }
}

impl From<::reqwest::Client> for HttpService {
    fn from(client: ::reqwest::Client) -> Self {
        HttpService::new(client)
    }
}

impl fmt::Debug for HttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpService")
            .field("client", &self.client)
            .finish()
    }
}

impl<B> Service<Request<B>> for HttpService
where
    B: Into<::reqwest::Body>,
{
    type Response = Response<::reqwest::Body>;
    type Error = ::reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Sends `req` with the client.
    ///
    /// # Errors
    ///
    /// reqwest's error when the URI is not a valid URL (it must be absolute,
    /// with scheme and host) or the request fails.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = match ::reqwest::Request::try_from(req) {
            Ok(req) => State::Sending {
                fut: Service::call(&mut self.client, req),
            },
            Err(error) => State::Failed { error: Some(error) },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Response future for [`HttpService`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

type Pending = <::reqwest::Client as Service<::reqwest::Request>>::Future;

pin_project! {
    #[project = StateProj]
    enum State {
        // The client is sending the request.
        Sending { #[pin] fut: Pending },
        // The request could not be converted.
        Failed { error: Option<::reqwest::Error> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<::reqwest::Body>, ::reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { fut } => {
                let response = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(Response::from(response)))
            }
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                // Polled again after it finished: there is nothing left to
                // return; stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
