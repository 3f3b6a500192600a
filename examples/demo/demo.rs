//! The whole story in about 12 seconds, with no setup.
//!
//! Starts an OAuth2 token endpoint and a protected API on 127.0.0.1 (random
//! ports), with 5-second tokens. A client stack of
//! `retry → timeout → AuthLayer → hyper-util client` then sends 40 requests,
//! one every 300 ms. Watch the cache refresh tokens ahead of expiry in the
//! background, and, when the server revokes a token halfway through, the
//! layer turn the 401 into a refresh and one retry.
//!
//! ```sh
//! cargo run --example demo
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tower::retry::Policy;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::{AuthLayer, TokenCache};

const REQUESTS: usize = 40;
const EVERY: Duration = Duration::from_millis(300);
const TOKEN_LIFETIME: u64 = 5;
/// The request before which the server revokes the token in use.
const REVOKE_AT: usize = 20;

/// The authorization server and the API share what tokens exist.
#[derive(Clone)]
struct Server {
    start: Instant,
    /// access token → (its number, when it expires)
    tokens: Arc<Mutex<HashMap<String, (usize, Instant)>>>,
    issued: Arc<AtomicUsize>,
}

impl Server {
    fn log(&self, what: std::fmt::Arguments<'_>) {
        println!("[{:6.2}s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// Answers one request: the token endpoint or the API.
    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = match (req.method(), req.uri().path()) {
            (&Method::POST, "/token") => self.token(req.headers()),
            (&Method::GET, "/api/hello") => self.hello(req.headers()),
            _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }

    /// `POST /token`: client credentials, Basic auth.
    fn token(&self, headers: &HeaderMap) -> (StatusCode, String) {
        // "demo-client:demo-secret", form-urlencoded then base64 (RFC 6749 §2.3.1).
        let expected = "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ=";
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected) {
            let error = serde_json::json!({"error": "invalid_client"});
            return (StatusCode::UNAUTHORIZED, error.to_string());
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("demo-token-{n}-{:x}", rand_suffix());
        let expires = Instant::now() + Duration::from_secs(TOKEN_LIFETIME);
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), (n, expires));
        self.log(format_args!(
            "token endpoint  issued token #{n}, valid for {TOKEN_LIFETIME}s"
        ));
        let response = serde_json::json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME,
        });
        (StatusCode::OK, response.to_string())
    }

    /// `GET /api/hello`: needs a live token.
    fn hello(&self, headers: &HeaderMap) -> (StatusCode, String) {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let known = self.tokens.lock().unwrap().get(token).copied();
        match known {
            Some((n, expires)) if Instant::now() < expires => {
                (StatusCode::OK, format!("hello, holder of token #{n}"))
            }
            Some((n, _)) => {
                self.log(format_args!("api             401: token #{n} is not valid"));
                (StatusCode::UNAUTHORIZED, "invalid_token".into())
            }
            None => {
                self.log(format_args!("api             401: unknown token"));
                (StatusCode::UNAUTHORIZED, "invalid_token".into())
            }
        }
    }

    /// Serves the token endpoint and the API on `listener`, with hyper.
    async fn serve(self, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let server = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let response = server.answer(&req);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Revokes every live token, as an administrator would.
    fn revoke_all(&self) {
        let mut tokens = self.tokens.lock().unwrap();
        for (n, expires) in tokens.values_mut() {
            if *expires > Instant::now() {
                self.log(format_args!("auth server     REVOKED token #{n}"));
                *expires = Instant::now();
            }
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// The outer retry policy: retries errors (timeouts, connection failures),
/// never responses; 401s are `AuthLayer`'s business.
#[derive(Clone)]
struct RetryErrors(usize);

impl<B: Clone, Res> Policy<http::Request<B>, Res, BoxError> for RetryErrors {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut http::Request<B>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &http::Request<B>) -> Option<http::Request<B>> {
        Some(req.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Server {
        start: Instant::now(),
        tokens: Arc::default(),
        issued: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.clone().serve(listener));
    server.log(format_args!(
        "demo            token endpoint and API on http://{addr}"
    ));

    // The token source: a standard client-credentials grant.
    let endpoint = TokenEndpoint::builder(
        format!("http://{addr}/token"),
        ClientAuth::basic("demo-client", "demo-secret"),
    )
    .build()?;
    let cache = TokenCache::builder(ClientCredentialsGrant::new(endpoint))
        .leeway(Duration::from_secs(1))
        .build()?;

    // The client stack.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let api = ServiceBuilder::new()
        .retry(RetryErrors(1))
        .timeout(Duration::from_secs(5))
        .layer(AuthLayer::new(cache.clone()))
        .service(client);

    let mut ok = 0;
    let mut ticker = tokio::time::interval(EVERY);
    for i in 1..=REQUESTS {
        ticker.tick().await;
        if i == REVOKE_AT {
            server.revoke_all();
        }
        let req = http::Request::get(format!("http://{addr}/api/hello")).body(Full::default())?;
        let before = cache.stats();
        match api.clone().oneshot(req).await {
            Ok(rsp) => {
                let status = rsp.status();
                let body = rsp.into_body().collect().await?.to_bytes();
                let after = cache.stats();
                let mut notes = Vec::new();
                if before.token_requests == 0 {
                    notes.push("waited for the first token");
                } else if after.retries > before.retries {
                    notes.push("401, new token, sent again");
                } else if after.token_requests > before.token_requests {
                    notes.push("token getting old: refresh started in the background");
                }
                server.log(format_args!(
                    "client          request {i:2}: {status} {}{}",
                    String::from_utf8_lossy(&body),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", notes.join(", "))
                    }
                ));
                if status.is_success() {
                    ok += 1;
                }
            }
            Err(err) => server.log(format_args!("client          request {i:2}: failed: {err}")),
        }
    }

    let stats = cache.stats();
    println!(
        "demo: requests={REQUESTS} ok={ok} token_requests={} retried_after_401={}",
        stats.token_requests, stats.retries
    );
    if ok == REQUESTS && stats.token_requests >= 3 && stats.retries >= 1 {
        Ok(())
    } else {
        Err("the demo did not go as planned".into())
    }
}
