//! [`ClientCertificate`]: the certificate the built-in HTTPS transport
//! presents, for mutual-TLS client authentication (RFC 8705).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::ConfigError;

/// A client certificate and its private key, presented in the TLS
/// handshake with the token endpoint by the built-in HTTPS transport
/// (feature `https`): the credential of
/// [`ClientAuth::tls_client_auth`](super::ClientAuth::tls_client_auth) and
/// [`ClientAuth::self_signed_tls_client_auth`](super::ClientAuth::self_signed_tls_client_auth)
/// (RFC 8705 §2).
///
/// **Reloadable without a restart:** [`replace_pem`](Self::replace_pem)
/// swaps the certificate of every clone at once; TLS connections made from
/// then on present the new one (a pooled connection to the token endpoint
/// keeps the certificate it was opened with, and is closed after 30 s
/// idle). With a client certificate, the built-in transport does not
/// resume TLS sessions: a resumed session would carry the identity of the
/// handshake it resumes, the old certificate.
///
/// **Certificate-bound tokens** (RFC 8705 §3): a server may bind the
/// access token to this certificate (`cnf.x5t#S256`), and the API then
/// accepts it only over a TLS connection that presents the same
/// certificate. Give the client that calls the API the same certificate
/// and key (its own rustls configuration, built from the same PEM files);
/// the `mtls` example shows it with hyper-util and rustls.
///
/// `Debug` shows no key. Cheap to clone; clones share the current
/// certificate.
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{ClientAuth, ClientCertificate, TokenEndpoint};
///
/// # fn main() -> Result<(), tower_bearer::ConfigError> {
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let cert = rcgen::CertificateParams::new(vec!["my-client".into()]).unwrap().self_signed(&key).unwrap();
/// # let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
/// // let cert_pem = std::fs::read("/etc/my-service/client.crt")?; and the key
/// let certificate = ClientCertificate::from_pem(&cert_pem, &key_pem)?;
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::tls_client_auth("my-client"),
/// )
/// .client_certificate(certificate.clone())
/// .build()?;
///
/// // Later, when the certificate was renewed on disk:
/// certificate.replace_pem(&cert_pem, &key_pem)?;
/// # drop(endpoint);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientCertificate {
    current: Arc<ArcSwap<CertifiedKey>>,
}

impl ClientCertificate {
    /// The certificate chain `cert_pem` (the client's certificate first,
    /// then any intermediates) with its private key `key_pem` (PKCS#8,
    /// PKCS#1 or SEC1; ECDSA, RSA or Ed25519).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when either PEM holds nothing usable, or the key
    /// does not belong to the certificate. The message never quotes the
    /// key.
    pub fn from_pem(
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<ClientCertificate, ConfigError> {
        let key = certified_key(cert_pem.as_ref(), key_pem.as_ref())?;
        Ok(ClientCertificate {
            current: Arc::new(ArcSwap::from_pointee(key)),
        })
    }

    /// Replaces the certificate and key (a renewed certificate) for the
    /// TLS connections made from now on, in every clone.
    ///
    /// # Errors
    ///
    /// As [`from_pem`](Self::from_pem); the current certificate then stays.
    pub fn replace_pem(
        &self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<(), ConfigError> {
        let key = certified_key(cert_pem.as_ref(), key_pem.as_ref())?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The current certificate, DER-encoded (for a fingerprint, say).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.current
            .load()
            .cert
            .first()
            .map(|cert| cert.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// What rustls asks for the certificate to present.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(Resolver {
            current: self.current.clone(),
        })
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| ConfigError::new("the client certificate PEM is not valid"))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "the client certificate PEM holds no CERTIFICATE section",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| ConfigError::new("no private key found in the client key PEM"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| ConfigError::new("the client private key is of an unsupported type"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| {
        ConfigError::new("the client private key does not belong to the client certificate")
    })?;
    Ok(certified)
}

/// Presents the current certificate, whatever the server asks.
struct Resolver {
    current: Arc<ArcSwap<CertifiedKey>>,
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCertificateResolver")
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("ClientCertificate")
            .field("chain_len", &current.cert.len())
            .finish_non_exhaustive()
    }
}
