//! A test kit (feature `test-kit`): an in-process OAuth2 token endpoint and
//! protected API on loopback, to test your own code against token
//! failures without mocks.
//!
//! [`TestAuthServer`] starts in one line on `127.0.0.1` (a free port) on the
//! current tokio runtime, and stops when dropped. It issues real tokens
//! over real HTTP, and scripts what real servers do:
//!
//! * token lifetime ([`lifetime`](TestAuthServerBuilder::lifetime),
//!   [`set_lifetime`](TestAuthServer::set_lifetime));
//! * refresh-token rotation with reuse detection: a spent refresh token
//!   sent again revokes its whole grant, as oidc-provider, Okta and Auth0
//!   do;
//! * revocation ([`revoke`](TestAuthServer::revoke),
//!   [`revoke_access_tokens`](TestAuthServer::revoke_access_tokens)): the
//!   API then answers 401 `invalid_token`;
//! * answers of the API itself ([`fail_next_api`](TestAuthServer::fail_next_api)):
//!   a 503 for a retry layer to meet, a 401 for a token that is still valid;
//! * a queue of faults for the next token requests ([`Fault`]): 5xx, 429 with
//!   `Retry-After`, no answer, slow answers, HTML error pages, garbage JSON,
//!   `invalid_client`, `invalid_grant`;
//! * counters of everything it saw ([`stats`](TestAuthServer::stats)),
//!   and each API request with its token and body
//!   ([`api_requests`](TestAuthServer::api_requests));
//! * gRPC-style answers for tonic users: a request with `content-type:
//!   application/grpc` gets `grpc-status: 16` (UNAUTHENTICATED) for a bad
//!   token, and one empty message with `grpc-status: 0` for a good one.
//!
//! Grants: client credentials, password and refresh token, for one client
//! (`client_secret_basic` or `_post`; by default `test-client` /
//! `test-client-secret`) and the users you add. The API is every path but
//! `/token`: it answers 200 `{"ok":true,"path":…,"client_id":…}` to a
//! token it issued that is neither expired nor revoked. Access tokens are
//! `at-1`, `at-2`, … and refresh tokens `rt-1`, … (after a
//! [`token_prefix`](TestAuthServerBuilder::token_prefix), if set, so that
//! the tokens of two servers differ). Times follow tokio's clock, so a
//! paused clock ages tokens.
//!
//! # Example
//!
//! A test of your own code: it must get through a token endpoint that
//! fails twice, and through a revoked token.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//! use tower_bearer::test_kit::{Fault, TestAuthServer};
//! use tower_bearer::{AuthLayer, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let server = TestAuthServer::start().await;
//! server.fail_next(Fault::Status(http::StatusCode::BAD_GATEWAY));
//! server.fail_next(Fault::TooManyRequests { retry_after: Duration::from_millis(10) });
//!
//! let cache = TokenCache::new(server.client_credentials());
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<http_body_util::Full<bytes::Bytes>>();
//! let api = AuthLayer::new(cache).layer(client);
//!
//! let call = || http::Request::get(server.url("/v1/things")).body(Default::default()).unwrap();
//! assert_eq!(api.clone().oneshot(call()).await?.status(), 200);
//! server.revoke_access_tokens();
//! assert_eq!(api.clone().oneshot(call()).await?.status(), 200); // a new token, one retry
//!
//! let stats = server.stats();
//! assert_eq!(stats.token_requests, 4); // 502, 429, a token, and one after the revocation
//! assert_eq!(stats.api_rejections, 1);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use crate::oauth::{ClientAuth, ClientCredentialsGrant, PasswordGrant, TokenEndpoint};

/// What the server answers with: a whole body, or a gRPC message and its
/// trailers.
type Answer = Response<Either<Full<Bytes>, GrpcOk>>;

/// The client the server knows by default.
pub const TEST_CLIENT_ID: &str = "test-client";
/// Its secret.
pub const TEST_CLIENT_SECRET: &str = "test-client-secret";

