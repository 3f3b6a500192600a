//! The caches of a cache's variants: one per distinct [`TokenParams`], at
//! most a bounded number of them, the least recently used evicted first.
//!
//! Generic over what it keeps (the cache's shared state), so that this file
//! depends on nothing of the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::TokenParams;

/// How many variants a cache keeps by default.
pub const DEFAULT_MAX_VARIANTS: usize = 64;

/// Where a cache stands among its variants.
pub(crate) enum Family<T> {
    /// A cache built by its builder: it keeps its variants.
    Root(Mutex<Lru<T>>),
    /// A variant: its root keeps it (and may evict it).
    Variant(Weak<T>),
}

impl<T> Family<T> {
    pub(crate) fn root(max: usize) -> Self {
        Family::Root(Mutex::new(Lru {
            max,
            tick: 0,
            map: HashMap::new(),
        }))
    }
}

/// The variants, each with the tick of its last use.
pub(crate) struct Lru<T> {
    max: usize,
    tick: u64,
    map: HashMap<TokenParams, (u64, Arc<T>)>,
}

impl<T> Lru<T> {
    /// The variant for `params`, made with `make` when there is none;
    /// `None` when `make` cannot make one. Evicts the least recently used
    /// variant when a new one would exceed the bound.
    pub(crate) fn get_or_make(
        lru: &Mutex<Lru<T>>,
        params: &TokenParams,
        make: impl FnOnce() -> Option<Arc<T>>,
    ) -> Option<Arc<T>> {
        // Nothing panics under the lock; a poisoned map is still a map.
        let mut lru = lru.lock().unwrap_or_else(PoisonError::into_inner);
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((used, variant)) = lru.map.get_mut(params) {
            *used = tick;
            return Some(variant.clone());
        }
        let variant = make()?;
        if lru.map.len() >= lru.max {
            let oldest = lru
                .map
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(params, _)| params.clone());
            if let Some(oldest) = oldest {
                lru.map.remove(&oldest);
            }
        }
        lru.map.insert(params.clone(), (tick, variant.clone()));
        Some(variant)
    }

    pub(crate) fn len(lru: &Mutex<Lru<T>>) -> usize {
        lru.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_is_evicted_at_the_bound() {
        let Family::Root(lru) = Family::<u32>::root(2) else {
            unreachable!()
        };
        let a = TokenParams::new().scope("a");
        let b = TokenParams::new().scope("b");
        let c = TokenParams::new().scope("c");
        let first_a = Lru::get_or_make(&lru, &a, || Some(Arc::new(1))).unwrap();
        Lru::get_or_make(&lru, &b, || Some(Arc::new(2))).unwrap();
        // `a` used again: `b` is now the oldest.
        let again_a = Lru::get_or_make(&lru, &a, || Some(Arc::new(99))).unwrap();
        assert!(Arc::ptr_eq(&first_a, &again_a));
        Lru::get_or_make(&lru, &c, || Some(Arc::new(3))).unwrap();
        assert_eq!(Lru::len(&lru), 2);
        let new_b = Lru::get_or_make(&lru, &b, || Some(Arc::new(4))).unwrap();
        assert_eq!(*new_b, 4, "b was evicted and made again");
        assert!(Lru::get_or_make(&lru, &TokenParams::new().scope("d"), || None).is_none());
        assert_eq!(Lru::len(&lru), 2);
    }
}
