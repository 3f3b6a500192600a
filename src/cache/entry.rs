//! A token as the cache serves it: the token, its prebuilt header and its
//! schedule.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use tokio::time::Instant;

use super::deadline::Deadline;
use super::policy::{Freshness, Schedule, Timing};
use crate::{Error, Token};

/// One cached token. Immutable once published; invalidation publishes a
/// copy that is no longer usable.
pub(crate) struct Entry {
    pub(crate) token: Token,
    /// `Authorization: <scheme> <token>`, marked sensitive, built once (B7).
    pub(crate) header: HeaderValue,
    pub(crate) schedule: Schedule,
    /// The expiry the schedule was computed from: the token's own, its JWT
    /// `exp`, or the default lifetime (saved with the token in a store).
    pub(crate) expires_at: Instant,
    /// Increases with every token the cache installs; tells a rejected token
    /// from its successor without comparing secrets.
    pub(crate) generation: u64,
    /// Set on the copy published by an invalidation (B6).
    pub(crate) invalidated: bool,
    /// Timers for the schedule's two instants, read by the per-request path
    /// instead of the clock; `None` on an invalidated copy.
    deadlines: Option<Deadlines>,
}

struct Deadlines {
    stale: Deadline,
    usable_until: Deadline,
}

impl Deadlines {
    fn arm(schedule: &Schedule) -> Self {
        Deadlines {
            stale: Deadline::arm(schedule.stale_at),
            usable_until: Deadline::arm(schedule.usable_until),
        }
    }
}

impl Entry {
    /// Builds the entry for a token that has just arrived.
    ///
    /// The expiry is the token's own, else its JWT `exp` claim, else
    /// `default_lifetime` after it was issued (B1).
    pub(crate) fn new(
        token: Token,
        generation: u64,
        timing: &Timing,
        default_lifetime: Duration,
        jitter_unit: f64,
    ) -> Result<Entry, Error> {
        let expires = effective_expiry(&token, default_lifetime);
        let schedule = timing.schedule(token.issued_at(), expires, jitter_unit);
        let header = authorization_value(&token)?;
        let deadlines = Some(Deadlines::arm(&schedule));
        Ok(Entry {
            token,
            header,
            schedule,
            expires_at: expires,
            generation,
            invalidated: false,
            deadlines,
        })
    }

    /// The same token with its timers armed again, on the current runtime.
    pub(crate) fn rearmed(&self) -> Entry {
        Entry {
            token: self.token.clone(),
            header: self.header.clone(),
            schedule: self.schedule,
            expires_at: self.expires_at,
            generation: self.generation,
            invalidated: self.invalidated,
            deadlines: Some(Deadlines::arm(&self.schedule)),
        }
    }

    /// The freshness as the timers tell it: one atomic load while the token
    /// is fresh, no clock read.
    #[inline]
    pub(crate) fn freshness_by_timers(&self) -> Freshness {
        match &self.deadlines {
            None => Freshness::Expired,
            Some(d) if !d.stale.has_passed() => Freshness::Fresh,
            Some(d) if !d.usable_until.has_passed() => Freshness::Stale,
            Some(_) => Freshness::Expired,
        }
    }

    /// The copy published when the server rejected this token: same token
    /// (its refresh token is still needed), not usable from `now` on.
    pub(crate) fn invalidated(&self, now: Instant) -> Entry {
        let end = now.min(self.schedule.usable_until);
        Entry {
            token: self.token.clone(),
            header: self.header.clone(),
            schedule: Schedule {
                stale_at: end,
                usable_until: end,
            },
            expires_at: self.expires_at,
            generation: self.generation,
            invalidated: true,
            deadlines: None,
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
    // The value's bytes start out as a uniquely owned vector; the first clone
    // moves them to shared, reference-counted storage in place. Do that now,
    // so that cloning the header on the per-request path never allocates.
    drop(value.clone());
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
}
