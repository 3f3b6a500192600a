//! How the client authenticates to the token endpoint (RFC 6749 §2.3).

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;

use crate::token::secret_newtype;

secret_newtype!(
    /// A client secret (RFC 6749 §2.3.1).
    ClientSecret
);

/// The client authentication methods this crate implements, named as in the
/// OAuth 2.0 registry (`token_endpoint_auth_method`).
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{ClientAuth, ClientAuthMethod};
///
/// let auth = ClientAuth::post("my-client", "my-secret");
/// assert_eq!(auth.method(), ClientAuthMethod::ClientSecretPost);
/// assert_eq!(auth.method().as_str(), "client_secret_post");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded client id
    /// and secret. The method every server must support (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// `none`: a public client, identified by `client_id` in the form body
    /// and not authenticated.
    None,
    /// `private_key_jwt`: a JWT signed with the client's private key, in
    /// `client_assertion` (RFC 7523 §2.2). Feature `private-key-jwt`.
    PrivateKeyJwt,
    /// `client_secret_jwt`: a JWT signed with HMAC-SHA256 keyed by the
    /// client secret, in `client_assertion` (RFC 7523 §2.2, OpenID Connect
    /// Core §9); the secret itself is never sent. Feature `private-key-jwt`.
    ClientSecretJwt,
    /// No client at all: nothing identifies a client in the request (a
    /// custom endpoint whose login carries the user's own credentials; see
    /// [`ClientAuth::anonymous`]). Not an OAuth 2.0 registry method.
    Anonymous,
    /// `tls_client_auth`: a certificate issued by a CA the server trusts,
    /// presented in the TLS handshake; `client_id` in the form body (RFC
    /// 8705 §2.1).
    TlsClientAuth,
    /// `self_signed_tls_client_auth`: a self-signed certificate registered
    /// with the server, presented in the TLS handshake; `client_id` in the
    /// form body (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

