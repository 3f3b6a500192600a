//! B1, B2: with the default settings and continuous traffic, a token
//! endpoint sees at most 1.35 token requests per token lifetime, for
//! lifetimes from 3 s to 24 h. Paused clock, real token endpoint.

mod support;

use std::time::Duration;

use support::{FrozenClock, http_client, http_source};
use tokio::time::{Instant, advance};
use tower_bearer::TokenCache;

/// Token lifetimes from 3 s to 24 h.
const LIFETIMES: [u64; 5] = [3, 60, 300, 3600, 86_400];
/// Lifetimes of continuous traffic per case.
const LIFETIMES_OF_TRAFFIC: u32 = 20;
/// Calls per lifetime.
const CALLS_PER_LIFETIME: u32 = 200;

#[tokio::test(start_paused = true)]
async fn b2_continuous_traffic_costs_at_most_1_35_token_requests_per_lifetime() {
    let _clock = FrozenClock::freeze().await;
    for lifetime in LIFETIMES {
        let tokens = support::token_server(lifetime).await;
        let cache = TokenCache::new(http_source(http_client(), tokens.url("/token")));
        let lifetime = Duration::from_secs(lifetime);
        let step = lifetime / CALLS_PER_LIFETIME;
        let end = Instant::now() + lifetime * LIFETIMES_OF_TRAFFIC;
        // The first token, then the traffic.
        cache.token().await.unwrap();
        while Instant::now() < end {
            advance(step).await;
            cache.token().await.unwrap();
            // A background refresh this call started lands before the
            // clock moves on (its round trip is real time, not the
            // clock's).
            cache.settle().await;
        }
        // Requests after the first, over the lifetimes of traffic.
        let per_lifetime = (tokens.requests() - 1) as f64 / f64::from(LIFETIMES_OF_TRAFFIC);
        eprintln!("{lifetime:?} tokens: {per_lifetime:.3} token requests per lifetime");
        assert!(
            per_lifetime <= 1.35,
            "{lifetime:?} tokens: {per_lifetime:.3} token requests per lifetime"
        );
        // Refresh ahead works: a token is replaced before it expires, so
        // never less than one request per lifetime.
        assert!(per_lifetime >= 1.0, "{per_lifetime}");
        assert_eq!(cache.stats().refresh_failures, 0);
    }
}
