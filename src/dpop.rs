//! DPoP (RFC 9449): tokens bound to a key the client holds, proved on
//! every request. Feature `dpop`.
//!
//! A [`Dpop`] holds an ES256 key (made in memory, or loaded from PKCS#8)
//! and the nonces servers asked for. Give it to the token endpoint with
//! [`TokenEndpointBuilder::dpop`](crate::oauth::TokenEndpointBuilder::dpop):
//!
//! * every token request (the first grant and each refresh) carries a
//!   `DPoP` proof for `POST` to the token endpoint, and the server binds
//!   the token it issues to the key (`cnf.jkt`, the key's RFC 7638
//!   [thumbprint](Dpop::thumbprint));
//! * the response must say `"token_type": "DPoP"`: a server that answers
//!   with a bearer token has not bound it, and the response is refused
//!   ([`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse))
//!   rather than sent unbound;
//! * [`AuthService`](crate::AuthService) sends such a token as
//!   `Authorization: DPoP <token>` with a new proof on every request:
//!   `htm` its method, `htu` its URI without query and fragment, `iat` now,
//!   a random `jti`, and `ath`, the hash of the token. A DPoP-bound token
//!   is never sent as `Bearer`: a DPoP token without a key to prove it
//!   is refused by the cache.
//!
//! # Nonces
//!
//! A server may demand a nonce (RFC 9449 §8, §9): the token endpoint with
//! a 400 `use_dpop_nonce` error, a resource server with a 401 whose
//! `DPoP` challenge says `error="use_dpop_nonce"`, both with a
//! `DPoP-Nonce` header. The nonce is kept per origin (scheme, host, port)
//! and put in every later proof for that origin, and the request is sent
//! once more with it: one retry, never a loop. A `DPoP-Nonce` on any other
//! response replaces the kept one. A resource server's
//! `error="invalid_dpop_proof"` is also retried once, with a new proof for
//! the same token.
//!
//! # Requirements and limits
//!
//! * Requests need an absolute URI (`https://api.example/v1/…`) for `htu`:
//!   a hyper-util or reqwest client has one. Above a tonic `Channel` the
//!   URI is only a path unless the generated client is made with
//!   `with_origin(channel, origin)`; without it a call fails with a
//!   permanent error before anything is sent, never with a wrong `htu`.
//! * A proof is an ECDSA P-256 signature per request: tens of microseconds
//!   where a bearer token costs nanoseconds (see `BENCHMARKS.md`).
//! * `iat` is the system clock's: a server checks it against its own.
//! * DPoP tokens are not shared through [stores](crate::store): the key
//!   is this process's.
//!
//! # Example
//!
//! ```
//! use tower_bearer::dpop::Dpop;
//! use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
//! use tower_bearer::{AuthLayer, TokenCache};
//!
//! # fn main() -> Result<(), tower_bearer::ConfigError> {
//! let dpop = Dpop::generate()?; // or Dpop::from_pkcs8_pem(pem)
//! let endpoint = TokenEndpoint::builder("https://idp.example/token", ClientAuth::basic("app", "s3cret"))
//!     .dpop(dpop.clone())
//!     .build()?;
//! let layer = AuthLayer::new(TokenCache::new(ClientCredentialsGrant::new(endpoint)));
//! // The authorization server binds tokens to this thumbprint (`cnf.jkt`).
//! assert_eq!(dpop.thumbprint().len(), 43);
//! # drop(layer);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::{ConfigError, Error};

/// The `DPoP` request header, for proofs.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// How many origins' nonces are kept; the oldest is forgotten first.
const MAX_NONCES: usize = 64;

/// A DPoP key and the nonces servers gave for it. See the [module
/// documentation](self).
///
/// Cheap to clone; clones share the key and the nonces. `Debug` shows the
/// thumbprint, never the key.
#[derive(Clone)]
pub struct Dpop {
    inner: Arc<Inner>,
}

struct Inner {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The proofs' JOSE header, base64url-encoded once.
    header: String,
    thumbprint: String,
    x: String,
    y: String,
    nonces: Mutex<Nonces>,
}

