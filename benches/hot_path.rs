//! The per-request cost of attaching a fresh token, measured the way an
//! outsider measures a tower layer: a request built per call, `ready()` and
//! `call()` awaited in a task on a 2-worker tokio runtime, the inner
//! service answering an `Empty<Bytes>` 200 at once, and an 800-byte token.
//!
//! Contenders (each at 1 and 2 threads; 2 threads are two tasks on the two
//! workers, each through its own clone of the service, one shared cache;
//! the time reported is per call and per thread, so perfect scaling shows
//! the same number at 1 and 2 threads):
//!
//! * `bare`: the no-op inner service alone;
//! * `add_authorization`: tower-http's `AddAuthorization` (a fixed,
//!   sensitive header value): the floor for a layer that attaches a token;
//! * `set_header_static`: tower-http's `SetRequestHeader` with a `'static`
//!   header value (no reference count at all);
//! * `auth_return`: `AuthService` with `Return`;
//! * `auth_retry_once`: `AuthService` with the default
//!   `RetryOnce` (a copy of the request kept for the retry).
//!
//! The `plain` group sends a GET with no headers of its own; the
//! `eight_headers` group a GET with eight headers (built per call too).
//!
//! After criterion's runs, an interleaved comparison runs each contender in
//! turn, 31 times, and prints the medians and the ratios to
//! `AddAuthorization` as a table (`cargo bench -p tower-bearer-benches
//! --bench hot_path -- interleaved` runs only that).
//!
//! Run with `cargo bench -p tower-bearer-benches --bench hot_path`; results
//! are in BENCHMARKS.md.

mod support;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Uri};
use http_body_util::Empty;
use support::Noop;
use tower::{Layer, Service, ServiceExt};
use tower_bearer::reject::{Return, Standard};
use tower_bearer::{AuthLayer, AuthService, Token, TokenCache, source};
use tower_http::auth::{AddAuthorization, AddAuthorizationLayer};
use tower_http::set_header::{SetRequestHeader, SetRequestHeaderLayer};

/// An 800-byte token, as large identity providers issue (a JWT with a few
/// claims and an RS256 signature).
fn token() -> String {
    let mut token = String::from("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.");
    while token.len() < 800 {
        token.push('x');
    }
    token
}

/// The URI every request goes to, parsed once (as a client's base URL is);
/// cloning it copies no bytes.
static URI: LazyLock<Uri> =
    LazyLock::new(|| Uri::from_static("https://api.example.com/v1/items?page=2"));

fn plain() -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = URI.clone();
    req
}

fn eight_headers() -> Request<Empty<Bytes>> {
    Request::get(URI.clone())
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("user-agent", "bench/1.0 (tower-bearer)")
        .header("x-request-id", "3f0e9d2c-6a8b-4c1e-9f7d-2b5a8c4e1d90")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-tenant", "blue")
        .header("cache-control", "no-cache")
        .header("x-client-version", "2026.11.30")
        .body(Empty::new())
        .unwrap()
}

/// Runs `iters` calls through each of `threads` clones of `svc`, one task
/// per clone on a 2-worker runtime, started together; returns the time per
/// call per thread (the wall time of the slowest task).
fn run<S>(
    rt: &tokio::runtime::Runtime,
    svc: &S,
    make: fn() -> Request<Empty<Bytes>>,
    threads: usize,
    iters: u64,
) -> Duration
where
    S: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    S::Response: Send,
{
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
                        let req = make();
                        let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
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

/// The runtime, the cache and the contenders.
struct Setup {
    rt: tokio::runtime::Runtime,
    bare: Noop,
    add: AddAuthorization<Noop>,
    set_static: SetRequestHeader<Noop, HeaderValue>,
    auth_return: AuthService<Noop, Standard, Return>,
    auth_retry: AuthService<Noop>,
}

impl Setup {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let token = token();
        let cache = {
            let token = token.clone();
            TokenCache::new(source::from_fn(move |_| {
                let token = token.clone();
                async move { Ok(Token::new(token).with_expires_in(Duration::from_secs(24 * 3600))) }
            }))
        };
        rt.block_on(cache.token()).unwrap();
        let add = AddAuthorizationLayer::bearer(&token)
            .as_sensitive(true)
            .layer(Noop);
        let header: &'static str = Box::leak(format!("Bearer {token}").into_boxed_str());
        let mut value = HeaderValue::from_static(header);
        value.set_sensitive(true);
        let set_static = SetRequestHeaderLayer::overriding(AUTHORIZATION, value).layer(Noop);
        let auth_return = AuthLayer::new(cache.clone())
            .on_rejection(Return)
            .layer(Noop);
        let auth_retry = AuthLayer::new(cache).layer(Noop);
        Setup {
            rt,
            bare: Noop,
            add,
            set_static,
            auth_return,
            auth_retry,
        }
    }
}