/// What the next token request gets instead of an answer of its grant
/// (queued with [`TestAuthServer::fail_next`], served in order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// This status, with a short plain-text body.
    Status(StatusCode),
    /// 429 with `Retry-After` (in whole seconds, rounded up) and
    /// `{"error":"slow_down"}`.
    TooManyRequests {
        /// The delay asked for.
        retry_after: Duration,
    },
    /// No answer at all, ever (the client's timeout has to end it).
    NoAnswer,
    /// The normal answer, after this long.
    Slow(Duration),
    /// 502 with an HTML error page, as a proxy in front would send.
    HtmlErrorPage,
    /// 200 with a body cut short in the middle of its JSON.
    GarbageJson,
    /// 401 `{"error":"invalid_client"}`.
    InvalidClient,
    /// 400 `{"error":"invalid_grant"}`.
    InvalidGrant,
}

/// What a [`TestAuthServer`] saw, from [`TestAuthServer::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestAuthStats {
    /// Requests to the token endpoint, faults included.
    pub token_requests: u64,
    /// Tokens issued with `grant_type=client_credentials`.
    pub client_credentials: u64,
    /// Tokens issued with `grant_type=password`.
    pub password: u64,
    /// Tokens issued with `grant_type=refresh_token`.
    pub refreshes: u64,
    /// Token requests answered with an error of the grant (not a fault):
    /// a bad client, a bad password, an unknown or spent refresh token.
    pub token_errors: u64,
    /// Faults served.
    pub faults: u64,
    /// Spent refresh tokens sent again (each revoked its grant).
    pub reused_refresh_tokens: u64,
    /// Requests to the API.
    pub api_requests: u64,
    /// API requests refused with 401 (or gRPC UNAUTHENTICATED).
    pub api_rejections: u64,
}

/// One request the API got, from [`TestAuthServer::api_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiRequest {
    /// Its method.
    pub method: Method,
    /// Its path.
    pub path: String,
    /// Its headers, `Authorization` included.
    pub headers: http::HeaderMap,
    /// The token of its `Authorization: Bearer` header, if it had one.
    pub bearer: Option<String>,
    /// Its body.
    pub body: Bytes,
    /// What the API answered: its HTTP status (a gRPC answer is 200, or
    /// 200 with `grpc-status: 16` in its headers for a rejection).
    pub status: StatusCode,
}

/// Builds a [`TestAuthServer`].
#[derive(Clone)]
#[must_use]
pub struct TestAuthServerBuilder {
    lifetime: Duration,
    rotate: bool,
    client: (String, String),
    users: HashMap<String, String>,
    prefix: String,
}

/// Shows the client id and user names, never a secret or a password.
impl fmt::Debug for TestAuthServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("TestAuthServerBuilder")
            .field("lifetime", &self.lifetime)
            .field("rotate", &self.rotate)
            .field("client_id", &self.client.0)
            .field("users", &users)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TestAuthServerBuilder {
    /// How long access tokens live (`expires_in`; default one hour).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether each refresh returns a new refresh token and spends the one
    /// sent (default `true`). Without rotation the same refresh token
    /// comes back.
    pub fn rotate_refresh_tokens(mut self, rotate: bool) -> Self {
        self.rotate = rotate;
        self
    }

    /// The client id and secret the server accepts (default
    /// [`TEST_CLIENT_ID`], [`TEST_CLIENT_SECRET`]).
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client = (id.into(), secret.into());
        self
    }

    /// A user for the password grant.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(name.into(), password.into());
        self
    }

    /// Puts `prefix` before every token the server issues (default none):
    /// with `token_prefix("billing-")`, access tokens are `billing-at-1`,
    /// `billing-at-2`, … and refresh tokens `billing-rt-1`, …, so that tests
    /// with several servers can tell whose token reached which API.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_bearer::TokenCache;
    /// use tower_bearer::test_kit::TestAuthServer;
    ///
    /// let billing = TestAuthServer::builder().token_prefix("billing-").start().await;
    /// let cache = TokenCache::new(billing.client_credentials());
    /// assert_eq!(cache.token().await.unwrap().access_token().secret(), "billing-at-1");
    /// # }
    /// ```
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Starts the server on `127.0.0.1` (a free port), on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or when no loopback port can be bound: a
    /// test kit fails the test that cannot use it.
    pub async fn start(self) -> TestAuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the test kit binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State {
            lifetime: self.lifetime,
            rotate: self.rotate,
            client: self.client,
            users: self.users,
            prefix: self.prefix,
            ..State::default()
        }));
        let task = tokio::spawn(serve(listener, state.clone()));
        TestAuthServer {
            addr,
            state,
            task: task.abort_handle(),
        }
    }
}

