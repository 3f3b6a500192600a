//! B8 for the OAuth2 grants: client secrets, passwords, refresh and access
//! tokens never reach logs (captured at TRACE level), errors, or the
//! `Debug`/`Display` of any configuration type — not even when the token
//! endpoint echoes the request back in its error pages.
#![cfg(feature = "hyper-client")]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::{TestServer, json};
use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, ClientSecret, Password, PasswordGrant, RefreshTokenGrant,
    TokenEndpoint,
};
use tower_bearer::{RefreshToken, Token, TokenCache, TokenSource};

/// Every secret in this file contains this marker, so one search finds
/// them in any spelling that keeps it (raw, form-urlencoded, in a URL).
const MARK: &str = "SECRET";
const CLIENT_SECRET: &str = "cs-SECRET-1 x+y:z";
const PASSWORD: &str = "pw-SECRET-2 &=";
const FIRST_REFRESH_TOKEN: &str = "rt-SECRET-1";

/// Everything `tracing` prints, at every level, for the whole test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that `text` holds no secret of this file in any spelling the
/// grants send it in.
fn assert_secret_free(what: &str, text: &str) {
    let basic = |id: &str| {
        let encode = |s: &str| {
            form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(id),
            encode(CLIENT_SECRET)
        ))
    };
    assert!(!text.contains(MARK), "{what} leaks a secret:\n{text}");
    for id in ["client", "public"] {
        assert!(
            !text.contains(&basic(id)),
            "{what} leaks the Basic credentials:\n{text}"
        );
    }
}

/// A token endpoint that runs the grants through every path: tokens with
/// rotating refresh tokens, a refused refresh token, and error responses
/// that echo the whole request (body and `Authorization`) back.
async fn echoing_token_server() -> TestServer {
    TestServer::start(|n, seen| async move {
        let form = seen.form();
        let echo = format!(
            "{} {}",
            String::from_utf8_lossy(&seen.body),
            seen.authorization().unwrap_or("")
        );
        let refresh_token = form.get("refresh_token").cloned().unwrap_or_default();
        match n % 6 {
            // An HTML error page echoing the request, as some proxies do.
            0 => Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(format!(
                    "<html><title>{echo}</title><body>{echo}</body></html>"
                ))))
                .unwrap(),
            // An RFC 6749 error whose description echoes the request.
            3 => json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": echo}),
            ),
            // Refresh tokens with an even number are refused, echoed in
            // the description.
            _ if refresh_token
                .rsplit('-')
                .next()
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| k % 2 == 0) => json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": format!("{refresh_token} is expired")}),
            ),
            _ => json(
                StatusCode::OK,
                json!({
                    "access_token": format!("at-SECRET-{n}"),
                    "token_type": "bearer",
                    "expires_in": 3600,
                    "refresh_token": format!("rt-SECRET-{n}"),
                    "id_token": "id-SECRET",
                }),
            ),
        }
    })
    .await
}

/// Runs `rounds` refreshes through a cache, as 401s would force them, and
/// returns every outcome's `Debug` and `Display`.
async fn cycle(source: impl TokenSource + Clone, rounds: usize) -> String {
    let cache = TokenCache::builder(source.clone())
        .max_attempts(1)
        .cooldown(std::time::Duration::ZERO, std::time::Duration::ZERO)
        .build()
        .unwrap();
    let mut seen = String::new();
    for _ in 0..rounds {
        match cache.token().await {
            Ok(token) => {
                seen.push_str(&format!("{token:?}\n"));
                cache.invalidate(&token);
            }
            Err(error) => seen.push_str(&format!("{error}\n{error:?}\n")),
        }
        let direct = source.fetch(None).await;
        seen.push_str(&format!("{direct:?}\n"));
    }
    seen.push_str(&format!("{cache:?}\n"));
    seen
}

