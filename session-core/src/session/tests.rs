//! Handle semantics against a minimal in-test store (the real stores run the full
//! conformance suite in `integration-tests`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::codec::Codec as _;
use crate::store::{Capabilities, Inserted};

/// Keeps decoded records, and answers the handle's loads ([`SessionStore::load_lazy`])
/// with the record encoded by the compact codec and decoded lazily, as the stores that
/// keep encoded records do; `planted` bytes (damaged records) take precedence.
#[derive(Debug, Default)]
struct MapStore {
    map: Mutex<HashMap<SessionKey, Record>>,
    planted: Mutex<HashMap<SessionKey, Vec<u8>>>,
    loads: AtomicUsize,
}

impl MapStore {
    fn live(&self, key: &SessionKey) -> Option<Record> {
        let m = self.map.lock().expect("lock");
        m.get(key)
            .filter(|r| !r.is_expired_at(Timestamp::now()))
            .cloned()
    }
}

#[async_trait]
impl SessionStore for MapStore {
    fn engine(&self) -> &str {
        "test-map"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().compare_and_set(true)
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let mut m = self.map.lock().expect("lock");
        if m.get(key)
            .is_some_and(|r| !r.is_expired_at(Timestamp::now()))
        {
            return Ok(Inserted::KeyTaken);
        }
        m.insert(key.clone(), record.clone());
        Ok(Inserted::Created)
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.live(key))
    }
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let codec = crate::BincodeCodec::default();
        let planted = self.planted.lock().expect("lock").get(key).cloned();
        let bytes = match (planted, self.live(key)) {
            (Some(b), _) => b,
            (None, Some(r)) => codec.encode(&r).map_err(Error::Codec)?,
            (None, None) => return Ok(None),
        };
        let lazy = codec.decode_lazy(bytes.into()).map_err(Error::Codec)?;
        assert!(
            !lazy.data.is_decoded(),
            "the compact codec leaves data encoded"
        );
        Ok(Some(lazy))
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let mut m = self.map.lock().expect("lock");
        let Some(cur) = m.get(key).filter(|r| !r.is_expired_at(Timestamp::now())) else {
            return Err(Error::NotFound);
        };
        if let Some(e) = expected.filter(|e| *e != cur.version) {
            return Err(Error::Conflict {
                expected: e,
                found: cur.version,
            });
        }
        let v = cur.version + 1;
        let mut r = record.clone();
        r.version = v;
        m.insert(key.clone(), r);
        Ok(v)
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.map.lock().expect("lock").remove(key).is_some())
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let mut m = self.map.lock().expect("lock");
        match m.get_mut(key) {
            Some(r) if !r.is_expired_at(Timestamp::now()) => {
                r.expires_at = expires_at;
                Ok(())
            }
            _ => Err(Error::NotFound),
        }
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.live(key).is_some())
    }
    async fn clear_expired(&self) -> Result<u64> {
        let mut m = self.map.lock().expect("lock");
        let before = m.len();
        m.retain(|_, r| !r.is_expired_at(Timestamp::now()));
        Ok((before - m.len()) as u64)
    }
}

fn setup() -> (Arc<MapStore>, Arc<SessionSettings>) {
    (
        Arc::new(MapStore::default()),
        Arc::new(SessionSettings::default()),
    )
}

fn session(
    store: &Arc<MapStore>,
    settings: &Arc<SessionSettings>,
    key: Option<SessionKey>,
) -> Session {
    Session::new(store.clone(), settings.clone(), key)
}

#[tokio::test]
async fn new_session_has_clean_flags_and_is_lazy() {
    let (store, settings) = setup();
    let key = SessionKey::generate().expect("rng");
    let s = session(&store, &settings, Some(key));
    assert!(!s.accessed());
    assert!(!s.modified());
    assert!(s.untouched());
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        0,
        "nothing loaded before first touch"
    );
    assert_eq!(s.get::<String>("cat").await.expect("get"), None);
    assert!(s.accessed());
    assert!(!s.modified());
    assert!(!s.untouched());
    assert_eq!(store.loads.load(Ordering::SeqCst), 1);
    let _ = s.get_value("dog").await.expect("get");
    assert_eq!(store.loads.load(Ordering::SeqCst), 1, "loaded once");
}

