//! A real axum-login application on our stores through the adapter, driven over HTTP.
//!
//! The app: an in-memory user backend implementing `AuthnBackend`, tower-sessions'
//! `SessionManagerLayer` over [`TowerSessionsStore`], axum-login's `AuthManagerLayer`,
//! a form login, two protected routes (one answering 401, one redirecting to the login
//! page) and a logout. It is served on 127.0.0.1:0 and driven by reqwest clients with
//! cookie stores, on the file engine, PostgreSQL and Redis.
//!
//! Checked on each engine: protected routes refuse before login and serve after it; the
//! login cycles the session id (session fixation); a second client stays logged out
//! throughout; logout ends the session in the store; and a request of the same session
//! that was running while the logout happened cannot bring the session back when it
//! saves its own change afterwards.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_login::tower_sessions::{Session, SessionManagerLayer};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use common::{Backend, Engine};
use serde::Deserialize;
use session_tower_sessions::tower_sessions_core::SessionStore as _;
use session_tower_sessions::tower_sessions_core::session::Id;
use session_tower_sessions::{DeletedSession, TowerSessionsStore};
use tokio::sync::Notify;

#[derive(Clone)]
struct User {
    id: i64,
    name: String,
    // What axum-login compares on every request; a password change logs sessions out.
    auth_hash: Vec<u8>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("id", &self.id).finish()
    }
}

