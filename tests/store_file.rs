//! The file store: tokens and rotated refresh tokens survive a restart
//! (B5), the file is written atomically and privately, bad files are
//! ignored and then overwritten, and two processes writing one file never
//! leave a torn one. Real files under the cargo target folder; a real
//! token endpoint on loopback.
#![cfg(feature = "hyper-client")]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use support::rotating::RotatingServer;
use support::{FrozenClock, settle_until};
use tokio::sync::Semaphore;
use tower_bearer::oauth::RefreshTokenGrant;
use tower_bearer::source::BoxFuture;
use tower_bearer::store::{FileStore, StoreError, StoreKey, StoreLock, StoredToken, TokenStore};
use tower_bearer::{Token, TokenCache, source};

/// Every token and secret of this file contains it, so one search of the
/// logs finds any leak (B8).
const MARK: &str = "SECRET";

// === fixtures ===

/// A fresh folder for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("store_file")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The refresh token saved in `file` under `key`, read straight from the
/// JSON.
fn refresh_token_on_disk(file: &Path, key: &StoreKey) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["tokens"][key.as_str()]["refresh_token"]
        .as_str()
        .map(str::to_owned)
}

/// Everything `tracing` prints in this test binary, at every level.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// === restarts (B5) ===

#[tokio::test]
async fn restart_reuses_the_stored_token_with_no_token_request() {
    let dir = temp_dir("reuse");
    let server = RotatingServer::start(3600, MARK).await;
    let store = FileStore::new(dir.join("tokens.json"));
    let grant = server.password();
    let key = grant.store_key();
    let first = TokenCache::builder(grant)
        .store(store.clone(), key.clone())
        .build()
        .unwrap();
    let token = first.token().await.unwrap();
    drop(first);

    // The restart: a new grant, a new cache, the same file.
    let grant = server.password();
    let second = TokenCache::builder(grant.clone())
        .store(store, key)
        .build()
        .unwrap();
    let again = second.token().await.unwrap();

    assert_eq!(again.access_token(), token.access_token());
    assert_eq!(again.refresh_token(), token.refresh_token());
    assert_eq!(second.stats().token_requests, 0);
    assert_eq!(second.stats().adopted_from_store, 1);
    assert_eq!(server.requests(), ["password"]);
    assert_eq!(grant.stats().requests, 0);
}

#[tokio::test]
async fn restart_refreshes_with_the_stored_rotated_refresh_token_not_the_configured_one() {
    // A daemon configured with the refresh token it was first given. After
    // a rotation and a restart, that one is spent: sending it would be a
    // reuse, which revokes the grant. The store has the rotated one.
    let dir = temp_dir("rotated");
    let server = RotatingServer::start(3600, MARK).await;
    let store = FileStore::new(dir.join("tokens.json"));
    let file = store.path().to_owned();
    let login = server.password();
    let first_token = TokenCache::new(login.clone()).token().await.unwrap();
    let configured = first_token.refresh_token().unwrap().clone();
    let key = StoreKey::for_user(&server.endpoint(), "alice");

    let daemon = TokenCache::builder(RefreshTokenGrant::new(
        server.endpoint(),
        configured.clone(),
    ))
    .store(store.clone(), key.clone())
    .build()
    .unwrap();
    let t2 = daemon.token().await.unwrap();
    assert_eq!(
        refresh_token_on_disk(&file, &key).as_deref(),
        Some(format!("rt-{MARK}-2").as_str())
    );
    drop(daemon);

    // Restarted, with the same configuration; the access token is rejected
    // (or expired), so it refreshes.
    let grant = RefreshTokenGrant::new(server.endpoint(), configured);
    let daemon = TokenCache::builder(grant.clone())
        .store(store, key.clone())
        .build()
        .unwrap();
    let loaded = daemon.token().await.unwrap();
    assert_eq!(loaded.access_token(), t2.access_token());
    assert!(daemon.invalidate(&loaded));
    let t3 = daemon.token().await.unwrap();

    assert_eq!(t3.access_token().secret(), format!("at-{MARK}-3"));
    assert_eq!(
        server.requests(),
        [
            "password".to_owned(),
            format!("refresh_token rt-{MARK}-1"),
            format!("refresh_token rt-{MARK}-2"),
        ]
    );
    assert!(!server.revoked());
    assert_eq!(
        refresh_token_on_disk(&file, &key).as_deref(),
        Some(format!("rt-{MARK}-3").as_str())
    );
    assert_eq!(
        grant.refresh_token().unwrap().secret(),
        format!("rt-{MARK}-3")
    );
}

