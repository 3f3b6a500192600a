//! What a response says about the token it carried, and what to do about
//! it: the rules of RFC 6750 §3 challenges, step-ups and claims challenges.
//!
//! A [`Classify`] reads each response's status and headers and returns a
//! [`Verdict`]. [`Standard`], the default, reads the `WWW-Authenticate`
//! challenges (see [`challenge`](crate::challenge)) of a 401 or a 403, or the
//! `www-authenticate` metadata of a gRPC UNAUTHENTICATED (16) or
//! PERMISSION_DENIED (7) in the response headers (the trailers-only form
//! gRPC servers use for errors):
//!
//! | The response | Verdict | What happens |
//! |---|---|---|
//! | 401 / gRPC 16 with `error="invalid_token"`, with no `error`, or with no challenge | [`Rejected`](Verdict::Rejected) | the token is invalidated, the request sent once more with a new one (B6) |
//! | 401 or 403 / gRPC 16 or 7 with `error="insufficient_scope"` | [`Denied`](Verdict::Denied); with [`Standard::step_up`], [`StepUp`](Verdict::StepUp) | returned as is; with step-up, sent once more with a token for the configured scope plus the demanded `scope` |
//! | 401 / gRPC 16 with `error="insufficient_claims"` and `claims` | [`Denied`](Verdict::Denied); with [`Standard::claims_challenges`], [`StepUp`](Verdict::StepUp) | returned as is; opted in, sent once more with a token requested with those `claims` |
//! | 401 / gRPC 16 with `error="use_dpop_nonce"` or `"invalid_dpop_proof"` (DPoP, RFC 9449) | [`Retry`](Verdict::Retry) | sent once more with the same token and a new proof, with the nonce the response gave |
//! | 401 whose challenges are all of another scheme (`Basic`, `Negotiate`…) | [`Denied`](Verdict::Denied) | returned as is: not about our token |
//! | any other 403 / gRPC 7 | [`Denied`](Verdict::Denied) | returned as is |
//! | anything else | [`Accepted`](Verdict::Accepted) | returned as is |
//!
//! A response returned to the caller with any verdict but `Accepted`
//! carries its parsed [`Challenges`] in its extensions (when it has any),
//! so the caller reads the demanded scope, or the `resource_metadata` URL
//! of RFC 9728 (which is never fetched here), without parsing headers:
//!
//! ```
//! # use http::Response;
//! use tower_bearer::challenge::Challenges;
//! # let response = Response::new(());
//! if let Some(challenges) = response.extensions().get::<Challenges>() {
//!     let needed = challenges.bearer().and_then(|c| c.scope());
//!     let metadata = challenges.bearer().and_then(|c| c.resource_metadata());
//!     # let _ = (needed, metadata);
//! }
//! ```
//!
//! Whatever the verdict, a request is sent at most twice: a retry's own
//! rejection, step-up or denial is returned (a rejected retry's token is
//! invalidated in its turn). With [`Return`] nothing is sent twice.
//!
//! A gRPC status sent in trailers after response data is not seen here: by
//! then the response has been handed to the caller, and the call cannot be
//! replayed transparently.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_bearer::{reject::{Classify, Standard, Verdict}, AuthLayer};
//! # use tower_bearer::{source::StaticToken, TokenCache};
//! # let cache = TokenCache::new(StaticToken::new("k"));
//!
//! // An API that answers 419 for expired tokens; step-ups allowed.
//! let rules = Standard::new().step_up(true);
//! let layer = AuthLayer::new(cache).classify(move |status: StatusCode, headers: &HeaderMap| {
//!     if status.as_u16() == 419 { Verdict::Rejected } else { rules.classify(status, headers) }
//! });
//! # drop(layer);
//! ```

use std::fmt;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::TokenParams;
use crate::challenge::{Challenge, Challenges};

