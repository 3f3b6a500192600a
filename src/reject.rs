//! What counts as a rejected token, and what to do about it.
//!
//! A response *rejects* the token it carried when the server says the token
//! is not good (B6): HTTP 401, or a gRPC response with `grpc-status: 16`
//! (UNAUTHENTICATED) in its headers, the trailers-only form gRPC servers use
//! for errors. A rejection invalidates that token in the cache and, with the
//! default [`RetryOnce`], the request is sent once more with a
//! new token when its body can be replayed.
//!
//! 403 is not a rejection: the token is valid but not allowed, and a new one
//! would not be either. A 401 whose `WWW-Authenticate: Bearer` challenge says
//! `error="insufficient_scope"` is treated the same way.
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
//! // An API that answers 419 for expired tokens.
//! let layer = AuthLayer::new(cache).classify(|status: StatusCode, headers: &HeaderMap| {
//!     if status.as_u16() == 419 { Verdict::Rejected } else { Standard.classify(status, headers) }
//! });
//! # drop(layer);
//! ```

use std::fmt;

use http::{HeaderMap, HeaderName, StatusCode, header::WWW_AUTHENTICATE};

/// The gRPC status header, named once: looking it up by a `&str` would parse
/// the name on every response.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether a response accepted the token it was sent with.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_bearer::reject::{Classify, Standard, Verdict};
///
/// let headers = HeaderMap::new();
/// assert_eq!(Standard.classify(StatusCode::UNAUTHORIZED, &headers), Verdict::Rejected);
/// assert_eq!(Standard.classify(StatusCode::FORBIDDEN, &headers), Verdict::Accepted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server did not complain about the token.
    Accepted,
    /// The server rejected the token: invalidate it (and maybe retry).
    Rejected,
}

/// Decides whether a response rejects its token. Implemented by [`Standard`],
/// by [`StatusOnly`] and by closures `Fn(StatusCode, &HeaderMap) -> Verdict`.
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
///             _ => Standard.classify(status, headers),
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

/// The default: 401 (unless the challenge says `insufficient_scope`), or
/// `grpc-status: 16` in the response headers.
///
/// # Example
///
/// ```
/// use http::{header::WWW_AUTHENTICATE, HeaderMap, HeaderValue, StatusCode};
/// use tower_bearer::reject::{Classify, Standard, Verdict};
///
/// // A gRPC rejection: HTTP 200 with `grpc-status: 16` in the headers.
/// let mut grpc = HeaderMap::new();
/// grpc.insert("grpc-status", HeaderValue::from_static("16"));
/// assert_eq!(Standard.classify(StatusCode::OK, &grpc), Verdict::Rejected);
///
/// // A 401 that asks for more scope: a new token would not help.
/// let mut scope = HeaderMap::new();
/// scope.insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="insufficient_scope""#));
/// assert_eq!(Standard.classify(StatusCode::UNAUTHORIZED, &scope), Verdict::Accepted);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Standard;

impl Classify for Standard {
    #[inline]
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        if status == StatusCode::UNAUTHORIZED {
            return unauthorized(headers);
        }
        if !headers.is_empty()
            && headers
                .get(&GRPC_STATUS)
                .is_some_and(|v| v.as_bytes() == b"16")
        {
            return Verdict::Rejected;
        }
        Verdict::Accepted
    }
}

/// A 401: a rejection, unless its challenge asks for more scope.
#[cold]
fn unauthorized(headers: &HeaderMap) -> Verdict {
    if bearer_error(headers).as_deref() == Some("insufficient_scope") {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    }
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
        if status == StatusCode::UNAUTHORIZED {
            Verdict::Rejected
        } else {
            Verdict::Accepted
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

/// The `error` parameter of a `Bearer` challenge in `WWW-Authenticate`
/// (RFC 6750 §3), if there is one.
pub fn bearer_error(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_bearer_error)
}

fn parse_bearer_error(challenge: &str) -> Option<String> {
    let rest = challenge.trim_start();
    let scheme_end = rest
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    if !rest[..scheme_end].eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = &rest[scheme_end..];
    loop {
        params = params.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        let eq = params.find('=')?;
        let name = params[..eq].trim();
        let after = params[eq + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        if name.eq_ignore_ascii_case("error") {
            return Some(value);
        }
        params = remaining;
    }
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

    #[test]
    fn b6_401_and_grpc_16_are_rejections_403_is_not() {
        let none = HeaderMap::new();
        assert_eq!(
            Standard.classify(StatusCode::UNAUTHORIZED, &none),
            Verdict::Rejected
        );
        assert_eq!(
            Standard.classify(StatusCode::FORBIDDEN, &none),
            Verdict::Accepted
        );
        assert_eq!(Standard.classify(StatusCode::OK, &none), Verdict::Accepted);
        let grpc = headers(&[("grpc-status", "16")]);
        assert_eq!(Standard.classify(StatusCode::OK, &grpc), Verdict::Rejected);
        let grpc_other = headers(&[("grpc-status", "7")]);
        assert_eq!(
            Standard.classify(StatusCode::OK, &grpc_other),
            Verdict::Accepted
        );
        assert_eq!(
            StatusOnly.classify(StatusCode::OK, &grpc),
            Verdict::Accepted
        );
    }

    #[test]
    fn b6_insufficient_scope_is_not_retried() {
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="api", error="insufficient_scope", scope="write""#,
        )]);
        assert_eq!(
            Standard.classify(StatusCode::UNAUTHORIZED, &h),
            Verdict::Accepted
        );
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="peer-api", error="invalid_token", error_description="expired""#,
        )]);
        assert_eq!(
            Standard.classify(StatusCode::UNAUTHORIZED, &h),
            Verdict::Rejected
        );
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
