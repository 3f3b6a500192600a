//! [`EncryptionKeys`]: tokens encrypted at rest (feature
//! `store-encryption`), with AES-256-GCM from `ring`.
//!
//! An entry is `{"version":2,"alg":"A256GCM","kid":…,"nonce":…,
//! "ciphertext":…}`: a fresh random 96-bit nonce per entry, the version-1
//! entry as plaintext, and as associated data the store key and the key id,
//! so that an entry moved under another key, or relabelled with another
//! key id, does not decrypt.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::codec::ENCRYPTED_VERSION;
use super::{StoreError, StoreKey};
use crate::ConfigError;

/// Domain separation of the associated data.
const AAD_SCHEME: &str = "tower-bearer/store-entry/v2";

/// The longest key id, in bytes.
const MAX_KEY_ID: usize = 128;

/// Keys that encrypt the entries of a [`FileStore`](super::FileStore) or a
/// `RedisStore` (feature `store-encryption`): AES-256-GCM, with a key you
/// supply (32 bytes from a secret manager, never in the code).
///
/// Each entry is written with the current key and carries its key id, so
/// that keys can be rotated: give the new key as the current one and the
/// old ones with [`old_key`](Self::old_key); entries written with an old
/// key are read with it, and written with the new key at their next save.
///
/// The store key (a hash, [`StoreKey`]) and the key id are bound to each
/// entry (associated data): an entry copied under another key does not
/// decrypt.
///
/// An entry that does not decrypt (a key id this store was not given, a
/// wrong key, a damaged entry) is a [`StoreError`] for which
/// [`is_undecryptable`](StoreError::is_undecryptable) holds, never a
/// panic: the store never overwrites that entry (it may hold another
/// replica's only refresh token), and the cache logs the error and gets a
/// token without the store, by the outage rule of the
/// [store module](super) (a grant with a primary grant fetches; a
/// refresh-token-only source waits for the store to become readable).
/// Plain entries (written without encryption) are read, and encrypted at
/// their next save; a store without keys cannot read encrypted entries and
/// leaves them alone.
///
/// Roll out a new key in two steps: first give every replica the new key as
/// an [`old_key`](Self::old_key) (it can then read what the new key
/// writes), then make it the current key everywhere.
///
/// `Debug` shows the key ids, never a key.
///
/// # Example
///
/// ```
/// use tower_bearer::store::{EncryptionKeys, FileStore, StoreKey, StoredToken, TokenStore};
/// use tower_bearer::Token;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tower-bearer-enc-doc-{}", std::process::id()));
/// # let (key_2025, key_2026) = ([7u8; 32], [9u8; 32]);
/// let key = StoreKey::new(["my-api"]);
/// let old = FileStore::new(dir.join("tokens.json"))
///     .encrypted(EncryptionKeys::new("2025", &key_2025)?);
/// old.save(&key, &StoredToken::from_token(&Token::new("t0k3n"))).await?;
/// assert!(!std::fs::read_to_string(old.path())?.contains("t0k3n"));
///
/// // The key is rotated: the 2025 entry is still read.
/// let new = FileStore::new(dir.join("tokens.json"))
///     .encrypted(EncryptionKeys::new("2026", &key_2026)?.old_key("2025", &key_2025)?);
/// assert_eq!(new.load(&key).await?.unwrap().access_token().secret(), "t0k3n");
///
/// // A store without the key cannot read it, and says so.
/// let stranger = FileStore::new(dir.join("tokens.json"));
/// assert!(stranger.load(&key).await.unwrap_err().is_undecryptable());
/// # std::fs::remove_dir_all(dir)?;
/// # Ok(())
/// # }
/// ```
pub struct EncryptionKeys {
    current: Key,
    old: Vec<Key>,
    random: SystemRandom,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn new(id: String, bytes: &[u8]) -> Result<Key, ConfigError> {
        if id.is_empty() || id.len() > MAX_KEY_ID {
            return Err(ConfigError::new(
                "an encryption key id must have 1 to 128 bytes",
            ));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| {
            ConfigError::new("an AES-256-GCM encryption key must be exactly 32 bytes")
        })?;
        Ok(Key {
            id,
            key: LessSafeKey::new(unbound),
        })
    }
}