/// The gRPC status header, named once: looking it up by a `&str` would parse
/// the name on every response.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// What a response says about the token it was sent with.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bearer::reject::{Classify, Standard, Verdict};
///
/// let headers = HeaderMap::new();
/// assert_eq!(Standard::new().classify(StatusCode::UNAUTHORIZED, &headers), Verdict::Rejected);
/// assert_eq!(Standard::new().classify(StatusCode::FORBIDDEN, &headers), Verdict::Denied);
/// assert_eq!(Standard::new().classify(StatusCode::OK, &headers), Verdict::Accepted);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The server did not complain about the token: the response is
    /// returned as is.
    Accepted,
    /// The server rejected the token: it is invalidated, and the request
    /// sent once more with a new one ([`RetryOnce`]) when its body can be
    /// replayed (B6).
    Rejected,
    /// The server refused the request for a reason a new token would not
    /// fix (not allowed, more scope needed, another scheme's challenge):
    /// returned as is, with its [`Challenges`] in its extensions. The
    /// token stays.
    Denied,
    /// The token is good but not enough: the request is sent once more
    /// ([`RetryOnce`]) with a token asked for with more (the scope, the
    /// claims the [`StepUp`] names), from the cache's
    /// [variant](crate::TokenCache::variant) for those parameters. The
    /// token sent stays. Returned as [`Denied`](Self::Denied) when the
    /// source cannot ask for parameters or the body cannot be replayed.
    StepUp(StepUp),
    /// The token is good, the request's proof was not: a DPoP proof without
    /// the nonce the server demands (`use_dpop_nonce`) or one it refused
    /// (`invalid_dpop_proof`). Sent once more ([`RetryOnce`]) with the
    /// same token and a new proof (with the nonce the response gave). The
    /// token stays.
    Retry,
}

/// What a step-up asks for on top of what the request's token was asked
/// for: more scope, a claims request.
///
/// Its `Debug` shows the scope, not the claims.
///
/// ```
/// use tower_bearer::reject::StepUp;
/// use tower_bearer::TokenParams;
///
/// let step_up = StepUp::new().scope("files:write");
/// let params = step_up.apply(&TokenParams::new());
/// assert_eq!(params.scope_for(Some("files:read")).as_deref(), Some("files:read files:write"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    scope: Option<String>,
    claims: Option<String>,
}

impl StepUp {
    /// A step-up asking for nothing yet.
    pub fn new() -> Self {
        StepUp::default()
    }

    /// Scope to add (space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A claims request (a JSON object) to send.
    pub fn claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// The scope to add, if any.
    pub fn scope_str(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The claims request, if any.
    pub fn claims_str(&self) -> Option<&str> {
        self.claims.as_deref()
    }

    /// The parameters of the retry's token: `params` (the request's) with
    /// the scope added and the claims set.
    pub fn apply(&self, params: &TokenParams) -> TokenParams {
        let mut params = match &self.scope {
            Some(scope) => params.with_scope_added(scope),
            None => params.clone(),
        };
        if let Some(claims) = &self.claims {
            params = params.claims(claims.clone());
        }
        params
    }
}

impl fmt::Debug for StepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepUp")
            .field("scope", &self.scope)
            .field("claims", &self.claims.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Decides what a response says about its token. Implemented by
/// [`Standard`], by [`StatusOnly`] and by closures
/// `Fn(StatusCode, &HeaderMap) -> Verdict`: the decision is yours to
/// replace.
///
/// # Example
///
/// A rule as a type, for an API that also says `419` for an expired token:
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bearer::reject::{Classify, Standard, Verdict};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// #[derive(Clone)]
/// struct ExpiredIs419;
///
/// impl Classify for ExpiredIs419 {
///     fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
///         match status.as_u16() {
///             419 => Verdict::Rejected,
///             _ => Standard::new().classify(status, headers),
///         }
///     }
/// }
///
/// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k"))).classify(ExpiredIs419);
/// # drop(layer);
/// assert_eq!(
///     ExpiredIs419.classify(StatusCode::from_u16(419).unwrap(), &HeaderMap::new()),
///     Verdict::Rejected
/// );
/// ```
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response by its status and headers.
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict;
}

/// The default rules: RFC 6750 §3 challenges, see the [module
/// documentation](self) for the table. Step-ups and claims challenges are
/// opt-in.
///
/// # Example
///
/// ```
/// use http::{header::WWW_AUTHENTICATE, HeaderMap, HeaderValue, StatusCode};
/// use tower_bearer::reject::{Classify, Standard, StepUp, Verdict};
///
/// // A gRPC rejection: HTTP 200 with `grpc-status: 16` in the headers.
/// let mut grpc = HeaderMap::new();
/// grpc.insert("grpc-status", HeaderValue::from_static("16"));
/// assert_eq!(Standard::new().classify(StatusCode::OK, &grpc), Verdict::Rejected);
///
/// // A 403 that asks for more scope: denied, unless step-ups are on.
/// let mut scope = HeaderMap::new();
/// scope.insert(
///     WWW_AUTHENTICATE,
///     HeaderValue::from_static(r#"Bearer error="insufficient_scope", scope="files:write""#),
/// );
/// assert_eq!(Standard::new().classify(StatusCode::FORBIDDEN, &scope), Verdict::Denied);
/// assert_eq!(
///     Standard::new().step_up(true).classify(StatusCode::FORBIDDEN, &scope),
///     Verdict::StepUp(StepUp::new().scope("files:write"))
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standard {
    step_up: bool,
    claims: bool,
}

impl Standard {
    /// The standard rules, with step-ups and claims challenges off.
    pub const fn new() -> Self {
        Standard {
            step_up: false,
            claims: false,
        }
    }

