//! Store keys never hand a token to the wrong configuration or the wrong
//! user, a key that replaces an older one takes over what was stored under
//! the older one, and a refused refresh token reads the store before the
//! refresh gives up. Caches share a `MemoryStore` as replicas share Redis.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_bearer::oauth::{
    ClientAuth, ClientCredentialsGrant, RefreshTokenGrant, TokenEndpoint, TokenEndpointBuilder,
};
use tower_bearer::store::{MemoryStore, StoreKey, StoredToken, TokenStore};
use tower_bearer::{Token, TokenCache, TokenSource, source};

/// A source that counts its calls and issues `tok-1`, `tok-2`, … for an
/// hour.
fn counting(requests: &Arc<AtomicUsize>) -> impl TokenSource + use<> {
    let requests = requests.clone();
    source::from_fn(move |_previous| {
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("tok-{n}")).with_expires_in(Duration::from_secs(3600))) }
    })
}

/// An endpoint that is never called: only its key matters here.
fn endpoint(configure: impl FnOnce(TokenEndpointBuilder) -> TokenEndpointBuilder) -> TokenEndpoint {
    configure(TokenEndpoint::builder(
        "https://idp.example/token",
        ClientAuth::basic("app", "s3cret"),
    ))
    .build()
    .unwrap()
}

fn stored(value: &str) -> StoredToken {
    StoredToken::from_token(&Token::new(value).with_expires_in(Duration::from_secs(3600)))
}

#[tokio::test(start_paused = true)]
async fn b5_a_token_stored_under_the_key_a_key_replaces_is_taken_over_without_a_request() {
    // A client credentials configuration whose key changed with the key
    // scheme: its token (stored by an earlier version) is found under the
    // previous key.
    let endpoint = endpoint(|b| b.scope("read write").audience("api"));
    let key = StoredKeyPair::of(StoreKey::for_endpoint(&endpoint));
    let store = MemoryStore::new();
    store
        .save(&key.previous, &stored("from-the-old-version"))
        .await
        .unwrap();

    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests))
        .store(store.clone(), key.current.clone())
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();

    assert_eq!(token.access_token().secret(), "from-the-old-version");
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    // Saved under the new key at once; the old entry stays for replicas
    // that still run the old version.
    let saved = store.get(&key.current).expect("saved under the new key");
    assert_eq!(saved.access_token().secret(), "from-the-old-version");
    assert!(store.get(&key.previous).is_some());

    // A second cache (a restarted replica) finds it under the new key.
    let again = TokenCache::builder(counting(&requests))
        .store(store.clone(), key.current)
        .build()
        .unwrap();
    assert_eq!(
        again.token().await.unwrap().access_token().secret(),
        "from-the-old-version"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

/// A key of the current scheme and the key it replaces.
struct StoredKeyPair {
    current: StoreKey,
    previous: StoreKey,
}

impl StoredKeyPair {
    fn of(current: StoreKey) -> StoredKeyPair {
        let previous = current.previous().expect("a previous key").clone();
        assert_ne!(previous, current);
        StoredKeyPair { current, previous }
    }
}

#[tokio::test(start_paused = true)]
async fn b5_a_key_of_your_own_can_replace_an_older_one_of_yours() {
    let old = StoreKey::new(["my-api"]);
    let new = StoreKey::new(["my-api", "v2"]).migrating_from(old.clone());
    let store = MemoryStore::new();
    store.save(&old, &stored("kept")).await.unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests))
        .store(store.clone(), new.clone())
        .build()
        .unwrap();
    assert_eq!(cache.token().await.unwrap().access_token().secret(), "kept");
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    assert!(store.get(&new).is_some());
}