impl EncryptionKeys {
    /// Entries are written with `key` (32 bytes), under the id `key_id`
    /// (1 to 128 bytes; not a secret, it is stored with each entry).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a key that is not 32 bytes or an empty or
    /// overlong key id.
    pub fn new(key_id: impl Into<String>, key: &[u8]) -> Result<EncryptionKeys, ConfigError> {
        Ok(EncryptionKeys {
            current: Key::new(key_id.into(), key)?,
            old: Vec::new(),
            random: SystemRandom::new(),
        })
    }

    /// An older key, still used to read the entries written with it.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and for a key id already given.
    pub fn old_key(
        mut self,
        key_id: impl Into<String>,
        key: &[u8],
    ) -> Result<EncryptionKeys, ConfigError> {
        let key = Key::new(key_id.into(), key)?;
        if self.find(&key.id).is_some() {
            return Err(ConfigError::new("an encryption key id was given twice"));
        }
        self.old.push(key);
        Ok(self)
    }

    /// The id of the key entries are written with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    fn find(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|key| key.id == id)
    }

    /// An encrypted entry of `plain` (a version-1 entry) under `store_key`.
    pub(crate) fn seal(&self, store_key: &StoreKey, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::unavailable("the system's random number generator failed"))?;
        let key = &self.current;
        let mut sealed = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(store_key, &key.id)),
                &mut sealed,
            )
            .map_err(|_| StoreError::unavailable("encryption failed"))?;
        let entry = serde_json::json!({
            "version": ENCRYPTED_VERSION,
            "alg": "A256GCM",
            "kid": key.id,
            "nonce": B64.encode(nonce),
            "ciphertext": B64.encode(&sealed),
        });
        Ok(entry.to_string().into_bytes())
    }

    /// The version-1 entry inside the encrypted `entry` under `store_key`.
    pub(crate) fn open(
        &self,
        store_key: &StoreKey,
        entry: &serde_json::Value,
    ) -> Result<Vec<u8>, StoreError> {
        let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
        match field("alg") {
            Some("A256GCM") => {}
            Some(_) => {
                return Err(StoreError::undecryptable(
                    "the stored token is encrypted with an algorithm this store does not know",
                ));
            }
            None => {
                return Err(StoreError::corrupt(
                    "the encrypted stored token names no algorithm",
                ));
            }
        }
        let (Some(kid), Some(nonce), Some(ciphertext)) =
            (field("kid"), field("nonce"), field("ciphertext"))
        else {
            return Err(StoreError::corrupt(
                "the encrypted stored token is missing a member",
            ));
        };
        let Some(key) = self.find(kid) else {
            return Err(StoreError::undecryptable(format!(
                "the stored token is encrypted with key id {kid:?}, which this store was not given"
            )));
        };
        let nonce: [u8; NONCE_LEN] = B64
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| StoreError::corrupt("the encrypted stored token has a bad nonce"))?;
        let mut sealed = B64
            .decode(ciphertext)
            .map_err(|_| StoreError::corrupt("the encrypted stored token is not base64"))?;
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(store_key, kid)),
                &mut sealed,
            )
            .map_err(|_| {
                StoreError::undecryptable(format!(
                    "the stored token does not decrypt with key id {kid:?}: a wrong key, \
                     or an entry damaged or moved from another store key"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

fn aad(store_key: &StoreKey, kid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_SCHEME.len() + 66 + kid.len());
    aad.extend_from_slice(AAD_SCHEME.as_bytes());
    aad.push(0);
    aad.extend_from_slice(store_key.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(kid.as_bytes());
    aad
}

impl fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKeys")
            .field("key_id", &self.current.id)
            .field(
                "old_key_ids",
                &self.old.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
