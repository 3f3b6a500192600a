//! What every grant shares: the primary grant, the refresh token it keeps,
//! and the rules for using and replacing it, documented in the module
//! documentation of `oauth` ("Refresh tokens (B5)").
//!
//! Each grant is a file of its own (`client_credentials.rs`,
//! `password.rs`, `jwt_bearer.rs`, `token_exchange.rs`, …) that implements
//! [`FormGrant`] and wraps a [`GrantCore`]; this file depends on none of
//! them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use std::sync::Arc;

use super::endpoint::{RequestBody, Scope, TokenEndpoint};
use super::response::Reading;
use crate::source::BoxFuture;
use crate::{Error, OAuthErrorCode, RefreshToken, Token};

/// How many spent refresh tokens a grant remembers, to never send one
/// again. The cache's `previous` token is at most one rotation behind the
/// grant, so a handful is plenty.
const SPENT_MEMORY: usize = 8;

/// A snapshot of a grant's counters.
///
/// ```
/// use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
///
/// # fn endpoint() -> TokenEndpoint {
/// #     TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("app"))
/// #         .transport(tower::service_fn(|_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
/// #             Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// #         }))
/// #         .build().unwrap()
/// # }
/// let grant = ClientCredentialsGrant::new(endpoint());
/// assert_eq!(grant.stats().requests, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantStats {
    /// Token requests sent, of every grant type.
    pub requests: u64,
    /// Requests of the primary grant (client credentials or password).
    pub primary: u64,
    /// Requests with `grant_type=refresh_token`.
    pub refreshes: u64,
    /// Refreshes whose response carried a new refresh token that replaced
    /// the one sent.
    pub rotations: u64,
    /// Refresh tokens refused with `invalid_grant` that were followed by the
    /// primary grant.
    pub fallbacks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    primary: AtomicU64,
    refreshes: AtomicU64,
    rotations: AtomicU64,
    fallbacks: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The members of one token request that a grant contributes
/// (`grant_type` first), and the secrets among their values (scrubbed from
/// anything an error quotes).
#[derive(Default)]
pub(crate) struct GrantForm {
    pub(crate) members: Vec<(&'static str, String)>,
    pub(crate) secrets: Vec<String>,
}

impl GrantForm {
    /// A form that starts with `grant_type`.
    pub(crate) fn new(grant_type: &str) -> GrantForm {
        GrantForm {
            members: vec![("grant_type", grant_type.to_owned())],
            secrets: Vec::new(),
        }
    }

    /// Adds a member.
    pub(crate) fn member(mut self, name: &'static str, value: impl Into<String>) -> GrantForm {
        self.members.push((name, value.into()));
        self
    }

    /// Adds a member whose value is a secret.
    pub(crate) fn secret(mut self, name: &'static str, value: &str) -> GrantForm {
        super::client_auth::push_forms(&mut self.secrets, value);
        self.members.push((name, value.to_owned()));
        self
    }
}

/// A grant that gets a token without a refresh token, with a form: one
/// per grant file.
pub(crate) trait FormGrant: Send + Sync + 'static {
    /// The grant's name in logs (its `grant_type`, shortened).
    fn name(&self) -> &'static str;

    /// The form of one request. Asynchronous: a grant may read a file or
    /// wait for another cache's token.
    fn form(&self) -> BoxFuture<'_, Result<GrantForm, Error>>;

    /// The user whose token this is, for store keys.
    fn user(&self) -> Option<&str> {
        None
    }

    /// Whether the endpoint may answer with `token_type` `N_A` (RFC 8693
    /// §2.2.1): only for a token exchange that asked for a token that is
    /// not an access token.
    fn accepts_not_applicable(&self) -> bool {
        false
    }
}

/// The grant that gets a token without a refresh token.
#[derive(Clone)]
pub(crate) enum Primary {
    /// A grant with a form, defined in its own file.
    Form(Arc<dyn FormGrant>),
    /// A custom endpoint's login: a body of the user's making.
    Login(RequestBody),
}

impl Primary {
    fn name(&self) -> &'static str {
        match self {
            Primary::Form(grant) => grant.name(),
            Primary::Login(_) => "login",
        }
    }

    /// A form grant's primary.
    pub(crate) fn form(grant: impl FormGrant) -> Primary {
        Primary::Form(Arc::new(grant))
    }
}

