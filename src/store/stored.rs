//! [`StoredToken`]: a token as stores keep it, with wall-clock times.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::StoreError;
use crate::{AccessToken, RefreshToken, Token, TokenType};

/// A token as a [`TokenStore`](super::TokenStore) keeps it.
///
/// A [`Token`]'s times are tokio [`Instant`]s, which mean nothing in another
/// process or after a restart; a stored token carries wall-clock times
/// instead (to the millisecond; Unix milliseconds on the wire), converted from and back to
/// tokio's clock at the moment of the conversion. While tokio's clock is
/// paused (tests), the wall clock of these conversions moves with it.
///
/// Its JSON form ([`to_json`](Self::to_json)) is versioned:
///
/// ```json
/// {"version":1,"access_token":"…","token_type":"Bearer","refresh_token":"…",
///  "scope":"api:read","issued_at_ms":1767225600000,"expires_at_ms":1767229200000}
/// ```
///
/// `refresh_token`, `scope`, `expires_at_ms` and `extra` (response members
/// such as `id_token`) are left out when absent; members this version does
/// not know are ignored; any other `version` is refused with
/// [`StoreError::is_unknown_version`].
///
/// # Secrets
///
/// The JSON form holds the access and refresh tokens in clear text: that is
/// its purpose. Keep it where only this program can read it (the
/// [`FileStore`](super::FileStore) writes files with mode 0600; Redis must
/// be trusted, see the [module documentation](super)), or have the file
/// and Redis stores encrypt it (feature `store-encryption`). `Debug`
/// redacts both (B8).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::StoredToken;
/// use tower_bearer::Token;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let token = Token::new("at").with_refresh_token("rt").with_expires_in(Duration::from_secs(60));
/// let json = StoredToken::from_token(&token).to_json();
/// let back = StoredToken::from_json(&json).unwrap().to_token();
/// assert_eq!(back.refresh_token().unwrap().secret(), "rt");
/// assert!(!format!("{:?}", StoredToken::from_json(&json).unwrap()).contains("rt\""));
/// # }
/// ```
#[derive(Clone, PartialEq)]
pub struct StoredToken {
    access_token: AccessToken,
    token_type: TokenType,
    refresh_token: Option<RefreshToken>,
    scope: Option<String>,
    issued_at: SystemTime,
    expires_at: Option<SystemTime>,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The largest JSON form a store accepts, in bytes: real tokens are a few
/// KiB; anything larger is not ours.
pub(crate) const MAX_STORED_SIZE: usize = 256 * 1024;

impl StoredToken {
    /// The format version this crate writes and reads.
    pub const VERSION: u32 = 1;

    /// The stored form of `token`. Its expiry is the token's own, else the
    /// `exp` claim of a JWT access token, else none (a loading cache then
    /// applies its default lifetime from the issue time).
    pub fn from_token(token: &Token) -> StoredToken {
        let (now_i, now_w) = clocks_now();
        StoredToken {
            access_token: token.access_token().clone(),
            token_type: token.token_type().clone(),
            refresh_token: token.refresh_token().cloned(),
            scope: token.scope().map(str::to_owned),
            issued_at: millisecond(instant_to_wall(token.issued_at(), now_i, now_w)),
            expires_at: token
                .expires_at()
                .or_else(|| token.jwt_expiry())
                .map(|at| millisecond(instant_to_wall(at, now_i, now_w))),
            extra: token.extra().cloned(),
        }
    }

    /// Sets the expiry (wall clock, kept to the millisecond).
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> StoredToken {
        self.expires_at = Some(millisecond(expires_at));
        self
    }

