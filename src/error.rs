//! Error types: why a token could not be had, and invalid configuration.
//!
//! [`AuthService`](crate::AuthService) fails with tower's [`BoxError`]
//! (B10), so that its place in a stack of layers does not change its type.
//! When the failure is about the token, the boxed error is an [`Error`]:
//!
//! ```
//! use tower_bearer::{BoxError, Error, ErrorKind};
//!
//! fn explain(err: &BoxError) -> &'static str {
//!     match err.downcast_ref::<Error>() {
//!         Some(e) if e.kind() == ErrorKind::OAuth => "the authorization server said no",
//!         Some(e) if e.is_transient() => "the token endpoint is having trouble; try later",
//!         Some(_) => "no token",
//!         None => "the request itself failed",
//!     }
//! }
//! # let err: BoxError = Box::new(Error::transient("connection refused"));
//! # assert_eq!(explain(&err), "the token endpoint is having trouble; try later");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// The error type of [`AuthService`](crate::AuthService): any error, boxed.
/// The same type as [`tower::BoxError`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a token could not be had.
///
/// Cheap to clone: one failed refresh reaches every caller waiting for it as
/// the same shared value (B3). `Display` is a short lower-case sentence with no
/// secret in it (B8); the underlying cause is available through
/// [`source`](StdError::source).
///
/// # Example
///
/// ```
/// use tower_bearer::{source, Error, ErrorKind, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = TokenCache::new(source::from_fn(|_previous| async {
///     Err(Error::permanent("this client was disabled"))
/// }));
///
/// let error = cache.token().await.unwrap_err();
/// assert!(error.is_permanent());
/// let advice = match error.kind() {
///     ErrorKind::OAuth => "the authorization server refused",
///     ErrorKind::Connect | ErrorKind::Timeout => "the token endpoint is unreachable",
///     _ => "no token",
/// };
/// assert_eq!(advice, "no token");
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    transient: bool,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    oauth: Option<OAuthError>,
    message: Option<Box<str>>,
    source: Option<BoxError>,
    /// A grant's refresh token was refused (`invalid_grant`, or a custom
    /// endpoint's 400/401 to a refresh), and the grant did not fall back.
    refused_refresh_token: bool,
}

/// What kind of failure an [`Error`] is. Match on it with a wildcard arm: new
/// kinds may be added.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{Error, ErrorKind};
///
/// let error = Error::timeout(Duration::from_secs(10));
/// assert_eq!(error.kind(), ErrorKind::Timeout);
/// assert!(error.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token endpoint could not be reached (connection refused, reset,
    /// DNS). Transient.
    Connect,
    /// A token request took longer than its per-attempt timeout. Transient.
    Timeout,
    /// The token endpoint answered with an HTTP status that carries no token
    /// and no OAuth error, such as 500, 503 or 429. Transient for 5xx, 408 and
    /// 429, permanent otherwise.
    Status,
    /// The authorization server returned an RFC 6749 §5.2 error such as
    /// `invalid_client`; see [`Error::oauth`]. Permanent, except
    /// `temporarily_unavailable` and `server_error`.
    OAuth,
    /// The response could not be understood: not JSON, no `access_token`, an
    /// unsupported `token_type`, a value that cannot be sent in a header.
    /// Permanent.
    InvalidResponse,
    /// The response was larger than the configured cap. Permanent.
    ResponseTooLarge,
    /// A custom [`TokenSource`](crate::TokenSource) failed; it said whether
    /// the failure is transient.
    Source,
    /// The refresh ended without a result: it panicked (a panicking token
    /// source, a timer on a runtime without a time driver), no tokio
    /// runtime was available to run it, or it made no progress on any
    /// runtime. Transient.
    Interrupted,
    /// The cache's token store could not be used (unreachable, or its entry
    /// unreadable by this build), and the token to replace carries a
    /// refresh token that other caches may share: the cache does not send
    /// it without the store's lock, and the source has no other grant. See
    /// the outage rule of the [`store`](crate::store) module. Transient.
    Store,
    /// No token could be sent with this request, though no token request
    /// failed: an `N_A` token of a token exchange (RFC 8693, not an access
    /// token), a DPoP proof that cannot be made for the request (its URI
    /// has no scheme and host), a token `AuthMiddleware` cannot send, or
    /// token parameters the cache's source cannot ask for. The message says
    /// which. Permanent: the request or the configuration has to change.
    Unsendable,
}

impl Error {
    fn from_inner(inner: Inner) -> Self {
        Error {
            inner: Arc::new(inner),
        }
    }

