//! [`RetryConnectionErrors`]: a `tower::retry` policy for what the token
//! layer leaves alone, requests that never reached the server.
//!
//! [`AuthLayer`](crate::AuthLayer) retries a rejected token once; it does
//! not retry failed connections. Put this policy above it, with a timeout
//! between (`retry → timeout → AuthLayer → client`): it sends an
//! *idempotent* request once more when the client failed at the
//! connection level (refused, reset, closed before the response came — a
//! pooled connection the server had just closed, hyper's
//! `IncompleteMessage`), within tower's retry budget. It never retries a
//! token failure ([`Error`](crate::Error): the cache has its own retries
//! and cooldown, B4), a timeout (the time is spent), a response (a 401 is
//! the auth layer's, a 5xx the caller's to judge), or a request whose method
//! is not idempotent (a `POST` may have been processed before the
//! connection broke).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//! use tower_bearer::retry::RetryConnectionErrors;
//! use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
//!
//! let cache = TokenCache::new(StaticToken::new("t0k3n"));
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let api = ServiceBuilder::new()
//!     .retry(RetryConnectionErrors::new())     // at most one retry, within a budget
//!     .timeout(Duration::from_secs(10))
//!     .layer(AuthLayer::new(cache))
//!     .service(client);
//! # drop(api);
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::{Ready, ready};
use std::io;
use std::sync::Arc;

use http::{Method, Request};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::BoxError;
use crate::body::TryCloneBody;

/// Retries an idempotent request once when the connection failed, within a
/// budget. See the [module documentation](self).
///
/// Cloned by `tower::retry` for each request: the retry count is per
/// request, the budget shared by every clone.
///
/// ```
/// use std::time::Duration;
/// use tower::retry::budget::TpsBudget;
/// use tower_bearer::retry::RetryConnectionErrors;
///
/// // Up to two retries per request; retries at most 10 % of requests,
/// // plus 5 a second, over a 10 s window.
/// let policy = RetryConnectionErrors::new()
///     .retries(2)
///     .budget(TpsBudget::new(Duration::from_secs(10), 5, 0.1));
/// # drop(policy);
/// ```
#[derive(Clone)]
pub struct RetryConnectionErrors {
    /// Retries left for this request.
    retries: usize,
    budget: Arc<TpsBudget>,
}

impl RetryConnectionErrors {
    /// One retry per request, within tower's default budget (retries at
    /// most 20 % of requests, plus 10 a second, over 10 s).
    pub fn new() -> Self {
        RetryConnectionErrors {
            retries: 1,
            budget: Arc::new(TpsBudget::default()),
        }
    }

    /// Retries per request (default 1).
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The retry budget shared by every request (default
    /// `TpsBudget::default()`).
    pub fn budget(mut self, budget: TpsBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }
}

impl Default for RetryConnectionErrors {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RetryConnectionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConnectionErrors")
            .field("retries", &self.retries)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<B, Res> Policy<Request<B>, Res, BoxError> for RetryConnectionErrors
where
    B: TryCloneBody,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(error) => {
                let retry = self.retries > 0
                    && is_idempotent(req.method())
                    && is_connection_error(error.as_ref())
                    && self.budget.withdraw();
                if retry {
                    self.retries -= 1;
                    tracing::debug!("the connection failed; sending the request again");
                    Some(ready(()))
                } else {
                    None
                }
            }
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        if self.retries == 0 || !is_idempotent(req.method()) {
            return None;
        }
        let body = req.body().try_clone_body()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): sending one twice has the effect
/// of sending it once.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `error`, or an error it was caused by, says the request never
/// got a response because of the connection: refused, reset, aborted,
/// closed early. `false` for a token failure ([`Error`](crate::Error)) and a
/// tower timeout, wherever they are in the chain.
///
/// Knows `std::io::Error` kinds, and with the built-in transport
/// (`hyper-client`) hyper-util's connect errors and hyper's
/// `IncompleteMessage`, `Canceled` and closed-channel errors.
///
/// ```
/// use tower_bearer::retry::is_connection_error;
///
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert!(is_connection_error(&reset));
/// let token = tower_bearer::Error::transient("the token endpoint is down");
/// assert!(!is_connection_error(&token));
/// ```
pub fn is_connection_error(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    let mut connection = false;
    while let Some(error) = next {
        if error.is::<crate::Error>() || error.is::<tower::timeout::error::Elapsed>() {
            return false;
        }
        connection = connection || is_connection_level(error);
        next = error.source();
    }
    connection
}

fn is_connection_level(error: &(dyn StdError + 'static)) -> bool {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        );
    }
    #[cfg(feature = "hyper-client")]
    {
        if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            return error.is_connect();
        }
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            return error.is_incomplete_message() || error.is_canceled() || error.is_closed();
        }
    }
    false
}
