//! tower-sessions' expectations of a store, held against the adapter on every engine:
//! create/load/save/delete, expiry, an id collision on create (sequential and racing),
//! the JSON data model, the size limits, a save after a concurrent delete, and
//! tower-sessions' own `Session` (insert, save, reload, `cycle_id`, `flush`) on top.
//!
//! Each engine is one test running every case in its own namespace, cleaned up after.
//! Servers come from `source target/test-servers.env` (see `scripts/test`).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Engine};
use serde_json::json;
use session_tower_sessions::tower_sessions_core::session::{Id, Record};
use session_tower_sessions::tower_sessions_core::session_store::Error as StoreError;
use session_tower_sessions::tower_sessions_core::{ExpiredDeletion, Session, SessionStore};
use session_tower_sessions::{DeletedSession, TowerSessionsStore};
use time::OffsetDateTime;

/// `now + secs`, at a whole millisecond (what the stores keep), so records compare equal.
fn deadline(secs: i64) -> OffsetDateTime {
    let t = OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let nanos = t.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1_000_000))
        .expect("in range")
}

fn record(data: serde_json::Value, secs: i64) -> Record {
    let serde_json::Value::Object(map) = data else {
        panic!("data must be an object")
    };
    Record {
        id: Id::default(),
        data: map.into_iter().collect(),
        expiry_date: deadline(secs),
    }
}

async fn create_then_load_returns_the_record(store: &TowerSessionsStore) {
    let mut r = record(json!({"user": 7, "name": "ada"}), 600);
    let id = r.id;
    store.create(&mut r).await.expect("create");
    assert_eq!(r.id, id, "no collision: the id stays");
    assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
    store.delete(&r.id).await.expect("delete");
}

async fn load_of_an_unknown_id_is_none(store: &TowerSessionsStore) {
    assert_eq!(store.load(&Id::default()).await.expect("load"), None);
    assert_eq!(store.load(&Id(0)).await.expect("load"), None);
    assert_eq!(store.load(&Id(-1)).await.expect("load"), None);
}

async fn save_replaces_data_and_expiry(store: &TowerSessionsStore) {
    let mut r = record(json!({"a": 1, "b": 2}), 600);
    store.create(&mut r).await.expect("create");
    r.data.remove("a");
    r.data.insert("c".into(), json!([1, 2, 3]));
    r.expiry_date = deadline(1200);
    store.save(&r).await.expect("save");
    let loaded = store.load(&r.id).await.expect("load").expect("present");
    assert_eq!(loaded, r);
    assert!(!loaded.data.contains_key("a"));
    store.delete(&r.id).await.expect("delete");
}

async fn delete_removes_and_is_idempotent(store: &TowerSessionsStore) {
    let mut r = record(json!({"k": "v"}), 600);
    store.create(&mut r).await.expect("create");
    store.delete(&r.id).await.expect("delete");
    assert_eq!(store.load(&r.id).await.expect("load"), None);
    store.delete(&r.id).await.expect("second delete is fine");
    store
        .delete(&Id::default())
        .await
        .expect("deleting an unknown id is fine");
}

async fn a_deleted_session_is_never_saved_back(backend: &Backend) {
    let store = &backend.store;
    let mut r = record(json!({"user": 1}), 600);
    store.create(&mut r).await.expect("create");
    // A logout in another request deletes it while this one still holds the record.
    store.delete(&r.id).await.expect("delete");
    r.data.insert("cart".into(), json!(["book"]));
    match store.save(&r).await {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("deleted"), "{msg}"),
        other => panic!(
            "{}: save after delete must fail, got {other:?}",
            backend.name
        ),
    }
    assert_eq!(
        store.load(&r.id).await.expect("load"),
        None,
        "not resurrected"
    );

    // The lenient policy: the save succeeds and writes nothing.
    let discarding = store.clone().on_deleted(DeletedSession::Discard);
    discarding.save(&r).await.expect("discarded");
    assert_eq!(discarding.load(&r.id).await.expect("load"), None);

    // A save for an id that was never created writes nothing either (tower-sessions'
    // memory and SQL stores would insert it).
    let never = record(json!({"x": 1}), 600);
    assert!(store.save(&never).await.is_err());
    assert_eq!(store.load(&never.id).await.expect("load"), None);
}

