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
/// and plain HTTP; without it, only plain HTTP, and an `https` endpoint is a
/// configuration error.
pub(crate) fn default_transport(https: bool) -> Result<Arc<dyn Transport>, ConfigError> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);

    #[cfg(feature = "https")]
    {
        let _ = https;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| ConfigError::new(format!("cannot set up TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client: Client<_, Full<Bytes>> = builder.build(connector);
        Ok(Arc::new(ServiceTransport::new(client)))
    }

    #[cfg(not(feature = "https"))]
    {
        if https {
            return Err(ConfigError::new(
                "an https token endpoint needs the `https` feature or a custom transport",
            ));
        }
        let client: Client<_, Full<Bytes>> = builder.build_http();
        Ok(Arc::new(ServiceTransport::new(client)))
    }
}
