//! What a rejection says, and what the layer does about it: one call per
//! rule of `tower_bearer::reject`, against a token endpoint and an API on
//! 127.0.0.1 whose `WWW-Authenticate` challenges say why they refuse.
//!
//! ```sh
//! cargo run --example challenges
//! ```
//!
//! Each rule prints one line: the status the caller got, how many times the
//! API saw the call, and what the caller can read from the response's
//! `Challenges`. The last line is `challenges: rules=N ok=N`; the exit
//! status is 0 only when every rule did what it says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{BoxError, Layer, ServiceExt};
use tower_bearer::challenge::Challenges;
use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
use tower_bearer::reject::{Classify, Standard};
use tower_bearer::{AuthLayer, TokenCache};

/// `{"access_token":{"nbf":{"essential":true}}}`, base64, as Microsoft Entra
/// ID sends claims challenges.
const CLAIMS_B64: &str = "eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ==";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Server::start().await?;
    let endpoint = TokenEndpoint::builder(server.url("/token"), ClientAuth::post("app", "s3cret"))
        .scope("read")
        .build()?;
    let cache = TokenCache::new(ClientCredentialsGrant::new(endpoint.clone()));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut results = Vec::new();

    // 1. `invalid_token` (or a 401 naming no error): a new token, one retry.
    let (status, seen, _) = call(
        &server,
        &client,
        AuthLayer::new(cache.clone()),
        "/expired-once",
    )
    .await?;
    results.push(report("invalid_token", status, seen, StatusCode::OK, 2, ""));

    // 2. `insufficient_scope`: by default, the caller gets the 403 and reads
    //    the scope it needs.
    let (status, seen, challenges) =
        call(&server, &client, AuthLayer::new(cache.clone()), "/write").await?;
    let needs = challenges
        .as_ref()
        .and_then(|c| c.bearer())
        .and_then(|b| b.scope())
        .unwrap_or("");
    results.push(report(
        "insufficient_scope",
        status,
        seen,
        StatusCode::FORBIDDEN,
        1,
        &format!("needs scope \"{needs}\""),
    ));

    // 3. The same with step-ups on: a token for "read" plus the demanded
    //    scope, and one retry.
    let step_up = AuthLayer::new(cache.clone()).classify(Standard::new().step_up(true));
    let (status, seen, _) = call(&server, &client, step_up, "/write").await?;
    results.push(report(
        "insufficient_scope, step-up on",
        status,
        seen,
        StatusCode::OK,
        2,
        "",
    ));

    // 4. A claims challenge, opted in: a token requested with those claims.
    let claims = AuthLayer::new(cache.clone()).classify(Standard::new().claims_challenges(true));
    let (status, seen, _) = call(&server, &client, claims, "/cae").await?;
    results.push(report(
        "insufficient_claims, opted in",
        status,
        seen,
        StatusCode::OK,
        2,
        "",
    ));

    // 5. `resource_metadata` (RFC 9728): exposed, never fetched. The 401
    //    names no error, so it is a rejection: a new token and one retry.
    //    Another API, so another cache: on the first one, whose current
    //    token came from rule 1's rejection, the rejection throttle would
    //    (rightly) hold the retry back.
    let mcp = TokenCache::new(ClientCredentialsGrant::new(endpoint));
    let (status, seen, challenges) = call(&server, &client, AuthLayer::new(mcp), "/mcp").await?;
    let metadata = challenges
        .as_ref()
        .and_then(|c| c.bearer())
        .and_then(|b| b.resource_metadata())
        .unwrap_or("")
        .to_owned();
    results.push(report(
        "resource_metadata",
        status,
        seen,
        StatusCode::UNAUTHORIZED,
        2,
        &format!("metadata at {metadata}"),
    ));

    // 6. Another scheme's challenge: left to the caller.
    let (status, seen, _) = call(&server, &client, AuthLayer::new(cache.clone()), "/basic").await?;
    results.push(report(
        "Basic challenge",
        status,
        seen,
        StatusCode::UNAUTHORIZED,
        1,
        "",
    ));

    let ok = results.iter().filter(|ok| **ok).count();
    println!(
        "challenges: rules={} ok={ok} token_requests={} metadata_fetched={}",
        results.len(),
        server.token_requests(),
        server.metadata_fetches()
    );
    if ok == results.len() && server.metadata_fetches() == 0 {
        Ok(())
    } else {
        Err("a rule did not do what it says".into())
    }
}

