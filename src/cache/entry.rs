//! A token as the cache serves it: the token, its prebuilt header and its
//! schedule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use tokio::time::Instant;

use super::schedule::{Schedule, Timing};
use crate::proof::Proofs;
use crate::{Error, Token};

/// One cached token, as published to the per-request path. Immutable once
/// published; an invalidation publishes a changed copy.
pub(crate) struct Entry {
    pub(crate) token: Token,
    /// `Authorization: <scheme> <token>`, marked sensitive, built once (B7).
    pub(crate) header: HeaderValue,
    /// The proof each request needs besides the header (DPoP), if any.
    pub(crate) proofs: Option<Proofs>,
    pub(crate) schedule: Schedule,
    /// The expiry the schedule was computed from: the token's own, its JWT
    /// `exp`, or the default lifetime (saved with the token in a store).
    pub(crate) expires_at: Instant,
    /// Increases with every token the cache installs; tells a rejected token
    /// from its successor without comparing secrets.
    pub(crate) generation: u64,
    /// Unique among every entry of every cache of the process: what the
    /// per-request path keys its per-thread copy with (see `read`).
    pub(crate) version: u64,
    /// Set on the copy published when the server rejected the token (B6).
    pub(crate) rejected: bool,
    /// How many tokens in a row, this one included, came from refreshes
    /// that rejections caused: 0 for a token fetched for any other reason.
    /// Drives the rejection throttle (B6).
    pub(crate) streak: u32,
}

/// The source of [`Entry::version`]: a counter, not a registry. Starts at 1
/// so that 0 never names an entry.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

impl Entry {
    /// Builds the entry for a token that has just arrived.
    ///
    /// The expiry is the token's own, else its JWT `exp` claim, else
    /// `default_lifetime` after it was issued (B1).
    pub(crate) fn new(
        token: Token,
        generation: u64,
        streak: u32,
        timing: &Timing,
        default_lifetime: Duration,
        jitter_unit: f64,
    ) -> Result<Entry, Error> {
        let expires = effective_expiry(&token, default_lifetime);
        let schedule = timing.schedule(token.issued_at(), expires, jitter_unit);
        let header = authorization_value(&token)?;
        let proofs = Proofs::of(&token)?;
        Ok(Entry {
            token,
            header,
            proofs,
            schedule,
            expires_at: expires,
            generation,
            version: next_version(),
            rejected: false,
            streak,
        })
    }

    /// The copy published when the server rejected this token (B6): the
    /// same token (its refresh token is still needed), not usable after
    /// `now + hold`, never stale before that (a refresh while the rejection
    /// throttle holds would defeat it).
    pub(crate) fn rejected(&self, now: Instant, hold: Duration) -> Entry {
        let end = crate::token::later(now, hold).min(self.schedule.usable_until);
        Entry {
            token: self.token.clone(),
            header: self.header.clone(),
            proofs: self.proofs.clone(),
            schedule: Schedule {
                stale_at: end,
                usable_until: end,
            },
            expires_at: self.expires_at,
            generation: self.generation,
            version: next_version(),
            rejected: true,
            streak: self.streak,
        }
    }
}

/// The expiry the cache uses for `token`: its own, else its JWT `exp`
/// claim, else `default_lifetime` after it was issued (B1).
pub(crate) fn effective_expiry(token: &Token, default_lifetime: Duration) -> Instant {
    token
        .expires_at()
        .or_else(|| token.jwt_expiry())
        .unwrap_or_else(|| {
            token
                .issued_at()
                .checked_add(default_lifetime)
                .unwrap_or_else(crate::token::far_future)
        })
}

/// Builds `<scheme> <token>` once per token, marked sensitive so that it
/// shows as `Sensitive` in `Debug` output and is never HPACK-indexed.
pub(crate) fn authorization_value(token: &Token) -> Result<HeaderValue, Error> {
    let scheme = token.token_type().scheme();
    let secret = token.access_token().secret();
    if secret.is_empty() {
        return Err(Error::invalid_response("the access token is empty"));
    }
    let mut bytes = BytesMut::with_capacity(scheme.len() + 1 + secret.len());
    bytes.put_slice(scheme.as_bytes());
    bytes.put_u8(b' ');
    bytes.put_slice(secret.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(bytes.freeze()).map_err(|_| {
        Error::invalid_response("the access token has characters that cannot be sent in a header")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenType;

    #[test]
    fn header_uses_the_normalised_scheme_and_is_sensitive() {
        let token = Token::new("abc").with_token_type(TokenType::parse("bearer"));
        let value = authorization_value(&token).unwrap();
        assert_eq!(value, "Bearer abc");
        assert!(value.is_sensitive());
        assert_eq!(format!("{value:?}"), "Sensitive");
    }

    #[test]
    fn header_refuses_tokens_that_cannot_be_sent() {
        for bad in ["", "line\nbreak", "nul\0"] {
            let err = authorization_value(&Token::new(bad)).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidResponse);
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad));
            }
        }
    }

    #[tokio::test]
    async fn versions_are_unique_and_a_rejection_publishes_a_new_one() {
        let timing = Timing {
            leeway: Duration::from_secs(60),
            refresh_ahead: Some(0.8),
            jitter: 0.0,
        };
        let token = Token::new("t").with_expires_in(Duration::from_secs(3600));
        let a = Entry::new(token.clone(), 1, 0, &timing, Duration::ZERO, 0.0).unwrap();
        let b = Entry::new(token, 1, 0, &timing, Duration::ZERO, 0.0).unwrap();
        assert_ne!(a.version, b.version);
        let now = Instant::now();
        let rejected = a.rejected(now, Duration::from_secs(1));
        assert_ne!(rejected.version, a.version);
        assert_eq!(rejected.generation, a.generation);
        assert_eq!(rejected.schedule.usable_until, now + Duration::from_secs(1));
        assert_eq!(rejected.schedule.stale_at, rejected.schedule.usable_until);
    }
}