#[tokio::test]
async fn read_operations_only_set_accessed() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    assert!(!s.contains_key("x").await.expect("in"));
    assert!(s.keys().await.expect("keys").is_empty());
    assert!(s.values().await.expect("values").is_empty());
    assert!(s.accessed() && !s.modified());
    assert_eq!(s.pop::<String>("missing").await.expect("pop"), None);
    assert!(!s.modified(), "pop of a missing key does not modify");
    assert_eq!(s.len().await.expect("len"), 0);
}

#[tokio::test]
async fn writes_set_modified_and_pop_returns() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("cat", "meow").await.expect("insert");
    assert!(s.modified() && s.accessed());
    assert_eq!(
        s.pop::<String>("cat").await.expect("pop").as_deref(),
        Some("meow")
    );
    assert_eq!(s.get::<String>("cat").await.expect("get"), None);
    assert_eq!(
        s.setdefault("foo", "bar".to_string()).await.expect("sd"),
        "bar"
    );
    assert_eq!(
        s.setdefault("foo", "baz".to_string()).await.expect("sd"),
        "bar"
    );
    let s2 = session(&store, &settings, None);
    s2.extend(SessionData::new()).await.expect("extend");
    assert!(s2.modified(), "update({{}}) still modifies");
}

#[tokio::test]
async fn setdefault_on_existing_does_not_modify() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("foo", "bar").await.expect("insert");
    s.save().await.expect("save");
    let s2 = session(&store, &settings, s.key());
    assert_eq!(
        s2.setdefault("foo", "baz".to_string()).await.expect("sd"),
        "bar"
    );
    assert!(!s2.modified());
}

#[tokio::test]
async fn save_creates_then_updates_and_never_adopts_unknown_keys() {
    let (store, settings) = setup();
    let unknown = SessionKey::generate().expect("rng");
    let s = session(&store, &settings, Some(unknown.clone()));
    s.insert("a", &1).await.expect("insert");
    assert_eq!(s.key(), None, "unknown key dropped at load");
    s.save().await.expect("save");
    let k = s.key().expect("minted");
    assert_ne!(k, unknown);
    assert!(!store.exists(&unknown).await.expect("exists"));
    assert_eq!(s.version(), Some(1));
    s.insert("b", &2).await.expect("insert");
    s.save().await.expect("save");
    assert_eq!(s.version(), Some(2));
    let again = session(&store, &settings, Some(k));
    assert_eq!(again.get::<i32>("b").await.expect("get"), Some(2));
}

#[tokio::test]
async fn clear_without_load_then_save_keeps_the_key_and_empties() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("x", &1).await.expect("insert");
    s.save().await.expect("save");
    let k = s.key().expect("key");
    let s2 = session(&store, &settings, Some(k.clone()));
    s2.clear();
    assert_eq!(store.loads.load(Ordering::SeqCst), 0, "clear does not load");
    assert!(s2.accessed() && s2.modified());
    s2.save().await.expect("save");
    assert_eq!(s2.key(), Some(k.clone()));
    let rec = store.load(&k).await.expect("load").expect("exists");
    assert!(rec.data.is_empty());
}

#[tokio::test]
async fn flush_deletes_and_drops_the_key() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("x", &1).await.expect("insert");
    s.save().await.expect("save");
    let k = s.key().expect("key");
    s.flush().await.expect("flush");
    assert_eq!(s.key(), None);
    assert!(s.is_empty());
    assert!(s.accessed() && s.modified());
    assert!(!store.exists(&k).await.expect("exists"));
}

#[tokio::test]
async fn cycle_key_keeps_data_and_kills_the_old_key() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("user", &42).await.expect("insert");
    s.save().await.expect("save");
    let old = s.key().expect("key");
    // A fresh handle that has loaded nothing yet.
    let s2 = session(&store, &settings, Some(old.clone()));
    s2.cycle_key().await.expect("cycle");
    let new = s2.key().expect("new key");
    assert_ne!(new, old);
    assert!(!store.exists(&old).await.expect("exists"));
    assert_eq!(s2.get::<i32>("user").await.expect("get"), Some(42));
    let s3 = session(&store, &settings, Some(new));
    assert_eq!(s3.get::<i32>("user").await.expect("get"), Some(42));
}

#[tokio::test]
async fn save_after_concurrent_delete_does_not_resurrect() {
    let (store, settings) = setup();
    let s1 = session(&store, &settings, None);
    s1.insert("x", &1).await.expect("insert");
    s1.save().await.expect("save");
    let k = s1.key().expect("key");
    let s2 = session(&store, &settings, Some(k.clone()));
    s2.flush().await.expect("logout");
    s1.insert("y", &2).await.expect("insert");
    assert!(matches!(s1.save().await, Err(Error::NotFound)));
    assert!(!store.exists(&k).await.expect("exists"));
}

