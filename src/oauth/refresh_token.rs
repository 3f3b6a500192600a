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
/// # With a store
///
/// A refresh token belongs to a user, and the grant cannot tell whose it
/// holds: name the user with [`subject`](Self::subject) before keying a
/// [store](crate::store) with [`store_key`](Self::store_key). A cache built
/// with the key of a grant without a subject fails with a
/// [`ConfigError`](crate::ConfigError): it would share one slot among every
/// user of the client.
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
    /// Whose refresh token this is, for the store key.
    subject: Option<Arc<str>>,
}

impl RefreshTokenGrant {
    /// A grant that starts from `refresh_token` at `endpoint`.
    pub fn new(endpoint: TokenEndpoint, refresh_token: impl Into<RefreshToken>) -> Self {
        RefreshTokenGrant {
            core: Arc::new(GrantCore::new(endpoint, None, Some(refresh_token.into()))),
            subject: None,
        }
    }

    /// The user the refresh token belongs to (the `sub` of its tokens, a
    /// user name): part of [`store_key`](Self::store_key), so that the
    /// tokens of two users of one client never share an entry of a store.
    /// Not a secret; it is hashed into the key.
    ///
    /// ```
    /// # use tower_bearer::oauth::{ClientAuth, RefreshTokenGrant, TokenEndpoint};
    /// # fn main() -> Result<(), tower_bearer::ConfigError> {
    /// # let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("cli")).build()?;
    /// let alice = RefreshTokenGrant::new(endpoint.clone(), "alice's refresh token").subject("alice");
    /// let bob = RefreshTokenGrant::new(endpoint, "bob's refresh token").subject("bob");
    /// assert_ne!(alice.store_key(), bob.store_key());
    /// # Ok(())
    /// # }
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into().into());
        self
    }
}

impl RefreshTokenGrant {
    /// The key of this grant's token in a [store](crate::store):
    /// [`StoreKey::for_user`](crate::store::StoreKey::for_user) with the
    /// [`subject`](Self::subject), which is also what a
    /// [`PasswordGrant`](crate::oauth::PasswordGrant) for that user uses, so
    /// the two can take over from each other.
    ///
    /// Without a subject the key cannot tell one user's token from
    /// another's: a cache built with it fails with a
    /// [`ConfigError`](crate::ConfigError).
    ///
    /// With a store, a restarted process finds the newest refresh token in
    /// it and uses that, not the one the grant was built with, which a
    /// rotation has spent.
    ///
    /// # Migrating from an earlier version
    ///
    /// Earlier versions keyed this grant with an empty user name, one key
    /// for every user of the client; this key reads the first scheme's key
    /// *of its subject* when it finds nothing (what earlier versions told
    /// stores of several users to use). A store that held one user's token
    /// under the old key moves it with
    /// `grant.store_key().migrating_from(StoreKey::first_scheme_for_user(grant.endpoint(), ""))`:
    /// say so only of a store you know held that user's token alone.
    pub fn store_key(&self) -> crate::store::StoreKey {
        match &self.subject {
            Some(subject) => crate::store::StoreKey::for_user(self.core.endpoint(), subject),
            None => crate::store::StoreKey::for_user(self.core.endpoint(), "").unusable(
                "the store key of a RefreshTokenGrant without a subject would be shared by \
                 every user of the client: set RefreshTokenGrant::subject",
            ),
        }
    }
}

grant_handle!(RefreshTokenGrant, subject);
