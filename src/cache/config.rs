//! What a cache is built with: its timing, its retries, its store and its
//! hook. Fixed once the cache is built.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::schedule::{Retries, Timing};
use crate::store::{StoreKey, TokenStore};
use crate::{AccessToken, Token};

/// Settings fixed when the cache is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) timing: Timing,
    pub(crate) retries: Retries,
    pub(crate) default_lifetime: Duration,
    /// The store shared with other caches, processes or runs, if any.
    pub(crate) store: Option<StoreSettings>,
    /// Called with each token this cache fetched, before it is handed out.
    pub(crate) on_refresh: Option<OnRefresh>,
    /// The `cache` label of its metrics and the `cache` field of its spans.
    pub(crate) name: Arc<str>,
}

/// A cache's store, its key and its timing.
#[derive(Clone)]
pub(crate) struct StoreSettings {
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) key: StoreKey,
    /// The lock's time to live; unset, it follows the token
    /// ([`default_store_lock_ttl`](super::default_store_lock_ttl)).
    pub(crate) lock_ttl: Option<Duration>,
    /// How long to wait for another holder; unset, the lock's time to live
    /// plus `refresh_bound`.
    pub(crate) wait: Option<Duration>,
    /// The longest a refresh with this cache's retry settings can take;
    /// computed at build.
    pub(crate) refresh_bound: Duration,
    /// The tokens this cache has held, never to be installed again.
    pub(crate) held: Arc<Held>,
}

impl StoreSettings {
    /// The settings of a variant made with `params`: the same store, the
    /// key [with those parameters](StoreKey::with_params), and tokens held
    /// of its own.
    pub(crate) fn for_params(&self, params: &crate::TokenParams) -> StoreSettings {
        StoreSettings {
            key: self.key.with_params(params),
            held: Arc::default(),
            ..self.clone()
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("key", &self.key)
            .field("lock_ttl", &self.lock_ttl)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// How many of the tokens it has held a cache remembers. A store falls
/// behind a cache by one token per failed save; sixteen failed saves in a
/// row are an outage, which the cache survives alone.
const HELD_MEMORY: usize = 16;

/// The access tokens a cache has held (SHA-256 fingerprints, so that no
/// old secret is kept), newest last.
///
/// A stored token among them is not news: the store fell behind this cache
/// (a save failed), so it is older than the current token, and may be one
/// the server rejected (B6). Installing it would go back in time; handing
/// it to the source as `previous` would send a refresh token this cache has
/// already spent (B5).
#[derive(Default)]
pub(crate) struct Held(Mutex<VecDeque<[u8; 32]>>);

impl Held {
    fn fingerprint(token: &AccessToken) -> [u8; 32] {
        Sha256::digest(token.secret().as_bytes()).into()
    }

    pub(crate) fn remember(&self, token: &AccessToken) {
        let fingerprint = Self::fingerprint(token);
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if held.back() == Some(&fingerprint) {
            return;
        }
        held.retain(|f| *f != fingerprint);
        if held.len() == HELD_MEMORY {
            held.pop_front();
        }
        held.push_back(fingerprint);
    }

    pub(crate) fn contains(&self, token: &AccessToken) -> bool {
        let fingerprint = Self::fingerprint(token);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint)
    }
}

/// The `on_refresh` hook.
#[derive(Clone)]
pub(crate) struct OnRefresh(pub(crate) Arc<dyn Fn(&Token) + Send + Sync>);

impl OnRefresh {
    /// Calls the hook; a panic in it is logged, not propagated: the token
    /// is good, and the refresh goes on.
    pub(crate) fn call(&self, token: &Token) {
        let hook = &self.0;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(token))).is_err() {
            tracing::error!("the on_refresh hook panicked");
        }
    }
}

impl fmt::Debug for OnRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRefresh")
    }
}