#[tokio::test]
async fn conflicting_saves_reapply_their_own_changes() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("base", &0).await.expect("insert");
    s.save().await.expect("save");
    let k = s.key().expect("key");
    let a = session(&store, &settings, Some(k.clone()));
    let b = session(&store, &settings, Some(k.clone()));
    a.insert("a", &1).await.expect("a");
    b.insert("b", &2).await.expect("b");
    b.update("n", |n: Option<i64>| n.unwrap_or(0) + 1)
        .await
        .expect("b n");
    a.update("n", |n: Option<i64>| n.unwrap_or(0) + 1)
        .await
        .expect("a n");
    a.save().await.expect("a save");
    b.save().await.expect("b save after conflict");
    let rec = store.load(&k).await.expect("load").expect("exists");
    assert_eq!(rec.data.get("a"), Some(&json!(1)));
    assert_eq!(rec.data.get("b"), Some(&json!(2)));
    assert_eq!(rec.data.get("base"), Some(&json!(0)));
    assert_eq!(
        rec.data.get("n"),
        Some(&json!(2)),
        "both increments counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_increments_all_count() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("n", &0).await.expect("insert");
    s.save().await.expect("save");
    let k = s.key().expect("key");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let h = session(&store, &settings, Some(k.clone()));
        tasks.push(tokio::spawn(async move {
            h.update("n", |n: Option<i64>| n.unwrap_or(0) + 1).await?;
            h.insert(&format!("k{i}"), &i).await?;
            h.save().await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("save");
    }
    let rec = store.load(&k).await.expect("load").expect("exists");
    assert_eq!(rec.data.get("n"), Some(&json!(64)));
    assert_eq!(rec.data.len(), 65);
}

#[tokio::test]
async fn expiry_policies_flow_into_the_record() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    assert_eq!(s.expiry_age().await.expect("age"), 1_209_600);
    s.set_expiry(Expiry::seconds(0));
    assert!(s.expire_at_browser_close().await.expect("bc"));
    assert_eq!(s.expiry_age().await.expect("age"), 1_209_600);
    s.set_expiry(Expiry::seconds(10));
    let m = Timestamp::from_unix_millis(1_800_000_000_000);
    assert_eq!(s.expiry_age_at(m).await.expect("age"), 10);
    assert_eq!(s.expiry_date_at(m).await.expect("date"), m.add_secs(10));
    s.insert("x", &1).await.expect("insert");
    s.save().await.expect("save");
    let rec = store
        .load(&s.key().expect("k"))
        .await
        .expect("load")
        .expect("rec");
    assert_eq!(rec.expiry, Expiry::Idle(10));
    let left = Timestamp::now().secs_until(rec.expires_at);
    assert!((8..=10).contains(&left), "{left}");
    // A loaded session keeps the stored policy.
    let again = session(&store, &settings, s.key());
    assert_eq!(again.expiry().await.expect("expiry"), Expiry::Idle(10));
    again.set_expiry(Expiry::Default);
    assert_eq!(again.expiry_age().await.expect("age"), 1_209_600);
}

#[tokio::test]
async fn an_expired_session_loads_empty() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("x", &1).await.expect("insert");
    s.set_expiry(Expiry::At(Timestamp::now().add_secs(-10)));
    s.save().await.expect("save");
    let again = session(&store, &settings, s.key());
    assert_eq!(again.get::<i32>("x").await.expect("get"), None);
    assert_eq!(again.key(), None);
}

#[tokio::test]
async fn max_keys_is_enforced_with_a_typed_error() {
    let store = Arc::new(MapStore::default());
    let settings = Arc::new(SessionSettings {
        max_keys: 3,
        ..SessionSettings::default()
    });
    let s = session(&store, &settings, None);
    for i in 0..3 {
        s.insert(&format!("k{i}"), &i).await.expect("insert");
    }
    assert!(matches!(s.insert("k3", &3).await, Err(Error::Limit(_))));
    s.insert("k0", &10).await.expect("overwrite allowed");
    let more: SessionData = (5..7).map(|i| (format!("k{i}"), json!(i))).collect();
    assert!(matches!(s.extend(more).await, Err(Error::Limit(_))));
    assert!(matches!(
        s.update("k9", |v: Option<u64>| v.unwrap_or(0)).await,
        Err(Error::Limit(_))
    ));
    s.update("k1", |v: Option<u64>| v.unwrap_or(0) + 1)
        .await
        .expect("existing key");
    assert_eq!(s.len().await.expect("len"), 3);
}

