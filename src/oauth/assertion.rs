//! `private_key_jwt` and `client_secret_jwt` client authentication
//! (RFC 7523 §2.2, OpenID Connect Core §9): the client proves who it is
//! with a short-lived JWT signed by its private key (or, for
//! `client_secret_jwt`, with HMAC-SHA256 keyed by its secret), instead of
//! sending a secret.
//!
//! Each token request carries a new assertion: `iss` and `sub` are the
//! client id, `aud` the token endpoint URL (or the audience set with
//! [`ClientAuth::assertion_audience`](super::ClientAuth::assertion_audience)),
//! `jti` 128 random bits, `iat` now and `exp` 60 seconds later, by the
//! system clock (the server compares them with its own). Servers refuse a
//! `jti` they have seen, so an assertion is never reused, not even by a
//! retry.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::{ConfigError, Error};

/// How long an assertion is valid: long enough for a slow network, short
/// enough that a leaked one is soon useless.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// A private key that signs `private_key_jwt` client assertions: an ECDSA
/// P-256 key (`ES256`) or an RSA key (`RS256`).
///
/// Cheap to clone. `Debug` shows the algorithm and key id, never the key.
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{ClientAssertionKey, ClientAuth, TokenEndpoint};
///
/// # let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
/// // let pem = std::fs::read("/etc/my-service/client-key.pem")?;
/// let key = ClientAssertionKey::from_pem(pem)?.with_key_id("2026-11");
/// assert_eq!(key.algorithm(), "ES256");
///
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::private_key_jwt("my-client", key),
/// )
/// .build()?;
/// # drop(endpoint);
/// # Ok::<_, tower_bearer::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ClientAssertionKey {
    signer: Arc<Signer>,
    key_id: Option<String>,
}

enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl ClientAssertionKey {
    /// Reads a private key from PEM: `PRIVATE KEY` (PKCS#8) holding a P-256
    /// or RSA key, or `RSA PRIVATE KEY` (PKCS#1). For an `EC PRIVATE KEY`
    /// (SEC1), convert it first: `openssl pkcs8 -topk8 -nocrypt`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `pem` holds no private key, an encrypted or
    /// SEC1 one, or a key of another type or curve. The message never
    /// quotes the key.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let key = PrivateKeyDer::from_pem_slice(pem.as_ref())
            .map_err(|_| ConfigError::new("no PKCS#8 or PKCS#1 private key found in the PEM"))?;
        let rng = SystemRandom::new();
        let signer = match &key {
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                {
                    Signer::Es256(pair)
                } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                    Signer::Rs256(pair)
                } else {
                    return Err(ConfigError::new(
                        "the private key is neither an ECDSA P-256 nor a usable RSA key",
                    ));
                }
            }
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(Signer::Rs256)
                .map_err(|_| ConfigError::new("the RSA private key cannot be used"))?,
            PrivateKeyDer::Sec1(_) => {
                return Err(ConfigError::new(
                    "SEC1 (EC PRIVATE KEY) keys are not supported; convert to PKCS#8",
                ));
            }
            _ => return Err(ConfigError::new("unsupported private key format")),
        };
        Ok(ClientAssertionKey {
            signer: Arc::new(signer),
            key_id: None,
        })
    }

    /// Names the key in the assertion's header (`kid`), for servers that
    /// hold several keys of the client.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The JWS algorithm: `ES256` or `RS256`.
    pub fn algorithm(&self) -> &'static str {
        match *self.signer {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        }
    }

    /// The key id, if one was set.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// A new signed client assertion for `client_id` and `audience`.
    pub(crate) fn assertion(&self, client_id: &str, audience: &str) -> Result<String, Error> {
        self.signed(client_id, client_id, audience)
    }

    /// A new signed assertion with these `iss`, `sub` and `aud` (RFC 7523
    /// §3), a random `jti`, `iat` now and `exp` [`ASSERTION_LIFETIME`]
    /// later.
    pub(crate) fn signed(
        &self,
        issuer: &str,
        subject: &str,
        audience: &str,
    ) -> Result<String, Error> {
        let rng = SystemRandom::new();
        let mut jwt = unsigned(
            &rng,
            self.algorithm(),
            self.key_id.as_deref(),
            Claims {
                issuer,
                subject,
                audience,
            },
        )?;
        let signature = match &*self.signer {
            Signer::Es256(pair) => pair
                .sign(&rng, jwt.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::transient("could not sign the client assertion"))?,
            Signer::Rs256(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, jwt.as_bytes(), &mut signature)
                    .map_err(|_| Error::transient("could not sign the client assertion"))?;
                signature
            }
        };
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