#[tokio::test]
async fn restart_after_the_access_token_expired_refreshes_with_the_stored_refresh_token() {
    let dir = temp_dir("expired");
    let server = RotatingServer::start(3600, MARK).await;
    let store = FileStore::new(dir.join("tokens.json"));
    let login = server.password();
    let key = login.store_key();
    TokenCache::builder(login)
        .store(store.clone(), key.clone())
        .build()
        .unwrap()
        .token()
        .await
        .unwrap();
    // What a restart an hour later finds: the same entry, expired.
    let stored = store.load(&key).await.unwrap().unwrap();
    let expired = stored.with_expires_at(SystemTime::now() - Duration::from_secs(1));
    store.save(&key, &expired).await.unwrap();

    let grant = server.password();
    let cache = TokenCache::builder(grant.clone())
        .store(store.clone(), key.clone())
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();

    assert_eq!(token.access_token().secret(), format!("at-{MARK}-2"));
    assert_eq!(
        server.requests(),
        ["password".to_owned(), format!("refresh_token rt-{MARK}-1")],
        "refreshed with the stored refresh token, not the password"
    );
    assert_eq!(grant.stats().primary, 0);
    let saved = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        saved.refresh_token().unwrap().secret(),
        format!("rt-{MARK}-2")
    );
}

/// A file store whose saves wait for a permit, to see what the cache does
/// while a save is under way.
#[derive(Clone)]
struct GatedStore {
    inner: FileStore,
    gate: Arc<Semaphore>,
    saving: Arc<AtomicUsize>,
}

impl TokenStore for GatedStore {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        self.inner.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.saving.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.inner.save(key, token).await
        })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<StoreLock>, StoreError>> {
        self.inner.try_lock(key, ttl)
    }
}

#[tokio::test(start_paused = true)]
async fn b5_rotated_refresh_token_is_on_disk_before_the_new_access_token_is_handed_out() {
    let _clock = FrozenClock::freeze().await;
    let dir = temp_dir("ordering");
    let server = RotatingServer::start(3600, MARK).await;
    let store = GatedStore {
        inner: FileStore::new(dir.join("tokens.json")),
        gate: Arc::new(Semaphore::new(1)),
        saving: Arc::default(),
    };
    let file = store.inner.path().to_owned();
    let grant = server.password();
    let key = grant.store_key();
    let cache = TokenCache::builder(grant)
        .store(store.clone(), key.clone())
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();
    assert!(cache.invalidate(&first));

    let call = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    // The rotation has happened at the server, and the save is held.
    settle_until(|| store.saving.load(Ordering::SeqCst) == 2).await;
    assert_eq!(server.requests().len(), 2);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !call.is_finished(),
        "the new token was handed out before it was saved"
    );
    assert_eq!(
        refresh_token_on_disk(&file, &key).as_deref(),
        Some(format!("rt-{MARK}-1").as_str())
    );

    store.gate.add_permits(1);
    let token = call.await.unwrap().unwrap();
    // No await between the hand-out and this read.
    assert_eq!(
        refresh_token_on_disk(&file, &key).as_deref(),
        token.refresh_token().map(|rt| rt.secret())
    );
    assert_eq!(
        token.refresh_token().unwrap().secret(),
        format!("rt-{MARK}-2")
    );
}

