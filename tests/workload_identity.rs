//! Grants for workloads without secrets and for delegation: the JWT-bearer
//! grant (RFC 7523 §2.1), token exchange (RFC 8693) and assertions from a
//! file the platform rotates. Every test runs against an in-process token
//! endpoint that checks what it receives.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::{TestServer, api_server, http_client, json, token_server};
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::token_exchange::{issued_token_type, token_types};
use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, JwtBearerGrant, SecurityToken, SecurityTokenSource,
    TOKEN_EXCHANGE, TokenEndpoint, TokenExchangeGrant, TokenFile,
};
use tower_bearer::{AuthLayer, Error, ErrorKind, OAuthErrorCode, TokenCache};

fn endpoint(server: &TestServer, auth: ClientAuth) -> tower_bearer::oauth::TokenEndpointBuilder {
    TokenEndpoint::builder(server.url("/token"), auth)
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsigned JWT-shaped token with this `exp` and a marker.
fn jwt(exp: u64, marker: &str) -> String {
    format!(
        "{}.{}.sig-{marker}",
        B64.encode(r#"{"alg":"RS256"}"#),
        B64.encode(json!({"exp": exp, "sub": marker}).to_string())
    )
}

/// A token endpoint that issues `at-N` to any request with a form, and
/// keeps what it saw.
#[cfg(feature = "private-key-jwt")]
async fn recording_server() -> TestServer {
    TestServer::start(|n, _seen| async move {
        json(
            StatusCode::OK,
            json!({"access_token": format!("at-{n}"), "token_type": "Bearer", "expires_in": 3600}),
        )
    })
    .await
}

#[cfg(feature = "private-key-jwt")]
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn jwt_bearer_signed_assertions_carry_the_rfc_7523_claims_and_verify() {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use tower_bearer::oauth::{ClientAssertionKey, JWT_BEARER};

    let server = recording_server().await;
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = ClientAssertionKey::from_pem(pair.serialize_pem())
        .unwrap()
        .with_key_id("k1");
    let grant = JwtBearerGrant::signed(
        endpoint(&server, ClientAuth::none("svc"))
            .scope("api:read")
            .build()
            .unwrap(),
        key,
        "svc",
        "alice@example.com",
    )
    .audience("https://idp.example");
    let cache = TokenCache::new(grant.clone());
    assert_eq!(cache.token().await.unwrap().access_token().secret(), "at-1");
    let token = cache.token().await.unwrap();
    cache.invalidate(&token);
    cache.token().await.unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let mut jtis = Vec::new();
    for seen in &seen {
        let form = seen.form();
        assert_eq!(form["grant_type"], JWT_BEARER);
        assert_eq!(form["scope"], "api:read");
        assert_eq!(form["client_id"], "svc");
        let assertion = &form["assertion"];
        let (signed, signature) = assertion.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key_raw())
            .verify(signed.as_bytes(), &B64.decode(signature).unwrap())
            .expect("the assertion verifies with the public key");
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(assertion.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "k1");
        let claims = claims(assertion);
        assert_eq!(claims["iss"], "svc");
        assert_eq!(claims["sub"], "alice@example.com");
        assert_eq!(claims["aud"], "https://idp.example");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(iat.abs_diff(unix_now()) <= 5 && exp == iat + 60, "{claims}");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_ne!(jtis[0], jtis[1], "a jti is never reused");
    assert_eq!(grant.stats().requests, 2);
    assert!(
        grant.store_key().as_str()
            != JwtBearerGrant::new(grant.endpoint().clone(), SecurityToken::new("x"))
                .store_key()
                .as_str()
    );
}

#[tokio::test]
async fn jwt_bearer_takes_its_assertion_from_a_source_and_a_refused_one_is_final() {
    let server = TestServer::start(|_n, seen| async move {
        match seen.form().get("assertion").map(String::as_str) {
            Some("good-assertion") => json(
                StatusCode::OK,
                json!({"access_token": "at-good", "token_type": "bearer", "expires_in": 60}),
            ),
            _ => json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "assertion expired"}),
            ),
        }
    })
    .await;
    let good = JwtBearerGrant::new(
        endpoint(&server, ClientAuth::none("wl")).build().unwrap(),
        SecurityToken::new("good-assertion"),
    );
    let cache = TokenCache::new(good);
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "at-good"
    );

    let bad = JwtBearerGrant::new(
        endpoint(&server, ClientAuth::none("wl")).build().unwrap(),
        SecurityToken::new("stale-assertion"),
    );
    let error = TokenCache::new(bad).token().await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(
        error.oauth_error().unwrap().code(),
        &OAuthErrorCode::InvalidGrant
    );
    assert_eq!(server.requests(), 2, "a refused assertion is not retried");
    assert!(!format!("{error} {error:?}").contains("stale-assertion"));
}

