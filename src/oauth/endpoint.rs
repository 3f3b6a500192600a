//! [`TokenEndpoint`]: where and how token requests are sent.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use tower_service::Service;

use super::client_auth::ClientAuth;
use super::response;
use super::transport::{ServiceTransport, Tls, Transport};
use crate::{BoxError, ConfigError, Error, Token};

/// Default cap on a token response body: 64 KiB. Real token responses are a
/// few KiB at most (a JWT access token plus an ID token); an endpoint that
/// sends more is broken or hostile.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 * 1024;

/// Default time limit of one token request, from sending it to reading the
/// whole response: 30 s. A backstop for grants used on their own: under a
/// [`TokenCache`](crate::TokenCache) the cache's per-attempt timeout (10 s
/// by default) fires first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Form parameters the grants set themselves. Setting them by hand would
/// send them twice or clash with the client authentication.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "username",
    "password",
    "refresh_token",
    "scope",
];

/// The body of a custom endpoint's login or refresh
/// ([`CustomGrant`](super::CustomGrant)): a JSON object, or form fields.
///
/// Sent as given, with `Content-Type: application/json` or
/// `application/x-www-form-urlencoded`, plus what the endpoint's
/// [`ClientAuth`] adds (an `Authorization` header, or fields; none for
/// [`ClientAuth::anonymous`]). Every string in it counts as a secret: no
/// error quotes one, and `Debug` shows the field names only (B8).
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::RequestBody;
///
/// let login = RequestBody::json(serde_json::json!({"username": "demo", "password": "hunter2"}));
/// let form = RequestBody::form([("user", "demo"), ("pass", "hunter2")]);
/// assert!(!format!("{login:?} {form:?}").contains("hunter2"));
/// ```
#[derive(Clone)]
pub struct RequestBody(BodyRepr);

#[derive(Clone)]
enum BodyRepr {
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
}

impl RequestBody {
    /// A JSON body, usually an object. Client authentication that adds
    /// fields (`post`, `none`, `private_key_jwt`) needs an object.
    pub fn json(value: serde_json::Value) -> Self {
        RequestBody(BodyRepr::Json(value))
    }

