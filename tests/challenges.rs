//! What a rejection says (RFC 6750 §3 challenges in `WWW-Authenticate`) and
//! what the layer does about it, rule by rule, against a real token
//! endpoint and a real API on loopback: token requests counted, API
//! requests (hence retries) counted, what the caller gets.
//!
//! Also per-request token parameters ([`TokenParams`]): one variant cache,
//! and one token request, per distinct set.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::{Seen, TestServer, http_client, json, read_response, text};
use tower::{Layer, Service, ServiceExt};
use tower_bearer::challenge::Challenges;
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::reject::{Classify, Return, Standard};
use tower_bearer::{AuthLayer, TokenCache, TokenParams};

const CLAIMS_JSON: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;

/// A client credentials token endpoint whose tokens say what they were
/// asked for: `tok-<n>.<scope with + for spaces>.<claims or not>`.
async fn token_endpoint() -> TestServer {
    TestServer::start(|n, seen: Seen| async move {
        let form = seen.form();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return text(StatusCode::BAD_REQUEST, "unexpected grant");
        }
        let scope = form.get("scope").cloned().unwrap_or_default();
        let claims = match form.get("claims") {
            Some(claims) if claims == CLAIMS_JSON => "claims",
            Some(_) => "bad-claims",
            None => "none",
        };
        let token = format!("tok-{n}.{}.{claims}", scope.replace(' ', "+"));
        json(
            StatusCode::OK,
            serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
        )
    })
    .await
}

struct Sent {
    scope: Vec<String>,
    claims: bool,
}

fn parse(seen: &Seen) -> Option<Sent> {
    let token = seen.authorization()?.strip_prefix("Bearer ")?;
    let mut parts = token.split('.');
    parts.next()?;
    let scope = parts.next()?.split('+').map(str::to_owned).collect();
    let claims = parts.next()? == "claims";
    Some(Sent { scope, claims })
}

fn challenge(status: StatusCode, value: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("www-authenticate", value)
        .body(Full::new(Bytes::from_static(b"denied")))
        .unwrap()
}

