//! B9 and several APIs in one process: a token goes only to the origin it
//! belongs to, whatever client carries it; caches are per API and shared
//! where they should be.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use support::{FrozenClock, TestServer, api_server, http_client, http_source, token_json};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_bearer::route::{Origin, RouteLayer};
use tower_bearer::test_kit::TestAuthServer;
use tower_bearer::{AuthLayer, TokenCache};

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn origin(server: &TestServer) -> Origin {
    Origin::parse(&server.url("")).unwrap()
}

/// A token endpoint issuing `{prefix}-1`, `{prefix}-2`, …
async fn token_server(prefix: &'static str) -> TestServer {
    TestServer::start(move |n, _| async move { token_json(&format!("{prefix}-{n}"), 3600) }).await
}

fn cache_for(tokens: &TestServer) -> TokenCache {
    TokenCache::new(http_source(http_client(), tokens.url("/token")))
}

/// The origin of a test kit server.
fn kit_origin(server: &TestAuthServer) -> Origin {
    Origin::parse(&server.url("")).unwrap()
}

/// The bearer token of every request a test kit API got, in order.
fn bearers(server: &TestAuthServer) -> Vec<Option<String>> {
    server
        .api_requests()
        .into_iter()
        .map(|r| r.bearer)
        .collect()
}