    /// The token on tokio's clock, as of now: an expiry 30 s ahead on the
    /// wall clock is 30 s ahead of `Instant::now()`.
    ///
    /// An issue time ahead of this clock (the fetching process's clock runs
    /// ahead, or the value is corrupt) is taken as now: no token is issued
    /// in the future, and a cache never ends a token's usable window before
    /// its issue time, so a late issue time would keep a token in use past
    /// its expiry.
    pub fn to_token(&self) -> Token {
        let (now_i, now_w) = clocks_now();
        let issued_at = wall_to_instant(self.issued_at, now_i, now_w).min(now_i);
        let mut token = Token::new(self.access_token.clone())
            .with_token_type(self.token_type.clone())
            .with_refresh_token_opt(self.refresh_token.clone())
            .with_issued_at(issued_at);
        if let Some(expires_at) = self.expires_at {
            token = token.with_expires_at(wall_to_instant(expires_at, now_i, now_w));
        }
        if let Some(scope) = &self.scope {
            token = token.with_scope(scope.clone());
        }
        if let Some(extra) = &self.extra {
            token = token.with_extra(extra.clone());
        }
        token
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the token has one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// The granted scope, if known.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// When the token was issued (wall clock).
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When the access token expires (wall clock), if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// How long the access token has left at `now`: zero once expired,
    /// `None` when the expiry is unknown.
    pub fn time_to_live(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// The versioned JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and a JSON map cannot
        // fail.
        serde_json::to_vec(&self.to_wire()).unwrap_or_default()
    }

    /// Reads the JSON form.
    ///
    /// # Errors
    ///
    /// [`StoreError::is_corrupt`] for anything that is not a stored token
    /// (truncated, not JSON, a member missing or out of range, larger than
    /// 256 KiB), [`StoreError::is_unknown_version`] for another format
    /// version. Never panics, whatever the input.
    pub fn from_json(bytes: &[u8]) -> Result<StoredToken, StoreError> {
        if bytes.len() > MAX_STORED_SIZE {
            return Err(StoreError::corrupt("the stored token is too large"));
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|_| StoreError::corrupt("the stored token is not valid JSON"))?;
        Self::from_value(value)
    }

    pub(crate) fn from_value(value: serde_json::Value) -> Result<StoredToken, StoreError> {
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| StoreError::corrupt("the stored token has no format version"))?;
        if version != u64::from(Self::VERSION) {
            return Err(StoreError::unknown_version(version));
        }
        let wire: Wire = serde_json::from_value(value).map_err(|_| {
            StoreError::corrupt("the stored token is missing a member or has one of the wrong type")
        })?;
        Self::from_wire(wire)
    }

    fn to_wire(&self) -> Wire {
        Wire {
            version: Self::VERSION,
            access_token: self.access_token.secret().to_owned(),
            token_type: self.token_type.scheme().to_owned(),
            refresh_token: self.refresh_token.as_ref().map(|rt| rt.secret().to_owned()),
            scope: self.scope.clone(),
            issued_at_ms: unix_ms(self.issued_at),
            expires_at_ms: self.expires_at.map(unix_ms),
            extra: self.extra.clone(),
        }
    }