/// A token-exchange endpoint: `ex-<subject>` for a subject token, errors
/// for the subjects named after them, after `delay`.
async fn exchange_server(delay: Duration) -> TestServer {
    TestServer::start(move |_n, seen| async move {
        tokio::time::sleep(delay).await;
        let form = seen.form();
        if form.get("grant_type").map(String::as_str) != Some(TOKEN_EXCHANGE) {
            return json(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            );
        }
        let subject = form.get("subject_token").cloned().unwrap_or_default();
        let error = match subject.as_str() {
            "bad-grant" => Some("invalid_grant"),
            "bad-target" => Some("invalid_target"),
            "bad-type" => Some("unsupported_token_type"),
            _ => None,
        };
        if let Some(error) = error {
            return json(StatusCode::BAD_REQUEST, json!({"error": error}));
        }
        match form.get("requested_token_type").map(String::as_str) {
            Some(token_types::ID_TOKEN) => json(
                StatusCode::OK,
                json!({
                    "access_token": format!("id-of-{subject}"),
                    "issued_token_type": token_types::ID_TOKEN,
                    "token_type": "N_A",
                    "expires_in": 3600,
                }),
            ),
            _ => json(
                StatusCode::OK,
                json!({
                    "access_token": format!("ex-of-{subject}"),
                    "issued_token_type": token_types::ACCESS_TOKEN,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }),
            ),
        }
    })
    .await
}

