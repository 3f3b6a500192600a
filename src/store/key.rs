//! [`StoreKey`]: which token an entry of a store holds.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::oauth::TokenEndpoint;

/// Domain separation for the hash of [`StoreKey::new`]'s parts. Never change
/// it: keys must stay the same across processes and crate versions, or a
/// restarted process would not find its token (or its refresh token).
const SCHEME: &str = "tower-bearer/store-key/v1";

/// The key scheme of the OAuth2 grants' keys ([`StoreKey::for_endpoint`],
/// [`StoreKey::for_user`]) since version 2: each part, each scope and each
/// parameter's name and value is hashed on its own, length-prefixed, and
/// a configured scope is told from no scope.
const OAUTH2_SCHEME_V2: &str = "tower-bearer/store-key/oauth2/v2";

/// Domain separation of the keys of tokens made with request parameters
/// ([`StoreKey::with_params`]).
const PARAMS_SCHEME: &str = "tower-bearer/store-key/params/v1";

/// Identifies a token in a [`TokenStore`](super::TokenStore): the SHA-256
/// (lower-case hex, 64 characters) of what tells one token from another —
/// token URL, client id, scopes, extra parameters such as `audience` and
/// `resource`, and the user for a user's token.
///
/// Never a secret: client secrets, passwords and tokens are not part of it,
/// and what is part of it is hashed, so the key can be logged, used as a
/// Redis key or a file name. It is stable: the same parts give the same key
/// in every process and every version of this crate that uses the same
/// [key scheme](Self::scheme_version).
///
/// # Unambiguous
///
/// Every part is hashed with its length, so no two different sets of parts
/// give one key: `["ab", "c"]` and `["a", "bc"]` differ, and so do, for an
/// endpoint, the parameters `tenant` = `blue=1` and `tenant=blue` = `1`, or
/// `scope("")` and no scope (requests that differ have keys that differ).
///
/// # Key schemes and migration
///
/// The keys of the OAuth2 grants changed in version 2 of the scheme (the
/// first joined each parameter as `name=value` and could not tell an empty
/// scope from none, so two configurations could share a key). A key of the
/// current scheme remembers the key its configuration had before
/// ([`previous`](Self::previous)): when nothing is stored under the new
/// key, a cache holding the store's refresh lock reads the old one, takes
/// its token over and saves it under the new key (logged at `info`); from
/// then on the old entry is not read again, and it is left in place for
/// replicas that still run the old version. A key whose old form was
/// ambiguous (a parameter name or value with `=`, or an empty scope) has no
/// previous key: its old entry may be another configuration's token. (No
/// scope keeps its previous key: the first scheme gave it the key of an
/// empty scope too, a configuration that asks for nothing and is rare.)
///
/// ```
/// use tower_bearer::store::StoreKey;
///
/// let a = StoreKey::new(["my-api", "tenant-1"]);
/// assert_eq!(a, StoreKey::new(["my-api", "tenant-1"]));
/// assert_ne!(a, StoreKey::new(["my-api", "tenant-2"]));
/// assert_eq!(a.as_str().len(), 64);
///
/// // A key of your own that replaces an older one of yours: the cache moves
/// // the token stored under the old key the first time it finds nothing
/// // under the new one.
/// let old = StoreKey::new(["my-api"]);
/// let new = StoreKey::new(["my-api", "v2"]).migrating_from(old.clone());
/// assert_eq!(new.previous(), Some(&old));
/// ```
#[derive(Clone)]
pub struct StoreKey {
    hex: Arc<str>,
    /// The key this one replaces, read once when nothing is stored under
    /// this one.
    previous: Option<Arc<StoreKey>>,
    /// Why this key must not be used with a store (a grant that cannot
    /// tell whose token it holds); the cache refuses to build with it.
    unusable: Option<&'static str>,
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
        StoreKey::hashed(SCHEME, parts)
    }

    fn hashed<I, S>(scheme: &str, parts: I) -> StoreKey
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hasher = Sha256::new();
        absorb(&mut hasher, scheme);
        for part in parts {
            absorb(&mut hasher, part.as_ref());
        }
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        StoreKey {
            hex: hex.into(),
            previous: None,
            unusable: None,
        }
    }

    /// The key of the client's own token at `endpoint` (the client
    /// credentials grant): URL, client id, scopes (sorted, without
    /// duplicates; a configured empty scope is not no scope) and the extra
    /// parameters (`audience`, `resource`, …, each name and value on its
    /// own). [`ClientCredentialsGrant::store_key`](crate::oauth::ClientCredentialsGrant::store_key)
    /// returns it. Its [`previous`](Self::previous) key is the first
    /// scheme's, when that one was unambiguous.
    pub fn for_endpoint(endpoint: &TokenEndpoint) -> StoreKey {
        let key = StoreKey::hashed(OAUTH2_SCHEME_V2, endpoint_parts(endpoint, "client", None));
        match v1_endpoint_parts(endpoint, "client", None) {
            Some(parts) => key.migrating_from(StoreKey::new(parts)),
            None => key,
        }
    }

    /// The key of `username`'s token at `endpoint` (the password grant, or
    /// a refresh token that belongs to that user): as
    /// [`for_endpoint`](Self::for_endpoint), plus the user name.
    /// [`PasswordGrant::store_key`](crate::oauth::PasswordGrant::store_key)
    /// and [`RefreshTokenGrant::store_key`](crate::oauth::RefreshTokenGrant::store_key)
    /// return it.
    pub fn for_user(endpoint: &TokenEndpoint, username: &str) -> StoreKey {
        let key = StoreKey::hashed(
            OAUTH2_SCHEME_V2,
            endpoint_parts(endpoint, "user", Some(username)),
        );
        match v1_endpoint_parts(endpoint, "user", Some(username)) {
            Some(parts) => key.migrating_from(StoreKey::new(parts)),
            None => key,
        }
    }

    /// The key `endpoint` and `username` had in the first key scheme
    /// (tower-bearer before the scheme's version 2), to migrate a token
    /// stored under it by hand with [`migrating_from`](Self::migrating_from):
    /// for instance the one token of a store that
    /// [`RefreshTokenGrant::store_key`](crate::oauth::RefreshTokenGrant::store_key)
    /// used to key with an empty user name. Use it only for a store you
    /// know held that configuration's token: the first scheme gave some
    /// configurations one key.
    pub fn first_scheme_for_user(endpoint: &TokenEndpoint, username: &str) -> StoreKey {
        StoreKey::new(v1_parts(endpoint, "user", Some(username)))
    }

    /// The key of the token made with `params` for the configuration this
    /// key names: what a [variant](crate::TokenCache::variant) of a cache
    /// with a store uses. Every parameter (the scope as a set, the
    /// audience, each resource, the claims) is hashed on its own with
    /// this key, so different parameters give different keys, and none is
    /// this key.
    ///
    /// ```
    /// use tower_bearer::store::StoreKey;
    /// use tower_bearer::TokenParams;
    ///
    /// let key = StoreKey::new(["my-api"]);
    /// let admin = key.with_params(&TokenParams::new().scope("api:admin api:read"));
    /// assert_eq!(admin, key.with_params(&TokenParams::new().scope("api:read api:admin")));
    /// assert_ne!(admin, key);
    /// assert_ne!(
    ///     key.with_params(&TokenParams::new().audience("x")),
    ///     key.with_params(&TokenParams::new().resource("x")),
    /// );
    /// ```
    pub fn with_params(&self, params: &crate::TokenParams) -> StoreKey {
        let mut parts = vec![self.as_str().to_owned()];
        parts.extend(params.key_parts());
        let mut key = StoreKey::hashed(PARAMS_SCHEME, parts);
        key.unusable = self.unusable;
        key
    }

    /// This key, which replaces `previous`: when nothing is stored under
    /// it, the cache reads `previous` once (holding the store's refresh
    /// lock), takes its token over and saves it under this key.
    #[must_use]
    pub fn migrating_from(mut self, previous: StoreKey) -> StoreKey {
        self.previous = Some(Arc::new(previous.without_previous()));
        self
    }

    /// The key this one replaces, if any; see
    /// [`migrating_from`](Self::migrating_from).
    pub fn previous(&self) -> Option<&StoreKey> {
        self.previous.as_deref()
    }

    fn without_previous(mut self) -> StoreKey {
        self.previous = None;
        self
    }

    /// A key that a cache refuses to be built with, for `reason`.
    pub(crate) fn unusable(mut self, reason: &'static str) -> StoreKey {
        self.unusable = Some(reason);
        self.previous = None;
        self
    }

    /// Why a cache must not use this key, if it must not.
    pub(crate) fn unusable_reason(&self) -> Option<&'static str> {
        self.unusable
    }

    /// The version of the key scheme of the OAuth2 grants' keys: 2.
    pub fn scheme_version() -> u32 {
        2
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

/// Version 2: every scope and every parameter name and value is a part of
/// its own (each length-prefixed by the hash), counted, and the scope is
/// either `no scope` or `scope` followed by the scopes.
fn endpoint_parts(endpoint: &TokenEndpoint, kind: &str, user: Option<&str>) -> Vec<String> {
    let mut parts = vec![
        endpoint.url().to_owned(),
        endpoint.client_auth().client_id().to_owned(),
    ];
    match endpoint.scope() {
        None => parts.push("no scope".to_owned()),
        Some(scope) => {
            let mut scopes: Vec<&str> = scope.split_ascii_whitespace().collect();
            scopes.sort_unstable();
            scopes.dedup();
            parts.push("scope".to_owned());
            // An empty configured scope is sent (`scope=`), and differs
            // from a scope of only spaces only in what is sent: keep it.
            parts.push(scope.to_owned());
            parts.push(scopes.len().to_string());
            parts.extend(scopes.into_iter().map(str::to_owned));
        }
    }
    let mut params: Vec<(&str, &str)> = endpoint
        .params()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    params.sort_unstable();
    parts.push(params.len().to_string());
    for (name, value) in params {
        parts.push(name.to_owned());
        parts.push(value.to_owned());
    }
    parts.push(kind.to_owned());
    if let Some(user) = user {
        parts.push(user.to_owned());
    }
    parts
}

/// The first scheme's parts, when they are unambiguous for this
/// configuration: no `=` in a parameter's name or value (then `name=value`
/// splits one way only) and not an empty scope (which shared its key with
/// no scope; no scope, the common case, keeps it).
fn v1_endpoint_parts(
    endpoint: &TokenEndpoint,
    kind: &str,
    user: Option<&str>,
) -> Option<Vec<String>> {
    if endpoint
        .params()
        .iter()
        .any(|(name, value)| name.contains('=') || value.contains('='))
    {
        return None;
    }
    if endpoint
        .scope()
        .is_some_and(|s| s.split_ascii_whitespace().next().is_none())
    {
        return None;
    }
    Some(v1_parts(endpoint, kind, user))
}

/// The first scheme: the scopes joined by a space, each parameter as
/// `name=value`.
fn v1_parts(endpoint: &TokenEndpoint, kind: &str, user: Option<&str>) -> Vec<String> {
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

/// Keys are equal when their hashes are: the previous key is how to find an
/// old entry, not part of the identity.
impl PartialEq for StoreKey {
    fn eq(&self, other: &StoreKey) -> bool {
        self.hex == other.hex
    }
}

impl Eq for StoreKey {}

impl Hash for StoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hex.hash(state);
    }
}

