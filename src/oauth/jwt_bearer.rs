//! The JWT-bearer grant (RFC 7523 §2.1): a JWT as the authorization grant.

use std::sync::Arc;

use super::endpoint::TokenEndpoint;
use super::grant::{FormGrant, GrantCore, GrantForm, Primary, grant_handle};
use super::security_token::SecurityTokenSource;
use crate::Error;
use crate::source::BoxFuture;

/// `grant_type` of the JWT-bearer grant.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A [`TokenSource`](crate::TokenSource) for the JWT-bearer grant (RFC 7523
/// §2.1): each token request sends `grant_type=`[`JWT_BEARER`] with an
/// `assertion`, plus the endpoint's `scope`, parameters and client
/// authentication (often `none`: the assertion is the credential).
///
/// The assertion is either
///
/// * **taken from a [`SecurityTokenSource`]** ([`new`](Self::new)): a
///   Kubernetes projected service-account token through a
///   [`TokenFile`](super::TokenFile), a CI job's OIDC token, a token of
///   another cache; or
/// * **signed here** (`signed`, feature
///   `private-key-jwt`): a new JWT per request with `iss`, `sub`, `aud` (the
///   token endpoint URL, or [`audience`](Self::audience)), a random `jti`,
///   `iat` now and `exp` a minute later, signed with a
///   `ClientAssertionKey` (ES256 or RS256).
///
/// A refused assertion (`invalid_grant`) is a permanent error, not retried.
/// When the response carries a refresh token, the next refresh uses it and
/// falls back to a new assertion if it is refused (B5).
///
/// Cheap to clone; clones share the counters and any refresh token.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::{ClientAuth, JwtBearerGrant, TokenEndpoint, TokenFile};
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::none("my-workload"),
/// )
/// .scope("api:read")
/// .build()?;
/// let assertion = TokenFile::new("/var/run/secrets/tokens/idp-token");
/// let cache = TokenCache::new(JwtBearerGrant::new(endpoint, assertion));
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwtBearerGrant {
    core: Arc<GrantCore>,
    /// What the core was built with, for the builder steps.
    assertion: Assertion,
}

impl JwtBearerGrant {
    /// A JWT-bearer grant at `endpoint` whose assertion comes from
    /// `assertion` at each token request.
    pub fn new(endpoint: TokenEndpoint, assertion: impl SecurityTokenSource) -> JwtBearerGrant {
        JwtBearerGrant::with(
            endpoint,
            Assertion::Source {
                source: Arc::new(assertion),
                subject: None,
            },
        )
    }

    /// A JWT-bearer grant at `endpoint` whose assertions are signed here
    /// with `key`, issued by `issuer` about `subject` (feature
    /// `private-key-jwt`).
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAssertionKey, ClientAuth, JwtBearerGrant, TokenEndpoint};
    ///
    /// # fn main() -> Result<(), tower_bearer::ConfigError> {
    /// # let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    /// let key = ClientAssertionKey::from_pem(pem)?.with_key_id("2026-11");
    /// let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("svc"))
    ///     .build()?;
    /// let grant = JwtBearerGrant::signed(endpoint, key, "svc", "alice@example.com")
    ///     .audience("https://idp.example");
    /// # drop(grant);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn signed(
        endpoint: TokenEndpoint,
        key: super::ClientAssertionKey,
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> JwtBearerGrant {
        let audience = endpoint.url().to_owned();
        JwtBearerGrant::with(
            endpoint,
            Assertion::Signed {
                key,
                issuer: issuer.into(),
                subject: subject.into(),
                audience,
            },
        )
    }

    /// The `aud` of assertions signed here (default: the token endpoint
    /// URL). No effect on assertions from a source.
    #[must_use]
    pub fn audience(self, audience: impl Into<String>) -> JwtBearerGrant {
        let audience = audience.into();
        self.rebuild(|assertion| {
            #[cfg(feature = "private-key-jwt")]
            if let Assertion::Signed { audience: aud, .. } = assertion {
                *aud = audience;
            }
            #[cfg(not(feature = "private-key-jwt"))]
            let _ = (assertion, audience);
        })
    }

    /// Names whose token this is, for [`store_key`](Self::store_key): the
    /// subject of the assertions (signed ones name it already).
    #[must_use]
    pub fn subject(self, subject: impl Into<String>) -> JwtBearerGrant {
        let subject = subject.into();
        self.rebuild(|assertion| match assertion {
            Assertion::Source { subject: s, .. } => *s = Some(subject),
            #[cfg(feature = "private-key-jwt")]
            Assertion::Signed { subject: s, .. } => *s = subject,
        })
    }

    /// The key of this grant's token in a [store](crate::store): the
    /// endpoint's key ([`StoreKey::for_user`](crate::store::StoreKey::for_user)
    /// with the subject when there is one, else
    /// [`StoreKey::for_endpoint`](crate::store::StoreKey::for_endpoint))
    /// together with the grant type, so that it never names the token of
    /// another grant (a password grant for a user of the same name, say).
    pub fn store_key(&self) -> crate::store::StoreKey {
        let endpoint = match self.core.username() {
            Some(subject) => crate::store::StoreKey::for_user(self.core.endpoint(), subject),
            None => crate::store::StoreKey::for_endpoint(self.core.endpoint()),
        };
        crate::store::StoreKey::new([endpoint.as_str(), JWT_BEARER])
    }

    fn with(endpoint: TokenEndpoint, assertion: Assertion) -> JwtBearerGrant {
        JwtBearerGrant {
            core: Arc::new(GrantCore::new(
                endpoint,
                Some(Primary::form(assertion.clone())),
                None,
            )),
            assertion,
        }
    }

    /// The same grant with its assertion changed: a builder step, for a
    /// grant not used yet (its counters start again).
    fn rebuild(mut self, change: impl FnOnce(&mut Assertion)) -> JwtBearerGrant {
        change(&mut self.assertion);
        JwtBearerGrant::with(self.core.endpoint().clone(), self.assertion)
    }
}

grant_handle!(JwtBearerGrant, assertion);

/// Where the assertion comes from.
#[derive(Clone)]
enum Assertion {
    Source {
        source: Arc<dyn SecurityTokenSource>,
        subject: Option<String>,
    },
    #[cfg(feature = "private-key-jwt")]
    Signed {
        key: super::ClientAssertionKey,
        issuer: String,
        subject: String,
        audience: String,
    },
}

impl FormGrant for Assertion {
    fn name(&self) -> &'static str {
        "jwt_bearer"
    }

    fn form(&self) -> BoxFuture<'_, Result<GrantForm, Error>> {
        Box::pin(async move {
            let assertion = match self {
                Assertion::Source { source, .. } => source.security_token().await?.into_secret(),
                #[cfg(feature = "private-key-jwt")]
                Assertion::Signed {
                    key,
                    issuer,
                    subject,
                    audience,
                } => key.signed(issuer, subject, audience)?,
            };
            Ok(GrantForm::new(JWT_BEARER).secret("assertion", &assertion))
        })
    }

    fn user(&self) -> Option<&str> {
        match self {
            Assertion::Source { subject, .. } => subject.as_deref(),
            #[cfg(feature = "private-key-jwt")]
            Assertion::Signed { subject, .. } => Some(subject),
        }
    }
}
