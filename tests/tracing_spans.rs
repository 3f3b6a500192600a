//! What operators follow: tracing spans, one per token request (cache,
//! grant, attempt, outcome; never a secret), and the retry after a
//! rejection recorded in the request's span, checked with a capturing
//! subscriber (this binary's only test: tracing's callsite cache is per
//! process).

mod support;

use std::sync::{Arc, Mutex};

const SECRET: &str = tower_bearer::test_kit::TEST_CLIENT_SECRET;

/// Every span and event, as `name{field=value,…}` lines, with the span an
/// event happened in.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?},", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={},", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        self.0.lock().unwrap().push(format!(
            "span {} #{} {{{}}}",
            attrs.metadata().name(),
            id.into_u64(),
            fields.0
        ));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push(format!("record #{} {{{}}}", id.into_u64(), fields.0));
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let span = ctx
            .event_span(event)
            .map(|span| span.name().to_owned())
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(format!("event in {span} {{{}}}", fields.0));
    }
}

#[tokio::test]
async fn tracing_has_a_span_per_token_request_and_the_retry_in_the_requests_span() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_server, _cache) = support::kit::one_call_with_a_rejection("traced").await;

    let lines = capture.0.lock().unwrap().clone();
    let all = lines.join("\n");
    let spans: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("span token_request"))
        .collect();
    assert_eq!(spans.len(), 3, "{all}");
    for (attempt, span) in [1, 2, 1].iter().zip(&spans) {
        assert!(span.contains("cache=traced"), "{span}");
        assert!(span.contains(&format!("attempt={attempt}")), "{span}");
    }
    let records: Vec<&String> = lines.iter().filter(|l| l.starts_with("record")).collect();
    let recorded = |field: &str| records.iter().filter(|r| r.contains(field)).count();
    assert_eq!(recorded("grant=client_credentials"), 3, "{all}");
    assert_eq!(recorded("outcome=transient"), 1, "{all}");
    assert_eq!(recorded("outcome=ok"), 2, "{all}");
    // The retry is an event in the caller's request span.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("event in request") && l.contains("once more")),
        "{all}"
    );
    // Never a secret, never a token.
    for secret in [SECRET, "at-1", "at-2"] {
        assert!(!all.contains(secret), "{secret} in:\n{all}");
    }
}
