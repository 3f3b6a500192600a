//! The resource owner password credentials grant (RFC 6749 §4.3).

use std::sync::Arc;

use super::endpoint::TokenEndpoint;
use super::grant::{FormGrant, GrantCore, GrantForm, Primary, grant_handle};
use crate::Error;
use crate::source::BoxFuture;
use crate::token::secret_newtype;

secret_newtype!(
    /// A resource owner's password (RFC 6749 §4.3).
    Password
);

/// A [`TokenSource`](crate::TokenSource) for the password grant.
///
/// The first token comes from `grant_type=password` (with the endpoint's
/// `scope` and parameters). When the response carries a refresh token, the
/// following ones come from `grant_type=refresh_token`: a rotated refresh
/// token replaces the old one at once, and a refused one (`invalid_grant`,
/// e.g. expired) falls back to the password grant (B5).
///
/// The OAuth 2.0 Security BCP (RFC 9700) says not to use this grant; it is
/// here for the servers and first-party clients that still do.
///
/// Cheap to clone; clones share the refresh token and the counters, so give
/// each [`TokenCache`](crate::TokenCache) a grant of its own.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::{ClientAuth, PasswordGrant, TokenEndpoint};
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::basic("my-client", "my-secret"),
/// )
/// .build()?;
///
/// let grant = PasswordGrant::new(endpoint, "alice", "alice-password");
/// let cache = TokenCache::new(grant.clone());
/// // Later: `grant.refresh_token()` is the refresh token to persist.
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PasswordGrant {
    core: Arc<GrantCore>,
}

impl PasswordGrant {
    /// A password grant for `username` at `endpoint`.
    pub fn new(
        endpoint: TokenEndpoint,
        username: impl Into<String>,
        password: impl Into<Password>,
    ) -> Self {
        PasswordGrant {
            core: Arc::new(GrantCore::new(
                endpoint,
                Some(Primary::form(Credentials {
                    username: username.into(),
                    password: password.into(),
                })),
                None,
            )),
        }
    }
}

impl PasswordGrant {
    /// The key of this user's token in a [store](crate::store):
    /// [`StoreKey::for_user`](crate::store::StoreKey::for_user) (token URL,
    /// client id, scopes, extra parameters and the user name; no secret).
    pub fn store_key(&self) -> crate::store::StoreKey {
        crate::store::StoreKey::for_user(
            self.core.endpoint(),
            self.core.username().unwrap_or_default(),
        )
    }
}

grant_handle!(PasswordGrant);

/// `grant_type=password` with the user's name and password.
struct Credentials {
    username: String,
    password: Password,
}

impl FormGrant for Credentials {
    fn name(&self) -> &'static str {
        "password"
    }

    fn form(&self) -> BoxFuture<'_, Result<GrantForm, Error>> {
        let form = GrantForm::new("password")
            .member("username", self.username.clone())
            .secret("password", self.password.secret());
        Box::pin(std::future::ready(Ok(form)))
    }

    fn user(&self) -> Option<&str> {
        Some(&self.username)
    }
}
