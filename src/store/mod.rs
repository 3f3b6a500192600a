//! Token stores: tokens that survive restarts ([`FileStore`]) and tokens
//! shared by the caches of a process ([`MemoryStore`]) or the replicas of a
//! fleet (`RedisStore`, feature `redis`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bearer::store::{MemoryStore, StoreKey};
//! use tower_bearer::{source, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let cache = TokenCache::builder(source::from_fn(|_| async {
//!     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
//! }))
//! .store(store.clone(), StoreKey::new(["my-api"]))
//! .on_refresh(|token| println!("new token, refresh token: {}", token.refresh_token().is_some()))
//! .build()?;
//!
//! cache.token().await?;
//! assert!(store.get(&StoreKey::new(["my-api"])).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Which store
//!
//! | store | keeps tokens | shares them with | use it for |
//! | --- | --- | --- | --- |
//! | none | in the cache | the cache's clones | one process, tokens it can always get again (client credentials) |
//! | [`MemoryStore`] | in memory | the caches of one process | several caches (stacks, layers) for one API; tests |
//! | [`FileStore`] | in a JSON file (0600) | processes on one host | a daemon or CLI with a refresh token that must survive restarts (B5) |
//! | `RedisStore` | in Redis | every replica that reaches it | a fleet with one client id: one token request per lifetime, one refresher for a rotating refresh token |
//!
//! A store is configured with [`TokenCacheBuilder::store`](crate::TokenCacheBuilder::store)
//! and a [`StoreKey`] (for the OAuth2 grants: their `store_key()`). For
//! users who persist elsewhere (a keychain, a database),
//! [`on_refresh`](crate::TokenCacheBuilder::on_refresh) is called with each
//! new token instead, or as well.
//!
//! # How a cache uses its store
//!
//! Never on the per-request path: a call that finds a usable token costs
//! two atomic loads, store or not. The store is used by
//! the single refresh of each cache (B3), in this order:
//!
//! 1. **Load.** The cache loads the stored token. A cache without a token
//!    yet (a restart) installs it if it is still usable, with no token
//!    request. A cache replacing its token installs it if it is a
//!    different token that is still fresh (another replica refreshed
//!    first). A stored token that is not installed still gives the refresh
//!    its refresh token: it is the `previous` token handed to the source.
//!    A token the cache has held before (the one it is replacing, one the
//!    server rejected, one it replaced) is neither installed nor handed to
//!    the source: the store fell behind this cache (a save failed), and its
//!    refresh token may be spent.
//! 2. **Lock.** Otherwise the cache tries the store's refresh lock. The
//!    holder loads once more (someone may have just finished), fetches
//!    from the token source, **saves the new token before handing it out**
//!    (so a rotated refresh token is in the store before anyone uses the new
//!    access token), and releases the lock. While it holds the lock (its
//!    token requests and the save included) it extends it every third of
//!    the lock's time to live, so a slow but live holder keeps it, and a
//!    dead one loses it within that time. The save is **fenced**: it
//!    happens only while the holder still holds the lock
//!    ([`TokenStore::save_if_held`]; one script in Redis, checked under the
//!    store's mutex in a [`MemoryStore`]). A holder that could not reach
//!    the store for longer than the time to live, and whose lock another
//!    cache has taken since, hands its token to its own callers and saves
//!    nothing (logged, and counted as a store error): it never writes over
//!    its successor's token, and with it a spent refresh token back.
//! 3. **Wait.** A cache that did not get the lock polls the store every
//!    [`STORE_POLL_INTERVAL`](crate::cache::STORE_POLL_INTERVAL) for a new
//!    token and tries the lock again each time. It installs the holder's
//!    token as soon as it appears; it takes over the refresh as soon as the
//!    lock is free (the holder failed, or died and its lock lapsed). Callers
//!    that have a usable token meanwhile keep using it (B2); only callers
//!    with none wait.
//!
//! A token installed from the store counts no token request, and
//! [`CacheStats::adopted_from_store`](crate::CacheStats::adopted_from_store)
//! counts it.
//!
//! # When Redis or the lock holder dies
//!
//! * **The holder dies** (its process crashes, its refresh is dropped):
//!   a dropped lock is released at once; a crashed holder's lock lapses
//!   after the lock's time to live
//!   ([`store_lock_ttl`](crate::TokenCacheBuilder::store_lock_ttl), by
//!   default a tenth of the replaced token's lifetime, between 1 and 10 s:
//!   [`default_store_lock_ttl`](crate::cache::default_store_lock_ttl)).
//!   The next waiter to poll takes it over and refreshes, so the others are delayed by at most the time to live plus one poll interval.
//!   A [`FileStore`] lock is an operating-system lock, released the moment
//!   its holder dies.
//! * **The holder is alive but slow** (its token endpoint retries): it
//!   keeps the lock. A waiter waits at most
//!   [`store_wait`](crate::TokenCacheBuilder::store_wait) (by default the
//!   lock's time to live plus the longest a refresh with this cache's retry
//!   settings can take), then fetches a token on its own and logs a
//!   warning. Keep `store_wait` above the longest refresh of every cache
//!   sharing the store: a waiter fetching while the holder still does
//!   sends the same rotating refresh token.
//! * **The store fails** (Redis down, disk full): each failure is logged at
//!   `warn` (never with a secret) and counted in
//!   [`CacheStats::store_errors`](crate::CacheStats::store_errors). A load
//!   that fails does not keep the cache from trying the lock (an entry
//!   this build cannot read is not an outage); a lock that cannot be taken
//!   is, and the cache follows the outage rule below. When the store
//!   answers again the next refresh uses it, and sharing resumes (the
//!   `RedisStore` reconnects by itself).
//!
//! # The outage rule
//!
//! Without the lock (the store is unreachable, or the holder took longer
//! than [`store_wait`](crate::TokenCacheBuilder::store_wait)), and when the
//! store holds an entry for its key that this cache cannot read (a newer
//! build's, during a rolling upgrade, or one encrypted with a key this
//! store was not given: that entry may have the newest refresh token),
//! a cache never sends a refresh token the store may share: another replica may be
//! sending the same one, and a server with reuse detection (oidc-provider,
//! Okta, Auth0) then revokes the whole grant. Instead:
//!
//! * a source with another way to a token uses it: the password and client
//!   credentials grants (and a custom login) fetch with their primary
//!   grant ([`Restriction::NoRefreshToken`](crate::source::Restriction));
//! * a source whose tokens carry no refresh token is asked as usual;
//! * otherwise (a [`RefreshTokenGrant`](crate::oauth::RefreshTokenGrant),
//!   a source of your own whose tokens carry refresh tokens) the refresh
//!   fails with a transient [`ErrorKind::Store`](crate::ErrorKind::Store)
//!   error: the cache keeps serving its token while it is usable, callers
//!   get that error once it is not, and each later refresh tries the store
//!   again; when it is back, one replica takes the lock and spends the
//!   refresh token once, and the others take its token.
//!
//! Nothing is saved without the lock. Holding it, a refresh whose refresh
//! token is refused (`invalid_grant`) reads the store once more before
//! anything else: a replica that refreshed without the lock, or whose lock
//! lapsed, may have rotated it and stored its successor, which is then
//! installed or refreshed from. Only then does a grant fall back to its
//! primary grant, or the refresh fail.
//!
//! # Clocks
//!
//! A stored token carries wall-clock times (see [`StoredToken`]), and each
//! cache reads them with its own clock: keep the clocks of processes that
//! share a store synchronised (NTP). A cache whose clock is behind the
//! fetching one's by more than the leeway sends a token past its expiry
//! (the server rejects it, and the cache refreshes: B6); one whose clock
//! is ahead refreshes early. Tokens from different processes are never
//! ordered by their times: a skew could make a newer token look older and
//! have its (newest) refresh token skipped.
//!
//! # Security
//!
//! A store holds access and refresh tokens, in clear text unless you
//! encrypt them (feature `store-encryption`: the file and Redis stores'
//! `encrypted(EncryptionKeys)`, AES-256-GCM with keys you supply and can
//! rotate; an entry that does not decrypt is never replaced, and the cache
//! carries on without it by the outage rule above). The [`FileStore`]
//! creates its files with mode 0600 and warns about a file others can
//! read; Redis must be one that only this application can reach (ACLs,
//! TLS). Keys are hashes ([`StoreKey`]) and hold no secret; logs, errors
//! and `Debug` output never show a token or a key (B8).
//!
//! # Writing a store
//!
//! Implement [`TokenStore`]: three methods returning boxed futures, like
//! [`TokenSource`](crate::TokenSource). Keep what `load` cannot decode to
//! yourself (log it, return `Ok(None)`): the next save replaces it. Return
//! an error only when the store cannot be used now, and the cache will
//! carry on alone.

