//! [`MemoryStore`]: tokens shared by the caches of one process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{HeldLock, StoreError, StoreKey, StoreLock, StoredToken, TokenStore};
use crate::source::BoxFuture;

/// A [`TokenStore`] in memory: several caches of one process share a token
/// (say, one cache per HTTP client stack, all for one API), and tests get a
/// store without I/O. Nothing survives the process.
///
/// Cheap to clone; clones share the tokens and the locks. Lock times to
/// live run on tokio's clock, so tests drive them with
/// `tokio::time::advance` (B11).
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::{MemoryStore, StoreKey};
/// use tower_bearer::{source, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::Error> {
/// let store = MemoryStore::new();
/// let key = StoreKey::new(["my-api"]);
/// let fetch = || source::from_fn(|_| async {
///     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
/// });
/// let a = TokenCache::builder(fetch()).store(store.clone(), key.clone()).build().unwrap();
/// let b = TokenCache::builder(fetch()).store(store.clone(), key).build().unwrap();
///
/// a.token().await?;
/// b.token().await?;
/// assert_eq!(a.stats().token_requests + b.stats().token_requests, 1);
/// assert_eq!(b.stats().adopted_from_store, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<StoreKey, StoredToken>,
    /// Held locks: the holder's id and when the lock lapses.
    locks: HashMap<StoreKey, (u64, Instant)>,
    next_id: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token stored under `key`, without a future.
    pub fn get(&self, key: &StoreKey) -> Option<StoredToken> {
        self.lock().tokens.get(key).cloned()
    }

    /// Removes the token stored under `key`.
    pub fn remove(&self, key: &StoreKey) -> Option<StoredToken> {
        self.lock().tokens.remove(key)
    }
}

impl TokenStore for MemoryStore {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.get(key))))
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().tokens.insert(key.clone(), token.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn save_if_held<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        lock: &'a StoreLock,
    ) -> Option<BoxFuture<'a, Result<bool, StoreError>>> {
        let lock = lock.downcast_ref::<MemoryLock>()?;
        if !Arc::ptr_eq(&lock.store.inner, &self.inner) || lock.key != *key {
            return None;
        }
        // Held while the entry is this holder's: a lock that lapsed and
        // that nobody took since has no successor to protect.
        let mut state = self.lock();
        let held = state.locks.get(key).is_some_and(|&(id, _)| id == lock.id);
        if held {
            state.tokens.insert(key.clone(), token.clone());
        }
        Some(Box::pin(std::future::ready(Ok(held))))
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        let now = Instant::now();
        let mut state = self.lock();
        let taken = state
            .locks
            .get(key)
            .is_some_and(|&(_, lapses)| now < lapses);
        let lock = if taken {
            None
        } else {
            state.next_id += 1;
            let id = state.next_id;
            state
                .locks
                .insert(key.clone(), (id, crate::token::later(now, ttl)));
            Some(StoreLock::new(MemoryLock {
                store: self.clone(),
                key: key.clone(),
                id,
            }))
        };
        Box::pin(std::future::ready(Ok(lock)))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("tokens", &state.tokens.len())
            .field("locks", &state.locks.len())
            .finish()
    }
}

struct MemoryLock {
    store: MemoryStore,
    key: StoreKey,
    id: u64,
}

impl HeldLock for MemoryLock {
    fn extend(&self, ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut state = self.store.lock();
        let held = match state.locks.get_mut(&self.key) {
            Some((id, lapses)) if *id == self.id => {
                *lapses = crate::token::later(Instant::now(), ttl);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(held)))
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut state = self.store.lock();
        if state
            .locks
            .get(&self.key)
            .is_some_and(|&(id, _)| id == self.id)
        {
            state.locks.remove(&self.key);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lock_is_taken_over_and_the_old_holder_cannot_touch_it() {
        let store = MemoryStore::new();
        let key = StoreKey::new(["k"]);
        let ttl = Duration::from_secs(10);
        let first = store.try_lock(&key, ttl).await.unwrap().unwrap();
        assert!(store.try_lock(&key, ttl).await.unwrap().is_none());

        tokio::time::advance(ttl).await;
        let second = store.try_lock(&key, ttl).await.unwrap().unwrap();
        assert!(
            !first.extend(ttl).await.unwrap(),
            "the lapsed holder lost it"
        );
        first.release().await.unwrap();
        assert!(
            store.try_lock(&key, ttl).await.unwrap().is_none(),
            "releasing a lapsed lock leaves the new holder's alone"
        );
        assert!(second.extend(ttl).await.unwrap());
        drop(second);
        assert!(
            store.try_lock(&key, ttl).await.unwrap().is_some(),
            "dropped: released"
        );
    }
}