/// Makes the body of a custom endpoint's refresh from the refresh token.
pub(crate) type RefreshBody = Arc<dyn Fn(&RefreshToken) -> RequestBody + Send + Sync>;

/// How a grant's requests are made.
#[derive(Clone, Default)]
pub(crate) enum Requests {
    /// RFC 6749 forms, for the standard grants.
    #[default]
    Standard,
    /// A custom endpoint's: refreshes (if it has any) with bodies from the
    /// function, responses with these fields renamed (standard name, the
    /// endpoint's name). A refresh answered 400 or 401 counts as refused,
    /// like `invalid_grant`: custom endpoints seldom say `invalid_grant`.
    Custom {
        refresh: Option<RefreshBody>,
        fields: Vec<(&'static str, String)>,
    },
}

/// The refresh-token bookkeeping of B5, behind a mutex that is never held
/// across an `.await`.
#[derive(Default)]
struct RefreshState {
    /// The refresh token the next refresh sends.
    current: Option<RefreshToken>,
    /// Refresh tokens rotated away or refused: never sent again.
    spent: VecDeque<RefreshToken>,
    /// For a grant without a primary grant: why its refresh token is gone.
    refused: Option<Error>,
    /// A refresh token was refused and the fallback left to the cache: the
    /// next primary grant is that fallback (counted in `fallbacks`).
    fallback_due: bool,
}

impl RefreshState {
    fn spend(&mut self, refresh_token: RefreshToken) {
        if self.spent.contains(&refresh_token) {
            return;
        }
        if self.spent.len() == SPENT_MEMORY {
            self.spent.pop_front();
        }
        self.spent.push_back(refresh_token);
    }
}

/// The state and logic every grant shares.
pub(crate) struct GrantCore {
    endpoint: TokenEndpoint,
    primary: Option<Primary>,
    requests: Requests,
    state: Mutex<RefreshState>,
    counters: Counters,
}

impl GrantCore {
    pub(crate) fn new(
        endpoint: TokenEndpoint,
        primary: Option<Primary>,
        refresh_token: Option<RefreshToken>,
    ) -> Self {
        Self::with_requests(endpoint, primary, refresh_token, Requests::Standard)
    }

    pub(crate) fn with_requests(
        endpoint: TokenEndpoint,
        primary: Option<Primary>,
        refresh_token: Option<RefreshToken>,
        requests: Requests,
    ) -> Self {
        GrantCore {
            endpoint,
            primary,
            requests,
            state: Mutex::new(RefreshState {
                current: refresh_token,
                ..RefreshState::default()
            }),
            counters: Counters::default(),
        }
    }

    /// A grant of its own for tokens made with `params`: the same primary
    /// grant at the endpoint [with those parameters](TokenEndpoint::with_params),
    /// without a refresh token yet. `None` for grants without a primary
    /// grant (a refresh token cannot be widened, and must not be shared)
    /// and for custom endpoints (whose bodies are the user's).
    pub(crate) fn with_params(&self, params: &crate::TokenParams) -> Option<GrantCore> {
        match (&self.primary, &self.requests) {
            (Some(primary), Requests::Standard) => Some(GrantCore::new(
                self.endpoint.with_params(params),
                Some(primary.clone()),
                None,
            )),
            _ => None,
        }
    }

    pub(crate) fn endpoint(&self) -> &TokenEndpoint {
        &self.endpoint
    }

    /// The user whose token this is, if the primary grant names one.
    pub(crate) fn username(&self) -> Option<&str> {
        match &self.primary {
            Some(Primary::Form(grant)) => grant.user(),
            _ => None,
        }
    }

    /// Whether a response may carry `token_type` `N_A`.
    fn accepts_not_applicable(&self) -> bool {
        matches!(&self.primary, Some(Primary::Form(grant)) if grant.accepts_not_applicable())
    }

