//! A workload without a client secret, and a delegation chain.
//!
//! A pod's projected service-account token sits in a file that a "kubelet"
//! task rotates every 700 ms, the way the kubelet does: a new timestamped
//! folder, then an atomic swap of the `..data` symbolic link. Cache A gets
//! its tokens with the JWT-bearer grant, the file's token as the
//! assertion. Cache B exchanges A's token (RFC 8693) for one the orders API
//! accepts. Calls to the orders API go through `AuthLayer` over cache B for
//! 6 s, while tokens live 2 s: A and B refresh, A reads each rotated file,
//! and the issuer accepts only the two newest assertions.
//!
//! ```sh
//! cargo run --example workload_identity
//! ```
//!
//! The last line is `workload_identity: calls=N ok=N assertions=A
//! exchanges=E`, and the exit status is 0 only when every call succeeded,
//! at least 2 rotated assertions were used and at least 2 exchanges made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::oauth::token_exchange::token_types;
use tower_bearer::oauth::{
    ClientAuth, JwtBearerGrant, TokenEndpoint, TokenExchangeGrant, TokenFile,
};
use tower_bearer::{AuthLayer, TokenCache};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let issuer = Issuer::start().await?;
    let mut volume = Volume::new()?;
    volume.rotate(&issuer.new_projected_token())?;

    // Cache A: the pod's own token, from its projected service-account token.
    let a = TokenCache::new(JwtBearerGrant::new(
        TokenEndpoint::builder(issuer.url("/token"), ClientAuth::none("orders-client")).build()?,
        TokenFile::new(volume.token_path()),
    ));
    // Cache B: A's token exchanged for one meant for the orders API.
    let b = TokenCache::new(TokenExchangeGrant::new(
        TokenEndpoint::builder(issuer.url("/token"), ClientAuth::none("orders-client"))
            .audience("orders")
            .build()?,
        a.clone(),
        token_types::ACCESS_TOKEN,
    ));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let orders = ServiceBuilder::new()
        .layer(AuthLayer::new(b))
        .service(client);

    let kubelet = {
        let issuer = issuer.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                volume.rotate(&issuer.new_projected_token())?;
            }
            Ok::<_, std::io::Error>(volume)
        })
    };
    let (mut calls, mut ok) = (0, 0);
    let end = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < end {
        let request = Request::get(issuer.url("/orders")).body(Full::default())?;
        let response = orders.clone().oneshot(request).await?;
        calls += 1;
        ok += usize::from(response.status().is_success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let volume = kubelet.await??;
    volume.remove();

    let (assertions, exchanges) = issuer.counts();
    println!(
        "workload_identity: calls={calls} ok={ok} assertions={assertions} exchanges={exchanges}"
    );
    if ok == calls && assertions >= 2 && exchanges >= 2 {
        Ok(())
    } else {
        Err("the workload identity example did not go as planned".into())
    }
}

/// A projected volume in a temporary folder: `token` → `..data/token`,
/// `..data` → `..<generation>`.
struct Volume {
    dir: PathBuf,
    generation: usize,
}

impl Volume {
    fn new() -> std::io::Result<Volume> {
        let dir =
            std::env::temp_dir().join(format!("tower-bearer-workload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Volume { dir, generation: 0 })
    }

    fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Writes `token` as the kubelet does, and removes the previous folder.
    fn rotate(&mut self, token: &str) -> std::io::Result<()> {
        self.generation += 1;
        let name = format!("..2026_11_30_{:04}", self.generation);
        std::fs::create_dir(self.dir.join(&name))?;
        std::fs::write(self.dir.join(&name).join("token"), token)?;
        let tmp = self.dir.join("..data_tmp");
        symlink(Path::new(&name), &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        if self.generation == 1 {
            symlink(Path::new("..data/token"), &self.token_path())?;
        } else {
            let old = format!("..2026_11_30_{:04}", self.generation - 1);
            std::fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }

    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "this example lays out a Kubernetes projected volume: Unix only",
    ))
}

/// The cluster's token issuer (projected tokens), the authorization server
/// (JWT-bearer and token exchange) and the orders API, on 127.0.0.1.
#[derive(Clone, Default)]
struct Issuer {
    base: Arc<Mutex<String>>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    projected: Vec<String>,
    access: BTreeSet<String>,
    orders: BTreeSet<String>,
    assertions_used: BTreeSet<String>,
    exchanges: usize,
    issued: usize,
}

impl Issuer {
    async fn start() -> Result<Issuer, BoxError> {
        let issuer = Issuer::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        *issuer.base.lock().unwrap() = format!("http://{}", listener.local_addr()?);
        tokio::spawn(issuer.clone().serve(listener));
        Ok(issuer)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().unwrap())
    }

    /// A new projected service-account token; the two newest are valid.
    fn new_projected_token(&self) -> String {
        let mut state = self.state.lock().unwrap();
        let token = format!(
            "eyJhbGciOiJSUzI1NiJ9.projected-{}.sig",
            state.projected.len() + 1
        );
        state.projected.push(token.clone());
        token
    }

    fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.assertions_used.len(), state.exchanges)
    }

    async fn serve(self, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let issuer = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let issuer = issuer.clone();
                async move { Ok::<_, std::convert::Infallible>(issuer.answer(req).await) }
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
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&body).into_owned().collect();
        let mut state = self.state.lock().unwrap();
        match path.as_str() {
            "/token" => match form.get("grant_type").map(String::as_str) {
                Some(tower_bearer::oauth::JWT_BEARER) => {
                    let assertion = form.get("assertion").cloned().unwrap_or_default();
                    if !state
                        .projected
                        .iter()
                        .rev()
                        .take(2)
                        .any(|p| *p == assertion)
                    {
                        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                    }
                    state.assertions_used.insert(assertion);
                    let token = state.issue("pod");
                    state.access.insert(token.clone());
                    reply(StatusCode::OK, token_json(&token, None))
                }
                Some(tower_bearer::oauth::TOKEN_EXCHANGE) => {
                    let subject = form.get("subject_token").cloned().unwrap_or_default();
                    if !state.access.contains(&subject)
                        || form.get("audience").map(String::as_str) != Some("orders")
                    {
                        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                    }
                    state.exchanges += 1;
                    let token = state.issue("orders");
                    state.orders.insert(token.clone());
                    reply(
                        StatusCode::OK,
                        token_json(&token, Some(token_types::ACCESS_TOKEN)),
                    )
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported_grant_type"}),
                ),
            },
            "/orders" if bearer.is_some_and(|t| state.orders.contains(&t)) => {
                reply(StatusCode::OK, json!({"orders": []}))
            }
            "/orders" => reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"})),
            _ => reply(StatusCode::NOT_FOUND, json!({})),
        }
    }
}

impl State {
    fn issue(&mut self, audience: &str) -> String {
        self.issued += 1;
        format!("{audience}-{}", self.issued)
    }
}

fn token_json(token: &str, issued_token_type: Option<&str>) -> serde_json::Value {
    let mut body = json!({"access_token": token, "token_type": "Bearer", "expires_in": 2});
    if let Some(issued) = issued_token_type {
        body["issued_token_type"] = issued.into();
    }
    body
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
