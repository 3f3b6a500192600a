//! How a token request reaches the token endpoint: any tower `Service` over
//! `http::Request<Full<Bytes>>`, with the response body read under a size
//! cap.
//!
//! The built-in transport (features `https` and `hyper-client`) is a
//! hyper-util client. Replace it with any tower service to go through a
//! proxy, use your own TLS settings or client certificates (mTLS), or reuse
//! a client you already have.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower_bearer::oauth::{ClientAuth, TokenEndpoint};
//!
//! // A service that answers every token request itself; in real code, a
//! // hyper-util client with your connector, or a reqwest adapter.
//! let transport = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"access_token":"t0k3n","token_type":"Bearer","expires_in":60}"#;
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
//! });
//!
//! let endpoint = TokenEndpoint::builder(
//!     "https://idp.example/oauth2/token",
//!     ClientAuth::basic("my-client", "my-secret"),
//! )
//! .transport(transport)
//! .build()?;
//! # drop(endpoint);
//! # Ok::<_, tower_bearer::ConfigError>(())
//! ```
//!
//! # Contract of a transport
//!
//! * It gets a complete `POST` request with an absolute URI; it must not
//!   follow redirects (B9). hyper-util's client does not.
//! * Whatever it returns as an error is reported as
//!   [`ErrorKind::Connect`](crate::ErrorKind::Connect), which is transient
//!   (B4).
//! * `poll_ready` is awaited on a clone before each request.

use std::fmt;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower_service::Service;

use crate::source::BoxFuture;
use crate::{BoxError, Error};

/// Sends one token request and reads its response, at most
/// `max_response_size` bytes of body.
///
/// [`ServiceTransport`] implements it for any tower service; implement it
/// yourself only when a tower service does not fit.
///
/// # Example
///
/// A transport that answers from memory, for a test that must not touch the
/// network:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower_bearer::oauth::transport::Transport;
/// use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
/// use tower_bearer::source::{BoxFuture, TokenSource};
/// use tower_bearer::Error;
///
/// struct Canned;
///
/// impl Transport for Canned {
///     fn send(
///         &self,
///         _request: Request<Full<Bytes>>,
///         _max_response_size: usize,
///     ) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
///         let body = r#"{"access_token":"t0k3n","token_type":"Bearer","expires_in":60}"#;
///         Box::pin(async move { Ok(Response::new(Bytes::from(body))) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("id"))
///     .custom_transport(Canned)
///     .build()?;
/// let token = ClientCredentialsGrant::new(endpoint).fetch(None).await?;
/// assert_eq!(token.access_token().secret(), "t0k3n");
/// # Ok(())
/// # }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` and returns the response with its whole body.
    ///
    /// # Errors
    ///
    /// [`Error::connect`] when the request or the body could not be
    /// transferred; [`Error::response_too_large`] when the body is longer
    /// than `max_response_size`, detected from `Content-Length` or while
    /// reading, never after reading all of it.
    fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_response_size: usize,
    ) -> BoxFuture<'_, Result<Response<Bytes>, Error>>;
}

/// A [`Transport`] over a tower service.
///
/// The service is kept behind a mutex only to clone it, so it needs to be
/// `Clone + Send` but not `Sync`; each request uses its own clone.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower_bearer::oauth::transport::ServiceTransport;
/// use tower_bearer::oauth::{ClientAuth, TokenEndpoint};
///
/// let service = tower::service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
/// });
/// // The same as `.transport(service)`.
/// let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("id"))
///     .custom_transport(ServiceTransport::new(service))
///     .build()?;
/// # drop(endpoint);
/// # Ok::<_, tower_bearer::ConfigError>(())
/// ```
pub struct ServiceTransport<S> {
    service: Mutex<S>,
}

impl<S> ServiceTransport<S> {
    /// Wraps a tower service.
    pub fn new(service: S) -> Self {
        ServiceTransport {
            service: Mutex::new(service),
        }
    }
}

impl<S> fmt::Debug for ServiceTransport<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTransport")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S, B> Transport for ServiceTransport<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_response_size: usize,
    ) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|e| Error::connect(e.into()))?;
            let response = service
                .call(request)
                .await
                .map_err(|e| Error::connect(e.into()))?;
            read_capped(response, max_response_size).await
        })
    }
}

/// Reads a response body into memory, refusing more than `limit` bytes:
/// first from `Content-Length` (or the body's size hint) without reading
/// anything, then frame by frame with a running total, so an endless body
/// is abandoned as soon as it passes the limit.
pub(crate) async fn read_capped<B>(
    response: Response<B>,
    limit: usize,
) -> Result<Response<Bytes>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit_u64) || body.size_hint().lower() > limit_u64 {
        return Err(Error::response_too_large(limit));
    }
    let mut body = pin!(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::connect(e.into()))?;
        if let Ok(mut data) = frame.into_data() {
            if data.remaining() > limit - buf.len() {
                return Err(Error::response_too_large(limit));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                data.advance(n);
            }
        }
    }
    Ok(Response::from_parts(parts, buf.freeze()))
}

/// TLS settings of the built-in transport.
#[derive(Default)]
pub(crate) struct Tls {
    /// PEM documents with extra trust anchors.
    pub(crate) roots: Vec<Vec<u8>>,
    /// The certificate to present, for mutual TLS.
    #[cfg(feature = "https")]
    pub(crate) client_certificate: Option<super::ClientCertificate>,
}

impl Tls {
    pub(crate) fn is_set(&self) -> bool {
        #[cfg(feature = "https")]
        if self.client_certificate.is_some() {
            return true;
        }
        !self.roots.is_empty()
    }

    pub(crate) fn has_client_certificate(&self) -> bool {
        #[cfg(feature = "https")]
        if self.client_certificate.is_some() {
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use http_body::{Frame, SizeHint};

    use super::*;
    use crate::ErrorKind;

    /// A body that never ends and has no declared length; counts the bytes
    /// handed out.
    struct Endless {
        served: Arc<AtomicUsize>,
    }

    const CHUNK: usize = 8 * 1024;

    impl Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.served.fetch_add(CHUNK, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK])))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    #[tokio::test]
    async fn b9_endless_body_is_abandoned_just_past_the_cap() {
        let served = Arc::new(AtomicUsize::new(0));
        let response = Response::new(Endless {
            served: served.clone(),
        });
        let err = read_capped(response, 64 * 1024).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
        assert_eq!(served.load(Ordering::SeqCst), 64 * 1024 + CHUNK);
    }

    #[tokio::test]
    async fn b9_declared_length_over_the_cap_is_refused_without_reading() {
        let served = Arc::new(AtomicUsize::new(0));
        let mut response = Response::new(Endless {
            served: served.clone(),
        });
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, "10485760".parse().unwrap());
        let err = read_capped(response, 64 * 1024).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResponseTooLarge);
        assert_eq!(served.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn body_exactly_at_the_cap_is_read() {
        let response = Response::new(Full::new(Bytes::from(vec![b'x'; 100])));
        let read = read_capped(response, 100).await.unwrap();
        assert_eq!(read.body().len(), 100);
    }
}