/// A daemon stops while a refresh is under way: the server has rotated the
/// refresh token and its answer is on the way. Runs the daemon's life on a
/// runtime of its own, started and shut down like a process, and returns
/// the refresh token on disk afterwards.
fn stop_during_a_refresh(dir: &Path, settle_first: bool) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let file = dir.join("tokens.json");
        let key = StoreKey::new(["daemon"]);
        let gate = Arc::new(tokio::sync::Notify::new());
        let rotated = Arc::new(AtomicUsize::new(0));
        let source = source::from_fn({
            let (gate, rotated) = (gate.clone(), rotated.clone());
            move |_previous| {
                let (gate, rotated) = (gate.clone(), rotated.clone());
                async move {
                    // The server has rotated: the old refresh token is spent.
                    rotated.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(Token::new(format!("at-{MARK}-2"))
                        .with_refresh_token(format!("rt-{MARK}-2"))
                        .with_expires_in(Duration::from_secs(3600)))
                }
            }
        });
        let cache = TokenCache::builder(source)
            .store(FileStore::new(&file), key.clone())
            .build()
            .unwrap();
        let call = tokio::spawn({
            let cache = cache.clone();
            async move { cache.token().await }
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            while rotated.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the refresh reached the server");

        // Shutdown begins; the answer arrives.
        gate.notify_one();
        if settle_first {
            cache.settle().await;
        }
        drop(call);
        drop(cache);
        refresh_token_on_disk(&file, &key)
    })
    // The runtime is dropped here, with whatever tasks it still has.
}

#[test]
fn settle_before_shutdown_keeps_the_rotated_refresh_token_of_a_refresh_under_way() {
    let dir = temp_dir("settle");
    assert_eq!(
        stop_during_a_refresh(&dir, true),
        Some(format!("rt-{MARK}-2")),
        "the refresh landed in the file before the runtime stopped"
    );
}

#[test]
fn without_settle_a_stop_during_a_refresh_loses_its_answer() {
    // The documented limit that `settle` exists for: the last handle's drop
    // and the runtime's shutdown abort the refresh.
    let dir = temp_dir("no-settle");
    assert_eq!(stop_during_a_refresh(&dir, false), None);
}

// === bad files ===