impl AuthUser for User {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn session_auth_hash(&self) -> &[u8] {
        &self.auth_hash
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// Users in memory: name -> (user, password).
#[derive(Clone)]
struct Users(Arc<HashMap<String, (User, String)>>);

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = Infallible;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Infallible> {
        Ok(self
            .0
            .get(&creds.username)
            .filter(|(_, pw)| *pw == creds.password)
            .map(|(u, _)| u.clone()))
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Infallible> {
        Ok(self
            .0
            .values()
            .find(|(u, _)| u.id == *id)
            .map(|(u, _)| u.clone()))
    }
}

fn users() -> Users {
    let ada = User {
        id: 1,
        name: "ada".into(),
        auth_hash: b"ada-hash".to_vec(),
    };
    let bob = User {
        id: 2,
        name: "bob".into(),
        auth_hash: b"bob-hash".to_vec(),
    };
    Users(Arc::new(HashMap::from([
        ("ada".to_owned(), (ada, "correct horse".to_owned())),
        ("bob".to_owned(), (bob, "battery staple".to_owned())),
    ])))
}

/// Lets the test hold a request of the session open across a logout.
#[derive(Clone, Default)]
struct Gate {
    entered: Arc<Notify>,
    proceed: Arc<Notify>,
}

async fn login(mut auth: AuthSession<Users>, Form(creds): Form<Credentials>) -> impl IntoResponse {
    match auth.authenticate(creds).await {
        Ok(Some(user)) => match auth.login(&user).await {
            Ok(()) => (StatusCode::OK, format!("welcome {}", user.name)),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(None) => (StatusCode::UNAUTHORIZED, "bad credentials".to_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn logout(mut auth: AuthSession<Users>) -> impl IntoResponse {
    match auth.logout().await {
        Ok(_) => (StatusCode::OK, "bye".to_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn me(auth: AuthSession<Users>) -> String {
    auth.user
        .map(|u| format!("hello {}", u.name))
        .unwrap_or_default()
}

/// A protected request that changes the session after the test lets it go on.
async fn slow_change(State(gate): State<Gate>, session: Session) -> impl IntoResponse {
    gate.entered.notify_one();
    gate.proceed.notified().await;
    match session.insert("cart", vec!["book"]).await {
        Ok(()) => (StatusCode::OK, "cart saved".to_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

struct App {
    base: String,
    gate: Gate,
    server: tokio::task::JoinHandle<()>,
}

async fn serve(store: TowerSessionsStore) -> App {
    let sessions = SessionManagerLayer::new(store).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(users(), sessions).build();
    let gate = Gate::default();
    let protected = Router::new()
        .route("/me", get(me))
        .route("/slow-change", post(slow_change))
        .route_layer(axum_login::login_required!(Users));
    let redirecting = Router::new()
        .route("/account", get(me))
        .route_layer(axum_login::login_required!(Users, login_url = "/login"));
    let app = Router::new()
        .merge(protected)
        .merge(redirecting)
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(gate.clone())
        .layer(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    App {
        base: format!("http://{addr}"),
        gate,
        server,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn post_form(c: &reqwest::Client, url: &str, body: &str) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

async fn get_status(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = c.get(url).send().await.expect("request");
    let status = StatusCode::from_u16(r.status().as_u16()).expect("status");
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.text().await.expect("body");
    (status, location.unwrap_or(body))
}

/// The session id in a response's `Set-Cookie: id=...`, if it sets one.
fn session_cookie(r: &reqwest::Response) -> Option<Id> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("id="))
        .map(|v| v.split(';').next().unwrap_or_default())
        .filter(|v| !v.is_empty())
        .and_then(|v| Id::from_str(v).ok())
}

async fn run(engine: Engine) {
    let backend = Backend::new(engine, "").await;
    let store = backend.store.clone();
    let app = serve(store.clone()).await;
    let base = &app.base;
    let (ada, stranger) = (client(), client());

    // Before login: 401 from one protected route, a redirect to the login page from the other.
    assert_eq!(
        get_status(&ada, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, location) = get_status(&ada, &format!("{base}/account")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{}", backend.name);
    assert_eq!(location, "/login?next=%2Faccount");

    // A wrong password is refused and logs nobody in.
    let r = post_form(&ada, &format!("{base}/login"), "username=ada&password=nope").await;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        get_status(&ada, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Login: a fresh session in the store, then both protected routes serve.
    let r = post_form(
        &ada,
        &format!("{base}/login"),
        "username=ada&password=correct+horse",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200, "{}", backend.name);
    let id = session_cookie(&r).expect("login sets the session cookie");
    assert_eq!(r.text().await.expect("body"), "welcome ada");
    let stored = store
        .load(&id)
        .await
        .expect("load")
        .expect("the session is stored");
    assert!(stored.data.contains_key("axum-login.data"));
    assert_eq!(
        get_status(&ada, &format!("{base}/me")).await,
        (StatusCode::OK, "hello ada".to_owned())
    );
    assert_eq!(
        get_status(&ada, &format!("{base}/account")).await,
        (StatusCode::OK, "hello ada".to_owned())
    );

    // The second client is still logged out, and stays so.
    assert_eq!(
        get_status(&stranger, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = get_status(&stranger, &format!("{base}/account")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);

    // A session id planted by someone else (fixation) is never adopted: the login
    // answers with an id of its own and nothing is stored under the planted one.
    let planted = Id::default();
    let r = client()
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("id={planted}"))
        .body("username=bob&password=battery+staple")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let bob = session_cookie(&r).expect("cookie");
    assert_ne!(bob, planted);
    assert_eq!(store.load(&planted).await.expect("load"), None);
    assert!(store.load(&bob).await.expect("load").is_some());
    store.delete(&bob).await.expect("delete");

    // Logout racing a request of the same session: the request has loaded the session
    // and waits; the logout deletes it; then the request changes the session and its
    // save must not bring it back.
    let slow = {
        let ada = ada.clone();
        let url = format!("{base}/slow-change");
        tokio::spawn(async move { ada.post(url).send().await.expect("request") })
    };
    tokio::time::timeout(Duration::from_secs(10), app.gate.entered.notified())
        .await
        .expect("the slow request reached its handler");
    let r = ada
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        store.load(&id).await.expect("load"),
        None,
        "logout deleted it"
    );
    app.gate.proceed.notify_one();
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow request finished")
        .expect("task");
    // tower-sessions answers a failed save with 500 and sets no cookie.
    assert_eq!(slow.status().as_u16(), 500, "{}", backend.name);
    assert_eq!(session_cookie(&slow), None);
    assert_eq!(
        store.load(&id).await.expect("load"),
        None,
        "not resurrected"
    );
    assert_eq!(
        get_status(&ada, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Even a client replaying the old cookie is not let in.
    let replay = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = replay
        .get(format!("{base}/me"))
        .header("cookie", format!("id={id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(store.load(&id).await.expect("load"), None);

    // The stranger never got in.
    assert_eq!(
        get_status(&stranger, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );

    app.server.abort();
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_on_the_file_engine() {
    run(Engine::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_on_postgres() {
    run(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_on_redis() {
    run(Engine::Redis).await;
}

/// With [`DeletedSession::Discard`], the racing request succeeds but the session still
/// stays deleted: its cookie names nothing and the next request is logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_policy_keeps_the_session_deleted_too() {
    let backend = Backend::new(Engine::File, "").await;
    let store = backend.store.clone().on_deleted(DeletedSession::Discard);
    let app = serve(store.clone()).await;
    let base = &app.base;
    let ada = client();
    let r = post_form(
        &ada,
        &format!("{base}/login"),
        "username=ada&password=correct+horse",
    )
    .await;
    let id = session_cookie(&r).expect("cookie");
    let slow = {
        let ada = ada.clone();
        let url = format!("{base}/slow-change");
        tokio::spawn(async move { ada.post(url).send().await.expect("request") })
    };
    tokio::time::timeout(Duration::from_secs(10), app.gate.entered.notified())
        .await
        .expect("entered");
    let r = ada
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 200);
    app.gate.proceed.notify_one();
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("finished")
        .expect("task");
    assert_eq!(slow.status().as_u16(), 200);
    assert_eq!(
        store.load(&id).await.expect("load"),
        None,
        "not resurrected"
    );
    assert_eq!(
        get_status(&ada, &format!("{base}/me")).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.server.abort();
    backend.cleanup().await;
}
