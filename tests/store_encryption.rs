//! Tokens encrypted at rest (feature `store-encryption`), in a real file
//! and a real `redis-server`: no token in clear text; keys rotate (entries
//! written with an old key are read with it, and written with the new one);
//! an entry that does not decrypt (a wrong key, no key, an entry moved or
//! tampered with) is a typed error and a fetch, never a panic and never a
//! wipe.
#![cfg(feature = "store-encryption")]

mod support;

use std::path::{Path, PathBuf};

use support::rotating::RotatingServer;
use support::{http_client, http_source, token_server};
use tower_bearer::oauth::RefreshTokenGrant;
use tower_bearer::store::{EncryptionKeys, FileStore, StoreKey, StoredToken, TokenStore};
use tower_bearer::{Token, TokenCache};

const MARK: &str = "SECRET";
const KEY_2025: [u8; 32] = [0x25; 32];
const KEY_2026: [u8; 32] = [0x26; 32];

fn temp_file(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("store_encryption")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("tokens.json")
}

fn key() -> StoreKey {
    StoreKey::new(["store_encryption", "api"])
}

fn token(n: usize) -> StoredToken {
    StoredToken::from_token(
        &Token::new(format!("at-{MARK}-{n}"))
            .with_refresh_token(format!("rt-{MARK}-{n}"))
            .with_expires_in(std::time::Duration::from_secs(3600)),
    )
}

fn keys_2025() -> EncryptionKeys {
    EncryptionKeys::new("2025", &KEY_2025).unwrap()
}

/// After the rotation: 2026 writes, 2025 still reads.
fn keys_2026() -> EncryptionKeys {
    EncryptionKeys::new("2026", &KEY_2026)
        .unwrap()
        .old_key("2025", &KEY_2025)
        .unwrap()
}

/// A key that is not 2025's, under 2025's id (a misconfiguration).
fn wrong_2025() -> EncryptionKeys {
    EncryptionKeys::new("2025", &[0x99; 32]).unwrap()
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap()
}

/// The entry of `key` in the token file, as JSON.
fn entry(file: &Path, key: &StoreKey) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
    json["tokens"][key.as_str()].clone()
}

#[tokio::test]
async fn file_entries_are_encrypted_and_keys_rotate() {
    let file = temp_file("rotate");
    let old = FileStore::new(&file).encrypted(keys_2025());
    old.save(&key(), &token(1)).await.unwrap();
    let text = read(&file);
    assert!(!text.contains(MARK), "a token in clear text:\n{text}");
    let sealed = entry(&file, &key());
    assert_eq!(sealed["version"], 2, "{sealed}");
    assert_eq!(sealed["alg"], "A256GCM", "{sealed}");
    assert_eq!(sealed["kid"], "2025", "{sealed}");
    let read_back = old.load(&key()).await.unwrap().unwrap();
    assert_eq!(read_back.access_token().secret(), format!("at-{MARK}-1"));

    // Rotated: the 2025 entry is read with the old key...
    let new = FileStore::new(&file).encrypted(keys_2026());
    let read_back = new.load(&key()).await.unwrap().unwrap();
    assert_eq!(
        read_back.refresh_token().unwrap().secret(),
        format!("rt-{MARK}-1")
    );
    // ... and written with the new one.
    new.save(&key(), &token(2)).await.unwrap();
    assert_eq!(entry(&file, &key())["kid"], "2026");
    assert!(!read(&file).contains(MARK));
    assert_eq!(
        new.load(&key())
            .await
            .unwrap()
            .unwrap()
            .access_token()
            .secret(),
        format!("at-{MARK}-2")
    );
    // A store with the old key only cannot read it: a typed error.
    let error = old.load(&key()).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");
    assert!(error.to_string().contains("2026"), "{error}");
}

#[tokio::test]
async fn file_plain_entries_are_read_and_encrypted_at_their_next_save() {
    let file = temp_file("plain");
    FileStore::new(&file).save(&key(), &token(1)).await.unwrap();
    assert!(read(&file).contains(MARK));

    let encrypted = FileStore::new(&file).encrypted(keys_2025());
    assert_eq!(
        encrypted
            .load(&key())
            .await
            .unwrap()
            .unwrap()
            .access_token()
            .secret(),
        format!("at-{MARK}-1")
    );
    encrypted.save(&key(), &token(2)).await.unwrap();
    assert!(!read(&file).contains(MARK), "{}", read(&file));

    // A store without keys can neither read the encrypted entry nor
    // replace it.
    let plain = FileStore::new(&file);
    let before = read(&file);
    let error = plain.load(&key()).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");
    let error = plain.save(&key(), &token(3)).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");
    assert_eq!(read(&file), before);
}