/// Every `Authorization` a server saw (`None` for requests without one).
fn authorizations(server: &TestServer) -> Vec<Option<String>> {
    server
        .seen()
        .iter()
        .map(|seen| seen.authorization().map(str::to_owned))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn b9_token_for_origin_a_never_reaches_origin_b_or_an_unknown_origin_even_after_a_refresh() {
    let _clock = FrozenClock::freeze().await;
    let (tokens_a, tokens_b) = (token_server("a").await, token_server("b").await);
    // A rejects its first token, so A's cache refreshes mid-test.
    let api_a = api_server(|token| token == "a-2").await;
    let api_b = api_server(|token| token.starts_with("b-")).await;
    let unknown = api_server(|_| true).await;

    let routes = RouteLayer::new()
        .route(origin(&api_a), AuthLayer::new(cache_for(&tokens_a)))
        .route(origin(&api_b), AuthLayer::new(cache_for(&tokens_b)));
    // One client (one connection pool) under every API.
    let client = ServiceBuilder::new().layer(routes).service(http_client());

    let same_server_other_name = format!("http://localhost:{}/a", api_a.addr.port());
    for round in 0..2 {
        let a = client.clone().oneshot(get(&api_a.url("/a"))).await.unwrap();
        assert_eq!(a.status(), StatusCode::OK, "round {round}");
        let b = client.clone().oneshot(get(&api_b.url("/b"))).await.unwrap();
        assert_eq!(b.status(), StatusCode::OK, "round {round}");
        let c = client
            .clone()
            .oneshot(get(&unknown.url("/c")))
            .await
            .unwrap();
        assert_eq!(
            c.status(),
            StatusCode::UNAUTHORIZED,
            "no token, round {round}"
        );
        let other = client
            .clone()
            .oneshot(get(&same_server_other_name))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED, "round {round}");
    }

    let a = |t: &str| Some(format!("Bearer {t}"));
    assert_eq!(
        authorizations(&api_a),
        [a("a-1"), a("a-2"), None, a("a-2"), None],
        "round 0: rejected, retried with the new token; round 1: reused; \
         the requests to the same server under another name carried nothing"
    );
    assert_eq!(authorizations(&api_b), [a("b-1"), a("b-1")]);
    assert_eq!(authorizations(&unknown), [None, None]);
    assert_eq!(tokens_a.requests(), 2);
    assert_eq!(tokens_b.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn b9_route_only_keeps_a_layer_to_its_own_origin() {
    let _clock = FrozenClock::freeze().await;
    let (api, elsewhere) = (TestAuthServer::start().await, TestAuthServer::start().await);
    let cache = TokenCache::new(api.client_credentials());
    let client = RouteLayer::only(kit_origin(&api), AuthLayer::new(cache)).layer(http_client());

    let ok = client
        .clone()
        .oneshot(get(&api.url("/mine")))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let redirected = client
        .oneshot(get(&elsewhere.url("/theirs")))
        .await
        .unwrap();
    assert_eq!(redirected.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearers(&elsewhere), [None]);
    assert_eq!(api.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn b9_path_only_uri_matches_no_origin_and_gets_no_token() {
    // What a layer above a tonic Channel sees: `/package.Service/Method`.
    let _clock = FrozenClock::freeze().await;
    let tokens = support::token_server(3600).await;
    let headers: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let recorder = {
        let headers = headers.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            headers.lock().unwrap().push(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
        })
    };
    let routes = RouteLayer::only(
        Origin::parse("http://127.0.0.1:50051").unwrap(),
        AuthLayer::new(cache_for(&tokens)),
    );
    let client = routes.layer(recorder);

    let response = client
        .oneshot(get("/grpc.health.v1.Health/Check"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK, "still sent");
    let headers = headers.lock().unwrap();
    assert_eq!(headers.len(), 1);
    assert!(headers[0].get("authorization").is_none());
    assert_eq!(tokens.requests(), 0, "no token was even fetched");
}

#[tokio::test(start_paused = true)]
async fn two_apis_with_their_own_token_urls_share_one_hyper_client() {
    // Each kit server's API accepts only the tokens its own endpoint issued.
    let _clock = FrozenClock::freeze().await;
    let a = TestAuthServer::builder().token_prefix("a-").start().await;
    let b = TestAuthServer::builder().token_prefix("b-").start().await;
    let shared = http_client();
    let client_a = AuthLayer::new(TokenCache::new(a.client_credentials())).layer(shared.clone());
    let client_b = AuthLayer::new(TokenCache::new(b.client_credentials())).layer(shared);

    for _ in 0..3 {
        let from_a = client_a.clone().oneshot(get(&a.url("/a"))).await.unwrap();
        let from_b = client_b.clone().oneshot(get(&b.url("/b"))).await.unwrap();
        assert_eq!(
            (from_a.status(), from_b.status()),
            (StatusCode::OK, StatusCode::OK)
        );
    }

    assert_eq!(a.stats().token_requests, 1);
    assert_eq!(b.stats().token_requests, 1);
    assert_eq!(bearers(&a), vec![Some("a-at-1".to_owned()); 3]);
    assert_eq!(bearers(&b), vec![Some("b-at-1".to_owned()); 3]);
}

#[tokio::test(start_paused = true)]
async fn b3_a_cache_shared_by_two_layers_fetches_once() {
    let _clock = FrozenClock::freeze().await;
    let server = TestAuthServer::start().await;
    let cache = TokenCache::new(server.client_credentials());
    let orders_client = AuthLayer::new(cache.clone()).layer(http_client());
    let invoices_client = AuthLayer::new(cache.clone()).layer(http_client());

    // Both layers ask at the same time, before any token exists.
    let (orders, invoices) = tokio::join!(
        orders_client.oneshot(get(&server.url("/orders"))),
        invoices_client.oneshot(get(&server.url("/invoices"))),
    );

    assert_eq!(orders.unwrap().status(), StatusCode::OK);
    assert_eq!(invoices.unwrap().status(), StatusCode::OK);
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(cache.stats().token_requests, 1);
    let mut seen: Vec<_> = server
        .api_requests()
        .into_iter()
        .map(|r| (r.path, r.bearer))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/invoices".to_owned(), Some("at-1".to_owned())),
            ("/orders".to_owned(), Some("at-1".to_owned()))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn b9_a_request_whose_host_header_names_another_application_gets_no_token() {
    let _clock = FrozenClock::freeze().await;
    let tokens = token_server("a").await;
    let api = api_server(|_| true).await;
    let routed =
        RouteLayer::only(origin(&api), AuthLayer::new(cache_for(&tokens))).layer(http_client());
    let with_host = |host: &str| {
        Request::get(api.url("/v1"))
            .header(http::header::HOST, host)
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    // Same address, another virtual host: hyper sends the `Host` as given,
    // and a server that routes by virtual host delivers it to another
    // application. No token.
    let other = routed
        .clone()
        .oneshot(with_host("other-tenant.example"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    // The `Host` that names the origin itself, in any case and with the
    // port spelled out: the token.
    let own = format!("LOCALHOST-NOT:{}", api.addr.port());
    let same = format!("{}", api.addr).to_uppercase();
    let ours = routed.clone().oneshot(with_host(&same)).await.unwrap();
    assert_eq!(ours.status(), StatusCode::OK);
    let elsewhere = routed.oneshot(with_host(&own)).await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);

    let seen = api.seen();
    let hosts: Vec<_> = seen
        .iter()
        .map(|s| s.headers[http::header::HOST].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(hosts, ["other-tenant.example", same.as_str(), own.as_str()]);
    assert_eq!(
        authorizations(&api),
        [None, Some("Bearer a-1".to_owned()), None]
    );
    assert_eq!(tokens.requests(), 1);
}
