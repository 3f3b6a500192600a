//! HTTPS token endpoints end to end, through the built-in transport
//! (hyper-util + hyper-rustls with the ring provider): a TLS token server on
//! 127.0.0.1 whose certificate comes from a private CA made for the test.
#![cfg(feature = "https")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::pki::Pki;
use support::{api_server, settle_until, token_json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tower::{Layer, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, ErrorKind, TokenCache, TokenSource};

/// A private certificate authority made for the test, with a server
/// certificate it issued for `127.0.0.1` and `localhost`.
fn private_ca() -> Pki {
    Pki::new("tower-bearer test CA")
}

/// A token endpoint over TLS (HTTP/2 or HTTP/1.1 by ALPN) that issues
/// `tok-1`, `tok-2`, … and records the HTTP version of each request.
struct TlsTokenServer {
    url: String,
    requests: Arc<AtomicUsize>,
    handshakes_failed: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<Version>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn tls_token_server(pki: &Pki) -> TlsTokenServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.server_cert.clone()],
            PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let handshakes_failed = Arc::new(AtomicUsize::new(0));
    let versions = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let (requests, handshakes_failed, versions) = (
            requests.clone(),
            handshakes_failed.clone(),
            versions.clone(),
        );
        async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, requests, handshakes_failed, versions) = (
                    acceptor.clone(),
                    requests.clone(),
                    handshakes_failed.clone(),
                    versions.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        handshakes_failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            versions.lock().unwrap().push(req.version());
                            let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let rsp = token_json(&format!("tok-{n}"), 3600);
                            std::future::ready(Ok::<_, std::convert::Infallible>(rsp))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    });
    TlsTokenServer {
        url,
        requests,
        handshakes_failed,
        versions,
        _task: task,
    }
}

#[tokio::test]
async fn b9_an_https_token_endpoint_with_a_private_ca_serves_tokens_over_http2() {
    let pki = private_ca();
    let server = tls_token_server(&pki).await;
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(server.url.clone(), ClientAuth::basic("client", "secret"))
            .add_root_certificate_pem(pki.ca_pem())
            .build()
            .unwrap(),
    );
    let cache = TokenCache::new(grant);
    let api = api_server(|token| token == "tok-1").await;
    let client = AuthLayer::new(cache.clone()).layer(support::http_client());

    let request = Request::get(api.url("/items"))
        .body(http_body_util::Full::default())
        .unwrap();
    let (status, body) = support::read_response(client.oneshot(request).await.unwrap()).await;

    assert_eq!((status, body.as_str()), (StatusCode::OK, "tok-1"));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    // ALPN picked HTTP/2, as the built-in transport offers it first.
    assert_eq!(*server.versions.lock().unwrap(), [Version::HTTP_2]);
}

#[tokio::test]
async fn b9_a_certificate_from_an_unknown_ca_is_a_typed_connect_error_and_no_request() {
    let pki = private_ca();
    let server = tls_token_server(&pki).await;
    // The webpki roots alone do not trust the test CA.
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(server.url.clone(), ClientAuth::basic("client", "secret"))
            .build()
            .unwrap(),
    );

    let error = grant.fetch(None).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    // The cause is in the source chain, as `anyhow`'s `{:#}` would print it.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    assert!(
        message.contains("UnknownIssuer"),
        "the error says why: {message}"
    );
    assert!(!message.contains("secret"), "{message}");
    // The server sees the client abort the handshake, and no request.
    settle_until(|| server.handshakes_failed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn b9_a_root_from_another_ca_does_not_make_the_server_trusted() {
    let pki = private_ca();
    let other = private_ca();
    let server = tls_token_server(&pki).await;
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(server.url.clone(), ClientAuth::basic("client", "secret"))
            .add_root_certificate_pem(other.ca_pem())
            .build()
            .unwrap(),
    );

    let error = grant.fetch(None).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn root_certificates_that_are_not_pem_certificates_fail_the_build() {
    let build = |pem: &[u8]| {
        TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("id"))
            .add_root_certificate_pem(pem)
            .build()
    };
    let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for pem in [
        &b""[..],
        b"not a certificate",
        key_only.as_bytes(),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
    ] {
        let error = build(pem).expect_err("refused");
        assert!(error.to_string().contains("root certificate"), "{error}");
    }
    assert!(build(private_ca().ca_pem().as_bytes()).is_ok());
}

#[test]
fn root_certificates_with_a_custom_transport_fail_the_build() {
    let client = support::http_client();
    let error = TokenEndpoint::builder("https://idp.example/token", ClientAuth::none("id"))
        .add_root_certificate_pem(private_ca().ca_pem())
        .transport(client)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("custom transport"), "{error}");
}
