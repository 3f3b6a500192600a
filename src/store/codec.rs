//! How the file and Redis stores write an entry: a [`StoredToken`]'s JSON
//! form (version 1), or that form encrypted (version 2, feature
//! `store-encryption`). The memory store keeps `StoredToken`s and needs
//! neither.

use std::fmt;
#[cfg(feature = "store-encryption")]
use std::sync::Arc;

use super::{StoreError, StoreKey, StoredToken};

/// The version of an encrypted entry: `{"version":2,"alg":"A256GCM",
/// "kid":"…","nonce":"…","ciphertext":"…"}`, whose plaintext is a
/// version-1 entry. A build without keys (or without the feature) knows
/// the version and says the entry is undecryptable, rather than unknown.
pub(crate) const ENCRYPTED_VERSION: u64 = 2;

/// Plain, or encrypted with a store's keys.
#[derive(Clone, Default)]
pub(crate) struct Codec {
    #[cfg(feature = "store-encryption")]
    keys: Option<Arc<super::EncryptionKeys>>,
}

impl Codec {
    /// Entries sealed with `keys`.
    #[cfg(feature = "store-encryption")]
    pub(crate) fn encrypted(keys: super::EncryptionKeys) -> Codec {
        Codec {
            keys: Some(Arc::new(keys)),
        }
    }

    /// Whether entries are encrypted.
    #[cfg(feature = "redis")]
    pub(crate) fn is_encrypted(&self) -> bool {
        #[cfg(feature = "store-encryption")]
        if self.keys.is_some() {
            return true;
        }
        false
    }

    /// The entry of `token` under `key`.
    ///
    /// # Errors
    ///
    /// Only when encrypting, if the system's random number generator fails
    /// (no nonce).
    pub(crate) fn encode(
        &self,
        key: &StoreKey,
        token: &StoredToken,
    ) -> Result<Vec<u8>, StoreError> {
        let plain = token.to_json();
        #[cfg(feature = "store-encryption")]
        if let Some(keys) = &self.keys {
            return keys.seal(key, &plain);
        }
        let _ = key;
        Ok(plain)
    }

    /// The token of the entry `bytes` under `key`.
    ///
    /// # Errors
    ///
    /// [`StoreError::is_corrupt`] for what is not an entry (the next save
    /// replaces it); [`StoreError::is_unknown_version`] and
    /// [`StoreError::is_undecryptable`] for another writer's entry (no
    /// save replaces it).
    pub(crate) fn decode(&self, key: &StoreKey, bytes: &[u8]) -> Result<StoredToken, StoreError> {
        if bytes.len() > super::stored::MAX_STORED_SIZE {
            return Err(StoreError::corrupt("the stored token is too large"));
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|_| StoreError::corrupt("the stored token is not valid JSON"))?;
        if value.get("version").and_then(serde_json::Value::as_u64) != Some(ENCRYPTED_VERSION) {
            return StoredToken::from_value(value);
        }
        #[cfg(feature = "store-encryption")]
        if let Some(keys) = &self.keys {
            return StoredToken::from_json(&keys.open(key, &value)?);
        }
        let _ = key;
        Err(no_keys())
    }

    /// Whether a save may replace the entry `bytes` under `key`: yes for
    /// an entry this store reads, or one that is no entry at all.
    ///
    /// # Errors
    ///
    /// The error of [`decode`](Self::decode) for another writer's entry.
    pub(crate) fn replaceable(&self, key: &StoreKey, bytes: &[u8]) -> Result<(), StoreError> {
        match self.decode(key, bytes) {
            Err(error) if error.is_anothers() => Err(error),
            _ => Ok(()),
        }
    }
}

/// An encrypted entry, read by a store without keys.
pub(crate) fn no_keys() -> StoreError {
    StoreError::undecryptable(
        "the stored token is encrypted, and this store has no encryption keys",
    )
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "store-encryption")]
        if let Some(keys) = &self.keys {
            return fmt::Debug::fmt(keys, f);
        }
        f.write_str("plain")
    }
}
