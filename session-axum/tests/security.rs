//! Security properties through the middleware, in process (tower `oneshot`, no sockets):
//! the defaults a configuration without a `[cookie]` section gets, session keys kept out
//! of logs and `Debug`, the size and key-count limits enforced on a real SQLite store,
//! and hashed keys plus encrypted records end to end (the cookie's key is nowhere in the
//! database).

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, Response, header};
use axum::routing::{get, post};
use backend_db::{DbConfig, DbStore};
use integration_tests::servers;
use session_axum::{Session, SessionError, SessionLayer};
use session_core::hashed::derive_key;
use session_core::key::KEY_LEN;
use session_core::{Config, EngineRegistry, SessionKey, SessionSettings, SessionStore};
use tower::ServiceExt;

type R<T> = Result<T, SessionError>;

async fn put_keys(session: Session, Path(n): Path<usize>) -> R<&'static str> {
    for i in 0..n {
        session.insert(&format!("k{i}"), &i).await?;
    }
    Ok("ok")
}

async fn put_blob(session: Session, Path(n): Path<usize>) -> R<&'static str> {
    session.insert("blob", &"x".repeat(n)).await?;
    Ok("ok")
}

async fn blob_len(session: Session) -> R<String> {
    Ok(session
        .get::<String>("blob")
        .await?
        .map_or(0, |b| b.len())
        .to_string())
}

async fn vanish(session: Session) -> R<&'static str> {
    session.insert("x", &1).await?;
    session.save().await?;
    if let Some(k) = session.key() {
        session.store().delete(&k).await?;
    }
    session.insert("x", &2).await?;
    Ok("ok")
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/keys/{n}", post(put_keys))
        .route("/blob/{n}", post(put_blob))
        .route("/blob", get(blob_len))
        .route("/vanish", post(vanish))
        .layer(layer)
}

async fn call(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("sessionid={c}"));
    }
    app.clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The value of a `sessionid=VALUE; ...` header.