    /// Whether an `insufficient_scope` challenge that names a `scope` is a
    /// [`StepUp`](Verdict::StepUp) to that scope on top of the request's
    /// (off by default: more scope is a decision, and some servers name
    /// scopes the client may not ask for).
    pub const fn step_up(mut self, on: bool) -> Self {
        self.step_up = on;
        self
    }

    /// Whether an `insufficient_claims` challenge with `claims` (Microsoft
    /// Entra ID's continuous access evaluation) is a
    /// [`StepUp`](Verdict::StepUp) with those claims (off by default).
    pub const fn claims_challenges(mut self, on: bool) -> Self {
        self.claims = on;
        self
    }
}

impl Classify for Standard {
    #[inline]
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        if status == StatusCode::UNAUTHORIZED {
            return self.unauthorized(headers);
        }
        if status == StatusCode::FORBIDDEN {
            return self.forbidden(headers);
        }
        if !headers.is_empty()
            && let Some(grpc) = headers.get(&GRPC_STATUS)
        {
            match grpc.as_bytes() {
                b"16" => return self.unauthorized(headers),
                b"7" => return self.forbidden(headers),
                _ => {}
            }
        }
        Verdict::Accepted
    }
}

impl Standard {
    /// A 401 or gRPC UNAUTHENTICATED.
    #[cold]
    fn unauthorized(&self, headers: &HeaderMap) -> Verdict {
        let challenges = Challenges::from_headers(headers);
        if challenges.is_empty() {
            return Verdict::Rejected;
        }
        let Some(ours) = ours(&challenges) else {
            // Another scheme's: not about the token we sent.
            return Verdict::Denied;
        };
        match ours.error() {
            Some("insufficient_scope") => self.insufficient_scope(ours),
            Some("insufficient_claims") => match ours.claims() {
                Some(claims) if self.claims => Verdict::StepUp(StepUp::new().claims(claims)),
                _ => Verdict::Denied,
            },
            Some("use_dpop_nonce" | "invalid_dpop_proof") => Verdict::Retry,
            _ => Verdict::Rejected,
        }
    }

    /// A 403 or gRPC PERMISSION_DENIED.
    #[cold]
    fn forbidden(&self, headers: &HeaderMap) -> Verdict {
        let challenges = Challenges::from_headers(headers);
        match ours(&challenges) {
            Some(ours) if ours.error() == Some("insufficient_scope") => {
                self.insufficient_scope(ours)
            }
            _ => Verdict::Denied,
        }
    }

    fn insufficient_scope(&self, challenge: &Challenge) -> Verdict {
        match challenge.scope() {
            Some(scope) if self.step_up && !scope.trim().is_empty() => {
                Verdict::StepUp(StepUp::new().scope(scope))
            }
            _ => Verdict::Denied,
        }
    }
}

/// The challenge of a scheme our tokens are sent with: `Bearer`, or `DPoP`
/// (RFC 9449 §7.1).
fn ours(challenges: &Challenges) -> Option<&Challenge> {
    challenges.iter().find(|c| c.is("Bearer") || c.is("DPoP"))
}

/// HTTP 401 only, for services that are not gRPC and do not want the header
/// looked at.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use tower_bearer::reject::{Classify, StatusOnly, Verdict};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// let mut grpc = HeaderMap::new();
/// grpc.insert("grpc-status", HeaderValue::from_static("16"));
/// assert_eq!(StatusOnly.classify(StatusCode::OK, &grpc), Verdict::Accepted);
/// assert_eq!(StatusOnly.classify(StatusCode::UNAUTHORIZED, &grpc), Verdict::Rejected);
///
/// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k"))).classify(StatusOnly);
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusOnly;

