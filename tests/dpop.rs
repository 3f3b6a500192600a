//! DPoP (RFC 9449) end to end: an in-process token endpoint and API that
//! verify every proof the way a resource server must (signature by the
//! header's key, `typ`, `htm`, `htu`, `iat`, `ath`, the key's thumbprint
//! against the token's binding, `jti` replay, nonces), and the
//! oidc-provider peer issuing a DPoP-bound token.
#![cfg(feature = "dpop")]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use support::{Seen, TestServer, http_client, json, text};
use tower::{Layer, ServiceExt};
use tower_bearer::challenge::Challenges;
use tower_bearer::dpop::Dpop;
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, ErrorKind, Token, TokenCache, TokenType, source};

/// What a verified proof said.
#[derive(Debug)]
struct Proof {
    jkt: String,
    jti: String,
    nonce: Option<String>,
    ath: Option<String>,
}

fn decode(part: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Verifies a DPoP proof JWT for `method` to `htu`, as RFC 9449 §4.3 says.
fn verify(proof: &str, method: &Method, htu: &str) -> Result<Proof, String> {
    let parts: Vec<&str> = proof.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err("not a JWS".into());
    };
    let header = decode(header_b64).ok_or("bad header")?;
    let claims = decode(claims_b64).ok_or("bad claims")?;
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err(format!("bad typ/alg: {header}"));
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err("a private key in the header".into());
    }
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().ok_or("no coordinate")?)
            .map_err(|e| e.to_string())
    };
    let public = [vec![4u8], coordinate("x")?, coordinate("y")?].concat();
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|e| e.to_string())?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
        .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
        .map_err(|_| "bad signature".to_owned())?;
    if claims["htm"] != method.as_str() {
        return Err(format!("htm {} for {method}", claims["htm"]));
    }
    if claims["htu"] != htu {
        return Err(format!("htu {} for {htu}", claims["htu"]));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat.abs_diff(now) > 60 {
        return Err("iat out of range".into());
    }
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or("")
    );
    let jkt = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ));
    Ok(Proof {
        jkt,
        jti: claims["jti"].as_str().ok_or("no jti")?.to_owned(),
        nonce: claims["nonce"].as_str().map(str::to_owned),
        ath: claims["ath"].as_str().map(str::to_owned),
    })
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// The shared state of the in-process authorization and resource servers.
#[derive(Default)]
struct World {
    /// Token → the thumbprint it is bound to.
    bound: Mutex<HashMap<String, String>>,
    /// Every `jti` the API accepted.
    jtis: Mutex<HashSet<String>>,
    /// Proof failures the servers saw (the test asserts there are none).
    failures: Mutex<Vec<String>>,
    /// Whether the API treats every proof as a replay.
    all_replays: bool,
    /// Whether the token endpoint answers DPoP requests with bearer tokens.
    issue_bearer: bool,
}

const TOKEN_NONCE: &str = "token-nonce-1";
const API_NONCE: &str = "api-nonce-1";

fn dpop_error(
    status: StatusCode,
    scheme_error: &str,
    nonce: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status).header(
        "www-authenticate",
        format!(r#"DPoP algs="ES256", error="{scheme_error}""#),
    );
    if let Some(nonce) = nonce {
        response = response.header("dpop-nonce", nonce);
    }
    response.body(Full::new(Bytes::from_static(b"no"))).unwrap()
}

/// A client credentials token endpoint that demands a nonce, then binds
/// the token to the proof's key.
async fn token_endpoint(world: Arc<World>) -> TestServer {
    let url = Arc::new(Mutex::new(String::new()));
    let server = TestServer::start({
        let url = url.clone();
        move |n, seen: Seen| {
            let (world, url) = (world.clone(), url.lock().unwrap().clone());
            async move {
                let Some(proof) = seen.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                    world.failures.lock().unwrap().push("token request without a proof".into());
                    return text(StatusCode::BAD_REQUEST, "no proof");
                };
                let proof = match verify(proof, &Method::POST, &url) {
                    Ok(proof) => proof,
                    Err(e) => {
                        world.failures.lock().unwrap().push(format!("token endpoint: {e}"));
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_dpop_proof"}));
                    }
                };
                if proof.ath.is_some() {
                    world.failures.lock().unwrap().push("ath on a token request".into());
                }
                if proof.nonce.as_deref() != Some(TOKEN_NONCE) {
                    let mut response = json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "use_dpop_nonce"}));
                    response.headers_mut().insert("dpop-nonce", TOKEN_NONCE.parse().unwrap());
                    return response;
                }
                let token = format!("dpop-tok-{n}");
                world.bound.lock().unwrap().insert(token.clone(), proof.jkt);
                let token_type = if world.issue_bearer { "Bearer" } else { "DPoP" };
                json(
                    StatusCode::OK,
                    serde_json::json!({"access_token": token, "token_type": token_type, "expires_in": 3600}),
                )
            }
        }
    })
    .await;
    *url.lock().unwrap() = server.url("/token");
    server
}

