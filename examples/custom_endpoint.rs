//! A custom, non-standard token endpoint, the seed's case.
//!
//! The API wants a token from `POST /auth/token`: a JSON login
//! `{"username", "password"}` the first time, then a JSON refresh
//! `{"grant_type": "refresh_token", "refresh_token"}`; both answer
//! `{access_token, refresh_token, token_type: "bearer", expires_in}`. The
//! server rotates refresh tokens and revokes everything when one is used
//! twice; its tokens live 3 s, so several refreshes happen in 12 s.
//!
//! The client describes only the two bodies ([`CustomGrant`]); the rules
//! are the built-in ones: refresh with the refresh token, take the rotated
//! one, never send a spent one, fall back to the login if a refresh is
//! refused, classify errors, cap responses, refresh ahead of expiry.
//!
//! ```sh
//! cargo run --example custom_endpoint
//! ```
//!
//! The last line is `custom_endpoint: calls=N ok=N logins=1 refreshes=R`,
//! and the exit status is 0 only when every call succeeded with one login.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{ClientAuth, CustomGrant, RequestBody, TokenEndpoint};
use tower_bearer::{AuthLayer, TokenCache};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Server::start().await?;

    // The client: what differs from RFC 6749, and nothing else.
    let endpoint =
        TokenEndpoint::builder(server.url("/auth/token"), ClientAuth::anonymous()).build()?;
    let login = RequestBody::json(json!({"username": "demo", "password": "demo-password"}));
    let grant = CustomGrant::builder(endpoint, login)
        .refresh(|refresh_token| {
            RequestBody::json(json!({
                "grant_type": "refresh_token",
                "refresh_token": refresh_token.secret(),
            }))
        })
        .build();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let api = ServiceBuilder::new()
        .layer(AuthLayer::new(TokenCache::new(grant)))
        .service(client);
    let (mut calls, mut ok) = (0, 0);
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let request = Request::get(server.url("/api/me")).body(Full::default())?;
        let response = api.clone().oneshot(request).await?;
        calls += 1;
        ok += usize::from(response.status().is_success());
    }

    let (logins, refreshes) = (server.logins(), server.refreshes());
    println!("custom_endpoint: calls={calls} ok={ok} logins={logins} refreshes={refreshes}");
    if ok == calls && logins == 1 && refreshes >= 2 && server.reused() == 0 {
        Ok(())
    } else {
        Err("the custom endpoint did not go as planned".into())
    }
}

/// The non-standard auth server and its API, on 127.0.0.1.
#[derive(Clone, Default)]
struct Server {
    base: Arc<Mutex<String>>,
    /// The one refresh token that may be used next; every earlier one is
    /// spent.
    refresh_token: Arc<Mutex<Option<String>>>,
    access_tokens: Arc<Mutex<HashSet<String>>>,
    issued: Arc<AtomicUsize>,
    logins: Arc<AtomicUsize>,
    refreshes: Arc<AtomicUsize>,
    reused: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> Result<Server, BoxError> {
        let server = Server::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        *server.base.lock().unwrap() = format!("http://{}", listener.local_addr()?);
        tokio::spawn(server.clone().serve(listener));
        Ok(server)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().unwrap())
    }

    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }

    fn reused(&self) -> usize {
        self.reused.load(Ordering::SeqCst)
    }

    async fn serve(self, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let server = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.answer(req).await) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let auth = req.headers().get("authorization").cloned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body: serde_json::Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        match path.as_str() {
            "/auth/token" => self.token(&body),
            "/api/me" => {
                let token = auth.as_ref().and_then(|v| v.to_str().ok());
                let token = token.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
                if self.access_tokens.lock().unwrap().contains(token) {
                    reply(StatusCode::OK, json!({"me": "demo"}))
                } else {
                    reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}))
                }
            }
            _ => reply(StatusCode::NOT_FOUND, json!({})),
        }
    }

    /// `POST /auth/token`: a login or a refresh, told apart by the body.
    fn token(&self, body: &serde_json::Value) -> Response<Full<Bytes>> {
        let mut current = self.refresh_token.lock().unwrap();
        if body["grant_type"] == "refresh_token" {
            if current.is_none() || body["refresh_token"] != json!(current.as_deref()) {
                // A spent refresh token: revoke everything, as strict servers do.
                self.reused.fetch_add(1, Ordering::SeqCst);
                *current = None;
                self.access_tokens.lock().unwrap().clear();
                return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
            }
            self.refreshes.fetch_add(1, Ordering::SeqCst);
        } else if body["username"] == "demo" && body["password"] == "demo-password" {
            self.logins.fetch_add(1, Ordering::SeqCst);
        } else {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "bad credentials"}),
            );
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let (access, refresh) = (format!("access-{n}"), format!("refresh-{n}"));
        self.access_tokens.lock().unwrap().insert(access.clone());
        *current = Some(refresh.clone());
        reply(
            StatusCode::OK,
            json!({
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": 3,
            }),
        )
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}
