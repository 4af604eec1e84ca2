//! A real axum app behind the session layer, served on 127.0.0.1:0, and the helpers the
//! HTTP tests share.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use reqwest::header::{HeaderMap, SET_COOKIE, VARY};
use session_axum::{Session, SessionError, SessionLayer};
use session_core::{
    Capabilities, Error, Expiry, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
    async_trait,
};
use tokio::sync::{Barrier, Notify};

/// A `tracing` writer into a shared buffer, for tests that read what was logged.
pub struct LogSink(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long any coordinated step may wait before the test fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Signing keys for the rotation tests (at least 32 bytes each).
pub const OLD_KEY: &str = "old-signing-key-0123456789abcdefghijklmnop";
pub const NEW_KEY: &str = "new-signing-key-0123456789abcdefghijklmnop";

/// Rendezvous points for handlers that must overlap.
pub struct Coord {
    /// Two requests meet here after loading and before writing.
    pub pair: Barrier,
    /// The racing writer says it has loaded the session.
    pub loaded: Notify,
    /// The racing writer may finish.
    pub proceed: Notify,
}

impl Coord {
    pub fn new() -> Arc<Self> {
        Arc::new(Coord {
            pair: Barrier::new(2),
            loaded: Notify::new(),
            proceed: Notify::new(),
        })
    }
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

type R<T> = std::result::Result<T, SessionError>;

async fn get_value(session: Session, Path(k): Path<String>) -> R<String> {
    Ok(match session.get_value(&k).await? {
        Some(v) => v.to_string(),
        None => "none".into(),
    })
}

async fn set_value(session: Session, Path((k, v)): Path<(String, String)>) -> R<&'static str> {
    session.insert(&k, &v).await?;
    Ok("ok")
}

async fn del_value(session: Session, Path(k): Path<String>) -> R<&'static str> {
    session.remove(&k).await?;
    Ok("ok")
}

async fn incr(session: Session) -> R<String> {
    let n = session
        .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn login(session: Session, Path(user): Path<String>) -> R<&'static str> {
    session.cycle_key().await?;
    session.insert("user", &user).await?;
    Ok("welcome")
}

async fn flush(session: Session) -> R<&'static str> {
    session.flush().await?;
    Ok("bye")
}

async fn untouched() -> &'static str {
    "ok"
}

async fn fail(session: Session, Path(status): Path<u16>) -> R<StatusCode> {
    session.insert("doomed", &true).await?;
    Ok(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
}

async fn browser_close(session: Session) -> R<&'static str> {
    session.set_expiry(Expiry::BrowserClose);
    session.insert("x", &1).await?;
    Ok("ok")
}

async fn expire_now(session: Session) -> R<&'static str> {
    session.insert("x", &1).await?;
    session.set_expiry(Expiry::At(Timestamp::now().add_secs(-10)));
    Ok("ok")
}

async fn fixed_deadline(session: Session) -> R<&'static str> {
    session.insert("x", &1).await?;
    session.set_expiry(Expiry::At(Timestamp::now().add_secs(600)));
    Ok("ok")
}

async fn big(session: Session, Path(n): Path<usize>) -> R<&'static str> {
    session.insert("blob", &"x".repeat(n)).await?;
    Ok("ok")
}

/// Saves, then deletes the record behind the session's back (Django's
/// `test_session_update_error_redirect`).
async fn vanish(session: Session) -> R<&'static str> {
    session.insert("x", &1).await?;
    session.save().await?;
    if let Some(k) = session.key() {
        session.store().delete(&k).await?;
    }
    session.insert("y", &2).await?;
    Ok("ok")
}

/// Loads, meets a second request, then writes `k`.
async fn together(
    State(coord): State<Arc<Coord>>,
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> R<&'static str> {
    session.load().await?;
    within("the other request", coord.pair.wait()).await;
    session.insert(&k, &v).await?;
    Ok("ok")
}