/// A protected API that verifies every DPoP proof and demands its own nonce.
async fn api(world: Arc<World>) -> TestServer {
    let base = Arc::new(Mutex::new(String::new()));
    let server = TestServer::start({
        let base = base.clone();
        move |_, seen: Seen| {
            let (world, base) = (world.clone(), base.lock().unwrap().clone());
            async move {
                let Some(token) = seen.authorization().and_then(|a| a.strip_prefix("DPoP ")) else {
                    world
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("not DPoP: {:?}", seen.authorization()));
                    return dpop_error(StatusCode::UNAUTHORIZED, "invalid_token", None);
                };
                let Some(proof) = seen.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                    world
                        .failures
                        .lock()
                        .unwrap()
                        .push("API request without a proof".into());
                    return dpop_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", None);
                };
                let proof = match verify(proof, &seen.method, &format!("{base}{}", seen.path)) {
                    Ok(proof) => proof,
                    Err(e) => {
                        world.failures.lock().unwrap().push(format!("API: {e}"));
                        return dpop_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", None);
                    }
                };
                if proof.ath.as_deref() != Some(ath(token).as_str()) {
                    world
                        .failures
                        .lock()
                        .unwrap()
                        .push("ath does not match the token".into());
                    return dpop_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", None);
                }
                if world.bound.lock().unwrap().get(token) != Some(&proof.jkt) {
                    world
                        .failures
                        .lock()
                        .unwrap()
                        .push("the key is not the token's".into());
                    return dpop_error(StatusCode::UNAUTHORIZED, "invalid_token", None);
                }
                if proof.nonce.as_deref() != Some(API_NONCE) {
                    return dpop_error(StatusCode::UNAUTHORIZED, "use_dpop_nonce", Some(API_NONCE));
                }
                if world.all_replays || !world.jtis.lock().unwrap().insert(proof.jti) {
                    return dpop_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", None);
                }
                text(StatusCode::OK, "proved")
            }
        }
    })
    .await;
    *base.lock().unwrap() = format!("http://{}", server.addr);
    server
}

fn cache(tokens: &TestServer, dpop: &Dpop) -> TokenCache {
    let endpoint = TokenEndpoint::builder(tokens.url("/token"), ClientAuth::post("app", "s3cret"))
        .dpop(dpop.clone())
        .build()
        .unwrap();
    TokenCache::new(ClientCredentialsGrant::new(endpoint))
}

async fn call(
    cache: &TokenCache,
    api: &TestServer,
    method: Method,
    path: &str,
) -> Response<Full<Bytes>> {
    let request = Request::builder()
        .method(method)
        .uri(api.url(path))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = AuthLayer::new(cache.clone())
        .layer(http_client())
        .oneshot(request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, Full::new(body))
}

