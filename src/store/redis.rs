//! [`RedisStore`]: one token shared by every replica of a fleet.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::codec::{Codec, ENCRYPTED_VERSION, no_keys};
use super::lock::unique_value;
use super::{HeldLock, StoreError, StoreKey, StoreLock, StoredToken, TokenStore};
use crate::source::BoxFuture;

/// Default prefix of the Redis keys.
pub const DEFAULT_KEY_PREFIX: &str = "tower-bearer:";

/// Default time a token with a refresh token is kept in Redis: 30 days.
/// The access token expires much sooner, but the refresh token must
/// outlive it — a fleet restarted after the access token expired needs the
/// refresh token, and a rotated one exists nowhere else.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default connection and response timeout of each Redis command: 1 s.
/// Redis answers in well under a millisecond; a command that takes a second
/// means Redis is gone, and the cache then carries on alone.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Saves the entry `ARGV[1]` for `ARGV[2]` ms under `KEYS[1]`: `OK`.
///
/// * With a second key (the lock), only while the holder's value
///   `ARGV[4]` holds it: `lost` otherwise.
/// * With a fifth argument (an encrypted store, which read the entry and
///   decided it may replace it, as Lua cannot decrypt), only if the entry
///   is still that value (`''`: none): `changed` otherwise.
/// * Without it, unless the key holds an entry of another format version
///   than `ARGV[3]` (a newer build's, or an encrypted one, which this
///   store must not replace): `version:<n>` then.
///
/// A value that is not a JSON object with a numeric `version` (corrupt),
/// or a key of another type, is replaced.
const SAVE: &str = r"if #KEYS == 2 and redis.call('GET', KEYS[2]) ~= ARGV[4] then return 'lost' end
local v = false
if redis.call('TYPE', KEYS[1]).ok == 'string' then v = redis.call('GET', KEYS[1]) end
if #ARGV >= 5 then
  if (v or '') ~= ARGV[5] then return 'changed' end
elseif v then
  local ok, d = pcall(cjson.decode, v)
  if ok and type(d) == 'table' and type(d['version']) == 'number' and d['version'] ~= tonumber(ARGV[3]) then
    return 'version:' .. string.format('%d', d['version'])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'OK'";

/// The entry under `KEYS[1]`, if it holds a string (as [`SAVE`] sees it).
const READ: &str = r"if redis.call('TYPE', KEYS[1]).ok == 'string' then return redis.call('GET', KEYS[1]) end
return false";

/// How often an encrypted store reads the entry and tries to replace it,
/// when another writer changes it in between each time.
const ENCRYPTED_SAVE_ATTEMPTS: usize = 3;

