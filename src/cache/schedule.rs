//! When a token turns stale and stops being usable, and how long to wait
//! after a failure or a rejection: pure functions of a token's times and
//! the settings. Nothing here reads the clock or a random source, so every
//! rule is tested with plain numbers.

use std::time::Duration;

use tokio::time::Instant;

/// The largest share of a token's lifetime the leeway may take (B1): 10 %.
///
/// The leeway protects against clock skew and the time a request spends on
/// the wire; 60 s is right for an hour-long token, but would eat a
/// one-minute token whole. Capped at a tenth of the lifetime, it leaves
/// room for the refresh-ahead point (80 % by default) before the usable end,
/// so the token endpoint sees about one request per lifetime whatever the
/// lifetime (see the schedule table in the `cache` module).
pub(crate) const MAX_LEEWAY_SHARE: f64 = 0.1;

/// What a cached token is good for at a given instant, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Freshness {
    /// Send it; nothing else to do.
    Fresh,
    /// Send it, and make sure one background refresh is under way (B2).
    Stale,
    /// Do not send it; wait for a new one (B1).
    Expired,
}

/// The two instants that decide a token's [`Freshness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// From here on the token is stale: still sent, refreshed in the background.
    pub(crate) stale_at: Instant,
    /// From here on the token is not sent any more.
    pub(crate) usable_until: Instant,
}

impl Schedule {
    /// The freshness at `now`.
    #[inline]
    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        if now < self.stale_at {
            Freshness::Fresh
        } else if now < self.usable_until {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

/// The timing settings of a cache (see `TokenCacheBuilder` for the meaning and
/// defaults of each).
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) leeway: Duration,
    /// Fraction of the lifetime after which the token is stale; `None`
    /// disables refresh ahead.
    pub(crate) refresh_ahead: Option<f64>,
    /// Up to this fraction of the lifetime is taken off the refresh-ahead
    /// point at random, so a fleet does not refresh in lockstep.
    pub(crate) jitter: f64,
}

impl Timing {
    /// The schedule of a token issued at `issued` that expires at `expires`.
    /// `unit` is a random number in `[0, 1)` that picks the jitter.
    ///
    /// * B1: usable until `expires − leeway`, the leeway capped at
    ///   [`MAX_LEEWAY_SHARE`] of the lifetime.
    /// * B2: stale from `ratio − jitter·unit` of the lifetime on, and always
    ///   before the usable window ends: when that point falls at or after
    ///   it, the same ratio is applied to the usable window instead.
    pub(crate) fn schedule(&self, issued: Instant, expires: Instant, unit: f64) -> Schedule {
        let lifetime = expires.saturating_duration_since(issued);
        let leeway = self.leeway.min(lifetime.mul_f64(MAX_LEEWAY_SHARE));
        let usable_until = expires.checked_sub(leeway).unwrap_or(issued).max(issued);
        let stale_at = match self.refresh_ahead {
            None => usable_until,
            Some(ratio) => {
                let point = (ratio - self.jitter * unit).clamp(0.0, 1.0);
                let ahead = issued + lifetime.mul_f64(point);
                if ahead < usable_until {
                    ahead
                } else {
                    issued + (usable_until - issued).mul_f64(point)
                }
            }
        };
        Schedule {
            stale_at,
            usable_until,
        }
    }
}

/// Retry and throttling settings of a cache.
#[derive(Debug, Clone)]
pub(crate) struct Retries {
    /// Token requests per refresh, the first one included.
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) initial_cooldown: Duration,
    pub(crate) max_cooldown: Duration,
    /// Per-attempt timeout; `None` waits as long as the source takes.
    pub(crate) attempt_timeout: Option<Duration>,
}

/// The longest `Retry-After` the cache honours; larger values are clamped.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Retries {
    /// The delay before attempt `attempt + 1` after transient failure number
    /// `attempt` (0-based): exponential backoff with full jitter, that is a
    /// uniform pick in `[0, min(max, initial·2^attempt)]`.
    pub(crate) fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        exponential(self.initial_backoff, self.max_backoff, attempt).mul_f64(unit)
    }

    /// How long to wait before a new refresh after `failures` refreshes in a
    /// row failed (1 or more): exponential, with "equal jitter" so that it is
    /// never less than half the nominal value.
    ///
    /// The same pause separates refreshes caused by rejections in a row
    /// (B6): `failures` is then the number of rejected tokens in a row that
    /// came from such refreshes.
    pub(crate) fn cooldown(&self, failures: u32, unit: f64) -> Duration {
        let nominal = exponential(
            self.initial_cooldown,
            self.max_cooldown,
            failures.saturating_sub(1),
        );
        nominal / 2 + (nominal / 2).mul_f64(unit)
    }
}