    fn of_kind(kind: ErrorKind, transient: bool) -> Inner {
        Inner {
            kind,
            transient,
            status: None,
            retry_after: None,
            oauth: None,
            message: None,
            source: None,
            refused_refresh_token: false,
        }
    }

    /// A transient failure of a custom token source: worth retrying with
    /// backoff (B4).
    pub fn transient(cause: impl Into<BoxError>) -> Self {
        Self::from_inner(Inner {
            source: Some(cause.into()),
            ..Self::of_kind(ErrorKind::Source, true)
        })
    }

    /// A permanent failure of a custom token source: retrying will not help.
    pub fn permanent(cause: impl Into<BoxError>) -> Self {
        Self::from_inner(Inner {
            source: Some(cause.into()),
            ..Self::of_kind(ErrorKind::Source, false)
        })
    }

    /// The token endpoint could not be reached.
    pub fn connect(cause: impl Into<BoxError>) -> Self {
        Self::from_inner(Inner {
            source: Some(cause.into()),
            ..Self::of_kind(ErrorKind::Connect, true)
        })
    }

    /// A token request timed out after `after`.
    pub fn timeout(after: Duration) -> Self {
        Self::from_inner(Inner {
            message: Some(format!("token request timed out after {after:?}").into()),
            ..Self::of_kind(ErrorKind::Timeout, true)
        })
    }

    /// The token endpoint answered `status` without a token or an OAuth
    /// error. 5xx, 408 and 429 are transient. `snippet` is a short,
    /// secret-free excerpt of the body for the error message.
    pub fn status(status: StatusCode, snippet: Option<String>) -> Self {
        let transient = is_transient_status(status);
        Self::from_inner(Inner {
            status: Some(status),
            message: snippet.map(Into::into),
            ..Self::of_kind(ErrorKind::Status, transient)
        })
    }

    /// An RFC 6749 §5.2 error response.
    ///
    /// A code the RFCs define decides whether it is transient
    /// (`server_error`, `temporarily_unavailable`) or permanent (the rest).
    /// A code they do not define follows the HTTP status, as
    /// [`status`](Self::status) does: with a 5xx, 408 or 429 it is transient.
    pub fn oauth(error: OAuthError) -> Self {
        let transient = match &error.code {
            OAuthErrorCode::Other(_) => error.status.is_some_and(is_transient_status),
            code => code.is_transient(),
        };
        Self::from_inner(Inner {
            status: error.status,
            oauth: Some(error),
            ..Self::of_kind(ErrorKind::OAuth, transient)
        })
    }

    /// A response that could not be understood; `what` says why, without
    /// quoting secrets.
    pub fn invalid_response(what: impl Into<String>) -> Self {
        Self::from_inner(Inner {
            message: Some(what.into().into()),
            ..Self::of_kind(ErrorKind::InvalidResponse, false)
        })
    }

    /// A response larger than `limit` bytes.
    pub fn response_too_large(limit: usize) -> Self {
        Self::from_inner(Inner {
            message: Some(format!("token response is larger than {limit} bytes").into()),
            ..Self::of_kind(ErrorKind::ResponseTooLarge, false)
        })
    }

    /// A token that cannot be sent with a request, or a request the cache
    /// cannot serve; `what` says why.
    pub(crate) fn unsendable(what: &'static str) -> Self {
        Self::from_inner(Inner {
            message: Some(what.into()),
            ..Self::of_kind(ErrorKind::Unsendable, false)
        })
    }

    pub(crate) fn interrupted(what: &'static str) -> Self {
        Self::from_inner(Inner {
            message: Some(what.into()),
            ..Self::of_kind(ErrorKind::Interrupted, true)
        })
    }

    /// A token store could not be used, and the cache would not refresh
    /// without it: see the outage rule of the [`store`](crate::store)
    /// module. Transient: the next refresh tries the store again.
    pub(crate) fn store(what: &'static str, cause: crate::store::StoreError) -> Self {
        Self::from_inner(Inner {
            message: Some(what.into()),
            source: Some(Box::new(cause)),
            ..Self::of_kind(ErrorKind::Store, true)
        })
    }

    /// Marks this error as a refused refresh token (B5).
    pub(crate) fn refusing_refresh_token(self) -> Self {
        self.map_inner(|inner| inner.refused_refresh_token = true)
    }

    /// Whether a grant's refresh token was refused with this error, and
    /// the grant left the fallback to the cache.
    pub(crate) fn refused_refresh_token(&self) -> bool {
        self.inner.refused_refresh_token
    }

