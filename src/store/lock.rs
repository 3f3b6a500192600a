//! [`StoreLock`]: the right to refresh one token, held by one cache at a
//! time across every process that shares a store.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use super::StoreError;
use crate::source::BoxFuture;

/// A refresh lock as a store implements it; wrapped in a [`StoreLock`].
///
/// # Contract
///
/// * The lock was taken with a value unique to this holder; both methods
///   act only while the store still holds that value, so a holder whose
///   lock lapsed never extends or releases its successor's lock.
/// * [`release`](Self::release) does whatever it can synchronously (drop a
///   file lock, start a request) before returning its future: when a
///   [`StoreLock`] is dropped without an explicit release, the future is
///   spawned on the current tokio runtime if there is one, and dropped
///   otherwise, so it must not be required for correctness — a lock nobody
///   releases lapses at the end of its time to live.
///
/// # Example
///
/// A lock on a slot of a process-local table, whose value is the holder's id:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use tower_bearer::source::BoxFuture;
/// use tower_bearer::store::{HeldLock, StoreError, StoreLock};
///
/// struct SlotLock {
///     slot: Arc<Mutex<Option<u64>>>,
///     holder: u64,
/// }
///
/// impl HeldLock for SlotLock {
///     fn extend(&self, _ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
///         let still_ours = *self.slot.lock().unwrap() == Some(self.holder);
///         Box::pin(async move { Ok(still_ours) })
///     }
///
///     fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
///         // Compare and delete, synchronously, before the future.
///         let mut slot = self.slot.lock().unwrap();
///         if *slot == Some(self.holder) {
///             *slot = None;
///         }
///         Box::pin(async { Ok(()) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let slot = Arc::new(Mutex::new(Some(7)));
/// let lock = StoreLock::new(SlotLock { slot: slot.clone(), holder: 7 });
/// assert!(lock.extend(Duration::from_secs(10)).await?);
/// lock.release().await?;
/// assert_eq!(*slot.lock().unwrap(), None);
/// # Ok(())
/// # }
/// ```
pub trait HeldLock: Send + Sync + 'static {
    /// Extends the lock to `ttl` from now. `Ok(false)` when it is no longer
    /// held by this holder (it lapsed and someone else may hold it).
    fn extend(&self, ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Releases the lock if this holder still holds it.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// The right to refresh one token, from
/// [`TokenStore::try_lock`](super::TokenStore::try_lock). Released by
/// [`release`](Self::release), or when dropped; a holder that dies without
/// either (a crash) loses it when its time to live ends.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::{MemoryStore, StoreKey, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::store::StoreError> {
/// let store = MemoryStore::new();
/// let key = StoreKey::new(["my-api"]);
/// let lock = store.try_lock(&key, Duration::from_secs(10)).await?.expect("free");
/// assert!(store.try_lock(&key, Duration::from_secs(10)).await?.is_none());
/// lock.release().await?;
/// assert!(store.try_lock(&key, Duration::from_secs(10)).await?.is_some());
/// # Ok(())
/// # }
/// ```
#[must_use = "the lock is released when dropped"]
pub struct StoreLock {
    held: Option<Box<dyn Erased>>,
}

/// A [`HeldLock`] that can also be looked at as its own type, so that a
/// store can recognise its own locks ([`StoreLock::downcast_ref`]).
trait Erased: Send + Sync + 'static {
    fn held(&self) -> &dyn HeldLock;
    fn any(&self) -> &dyn Any;
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

impl<T: HeldLock> Erased for T {
    fn held(&self) -> &dyn HeldLock {
        self
    }

    fn any(&self) -> &dyn Any {
        self
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        HeldLock::release(self)
    }
}

impl StoreLock {
    /// Wraps a store's lock.
    pub fn new(held: impl HeldLock) -> StoreLock {
        StoreLock {
            held: Some(Box::new(held)),
        }
    }

    /// Extends the lock to `ttl` from now; `Ok(false)` when it was lost.
    ///
    /// # Errors
    ///
    /// The store's error; the lock may or may not still be held.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, StoreError> {
        match &self.held {
            Some(held) => held.held().extend(ttl).await,
            None => Ok(false),
        }
    }

    /// The store's own lock, if it is a `T`: for a store's
    /// [`save_if_held`](super::TokenStore::save_if_held), which must
    /// recognise its own locks.
    pub fn downcast_ref<T: HeldLock>(&self) -> Option<&T> {
        self.held.as_ref()?.any().downcast_ref()
    }

    /// Releases the lock (if this holder still holds it).
    ///
    /// # Errors
    ///
    /// The store's error; the lock then lapses at the end of its time to
    /// live.
    pub async fn release(mut self) -> Result<(), StoreError> {
        match self.held.take() {
            Some(held) => held.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let release = held.release();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = release.await {
                    tracing::debug!(%error, "could not release a dropped refresh lock; it lapses at the end of its time to live");
                }
            });
        }
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("held", &self.held.is_some())
            .finish()
    }
}

/// A value no other lock holder has, in this process or another: the
/// process id, the wall-clock time, a counter, and 64 random bits from the
/// standard library's per-process hasher keys. Not a secret; only unique.
pub(crate) fn unique_value() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.write_u128(nanos);
    format!(
        "{}-{nanos:x}-{n:x}-{:016x}",
        std::process::id(),
        hasher.finish()
    )
}
