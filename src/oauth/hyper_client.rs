//! The built-in transport: a hyper-util client, with rustls for HTTPS when
//! the `https` feature is on.
//!
//! The TLS configuration passes the ring crypto provider explicitly and
//! trusts the webpki root certificates. It never relies on rustls' process
//! default provider, which panics when more than one provider is compiled in
//! (reqwest's default enables aws-lc-rs; this crate enables ring).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::transport::{ServiceTransport, Transport};
use crate::ConfigError;

/// Idle connections to the token endpoint are closed after this long. A
/// token is fetched a few times an hour at most, so keeping connections
/// around longer buys nothing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default transport for a token endpoint.
///
/// With the `https` feature it speaks HTTPS (HTTP/1.1 and HTTP/2 by ALPN)
/// and plain HTTP, trusting the webpki roots plus `extra_roots`; without
/// it, only plain HTTP, and an `https` endpoint is a configuration error.
pub(crate) fn default_transport(
    https: bool,
    tls: &super::transport::Tls,
) -> Result<Arc<dyn Transport>, ConfigError> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);

    #[cfg(feature = "https")]
    {
        let _ = https;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client: Client<_, Full<Bytes>> = builder.build(connector);
        Ok(Arc::new(ServiceTransport::new(client)))
    }

    #[cfg(not(feature = "https"))]
    {
        let _ = tls;
        if https {
            return Err(ConfigError::new(
                "an https token endpoint needs the `https` feature or a custom transport",
            ));
        }
        let client: Client<_, Full<Bytes>> = builder.build_http();
        Ok(Arc::new(ServiceTransport::new(client)))
    }
}

/// rustls with the ring provider, its safe default protocol versions, the
/// webpki roots plus the certificates of each PEM in `tls.roots`, and the
/// client certificate, if any.
#[cfg(feature = "https")]
fn tls_config(tls: &super::transport::Tls) -> Result<rustls::ClientConfig, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in &tls.roots {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                ConfigError::new(format!("a root certificate is not valid PEM: {e}"))
            })?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::new(format!("a root certificate cannot be used: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(ConfigError::new(
                "a root certificate PEM holds no CERTIFICATE section",
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots);
    Ok(match &tls.client_certificate {
        Some(certificate) => {
            let mut config = config.with_client_cert_resolver(certificate.resolver());
            // A resumed TLS session carries the identity of the handshake
            // it resumes: after `replace_pem`, the server would still see
            // the old certificate. A token endpoint sees a few connections
            // an hour; a full handshake each time costs nothing worth
            // keeping.
            config.resumption = rustls::client::Resumption::disabled();
            config
        }
        None => config.with_no_client_auth(),
    })
}