#[tokio::test]
async fn nonce_demands_of_the_token_endpoint_and_the_api_are_each_answered_with_one_retry() {
    let world = Arc::new(World::default());
    let tokens = token_endpoint(world.clone()).await;
    let api = api(world.clone()).await;
    let dpop = Dpop::generate().unwrap();
    let cache = cache(&tokens, &dpop);

    let response = call(&cache, &api, Method::POST, "/v1/items?page=2#top").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        tokens.requests(),
        2,
        "the first token request, then one with the nonce"
    );
    assert_eq!(
        api.requests(),
        2,
        "the first call, then one with the API's nonce"
    );
    assert_eq!(cache.stats().retries, 1);
    assert_eq!(
        cache.stats().rejections,
        0,
        "a nonce demand does not reject the token"
    );

    // Both nonces are kept (per origin): later calls are proved at once.
    for method in [Method::GET, Method::DELETE] {
        let response = call(&cache, &api, method, "/v1/items/7").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(api.requests(), 4);
    assert_eq!(tokens.requests(), 2);
    assert_eq!(world.failures.lock().unwrap().as_slice(), [] as [String; 0]);
    // The token was bound to our key, and never sent as Bearer.
    assert_eq!(world.bound.lock().unwrap()["dpop-tok-2"], dpop.thumbprint());
    assert!(
        api.seen()
            .iter()
            .all(|s| s.authorization() == Some("DPoP dpop-tok-2"))
    );
    let proofs: HashSet<String> = api
        .seen()
        .iter()
        .map(|s| s.headers["dpop"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(proofs.len(), 4, "a new proof for every request");
}

#[tokio::test]
async fn a_refused_proof_is_retried_once_never_in_a_loop() {
    let world = Arc::new(World {
        all_replays: true,
        ..World::default()
    });
    let tokens = token_endpoint(world.clone()).await;
    let api = api(world.clone()).await;
    let dpop = Dpop::generate().unwrap();
    let cache = cache(&tokens, &dpop);
    // The API's nonce first: from then on every call is refused as a replay.
    let response = call(&cache, &api, Method::GET, "/v1/a").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.requests(),
        2,
        "the nonce demand, then one refused retry"
    );
    for round in 1..=3 {
        let response = call(&cache, &api, Method::GET, "/v1/a").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenges = response
            .extensions()
            .get::<Challenges>()
            .expect("challenges");
        assert_eq!(
            challenges.of("DPoP").unwrap().error(),
            Some("invalid_dpop_proof")
        );
        assert_eq!(api.requests(), 2 + 2 * round, "two attempts per call");
    }
    assert_eq!(
        tokens.requests(),
        2,
        "a refused proof does not cost a token"
    );
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_token_request_is_refused_not_sent_unbound() {
    let world = Arc::new(World {
        issue_bearer: true,
        ..World::default()
    });
    let tokens = token_endpoint(world.clone()).await;
    let api = api(world.clone()).await;
    let cache = cache(&tokens, &Dpop::generate().unwrap());
    let request = Request::get(api.url("/v1/a"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = AuthLayer::new(cache)
        .layer(http_client())
        .oneshot(request)
        .await
        .unwrap_err();
    let error = error.downcast::<tower_bearer::Error>().unwrap();
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(error.to_string().contains("not DPoP-bound"), "{error}");
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_dpop_token_without_a_key_is_never_sent() {
    let api = api(Arc::new(World::default())).await;
    let cache = TokenCache::builder(source::from_fn(|_| async {
        Ok(Token::new("dpop-bound").with_token_type(TokenType::DPoP))
    }))
    .max_attempts(1)
    .build()
    .unwrap();
    let request = Request::get(api.url("/v1/a"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let error = AuthLayer::new(cache)
        .layer(http_client())
        .oneshot(request)
        .await
        .unwrap_err();
    let error = error.downcast::<tower_bearer::Error>().unwrap();
    assert!(
        error.to_string().contains("never sent as Bearer"),
        "{error}"
    );
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn the_verifier_refuses_what_it_should() {
    // The in-process servers' verifier is what the tests above rely on:
    // check that it refuses a proof for another URI or method, and a
    // tampered one.
    let dpop = Dpop::generate().unwrap();
    let uri: http::Uri = "http://127.0.0.1:1/a".parse().unwrap();
    let proof = dpop.proof(&Method::GET, &uri, Some("t")).unwrap();
    let proof = proof.to_str().unwrap();
    assert!(verify(proof, &Method::GET, "http://127.0.0.1:1/a").is_ok());
    assert!(verify(proof, &Method::POST, "http://127.0.0.1:1/a").is_err());
    assert!(verify(proof, &Method::GET, "http://127.0.0.1:1/b").is_err());
    let mut tampered = proof.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(verify(&tampered, &Method::GET, "http://127.0.0.1:1/a").is_err());
}

/// The oidc-provider peer issues a DPoP-bound token to our key: `token_type`
/// DPoP and `cnf.jkt` our thumbprint, after answering its nonce demand.
#[tokio::test]
async fn the_oidc_provider_peer_binds_its_token_to_our_key_after_one_nonce_retry() {
    let peer = support::peer::Peer::start(&[("AT_FORMAT", "jwt"), ("DPOP_NONCE", "1")]).await;
    let dpop = Dpop::generate().unwrap();
    let endpoint = TokenEndpoint::builder(
        peer.token_url(),
        ClientAuth::basic("peer-client", "peer-client-secret"),
    )
    .dpop(dpop.clone())
    .build()
    .unwrap();
    let cache = TokenCache::new(ClientCredentialsGrant::new(endpoint));
    let token = cache.token().await.expect("a DPoP-bound token");
    assert_eq!(token.token_type(), &TokenType::DPoP);
    let claims = decode(token.access_token().secret().split('.').nth(1).unwrap()).unwrap();
    assert_eq!(claims["cnf"]["jkt"], dpop.thumbprint());
    assert_eq!(peer.log_lines("token ok client_credentials"), 1);
    let errors = peer.log_lines("use_dpop_nonce");
    assert_eq!(
        errors,
        1,
        "one nonce demand, answered once:\n{}",
        peer.log()
    );
}

/// DPoP over a tonic channel: the generated client is given the server's
/// origin (`with_origin`), so the request URI the layer sees is absolute
/// and the proof's `htu` names the method's full URL.
#[cfg(feature = "tonic")]
mod over_tonic {
    use super::*;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic::{Code, Status};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tower_bearer::tonic::AuthChannel;

    const CHECK: &str = "/grpc.health.v1.Health/Check";

    /// A gRPC health server whose interceptor verifies each call's DPoP
    /// proof for `POST {base}/grpc.health.v1.Health/Check`, its `ath` and
    /// its key against the token's binding, and demands its own nonce.
    /// Returns its base URL and the number of calls it saw.
    async fn grpc_api(world: Arc<World>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let check = {
            let (base, calls) = (base.clone(), calls.clone());
            move |req: tonic::Request<()>| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let header = |name: &str| {
                    req.metadata()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let refuse = |why: String| {
                    world.failures.lock().unwrap().push(why);
                    Err(Status::unauthenticated("invalid_dpop_proof"))
                };
                let Some(token) = header("authorization")
                    .and_then(|a| a.strip_prefix("DPoP ").map(str::to_owned))
                else {
                    return refuse(format!("not DPoP: {:?}", header("authorization")));
                };
                let Some(proof) = header("dpop") else {
                    return refuse("gRPC call without a proof".into());
                };
                let proof = match verify(&proof, &Method::POST, &format!("{base}{CHECK}")) {
                    Ok(proof) => proof,
                    Err(e) => return refuse(format!("gRPC API: {e}")),
                };
                if proof.ath.as_deref() != Some(ath(&token).as_str()) {
                    return refuse("ath does not match the token".into());
                }
                if world.bound.lock().unwrap().get(&token) != Some(&proof.jkt) {
                    return refuse("the key is not the token's".into());
                }
                if proof.nonce.as_deref() != Some(API_NONCE) {
                    // As a gRPC server says it: UNAUTHENTICATED, with the
                    // challenge and the nonce in the (trailers-only) headers.
                    let mut status = Status::unauthenticated("use_dpop_nonce");
                    let metadata = status.metadata_mut();
                    metadata.insert(
                        "www-authenticate",
                        r#"DPoP algs="ES256", error="use_dpop_nonce""#.parse().unwrap(),
                    );
                    metadata.insert("dpop-nonce", API_NONCE.parse().unwrap());
                    return Err(status);
                }
                Ok(req)
            }
        };
        let service = tonic::service::interceptor::InterceptedService::new(health, check);
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (base, calls)
    }

    #[tokio::test]
    async fn a_generated_client_given_its_origin_sends_dpop_proofs_for_the_full_url() {
        let world = Arc::new(World::default());
        let tokens = token_endpoint(world.clone()).await;
        let (base, calls) = grpc_api(world.clone()).await;
        let dpop = Dpop::generate().unwrap();
        let cache = cache(&tokens, &dpop);
        let channel = Endpoint::from_shared(base.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::with_origin(
            AuthChannel::new(channel, cache.clone()),
            base.parse().unwrap(),
        );

        for _ in 0..3 {
            client
                .check(HealthCheckRequest::default())
                .await
                .expect("a proved call");
        }
        assert_eq!(world.failures.lock().unwrap().as_slice(), [] as [String; 0]);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "the first call, once more with the API's nonce, then two proved at once"
        );
        assert_eq!(cache.stats().retries, 1);
        assert_eq!(
            cache.stats().rejections,
            0,
            "a nonce demand keeps the token"
        );
        assert_eq!(
            tokens.requests(),
            2,
            "the first token request, then one with the nonce"
        );
        assert_eq!(world.bound.lock().unwrap()["dpop-tok-2"], dpop.thumbprint());
    }

    #[tokio::test]
    async fn a_generated_client_without_an_origin_gets_an_error_and_sends_no_proof() {
        // tonic's default origin leaves the URI a bare path: no `htu` can be
        // made, and the call fails before anything reaches the API.
        let world = Arc::new(World::default());
        let tokens = token_endpoint(world.clone()).await;
        let (base, calls) = grpc_api(world.clone()).await;
        let dpop = Dpop::generate().unwrap();
        let channel = Endpoint::from_shared(base)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(AuthChannel::new(channel, cache(&tokens, &dpop)));

        let status = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        // Permanent, so UNAUTHENTICATED, with the reason in the message;
        // the error itself is the status's source.
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status.message(),
            "no token can be sent with this request: DPoP needs the request's \
             absolute URI (scheme and host) for its proof"
        );
        let error = std::error::Error::source(&status)
            .and_then(|e| e.downcast_ref::<tower_bearer::Error>())
            .expect("the token error as the source");
        assert_eq!(error.kind(), ErrorKind::Unsendable);
        assert!(error.is_permanent());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