/// The shortest `client_secret_jwt` secret: an HS256 key must be at least
/// as long as the hash (RFC 7518 §3.2), 32 bytes.
pub(crate) const MIN_HS256_SECRET: usize = 32;

/// A new `client_secret_jwt` assertion (RFC 7523 §2.2, OpenID Connect Core
/// §9): the same claims as `private_key_jwt`'s, signed with HMAC-SHA256
/// keyed by the client secret.
pub(crate) fn secret_assertion(
    secret: &str,
    client_id: &str,
    audience: &str,
) -> Result<String, Error> {
    let rng = SystemRandom::new();
    let mut jwt = unsigned(
        &rng,
        "HS256",
        None,
        Claims {
            issuer: client_id,
            subject: client_id,
            audience,
        },
    )?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, jwt.as_bytes());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    Ok(jwt)
}

/// Who an assertion is from, about and for.
struct Claims<'a> {
    issuer: &'a str,
    subject: &'a str,
    audience: &'a str,
}

/// `header.claims` of an assertion: `iss`, `sub`, `aud`, a random `jti`,
/// `iat` now and `exp` [`ASSERTION_LIFETIME`] later.
fn unsigned(
    rng: &SystemRandom,
    algorithm: &str,
    key_id: Option<&str>,
    Claims {
        issuer,
        subject,
        audience,
    }: Claims<'_>,
) -> Result<String, Error> {
    let mut jti = [0u8; 16];
    rng.fill(&mut jti)
        .map_err(|_| Error::transient("no randomness for the client assertion"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::permanent("the system clock is before 1970"))?
        .as_secs();
    let mut header = serde_json::json!({ "alg": algorithm, "typ": "JWT" });
    if let Some(kid) = key_id {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME.as_secs(),
    });
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    ))
}