impl ClientAuthMethod {
    /// The registry name, e.g. `client_secret_basic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::None => "none",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
            ClientAuthMethod::ClientSecretJwt => "client_secret_jwt",
            ClientAuthMethod::Anonymous => "anonymous",
            ClientAuthMethod::TlsClientAuth => "tls_client_auth",
            ClientAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client's identity and how it proves it to the token endpoint.
///
/// * [`basic`](Self::basic) — `client_secret_basic`: `Authorization: Basic
///   base64(urlencode(id) ":" urlencode(secret))`. RFC 6749 §2.3.1 requires
///   the id and secret to be `application/x-www-form-urlencoded` *before*
///   base64, so a secret with `:`, `%` or `+` survives. A space is encoded
///   as `%20`, never `+`: servers agree on what `%20` means, not on `+`.
/// * [`post`](Self::post) — `client_secret_post`: `client_id` and
///   `client_secret` in the request body. RFC 6749 says servers may refuse
///   it; use it only when the server asks for it.
/// * [`none`](Self::none) — a public client: `client_id` in the body, no
///   secret.
/// * `private_key_jwt` (feature `private-key-jwt`) — a new JWT signed by
///   the client's private key in each request, as `client_assertion`:
///   no shared secret crosses the network. See `ClientAssertionKey`
///   (in [`oauth`](super), with that feature).
/// * `client_secret_jwt` (feature `private-key-jwt`) — a new JWT signed
///   with HMAC-SHA256 keyed by the client secret in each request: the
///   secret stays with the client. The secret must be at least 32 bytes
///   (RFC 7518 §3.2), or the endpoint's build fails.
/// * [`tls_client_auth`](Self::tls_client_auth) and
///   [`self_signed_tls_client_auth`](Self::self_signed_tls_client_auth) —
///   mutual TLS (RFC 8705): the client's certificate in the TLS handshake
///   (`ClientCertificate` on the built-in transport, feature `https`, or
///   your own transport's), `client_id` in the body.
///
/// `Debug` shows the client id and the method, never the secret (B8).
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{ClientAuth, ClientAuthMethod};
///
/// let auth = ClientAuth::basic("my-client", "my-secret");
/// assert_eq!(auth.method(), ClientAuthMethod::ClientSecretBasic);
/// assert_eq!(auth.client_id(), "my-client");
/// // The secret never shows in Debug output.
/// assert!(!format!("{auth:?}").contains("my-secret"));
/// ```
#[derive(Clone)]
pub struct ClientAuth {
    client_id: String,
    credential: Credential,
    /// The `aud` of `private_key_jwt` assertions; the token endpoint URL
    /// when `None`. Set for another method, it fails the endpoint's build.
    #[cfg(feature = "private-key-jwt")]
    assertion_audience: Option<String>,
}

#[derive(Clone)]
enum Credential {
    Basic(ClientSecret),
    Post(ClientSecret),
    None,
    Anonymous,
    /// Mutual TLS; `true` for a self-signed certificate.
    Tls(bool),
    #[cfg(feature = "private-key-jwt")]
    PrivateKeyJwt(super::ClientAssertionKey),
    #[cfg(feature = "private-key-jwt")]
    SecretJwt(ClientSecret),
}

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
#[cfg(feature = "private-key-jwt")]
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl ClientAuth {
    fn with(client_id: String, credential: Credential) -> Self {
        ClientAuth {
            client_id,
            credential,
            #[cfg(feature = "private-key-jwt")]
            assertion_audience: None,
        }
    }

    /// `client_secret_basic`: the id and secret in an HTTP Basic header.
    pub fn basic(client_id: impl Into<String>, secret: impl Into<ClientSecret>) -> Self {
        Self::with(client_id.into(), Credential::Basic(secret.into()))
    }

    /// `client_secret_post`: the id and secret in the form body.
    pub fn post(client_id: impl Into<String>, secret: impl Into<ClientSecret>) -> Self {
        Self::with(client_id.into(), Credential::Post(secret.into()))
    }

    /// `none`: a public client that sends only its `client_id`.
    pub fn none(client_id: impl Into<String>) -> Self {
        Self::with(client_id.into(), Credential::None)
    }

    /// No client at all: requests carry no client id and no client
    /// credential. For a custom endpoint whose login carries the user's own
    /// credentials ([`CustomGrant`](super::CustomGrant)); an RFC 6749
    /// server wants a client id.
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAuth, ClientAuthMethod};
    ///
    /// let auth = ClientAuth::anonymous();
    /// assert_eq!(auth.method(), ClientAuthMethod::Anonymous);
    /// assert_eq!(auth.client_id(), "");
    /// ```
    pub fn anonymous() -> Self {
        Self::with(String::new(), Credential::Anonymous)
    }

