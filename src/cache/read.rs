//! The per-request read: which `Authorization` value a call may carry, and
//! whether a background refresh should start. Checked against tokio's clock
//! on every call (B1), with no lock, no allocation and no write to memory
//! another thread writes.
//!
//! # The rule (B1, B2)
//!
//! A call reads the clock (`tokio::time::Instant::now()`) and the version
//! of the cache's current token (one atomic load), then, in this thread's
//! copy of that token:
//!
//! * `now < stale_at`: send it;
//! * `stale_at <= now < usable_until`: send it, and make sure one
//!   background refresh runs (B2);
//! * `now >= usable_until`, or no token: send nothing yet; the caller
//!   waits for the single refresh (B3).
//!
//! Nothing else decides: no timer, no counter, no runtime state. Whatever
//! drives the call (a task, `block_on`, a clone per request, a spent coop
//! budget, a runtime without a time driver), the comparison is made at the
//! moment of the call.
//!
//! # Why a copy per thread
//!
//! Attaching a header means cloning it, and cloning a `HeaderValue`
//! increments the reference count of its bytes. If every thread cloned the
//! cache's one copy, every call on every core would write that one cache
//! line. So each thread keeps its own copy of the current token's header
//! (made once per token, on the thread's first call with it), keyed by the
//! entry's process-wide unique version; the shared state is only read.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use http::HeaderValue;
use tokio::time::Instant;

use super::entry::Entry;
use super::flight::Shared;
use crate::proof::Proofs;

/// A thread's copy of one published token: what a call attaches, and what
/// its response future needs to report a rejection (B6).
pub(crate) struct Local {
    /// The version of the entry this was copied from.
    version: u64,
    /// This thread's copy of the entry's header.
    pub(crate) header: HeaderValue,
    /// The generation of the token, for compare-and-swap invalidation.
    pub(crate) generation: u64,
    /// The proof each request needs besides the header (DPoP), if any.
    pub(crate) proofs: Option<Proofs>,
    stale_at: Instant,
    usable_until: Instant,
    /// The cache it came from. Weak, so that per-thread copies never keep a
    /// cache (and its background work) alive.
    pub(crate) shared: Weak<Shared>,
}

/// How many caches a thread keeps a copy for. A process with more APIs
/// than this on one thread makes a copy now and then, nothing worse.
const SLOTS: usize = 4;

struct Slot {
    /// The version of the entry `local` was copied from; 0 when empty.
    version: u64,
    local: Option<Arc<Local>>,
}

struct Slots {
    slots: [Slot; SLOTS],
    /// The next slot to reuse when none is free.
    next: usize,
}

thread_local! {
    static COPIES: RefCell<Slots> = const {
        RefCell::new(Slots {
            slots: [const { Slot { version: 0, local: None } }; SLOTS],
            next: 0,
        })
    };
}

/// The token a call may carry now, or `None` when it must wait for one
/// (B1). Starts a background refresh when the token is stale (B2).
///
/// `seen` is the caller's own copy of what it read last (a service
/// instance's): when the cache's version is still that one, the thread's
/// copies are not even looked at.
#[inline]
pub(crate) fn read(shared: &Arc<Shared>, seen: &mut Option<Arc<Local>>) -> Option<Arc<Local>> {
    let version = shared.published.version.load(Ordering::Acquire);
    let now = Instant::now();
    let local = match seen {
        Some(local) if local.version == version => local,
        _ => seen.insert(thread_copy_of(shared, version)?),
    };
    // B1: never past the usable end, by the clock, now.
    if now >= local.usable_until {
        return None;
    }
    if now >= local.stale_at {
        shared.refresh_in_background(now);
    }
    Some(local.clone())
}

/// This thread's copy of the cache's current token, made if needed.
#[cold]
#[inline(never)]
fn thread_copy_of(shared: &Arc<Shared>, version: u64) -> Option<Arc<Local>> {
    COPIES
        .try_with(|copies| {
            let mut copies = copies.borrow_mut();
            if let Some(local) = copies.find(version) {
                return Some(local.clone());
            }
            copies.copy(shared).cloned()
        })
        // The thread is exiting: take the slow path.
        .ok()?
}

impl Slots {
    #[inline]
    fn find(&self, version: u64) -> Option<&Arc<Local>> {
        self.slots
            .iter()
            .find(|slot| slot.version == version)
            .and_then(|slot| slot.local.as_ref())
    }

    /// Copies the cache's current entry into a slot of this thread: the
    /// cache's own earlier slot if it has one, else a free one or one whose
    /// cache is gone, else the next in turn.
    #[cold]
    #[inline(never)]
    fn copy(&mut self, shared: &Arc<Shared>) -> Option<&Arc<Local>> {
        let entry = shared.current.load_full()?;
        let ours = |slot: &Slot| {
            slot.local
                .as_ref()
                .is_some_and(|l| std::ptr::eq(l.shared.as_ptr(), Arc::as_ptr(shared)))
        };
        let free = |slot: &Slot| {
            slot.local
                .as_ref()
                .is_none_or(|l| l.shared.strong_count() == 0)
        };
        let index = match self.slots.iter().position(ours) {
            Some(index) => index,
            None => match self.slots.iter().position(free) {
                Some(index) => index,
                None => {
                    let index = self.next;
                    self.next = (self.next + 1) % SLOTS;
                    index
                }
            },
        };
        let slot = &mut self.slots[index];
        slot.version = entry.version;
        slot.local = Some(Arc::new(Local::of(&entry, shared)));
        slot.local.as_ref()
    }
}

impl Local {
    fn of(entry: &Entry, shared: &Arc<Shared>) -> Local {
        Local {
            version: entry.version,
            header: thread_copy(&entry.header),
            generation: entry.generation,
            proofs: entry.proofs.clone(),
            stale_at: entry.schedule.stale_at,
            usable_until: entry.schedule.usable_until,
            shared: Arc::downgrade(shared),
        }
    }
}

/// A copy of `header` with bytes of its own, so that cloning it touches
/// memory only this thread's calls touch. Marked sensitive like the
/// original (B7).
fn thread_copy(header: &HeaderValue) -> HeaderValue {
    // Bytes split off a `BytesMut` are reference-counted from the start:
    // cloning them never allocates (fresh `Bytes` from a vector would, on
    // their first clone), and takes the shortest path.
    let mut bytes = BytesMut::from(header.as_bytes());
    let bytes = bytes.split().freeze();
    let mut copy = HeaderValue::from_maybe_shared(bytes)
        // The bytes came from a valid value; keep the shared one if not.
        .unwrap_or_else(|_| header.clone());
    copy.set_sensitive(true);
    copy
}
