//! Mutual-TLS client authentication and certificate-bound access tokens
//! (RFC 8705), with hyper-util and rustls.
//!
//! A private CA (made here with rcgen) issues the servers' certificate and
//! the client's. The token endpoint requires the client certificate
//! (`tls_client_auth`: no client secret anywhere) and binds each token to
//! it; the API accepts a token only over a connection that presents the
//! certificate it is bound to. So the client that calls the API must
//! present the same certificate as the token endpoint's transport: both
//! are built from the same PEM here.
//!
//! ```sh
//! cargo run --example mtls --features https
//! ```
//!
//! The last line is `mtls: bound_calls_ok=3 unbound_client_refused=true`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCertificate, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, TokenCache};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let pki = Pki::new()?;
    let bindings = Bindings::default();
    let token_url = serve(&pki, bindings.clone(), Role::TokenEndpoint).await?;
    let api_url = serve(&pki, bindings.clone(), Role::Api).await?;

    // The client's certificate and key, as read from its PEM files.
    let (cert_pem, key_pem) = pki.client("orders-client")?;

    // 1. The token endpoint's transport presents the certificate.
    let endpoint = TokenEndpoint::builder(token_url, ClientAuth::tls_client_auth("orders-client"))
        .add_root_certificate_pem(pki.ca.pem())
        .client_certificate(ClientCertificate::from_pem(&cert_pem, &key_pem)?)
        .build()?;
    let cache = TokenCache::new(ClientCredentialsGrant::new(endpoint));

    // 2. The API client presents the same certificate: hyper-util over
    // hyper-rustls, with a rustls configuration from the same PEM.
    let with_certificate = https_client(&pki, Some((&cert_pem, &key_pem)))?;
    let api = ServiceBuilder::new()
        .layer(AuthLayer::new(cache.clone()))
        .service(with_certificate);
    let mut bound_calls_ok = 0;
    for _ in 0..3 {
        let request = Request::get(&api_url).body(Full::default())?;
        let response = api.clone().oneshot(request).await?;
        bound_calls_ok += usize::from(response.status() == StatusCode::OK);
    }

    // 3. The same token through a client without the certificate: refused
    // (the API requires a client certificate, so the handshake fails).
    let without = ServiceBuilder::new()
        .layer(AuthLayer::new(cache))
        .service(https_client(&pki, None)?);
    let request = Request::get(&api_url).body(Full::default())?;
    let unbound_client_refused = match without.oneshot(request).await {
        Ok(response) => response.status() != StatusCode::OK,
        Err(_) => true,
    };

    println!(
        "mtls: bound_calls_ok={bound_calls_ok} unbound_client_refused={unbound_client_refused}"
    );
    if bound_calls_ok == 3 && unbound_client_refused {
        Ok(())
    } else {
        Err("the mTLS example did not go as planned".into())
    }
}

/// A hyper-util client over rustls that trusts the private CA and, with
/// `identity`, presents that certificate and key.
fn https_client(
    pki: &Pki,
    identity: Option<(&str, &str)>,
) -> Result<
    Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    BoxError,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A private CA and the servers' certificate.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new() -> Result<Pki, BoxError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "example CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let server_key = KeyPair::generate()?;
        let server_cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&server_key, &ca)?;
        Ok(Pki {
            ca,
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// A client certificate for `name`: (certificate PEM, key PEM).
    fn client(&self, name: &str) -> Result<(String, String), BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Which token is bound to which client certificate (its DER): what a
/// real server puts in the token's `cnf.x5t#S256`.
#[derive(Clone, Default)]
struct Bindings(Arc<Mutex<HashMap<String, Vec<u8>>>>);

#[derive(Clone, Copy)]
enum Role {
    TokenEndpoint,
    Api,
}

/// A TLS server on 127.0.0.1 that requires a client certificate from the
/// CA: the token endpoint (issues tokens bound to the certificate) or the
/// API (accepts a token only with the certificate it is bound to).
async fn serve(pki: &Pki, bindings: Bindings, role: Role) -> Result<String, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.server_cert.clone()],
            PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = match role {
        Role::TokenEndpoint => format!("https://{}/token", listener.local_addr()?),
        Role::Api => format!("https://{}/orders", listener.local_addr()?),
    };
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, bindings) = (acceptor.clone(), bindings.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return; // no client certificate, or not from the CA
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
                        let reply = answer(role, &bindings, &presented, &req);
                        std::future::ready(Ok::<_, std::convert::Infallible>(reply))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(url)
}

fn answer<B>(
    role: Role,
    bindings: &Bindings,
    presented: &[u8],
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let mut bindings = bindings.0.lock().unwrap();
    let (status, body) = match role {
        Role::TokenEndpoint => {
            let token = format!("bound-{}", bindings.len() + 1);
            bindings.insert(token.clone(), presented.to_vec());
            let body = serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
            (StatusCode::OK, body)
        }
        Role::Api => {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if bindings.get(token).is_some_and(|bound| bound == presented) {
                (StatusCode::OK, serde_json::json!({"orders": []}))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "invalid_token"}),
                )
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}