    fn from_wire(wire: Wire) -> Result<StoredToken, StoreError> {
        if wire.access_token.is_empty() {
            return Err(StoreError::corrupt("the stored access token is empty"));
        }
        let time = |ms: u64| {
            UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .ok_or_else(|| StoreError::corrupt("a stored time is out of range"))
        };
        Ok(StoredToken {
            access_token: AccessToken::new(wire.access_token),
            token_type: TokenType::parse(&wire.token_type),
            refresh_token: wire.refresh_token.map(RefreshToken::new),
            scope: wire.scope,
            issued_at: time(wire.issued_at_ms)?,
            expires_at: wire.expires_at_ms.map(time).transpose()?,
            extra: wire.extra.filter(|extra| !extra.is_empty()),
        })
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The JSON form, version 1.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u32,
    access_token: String,
    #[serde(default = "bearer")]
    token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    issued_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

fn bearer() -> String {
    "Bearer".to_owned()
}

/// `at` truncated to the millisecond, as the JSON form keeps it, so that a
/// stored token compares equal to itself after a round trip.
fn millisecond(at: SystemTime) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(unix_ms(at)))
        .unwrap_or(at)
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This moment on tokio's clock and on the wall clock.
///
/// Tokio's clock is the system's monotonic clock, so the wall time is
/// `SystemTime::now()`, except while tokio's clock is paused (tests, B11):
/// it then moves only with `tokio::time::advance`, and the wall time is
/// shifted by how far tokio's clock is from the system's, so that stored
/// tokens age with the clock the test drives: a token stored before an
/// `advance(150 s)` is 150 s older after it, and one stored while the clock
/// stands still ages not at all, however much real time passes.
pub(crate) fn clocks_now() -> (Instant, SystemTime) {
    let tokio = Instant::now();
    let system = std::time::Instant::now();
    let wall = SystemTime::now();
    let tokio_std = tokio.into_std();
    let shifted = if tokio_std >= system {
        wall.checked_add(tokio_std - system)
    } else {
        wall.checked_sub(system - tokio_std)
    };
    (tokio, shifted.unwrap_or(wall))
}

/// `at` on the wall clock, given that `now_i` (tokio) is `now_w` (wall).
pub(crate) fn instant_to_wall(at: Instant, now_i: Instant, now_w: SystemTime) -> SystemTime {
    if at >= now_i {
        now_w
            .checked_add(at - now_i)
            .unwrap_or_else(|| now_w + Duration::from_secs(30 * 365 * 24 * 3600))
    } else {
        now_w.checked_sub(now_i - at).unwrap_or(UNIX_EPOCH)
    }
}

/// `at` on tokio's clock, given that `now_w` (wall) is `now_i` (tokio).
/// Times before what an `Instant` can hold become `now_i`.
pub(crate) fn wall_to_instant(at: SystemTime, now_i: Instant, now_w: SystemTime) -> Instant {
    match at.duration_since(now_w) {
        Ok(ahead) => now_i
            .checked_add(ahead)
            .unwrap_or_else(crate::token::far_future),
        Err(behind) => now_i.checked_sub(behind.duration()).unwrap_or(now_i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn round_trip_keeps_times_secrets_and_extra() {
        let mut extra = serde_json::Map::new();
        extra.insert("id_token".into(), "idt".into());
        let token = Token::new("at-1")
            .with_refresh_token("rt-1")
            .with_scope("read")
            .with_extra(extra)
            .with_expires_in(Duration::from_secs(300));
        let stored = StoredToken::from_token(&token);
        let back = StoredToken::from_json(&stored.to_json()).unwrap();
        assert_eq!(back, stored.clone());
        let token2 = back.to_token();
        assert_eq!(token2.access_token().secret(), "at-1");
        assert_eq!(token2.refresh_token().unwrap().secret(), "rt-1");
        assert_eq!(token2.scope(), Some("read"));
        assert_eq!(token2.extra().unwrap()["id_token"], "idt");
        let remaining = token2.expires_at().unwrap() - Instant::now();
        assert!(remaining <= Duration::from_secs(300), "{remaining:?}");
        assert!(remaining >= Duration::from_secs(298), "{remaining:?}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let json = br#"{"version":1,"access_token":"at-secret","refresh_token":"rt-secret","issued_at_ms":0}"#;
        let stored = StoredToken::from_json(json).unwrap();
        let debug = format!("{stored:?}");
        assert!(
            !debug.contains("at-secret") && !debug.contains("rt-secret"),
            "{debug}"
        );
    }

    #[test]
    fn odd_input_is_an_error_never_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            b"null",
            b"[]",
            b"{\"version\":1}",
            b"{\"version\":\"1\",\"access_token\":\"a\",\"issued_at_ms\":0}",
            b"{\"version\":1,\"access_token\":\"\",\"issued_at_ms\":0}",
            b"{\"version\":1,\"access_token\":\"a\",\"issued_at_ms\":-1}",
            b"{\"version\":1,\"access_token\":7,\"issued_at_ms\":0}",
        ];
        for case in cases {
            let err = StoredToken::from_json(case).unwrap_err();
            assert!(err.is_corrupt(), "{}: {err}", String::from_utf8_lossy(case));
        }
        let err = StoredToken::from_json(b"{\"version\":2,\"whatever\":true}").unwrap_err();
        assert!(err.is_unknown_version(), "{err}");
        assert!(
            StoredToken::from_json(&vec![b' '; MAX_STORED_SIZE + 1])
                .unwrap_err()
                .is_corrupt()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn far_times_do_not_overflow() {
        let json = br#"{"version":1,"access_token":"a","issued_at_ms":0,"expires_at_ms":9007199254740993}"#;
        let token = StoredToken::from_json(json).unwrap().to_token();
        assert!(token.expires_at().unwrap() > Instant::now() + Duration::from_secs(3600));
        assert!(token.issued_at() <= Instant::now());
    }

    proptest::proptest! {
        #[test]
        fn from_json_never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = StoredToken::from_json(&bytes);
        }

        #[test]
        fn from_json_never_panics_on_near_misses(
            json in r#"\{"version":[0-9]{1,3},"access_token":"[a-z\\\n]{0,5}","token_type":"[A-Za-z]{0,6}","issued_at_ms":-?[0-9]{0,25}(,"expires_at_ms":-?[0-9.e]{0,25})?(,"extra":\{\})?\}"#
        ) {
            if let Ok(stored) = StoredToken::from_json(json.as_bytes()) {
                let token = stored.to_token();
                let _ = StoredToken::from_token(&token).to_json();
            }
        }
    }
}