async fn an_expired_session_is_not_loaded(backend: &Backend) {
    let store = &backend.store;
    let mut r = record(json!({"short": true}), 0);
    r.expiry_date = OffsetDateTime::now_utc() + time::Duration::milliseconds(1200);
    store.create(&mut r).await.expect("create");
    assert!(store.load(&r.id).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        store.load(&r.id).await.expect("load"),
        None,
        "{}: expired",
        backend.name
    );
    // A save of the expired session does not bring it back either.
    assert!(store.save(&r).await.is_err());
    assert_eq!(store.load(&r.id).await.expect("load"), None);

    // delete_expired sweeps it where the engine keeps expired records until a sweep.
    let inner = store.inner();
    let key = session_tower_sessions::id::key_for_id(r.id).expect("key");
    store.delete_expired().await.expect("delete_expired");
    if inner.capabilities().listing {
        let keys = inner.list(None, 100_000).await.expect("list");
        assert!(
            !keys.contains(&key),
            "{}: delete_expired left the expired record",
            backend.name
        );
    }
    // A live session survives the sweep.
    let mut live = record(json!({"live": 1}), 600);
    store.create(&mut live).await.expect("create");
    store.delete_expired().await.expect("delete_expired");
    assert!(store.load(&live.id).await.expect("load").is_some());
    store.delete(&live.id).await.expect("delete");
}

async fn a_taken_id_gets_a_new_one_and_overwrites_nothing(store: &TowerSessionsStore) {
    let mut first = record(json!({"owner": "first"}), 600);
    store.create(&mut first).await.expect("create");
    let mut second = record(json!({"owner": "second"}), 600);
    second.id = first.id;
    store.create(&mut second).await.expect("create re-rolls");
    assert_ne!(second.id, first.id, "the colliding create got a new id");
    assert_eq!(
        store.load(&first.id).await.expect("load"),
        Some(first.clone())
    );
    assert_eq!(
        store.load(&second.id).await.expect("load"),
        Some(second.clone())
    );
    store.delete(&first.id).await.expect("delete");
    store.delete(&second.id).await.expect("delete");
}

async fn racing_creates_of_one_id_all_land_apart(store: &TowerSessionsStore) {
    const N: usize = 8;
    let id = Id::default();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = record(json!({ "writer": i }), 600);
                r.id = id;
                store.create(&mut r).await.map(|()| r)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut kept_original = 0;
    for t in tasks {
        let r = t.await.expect("task").expect("create");
        kept_original += usize::from(r.id == id);
        assert!(ids.insert(r.id), "two creates ended on one id");
        // Each writer reads back its own data: nobody overwrote anybody.
        assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
    }
    assert_eq!(kept_original, 1, "exactly one create won the contested id");
    for id in ids {
        store.delete(&id).await.expect("delete");
    }
}

async fn the_json_data_model_round_trips(store: &TowerSessionsStore) {
    let mut r = record(
        json!({
            "null": null,
            "bool": true,
            "u64": u64::MAX,
            "i64": i64::MIN,
            "float": 0.1,
            "text": "déjà vu \u{1F600} \"quoted\" \\ \n",
            "": "empty key",
            "clé": "non-ASCII key",
            "list": [1, "two", [3.5], {"four": null}],
            "nested": {"a": {"b": {"c": [true, false]}}}
        }),
        600,
    );
    store.create(&mut r).await.expect("create");
    assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
    store.delete(&r.id).await.expect("delete");
}

async fn sub_millisecond_deadlines_round_down(store: &TowerSessionsStore) {
    let mut r = record(json!({"t": 1}), 600);
    r.expiry_date += time::Duration::nanoseconds(999_999);
    store.create(&mut r).await.expect("create");
    let loaded = store.load(&r.id).await.expect("load").expect("present");
    let diff = r.expiry_date - loaded.expiry_date;
    assert!(
        diff >= time::Duration::ZERO && diff < time::Duration::milliseconds(1),
        "{diff}"
    );
    store.delete(&r.id).await.expect("delete");
}