impl PartialOrd for StoreKey {
    fn partial_cmp(&self, other: &StoreKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StoreKey {
    fn cmp(&self, other: &StoreKey) -> std::cmp::Ordering {
        self.hex.cmp(&other.hex)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = f.debug_tuple("StoreKey");
        t.field(&&*self.hex);
        if let Some(previous) = &self.previous {
            t.field(&format_args!("previous: {}", previous.hex));
        }
        t.finish()
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

    fn endpoint(
        configure: impl FnOnce(crate::oauth::TokenEndpointBuilder) -> crate::oauth::TokenEndpointBuilder,
    ) -> TokenEndpoint {
        let builder = TokenEndpoint::builder(
            "https://idp.example/token",
            crate::oauth::ClientAuth::basic("app", "s3cret"),
        );
        configure(builder)
            .transport(tower::service_fn(
                |_r: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                        bytes::Bytes,
                    >::default(
                    )))
                },
            ))
            .build()
            .unwrap()
    }

    #[test]
    fn keys_are_stable_across_processes_and_versions() {
        // Pinned (computed independently, with Python's hashlib): changing
        // the scheme would orphan every stored token and refresh token.
        assert_eq!(
            StoreKey::new(["a", "b"]).as_str(),
            "dd8041a93e12eef81fe1066930b2085b7c2a133f8313a4a87bd2d6cbb2e9b2fe"
        );
        let endpoint = endpoint(|b| b.scope("write read read").audience("api"));
        // The first scheme's key, which version 2 migrates from.
        let alice = StoreKey::for_user(&endpoint, "alice");
        assert_eq!(
            alice.previous().unwrap().as_str(),
            "8315fae0cfdb4c1ec4d2ce7e7a90fbd934d0b2642b261215ba81c8f3fa6ef2c3"
        );
        assert_eq!(
            StoreKey::first_scheme_for_user(&endpoint, "alice").as_str(),
            "8315fae0cfdb4c1ec4d2ce7e7a90fbd934d0b2642b261215ba81c8f3fa6ef2c3"
        );
        // Version 2, pinned the same way (Python: the scheme, then the URL,
        // the client id, "scope", the configured scope, the count and the
        // sorted scopes, the count of parameters and each name and value,
        // "user" and the user, each as a big-endian u64 length and bytes).
        assert_eq!(
            alice.as_str(),
            "fbb73dc019b1dd9a1b2dce61a3686629893cb4f02eb89ce199934299d491b7fe"
        );
        assert_ne!(alice.as_str(), alice.previous().unwrap().as_str());
        assert_ne!(StoreKey::for_endpoint(&endpoint), alice);
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(StoreKey::new(["ab", "c"]), StoreKey::new(["a", "bc"]));
        assert_ne!(StoreKey::new(["a"]), StoreKey::new(["a", ""]));
        let key = StoreKey::new(["x"]);
        assert!(key.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(format!("{key}"), key.as_str());
    }

    #[test]
    fn ambiguous_first_scheme_keys_have_no_previous_key() {
        let equals = endpoint(|b| b.param("tenant=blue", "1"));
        assert!(StoreKey::for_endpoint(&equals).previous().is_none());
        let empty = endpoint(|b| b.scope(""));
        assert!(StoreKey::for_endpoint(&empty).previous().is_none());
        let equals_in_value = endpoint(|b| b.param("tenant", "blue=1"));
        assert!(
            StoreKey::for_endpoint(&equals_in_value)
                .previous()
                .is_none()
        );
        let plain = endpoint(|b| b.param("tenant", "blue"));
        assert!(StoreKey::for_endpoint(&plain).previous().is_some());
        // Version 2 tells all of them apart.
        assert_ne!(
            StoreKey::for_endpoint(&equals),
            StoreKey::for_endpoint(&equals_in_value)
        );
        assert_ne!(
            StoreKey::for_endpoint(&empty),
            StoreKey::for_endpoint(&endpoint(|b| b))
        );
    }
}