    /// `tls_client_auth` (RFC 8705 §2.1): the client proves who it is with
    /// a certificate from a CA the server trusts, in the TLS handshake, and
    /// sends its `client_id` in the form body. Give the certificate to the
    /// built-in transport with
    /// `TokenEndpointBuilder::client_certificate` (feature `https`), or
    /// use a [`transport`](super::TokenEndpointBuilder::transport) that
    /// presents it; with neither, the endpoint's build fails.
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAuth, ClientAuthMethod};
    ///
    /// let auth = ClientAuth::tls_client_auth("my-client");
    /// assert_eq!(auth.method(), ClientAuthMethod::TlsClientAuth);
    /// assert!(auth.secret().is_none());
    /// ```
    pub fn tls_client_auth(client_id: impl Into<String>) -> Self {
        Self::with(client_id.into(), Credential::Tls(false))
    }

    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): as
    /// [`tls_client_auth`](Self::tls_client_auth), with a self-signed
    /// certificate registered with the server (its JWKS).
    pub fn self_signed_tls_client_auth(client_id: impl Into<String>) -> Self {
        Self::with(client_id.into(), Credential::Tls(true))
    }

    /// `private_key_jwt`: each token request carries a new JWT signed with
    /// `key` (RFC 7523 §2.2), and `client_id` in the form body. The JWT's
    /// audience is the token endpoint URL; see
    /// [`assertion_audience`](Self::assertion_audience).
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAssertionKey, ClientAuth, ClientAuthMethod};
    ///
    /// # let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    /// let key = ClientAssertionKey::from_pem(pem)?;
    /// let auth = ClientAuth::private_key_jwt("my-client", key)
    ///     .assertion_audience("https://idp.example");
    /// assert_eq!(auth.method(), ClientAuthMethod::PrivateKeyJwt);
    /// # Ok::<_, tower_bearer::ConfigError>(())
    /// ```
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn private_key_jwt(client_id: impl Into<String>, key: super::ClientAssertionKey) -> Self {
        Self::with(client_id.into(), Credential::PrivateKeyJwt(key))
    }

    /// `client_secret_jwt`: a JWT signed with HMAC-SHA256 keyed by
    /// `secret`, new for each token request (RFC 7523 §2.2, OpenID Connect
    /// Core §9). The secret must be at least 32 bytes (RFC 7518 §3.2):
    /// [`TokenEndpointBuilder::build`](super::TokenEndpointBuilder::build)
    /// fails on a shorter one.
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAuth, ClientAuthMethod, TokenEndpoint};
    ///
    /// let auth = ClientAuth::client_secret_jwt("my-client", "a-secret-of-at-least-thirty-two-bytes");
    /// assert_eq!(auth.method(), ClientAuthMethod::ClientSecretJwt);
    /// let endpoint = TokenEndpoint::builder("https://idp.example/oauth2/token", auth).build()?;
    /// # drop(endpoint);
    ///
    /// let short = ClientAuth::client_secret_jwt("my-client", "too-short");
    /// assert!(TokenEndpoint::builder("https://idp.example/oauth2/token", short).build().is_err());
    /// # Ok::<_, tower_bearer::ConfigError>(())
    /// ```
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn client_secret_jwt(
        client_id: impl Into<String>,
        secret: impl Into<ClientSecret>,
    ) -> Self {
        Self::with(client_id.into(), Credential::SecretJwt(secret.into()))
    }

    /// For `private_key_jwt` and `client_secret_jwt`: the `aud` claim of the assertions, instead of
    /// the token endpoint URL. Servers accept their issuer identifier (and
    /// recent advice prefers it, so that an assertion made for one server
    /// is useless at another); some accept only one of the two. With any
    /// other method, [`TokenEndpointBuilder::build`](super::TokenEndpointBuilder::build)
    /// fails: the setting would be ignored.
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion_audience = Some(audience.into());
        self
    }

    /// A setting that the method would ignore, as a build error.
    pub(crate) fn check(&self) -> Result<(), crate::ConfigError> {
        #[cfg(feature = "private-key-jwt")]
        if self.assertion_audience.is_some()
            && !matches!(
                self.method(),
                ClientAuthMethod::PrivateKeyJwt | ClientAuthMethod::ClientSecretJwt
            )
        {
            return Err(crate::ConfigError::new(
                "assertion_audience applies to private_key_jwt and client_secret_jwt only",
            ));
        }
        #[cfg(feature = "private-key-jwt")]
        if let Credential::SecretJwt(secret) = &self.credential
            && secret.secret().len() < super::assertion::MIN_HS256_SECRET
        {
            return Err(crate::ConfigError::new(
                "client_secret_jwt needs a client secret of at least 32 bytes (RFC 7518 section 3.2)",
            ));
        }
        Ok(())
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The authentication method.
    pub fn method(&self) -> ClientAuthMethod {
        match self.credential {
            Credential::Basic(_) => ClientAuthMethod::ClientSecretBasic,
            Credential::Post(_) => ClientAuthMethod::ClientSecretPost,
            Credential::None => ClientAuthMethod::None,
            Credential::Anonymous => ClientAuthMethod::Anonymous,
            Credential::Tls(false) => ClientAuthMethod::TlsClientAuth,
            Credential::Tls(true) => ClientAuthMethod::SelfSignedTlsClientAuth,
            #[cfg(feature = "private-key-jwt")]
            Credential::PrivateKeyJwt(_) => ClientAuthMethod::PrivateKeyJwt,
            #[cfg(feature = "private-key-jwt")]
            Credential::SecretJwt(_) => ClientAuthMethod::ClientSecretJwt,
        }
    }

    /// The client secret, if the method uses one.
    pub fn secret(&self) -> Option<&ClientSecret> {
        match &self.credential {
            Credential::Basic(secret) | Credential::Post(secret) => Some(secret),
            #[cfg(feature = "private-key-jwt")]
            Credential::SecretJwt(secret) => Some(secret),
            _ => None,
        }
    }

    /// The `Authorization` header for `client_secret_basic`, marked
    /// sensitive; `None` for the other methods.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        let Credential::Basic(secret) = &self.credential else {
            return None;
        };
        let mut value = HeaderValue::try_from(format!(
            "Basic {}",
            basic_credentials(&self.client_id, secret.secret())
        ))
        // Base64 output is always a valid header value.
        .ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Appends the form parameters of `client_secret_post`, `none` and
    /// the JWT methods. A client assertion made for this request (to
    /// `token_url`, unless another audience was set) is added to `secrets`
    /// too, so that no error quotes it.
    pub(crate) fn append_form(
        &self,
        form: &mut form_urlencoded::Serializer<'_, String>,
        token_url: &str,
        secrets: &mut Vec<String>,
    ) -> Result<(), crate::Error> {
        match &self.credential {
            Credential::Basic(_) | Credential::Anonymous => {}
            Credential::Post(secret) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret.secret());
            }
            Credential::None | Credential::Tls(_) => {
                form.append_pair("client_id", &self.client_id);
            }
            #[cfg(feature = "private-key-jwt")]
            Credential::PrivateKeyJwt(key) => {
                let audience = self.assertion_audience.as_deref().unwrap_or(token_url);
                let assertion = key.assertion(&self.client_id, audience)?;
                self.append_assertion(form, assertion, secrets);
            }
            #[cfg(feature = "private-key-jwt")]
            Credential::SecretJwt(secret) => {
                let audience = self.assertion_audience.as_deref().unwrap_or(token_url);
                let assertion =
                    super::assertion::secret_assertion(secret.secret(), &self.client_id, audience)?;
                self.append_assertion(form, assertion, secrets);
            }
        }
        let _ = (token_url, secrets);
        Ok(())
    }

    /// The form parameters of a JWT client assertion; the assertion, and
    /// its signature should a server quote only the end of it, go to
    /// `secrets` so that no error quotes them.
    #[cfg(feature = "private-key-jwt")]
    fn append_assertion(
        &self,
        form: &mut form_urlencoded::Serializer<'_, String>,
        assertion: String,
        secrets: &mut Vec<String>,
    ) {
        form.append_pair("client_id", &self.client_id);
        form.append_pair("client_assertion_type", JWT_BEARER);
        form.append_pair("client_assertion", &assertion);
        if let Some((_, signature)) = assertion.rsplit_once('.') {
            secrets.push(signature.to_owned());
        }
        secrets.push(assertion);
    }

    /// Every form in which the secret could be echoed back by a server: as
    /// is, form-urlencoded, and the base64 Basic credentials. Error
    /// snippets are scrubbed of these (B8).
    pub(crate) fn secret_forms(&self, out: &mut Vec<String>) {
        if let Some(secret) = self.secret() {
            push_forms(out, secret.secret());
            if let Credential::Basic(_) = self.credential {
                out.push(basic_credentials(&self.client_id, secret.secret()));
            }
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientAuth");
        d.field("client_id", &self.client_id)
            .field("method", &self.method().as_str());
        if let Some(secret) = self.secret() {
            d.field("secret", secret);
        }
        #[cfg(feature = "private-key-jwt")]
        if let Credential::PrivateKeyJwt(key) = &self.credential {
            d.field("key", key);
        }
        #[cfg(feature = "private-key-jwt")]
        if let Some(audience) = &self.assertion_audience {
            d.field("assertion_audience", audience);
        }
        d.finish()
    }
}