mod codec;
#[cfg(feature = "store-encryption")]
mod encryption;
mod error;
mod file;
mod key;
mod lock;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod stored;

use std::sync::Arc;
use std::time::Duration;

use crate::source::BoxFuture;

#[cfg(feature = "store-encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "store-encryption")))]
pub use self::encryption::EncryptionKeys;
pub use self::error::StoreError;
pub use self::file::FileStore;
pub use self::key::StoreKey;
pub use self::lock::{HeldLock, StoreLock};
pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{
    DEFAULT_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT, DEFAULT_REFRESH_TOKEN_TTL, RedisStore,
};
pub use self::stored::StoredToken;

pub(crate) use self::stored::{clocks_now, instant_to_wall};

/// Where tokens are kept between refreshes, restarts and processes; see the
/// [module documentation](self) for how a cache uses it.
///
/// The trait is object safe; the cache holds its store as
/// `Arc<dyn TokenStore>`.
///
/// # Contract
///
/// * Entries are keyed by [`StoreKey`]; a store never needs to look inside
///   one.
/// * `load` returns what the last `save` of that key stored, or `None`.
///   Data it cannot decode is logged and reported as `None`.
/// * `save` replaces the entry, and is durable when it returns (as durable
///   as the store is).
/// * `try_lock` takes the key's refresh lock for `ttl` if nobody holds it,
///   with a value unique to this holder, and returns `None` at once if
///   somebody does. It never waits for the lock.
/// * Errors mean "the store cannot be used now": the cache logs them and
///   carries on alone.
/// * Never log a token or put one into an error (B8).
///
/// # Example
///
/// What the cache does with a store, done by hand:
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::{MemoryStore, StoreKey, StoredToken, TokenStore};
/// use tower_bearer::Token;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::store::StoreError> {
/// let store = MemoryStore::new();
/// let key = StoreKey::new(["https://idp.example/token", "my-client"]);
///
/// // One refresher at a time.
/// let lock = store.try_lock(&key, Duration::from_secs(10)).await?.expect("free");
/// assert!(store.try_lock(&key, Duration::from_secs(10)).await?.is_none());
///
/// let token = Token::new("t0k3n").with_expires_in(Duration::from_secs(3600));
/// store.save(&key, &StoredToken::from_token(&token)).await?;
/// lock.release().await?;
///
/// // Another cache (another replica, or after a restart) finds it.
/// let loaded = store.load(&key).await?.expect("saved");
/// assert_eq!(loaded.access_token().secret(), "t0k3n");
/// # Ok(())
/// # }
/// ```
pub trait TokenStore: Send + Sync + 'static {
    /// The token stored under `key`, if any.
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>>;

    /// Stores `token` under `key`, replacing what was there.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Takes the refresh lock of `key` for `ttl`, or returns `None` at once
    /// when someone else holds it.
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>>;

    /// Stores `token` under `key` only if `lock` (this store's lock of
    /// `key`) is still held by its holder, in one atomic step (fencing):
    /// `Ok(false)` when it is not, and nothing was saved. A holder whose
    /// lock lapsed (it could not reach the store for longer than the time
    /// to live) must not overwrite what its successor saved: with a
    /// rotating refresh token, that would put a spent one back.
    ///
    /// The default, `None`, says the store cannot do this; the cache then
    /// [extends](StoreLock::extend) the lock and calls
    /// [`save`](Self::save) if it still held it, which a lock that lapses
    /// between the two does not stop. A store whose locks cannot be lost
    /// while held (an operating-system file lock) needs nothing more. A
    /// store that wraps another (to encrypt, to count) and does not
    /// implement this keeps its own `save` in the path.
    fn save_if_held<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        lock: &'a StoreLock,
    ) -> Option<BoxFuture<'a, Result<bool, StoreError>>> {
        let _ = (key, token, lock);
        None
    }
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        (**self).load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).save(key, token)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        (**self).try_lock(key, ttl)
    }

    fn save_if_held<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        lock: &'a StoreLock,
    ) -> Option<BoxFuture<'a, Result<bool, StoreError>>> {
        (**self).save_if_held(key, token, lock)
    }
}

impl<T: TokenStore + ?Sized> TokenStore for Box<T> {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        (**self).load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).save(key, token)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        (**self).try_lock(key, ttl)
    }

    fn save_if_held<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        lock: &'a StoreLock,
    ) -> Option<BoxFuture<'a, Result<bool, StoreError>>> {
        (**self).save_if_held(key, token, lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: &dyn TokenStore, _: Arc<dyn TokenStore>) {}
}