#[tokio::test(start_paused = true)]
async fn configurations_that_send_different_requests_never_share_a_stored_token() {
    // Each pair shared one key in the first scheme.
    let pairs = [
        (
            endpoint(|b| b.param("tenant", "blue=1")),
            endpoint(|b| b.param("tenant=blue", "1")),
        ),
        (endpoint(|b| b.scope("")), endpoint(|b| b)),
    ];
    for (one, other) in pairs {
        let one_key = StoreKey::for_endpoint(&one);
        let other_key = StoreKey::for_endpoint(&other);
        assert_ne!(one_key, other_key);
        // One configuration's token is in the store; the other fetches its
        // own.
        let store = MemoryStore::new();
        store.save(&one_key, &stored("one's")).await.unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::builder(counting(&requests))
            .store(store.clone(), other_key)
            .build()
            .unwrap();
        assert_eq!(
            cache.token().await.unwrap().access_token().secret(),
            "tok-1"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        // And the ambiguous configuration does not read the first scheme's
        // key, which may be the other one's.
        if let Some(previous) = StoreKey::for_endpoint(&one).previous() {
            assert!(store.get(previous).is_none());
        }
    }
    // The grants' own keys are the same keys.
    let endpoint = endpoint(|b| b.scope("read"));
    assert_eq!(
        ClientCredentialsGrant::new(endpoint.clone()).store_key(),
        StoreKey::for_endpoint(&endpoint)
    );
}

#[tokio::test(start_paused = true)]
async fn two_users_of_one_refresh_token_client_never_share_a_stored_token() {
    let endpoint = endpoint(|b| b);
    let alice = RefreshTokenGrant::new(endpoint.clone(), "alice's refresh token").subject("alice");
    let bob = RefreshTokenGrant::new(endpoint.clone(), "bob's refresh token").subject("bob");
    assert_ne!(alice.store_key(), bob.store_key());
    // The same key as a password grant for that user, so the two can take
    // over from each other.
    assert_eq!(alice.store_key(), StoreKey::for_user(&endpoint, "alice"));

    let store = MemoryStore::new();
    store
        .save(&alice.store_key(), &stored("alice's token"))
        .await
        .unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::builder(counting(&requests))
        .store(store.clone(), bob.store_key())
        .build()
        .unwrap();
    assert_eq!(
        cache.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_refresh_token_grant_without_a_subject_cannot_key_a_store() {
    let grant = RefreshTokenGrant::new(endpoint(|b| b), "a refresh token");
    let error = TokenCache::builder(grant.clone())
        .store(MemoryStore::new(), grant.store_key())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("subject"), "{error}");
    // With a subject, it can.
    let grant = grant.subject("alice");
    TokenCache::builder(grant.clone())
        .store(MemoryStore::new(), grant.store_key())
        .build()
        .unwrap();
}

#[tokio::test]
async fn b5_a_refused_refresh_token_reads_the_store_before_giving_up() {
    // A sibling (a replica that refreshed without the lock, an older build)
    // rotated the refresh token this cache is about to send, and stored its
    // successor. The server refuses the spent one (`invalid_grant`); the
    // cache reads the store again and takes the sibling's token, instead of
    // failing (a refresh-token-only client has nothing to fall back to).
    use support::{TestServer, json};
    let store = MemoryStore::new();
    let key = StoreKey::new(["store_keys", "refused"]);
    let server = {
        let (store, key) = (store.clone(), key.clone());
        TestServer::start(move |_n, seen| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let form = seen.form();
                assert_eq!(form.get("refresh_token").map(String::as_str), Some("rt-1"));
                // Just before: the sibling's rotation, saved to the store.
                let sibling = Token::new("at-2")
                    .with_refresh_token("rt-2")
                    .with_expires_in(Duration::from_secs(3600));
                store
                    .save(&key, &StoredToken::from_token(&sibling))
                    .await
                    .unwrap();
                json(
                    http::StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "invalid_grant"}),
                )
            }
        })
        .await
    };
    let endpoint = TokenEndpoint::builder(server.url("/token"), ClientAuth::none("cli"))
        .build()
        .unwrap();
    // The store holds this cache's own token, expired: a refresh is due.
    let expired = Token::new("at-1")
        .with_refresh_token("rt-1")
        .with_expires_in(Duration::ZERO);
    store
        .save(&key, &StoredToken::from_token(&expired))
        .await
        .unwrap();
    let grant = RefreshTokenGrant::new(endpoint, "rt-1").subject("alice");
    let cache = TokenCache::builder(grant.clone())
        .store(store.clone(), key)
        .build()
        .unwrap();

    let token = cache.token().await.unwrap();

    assert_eq!(token.access_token().secret(), "at-2");
    assert_eq!(server.requests(), 1);
    assert_eq!(cache.stats().adopted_from_store, 1);
}

#[tokio::test]
async fn variants_share_their_tokens_through_the_store_under_keys_with_their_parameters() {
    // Two replicas, each a cache with variants, on one store: a variant's
    // token is stored under the root key with its parameters, taken by the
    // same variant of the other replica with no request of its own, and
    // never by the root or by a variant with other parameters.
    let tokens = support::token_server(3600).await;
    let grant = || {
        ClientCredentialsGrant::new(
            TokenEndpoint::builder(tokens.url("/token"), ClientAuth::basic("app", "s3cret"))
                .scope("api:read")
                .build()
                .unwrap(),
        )
    };
    let store = MemoryStore::new();
    let key = grant().store_key();
    let replica = || {
        TokenCache::builder(grant())
            .store(store.clone(), key.clone())
            .build()
            .unwrap()
    };
    let (one, two) = (replica(), replica());
    let admin = tower_bearer::TokenParams::new().scope("api:read api:admin");
    let billing = tower_bearer::TokenParams::new().resource("https://billing.example/");

    let first = one.variant(&admin).unwrap().token().await.unwrap();
    assert_eq!(first.access_token().secret(), "tok-1");
    let stored = store
        .get(&key.with_params(&admin))
        .expect("stored under the variant's key");
    assert_eq!(stored.access_token().secret(), "tok-1");
    assert!(store.get(&key).is_none(), "not under the root's key");

    let adopted = two.variant(&admin).unwrap();
    assert_eq!(
        adopted.token().await.unwrap().access_token().secret(),
        "tok-1"
    );
    assert_eq!(adopted.stats().token_requests, 0);
    assert_eq!(adopted.stats().adopted_from_store, 1);
    assert_eq!(tokens.requests(), 1);

    // Other parameters, and the root: tokens of their own.
    let other = two.variant(&billing).unwrap().token().await.unwrap();
    assert_eq!(other.access_token().secret(), "tok-2");
    assert_eq!(two.token().await.unwrap().access_token().secret(), "tok-3");
    assert_eq!(tokens.requests(), 3);
    assert_eq!(
        tokens.seen()[1].form()["resource"],
        "https://billing.example/"
    );
    assert_ne!(key.with_params(&admin), key.with_params(&billing));
}