fn value_of(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

async fn text(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn registry() -> EngineRegistry {
    let r = EngineRegistry::new();
    backend_cache::register(&r);
    backend_db::register(&r);
    session_axum::register(&r);
    r
}

/// A SQLite file in the temp directory, removed (with its journal files) on drop.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new() -> Self {
        TempDb(std::env::temp_dir().join(format!(
            "session-axum-security-{}.db",
            servers::unique_suffix()
        )))
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test]
async fn a_config_without_cookie_settings_gets_the_secure_defaults() {
    let layer = SessionLayer::from_config(&Config::from_toml(""), &registry())
        .await
        .expect("layer");
    let settings = SessionSettings::default();
    assert!(!settings.hash_keys && !settings.encryption.is_enabled());
    let app = app(layer);
    let res = call(&app, "POST", "/blob/3", None).await;
    assert_eq!(res.status(), 200);
    let sc = set_cookie(&res).expect("a new session sets its cookie");
    let attrs: Vec<&str> = sc.split("; ").collect();
    assert!(attrs.contains(&"Secure"), "{sc}");
    assert!(attrs.contains(&"HttpOnly"), "{sc}");
    assert!(attrs.contains(&"SameSite=Lax"), "{sc}");
    assert!(attrs.contains(&"Path=/"), "{sc}");
    assert!(!sc.contains("Domain="), "{sc}");
    let key = value_of(&sc);
    assert_eq!(key.len(), KEY_LEN);
    assert!(SessionKey::parse(&key).is_ok());
}

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn session_keys_and_signing_keys_never_reach_logs_or_debug() {
    const SIGNING: &str = "a-signing-key-of-at-least-32-bytes-long!";
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store: Arc<dyn SessionStore> = Arc::new(backend_cache::MemoryStore::new());
    let layer = SessionLayer::builder(store.clone())
        .signing_keys([SIGNING])
        .build()
        .expect("layer");
    assert!(
        !format!("{layer:?}").contains(SIGNING),
        "Debug shows a signing key"
    );
    let app = app(layer);

    // A session, then requests with its cookie, a tampered cookie, a stranger's key, and
    // a save that finds the session deleted meanwhile (logged as a refusal).
    let res = call(&app, "POST", "/blob/3", None).await;
    let cookie = value_of(&set_cookie(&res).expect("cookie"));
    let (key, _tag) = cookie.rsplit_once('.').expect("signed value");
    let key = SessionKey::parse(key).expect("key");
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(&cookie)).await).await,
        "3"
    );
    let tampered = format!("{}.{}", SessionKey::generate().expect("rng").as_str(), _tag);
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(&tampered)).await).await,
        "0"
    );
    let stranger = SessionKey::generate().expect("rng");
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(stranger.as_str())).await).await,
        "0"
    );
    let res = call(&app, "POST", "/vanish", Some(&cookie)).await;
    assert_eq!(res.status(), 400);
    let session = session_core::Session::new(
        store,
        Arc::new(SessionSettings::default()),
        Some(key.clone()),
    );
    assert!(!format!("{session:?}").contains(key.as_str()));

    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    // The refused save is logged, naming the session by its fingerprint.
    assert!(
        logs.contains(&key.fingerprint()),
        "the refusal was not logged with the fingerprint:\n{logs}"
    );
    for secret in [key.as_str(), stranger.as_str(), cookie.as_str(), SIGNING] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_through_the_middleware_on_sqlite() {
    let db = TempDb::new();
    let config = Config::from_toml("engine = \"db\"\nmax_keys = 5\nmax_encoded_size = 2048")
        .with("db.url", db.url());
    let layer = SessionLayer::builder_from_config(&config, &registry())
        .await
        .expect("builder")
        .secure(false)
        .build()
        .expect("layer");
    let store = layer.store().expect("a store").clone();
    let app = app(layer);

    // max_keys: five keys are fine, a sixth is refused (413) and nothing is stored.
    let res = call(&app, "POST", "/keys/5", None).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res).is_some());
    let res = call(&app, "POST", "/keys/6", None).await;
    assert_eq!(res.status(), 413);
    assert!(set_cookie(&res).is_none());
    assert_eq!(store.count().await.expect("count"), 1);

    // max_encoded_size: a session over 2 KiB is refused (413) and the stored one is
    // untouched.
    let res = call(&app, "POST", "/blob/100", None).await;
    let cookie = value_of(&set_cookie(&res).expect("cookie"));
    let res = call(&app, "POST", "/blob/4000", Some(&cookie)).await;
    assert_eq!(res.status(), 413);
    assert!(set_cookie(&res).is_none());
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(&cookie)).await).await,
        "100"
    );
    let res = call(&app, "POST", "/blob/4000", None).await;
    assert_eq!(res.status(), 413, "a new oversized session is refused too");
    assert_eq!(store.count().await.expect("count"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_keys_and_encryption_end_to_end() {
    const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let db = TempDb::new();
    let config = Config::from_toml(&format!(
        "engine = \"db\"\nhash_keys = true\n[encryption]\nkeys = [\"{KEY}\"]\n"
    ))
    .with("db.url", db.url());
    let layer = SessionLayer::builder_from_config(&config, &registry())
        .await
        .expect("builder")
        .secure(false)
        .build()
        .expect("layer");
    let app = app(layer);
    let res = call(&app, "POST", "/blob/42", None).await;
    assert_eq!(res.status(), 200);
    let cookie = value_of(&set_cookie(&res).expect("cookie"));
    let key = SessionKey::parse(&cookie).expect("the cookie is the session key");
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(&cookie)).await).await,
        "42"
    );

    // The database, read without the wrapper: only the derived key, sealed bytes.
    let plain = DbStore::connect(&DbConfig::new(db.url()))
        .await
        .expect("plain store");
    let listed = plain.list(None, 10).await.expect("list");
    assert_eq!(listed, vec![derive_key(&key)]);
    let raw = plain.raw().expect("db keeps bytes");
    let bytes = raw
        .get_raw(&derive_key(&key))
        .await
        .expect("get_raw")
        .expect("stored");
    assert_eq!(bytes[0], 0xE5, "sealed record");
    assert!(!String::from_utf8_lossy(&bytes).contains("xxxxxxxx"));
    assert!(raw.get_raw(&key).await.expect("get_raw").is_none());
    // Replaying the listed key as a cookie finds nothing.
    let replay = listed[0].as_str().to_owned();
    assert_eq!(
        text(call(&app, "GET", "/blob", Some(&replay)).await).await,
        "0"
    );
}