#[tokio::test]
async fn file_a_wrong_key_is_a_typed_error_and_a_fetch_never_a_wipe() {
    let file = temp_file("wrong-key");
    FileStore::new(&file)
        .encrypted(keys_2025())
        .save(&key(), &token(1))
        .await
        .unwrap();
    let before = read(&file);

    let wrong = FileStore::new(&file).encrypted(wrong_2025());
    let error = wrong.load(&key()).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");
    let error = wrong.save(&key(), &token(2)).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");
    assert_eq!(
        read(&file),
        before,
        "a save replaced an entry it cannot read"
    );

    // A cache on the wrong key fetches a token of its own (its source has
    // no refresh tokens), counts the store error, and leaves the entry.
    let tokens = token_server(3600).await;
    let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
        .store(wrong, key())
        .build()
        .unwrap();
    let fetched = cache.token().await.unwrap();
    assert_eq!(fetched.access_token().secret(), "tok-1");
    assert_eq!(tokens.requests(), 1);
    assert!(cache.stats().store_errors >= 1, "{:?}", cache.stats());
    assert_eq!(read(&file), before);

    // The right key still reads what was there.
    let right = FileStore::new(&file).encrypted(keys_2025());
    assert_eq!(
        right
            .load(&key())
            .await
            .unwrap()
            .unwrap()
            .access_token()
            .secret(),
        format!("at-{MARK}-1")
    );
}

#[tokio::test]
async fn file_an_entry_that_does_not_decrypt_keeps_a_refresh_token_from_being_sent() {
    // The entry under the key may hold the newest refresh token, written
    // by a replica with another key: the one this cache holds may be
    // spent. It is not sent; a grant with a primary grant uses that.
    let file = temp_file("wrong-key-refresh");
    let server = RotatingServer::start(3600, MARK).await;
    let key = StoreKey::for_user(&server.endpoint(), "alice");
    FileStore::new(&file)
        .encrypted(keys_2025())
        .save(&key, &token(7))
        .await
        .unwrap();
    let before = read(&file);

    let refresh_only =
        RefreshTokenGrant::new(server.endpoint(), format!("rt-{MARK}-0")).subject("alice");
    let cache = TokenCache::builder(refresh_only)
        .store(FileStore::new(&file).encrypted(wrong_2025()), key.clone())
        .build()
        .unwrap();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    let cache = TokenCache::builder(server.password())
        .store(FileStore::new(&file).encrypted(wrong_2025()), key)
        .build()
        .unwrap();
    cache.token().await.unwrap();
    assert_eq!(server.requests(), ["password"]);
    assert_eq!(read(&file), before);
}

#[tokio::test]
async fn file_an_entry_moved_relabelled_or_tampered_with_does_not_decrypt() {
    let file = temp_file("tampered");
    let store = FileStore::new(&file).encrypted(keys_2026());
    store.save(&key(), &token(1)).await.unwrap();
    let sealed = entry(&file, &key());
    let other = StoreKey::new(["store_encryption", "other-api"]);
    let write = |entry: &serde_json::Value| {
        let json = serde_json::json!({"version": 1, "tokens": {other.as_str(): entry}});
        std::fs::write(&file, json.to_string()).unwrap();
    };

    // Moved under another key: the store key is bound to the entry.
    write(&sealed);
    let error = store.load(&other).await.unwrap_err();
    assert!(error.is_undecryptable(), "{error}");

    // Relabelled with the other key id: the key id is bound too.
    let mut relabelled = sealed.clone();
    relabelled["kid"] = "2025".into();
    write(&relabelled);
    assert!(store.load(&other).await.unwrap_err().is_undecryptable());

    // A flipped bit in the ciphertext.
    let mut flipped = sealed.clone();
    let ciphertext = sealed["ciphertext"].as_str().unwrap();
    let first = if ciphertext.starts_with('A') {
        "B"
    } else {
        "A"
    };
    flipped["ciphertext"] = format!("{first}{}", &ciphertext[1..]).into();
    write(&flipped);
    assert!(store.load(&other).await.unwrap_err().is_undecryptable());

    // An algorithm this build does not know.
    let mut other_alg = sealed.clone();
    other_alg["alg"] = "XC20P".into();
    write(&other_alg);
    assert!(store.load(&other).await.unwrap_err().is_undecryptable());

    // Odd entries are corrupt (ignored, then replaced), never a panic.
    for odd in [
        serde_json::json!({"version": 2}),
        serde_json::json!({"version": 2, "alg": "A256GCM", "kid": "2026"}),
        serde_json::json!({"version": 2, "alg": "A256GCM", "kid": "2026", "nonce": "!!", "ciphertext": ""}),
        serde_json::json!({"version": 2, "alg": "A256GCM", "kid": "2026", "nonce": "AAAA", "ciphertext": "AAAA"}),
        serde_json::json!({"version": 2, "alg": "A256GCM", "kid": 7, "nonce": 1, "ciphertext": []}),
    ] {
        write(&odd);
        match store.load(&other).await {
            Ok(None) => {}
            Err(error) if error.is_undecryptable() => {}
            other => panic!("{odd}: {other:?}"),
        }
    }
    // What does not decrypt is never replaced; what is no entry is.
    write(&serde_json::json!({"version": 2}));
    store.save(&other, &token(2)).await.unwrap();
    assert_eq!(
        store
            .load(&other)
            .await
            .unwrap()
            .unwrap()
            .access_token()
            .secret(),
        format!("at-{MARK}-2")
    );
}

