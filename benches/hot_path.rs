//! The per-request cost of attaching a fresh token.
//!
//! One run measures, per call (request in, response out, future polled to
//! completion; building the request is outside the timing):
//!
//! * `bare`: the no-op inner service alone;
//! * `add_authorization`: tower-http's `AddAuthorization` (a fixed, sensitive
//!   header value), the baseline to beat;
//! * `auth_service/return`: `AuthService` with a fresh cached token, when no
//!   retry copy is kept (`OnRejection::Return`, or a body that cannot be
//!   replayed): the token path alone;
//! * `auth_service/retry_once`: the default, `OnRejection::RetryOnce`, with a
//!   replayable (empty) body: the token path plus the copy of the request
//!   head kept for the one retry after a 401.
//!
//! Run with `cargo bench --bench hot_path`; results are in BENCHMARKS.md.

mod support;

use support::{Noop, call, request};

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower_bearer::reject::OnRejection;
use tower_bearer::{AuthLayer, Token, TokenCache, source};
use tower_http::auth::AddAuthorizationLayer;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";

fn warm_cache(rt: &tokio::runtime::Runtime) -> TokenCache {
    let cache = TokenCache::new(source::from_fn(|_| async {
        Ok(Token::new(TOKEN).with_expires_in(Duration::from_secs(24 * 3600)))
    }));
    rt.block_on(cache.token()).unwrap();
    cache
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let cache = warm_cache(&rt);

    let mut group = c.benchmark_group("hot_path");
    let mut bare = Noop;
    group.bench_function("bare", |b| {
        b.iter_batched(request, |req| call(&mut bare, req), BatchSize::SmallInput)
    });

    let mut add = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(Noop);
    group.bench_function("add_authorization", |b| {
        b.iter_batched(request, |req| call(&mut add, req), BatchSize::SmallInput)
    });

    let mut auth = AuthLayer::new(cache.clone())
        .on_rejection(OnRejection::Return)
        .layer(Noop);
    group.bench_function("auth_service/return", |b| {
        b.iter_batched(request, |req| call(&mut auth, req), BatchSize::SmallInput)
    });

    let mut auth_retry = AuthLayer::new(cache.clone()).layer(Noop);
    group.bench_function("auth_service/retry_once", |b| {
        b.iter_batched(
            request,
            |req| call(&mut auth_retry, req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = hot_path
}
criterion_main!(benches);