fn exponential(initial: Duration, max: Duration, exponent: u32) -> Duration {
    let factor = 2u32.saturating_pow(exponent.min(31));
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn timing(refresh_ahead: Option<f64>) -> Timing {
        Timing {
            leeway: S(60),
            refresh_ahead,
            jitter: 0.05,
        }
    }

    #[test]
    fn b1_usable_until_expiry_minus_leeway() {
        let t0 = Instant::now();
        let s = timing(None).schedule(t0, t0 + S(3600), 0.5);
        assert_eq!(s.usable_until, t0 + S(3540));
        assert_eq!(
            s.stale_at, s.usable_until,
            "no refresh ahead: no stale window"
        );
        assert_eq!(s.freshness(t0 + S(3539)), Freshness::Fresh);
        assert_eq!(s.freshness(t0 + S(3540)), Freshness::Expired);
    }

    #[test]
    fn b1_leeway_is_capped_at_a_tenth_of_the_lifetime() {
        let t0 = Instant::now();
        let s = timing(None).schedule(t0, t0 + S(4), 0.0);
        assert_eq!(s.usable_until, t0 + Duration::from_millis(3600));
        let s = timing(None).schedule(t0, t0 + S(300), 0.0);
        assert_eq!(s.usable_until, t0 + S(270));
        let s = timing(None).schedule(t0, t0, 0.0);
        assert_eq!(s.usable_until, t0, "zero lifetime: never reused");
        assert_eq!(s.freshness(t0), Freshness::Expired);
    }

    #[test]
    fn b2_stale_from_eighty_percent_minus_jitter() {
        let t0 = Instant::now();
        let no_jitter = timing(Some(0.8)).schedule(t0, t0 + S(3600), 0.0);
        assert_eq!(no_jitter.stale_at, t0 + S(2880));
        let full_jitter = timing(Some(0.8)).schedule(t0, t0 + S(3600), 1.0);
        assert_eq!(full_jitter.stale_at, t0 + S(2700));
        assert_eq!(full_jitter.freshness(t0 + S(2800)), Freshness::Stale);
        // The same shares for a 3 s token: the leeway no longer pushes the
        // refresh-ahead point down.
        let short = timing(Some(0.8)).schedule(t0, t0 + S(3), 0.0);
        assert_eq!(short.stale_at, t0 + Duration::from_millis(2400));
        assert_eq!(short.usable_until, t0 + Duration::from_millis(2700));
    }

    #[test]
    fn b2_stale_window_always_ends_before_usable_window() {
        let t0 = Instant::now();
        // 95 % of 100 s is past the usable window (90 s): the ratio applies
        // to the window.
        let s = timing(Some(0.95)).schedule(t0, t0 + S(100), 0.0);
        assert_eq!(s.usable_until, t0 + S(90));
        assert_eq!(s.stale_at, t0 + Duration::from_millis(85_500));
        for unit in [0.0, 0.3, 0.999] {
            for ratio in [0.1, 0.8, 0.9, 0.99, 1.0] {
                for lifetime in [1, 3, 4, 60, 100, 121, 300, 3600, 86_400] {
                    let s = timing(Some(ratio)).schedule(t0, t0 + S(lifetime), unit);
                    assert!(s.stale_at <= s.usable_until);
                    assert!(s.stale_at >= t0);
                }
            }
        }
    }

    #[test]
    fn b4_backoff_is_exponential_with_full_jitter() {
        let r = Retries {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: S(5),
            initial_cooldown: S(1),
            max_cooldown: S(30),
            attempt_timeout: None,
        };
        assert_eq!(r.backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(r.backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(r.backoff(20, 1.0), S(5));
        assert_eq!(r.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(r.backoff(u32::MAX, 0.5), Duration::from_millis(2500));
    }

    #[test]
    fn b4_cooldown_doubles_per_failed_refresh_with_equal_jitter() {
        let r = Retries {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: S(5),
            initial_cooldown: S(1),
            max_cooldown: S(30),
            attempt_timeout: None,
        };
        assert_eq!(r.cooldown(1, 1.0), S(1));
        assert_eq!(r.cooldown(1, 0.0), Duration::from_millis(500));
        assert_eq!(r.cooldown(3, 1.0), S(4));
        assert_eq!(r.cooldown(6, 1.0), S(30));
        assert_eq!(r.cooldown(60, 0.0), S(15));
    }
}
