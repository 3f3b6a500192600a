//! A token endpoint of one's own: RFC 6749's rules, another request format.

use std::sync::Arc;

use super::endpoint::{RequestBody, TokenEndpoint};
use super::grant::{GrantCore, Primary, RefreshBody, Requests, grant_handle};
use crate::RefreshToken;

/// A [`TokenSource`](crate::TokenSource) for a token endpoint that is not
/// RFC 6749 in its requests: a login and a refresh with bodies of your own
/// (JSON or form), and responses with RFC 6749's fields or named otherwise.
///
/// Describe only what differs; the rest is what the standard grants do:
///
/// * the first token, and every token when there is no refresh token to
///   use, comes from the *login*;
/// * when a response carried a refresh token, the next token comes from
///   the *refresh* ([`refresh`](CustomGrantBuilder::refresh)); a rotated
///   refresh token replaces the old one at once, a spent one is never sent
///   again, and a response without one keeps the old one (B5);
/// * a refresh refused with `invalid_grant`, 400 or 401 falls back to the
///   login in the same attempt;
/// * errors are classified as for any token endpoint: 5xx, 408, 429 and
///   connection failures are transient and retried by the cache with
///   backoff, other 4xx are permanent (B4);
/// * the endpoint's rules hold: HTTPS unless loopback, no redirects, the
///   response size cap, the timeout (B9); no string of a body ever reaches
///   an error, a log or `Debug` output (B8).
///
/// Cheap to clone; clones share the refresh token and the counters, so give
/// each [`TokenCache`](crate::TokenCache) a grant of its own.
///
/// # Example
///
/// An endpoint that logs in with `{"username", "password"}` and refreshes
/// with `{"grant_type": "refresh_token", "refresh_token"}`, both as JSON,
/// and answers `{access_token, refresh_token, token_type, expires_in}`:
///
/// ```no_run
/// use serde_json::json;
/// use tower_bearer::oauth::{ClientAuth, CustomGrant, RequestBody, TokenEndpoint};
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder("https://api.example/auth", ClientAuth::anonymous())
///     .build()?;
/// let login = RequestBody::json(json!({"username": "demo", "password": "demo-password"}));
/// let grant = CustomGrant::builder(endpoint, login)
///     .refresh(|refresh_token| {
///         RequestBody::json(json!({
///             "grant_type": "refresh_token",
///             "refresh_token": refresh_token.secret(),
///         }))
///     })
///     .build();
/// let cache = TokenCache::new(grant);
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CustomGrant {
    core: Arc<GrantCore>,
}

impl CustomGrant {
    /// A grant that logs in at `endpoint` with `login`; configure the rest
    /// with the builder.
    pub fn builder(endpoint: TokenEndpoint, login: RequestBody) -> CustomGrantBuilder {
        CustomGrantBuilder {
            endpoint,
            login,
            refresh: None,
            fields: Vec::new(),
        }
    }
}

grant_handle!(CustomGrant);

/// Configures a [`CustomGrant`].
///
/// ```
/// use tower_bearer::oauth::{ClientAuth, CustomGrant, RequestBody, TokenEndpoint};
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// // An endpoint that answers `{"token": "…", "ttl": 3600}` to a form login.
/// let endpoint = TokenEndpoint::builder("http://127.0.0.1:8080/session", ClientAuth::anonymous())
///     .build()?;
/// let grant = CustomGrant::builder(endpoint, RequestBody::form([("user", "demo"), ("pass", "pw")]))
///     .access_token_field("token")
///     .expires_in_field("ttl")
///     .build();
/// assert_eq!(grant.stats().requests, 0);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct CustomGrantBuilder {
    endpoint: TokenEndpoint,
    login: RequestBody,
    refresh: Option<RefreshBody>,
    fields: Vec<(&'static str, String)>,
}

impl CustomGrantBuilder {
    /// How a refresh is made from the refresh token: its body. Without it,
    /// every token comes from the login, refresh tokens or not.
    pub fn refresh(
        mut self,
        body: impl Fn(&RefreshToken) -> RequestBody + Send + Sync + 'static,
    ) -> Self {
        self.refresh = Some(Arc::new(body));
        self
    }

    /// The response's name for `access_token`.
    pub fn access_token_field(self, name: impl Into<String>) -> Self {
        self.field("access_token", name)
    }

    /// The response's name for `refresh_token`.
    pub fn refresh_token_field(self, name: impl Into<String>) -> Self {
        self.field("refresh_token", name)
    }

    /// The response's name for `expires_in` (seconds, a number or a numeric
    /// string).
    pub fn expires_in_field(self, name: impl Into<String>) -> Self {
        self.field("expires_in", name)
    }

    /// The response's name for `token_type` (a response without one is a
    /// bearer token).
    pub fn token_type_field(self, name: impl Into<String>) -> Self {
        self.field("token_type", name)
    }

    fn field(mut self, standard: &'static str, name: impl Into<String>) -> Self {
        self.fields.retain(|(s, _)| *s != standard);
        self.fields.push((standard, name.into()));
        self
    }

    /// The grant.
    pub fn build(self) -> CustomGrant {
        CustomGrant {
            core: Arc::new(GrantCore::with_requests(
                self.endpoint,
                Some(Primary::Login(self.login)),
                None,
                Requests::Custom {
                    refresh: self.refresh,
                    fields: self.fields,
                },
            )),
        }
    }
}

impl std::fmt::Debug for CustomGrantBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomGrantBuilder")
            .field("endpoint", &self.endpoint)
            .field("login", &self.login)
            .field("refresh", &self.refresh.is_some())
            .field("fields", &self.fields)
            .finish()
    }
}
