//! The refresh token grant on its own (RFC 6749 §6): start from a refresh
//! token you already have (from a login flow, a previous run, a store).

use std::sync::Arc;

use super::endpoint::TokenEndpoint;
use super::grant::{GrantCore, grant_handle};
use crate::RefreshToken;

/// A [`TokenSource`](crate::TokenSource) that only refreshes.
///
/// Every token comes from `grant_type=refresh_token`. A rotated refresh
/// token replaces the old one at once; a response without one keeps the old
/// one (B5). When the server refuses the refresh token (`invalid_grant`:
/// expired, revoked, reused), there is nothing to fall back to: the error
/// is returned, typed and permanent, and every later attempt returns it
/// again without a request. Start a new grant with a new refresh token.
///
/// Cheap to clone; clones share the refresh token and the counters, so give
/// each [`TokenCache`](crate::TokenCache) a grant of its own.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::{ClientAuth, RefreshTokenGrant, TokenEndpoint};
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// # let saved_refresh_token = String::new();
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::none("my-cli"),
/// )
/// .build()?;
///
/// let grant = RefreshTokenGrant::new(endpoint, saved_refresh_token);
/// let cache = TokenCache::new(grant.clone());
/// // After each refresh, persist `grant.refresh_token()`: it may have rotated.
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RefreshTokenGrant {
    core: Arc<GrantCore>,
}

impl RefreshTokenGrant {
    /// A grant that starts from `refresh_token` at `endpoint`.
    pub fn new(endpoint: TokenEndpoint, refresh_token: impl Into<RefreshToken>) -> Self {
        RefreshTokenGrant {
            core: Arc::new(GrantCore::new(endpoint, None, Some(refresh_token.into()))),
        }
    }
}

impl RefreshTokenGrant {
    /// The key of this grant's token in a [store](crate::store):
    /// [`StoreKey::for_user`](crate::store::StoreKey::for_user) with an
    /// empty user name, since the grant does not know whose refresh token it
    /// holds. When one store keeps the refresh tokens of several users of
    /// one client, key each with `StoreKey::for_user(grant.endpoint(), user)`
    /// instead (which is also what a [`PasswordGrant`](crate::oauth::PasswordGrant)
    /// for that user uses, so the two can take over from each other).
    ///
    /// With a store, a restarted process finds the newest refresh token in
    /// it and uses that, not the one the grant was built with, which a
    /// rotation has spent.
    pub fn store_key(&self) -> crate::store::StoreKey {
        crate::store::StoreKey::for_user(self.core.endpoint(), "")
    }
}

grant_handle!(RefreshTokenGrant);