    fn lock(&self) -> MutexGuard<'_, RefreshState> {
        // Nothing panics while holding the lock; the state is valid field
        // by field even if something did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> GrantStats {
        let c = &self.counters;
        GrantStats {
            requests: c.requests.load(Ordering::Relaxed),
            primary: c.primary.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The refresh token the next refresh would send, if any.
    pub(crate) fn refresh_token(&self) -> Option<RefreshToken> {
        self.lock().current.clone()
    }

    /// One attempt: a refresh when there is a refresh token, the primary
    /// grant otherwise or after `invalid_grant`.
    pub(crate) async fn fetch(&self, previous: Option<&Token>) -> Result<Token, Error> {
        self.attempt(previous, true).await
    }

    /// One attempt under `restriction` (a cache with a store).
    pub(crate) fn fetch_restricted<'a>(
        &'a self,
        previous: Option<&'a Token>,
        restriction: crate::source::Restriction,
    ) -> Option<crate::source::BoxFuture<'a, Result<Token, Error>>> {
        use crate::source::Restriction;
        match restriction {
            Restriction::NoFallback => Some(Box::pin(self.attempt(previous, false))),
            Restriction::NoRefreshToken => {
                let primary = self.primary.as_ref()?;
                Some(Box::pin(self.primary(primary)))
            }
        }
    }

    /// One attempt; after a refused refresh token, the primary grant if
    /// `fall_back`, else the refusal (marked as one) as the error.
    async fn attempt(&self, previous: Option<&Token>, fall_back: bool) -> Result<Token, Error> {
        if let Some(refresh_token) = self.next_refresh_token(previous)
            && self.can_refresh()
        {
            match self.refresh(&refresh_token).await {
                Err(error) if self.refused(&error) => {
                    let mut state = self.lock();
                    if state.current.as_ref() == Some(&refresh_token) {
                        state.current = None;
                    }
                    state.spend(refresh_token);
                    if self.primary.is_none() {
                        state.refused = Some(error.clone());
                    }
                    if self.primary.is_none() || !fall_back {
                        // The cache decides about the fallback; if it asks
                        // for the primary grant next, that is one.
                        state.fallback_due = self.primary.is_some();
                        return Err(error.refusing_refresh_token());
                    }
                    drop(state);
                    bump(&self.counters.fallbacks);
                    tracing::info!(
                        grant = self.primary.as_ref().map_or("", Primary::name),
                        "refresh token refused; falling back to the primary grant"
                    );
                }
                other => return other,
            }
        }
        match &self.primary {
            Some(primary) => self.primary(primary).await,
            None => Err(self.lock().refused.clone().unwrap_or_else(|| {
                Error::permanent("no refresh token to use and no other grant configured")
            })),
        }
    }

    /// B5: the previous token's refresh token unless it was spent, else the
    /// grant's own.
    ///
    /// Without a store the two are the same, or the previous one is spent:
    /// the grant made that token. With a store, `previous` may come from
    /// another process or an earlier run, and then it is the newest of the
    /// lineage while the grant's own was spent elsewhere: sending that one
    /// would be a reuse, which makes servers with reuse detection revoke the
    /// whole grant.
    fn next_refresh_token(&self, previous: Option<&Token>) -> Option<RefreshToken> {
        let state = self.lock();
        previous
            .and_then(Token::refresh_token)
            .filter(|rt| !state.spent.contains(rt))
            .cloned()
            .or_else(|| state.current.clone())
    }

    /// Whether this grant can refresh at all: a custom endpoint may have
    /// no refresh.
    fn can_refresh(&self) -> bool {
        match &self.requests {
            Requests::Standard => true,
            Requests::Custom { refresh, .. } => refresh.is_some(),
        }
    }

    /// Whether a refresh's failure refuses its refresh token (B5).
    fn refused(&self, error: &Error) -> bool {
        is_invalid_grant(error)
            || matches!(self.requests, Requests::Custom { .. })
                && error
                    .http_status()
                    .is_some_and(|s| s.as_u16() == 400 || s.as_u16() == 401)
    }

