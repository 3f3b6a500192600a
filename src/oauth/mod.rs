//! Standard OAuth2 token endpoints (RFC 6749) as [`TokenSource`](crate::TokenSource)s:
//! the client credentials, password and refresh token grants, the
//! JWT-bearer grant (RFC 7523) and token exchange (RFC 8693) for workloads
//! without secrets and for delegation, client authentication, and RFC 6749
//! responses and errors.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
//! use tower_bearer::{AuthLayer, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let endpoint = TokenEndpoint::builder(
//!     "https://idp.example/oauth2/token",
//!     ClientAuth::basic("my-client", "my-secret"),
//! )
//! .scope("api:read")
//! .build()?;
//! let grant = ClientCredentialsGrant::new(endpoint);
//! let cache = TokenCache::new(grant.clone());
//!
//! let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! let api = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(10))
//!     .layer(AuthLayer::new(cache))
//!     .service(client);
//! let response = api
//!     .clone() // `api` (and its cache) outlives the call: a 401's retry needs the cache
//!     .oneshot(http::Request::get("http://api.example/v1/things").body(Full::default())?)
//!     .await?;
//! println!("{} after {} token request(s)", response.status(), grant.stats().requests);
//! # Ok(())
//! # }
//! ```
//!
//! # Pieces
//!
//! * [`TokenEndpoint`]: URL (HTTPS unless loopback, B9), [`ClientAuth`],
//!   `scope`, `audience`, `resource` and other parameters, timeout, response
//!   size cap, and the [`transport`].
//! * Grants: [`ClientCredentialsGrant`], [`PasswordGrant`],
//!   [`RefreshTokenGrant`], and [`CustomGrant`] for an endpoint whose
//!   requests are its own (a JSON login, say) but whose tokens follow the
//!   same rules. For workloads: [`JwtBearerGrant`] (a JWT as the grant:
//!   a Kubernetes service-account token, a CI OIDC token, or one signed
//!   here) and [`TokenExchangeGrant`] (a token for the next audience in
//!   exchange for one held, another cache's included). Each makes *one*
//!   attempt per call; the
//!   [`TokenCache`](crate::TokenCache) retries, with backoff, what is
//!   transient (B4). Refresh tokens are used, rotated and kept as B5 says
//!   (see [`GrantStats`] for the counters).
//! * [`SecurityTokenSource`]: where those two get the token they present:
//!   a fixed [`SecurityToken`], a [`TokenFile`] the platform rotates,
//!   another [`TokenCache`](crate::TokenCache), a closure.
//! * [`parse_token_response`]: the RFC 6749 §5.1/§5.2 parser the grants use,
//!   for custom sources.
//!
//! Each grant is a file of its own over one shared core (the refresh-token
//! rules below), and nothing in the core depends on a grant.
//!
//! # Refresh tokens (B5)
//!
//! A grant refreshes with `grant_type=refresh_token` and the refresh token
//! of the token the cache is replacing (`previous`), unless that one was
//! already spent; else with the newest refresh token it has received
//! itself. Without a store the two are the same token. With a
//! [store](crate::store), `previous` may have been loaded from a file or
//! saved by another replica, and is then the newest of the lineage, while
//! the grant's own was spent elsewhere.
//!
//! * A response with a new refresh token replaces the old one at once; the
//!   old one is *spent* and never sent again.
//! * A response without one keeps the old one (RFC 6749 §6), and the token
//!   handed to the cache carries it, so the cache and a store see it too.
//! * `invalid_grant` spends the refresh token and, in the same attempt,
//!   falls back to the primary grant (client credentials, password). A
//!   grant with no primary grant reports the error, now and on every later
//!   attempt, without another request (until a store hands it a refresh
//!   token it has not spent).
//! * Other failures keep the refresh token for the next attempt. After a
//!   timeout the server may have rotated it anyway; sending it again then
//!   gets `invalid_grant`, and the fallback above.
//!
//! The cache runs one refresh at a time (B3), so within one cache these
//! steps never interleave. Clones of a grant share its refresh token: give
//! each cache a grant of its own.
//!
//! # Failures (B4)
//!
//! | failure | kind | retried by the cache |
//! | --- | --- | --- |
//! | connection refused or reset, body cut short | [`Connect`](crate::ErrorKind::Connect) | yes |
//! | no response in time | [`Timeout`](crate::ErrorKind::Timeout) | yes |
//! | 5xx, 408, 429 (honouring `Retry-After`) | [`Status`](crate::ErrorKind::Status) or [`OAuth`](crate::ErrorKind::OAuth) | yes |
//! | `temporarily_unavailable`, `server_error` | [`OAuth`](crate::ErrorKind::OAuth) | yes |
//! | `invalid_client`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_request`, `invalid_target`, `unsupported_token_type` | [`OAuth`](crate::ErrorKind::OAuth) | no |
//! | a [`SecurityTokenSource`] without a token (an unreadable [`TokenFile`]) | as it says ([`TokenFile`]: transient) | if transient |
//! | 3xx (redirects are not followed), other 4xx | [`Status`](crate::ErrorKind::Status) | no |
//! | not JSON, no `access_token`, token type not bearer | [`InvalidResponse`](crate::ErrorKind::InvalidResponse) | no |
//! | body over the size cap | [`ResponseTooLarge`](crate::ErrorKind::ResponseTooLarge) | no |
//!
//! # Secrets (B8)
//!
//! [`ClientSecret`], [`Password`], [`SecurityToken`] and
//! [`RefreshToken`](crate::RefreshToken) print as `[redacted]`; no `Debug` output of this module shows a secret,
//! and error messages quote neither request nor response bodies, only a
//! short excerpt of an error page scrubbed of the request's secrets.
//!
//! # Features
//!
//! The grants, the parser and the [`Transport`](transport::Transport) trait
//! need no feature; `private_key_jwt` client authentication
//! (`ClientAssertionKey`) and JWT-bearer assertions signed here need
//! `private-key-jwt`. The built-in transport needs `hyper-client` (plain
//! HTTP) or `https` (default: rustls with the ring provider and the webpki
//! roots); without it, set one with
//! [`TokenEndpointBuilder::transport`].

