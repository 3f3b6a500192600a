//! A token endpoint with refresh-token rotation and reuse detection, as
//! oidc-provider has, for the store tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::json;
use tower_bearer::oauth::{ClientAuth, PasswordGrant, TokenEndpoint};

use super::{TestServer, json};

/// A token endpoint with refresh-token rotation and reuse detection, as
/// oidc-provider has: the password grant issues `at-N`/`rt-N`; a refresh
/// must send the newest refresh token, and gets `at-N`/`rt-N` for the next
/// N; any other refresh token revokes the grant (400 `invalid_grant` from
/// then on).
pub struct RotatingServer {
    mark: &'static str,
    server: TestServer,
    revoked: Arc<Mutex<bool>>,
}

impl RotatingServer {
    /// `mark` is part of every secret it issues (`at-{mark}-N`), for tests
    /// that look for secrets in logs.
    pub async fn start(expires_in: u64, mark: &'static str) -> RotatingServer {
        let latest: Arc<Mutex<Option<String>>> = Arc::default();
        let revoked = Arc::new(Mutex::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let server = {
            let revoked = revoked.clone();
            TestServer::start(move |_n, seen| {
                let (latest, revoked, issued) = (latest.clone(), revoked.clone(), issued.clone());
                async move {
                    let form = seen.form();
                    let mut latest = latest.lock().unwrap();
                    let mut revoked = revoked.lock().unwrap();
                    match form.get("grant_type").map(String::as_str) {
                        Some("password") => *revoked = false,
                        Some("refresh_token")
                            if !*revoked && form.get("refresh_token") == latest.as_ref() => {}
                        _ => {
                            *revoked = true;
                            return json(
                                StatusCode::BAD_REQUEST,
                                json!({"error": "invalid_grant", "error_description": "grant request is invalid"}),
                            );
                        }
                    }
                    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                    *latest = Some(format!("rt-{mark}-{n}"));
                    json(
                        StatusCode::OK,
                        json!({
                            "access_token": format!("at-{mark}-{n}"),
                            "refresh_token": format!("rt-{mark}-{n}"),
                            "token_type": "Bearer",
                            "expires_in": expires_in,
                        }),
                    )
                }
            })
            .await
        };
        RotatingServer {
            mark,
            server,
            revoked,
        }
    }

    pub fn endpoint(&self) -> TokenEndpoint {
        TokenEndpoint::builder(
            self.server.url("/token"),
            ClientAuth::basic("client", format!("cs-{}", self.mark)),
        )
        .build()
        .unwrap()
    }

    pub fn password(&self) -> PasswordGrant {
        PasswordGrant::new(self.endpoint(), "alice", format!("pw-{}", self.mark))
    }

    /// The grant types of the requests so far, with the refresh token sent.
    pub fn requests(&self) -> Vec<String> {
        self.server
            .seen()
            .iter()
            .map(|seen| {
                let form = seen.form();
                match form.get("refresh_token") {
                    Some(rt) => format!("refresh_token {rt}"),
                    None => form.get("grant_type").cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    pub fn revoked(&self) -> bool {
        *self.revoked.lock().unwrap()
    }
}
