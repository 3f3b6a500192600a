//! Where tokens come from: the [`TokenSource`] trait, closures as sources,
//! and static tokens.
//!
//! A source is asked for a token whenever the cache needs one. It receives the
//! token it is replacing (if any), so a source can use that token's refresh
//! token. The cache calls it from one refresh at a time (B3), retries it on
//! transient errors and applies the timeout; the source only has to make one
//! attempt.
//!
//! # Example: a custom, non-standard token endpoint
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_bearer::{source, Error, Token, TokenCache};
//!
//! # async fn post_for_token() -> Result<(String, u64), std::io::Error> { unimplemented!() }
//! let cache = TokenCache::new(source::from_fn(|_previous: Option<Token>| async move {
//!     // POST to your endpoint with your HTTP client of choice...
//!     let (access_token, expires_in) = post_for_token().await.map_err(Error::transient)?;
//!     Ok(Token::new(access_token).with_expires_in(Duration::from_secs(expires_in)))
//! }));
//! ```
//!
//! `examples/custom_endpoint.rs` shows the whole thing against a real server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, Token, TokenParams};

/// A boxed, `Send` future, as [`TokenSource::fetch`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to get a token: one attempt, no caching, no retries (the cache does
/// those).
///
/// The trait is object safe; the cache stores its source as
/// `Arc<dyn TokenSource>`.
///
/// # Contract
///
/// * `previous` is the token being replaced (expired, stale or rejected), or
///   `None` on the first call. A source that holds a refresh token should use
///   `previous.refresh_token()`.
/// * Build the [`Token`] when the response arrives, so that a relative
///   `expires_in` is counted from then (B1).
/// * Return [`Error::transient`] for failures worth retrying and
///   [`Error::permanent`] for the rest (B4).
/// * Never put a secret into an error message (B8).
///
/// # Example
///
/// A source of your own: a struct with its configuration, whose `fetch` makes
/// one attempt.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::source::{BoxFuture, TokenSource};
/// use tower_bearer::{Error, Token, TokenCache};
///
/// /// Exchanges an API key for a token (the exchange is elided here).
/// struct ApiKeyExchange {
///     api_key: String,
/// }
///
/// impl TokenSource for ApiKeyExchange {
///     fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
///         Box::pin(async move {
///             if self.api_key.is_empty() {
///                 return Err(Error::permanent("no API key configured"));
///             }
///             // A source holding a refresh token would use `previous` here.
///             let _ = previous;
///             Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(300)))
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let cache = TokenCache::new(ApiKeyExchange { api_key: "k3y".into() });
/// assert_eq!(cache.token().await?.access_token().secret(), "t0k3n");
/// # Ok(())
/// # }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// Makes one attempt to get a token.
    fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>>;

    /// A source of its own for tokens made with `params` (a scope, an
    /// audience, resources, a claims request) instead of this source's own
    /// request, or `None` when this source cannot ask for them (the
    /// default).
    ///
    /// [`TokenCache::variant`](crate::TokenCache::variant) calls it once
    /// per distinct set of parameters, and drives the new source like any
    /// other: it must not share a refresh token with this one. The built-in
    /// client credentials and password grants implement it: the new
    /// grant's token requests carry `params` (the scope replaced, or added
    /// to with [`TokenParams::with_scope_added`]; `audience`, `resource`
    /// and `claims` sent on every request, refreshes included).
    ///
    /// ```
    /// use tower_bearer::source::{StaticToken, TokenSource};
    /// use tower_bearer::TokenParams;
    ///
    /// let source = StaticToken::new("k");
    /// assert!(source.with_params(&TokenParams::new().scope("admin")).is_none());
    /// ```
    fn with_params(&self, params: &TokenParams) -> Option<Arc<dyn TokenSource>> {
        let _ = params;
        None
    }

    /// Makes one attempt under `restriction`, or returns `None` when this
    /// source cannot keep it (the default). A cache with a
    /// [store](crate::store) asks for it when the refresh token of
    /// `previous` may be shared with other caches: see [`Restriction`].
    ///
    /// The OAuth2 grants implement it; a source of your own that holds a
    /// refresh token and has another way to get a token (a login) can too.
    fn fetch_restricted<'a>(
        &'a self,
        previous: Option<&'a Token>,
        restriction: Restriction,
    ) -> Option<BoxFuture<'a, Result<Token, Error>>> {
        let _ = (previous, restriction);
        None
    }
}