#[tokio::test]
async fn token_exchange_sends_the_rfc_8693_parameters() {
    let server = exchange_server(Duration::ZERO).await;
    let grant = TokenExchangeGrant::new(
        endpoint(&server, ClientAuth::basic("backend", "backend-secret"))
            .scope("orders:read")
            .audience("https://orders.example")
            .resource("https://orders.example/v1")
            .build()
            .unwrap(),
        SecurityToken::new("user-token"),
        token_types::ACCESS_TOKEN,
    )
    .actor(SecurityToken::new("backend-token"), token_types::JWT)
    .requested_token_type(token_types::ACCESS_TOKEN);
    let token = TokenCache::new(grant).token().await.unwrap();
    assert_eq!(token.access_token().secret(), "ex-of-user-token");
    assert_eq!(issued_token_type(&token), Some(token_types::ACCESS_TOKEN));

    let seen = server.seen();
    let form = seen[0].form();
    for (name, value) in [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", "user-token"),
        ("subject_token_type", token_types::ACCESS_TOKEN),
        ("actor_token", "backend-token"),
        ("actor_token_type", token_types::JWT),
        ("requested_token_type", token_types::ACCESS_TOKEN),
        ("scope", "orders:read"),
        ("audience", "https://orders.example"),
        ("resource", "https://orders.example/v1"),
    ] {
        assert_eq!(form.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert!(seen[0].authorization().unwrap().starts_with("Basic "));
}

#[tokio::test]
async fn token_exchange_errors_are_typed_and_not_retried() {
    let server = exchange_server(Duration::ZERO).await;
    for (subject, code) in [
        ("bad-grant", OAuthErrorCode::InvalidGrant),
        ("bad-target", OAuthErrorCode::InvalidTarget),
        ("bad-type", OAuthErrorCode::UnsupportedTokenType),
    ] {
        let before = server.requests();
        let grant = TokenExchangeGrant::new(
            endpoint(&server, ClientAuth::basic("backend", "backend-secret"))
                .build()
                .unwrap(),
            SecurityToken::new(subject),
            token_types::ACCESS_TOKEN,
        );
        let error = TokenCache::new(grant).token().await.unwrap_err();
        assert!(error.is_permanent(), "{subject}: {error}");
        assert_eq!(error.oauth_error().unwrap().code(), &code, "{subject}");
        assert_eq!(server.requests(), before + 1, "{subject} was retried");
    }
}

#[tokio::test]
async fn token_exchange_n_a_tokens_are_accepted_only_when_asked_for_and_never_sent() {
    let server = exchange_server(Duration::ZERO).await;
    let id_tokens = TokenCache::new(
        TokenExchangeGrant::new(
            endpoint(&server, ClientAuth::basic("backend", "backend-secret"))
                .build()
                .unwrap(),
            SecurityToken::new("user-token"),
            token_types::ACCESS_TOKEN,
        )
        .requested_token_type(token_types::ID_TOKEN),
    );
    let token = id_tokens.token().await.unwrap();
    assert_eq!(token.access_token().secret(), "id-of-user-token");
    assert_eq!(token.token_type().scheme(), "N_A");
    assert_eq!(issued_token_type(&token), Some(token_types::ID_TOKEN));
    let error = id_tokens.header_value().await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.kind(), ErrorKind::Unsendable);
    assert!(
        error.to_string().contains("N_A"),
        "the reason is in the display: {error}"
    );

    // Through the layer: the call fails, and nothing reaches the API.
    let api = api_server(|_| true).await;
    let service = AuthLayer::new(id_tokens.clone()).layer(http_client());
    let error = service
        .oneshot(
            Request::get(api.url("/"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let error = error
        .downcast_ref::<Error>()
        .expect("a tower_bearer::Error");
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.kind(), ErrorKind::Unsendable);
    assert!(chain(error).contains("N_A"), "{}", chain(error));
    assert_eq!(api.requests(), 0);

    // Not asked for: an invalid response.
    let server = TestServer::start(|_n, _seen| async {
        json(
            StatusCode::OK,
            json!({"access_token": "what", "token_type": "N_A", "expires_in": 60}),
        )
    })
    .await;
    let error = TokenCache::new(TokenExchangeGrant::new(
        endpoint(&server, ClientAuth::basic("backend", "backend-secret"))
            .build()
            .unwrap(),
        SecurityToken::new("user-token"),
        token_types::ACCESS_TOKEN,
    ))
    .token()
    .await
    .unwrap_err();
    assert_eq!(
        error.kind(),
        tower_bearer::ErrorKind::InvalidResponse,
        "{error}"
    );
}

#[tokio::test]
async fn token_exchange_of_another_caches_token_follows_its_refresh() {
    // Cache B exchanges cache A's token. 100 concurrent callers on B cause
    // one exchange (and one token request at A); once A has a new token,
    // B's next exchange sends it.
    let tokens = token_server(3600).await;
    let a = TokenCache::new(ClientCredentialsGrant::new(
        endpoint(&tokens, ClientAuth::basic("front", "front-secret"))
            .build()
            .unwrap(),
    ));
    let exchanges = exchange_server(Duration::from_millis(50)).await;
    let b = TokenCache::new(TokenExchangeGrant::new(
        endpoint(&exchanges, ClientAuth::basic("backend", "backend-secret"))
            .build()
            .unwrap(),
        a.clone(),
        token_types::ACCESS_TOKEN,
    ));
    let calls = (0..100).map(|_| {
        let b = b.clone();
        tokio::spawn(async move { b.token().await })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(
            call.unwrap().unwrap().access_token().secret(),
            "ex-of-tok-1"
        );
    }
    assert_eq!((tokens.requests(), exchanges.requests()), (1, 1));

    // A refreshes (its token was rejected somewhere); B's next exchange
    // carries A's new token.
    a.invalidate(&a.token().await.unwrap());
    b.invalidate(&b.token().await.unwrap());
    assert_eq!(
        b.token().await.unwrap().access_token().secret(),
        "ex-of-tok-2"
    );
    let seen = exchanges.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].form()["subject_token"], "tok-2");
    assert_eq!(tokens.requests(), 2);
}

/// A folder laid out as the kubelet lays out a projected token: `token`
/// → `..data/token`, `..data` → `..<timestamp>`, rotated by writing a new
/// timestamped folder and swapping the `..data` link atomically.
struct ProjectedVolume {
    dir: PathBuf,
    generation: usize,
}

impl ProjectedVolume {
    fn new(test: &str, first: &str) -> ProjectedVolume {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("workload_identity")
            .join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = ProjectedVolume { dir, generation: 0 };
        volume.rotate(first);
        std::os::unix::fs::symlink("..data/token", volume.dir.join("token")).unwrap();
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn rotate(&mut self, value: &str) {
        self.generation += 1;
        let name = format!("..2026_11_30_{:04}", self.generation);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("token"), value).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            let old = format!("..2026_11_30_{:04}", self.generation - 1);
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_rotated_by_symlink_swap_mid_traffic_causes_no_failed_call() {
    // The token server accepts only the two newest assertions (as an issuer
    // that revokes superseded ones would), and issues 1-second tokens, so
    // that refreshes happen throughout; the file is rotated every 300 ms.
    let valid: Arc<Mutex<Vec<String>>> = Arc::default();
    let server = {
        let valid = valid.clone();
        TestServer::start(move |n, seen| {
            let valid = valid.clone();
            async move {
                let assertion = seen.form().get("assertion").cloned().unwrap_or_default();
                let valid = valid.lock().unwrap();
                if valid.iter().rev().take(2).any(|v| *v == assertion) {
                    json(
                        StatusCode::OK,
                        json!({"access_token": format!("at-{n}"), "token_type": "bearer", "expires_in": 1}),
                    )
                } else {
                    json(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
                }
            }
        })
        .await
    };
    let first = jwt(unix_now() + 3600, "g1");
    valid.lock().unwrap().push(first.clone());
    let mut volume = ProjectedVolume::new("rotate", &first);
    let grant = JwtBearerGrant::new(
        endpoint(&server, ClientAuth::none("wl")).build().unwrap(),
        TokenFile::new(volume.path()),
    );
    let cache = TokenCache::new(grant);
    let api = api_server(|token| token.starts_with("at-")).await;
    let service = AuthLayer::new(cache).layer(http_client());

    let traffic = {
        let (service, url) = (service.clone(), api.url("/"));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let end = tokio::time::Instant::now() + Duration::from_millis(2500);
            while tokio::time::Instant::now() < end {
                let request = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                match service.clone().oneshot(request).await {
                    Ok(response) if response.status() == StatusCode::OK => ok += 1,
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(error) => failed.push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };
    for g in 2..=8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = jwt(unix_now() + 3600, &format!("g{g}"));
        valid.lock().unwrap().push(next.clone());
        volume.rotate(&next);
    }
    let (ok, failed) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed calls: {failed:?}",
        failed.len()
    );
    assert!(ok > 100, "{ok}");
    let sent: std::collections::BTreeSet<String> = server
        .seen()
        .iter()
        .filter_map(|s| s.form().get("assertion").cloned())
        .collect();
    assert!(
        sent.len() >= 3,
        "the rotated file was not read again: {} assertions",
        sent.len()
    );
    assert!(server.requests() >= 3, "{}", server.requests());
}

#[tokio::test]
async fn token_file_keeps_the_last_good_value_until_its_exp_and_never_presents_an_expired_one() {
    let exp = unix_now() + 2;
    let value = jwt(exp, "short");
    let volume = ProjectedVolume::new("deleted", &value);
    let file = TokenFile::new(volume.path());
    assert_eq!(file.security_token().await.unwrap().secret(), value);

    // Gone (a rotation's brief gap, or deleted): the last good value, while
    // its exp has not passed.
    remove(&volume.path());
    assert_eq!(file.security_token().await.unwrap().secret(), value);
    while unix_now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = file.security_token().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        !format!("{} {error:?}", chain(&error)).contains("sig-short"),
        "{error:?}"
    );

    // A file that holds an expired JWT is not presented either.
    std::fs::write(volume.dir.join("expired"), jwt(unix_now() - 10, "old")).unwrap();
    let error = TokenFile::new(volume.dir.join("expired"))
        .security_token()
        .await
        .unwrap_err();
    assert!(chain(&error).contains("expired"), "{}", chain(&error));

    // Empty, or not there at all: transient errors naming the path.
    std::fs::write(volume.dir.join("empty"), "\n").unwrap();
    for name in ["empty", "missing"] {
        let error = TokenFile::new(volume.dir.join(name))
            .security_token()
            .await
            .unwrap_err();
        assert!(
            error.is_transient() && chain(&error).contains(name),
            "{}",
            chain(&error)
        );
    }
    assert!(format!("{file:?}").contains("token"));
}

#[tokio::test]
async fn token_file_is_read_again_when_it_changes() {
    let volume_first = jwt(unix_now() + 3600, "one");
    let mut volume = ProjectedVolume::new("changes", &volume_first);
    let file = TokenFile::new(volume.path());
    assert_eq!(file.security_token().await.unwrap().secret(), volume_first);
    let second = jwt(unix_now() + 3600, "two");
    volume.rotate(&second);
    assert_eq!(file.security_token().await.unwrap().secret(), second);
}

#[test]
fn workload_grants_store_keys_never_name_another_grants_token() {
    let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("svc"))
        .build()
        .unwrap();
    let password =
        tower_bearer::oauth::PasswordGrant::new(endpoint.clone(), "alice", "pw").store_key();
    let jwt = JwtBearerGrant::new(endpoint.clone(), SecurityToken::new("a"))
        .subject("alice")
        .store_key();
    let exchange = |requested: Option<&str>| {
        let grant =
            TokenExchangeGrant::new(endpoint.clone(), SecurityToken::new("s"), token_types::JWT)
                .subject_name("alice");
        match requested {
            Some(t) => grant.requested_token_type(t),
            None => grant,
        }
        .store_key()
    };
    let keys = [
        password,
        jwt,
        exchange(None),
        exchange(Some(token_types::ACCESS_TOKEN)),
        exchange(Some(token_types::ID_TOKEN)),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