/// Compare-and-delete: release the lock only if we still hold it.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Compare-and-extend: extend the lock only if we still hold it.
const EXTEND: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// A [`TokenStore`] in Redis (feature `redis`): the replicas of a fleet
/// with one client id share one token, and exactly one of them refreshes
/// it.
///
/// # Keys
///
/// For a [`StoreKey`] `K` and the prefix `P` (default
/// [`DEFAULT_KEY_PREFIX`]):
///
/// * `P{K}` holds the [`StoredToken`] as JSON, with a time to live that
///   matches the access token's expiry — or, when the token carries a
///   refresh token, at least [`refresh_token_ttl`](Self::refresh_token_ttl)
///   (default 30 days), so that the refresh token outlives its access token.
/// * `P{K}:lock` is the refresh lock: `SET NX PX` with a value unique to
///   its holder, extended (compare-and-`PEXPIRE`) and released
///   (compare-and-`DEL`) by Lua scripts that act only while the value is
///   still the holder's. A holder that dies loses it when its time to live
///   ends.
///
/// The braces are a Redis Cluster hash tag: both keys of one token live in
/// one slot.
///
/// A save is a script that leaves an entry of another format version (a
/// newer build's, during a rolling upgrade) as it is and fails with
/// [`StoreError::is_unknown_version`]; a load reports such an entry the
/// same way, and the cache carries on without the store for that token.
/// A corrupt value is ignored and replaced by the next save.
///
/// With `encrypted` (feature `store-encryption`), each
/// entry is sealed with AES-256-GCM under a key you supply. Lua cannot
/// decrypt, so an encrypted store's save reads the entry first, decides
/// whether it may replace it (not when it does not decrypt with this
/// store's keys: [`StoreError::is_undecryptable`]), and then replaces it in
/// a script only if it is still the entry it read (a compare-and-set; it
/// reads again, up to 3 times, when another writer was faster).
///
/// # Connection
///
/// Commands go through a `redis` [`ConnectionManager`], created at the
/// first command (so building a store needs no Redis and no runtime), which
/// reconnects after Redis comes back. Each command gives up after
/// [`timeout`](Self::timeout) (default 1 s), waiting for a connection
/// included. A command whose connection turns out to have been closed (the
/// first one after Redis restarted or failed over) is sent once more, on a
/// new connection, within the same timeout: the lock and the scripts are
/// safe to send twice, and a lock whose first `SET` reached Redis is
/// recognised as ours by its value. A refused connection is not retried. A
/// failed command is a
/// [`StoreError`]; the cache logs it and fetches tokens on its own until
/// Redis answers again. Use the store from one tokio runtime.
///
/// # Security
///
/// Redis then holds access and refresh tokens, in clear text unless the
/// store is `encrypted`. Either way, use a Redis
/// that only this application can reach, with ACLs (a user limited to the
/// prefix: `~tower-bearer:*`) and TLS (a `rediss://` URL needs one of the
/// `redis` crate's TLS features, enabled in your own `Cargo.toml`). The
/// store's `Debug` shows the address and the database, never the password.
///
/// # Example
///
/// ```no_run
/// use tower_bearer::oauth::{ClientAuth, ClientCredentialsGrant, TokenEndpoint};
/// use tower_bearer::store::RedisStore;
/// use tower_bearer::TokenCache;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = TokenEndpoint::builder(
///     "https://idp.example/oauth2/token",
///     ClientAuth::basic("my-client", "my-secret"),
/// )
/// .build()?;
/// let grant = ClientCredentialsGrant::new(endpoint);
/// let redis = RedisStore::new("redis://redis.internal:6379/0")?;
///
/// // Every replica builds the same cache: one of them fetches, all share.
/// let cache = TokenCache::builder(grant.clone())
///     .store(redis, grant.store_key())
///     .build()?;
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    prefix: String,
    refresh_token_ttl: Duration,
    timeout: Duration,
    codec: Codec,
}

