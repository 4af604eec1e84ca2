//! The `memory` engine at its bound, as an application meets it: the store built from
//! configuration through the engine registry, sessions used through `Session` handles.
//!
//! - A flood of one-request visitors does not log out the users who are using their
//!   sessions (scan-resistant eviction); a visitor whose session was dropped gets a
//!   fresh, empty session on the next request, without an error.
//! - The bound holds under concurrent inserts.
//! - Expired sessions are never loaded; the app's background cleanup frees them at their
//!   own deadline, moved by touch; at the bound they go before the sessions in use.

use std::sync::Arc;
use std::time::Duration;

use session_core::cleanup::{Cleanup, CleanupOptions};
use session_core::{
    Config, EngineRegistry, Record, Session, SessionData, SessionSettings, SessionStore, Timestamp,
};

async fn memory_store(max_entries: usize) -> Arc<dyn SessionStore> {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    registry
        .build(&Config::from_toml(&format!(
            "engine = \"memory\"\n[memory]\nmax_entries = {max_entries}\n"
        )))
        .await
        .expect("memory engine from configuration")
}

/// One request: the handler reads `key` from the session the cookie names, and saves
/// whatever it changed. Returns the session's key afterwards (the cookie sent back).
async fn request(
    store: &Arc<dyn SessionStore>,
    settings: &Arc<SessionSettings>,
    cookie: Option<session_core::SessionKey>,
    write: Option<(&str, &str)>,
) -> (Option<String>, Option<session_core::SessionKey>) {
    let s = Session::new(store.clone(), settings.clone(), cookie);
    let read = s.get::<String>("user").await.expect("read the session");
    if let Some((k, v)) = write {
        s.insert(k, v).await.expect("write the session");
    }
    s.save().await.expect("save");
    (read, s.key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_request_visitors_leaves_logged_in_users_logged_in() {
    const BOUND: usize = 500;
    const USERS: usize = 20;
    const VISITORS: usize = 2_000;
    let store = memory_store(BOUND).await;
    let settings = Arc::new(SessionSettings::default());

    // The site is busy up to its bound: earlier visitors, then 20 users log in and use
    // the site for a while.
    for i in 0..BOUND - USERS {
        request(&store, &settings, None, Some(("visit", &i.to_string()))).await;
    }
    let mut users = Vec::new();
    for u in 0..USERS {
        let (_, key) = request(&store, &settings, None, Some(("user", &format!("u{u}")))).await;
        users.push(key.expect("a logged-in user has a session"));
    }
    for _ in 0..5 {
        for k in &users {
            let (who, _) = request(&store, &settings, Some(k.clone()), None).await;
            assert!(who.is_some(), "a user was logged out before the flood");
        }
    }

    // The flood: 2,000 visitors who each make one request that stores something,
    // while the users keep browsing (each makes a request every 50 visitors).
    let mut visitors = Vec::new();
    for v in 0..VISITORS {
        let (_, key) = request(&store, &settings, None, Some(("visit", &v.to_string()))).await;
        visitors.push(key.expect("a visitor's session was saved"));
        if v % 50 == 49 {
            for k in &users {
                request(&store, &settings, Some(k.clone()), None).await;
            }
        }
    }

    let mut logged_in = 0;
    for (u, k) in users.iter().enumerate() {
        let (who, key) = request(&store, &settings, Some(k.clone()), None).await;
        if who.as_deref() == Some(format!("u{u}").as_str()) {
            logged_in += 1;
            assert_eq!(key.as_ref(), Some(k), "a logged-in user's key changed");
        }
    }
    println!("after the flood: {logged_in} of {USERS} users logged in");
    assert!(
        logged_in >= 18,
        "only {logged_in} of {USERS} users are still logged in after the flood"
    );

    // The store stayed within its bound, so most visitors' sessions were dropped; the
    // next request of such a visitor is a fresh, empty session, not an error.
    let count = store.count().await.expect("count");
    assert!(
        count <= BOUND as u64,
        "{count} sessions held, bound {BOUND}"
    );
    let mut dropped = 0;
    for k in &visitors {
        let s = Session::new(store.clone(), settings.clone(), Some(k.clone()));
        if s.load().await.expect("load a dropped session").is_empty() {
            assert!(s.key().is_none(), "a dropped session kept its key");
            dropped += 1;
        }
    }
    println!("{dropped} of {VISITORS} visitors' sessions dropped, {count} sessions held");
    assert!(
        dropped >= VISITORS - BOUND,
        "{dropped} of {VISITORS} visitors' sessions dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_after_concurrent_inserts() {
    const BOUND: usize = 1_000;
    const TASKS: usize = 8;
    const PER_TASK: usize = 2_500;
    let store = memory_store(BOUND).await;
    let record = Record::with_ttl(SessionData::new(), 600);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            let record = record.clone();
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    store.create(&record).await.expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let count = store.count().await.expect("count");
    println!(
        "{count} sessions after {} concurrent inserts, bound {BOUND}",
        TASKS * PER_TASK
    );
    assert!(
        count <= BOUND as u64,
        "{count} sessions after {} concurrent inserts, bound {BOUND}",
        TASKS * PER_TASK
    );
    assert!(count >= BOUND as u64 / 2, "only {count} sessions kept");
    let listed = store.list(None, usize::MAX).await.expect("list").len();
    assert!(listed <= BOUND, "{listed} sessions listed, bound {BOUND}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_cleanup_frees_sessions_at_their_own_deadline() {
    let store = memory_store(1_000).await;
    assert!(!store.capabilities().native_ttl);
    let cleanup = Cleanup::new(
        store.clone(),
        CleanupOptions::every(Duration::from_millis(100)).jitter(Duration::ZERO),
    )
    .spawn();
    let soon = |ms: i64| {
        let mut r = Record::with_ttl(SessionData::new(), 1);
        r.expires_at = Timestamp::from_unix_millis(Timestamp::now().as_unix_millis() + ms);
        r
    };
    let short: Vec<_> = create_n(&store, &soon(300), 10).await;
    let moved = store.create(&soon(300)).await.expect("create");
    store
        .touch(&moved, Timestamp::now().add_secs(600))
        .await
        .expect("touch");
    let long = store
        .create(&Record::with_ttl(SessionData::new(), 600))
        .await
        .expect("create");
    assert_eq!(store.count().await.expect("count"), 12);

    tokio::time::sleep(Duration::from_millis(400)).await;
    for k in &short {
        assert!(
            store.load(k).await.expect("load").is_none(),
            "expired session loaded"
        );
    }
    // The app's cleanup task sweeps them; nobody else calls clear_expired.
    let mut count = store.count().await.expect("count");
    for _ in 0..50 {
        if count == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        count = store.count().await.expect("count");
    }
    cleanup.stop().await;
    assert_eq!(
        count, 2,
        "expired sessions still held 5 s past their deadline under a 100 ms cleanup"
    );
    assert!(
        store.load(&moved).await.expect("load").is_some(),
        "touch did not move the deadline"
    );
    assert!(store.load(&long).await.expect("load").is_some());
    assert_eq!(store.clear_expired().await.expect("clear_expired"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_bound_expired_sessions_go_before_sessions_in_use() {
    // No cleanup runs: the bound alone makes room. Users who come back keep their
    // sessions while the sessions of visitors who left (expired, never read again)
    // are the ones evicted.
    const BOUND: usize = 200;
    let store = memory_store(BOUND).await;
    let settings = Arc::new(SessionSettings::default());
    let mut users = Vec::new();
    for u in 0..20 {
        let (_, key) = request(&store, &settings, None, Some(("user", &format!("u{u}")))).await;
        users.push(key.expect("a user's session"));
    }
    for _ in 0..3 {
        for k in &users {
            let (who, _) = request(&store, &settings, Some(k.clone()), None).await;
            assert!(
                who.is_some(),
                "a user was logged out before the store filled"
            );
        }
    }
    // Visitors who left: their sessions expired and are never read again. They fill the
    // store (each shard holds its share of the bound).
    let gone = {
        let mut r = Record::with_ttl(SessionData::new(), 1);
        r.expires_at = Timestamp::from_unix_millis(Timestamp::now().as_unix_millis() - 1);
        r
    };
    create_n(&store, &gone, BOUND).await;
    assert!(store.count().await.expect("count") <= BOUND as u64);
    // New visitors arrive.
    for v in 0..BOUND {
        request(&store, &settings, None, Some(("visit", &v.to_string()))).await;
    }
    let mut logged_in = 0;
    for k in &users {
        let (who, _) = request(&store, &settings, Some(k.clone()), None).await;
        logged_in += usize::from(who.is_some());
    }
    assert_eq!(
        logged_in,
        users.len(),
        "users were evicted before expired sessions"
    );
    assert!(store.count().await.expect("count") <= BOUND as u64);
}

async fn create_n(
    store: &Arc<dyn SessionStore>,
    record: &Record,
    n: usize,
) -> Vec<session_core::SessionKey> {
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(store.create(record).await.expect("create"));
    }
    keys
}
