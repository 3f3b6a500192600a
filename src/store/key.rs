//! [`StoreKey`]: which token an entry of a store holds.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::oauth::TokenEndpoint;

/// Domain separation for the hash, and the version of the key scheme. Never
/// change it: keys must stay the same across processes and crate versions,
/// or a restarted process would not find its token (or its refresh token).
const SCHEME: &str = "tower-bearer/store-key/v1";

/// Identifies a token in a [`TokenStore`](super::TokenStore): the SHA-256
/// (lower-case hex, 64 characters) of what tells one token from another —
/// token URL, client id, scopes, extra parameters such as `audience` and
/// `resource`, and the user for a user's token.
///
/// Never a secret: client secrets, passwords and tokens are not part of it,
/// and what is part of it is hashed, so the key can be logged, used as a
/// Redis key or a file name. It is stable: the same parts give the same key
/// in every process and every version of this crate.
///
/// ```
/// use tower_bearer::store::StoreKey;
///
/// let a = StoreKey::new(["my-api", "tenant-1"]);
/// assert_eq!(a, StoreKey::new(["my-api", "tenant-1"]));
/// assert_ne!(a, StoreKey::new(["my-api", "tenant-2"]));
/// assert_eq!(a.as_str().len(), 64);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    hex: Arc<str>,
}

impl StoreKey {
    /// A key for a custom token source, from any parts that identify its
    /// token. The parts are hashed with their lengths, so `["ab", "c"]` and
    /// `["a", "bc"]` give different keys.
    pub fn new<I, S>(parts: I) -> StoreKey
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hasher = Sha256::new();
        absorb(&mut hasher, SCHEME);
        for part in parts {
            absorb(&mut hasher, part.as_ref());
        }
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        StoreKey { hex: hex.into() }
    }

    /// The key of the client's own token at `endpoint` (the client
    /// credentials grant): URL, client id, scopes (sorted, without
    /// duplicates) and the extra parameters (`audience`, `resource`, …).
    /// [`ClientCredentialsGrant::store_key`](crate::oauth::ClientCredentialsGrant::store_key)
    /// returns it.
    pub fn for_endpoint(endpoint: &TokenEndpoint) -> StoreKey {
        Self::new(endpoint_parts(endpoint, "client", None))
    }

    /// The key of `username`'s token at `endpoint` (the password grant, or
    /// a refresh token that belongs to that user): as
    /// [`for_endpoint`](Self::for_endpoint), plus the user name.
    /// [`PasswordGrant::store_key`](crate::oauth::PasswordGrant::store_key)
    /// returns it.
    pub fn for_user(endpoint: &TokenEndpoint, username: &str) -> StoreKey {
        Self::new(endpoint_parts(endpoint, "user", Some(username)))
    }

    /// The key as 64 lower-case hexadecimal digits.
    pub fn as_str(&self) -> &str {
        &self.hex
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn absorb(hasher: &mut Sha256, part: &str) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part.as_bytes());
}

fn endpoint_parts(endpoint: &TokenEndpoint, kind: &str, user: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<&str> = endpoint
        .scope()
        .map(|s| s.split_ascii_whitespace().collect())
        .unwrap_or_default();
    scopes.sort_unstable();
    scopes.dedup();
    let mut params: Vec<String> = endpoint
        .params()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    params.sort_unstable();
    let mut parts = vec![
        "oauth2".to_owned(),
        endpoint.url().to_owned(),
        endpoint.client_auth().client_id().to_owned(),
        scopes.join(" "),
        params.len().to_string(),
    ];
    parts.extend(params);
    parts.push(kind.to_owned());
    if let Some(user) = user {
        parts.push(user.to_owned());
    }
    parts
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreKey").field(&&*self.hex).finish()
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_across_processes_and_versions() {
        // Pinned (computed independently, with Python's hashlib): changing
        // the scheme would orphan every stored token and refresh token.
        assert_eq!(
            StoreKey::new(["a", "b"]).as_str(),
            "dd8041a93e12eef81fe1066930b2085b7c2a133f8313a4a87bd2d6cbb2e9b2fe"
        );
        let endpoint = TokenEndpoint::builder(
            "https://idp.example/token",
            crate::oauth::ClientAuth::basic("app", "s3cret"),
        )
        .scope("write read read")
        .audience("api")
        .transport(tower::service_fn(
            |_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                    bytes::Bytes,
                >::default()))
            },
        ))
        .build()
        .unwrap();
        assert_eq!(
            StoreKey::for_user(&endpoint, "alice").as_str(),
            "8315fae0cfdb4c1ec4d2ce7e7a90fbd934d0b2642b261215ba81c8f3fa6ef2c3"
        );
        assert_ne!(
            StoreKey::for_endpoint(&endpoint),
            StoreKey::for_user(&endpoint, "alice")
        );
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(StoreKey::new(["ab", "c"]), StoreKey::new(["a", "bc"]));
        assert_ne!(StoreKey::new(["a"]), StoreKey::new(["a", ""]));
        let key = StoreKey::new(["x"]);
        assert!(key.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(format!("{key}"), key.as_str());
    }
}