/// An API with one path per rule.
async fn api() -> TestServer {
    TestServer::start(|_, seen: Seen| async move {
        let Some(sent) = parse(&seen) else {
            return challenge(StatusCode::UNAUTHORIZED, r#"Bearer realm="api""#);
        };
        let has = |scope: &str| sent.scope.iter().any(|s| s == scope);
        match seen.path.as_str() {
            // Needs `write` on top of the configured `read`.
            "/write" if has("write") && has("read") => text(StatusCode::OK, "written"),
            "/write" => challenge(
                StatusCode::FORBIDDEN,
                r#"Bearer realm="api", error="insufficient_scope", scope="read write", resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#,
            ),
            // Needs a scope no token ever gets.
            "/admin" => challenge(
                StatusCode::FORBIDDEN,
                r#"Bearer error="insufficient_scope", scope="admin-never-granted""#,
            ),
            // 401 with the scope challenge.
            "/write-401" if has("write") => text(StatusCode::OK, "written"),
            "/write-401" => challenge(
                StatusCode::UNAUTHORIZED,
                r#"Bearer error="insufficient_scope", scope="write""#,
            ),
            // A claims challenge (continuous access evaluation).
            "/cae" if sent.claims => text(StatusCode::OK, "fresh session"),
            "/cae" => {
                let claims = STANDARD.encode(CLAIMS_JSON);
                challenge(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        r#"Bearer realm="", authorization_uri="https://login.example/authorize", error="insufficient_claims", claims="{claims}""#
                    ),
                )
            }
            // Claims challenges forever.
            "/cae-forever" => challenge(
                StatusCode::UNAUTHORIZED,
                &format!(
                    r#"Bearer error="insufficient_claims", claims="{}""#,
                    STANDARD.encode(CLAIMS_JSON)
                ),
            ),
            // Wants another scheme altogether.
            "/basic" => challenge(StatusCode::UNAUTHORIZED, r#"Basic realm="intranet""#),
            "/negotiate" => challenge(StatusCode::UNAUTHORIZED, "Negotiate"),
            // RFC 9728: a 401 pointing at the resource's metadata.
            "/mcp" => challenge(
                StatusCode::UNAUTHORIZED,
                r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#,
            ),
            _ => text(StatusCode::OK, "ok"),
        }
    })
    .await
}

fn cache_for(tokens: &TestServer) -> TokenCache {
    let endpoint = TokenEndpoint::builder(tokens.url("/token"), ClientAuth::post("app", "s3cret"))
        .scope("read")
        .build()
        .unwrap();
    TokenCache::new(ClientCredentialsGrant::new(endpoint))
}

fn get(api: &TestServer, path: &str) -> Request<Full<Bytes>> {
    Request::get(api.url(path)).body(Full::default()).unwrap()
}

async fn call<C: Classify>(
    layer: &AuthLayer<C>,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String, Option<Challenges>) {
    let response = layer.layer(http_client()).oneshot(request).await.unwrap();
    let challenges = response.extensions().get::<Challenges>().cloned();
    let (status, body) = read_response(response).await;
    (status, body, challenges)
}

#[tokio::test]
async fn b6_invalid_token_is_invalidated_and_retried_once() {
    let tokens = token_endpoint().await;
    // Rejects the first token it sees, with `invalid_token`.
    let api = TestServer::start(|n, _seen| async move {
        if n == 1 {
            challenge(StatusCode::UNAUTHORIZED, r#"Bearer error="invalid_token""#)
        } else {
            text(StatusCode::OK, "ok")
        }
    })
    .await;
    let cache = cache_for(&tokens);
    let (status, _, challenges) = call(&AuthLayer::new(cache.clone()), get(&api, "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(challenges.is_none(), "an accepted response has none");
    assert_eq!(tokens.requests(), 2, "the rejected token was replaced");
    assert_eq!(api.requests(), 2, "one retry");
    assert_eq!(cache.stats().rejections, 1);
}

#[tokio::test]
async fn insufficient_scope_reaches_the_caller_with_the_demanded_scope_by_default() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let layer = AuthLayer::new(cache.clone());

    let (status, _, challenges) = call(&layer, get(&api, "/write")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let challenges = challenges.expect("the challenges are in the response's extensions");
    let bearer = challenges.bearer().unwrap();
    assert_eq!(bearer.error(), Some("insufficient_scope"));
    assert_eq!(bearer.scope(), Some("read write"));
    assert_eq!(api.requests(), 1, "no retry");
    assert_eq!(tokens.requests(), 1);
    assert_eq!(cache.stats().rejections, 0, "the token is not invalidated");

    // A 401 that asks for scope is not a rejection either.
    let (status, _, _) = call(&layer, get(&api, "/write-401")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.requests(), 2);
    assert_eq!(tokens.requests(), 1, "the token is still good");
}

#[tokio::test]
async fn step_up_gets_a_token_for_the_configured_and_demanded_scopes_and_retries_once() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let layer = AuthLayer::new(cache.clone()).classify(Standard::new().step_up(true));

    let (status, body, challenges) = call(&layer, get(&api, "/write")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "written"));
    assert!(challenges.is_none());
    assert_eq!(api.requests(), 2, "the first attempt and one retry");
    assert_eq!(
        tokens.requests(),
        2,
        "the configured token and the stepped-up one"
    );
    let asked: Vec<_> = tokens
        .seen()
        .iter()
        .map(|s| s.form()["scope"].clone())
        .collect();
    assert_eq!(
        asked,
        ["read", "read write"],
        "the union of configured and demanded"
    );
    assert_eq!(cache.stats().rejections, 0, "the base token stays");

    // Calls that need no more keep the base token; the stepped-up one is
    // kept for the next step-up.
    let (status, _, _) = call(&layer, get(&api, "/plain")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&layer, get(&api, "/write")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens.requests(), 2, "both tokens reused");
    let sent: Vec<_> = api
        .seen()
        .iter()
        .map(|s| s.authorization().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent,
        [
            "Bearer tok-1.read.none",
            "Bearer tok-2.read+write.none",
            "Bearer tok-1.read.none",
            "Bearer tok-1.read.none",
            "Bearer tok-2.read+write.none",
        ]
    );
    assert_eq!(cache.variant_count(), 1);
}

#[tokio::test]
async fn step_up_that_is_still_insufficient_is_returned_after_one_retry_never_a_loop() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let layer = AuthLayer::new(cache.clone()).classify(Standard::new().step_up(true));
    for round in 1..=3 {
        let (status, _, challenges) = call(&layer, get(&api, "/admin")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            challenges.unwrap().bearer().unwrap().scope(),
            Some("admin-never-granted")
        );
        assert_eq!(api.requests(), 2 * round, "two attempts per call, no more");
    }
    assert_eq!(
        tokens.requests(),
        2,
        "the stepped-up token is reused, not re-fetched"
    );
}

#[tokio::test]
async fn step_up_with_return_sends_once() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let layer = AuthLayer::new(cache_for(&tokens))
        .classify(Standard::new().step_up(true))
        .on_rejection(Return);
    let response = layer
        .layer(http_client())
        .oneshot(get(&api, "/write"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.extensions().get::<Challenges>().is_some());
    assert_eq!(api.requests(), 1);
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test]
async fn claims_challenge_is_returned_by_default_and_answered_with_the_claims_when_opted_in() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);

    let (status, _, challenges) = call(&AuthLayer::new(cache.clone()), get(&api, "/cae")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenges = challenges.unwrap();
    assert_eq!(
        challenges.bearer().unwrap().claims().as_deref(),
        Some(CLAIMS_JSON)
    );
    assert_eq!(api.requests(), 1, "no retry by default");
    assert_eq!(tokens.requests(), 1);

    let layer = AuthLayer::new(cache.clone()).classify(Standard::new().claims_challenges(true));
    let (status, body, _) = call(&layer, get(&api, "/cae")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fresh session"));
    assert_eq!(api.requests(), 3, "one retry");
    assert_eq!(tokens.requests(), 2);
    let form = tokens.seen()[1].form();
    assert_eq!(
        form["claims"], CLAIMS_JSON,
        "the decoded claims as the request parameter"
    );
    assert_eq!(form["scope"], "read", "the configured scope kept");
}

#[tokio::test]
async fn claims_challenge_that_persists_is_retried_once_per_call_never_in_a_loop() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let layer =
        AuthLayer::new(cache_for(&tokens)).classify(Standard::new().claims_challenges(true));
    for round in 1..=3 {
        let (status, _, challenges) = call(&layer, get(&api, "/cae-forever")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenges.is_some());
        assert_eq!(api.requests(), 2 * round);
    }
    assert_eq!(
        tokens.requests(),
        2,
        "the token with the claims is made once"
    );
}

