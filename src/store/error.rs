//! [`StoreError`]: why a token store could not load, save or lock.

use std::error::Error as StdError;
use std::fmt;

use crate::BoxError;

/// Why a [`TokenStore`](super::TokenStore) operation failed.
///
/// The cache never fails a request because of a store: it logs the error
/// (without secrets) and carries on alone, as the
/// [module documentation](super) describes. `Display` is a short lower-case
/// sentence; the cause is available through [`source`](StdError::source).
///
/// # Example
///
/// ```
/// use tower_bearer::store::{StoreError, StoredToken};
///
/// let torn = StoredToken::from_json(br#"{"version": 1, "access_tok"#).unwrap_err();
/// assert!(torn.is_corrupt());
///
/// let down = StoreError::unavailable("connection refused");
/// assert!(down.is_unavailable());
/// ```
pub struct StoreError {
    kind: Kind,
    message: Box<str>,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unavailable,
    Corrupt,
    UnknownVersion,
    Undecryptable,
}

impl StoreError {
    /// The store could not be reached or could not do the operation
    /// (connection refused, I/O error, timeout). The cache tries again at
    /// its next refresh.
    pub fn unavailable(cause: impl Into<BoxError>) -> StoreError {
        StoreError {
            kind: Kind::Unavailable,
            message: "token store unavailable".into(),
            source: Some(cause.into()),
        }
    }

    /// What the store holds is not a stored token (truncated, not JSON, a
    /// member missing). `what` says why, without quoting the data.
    pub fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError {
            kind: Kind::Corrupt,
            message: what.into().into(),
            source: None,
        }
    }

    /// What the store holds has a format version this crate does not know.
    pub fn unknown_version(version: u64) -> StoreError {
        StoreError {
            kind: Kind::UnknownVersion,
            message: format!("the stored token has format version {version}, which this version of tower-bearer does not know").into(),
            source: None,
        }
    }

    /// What the store holds is encrypted, and does not decrypt here: a key
    /// id this store was not given, a wrong key, no keys at all, or an
    /// entry damaged or copied from another store key. Like an
    /// [`unknown_version`](Self::unknown_version), such an entry is another
    /// writer's, and the stores leave it as it is. `why` says which, never
    /// quoting a key.
    pub fn undecryptable(why: impl Into<String>) -> StoreError {
        StoreError {
            kind: Kind::Undecryptable,
            message: why.into().into(),
            source: None,
        }
    }

    /// `true` for [`unavailable`](Self::unavailable) errors.
    pub fn is_unavailable(&self) -> bool {
        self.kind == Kind::Unavailable
    }

    /// `true` for [`corrupt`](Self::corrupt) data.
    pub fn is_corrupt(&self) -> bool {
        self.kind == Kind::Corrupt
    }

    /// `true` for an [`unknown_version`](Self::unknown_version).
    pub fn is_unknown_version(&self) -> bool {
        self.kind == Kind::UnknownVersion
    }

    /// `true` for an entry that is [`undecryptable`](Self::undecryptable)
    /// here.
    pub fn is_undecryptable(&self) -> bool {
        self.kind == Kind::Undecryptable
    }

    /// An entry this build must leave as it is: of an unknown version, or
    /// undecryptable. Its writer (a newer build, a replica with other
    /// keys) may hold the newest refresh token in it.
    pub(crate) fn is_anothers(&self) -> bool {
        matches!(self.kind, Kind::UnknownVersion | Kind::Undecryptable)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
