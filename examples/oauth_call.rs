//! A small command-line client for any RFC 6749 authorization server: gets
//! tokens with a standard grant and calls an API with them through
//! `AuthLayer`, one line per call.
//!
//! Configured by environment variables:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `TOKEN_URL` | the token endpoint (`https`, or `http` on loopback) | required |
//! | `CLIENT_ID` | the client id | required |
//! | `CLIENT_SECRET` | the client secret; absent for public clients | none |
//! | `CLIENT_AUTH` | `basic` (client_secret_basic), `post` (client_secret_post) or `none` | `basic` |
//! | `GRANT` | `client_credentials`, or `password` with `USERNAME` and `PASSWORD` | `client_credentials` |
//! | `SCOPE` | the scope to ask for | none |
//! | `API_URL` | the URL to `GET` | required |
//! | `REQUESTS` | how many calls | 1 |
//! | `INTERVAL_MS` | milliseconds from one call to the next | 0 |
//! | `ALLOW_INSECURE_HTTP` | `1` allows a plain-http token endpoint that is not loopback | unset |
//!
//! It ends with `oauth_call: requests=<n> ok=<n> token_requests=<k>
//! refreshes=<r>` (`refreshes` counts refresh-token grants) and exits with 0
//! only when every call got a 2xx, 1 otherwise, 2 on a configuration error.
//! Tokens and secrets are never printed.
//!
//! ```sh
//! tests/peers/oidc-provider/start.sh 9400 &
//! TOKEN_URL=http://127.0.0.1:9400/token CLIENT_ID=peer-client CLIENT_SECRET=peer-client-secret \
//!   GRANT=password USERNAME=alice PASSWORD=alice-password \
//!   API_URL=http://127.0.0.1:9400/api/whoami REQUESTS=5 INTERVAL_MS=1000 \
//!   cargo run --example oauth_call --features https
//! ```

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, GrantStats, PasswordGrant, TokenEndpoint,
};
use tower_bearer::{AuthLayer, BoxError, TokenCache};

/// Time limit of one API call, token included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The grant in use, kept to read its counters at the end.
enum Grant {
    ClientCredentials(ClientCredentialsGrant),
    Password(PasswordGrant),
}

impl Grant {
    fn stats(&self) -> GrantStats {
        match self {
            Grant::ClientCredentials(grant) => grant.stats(),
            Grant::Password(grant) => grant.stats(),
        }
    }
}

struct Config {
    grant: Grant,
    api_url: http::Uri,
    requests: u64,
    interval: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, BoxError> {
    var(name).ok_or_else(|| format!("{name} is not set").into())
}

fn number(name: &str, default: u64) -> Result<u64, BoxError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}").into()),
    }
}

fn config() -> Result<Config, BoxError> {
    let client_id = required("CLIENT_ID")?;
    let secret = var("CLIENT_SECRET");
    let client_auth = match (var("CLIENT_AUTH").as_deref().unwrap_or("basic"), secret) {
        ("basic", Some(secret)) => ClientAuth::basic(client_id, secret),
        ("post", Some(secret)) => ClientAuth::post(client_id, secret),
        ("none", None) => ClientAuth::none(client_id),
        ("none", Some(_)) => return Err("CLIENT_AUTH=none takes no CLIENT_SECRET".into()),
        ("basic" | "post", None) => return Err("CLIENT_SECRET is not set".into()),
        (other, _) => {
            return Err(format!("CLIENT_AUTH must be basic, post or none, not {other:?}").into());
        }
    };
    let mut endpoint = TokenEndpoint::builder(required("TOKEN_URL")?, client_auth);
    if let Some(scope) = var("SCOPE") {
        endpoint = endpoint.scope(scope);
    }
    if var("ALLOW_INSECURE_HTTP").as_deref() == Some("1") {
        endpoint = endpoint.allow_insecure_http();
    }
    let endpoint = endpoint.build()?;
    let grant = match var("GRANT").as_deref().unwrap_or("client_credentials") {
        "client_credentials" => Grant::ClientCredentials(ClientCredentialsGrant::new(endpoint)),
        "password" => Grant::Password(PasswordGrant::new(
            endpoint,
            required("USERNAME")?,
            required("PASSWORD")?,
        )),
        other => {
            return Err(
                format!("GRANT must be client_credentials or password, not {other:?}").into(),
            );
        }
    };
    Ok(Config {
        grant,
        api_url: required("API_URL")?
            .parse()
            .map_err(|_| "API_URL is not a valid URL")?,
        requests: number("REQUESTS", 1)?,
        interval: Duration::from_millis(number("INTERVAL_MS", 0)?),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("oauth_call: {error}");
            return ExitCode::from(2);
        }
    };
    let cache = match &config.grant {
        Grant::ClientCredentials(grant) => TokenCache::new(grant.clone()),
        Grant::Password(grant) => TokenCache::new(grant.clone()),
    };

    // The API client: HTTPS with rustls and the ring provider passed
    // explicitly (never the process default), and plain HTTP.
    let https = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
    {
        Ok(builder) => builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build(),
        Err(error) => {
            eprintln!("oauth_call: cannot set up TLS: {error}");
            return ExitCode::from(2);
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let api = ServiceBuilder::new()
        .timeout(CALL_TIMEOUT)
        .layer(AuthLayer::new(cache))
        .service(client);

    let mut ok = 0;
    let mut ticks = tokio::time::interval(config.interval.max(Duration::from_nanos(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1..=config.requests {
        ticks.tick().await;
        let request = Request::get(config.api_url.clone())
            .body(Full::default())
            .expect("a GET with a parsed URI is a valid request");
        match api.clone().oneshot(request).await {
            Ok(response) if response.status().is_success() => {
                ok += 1;
                println!("call {n}/{}: {}", config.requests, response.status());
            }
            Ok(response) => println!("call {n}/{}: {}", config.requests, response.status()),
            Err(error) => println!("call {n}/{}: error: {error}", config.requests),
        }
    }

    let stats = config.grant.stats();
    println!(
        "oauth_call: requests={} ok={ok} token_requests={} refreshes={}",
        config.requests, stats.requests, stats.refreshes
    );
    if ok == config.requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