/// An in-process OAuth2 token endpoint and protected API on loopback; see
/// the [module documentation](self). Stops when dropped.
pub struct TestAuthServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::AbortHandle,
}

impl TestAuthServer {
    /// A server with the defaults: one-hour tokens, rotating refresh
    /// tokens, the client [`TEST_CLIENT_ID`] and no users.
    pub async fn start() -> TestAuthServer {
        TestAuthServer::builder().start().await
    }

    /// A server to configure.
    pub fn builder() -> TestAuthServerBuilder {
        TestAuthServerBuilder {
            lifetime: Duration::from_secs(3600),
            rotate: true,
            client: (TEST_CLIENT_ID.to_owned(), TEST_CLIENT_SECRET.to_owned()),
            users: HashMap::new(),
            prefix: String::new(),
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    /// `http://127.0.0.1:PORT<path>`: the API, for any `path` but `/token`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The token endpoint, with the server's client (`client_secret_basic`).
    pub fn endpoint(&self) -> TokenEndpoint {
        let (id, secret) = self.lock().client.clone();
        TokenEndpoint::builder(self.token_url(), ClientAuth::basic(id, secret))
            .build()
            .expect("a loopback token URL is a valid endpoint")
    }

    /// A client credentials grant at [`endpoint`](Self::endpoint).
    pub fn client_credentials(&self) -> ClientCredentialsGrant {
        ClientCredentialsGrant::new(self.endpoint())
    }

    /// A password grant for `user` at [`endpoint`](Self::endpoint).
    pub fn password_grant(&self, user: &str, password: &str) -> PasswordGrant {
        PasswordGrant::new(self.endpoint(), user, password)
    }

    /// Queues `fault` for the next token request that has none queued
    /// before it.
    pub fn fail_next(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Queues `status` as the answer to the next API request that has none
    /// queued before it, whatever its token: a 5xx for a retry layer to
    /// meet, or a 401 (with `WWW-Authenticate: Bearer
    /// error="invalid_token"`, counted in
    /// [`api_rejections`](TestAuthStats::api_rejections)) for a token the
    /// server still considers valid, as an API whose keys rotated would
    /// send. The body is a short plain text.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bearer::BoxError> {
    /// use tower::{Layer, ServiceExt};
    /// use tower_bearer::test_kit::TestAuthServer;
    /// use tower_bearer::{AuthLayer, TokenCache};
    ///
    /// let server = TestAuthServer::start().await;
    /// server.fail_next_api(http::StatusCode::UNAUTHORIZED);
    /// let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
    ///     .build_http::<http_body_util::Full<bytes::Bytes>>();
    /// let api = AuthLayer::new(TokenCache::new(server.client_credentials())).layer(client);
    /// let request = http::Request::post(server.url("/v1/orders")).body("{}".into())?;
    /// assert_eq!(api.clone().oneshot(request).await?.status(), 200);
    ///
    /// // The 401 was retried once, with a new token and the same body.
    /// let seen = server.api_requests();
    /// assert_eq!(seen[0].status, 401);
    /// assert_eq!(seen[1].bearer.as_deref(), Some("at-2"));
    /// assert_eq!(seen[1].body, "{}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fail_next_api(&self, status: StatusCode) {
        self.lock().api_faults.push_back(status);
    }

    /// Revokes `access_token`: the API refuses it from now on.
    pub fn revoke(&self, access_token: &str) {
        if let Some(token) = self.lock().access.get_mut(access_token) {
            token.revoked = true;
        }
    }

    /// Revokes every access token issued so far (a key rotation, a
    /// logout everywhere).
    pub fn revoke_access_tokens(&self) {
        for token in self.lock().access.values_mut() {
            token.revoked = true;
        }
    }

    /// How long the tokens issued from now on live.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// What the server saw so far.
    pub fn stats(&self) -> TestAuthStats {
        self.lock().stats.clone()
    }

    /// Every request the API got so far, in the order it got them, with
    /// the token it carried, its body and the answer.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.lock().api_seen.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for TestAuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestAuthServer")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    lifetime: Duration,
    rotate: bool,
    client: (String, String),
    users: HashMap<String, String>,
    prefix: String,
    faults: VecDeque<Fault>,
    api_faults: VecDeque<StatusCode>,
    api_seen: Vec<ApiRequest>,
    issued: u64,
    access: HashMap<String, Access>,
    /// Refresh token → its grant, and whether it was spent.
    refresh: HashMap<String, (u64, bool)>,
    revoked_grants: Vec<u64>,
    stats: TestAuthStats,
}

struct Access {
    grant: u64,
    client_id: String,
    expires_at: Instant,
    revoked: bool,
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(state: &Arc<Mutex<State>>, request: Request<hyper::body::Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    if parts.uri.path() != "/token" {
        return lock().api(&parts, body);
    }
    let fault = {
        let mut state = lock();
        state.stats.token_requests += 1;
        let fault = state.faults.pop_front();
        if fault.is_some() {
            state.stats.faults += 1;
        }
        fault
    };
    match fault {
        None => lock().token(&parts, &body),
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            lock().token(&parts, &body)
        }
        Some(Fault::NoAnswer) => std::future::pending().await,
        Some(fault) => fault_response(&fault),
    }
}

impl State {
    /// One token request.
    fn token(&mut self, parts: &http::request::Parts, body: &[u8]) -> Answer {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        if !self.client_ok(parts, &form) {
            return self.error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        let (grant, refresh) = match field("grant_type") {
            "client_credentials" => {
                self.stats.client_credentials += 1;
                (self.new_grant(), false)
            }
            "password" => {
                if self.users.get(field("username")).map(String::as_str) != Some(field("password"))
                    || field("password").is_empty()
                {
                    return self.error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                self.stats.password += 1;
                (self.new_grant(), true)
            }
            "refresh_token" => match self.refresh.get(field("refresh_token")).copied() {
                Some((grant, _)) if self.revoked_grants.contains(&grant) => {
                    return self.error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                Some((grant, true)) => {
                    // Reuse detected: the whole grant is revoked.
                    self.stats.reused_refresh_tokens += 1;
                    self.revoked_grants.push(grant);
                    return self.error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                Some((grant, false)) => {
                    self.stats.refreshes += 1;
                    if self.rotate {
                        self.refresh
                            .insert(field("refresh_token").to_owned(), (grant, true));
                    }
                    (grant, self.rotate)
                }
                None => return self.error(StatusCode::BAD_REQUEST, "invalid_grant"),
            },
            _ => return self.error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        };
        self.issued += 1;
        let access_token = format!("{}at-{}", self.prefix, self.issued);
        self.access.insert(
            access_token.clone(),
            Access {
                grant,
                client_id: self.client.0.clone(),
                expires_at: Instant::now() + self.lifetime,
                revoked: false,
            },
        );
        let mut json = serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.lifetime.as_secs(),
        });
        if refresh {
            let refresh_token = format!("{}rt-{}", self.prefix, self.issued);
            self.refresh.insert(refresh_token.clone(), (grant, false));
            json["refresh_token"] = refresh_token.into();
        }
        response(StatusCode::OK, "application/json", json.to_string())
    }

    fn new_grant(&mut self) -> u64 {
        self.issued + 1
    }

    /// `client_secret_basic` or `client_secret_post` with the known client.
    fn client_ok(&self, parts: &http::request::Parts, form: &HashMap<String, String>) -> bool {
        let (id, secret) = &self.client;
        if let Some(basic) = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let Some((user, pass)) = decoded.split_once(':') else {
                return false;
            };
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            return decode(user) == *id && decode(pass) == *secret;
        }
        form.get("client_id") == Some(id) && form.get("client_secret") == Some(secret)
    }

    fn error(&mut self, status: StatusCode, code: &str) -> Answer {
        self.stats.token_errors += 1;
        let body = serde_json::json!({ "error": code }).to_string();
        response(status, "application/json", body)
    }

    /// One API request, recorded with its answer.
    fn api(&mut self, parts: &http::request::Parts, body: Bytes) -> Answer {
        self.stats.api_requests += 1;
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let answer = self.api_answer(parts, bearer.as_deref());
        if answer.status() == StatusCode::UNAUTHORIZED
            || answer
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s == "16")
        {
            self.stats.api_rejections += 1;
        }
        self.api_seen.push(ApiRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers.clone(),
            bearer,
            body,
            status: answer.status(),
        });
        answer
    }

    fn api_answer(&mut self, parts: &http::request::Parts, bearer: Option<&str>) -> Answer {
        let grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let rejected = || {
            if grpc {
                return grpc_response(16, "invalid_token");
            }
            let mut rejected = response(
                StatusCode::UNAUTHORIZED,
                "application/json",
                r#"{"error":"invalid_token"}"#.to_owned(),
            );
            rejected.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
            rejected
        };
        if let Some(status) = self.api_faults.pop_front() {
            return if status == StatusCode::UNAUTHORIZED {
                rejected()
            } else {
                response(status, "text/plain", "fault".to_owned())
            };
        }
        let now = Instant::now();
        let client_id = match bearer.and_then(|t| self.access.get(t)) {
            Some(t)
                if !t.revoked && t.expires_at > now && !self.revoked_grants.contains(&t.grant) =>
            {
                t.client_id.clone()
            }
            _ => return rejected(),
        };
        if grpc {
            return grpc_response(0, "");
        }
        let body = serde_json::json!({
            "ok": true,
            "path": parts.uri.path(),
            "client_id": client_id,
        });
        response(StatusCode::OK, "application/json", body.to_string())
    }
}

fn fault_response(fault: &Fault) -> Answer {
    match fault {
        Fault::Status(status) => response(*status, "text/plain", "fault".to_owned()),
        Fault::TooManyRequests { retry_after } => {
            let mut slow = response(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                r#"{"error":"slow_down"}"#.to_owned(),
            );
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            slow.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(secs.min(u64::from(u32::MAX))),
            );
            slow
        }
        Fault::HtmlErrorPage => response(
            StatusCode::BAD_GATEWAY,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
        ),
        Fault::GarbageJson => response(
            StatusCode::OK,
            "application/json",
            r#"{"access_token": "at-garbage", "expires_"#.to_owned(),
        ),
        Fault::InvalidClient => response(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"error":"invalid_client"}"#.to_owned(),
        ),
        Fault::InvalidGrant => response(
            StatusCode::BAD_REQUEST,
            "application/json",
            r#"{"error":"invalid_grant"}"#.to_owned(),
        ),
        // Served before reaching here.
        Fault::NoAnswer | Fault::Slow(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            String::new(),
        ),
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A gRPC answer: UNAUTHENTICATED in headers only (a "trailers-only"
/// response), or one empty message followed by `grpc-status: 0` in
/// trailers.
fn grpc_response(status: u8, message: &'static str) -> Answer {
    if status == 0 {
        let mut response = Response::new(Either::Right(GrpcOk { step: 0 }));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        return response;
    }
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(status)));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    headers.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer error="invalid_token""#),
    );
    response
}

/// One empty gRPC message (any message type decodes it, all fields at
/// their defaults), then the trailers `grpc-status: 0`.
#[derive(Debug)]
pub struct GrpcOk {
    step: u8,
}

impl http_body::Body for GrpcOk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.step {
            0 => Some(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            1 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Some(http_body::Frame::trailers(trailers))
            }
            _ => None,
        };
        self.step = self.step.saturating_add(1);
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.step >= 2
    }
}
