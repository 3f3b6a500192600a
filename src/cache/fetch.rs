//! One refresh's token requests: attempts, their time limit, and the
//! backoff between them (B4).

use std::time::Duration;

use tracing::Instrument as _;

use super::random;
use super::schedule::Retries;
use super::stats::Counters;
use super::telemetry::{self, Outcome};
use crate::source::Restriction;
use crate::{Error, Token, TokenSource};

/// What a refresh tells the callers waiting for it before each step: the
/// longest the step can take before the next report (`None`: no bound),
/// so that a caller on another runtime can tell a refresh that is slow from
/// one that nobody drives (see `flight`).
pub(crate) type Report<'a> = &'a (dyn Fn(Option<Duration>) + Send + Sync);

/// Asks the source for a token until it succeeds, fails permanently, or runs
/// out of attempts. Honours `Retry-After` when it is not longer than the
/// maximum backoff; a longer one ends the refresh, and the cooldown honours
/// it instead, so that waiting callers are not held for minutes. `report`
/// is told before each attempt (bounded by the attempt timeout) and each
/// backoff. With a `restriction`, each attempt is the source's
/// [`fetch_restricted`](TokenSource::fetch_restricted), or its plain
/// `fetch` when it cannot keep the restriction.
pub(crate) async fn fetch(
    source: &dyn TokenSource,
    previous: Option<&Token>,
    restriction: Option<Restriction>,
    retries: &Retries,
    counters: &Counters,
    report: Report<'_>,
) -> Result<Token, Error> {
    let mut failures = 0u32;
    loop {
        report(retries.attempt_timeout);
        Counters::bump(&counters.token_requests);
        let attempt = restriction
            .and_then(|r| source.fetch_restricted(previous, r))
            .unwrap_or_else(|| source.fetch(previous));
        // One span per token request: the cache, the attempt, the grant
        // (recorded by the OAuth2 grants) and the outcome; never a secret.
        let span = tracing::info_span!(
            "token_request",
            cache = %counters.name,
            attempt = failures + 1,
            grant = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = tokio::time::Instant::now();
        let result = match retries.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt.instrument(span.clone()))
                .await
                .unwrap_or_else(|_| Err(Error::timeout(limit))),
            None => attempt.instrument(span.clone()).await,
        };
        let outcome = Outcome::of(&result);
        span.record("outcome", outcome.as_str());
        telemetry::token_request(counters, outcome, started.elapsed());
        let error = match result {
            Ok(token) => return Ok(token),
            Err(error) => error,
        };
        failures += 1;
        // Counted in the same poll that creates the backoff timer below, so
        // a test that sees this count knows the timer's deadline is set.
        Counters::bump(&counters.failed_token_requests);
        if error.is_permanent() || failures >= retries.max_attempts {
            return Err(error);
        }
        let delay = match error.retry_after() {
            Some(asked) if asked > retries.max_backoff => return Err(error),
            Some(asked) => asked,
            None => retries.backoff(failures - 1, random::unit()),
        };
        tracing::info!(
            %error,
            attempt = failures,
            delay_ms = delay.as_millis() as u64,
            "token request failed; retrying"
        );
        report(Some(delay));
        tokio::time::sleep(delay).await;
    }
}