impl RedisStore {
    /// A store at the Redis `url` (`redis://[[user]:password@]host[:port][/db]`).
    /// Connects at the first command.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the URL is not a Redis URL.
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        Ok(RedisStore::from_client(client))
    }

    /// A store over a `redis::Client` you configured (TLS, RESP3, …).
    pub fn from_client(client: redis::Client) -> RedisStore {
        RedisStore {
            inner: Arc::new(Inner {
                client,
                manager: Mutex::new(None),
                prefix: DEFAULT_KEY_PREFIX.to_owned(),
                refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
                timeout: DEFAULT_REDIS_TIMEOUT,
                codec: Codec::default(),
            }),
        }
    }

    /// The prefix of every key (default [`DEFAULT_KEY_PREFIX`]).
    #[must_use]
    pub fn key_prefix(self, prefix: impl Into<String>) -> RedisStore {
        self.configure(|inner| inner.prefix = prefix.into())
    }

    /// How long a token with a refresh token stays in Redis at least
    /// (default [`DEFAULT_REFRESH_TOKEN_TTL`]). Set it to your server's
    /// refresh-token lifetime; `Duration::MAX` keeps it as long as Redis
    /// can (times to live are capped at about 73 million years, the most
    /// Redis accepts with room to spare).
    #[must_use]
    pub fn refresh_token_ttl(self, ttl: Duration) -> RedisStore {
        self.configure(|inner| inner.refresh_token_ttl = ttl)
    }

    /// The connection and response timeout of each command (default
    /// [`DEFAULT_REDIS_TIMEOUT`]).
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> RedisStore {
        self.configure(|inner| inner.timeout = timeout)
    }

    /// Encrypts the entries this store writes with `keys`, and decrypts
    /// the entries it reads (feature `store-encryption`). Entries written
    /// before (in clear text) are still read, and encrypted at their next
    /// save. See [`EncryptionKeys`](super::EncryptionKeys).
    ///
    /// ```
    /// use tower_bearer::store::{EncryptionKeys, RedisStore};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (key_2026, key_2025) = ([7u8; 32], [5u8; 32]);
    /// let store = RedisStore::new("redis://redis.internal:6379/0")?.encrypted(
    ///     EncryptionKeys::new("2026", &key_2026)?.old_key("2025", &key_2025)?,
    /// );
    /// assert!(format!("{store:?}").contains("2025"));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "store-encryption")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store-encryption")))]
    #[must_use]
    pub fn encrypted(self, keys: super::EncryptionKeys) -> RedisStore {
        let codec = Codec::encrypted(keys);
        self.configure(|inner| inner.codec = codec)
    }

    /// Saves `token` under `key`, fenced by `lock` (its key and the
    /// holder's value) when given: `false` when the lock was lost.
    async fn save_entry(
        &self,
        conn: &mut ConnectionManager,
        key: &StoreKey,
        token: &StoredToken,
        lock: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let token_key = self.token_key(key);
        let ttl = ttl_of(token, inner.refresh_token_ttl);
        let entry = inner.codec.encode(key, token)?;
        if !inner.codec.is_encrypted() {
            let save = save_command(&token_key, &entry, ttl, lock, None);
            let (reply, _): (String, _) = query(conn, inner.timeout, &save).await?;
            return saved(&reply);
        }
        let read = redis::cmd("EVAL").arg(READ).arg(1).arg(&token_key).clone();
        for _ in 0..ENCRYPTED_SAVE_ATTEMPTS {
            let (current, _): (Option<Vec<u8>>, _) = query(conn, inner.timeout, &read).await?;
            let current = current.unwrap_or_default();
            if !current.is_empty() {
                inner.codec.replaceable(key, &current)?;
            }
            let save = save_command(&token_key, &entry, ttl, lock, Some(&current));
            let (reply, _): (String, _) = query(conn, inner.timeout, &save).await?;
            if reply != "changed" {
                return saved(&reply);
            }
        }
        Err(StoreError::unavailable(
            "the stored token kept changing while this store saved",
        ))
    }

    fn configure(self, f: impl FnOnce(&mut Inner)) -> RedisStore {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            client: shared.client.clone(),
            manager: Mutex::new(None),
            prefix: shared.prefix.clone(),
            refresh_token_ttl: shared.refresh_token_ttl,
            timeout: shared.timeout,
            codec: shared.codec.clone(),
        });
        f(&mut inner);
        RedisStore {
            inner: Arc::new(inner),
        }
    }

    /// The key that holds the token of `key`.
    pub fn token_key(&self, key: &StoreKey) -> String {
        format!("{}{{{}}}", self.inner.prefix, key.as_str())
    }

    /// The key that holds the refresh lock of `key`.
    pub fn lock_key(&self, key: &StoreKey) -> String {
        format!("{}{{{}}}:lock", self.inner.prefix, key.as_str())
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self
            .inner
            .manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = &*slot {
            return Ok(manager.clone());
        }
        let timeout = self.inner.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Fail fast while Redis is down: the cache has a fallback, and
            // the next command tries again.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            .map_err(StoreError::unavailable)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}

/// How long Redis keeps `token`: until its access token expires, or at
/// least `refresh_token_ttl` when it has a refresh token.
fn ttl_of(token: &StoredToken, refresh_token_ttl: Duration) -> Duration {
    let access = token
        .time_to_live(super::clocks_now().1)
        .unwrap_or(TTL_WITHOUT_EXPIRY);
    let ttl = if token.refresh_token().is_some() {
        access.max(refresh_token_ttl)
    } else {
        access
    };
    ttl.max(Duration::from_millis(1))
}

/// The [`SAVE`] script for `entry` under `token_key`, fenced by `lock`
/// (its key and the holder's value) when given, and conditional on the
/// entry being `expected` when given.
fn save_command(
    token_key: &str,
    entry: &[u8],
    ttl: Duration,
    lock: Option<(&str, &str)>,
    expected: Option<&[u8]>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SAVE)
        .arg(if lock.is_some() { 2 } else { 1 })
        .arg(token_key);
    if let Some((lock_key, _)) = lock {
        cmd.arg(lock_key);
    }
    cmd.arg(entry)
        .arg(millis(ttl))
        .arg(StoredToken::VERSION)
        .arg(lock.map_or("", |(_, value)| value));
    if let Some(expected) = expected {
        cmd.arg(expected);
    }
    cmd
}

