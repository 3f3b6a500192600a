//! reqwest-middleware: [`AuthMiddleware`] attaches the token to requests of
//! a `reqwest_middleware::ClientWithMiddleware` and retries a rejected one
//! once (feature `reqwest-middleware`).
//!
//! For reqwest users who keep `RequestBuilder::send()` and stack
//! `reqwest-retry`, `reqwest-tracing` and the like: the token layer is one
//! more `Middleware`, sharing its [`TokenCache`] with any tower stack of the
//! same program.
//!
//! # Example
//!
//! ```no_run
//! use reqwest_middleware::ClientBuilder;
//! use tower_bearer::reqwest_middleware::AuthMiddleware;
//! use tower_bearer::{source::StaticToken, TokenCache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TokenCache::new(StaticToken::new("t0k3n"));
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(AuthMiddleware::new(cache))
//!     .build();
//!
//! let response = client.get("https://api.example/v1/things").send().await?;
//! # drop(response);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! * Before each request, a usable token from the cache (waiting for a
//!   refresh only when there is none), in `Authorization`, marked
//!   sensitive. A [`TokenParams`] among the request's extensions
//!   (`RequestBuilder::with_extension`) selects the cache's
//!   [variant](TokenCache::variant) for it.
//! * Each response is classified like [`AuthLayer`](crate::AuthLayer)'s, by
//!   [`reject::Standard`] unless [`classify`](AuthMiddleware::classify) says
//!   otherwise. A rejected token is invalidated (B6) and the request sent
//!   once more with a new one; a step-up is sent once more with a token
//!   for the demanded scope or claims (when opted in, and when the source
//!   can make one). A retry needs a copy of the request:
//!   `reqwest::Request::try_clone`, which shares a buffered body's bytes
//!   (no copy) and fails for a streaming body, whose rejection is then
//!   returned after the token was invalidated. The retry goes through the
//!   middlewares below this one again.
//! * A denial (403, `insufficient_scope` without a step-up, another
//!   scheme's challenge) is returned as is, with its parsed
//!   [`Challenges`] in the response's
//!   extensions.
//! * A token that cannot be had is a `reqwest_middleware::Error::Middleware`
//!   holding the [`Error`] (downcast it); no request is sent.
//!
//! Order matters as in tower: put `reqwest-retry` before (above) this
//! middleware so that its retries of transient failures each get a usable
//! token, and tracing above both.
//!
//! # Limits
//!
//! DPoP-bound tokens are not supported here (use [`AuthLayer`](crate::AuthLayer)):
//! a request that would need a proof fails with a permanent error, as does
//! a token exchange's `N_A` token.

use ::reqwest::{Request, Response};
use ::reqwest_middleware::{Middleware, Next};
use http::Extensions;
use http::header::AUTHORIZATION;

use crate::cache::Current;
use crate::challenge::Challenges;
use crate::reject::{self, Classify, StepUp, Verdict};
use crate::{Error, TokenCache, TokenParams};

/// A `reqwest_middleware::Middleware` that attaches the cache's token and
/// retries a rejected request once. See the [module documentation](self).
///
/// Cheap to clone: clones share the cache.
#[derive(Clone, Debug)]
pub struct AuthMiddleware<C = reject::Standard> {
    cache: TokenCache,
    classify: C,
}

impl AuthMiddleware {
    /// Attaches tokens from `cache`, classifying responses with
    /// [`reject::Standard`].
    pub fn new(cache: TokenCache) -> AuthMiddleware {
        AuthMiddleware {
            cache,
            classify: reject::Standard::new(),
        }
    }
}

impl<C> AuthMiddleware<C> {
    /// Classifies responses with `classify` instead (for instance
    /// `reject::Standard::new().step_up(true)`).
    pub fn classify<D: Classify>(self, classify: D) -> AuthMiddleware<D> {
        AuthMiddleware {
            cache: self.cache,
            classify,
        }
    }

