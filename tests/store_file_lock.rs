//! The file store's write lock while another process holds it: however
//! many saves give up, at most one thread of the store stays blocked in
//! `flock`. A test binary of its own, so that no other test's store adds
//! threads while this one counts them.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::Duration;

use tower_bearer::Token;
use tower_bearer::store::{FileStore, StoreKey, StoredToken, TokenStore};

/// The threads of this process whose name starts with `prefix` (Linux
/// keeps 15 bytes of a thread's name).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_that_give_up_on_a_held_write_lock_leave_at_most_one_blocked_thread() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("store_file_lock")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.json");
    let store = FileStore::new(&file);
    let key = StoreKey::new(["store_file_lock"]);
    let token = StoredToken::from_token(&Token::new("t0k3n"));
    // Another process holds the write lock and does not let go.
    let other = std::fs::File::create(dir.join("tokens.json.lock")).unwrap();
    other.lock().unwrap();

    // Twenty saves at once, then five in a row: each gives up after its
    // wait (3 s).
    let saves: Vec<_> = (0..20)
        .map(|_| {
            let (store, key, token) = (store.clone(), key.clone(), token.clone());
            tokio::spawn(async move { store.save(&key, &token).await })
        })
        .collect();
    for save in saves {
        assert!(save.await.unwrap().unwrap_err().is_unavailable());
    }
    for _ in 0..2 {
        assert!(store.save(&key, &token).await.unwrap_err().is_unavailable());
    }

    let blocked = threads_named("tower-bearer-fi");
    assert!(blocked <= 1, "{blocked} threads blocked on the write lock");

    // The lock is released: the waiter hands it on or lets it go, and
    // saves work again.
    drop(other);
    tokio::time::timeout(Duration::from_secs(10), store.save(&key, &token))
        .await
        .expect("a save after the lock was released")
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
}
