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
}

impl ClientAuthMethod {
    /// The registry name, e.g. `client_secret_basic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::None => "none",
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
}

#[derive(Clone)]
enum Credential {
    Basic(ClientSecret),
    Post(ClientSecret),
    None,
}

impl ClientAuth {
    /// `client_secret_basic`: the id and secret in an HTTP Basic header.
    pub fn basic(client_id: impl Into<String>, secret: impl Into<ClientSecret>) -> Self {
        ClientAuth {
            client_id: client_id.into(),
            credential: Credential::Basic(secret.into()),
        }
    }

    /// `client_secret_post`: the id and secret in the form body.
    pub fn post(client_id: impl Into<String>, secret: impl Into<ClientSecret>) -> Self {
        ClientAuth {
            client_id: client_id.into(),
            credential: Credential::Post(secret.into()),
        }
    }

    /// `none`: a public client that sends only its `client_id`.
    pub fn none(client_id: impl Into<String>) -> Self {
        ClientAuth {
            client_id: client_id.into(),
            credential: Credential::None,
        }
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
        }
    }

    /// The client secret, if the method uses one.
    pub fn secret(&self) -> Option<&ClientSecret> {
        match &self.credential {
            Credential::Basic(secret) | Credential::Post(secret) => Some(secret),
            Credential::None => None,
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

    /// Appends the form parameters of `client_secret_post` and `none`.
    pub(crate) fn append_form(&self, form: &mut form_urlencoded::Serializer<'_, String>) {
        match &self.credential {
            Credential::Basic(_) => {}
            Credential::Post(secret) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret.secret());
            }
            Credential::None => {
                form.append_pair("client_id", &self.client_id);
            }
        }
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
        post.append_form(&mut form);
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
        public.append_form(&mut form);
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
