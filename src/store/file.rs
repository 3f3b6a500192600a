//! [`FileStore`]: tokens in a JSON file, so that they survive a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::value::RawValue;

use super::codec::Codec;
use super::lock::unique_value;
use super::{HeldLock, StoreError, StoreKey, StoreLock, StoredToken, TokenStore};
use crate::source::BoxFuture;

/// The version of the file's layout (the tokens inside carry their own,
/// [`StoredToken::VERSION`]).
const FILE_VERSION: u64 = 1;

/// The largest token file read, in bytes. A file for a handful of tokens is
/// a few KiB.
const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// A [`TokenStore`] in a JSON file: for a daemon or a CLI that must keep
/// its (rotating) refresh token across restarts, and for a few processes on
/// one host that share a token.
///
/// # The file
///
/// ```json
/// {
///   "version": 1,
///   "tokens": {
///     "<store key>": {"version":1,"access_token":"…","refresh_token":"…", …}
///   }
/// }
/// ```
///
/// One file holds the tokens of any number of [`StoreKey`]s.
///
/// * **Atomic.** Every save writes a temporary file in the same folder
///   (mode 0600), flushes it to disk (`fsync`), renames it over the file and
///   flushes the folder. A reader sees the old file or the new one, never a
///   torn one, whatever process writes and whenever it dies.
/// * **Private.** The file holds tokens, in clear text unless the store is
///   `encrypted` (below), and is created with mode 0600 (owner only) in a
///   folder created with mode 0700 if missing.
///   A load warns when the file is readable by others. Keep it in a folder
///   only its owner can write: whoever can write the folder can replace the
///   file. The store never creates or opens its lock and temporary files
///   through a symbolic link (a lock file that is one is refused, and the
///   operation fails as if the store were unavailable).
/// * **Serialised writes.** Saves take an exclusive lock on `<file>.lock`
///   around read-modify-write, so two processes saving different tokens
///   never lose one another's. A save waits at most 3 s for it (another
///   save takes milliseconds), then fails. While another process holds it,
///   one thread per store (and its clones) waits for it, however many
///   saves give up meanwhile.
/// * **Forward compatible.** A save replaces its own entry only: every
///   other entry, and every other member of the file, is written back byte
///   for byte. A file, or an entry, of a format version this build does
///   not know (a newer build wrote it, during a rolling upgrade) is never
///   replaced: a load reports it ([`StoreError::is_unknown_version`]) and
///   the cache carries on without the store for that token; a save fails
///   and leaves the file as it is.
/// * **Encrypted, if you wish** (feature `store-encryption`): with
///   `encrypted`, each entry is sealed with AES-256-GCM
///   under a key you supply, and an entry this store cannot decrypt is
///   treated like an entry of an unknown version: reported
///   ([`StoreError::is_undecryptable`]), never replaced.
/// * **Forgiving reads.** A corrupt or truncated file (or entry) is logged
///   at `warn` and treated as empty — never a panic, never an error for the
///   cache — and the next good token overwrites it.
///
/// # The refresh lock
///
/// [`try_lock`](TokenStore::try_lock) takes an advisory `flock` (through
/// [`File::try_lock`]) on `<file>.<first 16 digits of the key>.lock`. The
/// operating system releases it when the holder closes the file or dies,
/// so the time to live is not needed and is ignored: a crashed holder
/// delays nobody. A `flock` belongs to an open file, not to a process, so
/// two caches of one process exclude each other too. Such locks work
/// between processes on one host; on a network file system they depend on
/// its lock support (NFSv4 has it), and Linux emulates them there with
/// POSIX locks, which belong to the process: two caches of one process
/// then both get the lock.
///
/// The lock files are left in place (removing a lock file someone may be
/// locking is a race); they are empty.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::{FileStore, StoreKey};
/// use tower_bearer::{source, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tower-bearer-doc-{}", std::process::id()));
/// let store = FileStore::new(dir.join("tokens.json"));
/// let key = StoreKey::new(["my-api"]);
/// let fetch = || source::from_fn(|_| async {
///     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
/// });
///
/// let first = TokenCache::builder(fetch()).store(store.clone(), key.clone()).build()?;
/// first.token().await?;
/// drop(first);
///
/// // A restart: the new cache finds the token on disk.
/// let second = TokenCache::builder(fetch()).store(store, key).build()?;
/// second.token().await?;
/// assert_eq!(second.stats().token_requests, 0);
/// # std::fs::remove_dir_all(dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileStore {
    path: Arc<Path>,
    /// Saves of this store (and its clones) share one waiter for the
    /// write lock.
    write_lock: Arc<WriteLock>,
    codec: Codec,
}

