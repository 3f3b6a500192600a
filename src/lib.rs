//! Keeps OAuth2 access tokens fresh on outgoing HTTP and gRPC calls, as a
//! tower middleware.
//!
//! An [`AuthLayer`] wraps any `Service<http::Request<B>>` (a hyper-util
//! client, a tonic channel, reqwest through an adapter). Before each call its
//! [`TokenCache`] decides whether the token can be used; it refreshes the token
//! once for all concurrent callers, ahead of expiry and in the background, and
//! keeps serving a still-valid token while a refresh runs or fails. When the
//! server answers 401 (or gRPC UNAUTHENTICATED), the layer invalidates the
//! token and sends the request once more with a new one.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_bearer::{source, AuthLayer, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! // Where tokens come from: any async function, or a standard OAuth2 grant.
//! let cache = TokenCache::new(source::from_fn(|_previous| async {
//!     // POST to the token endpoint here.
//!     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
//! }));
//!
//! # let client = tower::service_fn(|req: Request<Full<Bytes>>| async move {
//! #     let ok = req.headers()["authorization"] == "Bearer t0k3n";
//! #     let status = if ok { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
//! #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(Full::<Bytes>::default()).unwrap())
//! # });
//! // `client` is your HTTP client as a tower service, e.g. hyper-util's
//! // `Client<_, Full<Bytes>>`.
//! let api = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(10))
//!     .layer(AuthLayer::new(cache.clone()))
//!     .service(client);
//!
//! let response = api
//!     .oneshot(Request::get("http://api.example/v1/things").body(Full::default())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(cache.stats().token_requests, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The [`guide`] starts with the same stack over a standard OAuth2 grant and
//! hyper-util's client, and goes on from there.
//!
//! # The contract
//!
//! What the crate promises is a list of numbered rules, B1–B11, in the
//! [`contract`] module; the docs and the tests cite the numbers:
//!
//! * **B1 freshness**: a token is never attached after its usable end
//!   (expiry − 60 s, at most a tenth of its lifetime), checked against
//!   tokio's clock on every call.
//! * **B2 refresh ahead**: from 80 % of the lifetime (with jitter) the token
//!   is still sent and one background refresh starts; callers never wait
//!   for it.
//! * **B3 single flight**: one token request at a time; everyone waiting
//!   shares its result; a caller giving up cancels nothing for the others;
//!   nobody waits on a refresh that nobody drives.
//! * **B4 failures**: transient failures are retried with backoff and
//!   jitter, honouring `Retry-After`; permanent ones are not; a usable token
//!   keeps being served; a cooldown throttles new attempts.
//! * **B5 refresh tokens**: the [`oauth`] grants refresh with the refresh
//!   token they hold; a rotated one replaces it at once, a response without
//!   one keeps it, and `invalid_grant` falls back to the primary grant.
//! * **B6 rejection**: 401 or `grpc-status: 16` invalidates the token used
//!   (compare-and-swap), the retry's included; the request is sent once more
//!   if its body can be replayed; refreshes caused by rejections are
//!   throttled; 403 is never retried.
//! * **B7 header**: `Authorization: Bearer <token>`, built once per token,
//!   marked sensitive; a request with its own `Authorization` is left alone.
//! * **B8 secrets**: tokens and secrets never appear in `Debug`, `Display`,
//!   errors or logs.
//! * **B9 transport safety**: token endpoints are `https` unless loopback or
//!   explicitly allowed; responses are size-capped; redirects are not
//!   followed; a [`RouteLayer`](route::RouteLayer) keeps a token to its
//!   origins.
//! * **B10 composition**: `Clone`, `poll_ready` delegated, inner services
//!   called only when ready, `BoxError` with a matchable [`Error`] inside.
//! * **B11 time**: tokio's clock everywhere; tests run on a paused clock.
//!
//! # Modules
//!
//! * [`guide`]: how to use the crate, topic by topic: custom token
//!   endpoints, the defaults, OAuth2 grants and client authentication,
//!   HTTPS and transports, each client stack, several APIs, token stores,
//!   performance, testing, and the known limits.
//! * [`contract`]: the rules B1–B11 and the tests that pin them.
//! * [`cache`]: [`TokenCache`] and its settings.
//! * [`layer`]: [`AuthLayer`] and [`AuthService`]; [`future`] holds their
//!   response future.
//! * [`source`]: the [`TokenSource`] trait, closures and static tokens.
//! * [`oauth`]: standard OAuth2 token endpoints: the client credentials,
//!   password and refresh token grants, client authentication, RFC 6749
//!   responses and errors, and the HTTPS transport.
//! * [`reject`]: what counts as a rejection, and what to do about it.
//! * [`body`]: which request bodies can be replayed; [`ReplayBody`](body::ReplayBody)
//!   makes streaming ones replayable.
//! * [`route`]: one layer in front of a shared client, a token per origin,
//!   none for other origins (B9).
//! * [`store`]: token stores — tokens that survive restarts (a file) and
//!   tokens shared by a fleet (Redis, feature `redis`), with one refresher
//!   at a time, and encrypted at rest if you wish (feature
//!   `store-encryption`).
//! * `tonic` (feature `tonic`): `AuthChannel`, a ready-made stack for tonic
//!   channels and generated clients, retrying UNAUTHENTICATED once.
//! * `reqwest` (feature `reqwest`): `HttpService`, which makes a
//!   `reqwest::Client` a `Service<http::Request<reqwest::Body>>`.
//! * `reqwest_middleware` (feature `reqwest-middleware`): `AuthMiddleware`,
//!   the same token rules as a `reqwest_middleware::Middleware`.
//! * [`token`] and [`error`]: the values and the failures.
//!
//! # Features
//!
//! * `https` (default): the built-in token-endpoint transport with TLS, a
//!   hyper-util client over hyper-rustls, with the ring crypto provider
//!   passed explicitly and the webpki root certificates.
//! * `hyper-client`: the built-in transport for plain-HTTP token endpoints
//!   only (loopback, or TLS terminated elsewhere).
//! * `redis`: `store::RedisStore`, a token shared by the replicas of a
//!   fleet through Redis (the `redis` crate, 1.x, over tokio).
//! * `private-key-jwt`: `private_key_jwt` client authentication
//!   (`oauth::ClientAssertionKey`, ES256 and RS256 over ring).
//! * `tonic`, `reqwest`: the stacks above.
//! * `full`: everything.
//!
//! Without them, everything else works, and the [`oauth`] grants take any
//! tower service as their transport.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(clippy::fn_params_excessive_bools, clippy::await_holding_lock)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod body;
pub mod cache;
pub mod challenge;
#[doc = include_str!("../docs/contract.md")]
pub mod contract {}
mod copy;
#[cfg(feature = "dpop")]
#[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
pub mod dpop;
pub mod error;
pub mod future;
#[doc = include_str!("../docs/guide.md")]
pub mod guide {}
pub mod layer;
pub mod oauth;
pub mod params;
mod proof;
pub mod reject;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub mod reqwest_middleware;
pub mod retry;
pub mod route;
pub mod source;
pub mod store;
#[cfg(feature = "test-kit")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-kit")))]
pub mod test_kit;
mod timer;
pub mod token;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use crate::cache::{CacheStats, TokenCache, TokenCacheBuilder};
pub use crate::error::{BoxError, ConfigError, Error, ErrorKind, OAuthError, OAuthErrorCode};
pub use crate::layer::{AuthLayer, AuthService};
pub use crate::params::TokenParams;
pub use crate::source::TokenSource;
pub use crate::token::{AccessToken, RefreshToken, Token, TokenType};
