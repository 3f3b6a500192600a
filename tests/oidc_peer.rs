//! Interoperability with a real authorization server: panva's oidc-provider,
//! run by the crate's harness in `tests/peers/oidc-provider` (client ids,
//! secrets, users and error bodies are in its README). Each test starts its
//! own peer on a free loopback port, with the lifetimes it needs, and runs on
//! real time: the peer is another process with its own clock.
#![cfg(feature = "hyper-client")]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::http_client;
use support::peer::Peer;
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, PasswordGrant, RefreshTokenGrant, TokenEndpoint,
    TokenEndpointBuilder,
};
use tower_bearer::{AuthLayer, ErrorKind, OAuthErrorCode, RefreshToken, TokenCache};

const CLIENT: &str = "peer-client";
const SECRET: &str = "peer-client-secret";
const SPECIAL_CLIENT: &str = "peer special:client";
const SPECIAL_SECRET: &str = "s3cr3t with space:colon/slash+plus%percent&amp=eq";

fn endpoint(peer: &Peer, auth: ClientAuth) -> TokenEndpointBuilder {
    TokenEndpoint::builder(peer.token_url(), auth)
}

/// GETs `path` on the peer's protected resource through `AuthLayer`, and
/// returns the status and the JSON body.
async fn call_api(peer: &Peer, cache: &TokenCache, path: &str) -> (StatusCode, serde_json::Value) {
    let client = AuthLayer::new(cache.clone()).layer(http_client());
    let rsp = client
        .oneshot(
            Request::get(peer.url(path))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// Whether the peer still considers `refresh_token` active (RFC 7662
/// introspection, as the client that owns it).
async fn is_active(peer: &Peer, refresh_token: &RefreshToken) -> bool {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", refresh_token.secret())
        .finish();
    let request = Request::post(peer.url("/token/introspection"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            format!("Basic {}", base64_basic(CLIENT, SECRET)),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = http_client().request(request).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["active"] == true
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

/// Waits, on the peer's real clock, until it reports `refresh_token`
/// expired.
async fn until_expired(peer: &Peer, refresh_token: &RefreshToken) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_active(peer, refresh_token).await {
        assert!(Instant::now() < deadline, "the refresh token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === 1, 2: client credentials and client authentication ===

#[tokio::test]
async fn peer_client_credentials_with_basic_and_post_read_the_api() {
    let peer = Peer::start(&[]).await;
    for auth in [
        ClientAuth::basic(CLIENT, SECRET),
        ClientAuth::post(CLIENT, SECRET),
    ] {
        let method = auth.method();
        let grant =
            ClientCredentialsGrant::new(endpoint(&peer, auth).scope("api:read").build().unwrap());
        let cache = TokenCache::new(grant.clone());

        let (status, body) = call_api(&peer, &cache, "/api/read").await;

        assert_eq!(status, StatusCode::OK, "{method}: {body}");
        assert_eq!(body["client_id"], CLIENT, "{method}");
        assert_eq!(body["scope"], "api:read", "{method}");
        assert_eq!(grant.stats().requests, 1, "{method}");
    }
    assert_eq!(
        peer.log_lines_at_least("token ok client_credentials", 2)
            .await,
        2
    );
}

#[tokio::test]
async fn peer_special_client_secret_with_reserved_characters_authenticates_with_basic() {
    let peer = Peer::start(&[]).await;
    let grant = ClientCredentialsGrant::new(
        endpoint(&peer, ClientAuth::basic(SPECIAL_CLIENT, SPECIAL_SECRET))
            .scope("api:read")
            .build()
            .unwrap(),
    );
    let cache = TokenCache::new(grant.clone());

    let (status, body) = call_api(&peer, &cache, "/api/read").await;

    assert_eq!(status, StatusCode::OK, "{body}\n{}", peer.log());
    assert_eq!(body["client_id"], SPECIAL_CLIENT);
}

// === 3: password grant, rotation under continuous traffic ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_password_grant_rotates_the_refresh_token_at_every_refresh_under_traffic() {
    const AT_TTL: u64 = 2;
    let peer = Peer::start(&[("AT_TTL", "2")]).await;
    let grant = PasswordGrant::new(
        endpoint(&peer, ClientAuth::basic(CLIENT, SECRET))
            .build()
            .unwrap(),
        "alice",
        "alice-password",
    );
    let cache = TokenCache::new(grant.clone());
    let client = AuthLayer::new(cache.clone()).layer(http_client());

    // Continuous traffic for more than 5 token lifetimes: 4 callers, each
    // calling again as soon as its previous call returned.
    let traffic = Duration::from_secs(5 * AT_TTL + 1);
    let end = Instant::now() + traffic;
    let mut callers = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let url = peer.url("/api/whoami");
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while Instant::now() < end {
                let rsp = client
                    .clone()
                    .oneshot(Request::get(&url).body(Full::<Bytes>::default()).unwrap())
                    .await;
                match rsp {
                    Ok(rsp) if rsp.status() == StatusCode::OK => ok += 1,
                    Ok(rsp) => failed.push(rsp.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    let mut calls = 0;
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed calls: {failed:?}\n{}",
            peer.log()
        );
        calls += ok;
    }

    let stats = grant.stats();
    let log = peer.log();
    eprintln!(
        "{calls} calls in {traffic:?}; {stats:?}; {:?}",
        cache.stats()
    );
    assert!(calls > 100, "only {calls} calls");
    assert_eq!(stats.primary, 1, "{stats:?}\n{log}");
    assert_eq!(stats.fallbacks, 0, "{stats:?}\n{log}");
    // Refreshed about every 0.8 s: well over one refresh per lifetime.
    assert!(stats.refreshes >= 5, "{stats:?}");
    // Every refresh rotated the refresh token, and none was refused: the
    // server revokes the whole grant on any reuse.
    assert_eq!(stats.rotations, stats.refreshes, "{stats:?}");
    assert_eq!(
        peer.log_lines_at_least("token ok refresh_token", stats.refreshes as usize)
            .await,
        stats.refreshes as usize,
        "{log}"
    );
    assert_eq!(peer.log_lines("token error"), 0, "{log}");
}

// === 4: a bad client secret ===

#[tokio::test]
async fn peer_bad_client_secret_is_a_typed_invalid_client_after_one_request() {
    let peer = Peer::start(&[]).await;
    for auth in [
        ClientAuth::basic(CLIENT, "wrong"),
        ClientAuth::post(CLIENT, "wrong"),
    ] {
        let grant = ClientCredentialsGrant::new(endpoint(&peer, auth).build().unwrap());
        let cache = TokenCache::new(grant.clone());

        let err = cache.token().await.unwrap_err();

        let oauth = err.oauth_error().expect("an OAuth error");
        assert_eq!(oauth.code(), &OAuthErrorCode::InvalidClient);
        assert_eq!(oauth.status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(oauth.description(), Some("client authentication failed"));
        assert!(err.is_permanent());
        assert!(!err.to_string().contains("wrong"), "{err}");
        assert_eq!(grant.stats().requests, 1);
        assert_eq!(cache.stats().token_requests, 1);
    }
    assert_eq!(
        peer.log_lines_at_least("token error", 2).await,
        2,
        "{}",
        peer.log()
    );
}

// === 5: an expired refresh token ===

#[tokio::test]
async fn peer_expired_refresh_token_falls_back_to_the_password_grant() {
    let peer = Peer::start(&[("RT_TTL", "1")]).await;
    let grant = PasswordGrant::new(
        endpoint(&peer, ClientAuth::basic(CLIENT, SECRET))
            .build()
            .unwrap(),
        "alice",
        "alice-password",
    );
    let cache = TokenCache::new(grant.clone());
    let first = cache.token().await.unwrap();
    let refresh_token = first.refresh_token().unwrap().clone();
    until_expired(&peer, &refresh_token).await;

    // As after a 401: the cache refreshes, the refresh token is refused,
    // the password grant follows in the same attempt.
    assert!(cache.invalidate(&first));
    let second = cache.token().await.unwrap();

    assert_ne!(second.access_token(), first.access_token());
    assert_ne!(second.refresh_token(), Some(&refresh_token));
    let stats = grant.stats();
    assert_eq!(
        (stats.primary, stats.refreshes, stats.fallbacks),
        (2, 1, 1),
        "{stats:?}"
    );
    assert_eq!(cache.stats().token_requests, 2);
    assert_eq!(
        peer.log_lines_at_least("refresh token is expired", 1).await,
        1,
        "{}",
        peer.log()
    );
    let (status, body) = call_api(&peer, &cache, "/api/whoami").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], "alice");
}

#[tokio::test]
async fn peer_expired_refresh_token_without_primary_grant_is_a_typed_invalid_grant() {
    let peer = Peer::start(&[("RT_TTL", "1")]).await;
    let endpoint = endpoint(&peer, ClientAuth::basic(CLIENT, SECRET))
        .build()
        .unwrap();
    let login = PasswordGrant::new(endpoint.clone(), "alice", "alice-password");
    let cache = TokenCache::new(login.clone());
    cache.token().await.unwrap();
    let refresh_token = login.refresh_token().unwrap();
    until_expired(&peer, &refresh_token).await;

    let grant = RefreshTokenGrant::new(endpoint, refresh_token);
    let cache = TokenCache::new(grant.clone());
    let err = cache.token().await.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::OAuth);
    let oauth = err.oauth_error().unwrap();
    assert_eq!(oauth.code(), &OAuthErrorCode::InvalidGrant);
    assert_eq!(oauth.status(), Some(StatusCode::BAD_REQUEST));
    assert!(err.is_permanent());
    assert_eq!(grant.stats().requests, 1);
    assert!(grant.refresh_token().is_none());
}

#[tokio::test]
async fn peer_refresh_token_grant_rotates_and_reads_the_api() {
    let peer = Peer::start(&[]).await;
    let endpoint = endpoint(&peer, ClientAuth::post(CLIENT, SECRET))
        .build()
        .unwrap();
    let login = PasswordGrant::new(endpoint.clone(), "alice", "alice-password");
    TokenCache::new(login.clone()).token().await.unwrap();
    let original = login.refresh_token().unwrap();

    let grant = RefreshTokenGrant::new(endpoint, original.clone());
    let cache = TokenCache::new(grant.clone());
    let (status, body) = call_api(&peer, &cache, "/api/write").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], "alice");
    let rotated = grant.refresh_token().unwrap();
    assert_ne!(rotated, original);
    assert!(!is_active(&peer, &original).await);
    assert!(is_active(&peer, &rotated).await);
}

// === more of the server's knobs ===

#[tokio::test]
async fn peer_refresh_token_returned_unchanged_is_kept_and_reused() {
    let peer = Peer::start(&[("ROTATE_RT", "never")]).await;
    let grant = PasswordGrant::new(
        endpoint(&peer, ClientAuth::basic(CLIENT, SECRET))
            .build()
            .unwrap(),
        "bob",
        "bob-password",
    );
    let cache = TokenCache::new(grant.clone());
    let first = cache.token().await.unwrap();
    let refresh_token = first.refresh_token().unwrap().clone();

    // A token from a refresh that a rejection caused, rejected in its turn,
    // is replaced after a cooldown (B6): let tokio's clock step over it.
    tokio::time::pause();
    let _clock = support::FrozenClock::freeze().await;
    let mut current = first;
    for _ in 0..2 {
        assert!(cache.invalidate(&current));
        tokio::time::advance(Duration::from_secs(1)).await;
        current = cache.token().await.unwrap();
        assert_eq!(current.refresh_token(), Some(&refresh_token));
    }

    let stats = grant.stats();
    assert_eq!((stats.primary, stats.refreshes, stats.rotations), (1, 2, 0));
    let (status, body) = call_api(&peer, &cache, "/api/whoami").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sub"], "bob");
}

#[tokio::test]
async fn peer_resource_indicator_gets_a_jwt_access_token_for_the_api() {
    let peer = Peer::start(&[]).await;
    let grant = ClientCredentialsGrant::new(
        endpoint(&peer, ClientAuth::basic(CLIENT, SECRET))
            .scope("api:read api:write")
            .resource("urn:peer:api:jwt")
            .build()
            .unwrap(),
    );
    let cache = TokenCache::new(grant.clone());

    let (status, body) = call_api(&peer, &cache, "/api/write").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_format"], "jwt");
    assert_eq!(body["aud"], "urn:peer:api:jwt");
    let token = cache.token().await.unwrap();
    assert_eq!(token.access_token().secret().split('.').count(), 3);
    assert!(token.jwt_expiry().is_some());
}

// === private_key_jwt and client_secret_jwt (RFC 7523) ===

#[cfg(feature = "private-key-jwt")]
mod jwt_client_auth {
    use super::*;
    use support::peer::test_key;
    use tower_bearer::TokenSource;
    use tower_bearer::oauth::ClientAssertionKey;

    const PKJWT_CLIENT: &str = "peer-pkjwt";

    /// The peer's registered ES256 key for `peer-pkjwt`, with its kid.
    fn registered_key() -> ClientAssertionKey {
        let jwks: serde_json::Value =
            serde_json::from_slice(&test_key("peer-pkjwt.public.jwks.json")).unwrap();
        let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
        ClientAssertionKey::from_pem(test_key("peer-pkjwt.private.pem"))
            .unwrap()
            .with_key_id(kid)
    }

    #[tokio::test]
    async fn peer_private_key_jwt_client_credentials_read_the_api_with_a_new_assertion_each_time() {
        let peer = Peer::start(&[]).await;
        let grant = ClientCredentialsGrant::new(
            endpoint(
                &peer,
                ClientAuth::private_key_jwt(PKJWT_CLIENT, registered_key()),
            )
            .scope("api:read")
            .build()
            .unwrap(),
        );
        let cache = TokenCache::new(grant.clone());

        let (status, body) = call_api(&peer, &cache, "/api/read").await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", peer.log());
        assert_eq!(body["client_id"], PKJWT_CLIENT);

        // The peer refuses a `jti` it has seen: three more token requests
        // succeed only if each carries a new assertion.
        for _ in 0..3 {
            let token = grant.fetch(None).await;
            assert!(token.is_ok(), "{:?}\n{}", token.err(), peer.log());
        }
        assert_eq!(grant.stats().requests, 4);
    }

    #[tokio::test]
    async fn peer_private_key_jwt_accepts_the_issuer_as_the_assertion_audience() {
        let peer = Peer::start(&[]).await;
        let auth = ClientAuth::private_key_jwt(PKJWT_CLIENT, registered_key())
            .assertion_audience(peer.base.clone());
        let grant = ClientCredentialsGrant::new(endpoint(&peer, auth).build().unwrap());

        let token = grant.fetch(None).await;

        assert!(token.is_ok(), "{:?}\n{}", token.err(), peer.log());
    }

    #[tokio::test]
    async fn peer_private_key_jwt_with_an_unregistered_key_is_a_typed_invalid_client() {
        let peer = Peer::start(&[]).await;
        let other =
            ClientAssertionKey::from_pem(rcgen::KeyPair::generate().unwrap().serialize_pem())
                .unwrap()
                .with_key_id(registered_key().key_id().unwrap().to_owned());
        let grant = ClientCredentialsGrant::new(
            endpoint(&peer, ClientAuth::private_key_jwt(PKJWT_CLIENT, other))
                .build()
                .unwrap(),
        );

        let error = grant.fetch(None).await.unwrap_err();

        assert_eq!(error.kind(), ErrorKind::OAuth, "{error}");
        assert_eq!(
            error.oauth_error().unwrap().code(),
            &OAuthErrorCode::InvalidClient
        );
        assert!(error.is_permanent());
        assert_eq!(grant.stats().requests, 1);
    }

    // === client_secret_jwt (RFC 7523, OpenID Connect Core §9) ===

    const CSJWT_CLIENT: &str = "peer-csjwt";
    const CSJWT_SECRET: &str = "peer-csjwt-secret-of-at-least-32-bytes";

    #[tokio::test]
    async fn peer_client_secret_jwt_client_credentials_read_the_api_with_a_new_assertion_each_time()
    {
        let peer = Peer::start(&[]).await;
        let grant = ClientCredentialsGrant::new(
            endpoint(
                &peer,
                ClientAuth::client_secret_jwt(CSJWT_CLIENT, CSJWT_SECRET),
            )
            .scope("api:read")
            .build()
            .unwrap(),
        );
        let cache = TokenCache::new(grant.clone());

        let (status, body) = call_api(&peer, &cache, "/api/read").await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", peer.log());
        assert_eq!(body["client_id"], CSJWT_CLIENT);

        // The peer refuses a `jti` it has seen.
        for _ in 0..3 {
            let token = grant.fetch(None).await;
            assert!(token.is_ok(), "{:?}\n{}", token.err(), peer.log());
        }
        assert_eq!(grant.stats().requests, 4);
    }

    #[tokio::test]
    async fn peer_client_secret_jwt_with_the_wrong_secret_is_a_typed_invalid_client_that_quotes_no_secret()
     {
        let peer = Peer::start(&[]).await;
        let wrong = "not-the-registered-secret-but-32-bytes-long";
        let grant = ClientCredentialsGrant::new(
            endpoint(&peer, ClientAuth::client_secret_jwt(CSJWT_CLIENT, wrong))
                .build()
                .unwrap(),
        );

        let error = grant.fetch(None).await.unwrap_err();

        assert_eq!(error.kind(), ErrorKind::OAuth, "{error}");
        assert_eq!(
            error.oauth_error().unwrap().code(),
            &OAuthErrorCode::InvalidClient
        );
        assert!(error.is_permanent());
        assert!(!format!("{error} {error:?}").contains(wrong));
        assert_eq!(grant.stats().requests, 1);
    }
}

// === mutual TLS client authentication (RFC 8705) ===

#[cfg(feature = "https")]
mod mtls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tower_bearer::TokenSource;
    use tower_bearer::oauth::ClientCertificate;

    const MTLS_CLIENT: &str = "peer-mtls";

    /// A peer with its mTLS listener, and the CA it trusts.
    struct MtlsPeer {
        peer: Peer,
        ca: CertifiedIssuer<'static, KeyPair>,
        token_url: String,
    }

    fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// A client certificate with the subject `CN=<name>` from `ca`.
    fn client_certificate(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> ClientCertificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, ca).unwrap();
        ClientCertificate::from_pem(cert.pem(), key.serialize_pem()).unwrap()
    }

    async fn start() -> MtlsPeer {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("oidc_peer_mtls")
            .join(format!(
                "{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = new_ca("tower-bearer peer mTLS CA");
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let peer = Peer::start(&[("MTLS_DIR", dir.to_str().unwrap()), ("MTLS_PORT", &port)]).await;
        MtlsPeer {
            peer,
            token_url: format!("https://127.0.0.1:{port}/token"),
            ca,
        }
    }

    fn grant(peer: &MtlsPeer, certificate: ClientCertificate) -> ClientCredentialsGrant {
        ClientCredentialsGrant::new(
            TokenEndpoint::builder(&peer.token_url, ClientAuth::tls_client_auth(MTLS_CLIENT))
                .add_root_certificate_pem(peer.ca.pem())
                .client_certificate(certificate)
                .scope("api:read")
                .build()
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn peer_tls_client_auth_client_credentials_read_the_api_with_no_secret() {
        let peer = start().await;
        let grant = grant(&peer, client_certificate(&peer.ca, MTLS_CLIENT));
        let cache = TokenCache::new(grant.clone());

        let (status, body) = call_api(&peer.peer, &cache, "/api/read").await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", peer.peer.log());
        assert_eq!(body["client_id"], MTLS_CLIENT);
        assert_eq!(grant.stats().requests, 1);
    }

    #[tokio::test]
    async fn peer_tls_client_auth_with_another_subject_or_another_ca_is_a_typed_invalid_client() {
        let peer = start().await;
        for certificate in [
            client_certificate(&peer.ca, "someone-else"),
            client_certificate(&new_ca("another CA"), MTLS_CLIENT),
        ] {
            let grant = grant(&peer, certificate);
            let error = grant.fetch(None).await.unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::OAuth,
                "{error}\n{}",
                peer.peer.log()
            );
            assert_eq!(
                error.oauth_error().unwrap().code(),
                &OAuthErrorCode::InvalidClient
            );
            assert!(error.is_permanent());
        }
    }
}