/// Sends `GET path` through `layer` and returns the status, how many times
/// the API saw it, and the response's challenges.
async fn call<C: Classify>(
    server: &Server,
    client: &Client<HttpConnector, Full<Bytes>>,
    layer: AuthLayer<C>,
    path: &str,
) -> Result<(StatusCode, usize, Option<Challenges>), BoxError> {
    let before = server.api_requests();
    let request = Request::get(server.url(path)).body(Full::default())?;
    let response = layer.layer(client.clone()).oneshot(request).await?;
    let challenges = response.extensions().get::<Challenges>().cloned();
    let status = response.status();
    response.into_body().collect().await?;
    Ok((status, server.api_requests() - before, challenges))
}

fn report(
    rule: &str,
    status: StatusCode,
    seen: usize,
    want_status: StatusCode,
    want_seen: usize,
    note: &str,
) -> bool {
    let ok = status == want_status && seen == want_seen;
    let retries = seen.saturating_sub(1);
    println!(
        "{rule:<32} {} after {retries} retr{} {note}{}",
        status.as_u16(),
        if retries == 1 { "y" } else { "ies" },
        if ok { "" } else { "  <-- unexpected" }
    );
    ok
}

/// The token endpoint and the API, on 127.0.0.1.
#[derive(Clone, Default)]
struct Server {
    base: Arc<Mutex<String>>,
    tokens: Arc<AtomicUsize>,
    api: Arc<AtomicUsize>,
    metadata: Arc<AtomicUsize>,
    expired_once: Arc<AtomicUsize>,
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

    fn token_requests(&self) -> usize {
        self.tokens.load(Ordering::SeqCst)
    }

    fn api_requests(&self) -> usize {
        self.api.load(Ordering::SeqCst)
    }

    fn metadata_fetches(&self) -> usize {
        self.metadata.load(Ordering::SeqCst)
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
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if path == "/token" {
            return self.token(&body);
        }
        if path.starts_with("/.well-known/") {
            self.metadata.fetch_add(1, Ordering::SeqCst);
            return reply(StatusCode::OK, None, "{}");
        }
        self.api.fetch_add(1, Ordering::SeqCst);
        // Tokens are `tok-N.<scope>.<claims?>` (see `token`).
        let token = auth.strip_prefix("Bearer ").unwrap_or("");
        let mut parts = token.split('.');
        let (_, scope, claims) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next() == Some("claims"),
        );
        let has = |wanted: &str| scope.split('+').any(|s| s == wanted);
        match path.as_str() {
            "/expired-once" if self.expired_once.fetch_add(1, Ordering::SeqCst) == 0 => reply(
                StatusCode::UNAUTHORIZED,
                Some(
                    r#"Bearer error="invalid_token", error_description="The access token expired""#
                        .into(),
                ),
                "expired",
            ),
            "/write" if !(has("read") && has("write")) => reply(
                StatusCode::FORBIDDEN,
                Some(r#"Bearer error="insufficient_scope", scope="read write""#.into()),
                "more scope",
            ),
            "/cae" if !claims => reply(
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer error="insufficient_claims", claims="{CLAIMS_B64}""#
                )),
                "session revoked",
            ),
            "/mcp" => reply(
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer resource_metadata="{}""#,
                    self.url("/.well-known/oauth-protected-resource")
                )),
                "see the metadata",
            ),
            "/basic" => reply(
                StatusCode::UNAUTHORIZED,
                Some(r#"Basic realm="intranet""#.into()),
                "who are you",
            ),
            _ => reply(StatusCode::OK, None, "ok"),
        }
    }

    /// Client credentials; the token says what it was asked for.
    fn token(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let n = self.tokens.fetch_add(1, Ordering::SeqCst) + 1;
        let form: Vec<(String, String)> = form_pairs(body);
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let scope = get("scope").unwrap_or("").replace(' ', "+");
        let claims = if get("claims").is_some() {
            "claims"
        } else {
            "none"
        };
        let json = serde_json::json!({
            "access_token": format!("tok-{n}.{scope}.{claims}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        });
        reply(StatusCode::OK, None, &json.to_string())
    }
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: StatusCode, challenge: Option<String>, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    if let Some(challenge) = challenge {
        response
            .headers_mut()
            .insert("www-authenticate", challenge.parse().unwrap());
    }
    response
}