impl Classify for StatusOnly {
    #[inline]
    fn classify(&self, status: StatusCode, _headers: &HeaderMap) -> Verdict {
        match status {
            StatusCode::UNAUTHORIZED => Verdict::Rejected,
            StatusCode::FORBIDDEN => Verdict::Denied,
            _ => Verdict::Accepted,
        }
    }
}

impl<F> Classify for F
where
    F: Fn(StatusCode, &HeaderMap) -> Verdict + Clone + Send + Sync + 'static,
{
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        self(status, headers)
    }
}

/// What [`AuthService`](crate::AuthService) does after a rejection, besides
/// invalidating the token: [`RetryOnce`] (the default) or [`Return`].
///
/// A type rather than a value, so that each choice gets the response
/// future it needs: [`Return`]'s keeps no room for a copy of the request,
/// [`RetryOnce`]'s keeps the copy inline instead of in a box of its own.
/// Implemented by those two types only.
///
/// # Example
///
/// ```
/// use tower_bearer::reject::{OnRejection, Return, RetryOnce};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// // Let the caller (or an outer retry layer) see every 401; the rejected
/// // token is still invalidated, so the next request gets a new one.
/// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k")))
///     .on_rejection(Return);
/// # drop(layer);
/// assert!(RetryOnce::RETRIES && !Return::RETRIES);
/// ```
pub trait OnRejection:
    sealed::Sealed + Clone + Copy + Default + fmt::Debug + Send + Sync + 'static
{
    /// Whether a rejected request is sent once more.
    const RETRIES: bool;

    /// Where the response future keeps the copy of a request for the
    /// retry. Not for use outside this crate.
    #[doc(hidden)]
    type Copy<S, B>: crate::copy::Slot<S, B>;
}

/// Sends a rejected request once more with a token different from the
/// rejected one, when its body can be replayed (B6). The default.
///
/// This keeps a copy of each replayable request until its response
/// arrives: the method, URI, version and extensions, the headers' bytes in
/// one buffer (one allocation, none for a request without headers), and
/// the body where its type allows (`Full<Bytes>` and `Bytes` are
/// reference-counted). See [`OnRejection`].
///
/// ```
/// use tower_bearer::reject::RetryOnce;
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k"))).on_rejection(RetryOnce);
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOnce;

/// Returns a rejection to the caller. The token is still invalidated, so
/// the next request gets a new one. Nothing is copied. See
/// [`OnRejection`].
///
/// ```
/// use tower_bearer::reject::Return;
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k"))).on_rejection(Return);
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Return;

impl OnRejection for RetryOnce {
    const RETRIES: bool = true;
    type Copy<S, B> = Option<crate::copy::Replay<S, B>>;
}

impl OnRejection for Return {
    const RETRIES: bool = false;
    type Copy<S, B> = crate::copy::NoCopy;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::RetryOnce {}
    impl Sealed for super::Return {}
}