#[derive(Default)]
struct Nonces {
    by_origin: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Dpop {
    /// A new ES256 key, made in memory from the system's random source.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the system's random source fails.
    pub fn generate() -> Result<Self, ConfigError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| ConfigError::new("could not generate a DPoP key"))?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// An ES256 key from its PKCS#8 DER encoding.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the bytes are not a P-256 PKCS#8 key; it
    /// does not contain the key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ConfigError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| ConfigError::new("the DPoP key is not a PKCS#8 ECDSA P-256 key"))?;
        let public = pair.public_key().as_ref();
        // An uncompressed point: 0x04, then x and y.
        let (x, y) = match public {
            [4, xy @ ..] if xy.len() == 64 => (
                URL_SAFE_NO_PAD.encode(&xy[..32]),
                URL_SAFE_NO_PAD.encode(&xy[32..]),
            ),
            _ => {
                return Err(ConfigError::new(
                    "the DPoP key's public key is not an uncompressed P-256 point",
                ));
            }
        };
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        let header = serde_json::json!({
            "typ": "dpop+jwt",
            "alg": "ES256",
            "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y},
        });
        Ok(Dpop {
            inner: Arc::new(Inner {
                pair,
                rng,
                header: URL_SAFE_NO_PAD.encode(header.to_string()),
                thumbprint,
                x,
                y,
                nonces: Mutex::new(Nonces::default()),
            }),
        })
    }

    /// An ES256 key from a PEM `PRIVATE KEY` (PKCS#8) block.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `pem` holds no PKCS#8 P-256 key.
    pub fn from_pkcs8_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        match PrivateKeyDer::from_pem_slice(pem.as_ref()) {
            Ok(PrivateKeyDer::Pkcs8(der)) => Self::from_pkcs8_der(der.secret_pkcs8_der()),
            _ => Err(ConfigError::new("the PEM holds no PKCS#8 private key")),
        }
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what an
    /// authorization server puts in a bound token's `cnf.jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": self.inner.x, "y": self.inner.y})
    }

    /// A proof for a request: `method` to `uri`, presenting `access_token`
    /// (`ath`) if given, with the nonce kept for `uri`'s origin if any.
    ///
    /// # Errors
    ///
    /// [`Error`] (permanent) when `uri` is not absolute, or when signing
    /// fails.
    ///
    /// ```
    /// use http::{Method, Uri};
    /// use tower_bearer::dpop::Dpop;
    ///
    /// let dpop = Dpop::generate()?;
    /// let uri: Uri = "https://api.example/v1/items?page=2".parse().unwrap();
    /// let proof = dpop.proof(&Method::GET, &uri, Some("t0k3n"))?;
    /// assert_eq!(proof.to_str().unwrap().split('.').count(), 3);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let (origin, path) = split(uri)?;
        let nonce = self.nonce_for(&origin);
        let ath = access_token.map(ath);
        self.sign(method, &origin, path, ath.as_deref(), nonce.as_deref())
    }

    /// A proof with `ath` already hashed (per token, once).
    pub(crate) fn proof_with_ath(
        &self,
        method: &Method,
        uri: &Uri,
        ath: &str,
    ) -> Result<HeaderValue, Error> {
        let (origin, path) = split(uri)?;
        let nonce = self.nonce_for(&origin);
        self.sign(method, &origin, path, Some(ath), nonce.as_deref())
    }

    fn sign(
        &self,
        method: &Method,
        origin: &str,
        path: &str,
        ath: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let inner = &*self.inner;
        let mut jti = [0u8; 16];
        inner
            .rng
            .fill(&mut jti)
            .map_err(|_| Error::permanent("the system's random source failed"))?;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "htm": method.as_str(),
            "htu": format!("{origin}{path}"),
            "iat": iat,
        });
        if let Some(ath) = ath {
            claims["ath"] = ath.into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let mut jwt = String::with_capacity(512);
        jwt.push_str(&inner.header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
        let signature = inner
            .pair
            .sign(&inner.rng, jwt.as_bytes())
            .map_err(|_| Error::permanent("could not sign a DPoP proof"))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        HeaderValue::try_from(jwt)
            .map_err(|_| Error::permanent("a DPoP proof is not a header value"))
    }

    /// The nonce kept for `uri`'s origin, if any.
    pub fn nonce(&self, uri: &Uri) -> Option<String> {
        let (origin, _) = split(uri).ok()?;
        self.nonce_for(&origin)
    }

    fn nonce_for(&self, origin: &str) -> Option<String> {
        let nonces = self
            .inner
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nonces.by_origin.get(origin).cloned()
    }

    /// Keeps the `DPoP-Nonce` of a response from `uri`'s origin, if it
    /// has one. Returns whether it had one.
    pub(crate) fn observe(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers.get(&DPOP_NONCE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        // RFC 9449 §8.1: a nonce is NQCHAR (printable ASCII but `"` and `\`).
        if nonce.is_empty()
            || nonce.len() > 1024
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return false;
        }
        let Ok((origin, _)) = split(uri) else {
            return false;
        };
        let mut nonces = self
            .inner
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if nonces
            .by_origin
            .insert(origin.clone(), nonce.to_owned())
            .is_none()
        {
            nonces.order.push_back(origin);
            if nonces.order.len() > MAX_NONCES
                && let Some(oldest) = nonces.order.pop_front()
            {
                nonces.by_origin.remove(&oldest);
            }
        }
        true
    }
}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("alg", &"ES256")
            .field("thumbprint", &self.inner.thumbprint)
            .finish_non_exhaustive()
    }
}