impl fmt::Debug for ClientAssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertionKey")
            .field("algorithm", &self.algorithm())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn es256_key() -> (ClientAssertionKey, Vec<u8>) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = ClientAssertionKey::from_pem(pair.serialize_pem()).unwrap();
        (key, pair.public_key_raw().to_vec())
    }

    #[test]
    fn es256_assertions_carry_the_rfc_7523_claims_and_verify() {
        let (key, public) = es256_key();
        let key = key.with_key_id("k1");
        let jwt = key
            .assertion("my-client", "https://idp.example/token")
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);

        let header = decode(parts[0]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "k1");
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "my-client");
        assert_eq!(claims["sub"], "my-client");
        assert_eq!(claims["aud"], "https://idp.example/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(claims["jti"].as_str().unwrap())
                .unwrap()
                .len(),
            16
        );

        let message = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "JWS ES256 is r || s");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(message.as_bytes(), &signature)
            .expect("a valid signature");
    }

    #[test]
    fn hs256_assertions_carry_the_rfc_7523_claims_and_verify_with_the_secret() {
        let secret = "a-client-secret-of-at-least-32-bytes!";
        let jwt = secret_assertion(secret, "app", "https://idp.example/token").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode(parts[0])["alg"], "HS256");
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert_eq!(claims["aud"], "https://idp.example/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            ASSERTION_LIFETIME.as_secs()
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let signed = format!("{}.{}", parts[0], parts[1]);
        let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        ring::hmac::verify(&key, signed.as_bytes(), &tag).expect("a valid HS256 signature");
        let other = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            b"another-secret-of-at-least-32-bytes!",
        );
        assert!(ring::hmac::verify(&other, signed.as_bytes(), &tag).is_err());
        let again = secret_assertion(secret, "app", "https://idp.example/token").unwrap();
        assert_ne!(
            decode(again.split('.').nth(1).unwrap())["jti"],
            claims["jti"]
        );
    }

    #[test]
    fn every_assertion_has_its_own_jti() {
        let (key, _) = es256_key();
        let jti = |jwt: String| decode(jwt.split('.').nth(1).unwrap())["jti"].clone();
        let a = jti(key.assertion("c", "a").unwrap());
        let b = jti(key.assertion("c", "a").unwrap());
        assert_ne!(a, b);
    }

    #[test]
    fn rs256_keys_in_pkcs8_and_pkcs1_sign_verifiable_assertions() {
        // ring cannot make RSA keys: a 2048-bit key made with openssl for
        // these tests only, in both encodings.
        for pem in [
            include_str!("../../tests/data/rsa-test-key.pem"),
            include_str!("../../tests/data/rsa-test-key.pkcs1.pem"),
        ] {
            let key = ClientAssertionKey::from_pem(pem).unwrap();
            assert_eq!(key.algorithm(), "RS256");
            let Signer::Rs256(pair) = &*key.signer else {
                panic!("an RSA key");
            };
            use ring::signature::KeyPair as _;
            let public = pair.public_key().as_ref().to_vec();

            let jwt = key.assertion("c", "a").unwrap();
            assert_eq!(decode(jwt.split('.').next().unwrap())["alg"], "RS256");
            let (message, signature) = jwt.rsplit_once('.').unwrap();
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(
                    message.as_bytes(),
                    &URL_SAFE_NO_PAD.decode(signature).unwrap(),
                )
                .expect("a valid signature");
        }
    }

    #[test]
    fn keys_that_cannot_sign_are_config_errors_without_the_key_in_them() {
        for pem in [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let error = ClientAssertionKey::from_pem(pem).unwrap_err();
            assert!(error.to_string().contains("key"), "{error}");
        }
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let error = ClientAssertionKey::from_pem(p384.serialize_pem()).unwrap_err();
        assert!(!error.to_string().contains("BEGIN"), "{error}");
    }

    #[test]
    fn an_assertion_audience_on_another_method_fails_the_build() {
        use crate::oauth::{ClientAuth, TokenEndpoint};
        let build = |auth: ClientAuth| {
            TokenEndpoint::builder(
                "https://idp.example/token",
                auth.assertion_audience("https://idp.example"),
            )
            .build()
        };
        let error = build(ClientAuth::basic("c", "s")).unwrap_err();
        assert!(error.to_string().contains("private_key_jwt"), "{error}");
        assert!(build(ClientAuth::private_key_jwt("c", es256_key().0)).is_ok());
        assert!(build(ClientAuth::client_secret_jwt("c", "s".repeat(32))).is_ok());
    }

    #[test]
    fn a_client_secret_jwt_secret_under_32_bytes_fails_the_build_without_quoting_it() {
        use crate::oauth::{ClientAuth, ClientAuthMethod, TokenEndpoint};
        let build = |secret: &str| {
            TokenEndpoint::builder(
                "https://idp.example/token",
                ClientAuth::client_secret_jwt("c", secret),
            )
            .build()
        };
        let error = build("thirty-one-bytes-of-secret-here").unwrap_err();
        assert!(error.to_string().contains("32 bytes"), "{error}");
        assert!(!error.to_string().contains("thirty-one"), "{error}");
        let auth = ClientAuth::client_secret_jwt("c", "thirty-two-bytes-of-secret-here!");
        assert_eq!(auth.method(), ClientAuthMethod::ClientSecretJwt);
        assert_eq!(auth.method().as_str(), "client_secret_jwt");
        assert!(!format!("{auth:?}").contains("thirty-two"));
        assert!(build("thirty-two-bytes-of-secret-here!").is_ok());
    }

    #[test]
    fn debug_shows_the_algorithm_and_key_id_not_the_key() {
        let (key, _) = es256_key();
        let debug = format!("{:?}", key.with_key_id("k1"));
        assert_eq!(
            debug,
            r#"ClientAssertionKey { algorithm: "ES256", key_id: Some("k1"), .. }"#
        );
    }
}