/// The `error` parameter of the first `Bearer` challenge in
/// `WWW-Authenticate` (RFC 6750 §3), if there is one. See
/// [`challenge`](crate::challenge) for the whole challenges.
pub fn bearer_error(headers: &HeaderMap) -> Option<String> {
    Challenges::from_headers(headers)
        .bearer()
        .and_then(|bearer| bearer.param("error"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const STANDARD: Standard = Standard::new();
    const ALL_ON: Standard = Standard::new().step_up(true).claims_challenges(true);

    #[test]
    fn b6_401_and_grpc_16_are_rejections_403_and_grpc_7_are_denials() {
        let none = HeaderMap::new();
        assert_eq!(
            STANDARD.classify(StatusCode::UNAUTHORIZED, &none),
            Verdict::Rejected
        );
        assert_eq!(
            STANDARD.classify(StatusCode::FORBIDDEN, &none),
            Verdict::Denied
        );
        assert_eq!(STANDARD.classify(StatusCode::OK, &none), Verdict::Accepted);
        let grpc = headers(&[("grpc-status", "16")]);
        assert_eq!(STANDARD.classify(StatusCode::OK, &grpc), Verdict::Rejected);
        let grpc_denied = headers(&[("grpc-status", "7")]);
        assert_eq!(
            STANDARD.classify(StatusCode::OK, &grpc_denied),
            Verdict::Denied
        );
        let grpc_other = headers(&[("grpc-status", "14")]);
        assert_eq!(
            STANDARD.classify(StatusCode::OK, &grpc_other),
            Verdict::Accepted
        );
        assert_eq!(
            StatusOnly.classify(StatusCode::OK, &grpc),
            Verdict::Accepted
        );
    }

    #[test]
    fn b6_invalid_token_or_no_error_is_a_rejection() {
        for value in [
            r#"Bearer realm="peer-api", error="invalid_token", error_description="expired""#,
            r#"Bearer realm="api""#,
            "Bearer",
            r#"DPoP algs="ES256", error="invalid_token""#,
            r#"Basic realm="x", Bearer error="invalid_token""#,
        ] {
            let h = headers(&[("www-authenticate", value)]);
            assert_eq!(
                ALL_ON.classify(StatusCode::UNAUTHORIZED, &h),
                Verdict::Rejected,
                "{value}"
            );
        }
    }

    #[test]
    fn b6_insufficient_scope_is_a_denial_unless_step_ups_are_on() {
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="api", error="insufficient_scope", scope="write admin""#,
        )]);
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            assert_eq!(STANDARD.classify(status, &h), Verdict::Denied);
            assert_eq!(
                Standard::new().step_up(true).classify(status, &h),
                Verdict::StepUp(StepUp::new().scope("write admin"))
            );
        }
        // Without a scope to add, nothing to step up to.
        let h = headers(&[("www-authenticate", r#"Bearer error="insufficient_scope""#)]);
        assert_eq!(ALL_ON.classify(StatusCode::FORBIDDEN, &h), Verdict::Denied);
        // gRPC: the same challenge in the metadata of PERMISSION_DENIED.
        let h = headers(&[
            ("grpc-status", "7"),
            (
                "www-authenticate",
                r#"Bearer error="insufficient_scope", scope="w""#,
            ),
        ]);
        assert_eq!(
            ALL_ON.classify(StatusCode::OK, &h),
            Verdict::StepUp(StepUp::new().scope("w"))
        );
    }

    #[test]
    fn claims_challenges_are_a_denial_unless_opted_in() {
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ==""#,
        )]);
        assert_eq!(
            STANDARD.classify(StatusCode::UNAUTHORIZED, &h),
            Verdict::Denied
        );
        assert_eq!(
            Standard::new()
                .claims_challenges(true)
                .classify(StatusCode::UNAUTHORIZED, &h),
            Verdict::StepUp(StepUp::new().claims(r#"{"access_token":{"nbf":{"essential":true}}}"#))
        );
        // Claims that do not decode: nothing to ask for.
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer error="insufficient_claims", claims="%%%""#,
        )]);
        assert_eq!(
            ALL_ON.classify(StatusCode::UNAUTHORIZED, &h),
            Verdict::Denied
        );
    }

    #[test]
    fn dpop_nonce_and_proof_errors_ask_for_the_same_token_again() {
        for value in [
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
            r#"DPoP algs="ES256", error="invalid_dpop_proof""#,
        ] {
            let h = headers(&[("www-authenticate", value)]);
            assert_eq!(
                STANDARD.classify(StatusCode::UNAUTHORIZED, &h),
                Verdict::Retry,
                "{value}"
            );
        }
    }

    #[test]
    fn another_schemes_challenge_is_left_to_the_caller() {
        for value in [
            r#"Basic realm="intranet""#,
            "Negotiate",
            "Negotiate a87421==",
        ] {
            let h = headers(&[("www-authenticate", value)]);
            assert_eq!(
                ALL_ON.classify(StatusCode::UNAUTHORIZED, &h),
                Verdict::Denied,
                "{value}"
            );
        }
    }

    #[test]
    fn step_up_debug_hides_the_claims() {
        let step_up = StepUp::new().scope("w").claims(r#"{"secret":"x"}"#);
        assert!(!format!("{step_up:?}").contains("secret"));
        assert!(format!("{step_up:?}").contains('w'));
    }

    #[test]
    fn bearer_error_parses_quoted_and_bare_values() {
        let get = |v: &'static str| bearer_error(&headers(&[("www-authenticate", v)]));
        assert_eq!(
            get(r#"Bearer error="invalid_token""#).as_deref(),
            Some("invalid_token")
        );
        assert_eq!(
            get("bearer realm=x, error=invalid_token").as_deref(),
            Some("invalid_token")
        );
        assert_eq!(
            get(r#"Bearer realm="a \"b\", c", error="x""#).as_deref(),
            Some("x")
        );
        assert_eq!(get(r#"Basic realm="x", error="invalid_token""#), None);
        assert_eq!(get(r#"Bearer realm="unterminated"#), None);
        assert_eq!(get("Bearer"), None);
        assert_eq!(get("Bearer ,,,, error"), None);
    }
}
