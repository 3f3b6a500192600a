//! [`TokenFile`]: a security token the platform keeps fresh in a file.

use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::security_token::{SecurityToken, SecurityTokenSource};
use crate::Error;
use crate::source::BoxFuture;

/// How long a [`TokenFile`] serves what it read before reading the file
/// again, when the file has not changed: 60 s. The kubelet rotates a
/// projected token at 80 % of its life (an hour or more); CI systems write
/// theirs once.
pub const DEFAULT_TOKEN_FILE_INTERVAL: Duration = Duration::from_secs(60);

/// The largest token file read: 64 KiB. A JWT is a few KiB.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A security token in a file that something else keeps fresh: a
/// Kubernetes projected service-account token
/// (`/var/run/secrets/tokens/…`), a CI job's OIDC token, a token a sidecar
/// writes. The assertion of a [`JwtBearerGrant`](super::JwtBearerGrant),
/// the subject token of a [`TokenExchangeGrant`](super::TokenExchangeGrant).
///
/// * **Fresh.** Each token request looks at the file (one `stat`): it is
///   read again when it changed (another file, size or modification time:
///   the kubelet's symbolic-link swap makes it another file) and at least
///   every [`reread_every`](Self::reread_every) (default
///   [`DEFAULT_TOKEN_FILE_INTERVAL`]).
/// * **Forgiving.** When the file cannot be read (briefly absent during a
///   rotation, unreadable, empty), the last value read is used until its
///   own JWT `exp`, with a warning; a value whose `exp` has passed is never
///   presented. With no usable value, the token request is not sent and
///   the refresh fails with a transient error (retried, B4).
/// * **Secret.** The value is never logged, and errors name the path, not
///   the content. The file is read on tokio's blocking pool; surrounding
///   whitespace (a trailing newline) is ignored.
///
/// Cheap to clone; clones share what was read.
///
/// # Example
///
/// ```
/// use tower_bearer::oauth::{SecurityTokenSource, TokenFile};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tower-bearer-token-file-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("token");
/// std::fs::write(&path, "eyJhbGciOi...\n")?;
/// let file = TokenFile::new(&path); // e.g. /var/run/secrets/tokens/vault-token
/// assert_eq!(file.security_token().await?.secret(), "eyJhbGciOi...");
/// # std::fs::remove_dir_all(dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    interval: Duration,
    last: Mutex<Option<Last>>,
}

/// The last value read, and what the file looked like then.
struct Last {
    value: SecurityToken,
    /// Its JWT `exp`, if it has one.
    exp: Option<SystemTime>,
    stamp: Option<Stamp>,
    read_at: Instant,
}

/// What tells one version of the file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode: (metadata.dev(), metadata.ino()),
        }
    }
}

impl TokenFile {
    /// The token in the file at `path` (followed through symbolic links).
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile {
            inner: Arc::new(Inner {
                path: path.into(),
                interval: DEFAULT_TOKEN_FILE_INTERVAL,
                last: Mutex::new(None),
            }),
        }
    }

    /// Reads the file again after `interval` even when it looks unchanged
    /// (default [`DEFAULT_TOKEN_FILE_INTERVAL`]). A changed file is read at
    /// once, whatever the interval.
    #[must_use]
    pub fn reread_every(self, interval: Duration) -> TokenFile {
        TokenFile {
            inner: Arc::new(Inner {
                path: self.inner.path.clone(),
                interval,
                last: Mutex::new(None),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Inner {
    fn get(&self, now: Instant, wall: SystemTime) -> Result<SecurityToken, Error> {
        let stamp = fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = &*last
            && stamp.is_some()
            && l.stamp == stamp
            && now < crate::token::later(l.read_at, self.interval)
            && !expired(l.exp, wall)
        {
            return Ok(l.value.clone());
        }
        let failure = match read(&self.path) {
            Ok(value) => {
                let exp = crate::token::jwt_exp_claim(value.secret())
                    .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
                if !expired(exp, wall) {
                    *last = Some(Last {
                        value: value.clone(),
                        exp,
                        stamp,
                        read_at: now,
                    });
                    return Ok(value);
                }
                "the token in the file has expired (its JWT exp has passed)".to_owned()
            }
            Err(why) => why,
        };
        match &*last {
            Some(l) if !expired(l.exp, wall) => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %failure,
                    "using the token last read from the file until the file can be read again"
                );
                Ok(l.value.clone())
            }
            _ => Err(Error::transient(format!(
                "no usable token in {}: {failure}",
                self.path.display()
            ))),
        }
    }
}

/// Whether a value with this `exp` may no longer be presented.
fn expired(exp: Option<SystemTime>, wall: SystemTime) -> bool {
    exp.is_some_and(|exp| exp <= wall)
}

/// The file's content, trimmed; why not, without quoting it.
fn read(path: &Path) -> Result<SecurityToken, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err("the file is larger than 64 KiB".to_owned());
    }
    let text = String::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_owned())?;
    let value = text.trim();
    if value.is_empty() {
        return Err("the file is empty".to_owned());
    }
    if value.chars().any(char::is_control) {
        return Err("the file holds more than one token, or control characters".to_owned());
    }
    Ok(SecurityToken::new(value))
}

impl SecurityTokenSource for TokenFile {
    fn security_token(&self) -> BoxFuture<'_, Result<SecurityToken, Error>> {
        let inner = self.inner.clone();
        // tokio's clock (paused in tests) for the interval; the wall clock
        // for the JWT's `exp`, which the server compares with its own.
        let now = Instant::now();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.get(now, SystemTime::now()))
                .await
                .unwrap_or_else(|e| Err(Error::transient(e)))
        })
    }
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.inner.path)
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}