#[tokio::test]
async fn corrupt_and_truncated_files_are_ignored_then_overwritten() {
    let dir = temp_dir("corrupt");
    let key = StoreKey::new(["store_file", "corrupt"]);
    let good = {
        let store = FileStore::new(dir.join("good.json"));
        let token = Token::new(format!("at-{MARK}-0")).with_refresh_token(format!("rt-{MARK}-0"));
        store
            .save(&key, &StoredToken::from_token(&token))
            .await
            .unwrap();
        std::fs::read(store.path()).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", format!("not json {MARK}").into_bytes()),
        ("binary", vec![0xff, 0x00, 0xfe, 0x7b]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("not an object", b"[1, 2, 3]".to_vec()),
        ("no version", br#"{"tokens": {}}"#.to_vec()),
        (
            "unreadable entry",
            format!(
                r#"{{"version": 1, "tokens": {{"{key}": {{"version": 1, "access_token": 5}}}}}}"#
            )
            .into_bytes(),
        ),
        (
            "entry whose version is not a number",
            format!(r#"{{"version": 1, "tokens": {{"{key}": {{"version": "7"}}}}}}"#).into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let file = dir.join(format!("{}.json", what.replace(' ', "-")));
        std::fs::write(&file, &bytes).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = {
            let requests = requests.clone();
            source::from_fn(move |_| {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    Ok(Token::new(format!("at-{MARK}-new-{n}"))
                        .with_expires_in(Duration::from_secs(3600)))
                }
            })
        };
        let cache = TokenCache::builder(counted)
            .store(FileStore::new(&file), key.clone())
            .build()
            .unwrap();

        let token = cache.token().await.unwrap();

        assert_eq!(
            token.access_token().secret(),
            format!("at-{MARK}-new-1"),
            "{what}"
        );
        assert_eq!(cache.stats().store_errors, 0, "{what}: {:?}", cache.stats());
        let reread = FileStore::new(&file).load(&key).await.unwrap();
        assert_eq!(
            reread.map(|t| t.access_token().secret().to_owned()),
            Some(format!("at-{MARK}-new-1")),
            "{what}: the next good token overwrote the file"
        );
    }
}

#[tokio::test]
async fn b8_no_secret_reaches_the_logs_from_bad_files_or_saves() {
    let logs = captured_logs();
    let dir = temp_dir("logs");
    let key = StoreKey::new(["store_file", "logs"]);
    let file = dir.join("tokens.json");
    std::fs::write(
        &file,
        format!(r#"{{"version": 1, "tokens": {{"{key}": "at-{MARK}"#),
    )
    .unwrap();
    let store = FileStore::new(&file);
    assert!(store.load(&key).await.unwrap().is_none());
    let token = Token::new(format!("at-{MARK}-9")).with_refresh_token(format!("rt-{MARK}-9"));
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
    println!("{store:?} {:?}", StoredToken::from_token(&token));

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("ignoring the token file"), "{logs}");
    assert!(!logs.contains(MARK), "a secret reached the logs:\n{logs}");
    assert!(!format!("{:?}", StoredToken::from_token(&token)).contains(MARK));
}

#[cfg(unix)]
#[tokio::test]
async fn the_token_file_and_its_locks_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("private");
    let file = dir.join("sub").join("tokens.json");
    let store = FileStore::new(&file);
    let key = StoreKey::new(["store_file", "private"]);
    let token = Token::new(format!("at-{MARK}"));
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    drop(store.try_lock(&key, Duration::from_secs(1)).await.unwrap());

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.join("sub")), 0o700);
    for entry in std::fs::read_dir(dir.join("sub")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // A file others can read is rewritten private by the next save.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    store
        .save(&key, &StoredToken::from_token(&token))
        .await
        .unwrap();
    assert_eq!(mode(&file), 0o600);
}

#[tokio::test]
async fn the_refresh_lock_is_exclusive_until_released() {
    let dir = temp_dir("lock");
    let a = FileStore::new(dir.join("tokens.json"));
    let b = FileStore::new(dir.join("tokens.json"));
    let key = StoreKey::new(["store_file", "lock"]);
    let other = StoreKey::new(["store_file", "other"]);
    let ttl = Duration::from_secs(1);

    let held = a.try_lock(&key, ttl).await.unwrap().expect("free");
    assert!(b.try_lock(&key, ttl).await.unwrap().is_none());
    assert!(
        a.try_lock(&key, ttl).await.unwrap().is_none(),
        "not re-entrant"
    );
    assert!(
        b.try_lock(&other, ttl).await.unwrap().is_some(),
        "one lock per key"
    );
    assert!(held.extend(ttl).await.unwrap());
    held.release().await.unwrap();
    assert!(b.try_lock(&key, ttl).await.unwrap().is_some());
}

#[cfg(unix)]
#[tokio::test]
async fn lock_files_are_never_opened_through_a_symbolic_link() {
    // In a folder others can write, someone plants links at the names of
    // the lock files, pointing where they want a file created (or opened)
    // with this program's rights. The store must refuse them, not follow.
    let dir = temp_dir("symlink");
    let file = dir.join("tokens.json");
    let store = FileStore::new(&file);
    let key = StoreKey::new(["store_file", "symlink"]);
    let planted = |lock: &str, target: &str| {
        std::os::unix::fs::symlink(dir.join(target), dir.join(lock)).unwrap();
        dir.join(target)
    };
    let save_target = planted("tokens.json.lock", "created-by-save");
    let lock_name = format!("tokens.json.{}.lock", &key.as_str()[..16]);
    let lock_target = planted(&lock_name, "created-by-lock");

    let token = Token::new(format!("at-{MARK}"));
    let saved = store.save(&key, &StoredToken::from_token(&token)).await;
    let locked = store.try_lock(&key, Duration::from_secs(1)).await;

    assert!(saved.unwrap_err().is_unavailable());
    assert!(locked.unwrap_err().is_unavailable());
    assert!(!save_target.exists(), "created through the link");
    assert!(!lock_target.exists(), "created through the link");
    assert!(!file.exists());
}

#[tokio::test]
async fn a_newer_builds_file_or_entry_is_left_as_it_is_and_the_cache_carries_on() {
    // A rolling upgrade: a newer build wrote a file, or an entry, of a
    // version this build does not know. This build neither reads nor
    // replaces it (a newer build's refresh token may be the only one), and
    // its cache fetches tokens on its own.
    let dir = temp_dir("newer");
    let key = StoreKey::new(["store_file", "newer"]);
    let cases: Vec<(&str, String)> = vec![
        (
            "file of a newer version",
            r#"{"version": 2, "tokens": {"anything": {"new": "shape"}}}"#.to_owned(),
        ),
        (
            "entry of a newer version",
            format!(r#"{{"version": 1, "tokens": {{"{key}": {{"version": 7, "sealed": "…"}}}}}}"#),
        ),
    ];
    for (what, text) in cases {
        let file = dir.join(format!("{}.json", what.replace(' ', "-")));
        std::fs::write(&file, &text).unwrap();
        let store = FileStore::new(&file);
        assert!(
            store.load(&key).await.unwrap_err().is_unknown_version(),
            "{what}"
        );
        let token = StoredToken::from_token(&Token::new(format!("at-{MARK}")));
        assert!(
            store
                .save(&key, &token)
                .await
                .unwrap_err()
                .is_unknown_version(),
            "{what}"
        );

        let requests = Arc::new(AtomicUsize::new(0));
        let counted = {
            let requests = requests.clone();
            source::from_fn(move |_| {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    Ok(Token::new(format!("at-{MARK}-new-{n}"))
                        .with_expires_in(Duration::from_secs(3600)))
                }
            })
        };
        let cache = TokenCache::builder(counted)
            .store(FileStore::new(&file), key.clone())
            .build()
            .unwrap();
        let token = cache.token().await.unwrap();
        assert_eq!(
            token.access_token().secret(),
            format!("at-{MARK}-new-1"),
            "{what}"
        );
        assert!(
            cache.stats().store_errors >= 1,
            "{what}: {:?}",
            cache.stats()
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "{what}: rewritten"
        );
    }
}

#[tokio::test]
async fn a_newer_builds_entry_keeps_an_older_build_from_sending_its_refresh_token() {
    // A rolling upgrade: the newer build stored the newest refresh token in
    // an entry this build cannot read, so the one this build holds may be
    // spent. It is not sent (a reuse would revoke the grant): a refresh
    // token grant fails with a transient store error, and a grant with a
    // primary grant uses that.
    let dir = temp_dir("newer-refresh");
    let server = RotatingServer::start(3600, MARK).await;
    let key = StoreKey::for_user(&server.endpoint(), "alice");
    let newer = format!(r#"{{"version": 1, "tokens": {{"{key}": {{"version": 7}}}}}}"#);
    let file = dir.join("tokens.json");
    std::fs::write(&file, &newer).unwrap();

    let refresh_only =
        RefreshTokenGrant::new(server.endpoint(), format!("rt-{MARK}-0")).subject("alice");
    let cache = TokenCache::builder(refresh_only)
        .store(FileStore::new(&file), key.clone())
        .build()
        .unwrap();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    let cache = TokenCache::builder(server.password())
        .store(FileStore::new(&file), key)
        .build()
        .unwrap();
    cache.token().await.unwrap();
    assert_eq!(server.requests(), ["password"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), newer);
}

#[tokio::test]
async fn a_save_writes_every_other_entry_back_byte_for_byte() {
    // Entries of other keys (another build's, with members and a layout of
    // their own) come back exactly as they were, whatever this save writes.
    let dir = temp_dir("byte-for-byte");
    let file = dir.join("tokens.json");
    let key = StoreKey::new(["store_file", "byte-for-byte"]);
    let newer = r#"{"version": 7,  "zeta": [1, 2.50, "\u00e9"], "alpha": {}}"#;
    let older = r#"{"version":1,"access_token":"other","token_type":"Bearer","issued_at_ms":1,"extra_member":true}"#;
    std::fs::write(
        &file,
        format!(r#"{{"version": 1, "tokens": {{"newer-key": {newer}, "older-key": {older}}}, "written_by": "a newer build"}}"#),
    )
    .unwrap();
    let store = FileStore::new(&file);
    let token = StoredToken::from_token(&Token::new(format!("at-{MARK}")));
    store.save(&key, &token).await.unwrap();
    store.save(&key, &token).await.unwrap();

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(newer), "{text}");
    assert!(text.contains(older), "{text}");
    assert!(text.contains(r#""written_by": "a newer build""#), "{text}");
    assert_eq!(
        store
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .access_token()
            .secret(),
        format!("at-{MARK}")
    );
}

#[tokio::test]
async fn a_save_gives_up_when_another_process_holds_the_write_lock_too_long() {
    // Another process holds the write lock and does not let go (stopped
    // mid-save, a hung network file system). A save must fail in bounded
    // time: waiting forever would also keep a thread of tokio's blocking
    // pool, and the runtime's shutdown waits for those.
    let dir = temp_dir("write-lock");
    let file = dir.join("tokens.json");
    let store = FileStore::new(&file);
    let key = StoreKey::new(["store_file", "write-lock"]);
    let token = StoredToken::from_token(&Token::new(format!("at-{MARK}")));
    let other = std::fs::File::create(dir.join("tokens.json.lock")).unwrap();
    other.lock().unwrap();

    let saved = tokio::time::timeout(Duration::from_secs(20), store.save(&key, &token)).await;
    drop(other);

    let saved = saved.expect("the save waited for the write lock for 20 s");
    assert!(saved.unwrap_err().is_unavailable());
    assert!(!file.exists());
    store.save(&key, &token).await.unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
}

// === two processes ===

/// Environment of a writer child process (see below).
const WRITER_FILE: &str = "TOWER_BEARER_TEST_WRITER_FILE";
const WRITER_ID: &str = "TOWER_BEARER_TEST_WRITER_ID";
const WRITES: usize = 200;

/// Not a test of its own: the body of a child process of
/// `two_processes_writing_the_same_file_never_leave_a_torn_file`, which runs
/// this test binary again with the environment set. Without it, it returns.
#[test]
fn file_writer_child_process() {
    let (Ok(file), Ok(id)) = (std::env::var(WRITER_FILE), std::env::var(WRITER_ID)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = FileStore::new(file);
        let key = StoreKey::new(["writer", id.as_str()]);
        // Large tokens (16 KiB) make a torn write likely if writes were not
        // atomic.
        let padding = "x".repeat(16 * 1024);
        for n in 0..WRITES {
            let token = Token::new(format!("at-{id}-{n}-{padding}"))
                .with_refresh_token(format!("rt-{id}-{n}"));
            store
                .save(&key, &StoredToken::from_token(&token))
                .await
                .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_the_same_file_never_leave_a_torn_file() {
    let dir = temp_dir("processes");
    let file = dir.join("tokens.json");
    let spawn = |id: &str| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "file_writer_child_process",
                "--test-threads=1",
                "--quiet",
            ])
            .env(WRITER_FILE, &file)
            .env(WRITER_ID, id)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut children = [spawn("a"), spawn("b")];

    // Read the file as fast as possible while both write.
    let (mut reads, mut torn) = (0usize, Vec::new());
    let mut running = true;
    while running {
        running = children
            .iter_mut()
            .any(|child| child.try_wait().unwrap().is_none());
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // not written yet
        };
        reads += 1;
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
        match parsed {
            Ok(value) if value["version"] == 1 && value["tokens"].is_object() => {}
            _ => torn.push(bytes.len()),
        }
    }
    for child in &mut children {
        assert!(child.wait().unwrap().success(), "a writer failed");
    }

    assert!(
        torn.is_empty(),
        "{} torn reads of {reads} (first sizes: {:?})",
        torn.len(),
        &torn[..torn.len().min(10)]
    );
    assert!(reads >= 10, "only {reads} reads while the writers ran");
    // Writes are serialised: neither writer lost the other's token.
    let store = FileStore::new(&file);
    for id in ["a", "b"] {
        let token = store
            .load(&StoreKey::new(["writer", id]))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("writer {id}'s token was lost"));
        assert_eq!(
            token.refresh_token().unwrap().secret(),
            format!("rt-{id}-{}", WRITES - 1)
        );
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::io::stdout().flush();
}
