//! Tokens as the cache holds them: the secret values, their type and their expiry.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bearer::Token;
//!
//! let token = Token::new("eyJhbGciOi...")
//!     .with_refresh_token("8xLOxBtZp8")
//!     .with_expires_in(Duration::from_secs(3600));
//!
//! assert_eq!(token.access_token().secret(), "eyJhbGciOi...");
//! // Debug output never shows a secret.
//! assert!(!format!("{token:?}").contains("eyJhbGciOi"));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tokio::time::Instant;

/// What a secret prints as in `Debug` output.
pub(crate) const REDACTED: &str = "[redacted]";

/// Defines a secret newtype over `String`: redacted `Debug`, no `Display`,
/// `secret()` to read it. Used for every secret the crate holds (B8).
macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// `Debug` prints `[redacted]` instead of the value; there is no
        /// `Display`. Read the value with [`secret`](Self::secret).
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value itself. Never log it.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Consumes the wrapper and returns the secret value.
            pub fn into_secret(self) -> String {
                self.0
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name))
                    .field(&format_args!("{}", $crate::token::REDACTED))
                    .finish()
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

pub(crate) use secret_newtype;

secret_newtype!(
    /// An OAuth2 access token: the value sent in `Authorization: Bearer …`.
    AccessToken
);
secret_newtype!(
    /// An OAuth2 refresh token (RFC 6749 §1.5), used to get the next access token.
    RefreshToken
);

/// The `token_type` of a token response (RFC 6749 §7.1), which names the
/// `Authorization` scheme the token is sent with.
///
/// The scheme is matched case-insensitively and normalised, so `"bearer"`,
/// `"BEARER"` and `"Bearer"` all become [`TokenType::Bearer`] and are sent as
/// `Authorization: Bearer <token>`.
///
/// ```
/// use tower_bearer::TokenType;
///
/// assert_eq!(TokenType::parse("bearer"), TokenType::Bearer);
/// assert_eq!(TokenType::parse("DPoP"), TokenType::DPoP);
/// assert_eq!(TokenType::parse("mac").scheme(), "mac");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenType {
    /// RFC 6750 bearer tokens, sent as `Bearer <token>`. The default.
    #[default]
    Bearer,
    /// RFC 9449 DPoP-bound tokens, sent as `DPoP <token>` with a proof made
    /// by the key the token is bound to (feature `dpop`, see
    /// `Token::with_dpop`). A DPoP token with no key is refused by the
    /// cache, never sent.
    DPoP,
    /// Any other type, kept as the server spelled it.
    Other(String),
}

impl TokenType {
    /// Parses a `token_type` value, case-insensitively.
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("bearer") {
            TokenType::Bearer
        } else if value.eq_ignore_ascii_case("dpop") {
            TokenType::DPoP
        } else {
            TokenType::Other(value.to_owned())
        }
    }

    /// The `Authorization` scheme for this type: `Bearer`, `DPoP`, or the
    /// server's spelling for anything else.
    pub fn scheme(&self) -> &str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
            TokenType::Other(other) => other,
        }
    }
}

/// An access token with what the cache needs to know about it.
///
/// A token is built when its response arrives. Its expiry is absolute: a
/// relative lifetime given with [`with_expires_in`](Self::with_expires_in) is
/// added to the moment of that call, read from tokio's clock (B1, B11). A token
/// without any expiry gets one from the cache (the JWT `exp` claim when the
/// access token is a JWT, else the cache's default lifetime).
///
/// `Debug` redacts the access and refresh tokens; `Token` has no `Display`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::Token;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Built when the token response arrives: `expires_in` counts from now.
/// let token = Token::new("t0k3n")
///     .with_expires_in(Duration::from_secs(3600))
///     .with_refresh_token("r3fr3sh")
///     .with_scope("read write");
///
/// assert_eq!(token.access_token().secret(), "t0k3n");
/// assert_eq!(token.refresh_token().map(|t| t.secret()), Some("r3fr3sh"));
/// assert_eq!(token.expires_at(), Some(token.issued_at() + Duration::from_secs(3600)));
/// // Secrets stay out of logs.
/// assert!(!format!("{token:?}").contains("t0k3n"));
/// # }
/// ```
#[derive(Clone)]
pub struct Token {
    access_token: AccessToken,
    token_type: TokenType,
    refresh_token: Option<RefreshToken>,
    issued_at: Instant,
    expires_at: Option<Instant>,
    scope: Option<String>,
    extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// The key a DPoP-bound token is proved with.
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Dpop>,
}