    /// How responses are read: fields the endpoint names otherwise, and
    /// whether `N_A` tokens are accepted.
    fn reading(&self) -> Reading<'_> {
        Reading {
            fields: match &self.requests {
                Requests::Standard => &[],
                Requests::Custom { fields, .. } => fields,
            },
            not_applicable: self.accepts_not_applicable(),
        }
    }

    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<Token, Error> {
        let mut secrets = Vec::new();
        self.endpoint.secret_forms(&mut secrets);
        super::client_auth::push_forms(&mut secrets, refresh_token.secret());
        let request = match &self.requests {
            Requests::Custom {
                refresh: Some(body),
                ..
            } => self
                .endpoint
                .custom_request(&body(refresh_token), &mut secrets)?,
            _ => self.endpoint.request(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.secret()),
                ],
                Scope::AsGranted,
                &mut secrets,
            )?,
        };
        bump(&self.counters.requests);
        bump(&self.counters.refreshes);
        tracing::Span::current().record("grant", "refresh_token");
        tracing::debug!(grant = "refresh_token", "token request");
        let token = self
            .endpoint
            .exchange(request, &secrets, self.reading())
            .await?;

        let mut state = self.lock();
        let token = match token.refresh_token() {
            Some(new) if new != refresh_token => {
                bump(&self.counters.rotations);
                state.current = Some(new.clone());
                state.spend(refresh_token.clone());
                tracing::debug!(grant = "refresh_token", "refresh token rotated");
                token
            }
            Some(_) => {
                state.current = Some(refresh_token.clone());
                token
            }
            None => {
                // RFC 6749 §6: no new refresh token, keep the old one.
                state.current = Some(refresh_token.clone());
                token.with_refresh_token(refresh_token.clone())
            }
        };
        Ok(token)
    }

    async fn primary(&self, primary: &Primary) -> Result<Token, Error> {
        let mut secrets = Vec::new();
        self.endpoint.secret_forms(&mut secrets);
        let request = match primary {
            Primary::Form(grant) => {
                let form = grant.form().await?;
                secrets.extend(form.secrets);
                let members: Vec<(&str, &str)> = form
                    .members
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                self.endpoint
                    .request(&members, Scope::Configured, &mut secrets)?
            }
            Primary::Login(body) => self.endpoint.custom_request(body, &mut secrets)?,
        };
        bump(&self.counters.requests);
        bump(&self.counters.primary);
        if std::mem::take(&mut self.lock().fallback_due) {
            bump(&self.counters.fallbacks);
        }
        tracing::Span::current().record("grant", primary.name());
        tracing::debug!(grant = primary.name(), "token request");
        let token = self
            .endpoint
            .exchange(request, &secrets, self.reading())
            .await?;

        let mut state = self.lock();
        let replaced = match token.refresh_token() {
            Some(new) => state.current.replace(new.clone()),
            None => state.current.take(),
        };
        if let Some(old) = replaced
            && Some(&old) != token.refresh_token()
        {
            state.spend(old);
        }
        Ok(token)
    }
}

impl fmt::Debug for GrantCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Grant")
            .field("endpoint", &self.endpoint)
            .field("primary", &self.primary.as_ref().map(Primary::name))
            .field("has_refresh_token", &state.current.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

fn is_invalid_grant(error: &Error) -> bool {
    error
        .oauth_error()
        .is_some_and(|e| *e.code() == OAuthErrorCode::InvalidGrant)
}

/// The methods and impls every public grant type shares; each is a thin
/// `Arc<GrantCore>` handle.
macro_rules! grant_handle {
    ($name:ident $(, $field:ident)*) => {
        impl $name {
            /// A snapshot of this grant's counters (shared by its clones).
            pub fn stats(&self) -> $crate::oauth::GrantStats {
                self.core.stats()
            }

            /// The token endpoint.
            pub fn endpoint(&self) -> &$crate::oauth::TokenEndpoint {
                self.core.endpoint()
            }

            /// The refresh token the next refresh will send, if the grant
            /// holds one. Persist it to survive a restart, and start again
            /// from it with [`RefreshTokenGrant`](crate::oauth::RefreshTokenGrant).
            pub fn refresh_token(&self) -> Option<$crate::RefreshToken> {
                self.core.refresh_token()
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&*self.core).finish()
            }
        }

        impl $crate::TokenSource for $name {
            fn fetch<'a>(
                &'a self,
                previous: Option<&'a $crate::Token>,
            ) -> $crate::source::BoxFuture<'a, Result<$crate::Token, $crate::Error>> {
                Box::pin(self.core.fetch(previous))
            }

            fn fetch_restricted<'a>(
                &'a self,
                previous: Option<&'a $crate::Token>,
                restriction: $crate::source::Restriction,
            ) -> Option<$crate::source::BoxFuture<'a, Result<$crate::Token, $crate::Error>>> {
                self.core.fetch_restricted(previous, restriction)
            }

            fn with_params(
                &self,
                params: &$crate::TokenParams,
            ) -> Option<::std::sync::Arc<dyn $crate::TokenSource>> {
                let core = self.core.with_params(params)?;
                Some(::std::sync::Arc::new($name {
                    core: ::std::sync::Arc::new(core),
                    $($field: self.$field.clone(),)*
                }))
            }
        }
    };
}

pub(crate) use grant_handle;