#[cfg(feature = "private-key-jwt")]
mod assertion;
mod client_auth;
#[cfg(feature = "https")]
mod client_certificate;
mod client_credentials;
mod custom;
mod endpoint;
mod grant;
#[cfg(feature = "hyper-client")]
mod hyper_client;
mod jwt_bearer;
mod password;
mod refresh_token;
mod response;
pub mod security_token;
pub mod token_exchange;
mod token_file;
pub mod transport;

#[cfg(feature = "private-key-jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
pub use self::assertion::{ASSERTION_LIFETIME, ClientAssertionKey};
pub use self::client_auth::{ClientAuth, ClientAuthMethod, ClientSecret};
#[cfg(feature = "https")]
#[cfg_attr(docsrs, doc(cfg(feature = "https")))]
pub use self::client_certificate::ClientCertificate;
pub use self::client_credentials::ClientCredentialsGrant;
pub use self::custom::{CustomGrant, CustomGrantBuilder};
pub use self::endpoint::{
    DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_TIMEOUT, RequestBody, TokenEndpoint, TokenEndpointBuilder,
};
pub use self::grant::GrantStats;
pub use self::jwt_bearer::{JWT_BEARER, JwtBearerGrant};
pub use self::password::{Password, PasswordGrant};
pub use self::refresh_token::RefreshTokenGrant;
pub(crate) use self::response::NOT_APPLICABLE;
pub use self::response::{MAX_EXPIRES_IN, parse_token_response};
pub use self::security_token::{SecurityToken, SecurityTokenSource};
pub use self::token_exchange::{TOKEN_EXCHANGE, TokenExchangeGrant};
pub use self::token_file::{DEFAULT_TOKEN_FILE_INTERVAL, TokenFile};