/// What the [`SAVE`] script answered: saved (`true`), the lock was lost
/// (`false`), or another writer's entry was left as it was.
fn saved(reply: &str) -> Result<bool, StoreError> {
    match reply {
        "OK" => Ok(true),
        "lost" => Ok(false),
        other => match other.strip_prefix("version:").and_then(|v| v.parse().ok()) {
            Some(ENCRYPTED_VERSION) => Err(no_keys()),
            version => Err(StoreError::unknown_version(version.unwrap_or(u64::MAX))),
        },
    }
}

/// How long Redis keeps a token saved without an expiry (caches always
/// save one; a hand-made `StoredToken` may lack it): 15 minutes, the
/// cache's default lifetime for such tokens.
const TTL_WITHOUT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// The longest time to live given to Redis, in milliseconds (about 73
/// million years). Redis refuses a `PX`/`PEXPIRE` whose expiry overflows
/// its millisecond clock (`i64`); a longer setting (`Duration::MAX` for a
/// lock or a refresh token that should never lapse) is capped to this.
const MAX_TTL_MS: u64 = i64::MAX as u64 / 4;

/// `d` as a Redis time to live: whole milliseconds in `1..=MAX_TTL_MS`.
/// A Redis command, given up after `timeout`. The connection manager's own
/// timeouts apply to each connection attempt and each response, but a
/// command that waits for a reconnection (attempts, retries, backoff) could
/// take several times as long.
async fn within<T>(
    timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, command).await {
        Ok(result) => result.map_err(StoreError::unavailable),
        Err(_) => Err(StoreError::unavailable("Redis did not answer in time")),
    }
}

/// Sends `cmd`, and once more when the connection turned out to be dead:
/// after Redis restarted or failed over, the first command on the old
/// connection meets a closed socket, and the connection manager reconnects
/// for the second. A refused connection (Redis down) is not retried: that
/// fails fast. Both attempts together stay within `timeout`. Returns the
/// reply and whether it came from the second attempt.
async fn query<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    timeout: Duration,
    cmd: &redis::Cmd,
) -> Result<(T, bool), StoreError> {
    within(timeout, async {
        match cmd.query_async(conn).await {
            Err(error) if dropped(&error) => {
                tracing::debug!(%error, "the Redis connection was closed; sending the command again");
                cmd.query_async(conn).await.map(|reply| (reply, true))
            }
            reply => reply.map(|reply| (reply, false)),
        }
    })
    .await
}