#[tokio::test]
async fn b8_no_secret_reaches_logs_errors_or_debug_output_of_any_grant() {
    let logs = captured();
    let server = echoing_token_server().await;
    let endpoint = |auth: ClientAuth| {
        TokenEndpoint::builder(server.url("/token?tenant=SECRET-in-query"), auth)
            .scope("api:read")
            .param("vendor_param", "not-a-secret")
            .build()
            .unwrap()
    };

    let client_credentials =
        ClientCredentialsGrant::new(endpoint(ClientAuth::basic("client", CLIENT_SECRET)));
    let password = PasswordGrant::new(
        endpoint(ClientAuth::post("client", CLIENT_SECRET)),
        "alice",
        PASSWORD,
    );
    let refresh_only = RefreshTokenGrant::new(
        endpoint(ClientAuth::basic("public", CLIENT_SECRET)),
        FIRST_REFRESH_TOKEN,
    );

    let mut outcomes = String::new();
    outcomes += &cycle(client_credentials.clone(), 8).await;
    outcomes += &cycle(password.clone(), 8).await;
    outcomes += &cycle(refresh_only.clone(), 4).await;

    // Every path ran: tokens, rotations, fallbacks, and error pages.
    assert!(server.requests() >= 30, "{}", server.requests());
    assert!(client_credentials.stats().rotations > 0);
    assert!(password.stats().fallbacks > 0);
    assert!(outcomes.contains("502 Bad Gateway"), "{outcomes}");
    assert!(outcomes.contains("invalid_request"), "{outcomes}");
    assert!(outcomes.contains("invalid_grant"), "{outcomes}");
    assert!(outcomes.contains("[redacted]"), "{outcomes}");
    assert_secret_free("errors and tokens", &outcomes);

    // Debug and Display of every configuration type.
    let builder = TokenEndpoint::builder(
        server.url("/token?k=SECRET"),
        ClientAuth::post("client", CLIENT_SECRET),
    )
    .param("p", "SECRET-param");
    let config = format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{}\n{}",
        builder,
        endpoint(ClientAuth::basic("client", CLIENT_SECRET)),
        ClientAuth::basic("client", CLIENT_SECRET),
        ClientAuth::post("client", CLIENT_SECRET),
        ClientSecret::new(CLIENT_SECRET),
        Password::new(PASSWORD),
        RefreshToken::new(FIRST_REFRESH_TOKEN),
        client_credentials,
        password,
        refresh_only,
        Token::new("at-SECRET").with_refresh_token(FIRST_REFRESH_TOKEN),
        ClientAuth::basic("client", CLIENT_SECRET).method(),
        password.stats().requests,
    );
    assert!(config.contains("client_secret_post"), "{config}");
    assert_secret_free("Debug of the configuration", &config);

    // The logs, at TRACE level, of all of the above.
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("token request"), "nothing captured:\n{logs}");
    assert!(logs.contains("falling back to the primary grant"), "{logs}");
    assert!(logs.contains("token refresh failed"), "{logs}");
    assert_secret_free("the logs", &logs);
}

#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn b8_no_client_assertion_reaches_logs_errors_or_debug_output() {
    use tower_bearer::oauth::ClientAssertionKey;

    let logs = captured();
    // Answers every other request with an error that quotes the signature
    // of the assertion it got (what makes the assertion a credential), in
    // an RFC 6749 error or in an HTML page.
    let server = TestServer::start(|n, seen| async move {
        let assertion = seen.form().get("client_assertion").cloned();
        let signature = assertion.and_then(|a| a.rsplit('.').next().map(str::to_owned));
        let signature = signature.unwrap_or_default();
        match n % 4 {
            1 => json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_client", "error_description": signature}),
            ),
            3 => Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(format!(
                    "<html><title>{signature}</title></html>"
                ))))
                .unwrap(),
            _ => json(
                StatusCode::OK,
                json!({"access_token": format!("at-{n}"), "token_type": "bearer", "expires_in": 3600}),
            ),
        }
    })
    .await;
    let key = ClientAssertionKey::from_pem(rcgen::KeyPair::generate().unwrap().serialize_pem())
        .unwrap()
        .with_key_id("kid-1");
    let grant = ClientCredentialsGrant::new(
        TokenEndpoint::builder(
            server.url("/token"),
            ClientAuth::private_key_jwt("client", key.clone()),
        )
        .build()
        .unwrap(),
    );

    let mut outcomes = cycle(grant.clone(), 8).await;
    outcomes += &format!("{grant:?}\n{key:?}\n");

    // Every assertion the server saw, and the signature that makes it one.
    let assertions: Vec<String> = server
        .seen()
        .iter()
        .filter_map(|seen| seen.form().get("client_assertion").cloned())
        .collect();
    assert!(assertions.len() >= 12, "{}", assertions.len());
    for quoted in ["invalid_client", "502 Bad Gateway"] {
        assert!(outcomes.contains(quoted), "the echo ran: {outcomes}");
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for assertion in &assertions {
        let signature = assertion.rsplit('.').next().unwrap();
        for (what, text) in [("errors and Debug output", &outcomes), ("the logs", &logs)] {
            assert!(
                !text.contains(signature),
                "{what} leak a client assertion:\n{text}"
            );
        }
    }
}