impl Token {
    /// A bearer token issued now, with no expiry and no refresh token yet.
    pub fn new(access_token: impl Into<AccessToken>) -> Self {
        Token {
            access_token: access_token.into(),
            token_type: TokenType::Bearer,
            refresh_token: None,
            issued_at: Instant::now(),
            expires_at: None,
            scope: None,
            extra: None,
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// Sets the lifetime, counted from the moment the token was created.
    ///
    /// A zero lifetime means "use once": the token is handed to the callers
    /// waiting for it, and the next call fetches another one.
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = Some(
            self.issued_at
                .checked_add(lifetime)
                .unwrap_or_else(far_future),
        );
        self
    }

    /// Sets the moment the token was issued (tokio's clock), for a token
    /// restored from storage. [`with_expires_in`](Self::with_expires_in)
    /// counts from it, so call this first.
    pub fn with_issued_at(mut self, issued_at: Instant) -> Self {
        self.issued_at = issued_at;
        self
    }

    /// Sets an absolute expiry.
    pub fn with_expires_at(mut self, expires_at: Instant) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets the refresh token that comes with this access token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<RefreshToken>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Sets (or removes) the refresh token.
    pub fn with_refresh_token_opt(mut self, refresh_token: Option<RefreshToken>) -> Self {
        self.refresh_token = refresh_token;
        self
    }

    /// Sets the token type (the `Authorization` scheme). The default is bearer.
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// Binds the token to a DPoP key (RFC 9449), for a source of your own
    /// that got a DPoP token: requests then carry a proof made with `dpop`.
    /// The token type should be [`TokenType::DPoP`]; the built-in grants
    /// do this themselves when their endpoint has a key.
    ///
    /// ```
    /// use tower_bearer::{dpop::Dpop, Token, TokenType};
    ///
    /// let dpop = Dpop::generate()?;
    /// let token = Token::new("t0k3n").with_token_type(TokenType::DPoP).with_dpop(dpop.clone());
    /// assert_eq!(token.dpop().map(Dpop::thumbprint), Some(dpop.thumbprint()));
    /// # Ok::<_, tower_bearer::ConfigError>(())
    /// ```
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn with_dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// The DPoP key the token is bound to, if any.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(&self) -> Option<&crate::dpop::Dpop> {
        self.dpop.as_ref()
    }

    /// Sets the granted scope, as the server returned it.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Keeps the response members this crate does not interpret (for example
    /// `id_token` or vendor extensions).
    pub fn with_extra(mut self, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extra = if extra.is_empty() {
            None
        } else {
            Some(Box::new(extra))
        };
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// The refresh token, if the server sent one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// When the token was created (tokio's clock).
    pub fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// The absolute expiry, if one is known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// The granted scope, if the server returned one.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Response members this crate does not interpret.
    pub fn extra(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.extra.as_deref()
    }

    /// The expiry taken from the `exp` claim when the access token is a JWT
    /// (the payload is decoded, the signature is not checked), converted to
    /// tokio's clock. `None` when the token is not a JWT or has no usable
    /// `exp`.
    pub fn jwt_expiry(&self) -> Option<Instant> {
        let exp = jwt_exp_claim(self.access_token.secret())?;
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let remaining = Duration::from_secs(exp.saturating_sub(now_unix));
        Some(
            Instant::now()
                .checked_add(remaining)
                .unwrap_or_else(far_future),
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("refresh_token", &self.refresh_token)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An instant so far away that nothing waits for it: about 30 years on.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

/// `at + delay`, or [`far_future`] when that is not representable (a
/// user-configured `Duration::MAX` must not panic on the refresh path).
pub(crate) fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay).unwrap_or_else(far_future)
}

/// Reads the `exp` claim (seconds since the Unix epoch) of a JWT's payload.
pub(crate) fn jwt_exp_claim(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    // A JWS has three parts, a JWE five; anything else is not a JWT.
    let rest = parts.count();
    if rest != 1 && rest != 3 {
        return None;
    }
    // A payload of more than 16 KiB is not worth decoding on the refresh path.
    if payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Value>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    match claims.exp? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            enc.encode(r#"{"alg":"none"}"#),
            enc.encode(payload)
        )
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let token = Token::new("access-secret-value")
            .with_refresh_token("refresh-secret-value")
            .with_scope("read");
        let debug = format!("{token:?}");
        assert!(!debug.contains("access-secret-value"), "{debug}");
        assert!(!debug.contains("refresh-secret-value"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(debug.contains("read"), "{debug}");
    }

    #[test]
    fn token_type_is_matched_case_insensitively() {
        assert_eq!(TokenType::parse("BeArEr"), TokenType::Bearer);
        assert_eq!(TokenType::parse("bearer").scheme(), "Bearer");
        assert_eq!(TokenType::parse("dpop").scheme(), "DPoP");
        assert_eq!(TokenType::parse("mac"), TokenType::Other("mac".to_owned()));
    }

    #[test]
    fn jwt_exp_claim_is_read_without_checking_the_signature() {
        assert_eq!(
            jwt_exp_claim(&jwt(r#"{"exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_exp_claim(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(jwt_exp_claim(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_exp_claim(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_exp_claim(&jwt(r#"{"exp":-5}"#)), None);
        assert_eq!(jwt_exp_claim("opaque-token"), None);
        assert_eq!(jwt_exp_claim("a.b"), None);
        assert_eq!(jwt_exp_claim("a.!!!.c"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn expires_in_counts_from_creation() {
        let token = Token::new("t").with_expires_in(Duration::from_secs(10));
        assert_eq!(
            token.expires_at(),
            Some(token.issued_at() + Duration::from_secs(10))
        );
        let forever = Token::new("t").with_expires_in(Duration::MAX);
        assert!(forever.expires_at().unwrap() > token.expires_at().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn jwt_expiry_converts_exp_to_tokio_clock() {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = Token::new(jwt(&format!(r#"{{"exp":{}}}"#, now_unix + 600)));
        let at = token.jwt_expiry().expect("a JWT with exp");
        let remaining = at - Instant::now();
        assert!(remaining <= Duration::from_secs(600));
        assert!(remaining >= Duration::from_secs(598));
        // An exp in the past means "expired now", never a panic.
        let old = Token::new(jwt(r#"{"exp":1}"#));
        assert_eq!(old.jwt_expiry(), Some(Instant::now()));
    }
}