    /// A form body (`application/x-www-form-urlencoded`), fields in order.
    pub fn form<I, K, V>(fields: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        RequestBody(BodyRepr::Form(
            fields
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// Every string value in it, for scrubbing (B8).
    fn secrets(&self, out: &mut Vec<String>) {
        fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::String(s) if !s.is_empty() => {
                    super::client_auth::push_forms(out, s);
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        match &self.0 {
            BodyRepr::Json(value) => walk(value, out),
            BodyRepr::Form(fields) => {
                for (_, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                    super::client_auth::push_forms(out, value);
                }
            }
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            BodyRepr::Json(serde_json::Value::Object(map)) => f
                .debug_tuple("RequestBody::json")
                .field(&map.keys().collect::<Vec<_>>())
                .finish(),
            BodyRepr::Json(_) => f.write_str("RequestBody::json(..)"),
            BodyRepr::Form(fields) => f
                .debug_tuple("RequestBody::form")
                .field(&fields.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Whether a token request asks for the configured `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The primary grants ask for the endpoint's `scope`, if one is set.
    Configured,
    /// Refreshes leave `scope` out, which asks for the scope originally
    /// granted (RFC 6749 §6).
    AsGranted,
}

/// A token endpoint: URL, client authentication, extra parameters, limits
/// and transport. Built with [`TokenEndpoint::builder`], shared by the
/// grants.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_bearer::oauth::{ClientAuth, TokenEndpoint};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::ConfigError> {
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::basic("my-client", "my-secret"),
/// )
/// .scope("api:read api:write")
/// .resource("https://api.example/")
/// .timeout(Duration::from_secs(5))
/// .build()?;
/// assert_eq!(endpoint.url(), "https://idp.example/oauth2/token");
/// # Ok(())
/// # }
/// ```
///
/// # Transport safety (B9)
///
/// * The URL must be `https`, unless its host is loopback (`127.0.0.0/8`,
///   `::1`, `localhost`) or plain HTTP was allowed with
///   [`allow_insecure_http`](TokenEndpointBuilder::allow_insecure_http).
///   A URL with credentials in it (`https://user:pass@…`) is refused.
/// * Redirects are not followed: a 3xx is a permanent error.
/// * Response bodies over [`max_response_size`](TokenEndpointBuilder::max_response_size)
///   (default [`DEFAULT_MAX_RESPONSE_SIZE`], 64 KiB) are refused as soon as
///   the `Content-Length` or the running total passes it.
///
/// Cheap to clone. `Debug` shows the URL (without its query), the client
/// id, the authentication method and the parameter names, never a secret
/// or a parameter value other than the scope (B8).
#[derive(Clone)]
pub struct TokenEndpoint {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    uri: Uri,
    client_auth: ClientAuth,
    scope: Option<String>,
    params: Vec<(String, String)>,
    timeout: Option<Duration>,
    max_response_size: usize,
    transport: Arc<dyn Transport>,
    user_agent: HeaderValue,
    /// The key token requests prove, and tokens get bound to (RFC 9449).
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Dpop>,
}

impl TokenEndpoint {
    /// A builder for the endpoint at `url`, with the given client
    /// authentication.
    pub fn builder(url: impl Into<String>, client_auth: ClientAuth) -> TokenEndpointBuilder {
        TokenEndpointBuilder {
            url: url.into(),
            client_auth,
            scope: None,
            params: Vec::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            allow_insecure_http: false,
            transport: None,
            tls: Tls::default(),
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// The token endpoint's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The client authentication.
    pub fn client_auth(&self) -> &ClientAuth {
        &self.inner.client_auth
    }

    /// The `scope` sent with the primary grants, if any.
    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// The extra parameters (`audience`, `resource`, …), in the order they
    /// were set.
    pub(crate) fn params(&self) -> &[(String, String)] {
        &self.inner.params
    }

    /// This endpoint, asking for `params` instead of its own scope,
    /// `audience`, `resource` and `claims` (the scope as
    /// [`TokenParams::scope_for`] says; its other parameters kept).
    pub(crate) fn with_params(&self, params: &crate::TokenParams) -> TokenEndpoint {
        let inner = &*self.inner;
        let replaced = |name: &str| match name {
            "audience" => params.audience_str().is_some(),
            "resource" => !params.resources().is_empty(),
            "claims" => params.claims_str().is_some(),
            _ => false,
        };
        let mut extra: Vec<(String, String)> = inner
            .params
            .iter()
            .filter(|(name, _)| !replaced(name))
            .cloned()
            .collect();
        if let Some(audience) = params.audience_str() {
            extra.push(("audience".to_owned(), audience.to_owned()));
        }
        for resource in params.resources() {
            extra.push(("resource".to_owned(), resource.clone()));
        }
        if let Some(claims) = params.claims_str() {
            extra.push(("claims".to_owned(), claims.to_owned()));
        }
        TokenEndpoint {
            inner: Arc::new(Inner {
                url: inner.url.clone(),
                uri: inner.uri.clone(),
                client_auth: inner.client_auth.clone(),
                scope: params.scope_for(inner.scope.as_deref()),
                params: extra,
                timeout: inner.timeout,
                max_response_size: inner.max_response_size,
                transport: inner.transport.clone(),
                user_agent: inner.user_agent.clone(),
                #[cfg(feature = "dpop")]
                dpop: inner.dpop.clone(),
            }),
        }
    }

    /// Builds the `POST` for one grant. `grant` holds `grant_type` and the
    /// grant's own parameters; then come the `scope` as `scope` says, the
    /// extra parameters (`audience`, `resource`, …) and the client
    /// authentication.
    /// A client assertion made for the request is added to `secrets`.
    pub(crate) fn request(
        &self,
        grant: &[(&str, &str)],
        scope: Scope,
        secrets: &mut Vec<String>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let inner = &*self.inner;
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in grant {
            form.append_pair(name, value);
        }
        if let (Scope::Configured, Some(scope)) = (scope, &inner.scope) {
            form.append_pair("scope", scope);
        }
        for (name, value) in &inner.params {
            form.append_pair(name, value);
        }
        inner
            .client_auth
            .append_form(&mut form, &inner.url, secrets)?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(inner.uri.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, inner.user_agent.clone())
            .body(Full::new(Bytes::from(form.finish())))
            .map_err(|_| Error::permanent("could not build the token request"))?;
        if let Some(authorization) = inner.client_auth.authorization() {
            request.headers_mut().insert(AUTHORIZATION, authorization);
        }
        Ok(request)
    }

    /// A custom endpoint's request: `body` as given, plus the client
    /// authentication. Its strings join `secrets`.
    pub(crate) fn custom_request(
        &self,
        body: &RequestBody,
        secrets: &mut Vec<String>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let inner = &*self.inner;
        body.secrets(secrets);
        // The client authentication's fields, if its method has any.
        let mut auth = form_urlencoded::Serializer::new(String::new());
        inner
            .client_auth
            .append_form(&mut auth, &inner.url, secrets)?;
        let auth = auth.finish();
        let auth_fields = form_urlencoded::parse(auth.as_bytes());
        let (content_type, bytes) = match &body.0 {
            BodyRepr::Json(value) => {
                let mut value = value.clone();
                if auth_fields.clone().next().is_some() {
                    let serde_json::Value::Object(object) = &mut value else {
                        return Err(Error::permanent(
                            "this client authentication adds fields, which needs a JSON object body",
                        ));
                    };
                    for (name, field) in auth_fields {
                        object.insert(name.into_owned(), field.into_owned().into());
                    }
                }
                let bytes = serde_json::to_vec(&value)
                    .map_err(|_| Error::permanent("could not encode the token request"))?;
                ("application/json", bytes)
            }
            BodyRepr::Form(fields) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (name, value) in fields {
                    form.append_pair(name, value);
                }
                form.extend_pairs(auth_fields);
                (
                    "application/x-www-form-urlencoded",
                    form.finish().into_bytes(),
                )
            }
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(inner.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, inner.user_agent.clone())
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|_| Error::permanent("could not build the token request"))?;
        if let Some(authorization) = inner.client_auth.authorization() {
            request.headers_mut().insert(AUTHORIZATION, authorization);
        }
        Ok(request)
    }

    /// Sends a request built by [`request`](Self::request) or
    /// [`custom_request`](Self::custom_request) and parses the response.
    /// `secrets` are scrubbed from anything an error quotes; `fields` are
    /// the (standard, endpoint's) names of renamed response fields.
    pub(crate) async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        secrets: &[String],
        reading: response::Reading<'_>,
    ) -> Result<Token, Error> {
        #[cfg(feature = "dpop")]
        if let Some(dpop) = &self.inner.dpop {
            return self
                .exchange_with_dpop(dpop, request, secrets, reading)
                .await;
        }
        let response = self.send(request).await?;
        let (parts, body) = response.into_parts();
        let token = response::parse(parts.status, &parts.headers, &body, secrets, reading)?;
        if *token.token_type() == crate::TokenType::DPoP {
            return Err(Error::invalid_response(
                "the token endpoint issued a DPoP-bound token, and this endpoint has no DPoP key",
            ));
        }
        Ok(token)
    }

    /// One request, within the endpoint's timeout.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<http::Response<Bytes>, Error> {
        let inner = &*self.inner;
        let send = inner.transport.send(request, inner.max_response_size);
        match inner.timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| Error::timeout(limit))?,
            None => send.await,
        }
    }

    /// [`exchange`](Self::exchange) with a DPoP proof on the request (and
    /// on its one retry when the server demands a nonce, RFC 9449 §8).
    #[cfg(feature = "dpop")]
    async fn exchange_with_dpop(
        &self,
        dpop: &crate::dpop::Dpop,
        request: Request<Full<Bytes>>,
        secrets: &[String],
        reading: response::Reading<'_>,
    ) -> Result<Token, Error> {
        use http_body_util::BodyExt as _;

        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        let mut nonce_retried = false;
        loop {
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            let proof = dpop.proof(&Method::POST, &parts.uri, None)?;
            request.headers_mut().insert(crate::dpop::DPOP, proof);
            let response = self.send(request).await?;
            let (response, body_bytes) = response.into_parts();
            let new_nonce = dpop.observe(&parts.uri, &response.headers);
            match response::parse(
                response.status,
                &response.headers,
                &body_bytes,
                secrets,
                reading,
            ) {
                Err(error) if !nonce_retried && new_nonce && is_use_dpop_nonce(&error) => {
                    tracing::debug!(
                        "the token endpoint demands a DPoP nonce; sending again with it"
                    );
                    nonce_retried = true;
                }
                Err(error) => return Err(error),
                Ok(token) if *token.token_type() == crate::TokenType::DPoP => {
                    return Ok(token.with_dpop(dpop.clone()));
                }
                Ok(_) => {
                    return Err(Error::invalid_response(
                        "the token endpoint answered a DPoP token request with a token that is not DPoP-bound",
                    ));
                }
            }
        }
    }

    /// The client secret in every encoding it is sent in.
    pub(crate) fn secret_forms(&self, out: &mut Vec<String>) {
        self.inner.client_auth.secret_forms(out);
    }
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let names: Vec<&str> = inner.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TokenEndpoint")
            .field("url", &format_args!("{}", redacted_url(&inner.uri)))
            .field("client_auth", &inner.client_auth)
            .field("scope", &inner.scope)
            .field("params", &names)
            .field("timeout", &inner.timeout)
            .field("max_response_size", &inner.max_response_size)
            .finish_non_exhaustive()
    }
}

/// Whether a token endpoint's error demands a DPoP nonce.
#[cfg(feature = "dpop")]
fn is_use_dpop_nonce(error: &Error) -> bool {
    error
        .oauth_error()
        .is_some_and(|e| e.code().as_str() == "use_dpop_nonce")
}

/// The URL without its query, which could carry an API key.
fn redacted_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("");
    // B8: user info (`user:password@`) is a secret; keep the host and port.
    let authority = uri.authority().map_or("", |a| {
        let authority = a.as_str();
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
    });
    let query = if uri.query().is_some() { "?…" } else { "" };
    format!("{scheme}://{authority}{}{query}", uri.path())
}

/// Configures a [`TokenEndpoint`]; [`build`](Self::build) checks the
/// settings.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::oauth::{ClientAuth, TokenEndpoint};
///
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::basic("my-client", "my-secret"),
/// )
/// .scope("read write")
/// .audience("https://api.example")
/// .timeout(Duration::from_secs(5))
/// .build()?;
/// assert_eq!(endpoint.url(), "https://idp.example/oauth2/token");
///
/// // Plain HTTP to a host that is not loopback is refused (B9).
/// let insecure = TokenEndpoint::builder("http://idp.example/token", ClientAuth::none("id")).build();
/// assert!(insecure.is_err());
/// # Ok::<_, tower_bearer::ConfigError>(())
/// ```
#[must_use]
pub struct TokenEndpointBuilder {
    url: String,
    client_auth: ClientAuth,
    scope: Option<String>,
    params: Vec<(String, String)>,
    timeout: Option<Duration>,
    max_response_size: usize,
    allow_insecure_http: bool,
    transport: Option<Arc<dyn Transport>>,
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Dpop>,
    /// TLS settings of the built-in transport.
    tls: Tls,
}

impl TokenEndpointBuilder {
    /// Binds tokens to a DPoP key (RFC 9449, feature `dpop`): every token
    /// request carries a proof, the server's `use_dpop_nonce` is answered
    /// once with the nonce it gave, and the response must be a `DPoP`
    /// token, which requests then prove. See [`dpop`](crate::dpop).
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// The `scope` to ask for (space-separated, RFC 6749 §3.3), sent with the
    /// client credentials and password grants. Refreshes leave it out, which
    /// asks for the scope originally granted (RFC 6749 §6).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The `audience` parameter, as Auth0, Okta and RFC 8693 use it. Sent
    /// with every grant.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }

    /// A `resource` indicator (RFC 8707), an absolute URI. Repeatable: each
    /// call adds one. Sent with every grant.
    pub fn resource(self, resource: impl Into<String>) -> Self {
        self.param("resource", resource)
    }

    /// Any other form parameter, sent with every grant. Repeatable. The
    /// names the grants set themselves (`grant_type`, `client_id`,
    /// `client_secret`, `username`, `password`, `refresh_token`, `scope`, …)
    /// are refused by [`build`](Self::build).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The time limit of one token request, from sending it to reading the
    /// whole response (default [`DEFAULT_TIMEOUT`]). When it passes, the
    /// attempt fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout),
    /// which is transient.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// No time limit of the endpoint's own; the cache's per-attempt timeout
    /// still applies.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The largest response body accepted, in bytes (default
    /// [`DEFAULT_MAX_RESPONSE_SIZE`]).
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// Allows a plain `http` URL to a host that is not loopback. Client
    /// secrets, passwords and tokens then cross the network in clear text:
    /// only for a token endpoint behind a TLS-terminating sidecar or in a
    /// test network.
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Trusts the certificates in `pem` (one or more `CERTIFICATE`
    /// sections) as roots, in addition to the webpki roots the built-in
    /// HTTPS transport trusts: for an authorization server whose
    /// certificate is issued by a private CA. Repeatable.
    ///
    /// [`build`](Self::build) fails when `pem` holds no valid certificate,
    /// or when a custom [`transport`](Self::transport) is set too (configure
    /// its TLS there).
    ///
    /// ```
    /// use tower_bearer::oauth::{ClientAuth, TokenEndpoint};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let pem = rcgen::generate_simple_self_signed(vec!["idp.internal".into()]).unwrap().cert.pem();
    /// // let pem = std::fs::read("/etc/ssl/private-ca.pem")?;
    /// let endpoint = TokenEndpoint::builder(
    ///     "https://idp.internal/oauth2/token",
    ///     ClientAuth::basic("my-client", "my-secret"),
    /// )
    /// .add_root_certificate_pem(pem)
    /// .build()
    /// .unwrap();
    /// # let _ = endpoint;
    /// let bad = TokenEndpoint::builder("https://idp.internal/t", ClientAuth::none("id"))
    ///     .add_root_certificate_pem("not a certificate")
    ///     .build();
    /// assert!(bad.is_err());
    /// # }
    /// ```
    #[cfg(feature = "https")]
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.roots.push(pem.as_ref().to_vec());
        self
    }

    /// The certificate the built-in transport presents to the token
    /// endpoint (feature `https`), for
    /// [`ClientAuth::tls_client_auth`](super::ClientAuth::tls_client_auth)
    /// and [`ClientAuth::self_signed_tls_client_auth`](super::ClientAuth::self_signed_tls_client_auth)
    /// (RFC 8705). See [`ClientCertificate`](super::ClientCertificate),
    /// which can be replaced while the endpoint is in use.
    #[cfg(feature = "https")]
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    pub fn client_certificate(mut self, certificate: super::ClientCertificate) -> Self {
        self.tls.client_certificate = Some(certificate);
        self
    }

    /// Sends token requests through `service` instead of the built-in
    /// client: any tower service over `http::Request<Full<Bytes>>` (a
    /// hyper-util client with your own connector for proxies, custom roots
    /// or client certificates, an adapter for reqwest, a test double). It
    /// must not follow redirects. See [`transport`](super::transport).
    pub fn transport<S, B>(self, service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.custom_transport(ServiceTransport::new(service))
    }

    /// Sends token requests through a [`Transport`] of your own.
    pub fn custom_transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Checks the settings and builds the endpoint.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the URL is not an absolute `http(s)` URL, is
    /// plain HTTP to a host that is not loopback without
    /// [`allow_insecure_http`](Self::allow_insecure_http) (B9), carries
    /// credentials; when a parameter name is reserved, the client id is
    /// empty, a limit is zero; or when there is no transport (neither a
    /// custom one nor the `hyper-client`/`https` feature, or an `https` URL
    /// with only `hyper-client`).
    pub fn build(self) -> Result<TokenEndpoint, ConfigError> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|_| ConfigError::new("the token URL is not a valid URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(ConfigError::new("the token URL must be an absolute URL"));
        };
        if authority.as_str().contains('@') {
            return Err(ConfigError::new(
                "the token URL must not carry credentials; use ClientAuth",
            ));
        }
        let https = match scheme {
            "https" => true,
            "http" if self.allow_insecure_http || is_loopback(authority.host()) => false,
            "http" => {
                return Err(ConfigError::new(
                    "the token URL uses plain http to a host that is not loopback; \
                     use https, or allow_insecure_http() if you must",
                ));
            }
            _ => return Err(ConfigError::new("the token URL must be http or https")),
        };
        self.client_auth.check()?;
        if self.client_auth.client_id().is_empty()
            && self.client_auth.method() != super::ClientAuthMethod::Anonymous
        {
            return Err(ConfigError::new("the client id is empty"));
        }
        if let Some((name, _)) = self
            .params
            .iter()
            .find(|(name, _)| RESERVED_PARAMS.contains(&name.as_str()) || name.is_empty())
        {
            return Err(ConfigError::new(format!(
                "the parameter {name:?} cannot be set by hand"
            )));
        }
        if self.max_response_size == 0 {
            return Err(ConfigError::new("max_response_size must not be zero"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("the timeout must not be zero"));
        }
        let mutual_tls = matches!(
            self.client_auth.method(),
            super::ClientAuthMethod::TlsClientAuth
                | super::ClientAuthMethod::SelfSignedTlsClientAuth
        );
        if self.tls.has_client_certificate() && !mutual_tls {
            return Err(ConfigError::new(
                "a client certificate goes with ClientAuth::tls_client_auth or \
                 self_signed_tls_client_auth",
            ));
        }
        let transport = match self.transport {
            Some(_) if self.tls.is_set() => {
                return Err(ConfigError::new(
                    "root and client certificates apply to the built-in transport only; \
                     configure TLS in the custom transport",
                ));
            }
            Some(transport) => transport,
            None if mutual_tls && !self.tls.has_client_certificate() => {
                return Err(ConfigError::new(
                    "tls_client_auth needs a client certificate: \
                     TokenEndpointBuilder::client_certificate (feature `https`), \
                     or a custom transport that presents one",
                ));
            }
            None if mutual_tls && !https => {
                return Err(ConfigError::new("tls_client_auth needs an https token URL"));
            }
            None => default_transport(https, &self.tls)?,
        };
        Ok(TokenEndpoint {
            inner: Arc::new(Inner {
                url: self.url,
                uri,
                client_auth: self.client_auth,
                scope: self.scope,
                params: self.params,
                timeout: self.timeout,
                max_response_size: self.max_response_size,
                transport,
                user_agent: HeaderValue::from_static(concat!(
                    "tower-bearer/",
                    env!("CARGO_PKG_VERSION")
                )),
                #[cfg(feature = "dpop")]
                dpop: self.dpop,
            }),
        })
    }
}

impl fmt::Debug for TokenEndpointBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        let url = self
            .url
            .parse::<Uri>()
            .map_or_else(|_| "(invalid)".to_owned(), |uri| redacted_url(&uri));
        f.debug_struct("TokenEndpointBuilder")
            .field("url", &url)
            .field("client_auth", &self.client_auth)
            .field("scope", &self.scope)
            .field("params", &names)
            .field("timeout", &self.timeout)
            .field("max_response_size", &self.max_response_size)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("custom_transport", &self.transport.is_some())
            .field("root_certificates", &self.tls.roots.len())
            .field("client_certificate", &self.tls.has_client_certificate())
            .finish()
    }
}

#[cfg(feature = "hyper-client")]
fn default_transport(https: bool, tls: &Tls) -> Result<Arc<dyn Transport>, ConfigError> {
    super::hyper_client::default_transport(https, tls)
}

#[cfg(not(feature = "hyper-client"))]
fn default_transport(_https: bool, _tls: &Tls) -> Result<Arc<dyn Transport>, ConfigError> {
    Err(ConfigError::new(
        "no transport: enable the `https` feature or set one with `transport`",
    ))
}

/// `localhost`, `127.0.0.0/8` and `::1`.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reply = Result<http::Response<Full<Bytes>>, std::convert::Infallible>;
    type Stub = tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> std::future::Ready<Reply>>;