#[tokio::test]
async fn another_schemes_challenge_is_left_to_the_caller() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let layer = AuthLayer::new(cache.clone())
        .classify(Standard::new().step_up(true).claims_challenges(true));
    for (path, scheme) in [("/basic", "Basic"), ("/negotiate", "Negotiate")] {
        let (status, _, challenges) = call(&layer, get(&api, path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenges.unwrap().of(scheme).is_some());
    }
    assert_eq!(api.requests(), 2, "no retry");
    assert_eq!(tokens.requests(), 1);
    assert_eq!(cache.stats().rejections, 0, "not a rejection of our token");
}

#[tokio::test]
async fn resource_metadata_is_exposed_to_the_caller_and_never_fetched() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let (status, _, challenges) = call(&AuthLayer::new(cache.clone()), get(&api, "/mcp")).await;
    // A 401 naming no error rejects the token: invalidated, retried once,
    // and the retry's 401 is returned with its challenge.
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenges.unwrap().bearer().unwrap().resource_metadata(),
        Some("http://127.0.0.1:1/.well-known/oauth-protected-resource")
    );
    assert_eq!(api.requests(), 2);
    assert_eq!(tokens.requests(), 2);
    assert!(
        api.seen().iter().all(|s| s.path == "/mcp")
            && tokens.seen().iter().all(|s| s.path == "/token"),
        "nothing else was requested"
    );
}

