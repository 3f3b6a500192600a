//! The token-exchange grant (RFC 8693): a token for the next audience in
//! exchange for the one this workload holds.

use std::sync::Arc;

use super::endpoint::TokenEndpoint;
use super::grant::{FormGrant, GrantCore, GrantForm, Primary, grant_handle};
use super::security_token::SecurityTokenSource;
use crate::source::BoxFuture;
use crate::{Error, Token};

/// `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Token type identifiers of RFC 8693 §3, for `subject_token_type`,
/// `actor_token_type`, `requested_token_type` and `issued_token_type`.
pub mod token_types {
    /// An OAuth 2.0 access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// An OAuth 2.0 refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT (a Kubernetes service-account token, a CI OIDC token).
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    /// A base64url-encoded SAML 1.1 assertion.
    pub const SAML1: &str = "urn:ietf:params:oauth:token-type:saml1";
    /// A base64url-encoded SAML 2.0 assertion.
    pub const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";
}

/// A [`TokenSource`](crate::TokenSource) for the token-exchange grant (RFC
/// 8693): each token request sends `grant_type=`[`TOKEN_EXCHANGE`] with the
/// `subject_token` of its [`SecurityTokenSource`] (and its type), an
/// optional `actor_token`, an optional `requested_token_type`, and the
/// endpoint's `scope`, `audience`, `resource` and client authentication
/// ([`TokenEndpointBuilder::audience`](super::TokenEndpointBuilder::audience),
/// [`resource`](super::TokenEndpointBuilder::resource): sent again on every
/// request, and per request with [`TokenParams`](crate::TokenParams)).
///
/// * **Delegation chains.** The subject token may come from another
///   [`TokenCache`](crate::TokenCache): this grant then exchanges that
///   cache's current token, and once that cache refreshes, the next
///   exchange sends its new token.
/// * **`N_A`.** A response whose `token_type` is `N_A` (RFC 8693 §2.2.1:
///   the issued token is not an access token) is accepted only when a
///   [`requested_token_type`](Self::requested_token_type) other than an
///   access token was asked for; the cache then holds it for
///   [`TokenCache::token`](crate::TokenCache::token) and never sends it in
///   an `Authorization` header (a call through the layer fails with a
///   permanent error). Otherwise it is an invalid response.
/// * **`issued_token_type`** is read with [`issued_token_type`].
/// * **Errors** (`invalid_grant`, `invalid_target`, `invalid_request`,
///   `unsupported_token_type`, …) are typed OAuth errors, permanent and
///   not retried.
///
/// Cheap to clone; clones share the counters and any refresh token.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::token_exchange::token_types;
/// use tower_bearer::oauth::{ClientAuth, TokenEndpoint, TokenExchangeGrant, TokenFile};
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder(
///     "https://sts.example/oauth2/token",
///     ClientAuth::basic("backend", "backend-secret"),
/// )
/// .audience("https://orders.example")
/// .build()?;
/// // The Kubernetes service-account token of this pod, for a token the
/// // orders API accepts.
/// let grant = TokenExchangeGrant::new(
///     endpoint,
///     TokenFile::new("/var/run/secrets/tokens/sts-token"),
///     token_types::JWT,
/// );
/// let cache = TokenCache::new(grant);
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenExchangeGrant {
    core: Arc<GrantCore>,
    /// What the core was built with, for the builder steps.
    exchange: Exchange,
}

impl TokenExchangeGrant {
    /// A token exchange at `endpoint` of the token from `subject`, of type
    /// `subject_token_type` (one of [`token_types`], or your server's).
    pub fn new(
        endpoint: TokenEndpoint,
        subject: impl SecurityTokenSource,
        subject_token_type: impl Into<String>,
    ) -> TokenExchangeGrant {
        TokenExchangeGrant::with(
            endpoint,
            Exchange {
                subject: Arc::new(subject),
                subject_token_type: subject_token_type.into(),
                actor: None,
                requested_token_type: None,
                user: None,
            },
        )
    }

    /// Also sends an `actor_token` from `actor`, of type `actor_token_type`
    /// (delegation: the actor acts for the subject, RFC 8693 §1.1).
    #[must_use]
    pub fn actor(
        self,
        actor: impl SecurityTokenSource,
        actor_token_type: impl Into<String>,
    ) -> TokenExchangeGrant {
        let actor: Arc<dyn SecurityTokenSource> = Arc::new(actor);
        let actor_token_type = actor_token_type.into();
        self.rebuild(|e| e.actor = Some((actor, actor_token_type)))
    }

    /// Asks for a token of this type (`requested_token_type`). Asking for
    /// anything but [`token_types::ACCESS_TOKEN`] lets the server answer
    /// with `token_type` `N_A`.
    #[must_use]
    pub fn requested_token_type(self, token_type: impl Into<String>) -> TokenExchangeGrant {
        let token_type = token_type.into();
        self.rebuild(|e| e.requested_token_type = Some(token_type))
    }

    /// Names whose token this is, for [`store_key`](Self::store_key) (the
    /// subject token changes; who it stands for does not).
    #[must_use]
    pub fn subject_name(self, name: impl Into<String>) -> TokenExchangeGrant {
        let name = name.into();
        self.rebuild(|e| e.user = Some(name))
    }

    /// The key of this grant's token in a [store](crate::store): token URL,
    /// client id, scopes and parameters (the `audience` and `resource`
    /// among them), the [`subject_name`](Self::subject_name), the grant type
    /// and the requested token type, each hashed on its own, so that it
    /// never names the token of another grant.
    pub fn store_key(&self) -> crate::store::StoreKey {
        let endpoint = crate::store::StoreKey::for_user(
            self.core.endpoint(),
            self.exchange.user.as_deref().unwrap_or_default(),
        );
        crate::store::StoreKey::new([
            endpoint.as_str(),
            TOKEN_EXCHANGE,
            self.exchange.requested_token_type.as_deref().unwrap_or("-"),
        ])
    }

    fn with(endpoint: TokenEndpoint, exchange: Exchange) -> TokenExchangeGrant {
        TokenExchangeGrant {
            core: Arc::new(GrantCore::new(
                endpoint,
                Some(Primary::form(exchange.clone())),
                None,
            )),
            exchange,
        }
    }

    /// The same grant with its exchange changed: a builder step, for a
    /// grant not used yet (its counters start again).
    fn rebuild(mut self, change: impl FnOnce(&mut Exchange)) -> TokenExchangeGrant {
        change(&mut self.exchange);
        TokenExchangeGrant::with(self.core.endpoint().clone(), self.exchange)
    }
}

grant_handle!(TokenExchangeGrant, exchange);

/// The `issued_token_type` of a token exchange's response (RFC 8693
/// §2.2.1), if the server sent one.
///
/// ```
/// use tower_bearer::oauth::token_exchange::{issued_token_type, token_types};
/// use tower_bearer::Token;
///
/// let mut extra = serde_json::Map::new();
/// extra.insert("issued_token_type".into(), token_types::ACCESS_TOKEN.into());
/// let token = Token::new("t0k3n").with_extra(extra);
/// assert_eq!(issued_token_type(&token), Some(token_types::ACCESS_TOKEN));
/// ```
pub fn issued_token_type(token: &Token) -> Option<&str> {
    token
        .extra()?
        .get("issued_token_type")
        .and_then(serde_json::Value::as_str)
}

/// What one exchange sends.
#[derive(Clone)]
struct Exchange {
    subject: Arc<dyn SecurityTokenSource>,
    subject_token_type: String,
    actor: Option<(Arc<dyn SecurityTokenSource>, String)>,
    requested_token_type: Option<String>,
    /// For the store key.
    user: Option<String>,
}

impl FormGrant for Exchange {
    fn name(&self) -> &'static str {
        "token_exchange"
    }

    fn form(&self) -> BoxFuture<'_, Result<GrantForm, Error>> {
        Box::pin(async move {
            let subject = self.subject.security_token().await?;
            let mut form = GrantForm::new(TOKEN_EXCHANGE)
                .secret("subject_token", subject.secret())
                .member("subject_token_type", self.subject_token_type.clone());
            if let Some((actor, actor_token_type)) = &self.actor {
                let actor = actor.security_token().await?;
                form = form
                    .secret("actor_token", actor.secret())
                    .member("actor_token_type", actor_token_type.clone());
            }
            if let Some(requested) = &self.requested_token_type {
                form = form.member("requested_token_type", requested.clone());
            }
            Ok(form)
        })
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn accepts_not_applicable(&self) -> bool {
        self.requested_token_type
            .as_deref()
            .is_some_and(|t| t != token_types::ACCESS_TOKEN)
    }
}
