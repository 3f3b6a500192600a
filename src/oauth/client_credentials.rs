//! The client credentials grant (RFC 6749 §4.4): the client gets a token
//! for itself, with its own credentials.

use std::sync::Arc;

use super::endpoint::TokenEndpoint;
use super::grant::{FormGrant, GrantCore, GrantForm, Primary, grant_handle};
use crate::Error;
use crate::source::BoxFuture;

/// A [`TokenSource`](crate::TokenSource) for the client credentials grant.
///
/// Sends `grant_type=client_credentials` with the endpoint's `scope` and
/// parameters. RFC 6749 §4.4.3 says such responses should not carry a
/// refresh token; when a server sends one anyway, the next refresh uses it,
/// and falls back to client credentials if it is refused (B5).
///
/// Cheap to clone; clones share the refresh token and the counters, so give
/// each [`TokenCache`](crate::TokenCache) a grant of its own.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
/// use tower_bearer::{AuthLayer, TokenCache};
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::basic("my-client", "my-secret"),
/// )
/// .scope("api:read")
/// .build()?;
///
/// let grant = ClientCredentialsGrant::new(endpoint);
/// // Keep a clone to read its counters later.
/// let cache = TokenCache::new(grant.clone());
/// let layer = AuthLayer::new(cache);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientCredentialsGrant {
    core: Arc<GrantCore>,
}

impl ClientCredentialsGrant {
    /// A client credentials grant at `endpoint`.
    pub fn new(endpoint: TokenEndpoint) -> Self {
        ClientCredentialsGrant {
            core: Arc::new(GrantCore::new(
                endpoint,
                Some(Primary::form(ClientCredentials)),
                None,
            )),
        }
    }
}

impl ClientCredentialsGrant {
    /// The key of this client's token in a [store](crate::store):
    /// [`StoreKey::for_endpoint`](crate::store::StoreKey::for_endpoint)
    /// (token URL, client id, scopes, extra parameters; no secret).
    pub fn store_key(&self) -> crate::store::StoreKey {
        crate::store::StoreKey::for_endpoint(self.core.endpoint())
    }
}

grant_handle!(ClientCredentialsGrant);

/// `grant_type=client_credentials`.
struct ClientCredentials;

impl FormGrant for ClientCredentials {
    fn name(&self) -> &'static str {
        "client_credentials"
    }

    fn form(&self) -> BoxFuture<'_, Result<GrantForm, Error>> {
        Box::pin(std::future::ready(Ok(GrantForm::new("client_credentials"))))
    }
}