fn hot_path(c: &mut Criterion) {
    let Setup {
        rt,
        bare,
        add,
        set_static,
        auth_return,
        auth_retry,
    } = Setup::new();
    for (group, make) in [
        ("plain", plain as fn() -> _),
        ("eight_headers", eight_headers as fn() -> _),
    ] {
        let mut g = c.benchmark_group(group);
        for threads in [1, 2] {
            let t = format!("{threads}t");
            g.bench_function(format!("bare/{t}"), |b| {
                b.iter_custom(|n| run(&rt, &bare, make, threads, n))
            });
            g.bench_function(format!("add_authorization/{t}"), |b| {
                b.iter_custom(|n| run(&rt, &add, make, threads, n))
            });
            if group == "plain" {
                g.bench_function(format!("set_header_static/{t}"), |b| {
                    b.iter_custom(|n| run(&rt, &set_static, make, threads, n))
                });
                g.bench_function(format!("auth_return/{t}"), |b| {
                    b.iter_custom(|n| run(&rt, &auth_return, make, threads, n))
                });
            }
            g.bench_function(format!("auth_retry_once/{t}"), |b| {
                b.iter_custom(|n| run(&rt, &auth_retry, make, threads, n))
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = hot_path
}

/// The contenders of the interleaved comparison, in the order of the table.
const CONTENDERS: [&str; 5] = [
    "bare",
    "add_authorization",
    "set_header_static",
    "auth_return",
    "auth_retry_once",
];

/// Repetitions of the interleaved comparison, and calls per repetition.
const REPETITIONS: usize = 31;
const CALLS: u64 = 200_000;

/// Each contender in turn, `REPETITIONS` times, at 1 and 2 threads: the
/// median time per call, and the median of the per-repetition ratios to
/// `add_authorization`. Interleaving keeps a drift of the machine (another
/// tenant, the CPU's clock) from favouring whichever ran last.
fn interleaved() {
    let s = Setup::new();
    println!();
    println!("interleaved: medians of {REPETITIONS} repetitions of {CALLS} calls (plain GET)");
    println!(
        "| contender | 1 thread | × AddAuthorization | 2 threads | × AddAuthorization | 2T / 1T |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    // times[contender][threads - 1][repetition], in ns per call.
    let mut times = vec![[Vec::new(), Vec::new()]; CONTENDERS.len()];
    for _ in 0..REPETITIONS {
        for threads in [1, 2] {
            for (c, name) in CONTENDERS.iter().enumerate() {
                let elapsed = match *name {
                    "bare" => run(&s.rt, &s.bare, plain, threads, CALLS),
                    "add_authorization" => run(&s.rt, &s.add, plain, threads, CALLS),
                    "set_header_static" => run(&s.rt, &s.set_static, plain, threads, CALLS),
                    "auth_return" => run(&s.rt, &s.auth_return, plain, threads, CALLS),
                    _ => run(&s.rt, &s.auth_retry, plain, threads, CALLS),
                };
                times[c][threads - 1].push(elapsed.as_nanos() as f64 / CALLS as f64);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let floor = 1;
    for (c, name) in CONTENDERS.iter().enumerate() {
        let t1 = median(times[c][0].to_vec());
        let t2 = median(times[c][1].to_vec());
        let r1 = median(
            (0..REPETITIONS)
                .map(|r| times[c][0][r] / times[floor][0][r])
                .collect(),
        );
        let r2 = median(
            (0..REPETITIONS)
                .map(|r| times[c][1][r] / times[floor][1][r])
                .collect(),
        );
        let scaling = median(
            (0..REPETITIONS)
                .map(|r| times[c][1][r] / times[c][0][r])
                .collect(),
        );
        println!("| `{name}` | {t1:.0} ns | {r1:.2} | {t2:.0} ns | {r2:.2} | {scaling:.2} |");
    }
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref() != Some("interleaved") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if filter.is_none() || filter.as_deref() == Some("interleaved") {
        interleaved();
    }
}