#[tokio::test]
async fn step_up_from_a_source_that_cannot_ask_for_scope_returns_the_denial() {
    let api = api().await;
    let cache = TokenCache::new(tower_bearer::source::StaticToken::new("tok-0.read.none"));
    let layer = AuthLayer::new(cache).classify(Standard::new().step_up(true));
    let (status, _, challenges) = call(&layer, get(&api, "/write")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenges.is_some());
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn request_token_params_select_a_variant_with_its_own_token() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let mut request = get(&api, "/write");
    request
        .extensions_mut()
        .insert(TokenParams::new().scope("write read"));
    let (status, _, _) = call(&AuthLayer::new(cache.clone()), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens.requests(), 1, "only the variant's token was needed");
    assert_eq!(tokens.seen()[0].form()["scope"], "read write");

    // A source that cannot make variants: a typed error, no request sent.
    let fixed = TokenCache::new(tower_bearer::source::StaticToken::new("k"));
    let mut request = get(&api, "/plain");
    request
        .extensions_mut()
        .insert(TokenParams::new().scope("x"));
    let error = AuthLayer::new(fixed)
        .layer(http_client())
        .oneshot(request)
        .await
        .unwrap_err();
    let error = error.downcast::<tower_bearer::Error>().unwrap();
    assert!(error.is_permanent());
    assert_eq!(error.kind(), tower_bearer::ErrorKind::Unsendable);
    assert!(error.to_string().contains("token parameters"), "{error}");
    assert_eq!(api.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scopes_times_a_thousand_concurrent_calls_make_three_token_requests() {
    let tokens = token_endpoint().await;
    let api = api().await;
    let cache = cache_for(&tokens);
    let service = AuthLayer::new(cache.clone()).layer(support::h2_client());
    let scopes = ["a", "b", "c"];
    let calls = (0..3000).map(|i| {
        let mut service = service.clone();
        let mut request = get(&api, "/plain");
        request
            .extensions_mut()
            .insert(TokenParams::new().scope(scopes[i % 3]));
        tokio::spawn(async move {
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            read_response(response).await.0
        })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(tokens.requests(), 3);
    let mut asked: Vec<_> = tokens
        .seen()
        .iter()
        .map(|s| s.form()["scope"].clone())
        .collect();
    asked.sort();
    assert_eq!(asked, ["a", "b", "c"]);
    assert_eq!(cache.variant_count(), 3);
}

#[tokio::test]
async fn variants_stay_within_their_bound_under_ten_thousand_parameter_sets() {
    let endpoint = TokenEndpoint::builder("http://127.0.0.1:1/token", ClientAuth::post("app", "s"))
        .build()
        .unwrap();
    let cache = TokenCache::builder(ClientCredentialsGrant::new(endpoint))
        .max_variants(16)
        .build()
        .unwrap();
    let kept = cache.variant(&TokenParams::new().audience("kept")).unwrap();
    let mut max_seen = 0;
    for i in 0..10_000 {
        let variant = cache
            .variant(&TokenParams::new().resource(format!("https://api-{i}.example/")))
            .unwrap();
        drop(variant);
        // The one used every time is never the least recently used.
        let again = cache.variant(&TokenParams::new().audience("kept")).unwrap();
        assert!(again.ptr_eq(&kept), "evicted at {i}");
        max_seen = max_seen.max(cache.variant_count());
    }
    assert_eq!(max_seen, 16);
}
