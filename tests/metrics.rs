//! What operators graph: metrics through the `metrics` facade (feature
//! `metrics`), recorded by `metrics-util`'s debugging recorder (installed
//! for this test binary alone) and checked against what the test kit's
//! server counted.
#![cfg(feature = "metrics")]

mod support;

#[tokio::test]
async fn metrics_count_what_the_servers_saw() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    tower_bearer::cache::describe_metrics();

    let (_server, cache) = support::kit::one_call_with_a_rejection("metered").await;
    let stats = cache.stats();

    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && labels
                        .iter()
                        .chain([&("cache", "metered")])
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, unit, _, value)| (*unit, value))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {snapshot:#?}"))
    };
    let counter = |name: &str, labels: &[(&str, &str)]| match find(name, labels).1 {
        DebugValue::Counter(n) => *n,
        other => panic!("{name} is not a counter: {other:?}"),
    };
    use tower_bearer::cache::*;
    // Three token requests: a transient failure, then two tokens.
    assert_eq!(counter(TOKEN_REQUESTS, &[("outcome", "transient")]), 1);
    assert_eq!(counter(TOKEN_REQUESTS, &[("outcome", "ok")]), 2);
    assert_eq!(stats.token_requests, 3);
    match find(TOKEN_REQUEST_DURATION, &[("outcome", "ok")]) {
        (unit, DebugValue::Histogram(values)) => {
            assert_eq!(values.len(), 2);
            assert_eq!(unit, Some(metrics::Unit::Seconds));
        }
        other => panic!("{other:?}"),
    }
    // A first refresh, and one the rejection caused.
    assert_eq!(counter(REFRESHES, &[("reason", "first")]), 1);
    assert_eq!(counter(REFRESHES, &[("reason", "rejected")]), 1);
    match find(TOKEN_AGE_AT_REFRESH, &[("reason", "rejected")]).1 {
        DebugValue::Histogram(ages) => assert_eq!(ages.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(counter(REJECTIONS, &[]), 1);
    assert_eq!(counter(RETRIES, &[]), 1);
    assert_eq!((stats.rejections, stats.retries), (1, 1));
    // The call waited twice: for the first token, and for the retry's.
    assert_eq!(counter(WAITS, &[]), 2);
    match find(TOKEN_EXPIRES_IN, &[]).1 {
        DebugValue::Gauge(seconds) => assert!(seconds.0 > 3500.0, "{seconds:?}"),
        other => panic!("{other:?}"),
    }
}