impl FileStore {
    /// A store in the file at `path` (created at the first save).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into().into(),
            write_lock: Arc::default(),
            codec: Codec::default(),
        }
    }

    /// Encrypts the entries this store writes with `keys`, and decrypts
    /// the entries it reads (feature `store-encryption`). Entries written
    /// before (in clear text) are still read, and encrypted at their next
    /// save. See [`EncryptionKeys`](super::EncryptionKeys).
    ///
    /// ```
    /// use tower_bearer::store::{EncryptionKeys, FileStore};
    ///
    /// # fn main() -> Result<(), tower_bearer::ConfigError> {
    /// # let key_from_your_secret_manager = [7u8; 32];
    /// let store = FileStore::new("/var/lib/my-daemon/tokens.json")
    ///     .encrypted(EncryptionKeys::new("2026-11", &key_from_your_secret_manager)?);
    /// assert!(format!("{store:?}").contains("2026-11"));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "store-encryption")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store-encryption")))]
    #[must_use]
    pub fn encrypted(mut self, keys: super::EncryptionKeys) -> FileStore {
        self.codec = Codec::encrypted(keys);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<file><suffix>`, next to the file.
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "tokens".into());
        name.push(suffix);
        self.path.with_file_name(name)
    }
}

impl TokenStore for FileStore {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        let (path, key, codec) = (self.path.clone(), key.clone(), self.codec.clone());
        Box::pin(blocking(move || load(&path, &key, &codec)))
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (path, lock, key) = (self.path.clone(), self.sibling(".lock"), key.clone());
        let write_lock = self.write_lock.clone();
        let codec = self.codec.clone();
        let token = token.clone();
        Box::pin(blocking(move || {
            save(&path, &lock, &write_lock, &key, &codec, &token)
        }))
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        let suffix = format!(".{}.lock", key.as_str().get(..16).unwrap_or("key"));
        let path = self.sibling(&suffix);
        Box::pin(blocking(move || {
            if let Some(parent) = path.parent() {
                create_private_dir(parent)?;
            }
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(StoreLock::new(FileLock { _file: file }))),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(e)) => Err(StoreError::unavailable(e)),
            }
        }))
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("entries", &self.codec)
            .finish()
    }
}

/// An exclusive `flock`, released when the file is closed.
struct FileLock {
    _file: File,
}

impl HeldLock for FileLock {
    fn extend(&self, _ttl: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        drop(self);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::unavailable(e)))
}

fn load(path: &Path, key: &StoreKey, codec: &Codec) -> Result<Option<StoredToken>, StoreError> {
    let Some(bytes) = read_file(path)? else {
        return Ok(None);
    };
    warn_if_readable_by_others(path);
    let file = match parse_file(&bytes) {
        Ok(file) => file,
        Err(error) if error.is_unknown_version() => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "the token file has a version this build does not know; carrying on without it (it is left as it is)"
            );
            return Err(error);
        }
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "ignoring the token file; the next token saved replaces it"
            );
            return Ok(None);
        }
    };
    let Some(entry) = file.tokens.get(key.as_str()) else {
        return Ok(None);
    };
    match codec.decode(key, entry.get().as_bytes()) {
        Ok(token) => Ok(Some(token)),
        Err(error) if error.is_anothers() => {
            tracing::warn!(
                path = %path.display(),
                %key,
                %error,
                "a token in the token file is of a version this build does not know, or does not decrypt here; carrying on without it (it is left as it is)"
            );
            Err(error)
        }
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %key,
                %error,
                "ignoring an unreadable token in the token file; the next token saved replaces it"
            );
            Ok(None)
        }
    }
}

fn save(
    path: &Path,
    lock_path: &Path,
    write_lock: &Arc<WriteLock>,
    key: &StoreKey,
    codec: &Codec,
    token: &StoredToken,
) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    // Serialise read-modify-write among processes; released when dropped.
    let lock = write_lock.lock(open_lock_file(lock_path)?, || open_lock_file(lock_path))?;
    let mut file = match read_file(path)? {
        None => TokenFile::default(),
        Some(bytes) => match parse_file(&bytes) {
            Ok(file) => file,
            // A newer build's file: never replaced by this one.
            Err(error) if error.is_unknown_version() => return Err(error),
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "replacing an unreadable token file"
                );
                TokenFile::default()
            }
        },
    };
    // Another writer's entry under this key (a newer build's, or one
    // encrypted with keys this store lacks): left as it is, and this save
    // fails. Every other entry is written back as it was read.
    if let Some(entry) = file.tokens.get(key.as_str()) {
        codec.replaceable(key, entry.get().as_bytes())?;
    }
    let entry = String::from_utf8(codec.encode(key, token)?)
        .ok()
        .and_then(|json| RawValue::from_string(json).ok())
        .ok_or_else(|| StoreError::unavailable("a token did not encode as JSON"))?;
    file.tokens.insert(key.as_str().to_owned(), entry);
    let mut bytes = file.to_bytes()?;
    bytes.push(b'\n');
    write_atomically(path, &bytes).map_err(StoreError::unavailable)?;
    drop(lock);
    Ok(())
}

/// How long a save waits for another save's write lock. A save holds it
/// for a read, a write and two `fsync`s: milliseconds, a second on a slow
/// disk. A holder that keeps it longer is stuck (stopped, or on a hung
/// network file system).
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(3);

/// The write lock of one store (shared by its clones): at most one thread
/// of its own waits for it.
///
/// A blocking `flock` on the calling thread could wait forever, and with it
/// a thread of tokio's blocking pool, which a runtime's shutdown waits for;
/// polling `try_lock` would starve behind a busy writer. So when the lock
/// is taken by another process, one thread (the *waiter*) blocks for it,
/// and the saves of this store wait for the waiter, each for at most
/// [`WRITE_LOCK_WAIT`]. When the waiter gets the lock it hands it to one
/// waiting save, or releases it at once when every save has given up, and
/// ends. However many saves give up while another process holds the lock,
/// one thread is blocked, not one per save.
///
/// The waits are on the system's monotonic clock, not tokio's: they run on
/// the blocking pool, where a paused tokio clock would never move.
#[derive(Default)]
struct WriteLock {
    state: Mutex<Waiting>,
    changed: Condvar,
}

#[derive(Default)]
struct Waiting {
    /// Saves waiting for the lock.
    saves: usize,
    /// Whether the waiter thread is blocked in `flock`.
    waiter: bool,
    /// The lock, taken by the waiter, for the next save to take.
    ready: Option<File>,
    /// The waiter's `flock` failed: the next save reports it.
    failed: Option<io::Error>,
}

impl WriteLock {
    fn state(&self) -> MutexGuard<'_, Waiting> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the exclusive write lock on `lock` (an open lock file),
    /// waiting at most [`WRITE_LOCK_WAIT`], and returns the locked file.
    /// `reopen` opens the lock file again for a waiter thread.
    fn lock(
        self: &Arc<Self>,
        lock: File,
        reopen: impl Fn() -> Result<File, StoreError>,
    ) -> Result<File, StoreError> {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(StoreError::unavailable(e)),
        }
        drop(lock);
        let deadline = std::time::Instant::now() + WRITE_LOCK_WAIT;
        let mut state = self.state();
        state.saves += 1;
        let result = loop {
            if let Some(file) = state.ready.take() {
                break Ok(file);
            }
            if let Some(error) = state.failed.take() {
                break Err(StoreError::unavailable(error));
            }
            if !state.waiter {
                match reopen().and_then(|file| self.spawn_waiter(file)) {
                    Ok(()) => state.waiter = true,
                    Err(error) => break Err(error),
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break Err(StoreError::unavailable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "another process has held the token file's write lock for too long",
                )));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        state.saves -= 1;
        if state.saves == 0 {
            // Nobody is left to take a lock the waiter got meanwhile.
            drop(state.ready.take());
        }
        result
    }

    fn spawn_waiter(self: &Arc<Self>, file: File) -> Result<(), StoreError> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("tower-bearer-file-lock".into())
            .spawn(move || {
                let locked = file.lock();
                let mut state = this.state();
                state.waiter = false;
                match locked {
                    // Handed to a waiting save, or released at once when
                    // every save gave up.
                    Ok(()) if state.saves > 0 => state.ready = Some(file),
                    Ok(()) => drop(file),
                    Err(error) if state.saves > 0 => state.failed = Some(error),
                    Err(_) => {}
                }
                this.changed.notify_all();
            })
            .map(drop)
            .map_err(StoreError::unavailable)
    }
}

/// The file's bytes; `None` when there is no file.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::unavailable(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(StoreError::unavailable)?;
    Ok(Some(bytes))
}

/// A token file of this build's version: its entries each as the exact JSON
/// text they were read as (so that a save writes every other entry back
/// byte for byte), and any other member of the file as it was.
#[derive(Default)]
struct TokenFile {
    tokens: BTreeMap<String, Box<RawValue>>,
    others: BTreeMap<String, Box<RawValue>>,
}

/// The keys only: the entries hold tokens.
impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("keys", &self.tokens.keys())
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let mut members: BTreeMap<&str, &RawValue> = self
            .others
            .iter()
            .map(|(k, v)| (k.as_str(), &**v))
            .collect();
        let version =
            RawValue::from_string(FILE_VERSION.to_string()).map_err(StoreError::unavailable)?;
        let tokens =
            serde_json::value::to_raw_value(&self.tokens).map_err(StoreError::unavailable)?;
        members.insert("version", &version);
        members.insert("tokens", &tokens);
        serde_json::to_vec_pretty(&members).map_err(StoreError::unavailable)
    }
}

/// A token file: [`StoreError::is_unknown_version`] for a file of another
/// version, [`StoreError::is_corrupt`] for anything else it cannot read.
fn parse_file(bytes: &[u8]) -> Result<TokenFile, StoreError> {
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(StoreError::corrupt("the token file is too large"));
    }
    let mut members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(bytes).map_err(|_| {
            StoreError::corrupt(
                "the token file is not a JSON object (corrupt, truncated or something else)",
            )
        })?;
    let version = members
        .remove("version")
        .and_then(|v| serde_json::from_str::<u64>(v.get()).ok());
    match version {
        Some(FILE_VERSION) => {}
        Some(other) => return Err(StoreError::unknown_version(other)),
        None => return Err(StoreError::corrupt("the token file has no format version")),
    }
    let tokens = members
        .remove("tokens")
        .and_then(|t| serde_json::from_str(t.get()).ok())
        .ok_or_else(|| StoreError::corrupt("the token file has no tokens object"))?;
    Ok(TokenFile {
        tokens,
        others: members,
    })
}

/// Temporary file, fsync, rename, fsync of the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", unique_value()));
    let result = (|| {
        let mut file = private_options().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    // Make the rename itself durable. Not possible on every platform
    // (Windows cannot open a folder as a file); the data is safe anyway.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Opens a lock file, creating it if missing, never through a symbolic
/// link: in a folder others can write, a link planted at a lock file's name
/// would have this store create (`O_CREAT` follows a dangling link) or open
/// a file of someone else's choosing. A missing file is created with
/// `create_new` (`O_EXCL`, which does not follow links); an existing one
/// must be a regular file, and still the same file once open.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    // Each round either returns or saw the file appear after it looked:
    // only a folder under attack sees that again and again.
    for _ in 0..3 {
        match fs::symlink_metadata(path) {
            Ok(seen) if seen.file_type().is_file() => {
                // flock needs no write access.
                let file = File::open(path).map_err(StoreError::unavailable)?;
                let opened = file.metadata().map_err(StoreError::unavailable)?;
                if !same_file(&seen, &opened) {
                    return Err(not_a_lock_file(path));
                }
                return Ok(file);
            }
            Ok(_) => return Err(not_a_lock_file(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match private_options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                {
                    Ok(file) => return Ok(file),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(StoreError::unavailable(e)),
                }
            }
            Err(e) => return Err(StoreError::unavailable(e)),
        }
    }
    Err(not_a_lock_file(path))
}

fn not_a_lock_file(path: &Path) -> StoreError {
    tracing::warn!(
        path = %path.display(),
        "refusing a lock file that is not a plain file (a symbolic link?) or keeps changing; is the folder writable by others?"
    );
    StoreError::unavailable(io::Error::other(
        "the lock file is not a plain file, or was replaced while being opened",
    ))
}

/// Whether two metadata describe the same file (device and inode).
#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, b: &fs::Metadata) -> bool {
    b.file_type().is_file()
}

/// Files this store creates are readable by their owner only.
fn private_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(StoreError::unavailable)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "the token file is readable by other users; it holds tokens in clear text (the next save rewrites it with mode 600)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn parse_file_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_file(&bytes);
        }

        #[test]
        fn parse_file_never_panics_on_near_misses(
            json in r#"\{"version":-?[0-9]{1,20}(\.[0-9])?,"tokens":(\{"k":\{"version":1\}\}|\[\]|null|"x")\}"#
        ) {
            let _ = parse_file(json.as_bytes());
        }
    }

    #[test]
    fn a_file_without_tokens_of_its_version_is_corrupt() {
        assert!(
            parse_file(br#"{"version":1,"tokens":{}}"#)
                .unwrap()
                .tokens
                .is_empty()
        );
        assert!(
            parse_file(br#"{"version":2,"tokens":{}}"#)
                .unwrap_err()
                .is_unknown_version()
        );
        assert!(parse_file(br#"{"version":1}"#).unwrap_err().is_corrupt());
        assert!(
            parse_file(br#"{"version":"1","tokens":{}}"#)
                .unwrap_err()
                .is_corrupt()
        );
    }
}
