//! The per-request cost of a DPoP-bound token (RFC 9449) beside a bearer
//! token, measured like `hot_path`: a request built per call, `ready()` and
//! `call()` awaited in a task on a 2-worker tokio runtime, the inner
//! service answering at once, an 800-byte token.
//!
//! * `bearer/{1t,2t}`: `AuthService` attaching a bearer token;
//! * `dpop/{1t,2t}`: the same with a DPoP-bound token: a new ES256 proof
//!   (`htm`, `htu`, `iat`, `jti`, `ath`) signed per request;
//! * `proof_only`: `Dpop::proof` alone, hashing the token each time.
//!
//! Run with `cargo bench -p tower-bearer-benches --features dpop --bench
//! dpop`; results are in BENCHMARKS.md.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Uri};
use http_body_util::Empty;
use support::Noop;
use tower::{Layer, Service, ServiceExt};
use tower_bearer::dpop::Dpop;
use tower_bearer::{AuthLayer, AuthService, Token, TokenCache, TokenType, source};

fn token() -> String {
    let mut token = String::from("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.");
    while token.len() < 800 {
        token.push('x');
    }
    token
}

fn plain() -> Request<Empty<Bytes>> {
    Request::get(Uri::from_static("https://api.example.com/v1/items?page=2"))
        .body(Empty::new())
        .unwrap()
}

fn run(
    rt: &tokio::runtime::Runtime,
    svc: &AuthService<Noop>,
    threads: usize,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let start = Arc::new(tokio::sync::Barrier::new(threads));
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    let begin = std::time::Instant::now();
                    for _ in 0..iters {
                        let ready = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut svc)
                            .await
                            .unwrap();
                        let rsp = ready.call(plain()).await.unwrap();
                        std::hint::black_box(rsp);
                    }
                    begin.elapsed()
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for task in tasks {
            slowest = slowest.max(task.await.unwrap());
        }
        slowest
    })
}

fn cache(rt: &tokio::runtime::Runtime, dpop: Option<Dpop>) -> TokenCache {
    let cache = TokenCache::new(source::from_fn(move |_| {
        let mut token = Token::new(token()).with_expires_in(Duration::from_secs(24 * 3600));
        if let Some(dpop) = &dpop {
            token = token
                .with_token_type(TokenType::DPoP)
                .with_dpop(dpop.clone());
        }
        async move { Ok(token) }
    }));
    rt.block_on(cache.token()).unwrap();
    cache
}

fn dpop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = Dpop::generate().unwrap();
    let bearer = AuthLayer::new(cache(&rt, None)).layer(Noop);
    let bound = AuthLayer::new(cache(&rt, Some(key.clone()))).layer(Noop);
    let mut g = c.benchmark_group("dpop");
    for threads in [1, 2] {
        g.bench_function(format!("bearer/{threads}t"), |b| {
            b.iter_custom(|n| run(&rt, &bearer, threads, n))
        });
        g.bench_function(format!("dpop/{threads}t"), |b| {
            b.iter_custom(|n| run(&rt, &bound, threads, n))
        });
    }
    let uri = Uri::from_static("https://api.example.com/v1/items?page=2");
    let token = token();
    g.bench_function("proof_only", |b| {
        b.iter(|| key.proof(&Method::GET, &uri, Some(&token)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = dpop
}
criterion_main!(benches);
