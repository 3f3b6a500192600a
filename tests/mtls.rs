//! Mutual-TLS client authentication (RFC 8705) through the built-in HTTPS
//! transport: an in-process rustls token server that requires a client
//! certificate issued by a private CA made with rcgen.
#![cfg(feature = "https")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::pki::Pki;
use support::token_json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tower_bearer::oauth::{
    ClientAuth, ClientAuthMethod, ClientCertificate, ClientCredentialsGrant, TokenEndpoint,
};
use tower_bearer::{ErrorKind, TokenCache};

/// A private CA made for the test, with a server certificate it issued.
fn private_ca() -> Pki {
    Pki::new("tower-bearer mTLS test CA")
}

/// What the mTLS token server saw.
#[derive(Default)]
struct Seen {
    /// Per request: the DER of the client certificate, and the form body.
    requests: Mutex<Vec<(Vec<u8>, String, bool)>>,
    handshakes_failed: AtomicUsize,
}

/// A token endpoint over TLS that requires a client certificate from the
/// CA, answers `tok-N` and closes each connection after its response (so
/// that every token request makes a new handshake).
async fn mtls_token_server(pki: &Pki) -> (String, Arc<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.server_cert.clone()],
            PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/token", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            seen.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref().to_vec())
                        .unwrap_or_default();
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (seen, presented) = (seen.clone(), presented.clone());
                            async move {
                                let basic = req.headers().contains_key("authorization");
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let form = String::from_utf8_lossy(&body).into_owned();
                                let mut requests = seen.requests.lock().unwrap();
                                requests.push((presented, form, basic));
                                let n = requests.len();
                                let (mut parts, body) =
                                    token_json(&format!("tok-{n}"), 3600).into_parts();
                                parts.headers.insert("connection", "close".parse().unwrap());
                                Ok::<_, std::convert::Infallible>(Response::from_parts(parts, body))
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    });
    (url, seen)
}

fn endpoint(url: &str, pki: &Pki, auth: ClientAuth) -> tower_bearer::oauth::TokenEndpointBuilder {
    TokenEndpoint::builder(url, auth).add_root_certificate_pem(pki.ca.pem())
}

#[tokio::test]
async fn mtls_tls_client_auth_presents_the_certificate_and_sends_only_the_client_id() {
    let pki = private_ca();
    let (url, seen) = mtls_token_server(&pki).await;
    let (cert, key) = pki.client_certificate("my-client");
    let certificate = ClientCertificate::from_pem(&cert, &key).unwrap();
    let auth = ClientAuth::tls_client_auth("my-client");
    assert_eq!(auth.method(), ClientAuthMethod::TlsClientAuth);
    assert_eq!(auth.method().as_str(), "tls_client_auth");
    let cache = TokenCache::new(ClientCredentialsGrant::new(
        endpoint(&url, &pki, auth)
            .client_certificate(certificate.clone())
            .build()
            .unwrap(),
    ));
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );

    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let (presented, form, basic) = &requests[0];
    assert_eq!(*presented, certificate.certificate_der());
    assert!(form.contains("client_id=my-client"), "{form}");
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(
        !form.contains("client_secret") && !form.contains("client_assertion"),
        "{form}"
    );
    assert!(!basic, "no Basic header with mutual TLS");
}

#[tokio::test]
async fn mtls_without_the_certificate_the_handshake_fails_with_a_typed_error_and_no_token() {
    let pki = private_ca();
    let (url, seen) = mtls_token_server(&pki).await;
    let cache = TokenCache::builder(ClientCredentialsGrant::new(
        endpoint(&url, &pki, ClientAuth::none("my-client"))
            .build()
            .unwrap(),
    ))
    .max_attempts(1)
    .build()
    .unwrap();
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    assert!(seen.requests.lock().unwrap().is_empty());
    assert!(seen.handshakes_failed.load(Ordering::SeqCst) >= 1);

    // A certificate from another CA is refused the same way.
    let stranger = private_ca();
    let (cert, key) = stranger.client_certificate("my-client");
    let cache = TokenCache::builder(ClientCredentialsGrant::new(
        endpoint(&url, &pki, ClientAuth::tls_client_auth("my-client"))
            .client_certificate(ClientCertificate::from_pem(cert, key).unwrap())
            .build()
            .unwrap(),
    ))
    .max_attempts(1)
    .build()
    .unwrap();
    assert_eq!(cache.token().await.unwrap_err().kind(), ErrorKind::Connect);
    assert!(seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mtls_a_replaced_certificate_is_presented_from_the_next_connection_on() {
    let pki = private_ca();
    let (url, seen) = mtls_token_server(&pki).await;
    let (cert_a, key_a) = pki.client_certificate("my-client-2025");
    let certificate = ClientCertificate::from_pem(&cert_a, &key_a).unwrap();
    let der_a = certificate.certificate_der();
    let cache = TokenCache::new(ClientCredentialsGrant::new(
        endpoint(&url, &pki, ClientAuth::tls_client_auth("my-client"))
            .client_certificate(certificate.clone())
            .build()
            .unwrap(),
    ));
    let first = cache.token().await.unwrap();

    let (cert_b, key_b) = pki.client_certificate("my-client-2026");
    certificate.replace_pem(&cert_b, &key_b).unwrap();
    let der_b = certificate.certificate_der();
    assert_ne!(der_a, der_b);
    // A bad replacement leaves the current certificate in place.
    assert!(certificate.replace_pem(&cert_a, &key_b).is_err());
    assert_eq!(certificate.certificate_der(), der_b);

    cache.invalidate(&first);
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-2"
    );
    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests[0].0, der_a);
    assert_eq!(requests[1].0, der_b);
}

#[test]
fn mtls_configuration_mistakes_are_config_errors_not_panics() {
    let pki = private_ca();
    let (cert, key) = pki.client_certificate("c");
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for (what, result) in [
        ("no certificate", ClientCertificate::from_pem("", &key)),
        (
            "garbage",
            ClientCertificate::from_pem(
                "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
                &key,
            ),
        ),
        ("no key", ClientCertificate::from_pem(&cert, "")),
        (
            "another key",
            ClientCertificate::from_pem(&cert, &other_key),
        ),
    ] {
        let error = result.expect_err(what);
        assert!(
            !error.to_string().contains("PRIVATE KEY"),
            "{what}: {error}"
        );
    }
    let certificate = ClientCertificate::from_pem(&cert, &key).unwrap();
    assert!(!format!("{certificate:?}").contains("PRIVATE"));

    let url = "https://idp.example/token";
    // tls_client_auth without a certificate (and no transport of one's own).
    assert!(
        TokenEndpoint::builder(url, ClientAuth::tls_client_auth("c"))
            .build()
            .is_err()
    );
    // A certificate with a method that does not use it.
    assert!(
        TokenEndpoint::builder(url, ClientAuth::basic("c", "s"))
            .client_certificate(certificate.clone())
            .build()
            .is_err()
    );
    // Over plain http.
    assert!(
        TokenEndpoint::builder("http://127.0.0.1:1/token", ClientAuth::tls_client_auth("c"))
            .client_certificate(certificate.clone())
            .build()
            .is_err()
    );
    // self_signed_tls_client_auth works like tls_client_auth.
    let auth = ClientAuth::self_signed_tls_client_auth("c");
    assert_eq!(auth.method().as_str(), "self_signed_tls_client_auth");
    assert!(
        TokenEndpoint::builder(url, auth)
            .client_certificate(certificate)
            .build()
            .is_ok()
    );
}