/// What a cache with a [store](crate::store) asks of a source when a
/// refresh token may be shared by several caches (the replicas of a
/// fleet): [`TokenSource::fetch_restricted`].
///
/// ```
/// use tower_bearer::source::{self, Restriction, TokenSource};
///
/// // A closure cannot keep a restriction: the cache then does without.
/// let plain = source::from_fn(|_| async { Ok(tower_bearer::Token::new("t")) });
/// assert!(plain.fetch_restricted(None, Restriction::NoRefreshToken).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Restriction {
    /// As [`fetch`](TokenSource::fetch), except that a refused refresh
    /// token (`invalid_grant`) is returned as the error instead of being
    /// followed by another grant: another cache may have rotated it and
    /// stored its successor, which the cache reads first (B5).
    NoFallback,
    /// A token without sending any refresh token: the primary grant
    /// (client credentials, password, a custom login). The store is
    /// unreachable, and another cache may spend the shared refresh token at
    /// any moment (the outage rule of the [`store`](crate::store) module).
    NoRefreshToken,
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
        (**self).fetch(previous)
    }

    fn with_params(&self, params: &TokenParams) -> Option<Arc<dyn TokenSource>> {
        (**self).with_params(params)
    }

    fn fetch_restricted<'a>(
        &'a self,
        previous: Option<&'a Token>,
        restriction: Restriction,
    ) -> Option<BoxFuture<'a, Result<Token, Error>>> {
        (**self).fetch_restricted(previous, restriction)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
        (**self).fetch(previous)
    }

    fn with_params(&self, params: &TokenParams) -> Option<Arc<dyn TokenSource>> {
        (**self).with_params(params)
    }

    fn fetch_restricted<'a>(
        &'a self,
        previous: Option<&'a Token>,
        restriction: Restriction,
    ) -> Option<BoxFuture<'a, Result<Token, Error>>> {
        (**self).fetch_restricted(previous, restriction)
    }
}

/// A [`TokenSource`] made from an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnSource<F> {
    f: F,
}

/// Makes a [`TokenSource`] from a closure that receives the previous token
/// (cloned) and returns a future of the next one.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{source, Token, TokenCache};
///
/// let cache = TokenCache::new(source::from_fn(|previous: Option<Token>| async move {
///     let n = previous.map_or(0, |t| t.access_token().secret().len());
///     Ok(Token::new(format!("token-{n}")).with_expires_in(Duration::from_secs(60)))
/// }));
/// # drop(cache);
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnSource<F>
where
    F: Fn(Option<Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, Error>> + Send + 'static,
{
    FnSource { f }
}

impl<F, Fut> TokenSource for FnSource<F>
where
    F: Fn(Option<Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, Error>> + Send + 'static,
{
    fn fetch<'a>(&'a self, previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin((self.f)(previous.cloned()))
    }
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

/// A token that never changes, for APIs that hand out long-lived keys and for
/// tests.
///
/// Each fetch returns a copy of the token, re-issued at that moment. Without
/// an expiry the cache re-reads it after its default lifetime (harmless: no
/// I/O). A rejected static token is not retried, because the "new" token
/// would be the same value.
///
/// ```
/// use tower_bearer::{source::StaticToken, TokenCache};
///
/// let cache = TokenCache::new(StaticToken::new("my-api-key"));
/// # drop(cache);
/// ```
#[derive(Clone)]
pub struct StaticToken {
    access_token: crate::AccessToken,
}

impl StaticToken {
    /// A static bearer token.
    pub fn new(access_token: impl Into<crate::AccessToken>) -> Self {
        StaticToken {
            access_token: access_token.into(),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("access_token", &self.access_token)
            .finish()
    }
}

impl TokenSource for StaticToken {
    fn fetch<'a>(&'a self, _previous: Option<&'a Token>) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(std::future::ready(Ok(Token::new(
            self.access_token.clone(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_object_safe(_: &dyn TokenSource) {}

    #[tokio::test]
    async fn closures_receive_the_previous_token() {
        let source = from_fn(|previous: Option<Token>| async move {
            let next = match previous {
                None => "first".to_owned(),
                Some(t) => format!("after-{}", t.access_token().secret()),
            };
            Ok(Token::new(next))
        });
        assert_object_safe(&source);
        let first = source.fetch(None).await.unwrap();
        let second = source.fetch(Some(&first)).await.unwrap();
        assert_eq!(second.access_token().secret(), "after-first");
    }

    #[tokio::test]
    async fn static_token_is_redacted_and_returned_as_is() {
        let source = StaticToken::new("static-secret");
        assert!(!format!("{source:?}").contains("static-secret"));
        let token = source.fetch(None).await.unwrap();
        assert_eq!(token.access_token().secret(), "static-secret");
    }
}