#[tokio::test]
async fn typed_get_of_the_wrong_type_is_an_error_not_a_panic() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("n", "not a number").await.expect("insert");
    assert!(matches!(s.get::<i64>("n").await, Err(Error::Value { .. })));
    // A failed typed pop leaves the value where it was.
    let fresh = session(&store, &settings, None);
    fresh.insert("n", "text").await.expect("insert");
    fresh.save().await.expect("save");
    let again = session(&store, &settings, fresh.key());
    assert!(matches!(
        again.pop::<u64>("n").await,
        Err(Error::Value { .. })
    ));
    assert_eq!(
        again.get_value("n").await.expect("get"),
        Some(json!("text"))
    );
    assert!(!again.modified());
}

#[tokio::test]
async fn test_cookie_helpers() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    assert!(!s.test_cookie_worked().await.expect("tc"));
    s.set_test_cookie().await.expect("set");
    assert!(s.test_cookie_worked().await.expect("tc"));
    s.delete_test_cookie().await.expect("del");
    assert!(!s.contains_key(TEST_COOKIE_NAME).await.expect("in"));
}

#[tokio::test]
async fn malformed_cookie_means_no_session_and_no_io() {
    let (store, settings) = setup();
    for bad in [
        "",
        "short",
        "../../../../etc/passwd",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
    ] {
        let s = Session::from_cookie(store.clone(), settings.clone(), Some(bad));
        assert_eq!(s.key(), None);
        let _ = s.get_value("x").await.expect("get");
    }
    assert_eq!(store.loads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn is_empty_follows_django() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    assert!(s.is_empty());
    s.insert("x", &1).await.expect("insert");
    assert!(!s.is_empty());
    let keyed = session(
        &store,
        &settings,
        Some(SessionKey::generate().expect("rng")),
    );
    assert!(
        !keyed.is_empty(),
        "a key alone is not empty (and is_empty does not load)"
    );
    assert_eq!(store.loads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn touch_if_due_moves_the_deadline_once_per_interval() {
    let store = Arc::new(MapStore::default());
    let settings = Arc::new(SessionSettings {
        expiry: crate::ExpirySettings {
            default_age_secs: 600,
            ..Default::default()
        },
        ..SessionSettings::default()
    });
    let s = session(&store, &settings, None);
    s.insert("x", &1).await.expect("insert");
    s.save().await.expect("save");
    let k = s.key().expect("key");
    // Age the stored deadline by 120 s, as if the last save was two minutes ago.
    {
        let mut m = store.map.lock().expect("lock");
        let r = m.get_mut(&k).expect("rec");
        r.expires_at = r.expires_at.add_secs(-120);
    }
    let reader = session(&store, &settings, Some(k.clone()));
    let _ = reader.get_value("x").await.expect("read");
    let before = store.load(&k).await.expect("load").expect("rec");
    assert!(
        !reader
            .touch_if_due(Duration::from_secs(300))
            .await
            .expect("touch"),
        "not due yet"
    );
    assert!(
        reader
            .touch_if_due(Duration::from_secs(60))
            .await
            .expect("touch"),
        "due"
    );
    let after = store.load(&k).await.expect("load").expect("rec");
    assert!(after.expires_at > before.expires_at);
    assert_eq!(
        after.version, before.version,
        "touch does not bump the version"
    );
    assert_eq!(after.data, before.data);
    // Right after touching, it is not due again.
    assert!(
        !reader
            .touch_if_due(Duration::from_secs(60))
            .await
            .expect("touch")
    );
    // A modified session is saved, not touched.
    let writer = session(&store, &settings, Some(k));
    writer.insert("y", &2).await.expect("insert");
    assert!(!writer.touch_if_due(Duration::ZERO).await.expect("touch"));
}

fn stored(store: &MapStore, key: &SessionKey) -> Option<Record> {
    store.live(key)
}

#[tokio::test]
async fn login_cycles_the_key_and_binds_the_principal_outside_the_data() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.insert("cart", &json!(["apple"])).await.expect("insert");
    s.save().await.expect("save");
    let before = s.key().expect("key");
    s.login("alice", Some("h1")).await.expect("login");
    let after = s.key().expect("key");
    assert_ne!(before, after, "login cycles the key");
    assert!(stored(&store, &before).is_none(), "old record deleted");
    let r = stored(&store, &after).expect("new record");
    assert_eq!(r.principal(), Some("alice"));
    assert_eq!(r.meta.auth_hash.as_deref(), Some("h1"));
    assert!(r.meta.last_seen.is_some());
    assert_eq!(r.data.get("cart"), Some(&json!(["apple"])), "data kept");
    assert!(
        !r.data.keys().any(|k| k.starts_with('_')),
        "no framework keys in the data"
    );

    // A later request sees the principal, and a save keeps it.
    let again = session(&store, &settings, Some(after.clone()));
    assert_eq!(
        again.principal().await.expect("p").as_deref(),
        Some("alice")
    );
    again.insert("n", &1).await.expect("insert");
    again.save().await.expect("save");
    assert_eq!(
        stored(&store, &after).expect("rec").principal(),
        Some("alice")
    );
}

#[tokio::test]
async fn login_as_someone_else_empties_the_data_and_clear_signs_out() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.login("alice", None).await.expect("login");
    s.insert("secret", &"alice's").await.expect("insert");
    s.save().await.expect("save");
    s.login("bob", None).await.expect("login as bob");
    assert_eq!(s.get::<String>("secret").await.expect("get"), None);
    let r = stored(&store, &s.key().expect("key")).expect("rec");
    assert_eq!(r.principal(), Some("bob"));
    assert!(r.data.is_empty());

    let k = s.key().expect("key");
    let later = session(&store, &settings, Some(k.clone()));
    later.clear();
    later.insert("x", &1).await.expect("insert");
    later.save().await.expect("save");
    let r = stored(&store, &k).expect("rec");
    assert_eq!(r.principal(), None, "clear() signs out");
    assert!(r.meta.is_empty());
}

#[tokio::test]
async fn invalid_principals_are_refused_before_any_io() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    for p in ["", "a\nb", &"x".repeat(257)] {
        let err = s.login(p, None).await.expect_err("refused");
        assert!(matches!(err, Error::InvalidPrincipal { .. }), "{err}");
    }
    assert!(store.map.lock().expect("lock").is_empty());
    assert_eq!(store.loads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn user_index_calls_need_a_signed_in_session_and_an_index() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    assert!(matches!(
        s.user_sessions().await.expect_err("anonymous"),
        Error::NotSignedIn
    ));
    s.login("alice", None).await.expect("login");
    let err = s.end_other_sessions().await.expect_err("no index");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn a_changed_auth_hash_flushes_the_session_on_load() {
    use crate::users::auth_check_fn;
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.login("alice", Some("v1")).await.expect("login");
    s.insert("cart", &2).await.expect("insert");
    s.save().await.expect("save");
    let key = s.key().expect("key");

    let current = Arc::new(Mutex::new(Some("v1".to_owned())));
    let c = current.clone();
    let check = auth_check_fn(move |_p: String| {
        let v = c.lock().expect("lock").clone();
        async move { Ok(v) }
    });
    let same = Session::with_auth_check(
        store.clone(),
        settings.clone(),
        Some(key.clone()),
        Some(check.clone()),
    );
    assert_eq!(same.get::<i64>("cart").await.expect("get"), Some(2));
    assert!(!same.flushed());

    *current.lock().expect("lock") = Some("v2".to_owned());
    let changed = Session::with_auth_check(
        store.clone(),
        settings.clone(),
        Some(key.clone()),
        Some(check.clone()),
    );
    assert_eq!(changed.get::<i64>("cart").await.expect("get"), None);
    assert!(changed.flushed());
    assert_eq!(changed.key(), None);
    assert!(
        stored(&store, &key).is_none(),
        "the stale session is deleted"
    );

    // A user who no longer exists: the same.
    let s = session(&store, &settings, None);
    s.login("alice", Some("v2")).await.expect("login");
    let key = s.key().expect("key");
    *current.lock().expect("lock") = None;
    let gone = Session::with_auth_check(
        store.clone(),
        settings.clone(),
        Some(key.clone()),
        Some(check),
    );
    assert_eq!(gone.principal().await.expect("p"), None);
    assert!(stored(&store, &key).is_none());
}

#[tokio::test]
async fn a_signed_in_session_read_without_changes_records_last_seen_once_per_interval() {
    let (store, settings) = setup();
    let s = session(&store, &settings, None);
    s.login("alice", None).await.expect("login");
    let key = s.key().expect("key");
    let first = stored(&store, &key)
        .expect("rec")
        .meta
        .last_seen
        .expect("seen");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let read = session(&store, &settings, Some(key.clone()));
    let _ = read.get_value("x").await.expect("get");
    assert!(
        !read
            .touch_if_due(Duration::from_secs(60))
            .await
            .expect("touch"),
        "not due"
    );
    assert_eq!(
        stored(&store, &key).expect("rec").meta.last_seen,
        Some(first)
    );

    let read = session(&store, &settings, Some(key.clone()));
    let _ = read.get_value("x").await.expect("get");
    assert!(
        read.touch_if_due(Duration::from_millis(10))
            .await
            .expect("touch"),
        "due"
    );
    let r = stored(&store, &key).expect("rec");
    assert!(r.meta.last_seen.expect("seen") > first);
    assert_eq!(r.principal(), Some("alice"));
}

#[tokio::test]
async fn client_details_are_recorded_for_signed_in_sessions_only() {
    let (store, settings) = setup();
    let anon = session(&store, &settings, None);
    anon.set_client(Some("UA/1".into()), Some("127.0.0.1".into()));
    anon.insert("x", &1).await.expect("insert");
    anon.save().await.expect("save");
    assert!(
        stored(&store, &anon.key().expect("k"))
            .expect("rec")
            .meta
            .is_empty()
    );

    let s = session(&store, &settings, None);
    s.set_client(Some("UA/1".into()), Some("127.0.0.1".into()));
    s.login("alice", None).await.expect("login");
    let m = stored(&store, &s.key().expect("k")).expect("rec").meta;
    assert_eq!(m.user_agent.as_deref(), Some("UA/1"));
    assert_eq!(m.client_addr.as_deref(), Some("127.0.0.1"));
}

/// Plants, under a fresh key, a compact record of `a: "ok"` and `b`, whose value is
/// invalid UTF-8; returns the key and the bytes.
fn plant_damaged_second_value(store: &MapStore) -> (SessionKey, Vec<u8>) {
    let key = SessionKey::generate().expect("rng");
    let mut data = SessionData::new();
    data.insert("a".into(), json!("ok"));
    data.insert("b".into(), json!("x"));
    let mut bytes = crate::BincodeCodec::default()
        .encode(&Record::with_ttl(data, 600))
        .expect("encode");
    // The last value ("x", the value of "b") becomes invalid UTF-8.
    let last = bytes.len() - 1;
    assert_eq!(bytes[last], b'x');
    bytes[last] = 0xFF;
    store
        .planted
        .lock()
        .expect("lock")
        .insert(key.clone(), bytes.clone());
    (key, bytes)
}

#[tokio::test]
async fn a_read_decodes_one_value_and_a_damaged_one_starts_a_new_session() {
    let (store, settings) = setup();
    let (key, bytes) = plant_damaged_second_value(&store);

    let s = session(&store, &settings, Some(key.clone()));
    assert_eq!(s.get::<String>("a").await.expect("a"), Some("ok".into()));
    assert!(s.contains_key("a").await.expect("contains"));
    assert_eq!(
        s.key(),
        Some(key.clone()),
        "a sound value keeps the session"
    );
    assert!(s.loaded());

    assert_eq!(s.get::<String>("b").await.expect("b"), None);
    assert_eq!(s.key(), None, "a damaged value starts a new session");
    assert!(!s.loaded());
    assert!(s.load().await.expect("load").is_empty());
    s.insert("c", &1).await.expect("insert");
    s.save().await.expect("save");
    let new_key = s.key().expect("a new key");
    assert_ne!(new_key, key);
    assert_eq!(
        store.planted.lock().expect("lock").get(&key),
        Some(&bytes),
        "the damaged record is left as it was"
    );
    let fresh = store.live(&new_key).expect("saved");
    assert_eq!(Value::Object(fresh.data), json!({"c": 1}));
}

#[tokio::test]
async fn a_damaged_value_found_by_the_first_change_starts_a_new_session() {
    let (store, settings) = setup();
    let (key, _) = plant_damaged_second_value(&store);
    let s = session(&store, &settings, Some(key.clone()));
    assert_eq!(s.get::<String>("a").await.expect("a"), Some("ok".into()));
    // The insert decodes the whole map: the damage is found, the session starts new.
    s.insert("n", &2).await.expect("insert");
    assert_eq!(s.get::<String>("a").await.expect("a"), None);
    s.save().await.expect("save");
    let new_key = s.key().expect("a new key");
    assert_ne!(new_key, key);
    assert_eq!(
        Value::Object(store.live(&new_key).expect("saved").data),
        json!({"n": 2})
    );
}