    /// A transport that answers every request with an empty 200.
    fn stub() -> Stub {
        fn reply(_req: Request<Full<Bytes>>) -> std::future::Ready<Reply> {
            std::future::ready(Ok(http::Response::new(Full::default())))
        }
        tower::service_fn(reply as fn(_) -> _)
    }

    fn build(url: &str) -> Result<TokenEndpoint, ConfigError> {
        TokenEndpoint::builder(url, ClientAuth::basic("id", "secret"))
            .transport(stub())
            .build()
    }

    #[test]
    fn b9_https_and_loopback_http_are_accepted() {
        for url in [
            "https://idp.example/token",
            "https://idp.example:8443/t?tenant=a",
            "http://127.0.0.1:9400/token",
            "http://127.1.2.3/token",
            "http://localhost:8080/token",
            "http://LOCALHOST/token",
            "http://[::1]:9400/token",
            "HTTPS://idp.example/token",
            "HTTP://127.0.0.1/token",
        ] {
            assert!(build(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn b9_plain_http_to_other_hosts_is_refused_unless_allowed() {
        for url in [
            "http://idp.example/token",
            "http://10.0.0.1/token",
            "http://[::2]/token",
            "http://localhost.evil.example/token",
            "HTTP://idp.example/token",
            "Http://idp.example/token",
            "http://127.0.0.1.nip.io/token",
            "http://localhost./token",
            "http://[::ffff:127.0.0.1]/token",
            "http://0x7f000001/token",
            "http://2130706433/token",
        ] {
            let err = build(url).unwrap_err();
            assert!(err.to_string().contains("plain http"), "{url}: {err}");
            assert!(
                TokenEndpoint::builder(url, ClientAuth::none("id"))
                    .allow_insecure_http()
                    .transport(stub())
                    .build()
                    .is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn b9_other_schemes_relative_urls_and_credentials_are_refused() {
        for url in [
            "ftp://idp.example/token",
            "/token",
            "idp.example/token",
            "https://user:pass@idp.example/token",
            "http://127.0.0.1@evil.example/token",
            "http://localhost:80@evil.example/token",
            "not a url",
        ] {
            let err = build(url).unwrap_err();
            assert!(!err.to_string().contains("pass@"), "{err}");
        }
        // Credentials are refused even where plain http is allowed.
        let err = TokenEndpoint::builder("http://127.0.0.1@evil.example/", ClientAuth::none("id"))
            .allow_insecure_http()
            .transport(stub())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("credentials"), "{err}");
    }

    #[test]
    fn b8_the_builder_never_prints_user_info_of_its_url() {
        for url in [
            "https://svc-user:hunter2@idp.example/token",
            "https://hunter2@idp.example:8443/token?x=1",
            "https://a@b:hunter2@idp.example/token",
        ] {
            let builder = TokenEndpoint::builder(url, ClientAuth::none("id"));
            let debug = format!("{builder:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("idp.example"), "{debug}");
            let err = builder.build().unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn reserved_parameters_and_zero_limits_are_refused() {
        let builder = || TokenEndpoint::builder("https://a.example/t", ClientAuth::none("id"));
        for name in ["grant_type", "client_secret", "refresh_token", "scope", ""] {
            let err = builder()
                .param(name, "x")
                .transport(stub())
                .build()
                .unwrap_err();
            assert!(err.to_string().contains("cannot be set"), "{err}");
        }
        assert!(
            builder()
                .max_response_size(0)
                .transport(stub())
                .build()
                .is_err()
        );
        assert!(
            builder()
                .timeout(Duration::ZERO)
                .transport(stub())
                .build()
                .is_err()
        );
        assert!(
            TokenEndpoint::builder("https://a.example/t", ClientAuth::none(""))
                .transport(stub())
                .build()
                .is_err()
        );
    }

    #[test]
    fn request_carries_grant_scope_params_and_client_auth_in_order() {
        let endpoint = TokenEndpoint::builder("https://a.example/t", ClientAuth::post("id", "s p"))
            .scope("read write")
            .audience("aud")
            .resource("urn:a")
            .resource("urn:b")
            .transport(stub())
            .build()
            .unwrap();
        let request = endpoint
            .request(
                &[("grant_type", "client_credentials")],
                Scope::Configured,
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(request.headers().get(AUTHORIZATION).is_none());
        let body = http_body_util::BodyExt::collect(request.into_body());
        let body = futures_lite_block_on(body).unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"grant_type=client_credentials&scope=read+write&audience=aud\
              &resource=urn%3Aa&resource=urn%3Ab&client_id=id&client_secret=s+p"
        );

        let refresh = endpoint
            .request(
                &[("grant_type", "refresh_token")],
                Scope::AsGranted,
                &mut Vec::new(),
            )
            .unwrap();
        let body = futures_lite_block_on(http_body_util::BodyExt::collect(refresh.into_body()))
            .unwrap()
            .to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("scope"));
    }

    #[test]
    fn b8_debug_hides_secrets_and_query_values() {
        let endpoint = TokenEndpoint::builder(
            "https://a.example/t?api_key=k3y",
            ClientAuth::basic("id", "hunter2"),
        )
        .param("vendor_secret_param", "v4lue")
        .transport(stub())
        .build()
        .unwrap();
        let debug = format!("{endpoint:?}");
        for secret in ["hunter2", "k3y", "v4lue"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("vendor_secret_param"), "{debug}");
        assert!(debug.contains("https://a.example/t?…"), "{debug}");
    }

    /// Drives a future that never waits (a `Full` body) to completion.
    fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
