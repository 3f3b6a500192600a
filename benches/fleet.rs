//! The per-call cost with a token store configured: it must be the same as
//! without one, because the store is used by refreshes only, never on the
//! per-request path (a fresh token costs a clock read and an atomic load,
//! store or not).
//!
//! One run measures, per call (request in, response out, future polled to
//! completion; building the request is outside the timing), `AuthService`
//! with a fresh cached token and `Return`:
//!
//! * `no_store`: a cache without a store, the baseline;
//! * `memory_store`, `file_store`: the same cache over a `MemoryStore` and
//!   a `FileStore` (the token was loaded from and saved to it);
//! * `redis_store` (feature `redis`): over a `RedisStore` whose Redis is
//!   not even running — a store that is off the per-request path cannot
//!   slow it down.
//!
//! Run with `cargo bench -p tower-bearer-benches --features redis --bench
//! fleet`; results are in
//! BENCHMARKS.md. Token requests per lifetime for fleets of N replicas are
//! measured by the `fleet_table` test of `tests/store_redis.rs`.

mod support;

use support::{Noop, call, request};

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower_bearer::reject::Return;
use tower_bearer::store::{FileStore, MemoryStore, StoreKey, TokenStore};
use tower_bearer::{AuthLayer, Token, TokenCache, source};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";

/// A cache holding a fresh token, over `store` when given.
fn warm_cache(rt: &tokio::runtime::Runtime, store: Option<Box<dyn TokenStore>>) -> TokenCache {
    let builder = TokenCache::builder(source::from_fn(|_| async {
        Ok(Token::new(TOKEN)
            .with_refresh_token("rt")
            .with_expires_in(Duration::from_secs(24 * 3600)))
    }));
    let builder = match store {
        Some(store) => builder.store(store, StoreKey::new(["bench"])),
        None => builder,
    };
    let cache = builder.build().unwrap();
    rt.block_on(cache.token()).unwrap();
    cache
}

fn store_hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = std::env::temp_dir().join(format!("tower-bearer-bench-{}", std::process::id()));
    let mut caches: Vec<(&str, TokenCache)> = vec![
        ("no_store", warm_cache(&rt, None)),
        (
            "memory_store",
            warm_cache(&rt, Some(Box::new(MemoryStore::new()))),
        ),
        (
            "file_store",
            warm_cache(&rt, Some(Box::new(FileStore::new(dir.join("tokens.json"))))),
        ),
    ];
    #[cfg(feature = "redis")]
    caches.push((
        "redis_store",
        warm_cache(
            &rt,
            Some(Box::new(
                tower_bearer::store::RedisStore::new("redis://127.0.0.1:1/").unwrap(),
            )),
        ),
    ));

    let mut group = c.benchmark_group("store_hot_path");
    for (name, cache) in caches.drain(..) {
        let mut auth = AuthLayer::new(cache).on_rejection(Return).layer(Noop);
        group.bench_function(name, |b| {
            b.iter_batched(request, |req| call(&mut auth, req), BatchSize::SmallInput)
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = store_hot_path
}
criterion_main!(benches);