/// `ath`: the base64url SHA-256 of the access token (RFC 9449 §4.2).
pub(crate) fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        access_token.as_bytes(),
    ))
}

/// The origin (`scheme://host[:port]`, lower-case) and path of an absolute
/// URI: `htu` is their concatenation, without query and fragment.
fn split(uri: &Uri) -> Result<(String, &str), Error> {
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Error::unsendable(
            "DPoP needs the request's absolute URI (scheme and host) for its proof",
        ));
    };
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Ok((
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host_port.to_ascii_lowercase()
        ),
        path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn proofs_carry_the_rfc_9449_claims_and_verify_with_the_jwk() {
        let dpop = Dpop::generate().unwrap();
        let uri: Uri = "HTTPS://API.example:8443/v1/items?page=2#frag"
            .parse()
            .unwrap();
        let proof = dpop.proof(&Method::POST, &uri, Some("t0k3n")).unwrap();
        let proof = proof.to_str().unwrap();
        let parts: Vec<&str> = proof.split('.').collect();
        let header = decode(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"], dpop.public_jwk());
        assert!(header["jwk"].get("d").is_none(), "never the private key");
        let claims = decode(parts[1]);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://api.example:8443/v1/items");
        assert_eq!(claims["ath"], ath("t0k3n"));
        assert!(claims.get("nonce").is_none());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(claims["jti"].as_str().unwrap())
                .unwrap()
                .len(),
            16
        );
        // The signature verifies with the public key of the header's JWK.
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode(header["jwk"]["y"].as_str().unwrap())
            .unwrap();
        let public = [&[4u8][..], &x, &y].concat();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn thumbprint_is_rfc_7638() {
        // RFC 7638 §3: the SHA-256 of the required members in order.
        let dpop = Dpop::generate().unwrap();
        let jwk = dpop.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        assert_eq!(dpop.thumbprint(), expected);
        assert_eq!(dpop.thumbprint().len(), 43);
    }

    #[test]
    fn nonces_are_kept_per_origin_and_used_in_later_proofs() {
        let dpop = Dpop::generate().unwrap();
        let a: Uri = "https://a.example/token".parse().unwrap();
        let b: Uri = "https://b.example/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
        assert!(dpop.observe(&a, &headers));
        assert_eq!(
            dpop.nonce(&"https://A.example/other?q".parse().unwrap())
                .as_deref(),
            Some("n-1")
        );
        assert_eq!(dpop.nonce(&b), None);
        let proof = dpop.proof(&Method::GET, &a, None).unwrap();
        let claims = decode(proof.to_str().unwrap().split('.').nth(1).unwrap());
        assert_eq!(claims["nonce"], "n-1");
        assert!(claims.get("ath").is_none());
        // A bad nonce is not kept.
        headers.insert(DPOP_NONCE, HeaderValue::from_static("has\"quote"));
        assert!(!dpop.observe(&a, &headers));
        assert_eq!(dpop.nonce(&a).as_deref(), Some("n-1"));
    }

    #[test]
    fn relative_uris_and_bad_keys_are_typed_errors() {
        let dpop = Dpop::generate().unwrap();
        let error = dpop
            .proof(&Method::GET, &"/only/a/path".parse().unwrap(), None)
            .unwrap_err();
        assert!(error.is_permanent());
        assert!(Dpop::from_pkcs8_der(b"not a key").is_err());
        assert!(
            Dpop::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        // An RSA key is not a DPoP key here.
        let rsa = include_str!("../tests/data/rsa-test-key.pem");
        assert!(Dpop::from_pkcs8_pem(rsa).is_err());
    }

    #[test]
    fn debug_shows_the_thumbprint_only() {
        let dpop = Dpop::generate().unwrap();
        let debug = format!("{dpop:?}");
        assert_eq!(
            debug,
            format!(
                r#"Dpop {{ alg: "ES256", thumbprint: "{}", .. }}"#,
                dpop.thumbprint()
            )
        );
    }
}