/// Whether `error` says the connection was closed under the command (and a
/// new one may work), rather than refused.
fn dropped(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() && !error.is_connection_refusal()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

impl TokenStore for RedisStore {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection()?;
            let get = redis::cmd("GET").arg(self.token_key(key)).clone();
            let (bytes, _): (Option<Vec<u8>>, _) =
                query(&mut conn, self.inner.timeout, &get).await?;
            let Some(bytes) = bytes else { return Ok(None) };
            match self.inner.codec.decode(key, &bytes) {
                Ok(token) => Ok(Some(token)),
                Err(error) if error.is_anothers() => {
                    tracing::warn!(
                        %key,
                        %error,
                        "the token in Redis is of a version this build does not know, or does not decrypt here; carrying on without it (it is left as it is)"
                    );
                    Err(error)
                }
                Err(error) => {
                    tracing::warn!(
                        %key,
                        %error,
                        "ignoring an unreadable token in Redis; the next token saved replaces it"
                    );
                    Ok(None)
                }
            }
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection()?;
            self.save_entry(&mut conn, key, token, None).await.map(drop)
        })
    }

    fn save_if_held<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        lock: &'a StoreLock,
    ) -> Option<BoxFuture<'a, Result<bool, StoreError>>> {
        let lock = lock.downcast_ref::<RedisLock>()?;
        if lock.key != self.lock_key(key) {
            return None;
        }
        let mut conn = lock.conn.clone();
        Some(Box::pin(async move {
            self.save_entry(&mut conn, key, token, Some((&lock.key, &lock.value)))
                .await
        }))
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection()?;
            let lock_key = self.lock_key(key);
            let value = unique_value();
            let timeout = self.inner.timeout;
            let set = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .clone();
            let reply = match query::<Option<String>>(&mut conn, timeout, &set).await {
                // Sent twice: the first may have reached Redis before its
                // connection closed, and then the lock is ours already.
                Ok((None, true)) => {
                    let get = redis::cmd("GET").arg(&lock_key).clone();
                    query::<Option<String>>(&mut conn, timeout, &get)
                        .await
                        .map(|(holder, _)| holder.filter(|holder| *holder == value))
                }
                reply => reply.map(|(reply, _)| reply),
            };
            let held = RedisLock {
                conn,
                key: lock_key,
                value,
                timeout,
            };
            match reply {
                Ok(Some(_)) => Ok(Some(StoreLock::new(held))),
                Ok(None) => Ok(None),
                // The SET may have reached Redis with only its answer late
                // or lost: a dropped lock is released (compare-and-delete,
                // sent after the SET on the same connection), so that no
                // replica waits out the time to live of a lock nobody holds.
                Err(error) => {
                    drop(StoreLock::new(held));
                    Err(error)
                }
            }
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.inner.client.get_connection_info();
        f.debug_struct("RedisStore")
            .field("addr", &format_args!("{}", info.addr()))
            .field("db", &info.redis_settings().db())
            .field("prefix", &self.inner.prefix)
            .field("refresh_token_ttl", &self.inner.refresh_token_ttl)
            .field("timeout", &self.inner.timeout)
            .field("entries", &self.inner.codec)
            .finish()
    }
}

struct RedisLock {
    conn: ConnectionManager,
    key: String,
    value: String,
    timeout: Duration,
}

impl HeldLock for RedisLock {
    fn extend(&self, ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            // Compare-and-extend: sending it twice does no harm.
            let extend = redis::cmd("EVAL")
                .arg(EXTEND)
                .arg(1)
                .arg(&self.key)
                .arg(&self.value)
                .arg(millis(ttl))
                .clone();
            let (extended, _): (i64, _) = query(&mut conn, self.timeout, &extend).await?;
            Ok(extended == 1)
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        let RedisLock {
            mut conn,
            key,
            value,
            timeout,
        } = *self;
        Box::pin(async move {
            // Compare-and-delete: sending it twice does no harm.
            let release = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(&key)
                .arg(&value)
                .clone();
            query::<i64>(&mut conn, timeout, &release).await.map(drop)
        })
    }
}