/// `base64(urlencode(id) ":" urlencode(secret))`, RFC 6749 §2.3.1.
pub(crate) fn basic_credentials(client_id: &str, secret: &str) -> String {
    let joined = format!("{}:{}", form_encode(client_id), form_encode(secret));
    base64::engine::general_purpose::STANDARD.encode(joined)
}

/// `application/x-www-form-urlencoded` encoding (RFC 6749 Appendix B), with
/// a space as `%20` instead of `+`.
///
/// `byte_serialize` turns a space into `+` and a literal `+` into `%2B`, so
/// every `+` in its output stands for a space and can be replaced.
pub(crate) fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Adds a secret and its form-urlencoded spellings (with `+` and with `%20`
/// for a space) to a redaction list.
pub(crate) fn push_forms(out: &mut Vec<String>, secret: &str) {
    if secret.is_empty() {
        return;
    }
    let plus: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent = form_encode(secret);
    out.push(secret.to_owned());
    if plus != secret {
        out.push(plus);
    }
    if percent != secret {
        out.push(percent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret of the peer's `peer special:client` (shared/peers).
    const SPECIAL_ID: &str = "peer special:client";
    const SPECIAL_SECRET: &str = "s3cr3t with space:colon/slash+plus%percent&amp=eq";

    fn decoded_basic(auth: &ClientAuth) -> String {
        let header = auth.authorization().unwrap();
        assert!(header.is_sensitive());
        let b64 = header.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn basic_form_urlencodes_id_and_secret_before_base64_with_space_as_percent_20() {
        let auth = ClientAuth::basic(SPECIAL_ID, SPECIAL_SECRET);
        assert_eq!(
            decoded_basic(&auth),
            "peer%20special%3Aclient:\
             s3cr3t%20with%20space%3Acolon%2Fslash%2Bplus%25percent%26amp%3Deq"
        );
    }

    #[test]
    fn basic_leaves_unreserved_characters_alone() {
        let auth = ClientAuth::basic("client-1_a.b*", "AZaz09-._*");
        assert_eq!(decoded_basic(&auth), "client-1_a.b*:AZaz09-._*");
    }

    #[test]
    fn basic_encodes_non_ascii_as_utf8_percent_escapes() {
        let auth = ClientAuth::basic("ü", "é ~");
        assert_eq!(decoded_basic(&auth), "%C3%BC:%C3%A9%20%7E");
    }

    #[test]
    fn post_and_none_put_the_client_in_the_body_and_send_no_header() {
        let mut form = form_urlencoded::Serializer::new(String::new());
        let post = ClientAuth::post(SPECIAL_ID, SPECIAL_SECRET);
        assert!(post.authorization().is_none());
        post.append_form(&mut form, "https://a.example/t", &mut Vec::new())
            .unwrap();
        let body = form.finish();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            pairs,
            [
                ("client_id".to_owned(), SPECIAL_ID.to_owned()),
                ("client_secret".to_owned(), SPECIAL_SECRET.to_owned()),
            ]
        );

        let mut form = form_urlencoded::Serializer::new(String::new());
        let public = ClientAuth::none("public-app");
        assert!(public.authorization().is_none());
        assert!(public.secret().is_none());
        public
            .append_form(&mut form, "https://a.example/t", &mut Vec::new())
            .unwrap();
        assert_eq!(form.finish(), "client_id=public-app");
    }

    #[test]
    fn b8_debug_shows_the_method_but_never_the_secret() {
        for auth in [
            ClientAuth::basic("id", SPECIAL_SECRET),
            ClientAuth::post("id", SPECIAL_SECRET),
        ] {
            let debug = format!("{auth:?}");
            assert!(!debug.contains("s3cr3t"), "{debug}");
            assert!(debug.contains(auth.method().as_str()), "{debug}");
            assert!(debug.contains("[redacted]"), "{debug}");
        }
    }

    #[test]
    fn secret_forms_cover_every_spelling_a_server_could_echo() {
        let auth = ClientAuth::basic(SPECIAL_ID, "a b+c");
        let mut forms = Vec::new();
        auth.secret_forms(&mut forms);
        for expected in ["a b+c", "a+b%2Bc", "a%20b%2Bc"] {
            assert!(forms.iter().any(|f| f == expected), "{expected}");
        }
        assert!(forms.contains(&basic_credentials(SPECIAL_ID, "a b+c")));
    }
}