    /// Adds the delay the server asked for (`Retry-After`), which the cache
    /// honours before its next attempt (B4).
    pub fn with_retry_after(self, delay: Duration) -> Self {
        self.map_inner(|inner| inner.retry_after = Some(delay))
    }

    /// Adds the HTTP status of the response that caused this error.
    pub fn with_status(self, status: StatusCode) -> Self {
        self.map_inner(|inner| inner.status = Some(status))
    }

    fn map_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                Self::from_inner(inner)
            }
            Err(shared) => {
                let mut inner = Inner {
                    kind: shared.kind,
                    transient: shared.transient,
                    status: shared.status,
                    retry_after: shared.retry_after,
                    oauth: shared.oauth.clone(),
                    message: shared.message.clone(),
                    refused_refresh_token: shared.refused_refresh_token,
                    source: Some(Box::new(Error { inner: shared })),
                };
                f(&mut inner);
                Self::from_inner(inner)
            }
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// `true` when retrying later may succeed (connection errors, timeouts,
    /// 5xx, 429, `temporarily_unavailable`, sources that said so).
    pub fn is_transient(&self) -> bool {
        self.inner.transient
    }

    /// `true` when retrying will not help without a change of
    /// configuration or credentials (`invalid_client`, `invalid_grant`, …).
    pub fn is_permanent(&self) -> bool {
        !self.inner.transient
    }

    /// The HTTP status of the token endpoint's response, if there was one.
    pub fn http_status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The delay the server asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The OAuth error response, when the kind is [`ErrorKind::OAuth`].
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        self.inner.oauth.as_ref()
    }

    /// `true` when both values are the same shared failure (one refresh
    /// reaching several callers).
    pub fn ptr_eq(&self, other: &Error) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// 5xx, 408 and 429: statuses that say "try again later" (B4).
fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("transient", &self.inner.transient);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(delay) = self.inner.retry_after {
            d.field("retry_after", &delay);
        }
        if let Some(oauth) = &self.inner.oauth {
            d.field("oauth", oauth);
        }
        if let Some(message) = &self.inner.message {
            d.field("message", message);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        match inner.kind {
            ErrorKind::Connect => f.write_str("could not reach the token endpoint")?,
            ErrorKind::Timeout => f.write_str("token request timed out")?,
            ErrorKind::Status => match inner.status {
                Some(status) => write!(f, "token endpoint answered {status}")?,
                None => f.write_str("token endpoint answered with an error status")?,
            },
            ErrorKind::OAuth => match &inner.oauth {
                Some(oauth) => write!(f, "token request refused: {oauth}")?,
                None => f.write_str("token request refused")?,
            },
            ErrorKind::InvalidResponse => f.write_str("invalid token response")?,
            ErrorKind::ResponseTooLarge => f.write_str("token response too large")?,
            ErrorKind::Source => f.write_str(if inner.transient {
                "token source failed (transient)"
            } else {
                "token source failed"
            })?,
            ErrorKind::Interrupted => f.write_str("token refresh was interrupted")?,
            ErrorKind::Store => f.write_str("token store unavailable")?,
            ErrorKind::Unsendable => f.write_str("no token can be sent with this request")?,
        }
        if let (Some(message), false) = (&inner.message, inner.kind == ErrorKind::Timeout) {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

/// An RFC 6749 §5.2 error response from a token endpoint.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use tower_bearer::{Error, ErrorKind, OAuthError, OAuthErrorCode};
///
/// // What a token endpoint's `{"error": "invalid_client", …}` with 401 becomes.
/// let refused = OAuthError::new(OAuthErrorCode::InvalidClient)
///     .with_description("client authentication failed")
///     .with_status(StatusCode::UNAUTHORIZED);
/// let error = Error::oauth(refused);
///
/// assert_eq!(error.kind(), ErrorKind::OAuth);
/// assert!(error.is_permanent());
/// let oauth = error.oauth_error().unwrap();
/// assert_eq!(oauth.code(), &OAuthErrorCode::InvalidClient);
/// assert_eq!(oauth.status(), Some(StatusCode::UNAUTHORIZED));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    code: OAuthErrorCode,
    description: Option<String>,
    uri: Option<String>,
    status: Option<StatusCode>,
}

impl OAuthError {
    /// An error response with the given code.
    pub fn new(code: OAuthErrorCode) -> Self {
        OAuthError {
            code,
            description: None,
            uri: None,
            status: None,
        }
    }

    /// Adds the `error_description`.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds the `error_uri`.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Adds the HTTP status the error came with.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The `error` code.
    pub fn code(&self) -> &OAuthErrorCode {
        &self.code
    }

    /// The `error_description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The `error_uri`, if any.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// The HTTP status of the response, if known.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())?;
        if let Some(description) = &self.description {
            write!(f, " ({description})")?;
        }
        Ok(())
    }
}

