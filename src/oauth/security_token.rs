//! [`SecurityTokenSource`]: where a grant gets a token it presents to the
//! token endpoint: the assertion of a JWT-bearer grant, the subject or
//! actor token of a token exchange.

use std::future::Future;
use std::sync::Arc;

use crate::source::BoxFuture;
use crate::token::secret_newtype;
use crate::{Error, TokenCache};

secret_newtype!(
    /// A security token a grant presents (RFC 8693 §1, RFC 7523 §2.1): a
    /// JWT assertion, a subject or actor token.
    SecurityToken
);

/// Where a grant gets a [`SecurityToken`] for each token request: the
/// assertion of a [`JwtBearerGrant`](super::JwtBearerGrant), the subject or
/// actor token of a [`TokenExchangeGrant`](super::TokenExchangeGrant).
///
/// Implemented by:
///
/// * [`SecurityToken`]: one fixed value;
/// * [`TokenFile`](super::TokenFile): a file the platform keeps fresh (a
///   Kubernetes projected service-account token, a CI job's OIDC token);
/// * [`TokenCache`]: the access token of another cache, so that a cache can
///   exchange the token of another one (delegation chains);
/// * [`from_fn`]: a closure.
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{SecurityToken, SecurityTokenSource, security_token};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::Error> {
/// let fixed = SecurityToken::new("eyJhbGciOi...");
/// assert_eq!(fixed.security_token().await?.secret(), "eyJhbGciOi...");
///
/// let computed = security_token::from_fn(|| async { Ok(SecurityToken::new("computed")) });
/// assert_eq!(computed.security_token().await?.secret(), "computed");
/// # Ok(())
/// # }
/// ```
pub trait SecurityTokenSource: Send + Sync + 'static {
    /// The token to present now.
    ///
    /// # Errors
    ///
    /// An [`Error`] when there is none: the token request is not sent, and
    /// the cache treats the error as the refresh's (transient errors are
    /// retried).
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>>;
}

impl SecurityTokenSource for SecurityToken {
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// The access token of the cache, as [`TokenCache::token`] gets it: a
/// usable one, refreshed first if needed.
impl SecurityTokenSource for TokenCache {
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>> {
        Box::pin(async move {
            let token = self.token().await?;
            Ok(SecurityToken::new(token.access_token().secret()))
        })
    }
}

impl<S: SecurityTokenSource + ?Sized> SecurityTokenSource for Arc<S> {
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>> {
        (**self).security_token()
    }
}

/// A [`SecurityTokenSource`] from a closure that returns a future.
///
/// ```
/// use tower_bearer::oauth::{SecurityToken, security_token};
///
/// let source = security_token::from_fn(|| async {
///     // Ask a metadata server, a vault, another library...
///     Ok(SecurityToken::new("eyJhbGciOi..."))
/// });
/// # drop(source);
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SecurityToken, Error>> + Send + 'static,
{
    FromFn(f)
}

/// The [`SecurityTokenSource`] of [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

impl<F, Fut> SecurityTokenSource for FromFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SecurityToken, Error>> + Send + 'static,
{
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>> {
        Box::pin((self.0)())
    }
}

impl<F> std::fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromFn")
    }
}