/// Writes, reports it loaded, waits for the go-ahead, then lets the middleware save.
async fn slow_write(State(coord): State<Arc<Coord>>, session: Session) -> R<&'static str> {
    session.insert("late", &"write").await?;
    coord.loaded.notify_one();
    within("the go-ahead", coord.proceed.notified()).await;
    Ok("ok")
}

/// The test app: every route the HTTP tests drive.
pub fn app(layer: SessionLayer, coord: Arc<Coord>) -> Router {
    Router::new()
        .route("/get/{k}", get(get_value))
        .route("/set/{k}/{v}", post(set_value))
        .route("/del/{k}", post(del_value))
        .route("/incr", post(incr))
        .route("/login/{user}", post(login))
        .route("/logout", post(flush))
        .route("/untouched", get(untouched))
        .route("/fail/{status}", post(fail))
        .route("/browser-close", post(browser_close))
        .route("/expire-now", post(expire_now))
        .route("/fixed-deadline", post(fixed_deadline))
        .route("/big/{n}", post(big))
        .route("/vanish", post(vanish))
        .route("/together/{k}/{v}", post(together))
        .route("/slow-write", post(slow_write))
        .with_state(coord)
        .layer(layer)
}

/// Serves `app` on a fresh loopback port and returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Serves the test app behind `layer`.
pub async fn serve_layer(layer: SessionLayer) -> String {
    serve(app(layer, Coord::new())).await
}

/// A client that keeps cookies, as a browser does.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("client")
}

/// A client without a cookie jar, for tests that read and send headers by hand.
pub fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("client")
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii header").to_owned())
        .collect()
}

/// The single `Set-Cookie` header, failing if there is not exactly one.
pub fn the_set_cookie(h: &HeaderMap) -> String {
    let all = set_cookies(h);
    assert_eq!(all.len(), 1, "expected one Set-Cookie, got {all:?}");
    all.into_iter().next().expect("one")
}

/// The cookie value in a `Set-Cookie` header.
pub fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().expect("a name=value pair");
    pair.split_once('=').expect("name=value").1.to_owned()
}

/// Whether the response varies on `Cookie`.
pub fn varies_on_cookie(h: &HeaderMap) -> bool {
    h.get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("cookie"))
}

/// A store that can be switched off, as a server outage: it forwards to a real store
/// until `down` is set, then fails every call like a refused connection.
#[derive(Debug)]
pub struct Outage<S> {
    pub inner: S,
    pub down: AtomicBool,
}

impl<S> Outage<S> {
    pub fn new(inner: S) -> Self {
        Outage {
            inner,
            down: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::backend(
                "memory",
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for Outage<S> {
    fn engine(&self) -> &str {
        self.inner.engine()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.check()?;
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.check()?;
        self.inner.load(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.check()?;
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.check()?;
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.check()?;
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.check()?;
        self.inner.clear_expired().await
    }
}

/// Drives two overlapping requests that change different keys of one session (they
/// both load before either saves) and checks that both changes persist. Used on every
/// backend the workspace has.
pub async fn disjoint_changes_both_persist(store: Arc<dyn SessionStore>) {
    let layer = SessionLayer::builder(store.clone())
        .secure(false)
        .build()
        .expect("layer");
    let base = serve(app(layer, Coord::new())).await;
    let client = browser();
    let res = client
        .post(format!("{base}/set/seed/1"))
        .send()
        .await
        .expect("seed");
    assert_eq!(res.status(), 200);
    let (a, b) = tokio::join!(
        client.post(format!("{base}/together/alpha/a")).send(),
        client.post(format!("{base}/together/beta/b")).send(),
    );
    let (a, b) = (a.expect("request a"), b.expect("request b"));
    assert_eq!(a.status(), 200, "{:?}", a.text().await);
    assert_eq!(b.status(), 200, "{:?}", b.text().await);
    for (k, v) in [("seed", "\"1\""), ("alpha", "\"a\""), ("beta", "\"b\"")] {
        let got = client
            .get(format!("{base}/get/{k}"))
            .send()
            .await
            .expect("read")
            .text()
            .await
            .expect("body");
        assert_eq!(got, v, "key {k} lost on {}", store.engine());
    }
}