async fn limits_are_encode_errors_and_write_nothing(backend: &Backend) {
    // This backend was built with max_keys = 50 and max_encoded_size = 65536.
    let store = &backend.store;
    let many: serde_json::Map<String, serde_json::Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    let mut r = record(serde_json::Value::Object(many), 600);
    assert!(matches!(
        store.create(&mut r).await,
        Err(StoreError::Encode(msg)) if msg.contains("max_keys")
    ));
    assert_eq!(store.load(&r.id).await.expect("load"), None);

    let mut big = record(json!({"blob": "x".repeat(70_000)}), 600);
    assert!(
        matches!(store.create(&mut big).await, Err(StoreError::Encode(_))),
        "{}: an oversized record must be an encode error",
        backend.name
    );
    assert_eq!(store.load(&big.id).await.expect("load"), None);

    // A save that grows an existing session past the limit leaves it as it was.
    let mut ok = record(json!({"small": 1}), 600);
    store.create(&mut ok).await.expect("create");
    let mut grown = ok.clone();
    grown.data.insert("blob".into(), json!("y".repeat(70_000)));
    assert!(matches!(
        store.save(&grown).await,
        Err(StoreError::Encode(_))
    ));
    assert_eq!(store.load(&ok.id).await.expect("load"), Some(ok.clone()));
    store.delete(&ok.id).await.expect("delete");
}

async fn tower_sessions_session_works_on_top(store: &TowerSessionsStore) {
    let store = Arc::new(store.clone());
    let session = Session::new(None, store.clone(), None);
    session.insert("user_id", 42u64).await.expect("insert");
    session.save().await.expect("save creates");
    let id = session.id().expect("an id after save");

    let again = Session::new(Some(id), store.clone(), None);
    assert_eq!(again.get::<u64>("user_id").await.expect("get"), Some(42));
    again.insert("cart", vec!["book"]).await.expect("insert");
    again.save().await.expect("save updates");

    // cycle_id: a new id, the data kept, the old id gone.
    again.cycle_id().await.expect("cycle");
    again.save().await.expect("save after cycle");
    let cycled = again.id().expect("id");
    assert_ne!(cycled, id);
    assert_eq!(store.load(&id).await.expect("load"), None);
    let third = Session::new(Some(cycled), store.clone(), None);
    assert_eq!(
        third.get::<Vec<String>>("cart").await.expect("get"),
        Some(vec!["book".to_owned()])
    );

    // flush: gone from the store.
    third.flush().await.expect("flush");
    assert_eq!(store.load(&cycled).await.expect("load"), None);
}

async fn run(engine: Engine) {
    let backend = Backend::new(engine, "").await;
    let store = &backend.store;
    create_then_load_returns_the_record(store).await;
    load_of_an_unknown_id_is_none(store).await;
    save_replaces_data_and_expiry(store).await;
    delete_removes_and_is_idempotent(store).await;
    a_deleted_session_is_never_saved_back(&backend).await;
    a_taken_id_gets_a_new_one_and_overwrites_nothing(store).await;
    racing_creates_of_one_id_all_land_apart(store).await;
    the_json_data_model_round_trips(store).await;
    sub_millisecond_deadlines_round_down(store).await;
    tower_sessions_session_works_on_top(store).await;
    an_expired_session_is_not_loaded(&backend).await;
    // Every case removed what it made; what remains would be a leak.
    if store.inner().capabilities().listing {
        let left = store.inner().count().await.expect("count");
        assert_eq!(left, 0, "{}: records left behind", backend.name);
    }
    backend.cleanup().await;

    let limited = Backend::new(engine, "max_keys = 50\nmax_encoded_size = 65536").await;
    limits_are_encode_errors_and_write_nothing(&limited).await;
    limited.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file() {
    run(Engine::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    run(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    run(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb() {
    run(Engine::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    run(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    run(Engine::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached() {
    run(Engine::Memcached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db() {
    run(Engine::CachedDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    run(Engine::Memory).await;
}

#[tokio::test]
async fn a_bad_configuration_is_a_typed_error_before_anything_connects() {
    let registry = common::registry();
    let typo = session_core::Config::from_toml("engine = \"file\"\n[file]\npaht = \"/tmp/x\"\n");
    let err = TowerSessionsStore::from_config(&typo, &registry)
        .await
        .expect_err("unknown key");
    assert!(err.to_string().contains("paht"), "{err}");
    let unknown = session_core::Config::from_toml("engine = \"nope\"\n");
    let err = TowerSessionsStore::from_config(&unknown, &registry)
        .await
        .expect_err("unknown engine");
    assert!(
        err.to_string().contains("file"),
        "lists the known engines: {err}"
    );
}