    /// The cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

/// The cache a request's token comes from: its variant for the request's
/// [`TokenParams`], if it has any.
fn cache_for(cache: &TokenCache, extensions: &Extensions) -> Result<TokenCache, Error> {
    match extensions.get::<TokenParams>() {
        Some(params) if !params.is_empty() => cache.variant(params).ok_or_else(|| {
            Error::unsendable("the token source cannot make tokens for the request's TokenParams")
        }),
        _ => Ok(cache.clone()),
    }
}

/// A usable token for a request, or why not.
async fn token(cache: &TokenCache, after: Option<u64>) -> Result<Current, Error> {
    let current = cache.acquire(after).await?;
    if current.proofs.is_some() {
        return Err(Error::unsendable(
            "this token needs a proof (DPoP) or is not an access token (N_A); \
             AuthMiddleware sends bearer tokens only: use AuthLayer",
        ));
    }
    Ok(current)
}

fn attach(request: &mut Request, current: &Current) {
    request
        .headers_mut()
        .insert(AUTHORIZATION, current.header.clone());
}

fn failed(error: Error) -> ::reqwest_middleware::Error {
    ::reqwest_middleware::Error::middleware(error)
}

#[async_trait::async_trait]
impl<C: Classify> Middleware for AuthMiddleware<C> {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> ::reqwest_middleware::Result<Response> {
        let cache = cache_for(&self.cache, extensions).map_err(failed)?;
        let current = token(&cache, None).await.map_err(failed)?;
        let copy = request.try_clone();
        attach(&mut request, &current);
        let response = next.clone().run(request, extensions).await?;
        let verdict = self
            .classify
            .classify(response.status(), response.headers());
        let retry = match verdict {
            Verdict::Accepted => return Ok(response),
            Verdict::Rejected => {
                // B6: invalidate the token sent, and only that one.
                cache.record_rejection();
                cache.invalidate_generation(current.generation);
                Retry::NewToken(current.generation)
            }
            Verdict::StepUp(step_up) => Retry::StepUp(step_up),
            // `Retry` asks for a new DPoP proof, which bearer tokens have
            // no use for.
            Verdict::Denied | Verdict::Retry => return Ok(with_challenges(response)),
        };
        let Some(mut copy) = copy else {
            return Ok(with_challenges(response));
        };
        let (retry_cache, after) = match &retry {
            Retry::NewToken(generation) => (cache.clone(), Some(*generation)),
            Retry::StepUp(step_up) => {
                let params = extensions.get::<TokenParams>().cloned().unwrap_or_default();
                match self.cache.variant(&step_up.apply(&params)) {
                    Some(variant) => (variant, None),
                    None => return Ok(with_challenges(response)),
                }
            }
        };
        let fresh = token(&retry_cache, after).await.map_err(failed)?;
        drop(response);
        attach(&mut copy, &fresh);
        cache.record_retry();
        let response = next.run(copy, extensions).await?;
        Ok(
            match self
                .classify
                .classify(response.status(), response.headers())
            {
                Verdict::Accepted => response,
                verdict => {
                    // Every rejection invalidates the token it was sent with,
                    // the retry's included (B6).
                    if verdict == Verdict::Rejected {
                        retry_cache.record_rejection();
                        retry_cache.invalidate_generation(fresh.generation);
                    }
                    with_challenges(response)
                }
            },
        )
    }
}

/// What the one retry is sent with.
enum Retry {
    /// A new token: newer than this generation.
    NewToken(u64),
    /// A token asked for with more.
    StepUp(StepUp),
}

/// A response returned after a verdict other than `Accepted`, with its
/// challenges in its extensions.
fn with_challenges(mut response: Response) -> Response {
    let challenges = Challenges::from_headers(response.headers());
    if !challenges.is_empty() {
        response.extensions_mut().insert(challenges);
    }
    response
}