#[tokio::test]
async fn encrypted_refresh_tokens_survive_a_restart_and_a_key_rotation() {
    // A daemon with a rotating refresh token keeps it across restarts,
    // encrypted, and across a rotation of its encryption key.
    let file = temp_file("restart");
    let server = RotatingServer::start(3600, MARK).await;
    let key = StoreKey::for_user(&server.endpoint(), "alice");
    let cache = |keys: EncryptionKeys| {
        TokenCache::builder(server.password())
            .store(FileStore::new(&file).encrypted(keys), key.clone())
            .build()
            .unwrap()
    };
    let first = cache(keys_2025());
    assert_eq!(
        first.token().await.unwrap().access_token().secret(),
        format!("at-{MARK}-1")
    );
    drop(first);
    assert!(!read(&file).contains(MARK), "{}", read(&file));

    // Restarted with the key rotated: the token is read with the old key,
    // with no token request.
    let second = cache(keys_2026());
    assert_eq!(
        second.token().await.unwrap().access_token().secret(),
        format!("at-{MARK}-1")
    );
    assert_eq!(second.stats().token_requests, 0, "{:?}", second.stats());
    assert_eq!(server.requests(), ["password"]);
}

#[test]
fn keys_are_checked_and_never_shown() {
    assert!(EncryptionKeys::new("k", &[1; 31]).is_err());
    assert!(EncryptionKeys::new("k", &[1; 33]).is_err());
    assert!(EncryptionKeys::new("", &[1; 32]).is_err());
    assert!(EncryptionKeys::new("k".repeat(129), &[1; 32]).is_err());
    let twice = EncryptionKeys::new("k", &[1; 32])
        .unwrap()
        .old_key("k", &[2; 32]);
    assert!(twice.is_err());

    let keys = EncryptionKeys::new("2026", &[0xAB; 32])
        .unwrap()
        .old_key("2025", &[0xCD; 32])
        .unwrap();
    assert_eq!(keys.key_id(), "2026");
    let debug = format!("{keys:?}");
    assert!(debug.contains("2026") && debug.contains("2025"), "{debug}");
    for byte in ["171", "205", "ab", "AB", "cd", "CD", "q6ur", "zc3N"] {
        assert!(!debug.contains(byte), "{debug}");
    }
    let store = FileStore::new("tokens.json").encrypted(keys);
    assert!(!format!("{store:?}").contains("171"), "{store:?}");
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use support::redis::RedisServer;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower_bearer::store::RedisStore;

    async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
    }

    #[tokio::test]
    async fn redis_entries_are_encrypted_and_keys_rotate() {
        let redis = RedisServer::start();
        let mut conn = raw(&redis).await;
        let old = RedisStore::new(&redis.url())
            .unwrap()
            .encrypted(keys_2025());
        let token_key = old.token_key(&key());
        old.save(&key(), &token(1)).await.unwrap();
        let stored = get(&mut conn, &token_key).await.unwrap();
        assert!(!stored.contains(MARK), "{stored}");
        assert!(stored.contains(r#""kid":"2025""#), "{stored}");
        // The time to live follows the token, as for plain entries.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&token_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 3_000_000, "{ttl}");

        let new = RedisStore::new(&redis.url())
            .unwrap()
            .encrypted(keys_2026());
        assert_eq!(
            new.load(&key())
                .await
                .unwrap()
                .unwrap()
                .access_token()
                .secret(),
            format!("at-{MARK}-1")
        );
        new.save(&key(), &token(2)).await.unwrap();
        let stored = get(&mut conn, &token_key).await.unwrap();
        assert!(
            stored.contains(r#""kid":"2026""#) && !stored.contains(MARK),
            "{stored}"
        );
        assert!(old.load(&key()).await.unwrap_err().is_undecryptable());

        // A plain store neither reads nor replaces it.
        let plain = RedisStore::new(&redis.url()).unwrap();
        assert!(plain.load(&key()).await.unwrap_err().is_undecryptable());
        let error = plain.save(&key(), &token(3)).await.unwrap_err();
        assert!(error.is_undecryptable(), "{error}");
        assert_eq!(get(&mut conn, &token_key).await.unwrap(), stored);

        // A plain entry is read by an encrypted store, and encrypted at
        // its next save.
        let other = StoreKey::new(["store_encryption", "plain"]);
        plain.save(&other, &token(4)).await.unwrap();
        assert_eq!(
            new.load(&other)
                .await
                .unwrap()
                .unwrap()
                .access_token()
                .secret(),
            format!("at-{MARK}-4")
        );
        new.save(&other, &token(5)).await.unwrap();
        let stored = get(&mut conn, &new.token_key(&other)).await.unwrap();
        assert!(!stored.contains(MARK), "{stored}");
    }

    #[tokio::test]
    async fn redis_a_wrong_key_is_a_typed_error_and_a_fetch_never_a_wipe() {
        let redis = RedisServer::start();
        let mut conn = raw(&redis).await;
        let right = RedisStore::new(&redis.url())
            .unwrap()
            .encrypted(keys_2025());
        right.save(&key(), &token(1)).await.unwrap();
        let token_key = right.token_key(&key());
        let before = get(&mut conn, &token_key).await.unwrap();

        let wrong = RedisStore::new(&redis.url())
            .unwrap()
            .encrypted(wrong_2025());
        assert!(wrong.load(&key()).await.unwrap_err().is_undecryptable());
        let error = wrong.save(&key(), &token(2)).await.unwrap_err();
        assert!(error.is_undecryptable(), "{error}");
        assert_eq!(get(&mut conn, &token_key).await.unwrap(), before);

        let tokens = token_server(3600).await;
        let cache = TokenCache::builder(http_source(http_client(), tokens.url("/token")))
            .store(wrong, key())
            .build()
            .unwrap();
        assert_eq!(
            cache.token().await.unwrap().access_token().secret(),
            "tok-1"
        );
        assert_eq!(tokens.requests(), 1);
        assert!(cache.stats().store_errors >= 1, "{:?}", cache.stats());
        assert_eq!(get(&mut conn, &token_key).await.unwrap(), before);
        assert_eq!(
            right
                .load(&key())
                .await
                .unwrap()
                .unwrap()
                .access_token()
                .secret(),
            format!("at-{MARK}-1")
        );
    }

    #[tokio::test]
    async fn redis_encrypted_replicas_share_one_token() {
        // Four replicas, each with its own encrypted store (as separate
        // processes have), in the middle of a key rollout done as
        // documented: two already write with the 2026 key, two still write
        // with the 2025 key and can read the 2026 one. One token request,
        // saved under the lock through the read-then-compare save, and
        // adopted by the others.
        let redis = RedisServer::start();
        let tokens = token_server(3600).await;
        let caches: Vec<TokenCache> = (0..4)
            .map(|n| {
                let keys = if n < 2 {
                    EncryptionKeys::new("2025", &KEY_2025)
                        .unwrap()
                        .old_key("2026", &KEY_2026)
                        .unwrap()
                } else {
                    keys_2026()
                };
                let store = RedisStore::new(&redis.url()).unwrap().encrypted(keys);
                TokenCache::builder(http_source(http_client(), tokens.url("/token")))
                    .store(store, key())
                    .build()
                    .unwrap()
            })
            .collect();
        let got = futures_util::future::join_all(caches.iter().map(|c| c.token())).await;
        for token in got {
            assert_eq!(token.unwrap().access_token().secret(), "tok-1");
        }
        assert_eq!(tokens.requests(), 1);
        let mut conn = raw(&redis).await;
        let stored = get(&mut conn, &format!("tower-bearer:{{{}}}", key().as_str()))
            .await
            .unwrap();
        assert!(!stored.contains("tok-1"), "{stored}");
    }

    /// A TCP proxy in front of Redis that counts the commands carrying the
    /// save script, and holds the first of them until the test lets it go:
    /// another writer gets in between an encrypted store's read and its
    /// compare-and-set.
    struct HoldingProxy {
        url: String,
        saves: Arc<AtomicUsize>,
        held: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
    }

    /// Text of the save script only (not of the read or lock scripts).
    const SAVE_MARK: &[u8] = b"return 'changed'";

    async fn holding_proxy(redis: &RedisServer) -> HoldingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let upstream = format!("127.0.0.1:{}", redis.port);
        let saves = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
        let counted = saves.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
                let (saves, armed, held_tx) = (counted.clone(), armed.clone(), held_tx.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    // The end of the previous read, for a mark split across two.
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match client_rx.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut window = std::mem::take(&mut tail);
                        window.extend_from_slice(&buf[..n]);
                        let marks = window
                            .windows(SAVE_MARK.len())
                            .filter(|w| *w == SAVE_MARK)
                            .count();
                        if marks > 0 {
                            saves.fetch_add(marks, Ordering::SeqCst);
                            if armed.swap(false, Ordering::SeqCst) {
                                let (go_tx, go_rx) = tokio::sync::oneshot::channel();
                                held_tx.send(go_tx).unwrap();
                                let _ = go_rx.await;
                            }
                        }
                        tail = window[window.len().saturating_sub(SAVE_MARK.len() - 1)..].to_vec();
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HoldingProxy { url, saves, held }
    }

    #[tokio::test]
    async fn redis_an_encrypted_save_that_meets_a_newer_entry_reads_it_again_and_never_overwrites_one_it_cannot_read()
     {
        let redis = RedisServer::start();
        let mut conn = raw(&redis).await;
        let mut proxy = holding_proxy(&redis).await;
        let slow = Arc::new(RedisStore::new(&proxy.url).unwrap().encrypted(keys_2025()));
        let sibling = RedisStore::new(&redis.url())
            .unwrap()
            .encrypted(keys_2025());
        let token_key = sibling.token_key(&key());

        // 1. The slow store read "no entry"; a sibling saves before the
        // slow store's compare-and-set. The script answers `changed`, the
        // store reads the sibling's entry, may replace it (it decrypts),
        // and saves: two save commands, its token stored.
        let save = tokio::spawn({
            let slow = slow.clone();
            async move { slow.save(&key(), &token(2)).await }
        });
        let go = proxy.held.recv().await.unwrap();
        sibling.save(&key(), &token(1)).await.unwrap();
        go.send(()).unwrap();
        save.await.unwrap().unwrap();
        assert_eq!(proxy.saves.load(Ordering::SeqCst), 2);
        assert_eq!(
            sibling
                .load(&key())
                .await
                .unwrap()
                .unwrap()
                .access_token()
                .secret(),
            format!("at-{MARK}-2")
        );

        // 2. The same, but what gets in is an entry this store cannot read
        // (a key id it does not have, as a newer replica's): the store reads
        // it again, refuses it, and the entry is left as it is.
        let stored = get(&mut conn, &token_key).await.unwrap();
        let unreadable = stored.replace(r#""kid":"2025""#, r#""kid":"2031""#);
        assert_ne!(unreadable, stored);
        let armed_again = holding_proxy(&redis).await;
        let slow = RedisStore::new(&armed_again.url)
            .unwrap()
            .encrypted(keys_2025());
        let mut proxy = armed_again;
        let save = tokio::spawn(async move { slow.save(&key(), &token(3)).await });
        let go = proxy.held.recv().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(&token_key)
            .arg(&unreadable)
            .query_async(&mut conn)
            .await
            .unwrap();
        go.send(()).unwrap();
        let error = save.await.unwrap().unwrap_err();
        assert!(error.is_undecryptable(), "{error}");
        assert_eq!(proxy.saves.load(Ordering::SeqCst), 1, "no second save");
        assert_eq!(get(&mut conn, &token_key).await.unwrap(), unreadable);
    }
}