/// The `error` code of an RFC 6749 §5.2 error response.
///
/// # Example
///
/// ```
/// use tower_bearer::OAuthErrorCode;
///
/// assert_eq!(OAuthErrorCode::parse("invalid_grant"), OAuthErrorCode::InvalidGrant);
/// // Codes outside RFC 6749 are kept as they are.
/// let custom = OAuthErrorCode::parse("authorization_pending");
/// assert_eq!(custom.as_str(), "authorization_pending");
/// assert!(OAuthErrorCode::parse("temporarily_unavailable").is_transient());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// `invalid_target` (RFC 8707, RFC 8693)
    InvalidTarget,
    /// `unsupported_token_type` (RFC 8693 §2.2.2): a token exchange's
    /// subject or actor token is of a type the server does not take.
    UnsupportedTokenType,
    /// `server_error` (transient)
    ServerError,
    /// `temporarily_unavailable` (transient)
    TemporarilyUnavailable,
    /// Any other code, as the server spelled it.
    Other(String),
}

impl OAuthErrorCode {
    /// Parses an `error` value. Unknown codes are kept in [`Other`](Self::Other).
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_target" => Self::InvalidTarget,
            "unsupported_token_type" => Self::UnsupportedTokenType,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as the RFC spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(other) => other,
        }
    }

    /// `true` for the codes that say "try again later".
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::ServerError | Self::TemporarilyUnavailable)
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration value that cannot work, reported when the configuration
/// is built rather than when the first request runs into it.
///
/// # Example
///
/// ```
/// use tower_bearer::{source::StaticToken, TokenCache};
///
/// let error = TokenCache::builder(StaticToken::new("t0k3n"))
///     .refresh_ahead(1.5) // a fraction of the lifetime: must be in (0, 1]
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().starts_with("invalid configuration"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: Box<str>,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into().into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.message)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_are_classified() {
        assert!(Error::status(StatusCode::SERVICE_UNAVAILABLE, None).is_transient());
        assert!(Error::status(StatusCode::TOO_MANY_REQUESTS, None).is_transient());
        assert!(Error::status(StatusCode::NOT_FOUND, None).is_permanent());
    }

    #[test]
    fn oauth_codes_are_classified() {
        for code in [
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
        ] {
            let err = Error::oauth(OAuthError::new(OAuthErrorCode::parse(code)));
            assert!(err.is_permanent(), "{code}");
            assert_eq!(err.oauth_error().unwrap().code().as_str(), code);
        }
        let err = Error::oauth(OAuthError::new(OAuthErrorCode::parse(
            "temporarily_unavailable",
        )));
        assert!(err.is_transient());
        assert_eq!(
            OAuthErrorCode::parse("vendor_specific"),
            OAuthErrorCode::Other("vendor_specific".into())
        );
    }

    #[test]
    fn unknown_oauth_codes_follow_the_http_status() {
        let code = || OAuthErrorCode::parse("rate_limited");
        let with = |status| Error::oauth(OAuthError::new(code()).with_status(status));
        assert!(with(StatusCode::TOO_MANY_REQUESTS).is_transient());
        assert!(with(StatusCode::BAD_GATEWAY).is_transient());
        assert!(with(StatusCode::BAD_REQUEST).is_permanent());
        assert!(Error::oauth(OAuthError::new(code())).is_permanent());
        // A code the RFC defines wins over the status.
        let refused = OAuthError::new(OAuthErrorCode::InvalidClient)
            .with_status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(Error::oauth(refused).is_permanent());
    }

    #[test]
    fn display_is_short_and_lower_case() {
        let err = Error::oauth(
            OAuthError::new(OAuthErrorCode::InvalidClient)
                .with_description("client authentication failed")
                .with_status(StatusCode::UNAUTHORIZED),
        );
        assert_eq!(
            err.to_string(),
            "token request refused: invalid_client (client authentication failed)"
        );
        assert_eq!(
            Error::timeout(Duration::from_secs(10)).to_string(),
            "token request timed out"
        );
    }

    #[test]
    fn retry_after_is_kept_on_shared_errors() {
        let err = Error::status(StatusCode::TOO_MANY_REQUESTS, None);
        let shared = err.clone();
        let with_delay = err.with_retry_after(Duration::from_secs(2));
        assert_eq!(with_delay.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(shared.retry_after(), None);
        assert!(with_delay.is_transient());
    }
}
