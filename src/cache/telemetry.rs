//! Metrics through the `metrics` facade (feature `metrics`); without the
//! feature every function here does nothing. Never on the per-request path
//! of a call that finds a usable token: only token requests, refreshes,
//! rejections, retries and waits record anything.
//!
//! The names, units and labels are listed in the `cache` module
//! documentation ("Metrics"); keep that table and [`describe_metrics`]
//! in step with this file.

use std::time::Duration;

use super::stats::Counters;

/// Token requests, by `outcome`: `ok`, `transient`, `permanent`.
pub const TOKEN_REQUESTS: &str = "tower_bearer.token.requests";
/// Token-request latency, seconds, by `outcome`.
pub const TOKEN_REQUEST_DURATION: &str = "tower_bearer.token.request.duration";
/// Refreshes started, by `reason`: `first`, `expired`, `ahead`, `rejected`.
pub const REFRESHES: &str = "tower_bearer.refreshes";
/// Age of the token being replaced when its refresh started, seconds, by
/// `reason`.
pub const TOKEN_AGE_AT_REFRESH: &str = "tower_bearer.token.age_at_refresh";
/// Responses that rejected a token this cache handed out.
pub const REJECTIONS: &str = "tower_bearer.rejections";
/// Requests sent once more after a rejection or a step-up.
pub const RETRIES: &str = "tower_bearer.retries";
/// Calls that had no usable token and waited for a refresh.
pub const WAITS: &str = "tower_bearer.waits";
/// Seconds until the current token expires, set when a token is installed.
pub const TOKEN_EXPIRES_IN: &str = "tower_bearer.token.expires_in";

/// How a token request ended.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    Transient,
    Permanent,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, crate::Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(error) if error.is_transient() => Outcome::Transient,
            Err(_) => Outcome::Permanent,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Transient => "transient",
            Outcome::Permanent => "permanent",
        }
    }
}

/// Registers the descriptions and units of every metric with the
/// installed `metrics` recorder (feature `metrics`). Call it once, after
/// installing your exporter; recording works without it.
///
/// ```
/// tower_bearer::cache::describe_metrics();
/// ```
pub fn describe_metrics() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(TOKEN_REQUESTS, Unit::Count, "token requests, by outcome");
        describe_histogram!(
            TOKEN_REQUEST_DURATION,
            Unit::Seconds,
            "token-request latency"
        );
        describe_counter!(REFRESHES, Unit::Count, "refreshes started, by reason");
        describe_histogram!(
            TOKEN_AGE_AT_REFRESH,
            Unit::Seconds,
            "age of the replaced token when its refresh started"
        );
        describe_counter!(REJECTIONS, Unit::Count, "responses that rejected a token");
        describe_counter!(
            RETRIES,
            Unit::Count,
            "requests sent once more with a new token"
        );
        describe_counter!(WAITS, Unit::Count, "calls that waited for a token");
        describe_gauge!(
            TOKEN_EXPIRES_IN,
            Unit::Seconds,
            "seconds until the current token expires"
        );
    }
}

/// One token request ended.
pub(crate) fn token_request(counters: &Counters, outcome: Outcome, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        let labels = [
            ("cache", counters.name.to_string()),
            ("outcome", outcome.as_str().to_owned()),
        ];
        metrics::counter!(TOKEN_REQUESTS, &labels).increment(1);
        metrics::histogram!(TOKEN_REQUEST_DURATION, &labels).record(elapsed.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (counters, outcome, elapsed);
}

/// A refresh started, for `reason`, replacing a token of this `age`.
pub(crate) fn refresh(counters: &Counters, reason: &'static str, age: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        let labels = [
            ("cache", counters.name.to_string()),
            ("reason", reason.to_owned()),
        ];
        metrics::counter!(REFRESHES, &labels).increment(1);
        if let Some(age) = age {
            metrics::histogram!(TOKEN_AGE_AT_REFRESH, &labels).record(age.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (counters, reason, age);
}

/// A counter of this cache went up by one: `REJECTIONS`, `RETRIES`, `WAITS`.
pub(crate) fn count(counters: &Counters, name: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name, "cache" => counters.name.to_string()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (counters, name);
}

/// A token was installed that expires in `expires_in`.
pub(crate) fn installed(counters: &Counters, expires_in: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(TOKEN_EXPIRES_IN, "cache" => counters.name.to_string())
        .set(expires_in.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (counters, expires_in);
}
