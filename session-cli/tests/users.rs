//! Every session of a user, on the built `sessions` binary: the demo's "Your sessions"
//! (`GET /api/sessions`, sign out one session, sign out other devices, change password)
//! for two clients signed in as the same user, on axum and actix-web (file engine; axum
//! also over Redis), with the client
//! (`User-Agent`, peer address) recorded; the panel on an engine without a per-user index
//! (Memcached); and `sessions user NAME` / `sessions revoke --user NAME` against the
//! file engine and Redis, with their errors for Memcached and for bad names.
//!
//! Real files and servers (`source target/test-servers.env`), loopback only, every wait
//! bounded.

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::servers;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use session_core::users::session_id;
use session_core::{Config, Record, SessionData, SessionKey, SessionStore};

/// The longest any step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

/// A running `sessions demo`, killed on drop.
struct Demo {
    child: Child,
    base: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("Sessions.toml");
    std::fs::write(&p, body).expect("write config");
    p.to_string_lossy().into_owned()
}

fn file_config(dir: &Path) -> String {
    write_config(
        dir,
        &format!(
            "engine = \"file\"\n[file]\npath = \"{}\"\n",
            dir.join("sessions").display()
        ),
    )
}

/// Starts `sessions --config CONFIG demo --framework FRAMEWORK` on a free loopback port.
fn start_demo(config: &str, cwd: &Path, framework: &str) -> Demo {
    let mut child = support::sessions()
        .args([
            "--config",
            config,
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args(["--framework", framework])
        .current_dir(cwd)
        .env("SESSIONS_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn `sessions demo`");
    let addr = support::stdout_lines(&mut child).demo_address(Instant::now() + WAIT);
    Demo {
        child,
        base: format!("http://{addr}"),
    }
}

/// One browser-like client: its own cookie jar and `User-Agent`, redirects not followed.
struct Client {
    http: reqwest::Client,
    base: String,
    agent: &'static str,
}

impl Client {
    fn new(demo: &Demo, agent: &'static str) -> Client {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(agent)
            .no_proxy()
            .timeout(WAIT)
            .build()
            .expect("client");
        Client {
            http,
            base: demo.base.clone(),
            agent,
        }
    }

    /// Posts a form; returns the status and the session cookie it set, if any.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Option<String>) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: POST {path}: {e}", self.agent));
        let cookie = res
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("sessionid="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned());
        let status = res.status();
        if status == StatusCode::SEE_OTHER {
            assert_eq!(res.headers()[LOCATION], "/", "{}: POST {path}", self.agent);
        }
        (status, cookie)
    }

    async fn login(&self, user: &str) -> String {
        let (status, cookie) = self.post("/login", &[("username", user)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{}: login", self.agent);
        cookie.unwrap_or_else(|| panic!("{}: login sets the session cookie", self.agent))
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.agent));
        let status = res.status();
        (status, res.text().await.expect("body"))
    }

    /// The signed-in user `/state` shows.
    async fn user(&self) -> Option<String> {
        let (status, body) = self.get("/state").await;
        assert_eq!(status, StatusCode::OK, "{}: /state: {body}", self.agent);
        let v: Value = serde_json::from_str(&body).expect("/state is JSON");
        v["user"].as_str().map(str::to_owned)
    }

    /// `GET /api/sessions`: the status and the JSON.
    async fn sessions(&self) -> (StatusCode, Value) {
        let (status, body) = self.get("/api/sessions").await;
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: /api/sessions: {e}: {body}", self.agent));
        (status, v)
    }

    /// The listed sessions, which must be answered with 200.
    async fn listed(&self) -> Vec<Value> {
        let (status, v) = self.sessions().await;
        assert_eq!(status, StatusCode::OK, "{}: /api/sessions: {v}", self.agent);
        v["sessions"].as_array().cloned().expect("a list")
    }
}

fn ids(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect();
    v.sort();
    v
}

fn current(list: &[Value]) -> Vec<&Value> {
    list.iter()
        .filter(|s| s["current"] == json!(true))
        .collect()
}

fn redis_config(dir: &Path) -> String {
    write_config(
        dir,
        &format!(
            "engine = \"cache\"\n[cache]\nurl = \"{}\"\nkey_prefix = \"users-front-{}:\"\n",
            servers::redis_url(),
            servers::unique_suffix()
        ),
    )
}

async fn two_clients_one_user(framework: &str, config: fn(&Path) -> String) {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = config(tmp.path());
    let demo = start_demo(&config, tmp.path(), framework);
    let one = Client::new(&demo, "client-one/1.0");
    let two = Client::new(&demo, "client-two/2.0");

    // Anonymous: nothing to list.
    let (status, v) = one.sessions().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    let key_one = one.login("ada").await;
    let key_two = two.login("ada").await;
    assert_ne!(key_one, key_two);
    assert_eq!(one.user().await.as_deref(), Some("ada"));

    // Both sessions are listed, the asking one marked, named by a digest of the key,
    // with the client that signed in.
    let list = one.listed().await;
    assert_eq!(list.len(), 2, "{list:?}");
    let mine = current(&list);
    assert_eq!(mine.len(), 1, "{list:?}");
    let key = SessionKey::parse(&key_one).expect("a key");
    assert_eq!(mine[0]["id"], json!(session_id(&key)), "{list:?}");
    let text = serde_json::to_string(&list).expect("json");
    assert!(
        !text.contains(&key_one) && !text.contains(&key_two),
        "keys are never shown: {text}"
    );
    let mut agents: Vec<&str> = list
        .iter()
        .map(|s| s["user_agent"].as_str().unwrap_or("(none)"))
        .collect();
    agents.sort();
    assert_eq!(agents, ["client-one/1.0", "client-two/2.0"], "{list:?}");
    for s in &list {
        assert_eq!(s["client_addr"], json!("127.0.0.1"), "{s}");
        assert!(s["last_seen"].is_string(), "{s}");
        assert!(
            s["created_at"].is_string() && s["expires_at"].is_string(),
            "{s}"
        );
    }
    assert_eq!(ids(&two.listed().await), ids(&list));

    // The page shows the panel: two sessions, this one marked, a sign-out for the other.
    let (status, page) = one.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"session-count\">2<"), "{page}");
    assert!(page.contains("id=\"this-device\""), "{page}");
    assert!(page.contains("id=\"end-others\""), "{page}");
    let other = list
        .iter()
        .find(|s| s["current"] == json!(false))
        .expect("the other session");
    let other_id = other["id"].as_str().expect("id");
    assert!(page.contains(&format!("id=\"end-{other_id}\"")), "{page}");

    // "Sign out other devices": client two is signed out at its next request, client
    // one stays.
    let (status, _) = one.post("/sessions/end-others", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(two.user().await, None, "client two is signed out");
    assert_eq!(one.user().await.as_deref(), Some("ada"));
    let list = one.listed().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(current(&list).len(), 1);

    // Sign out one session by its id; an unknown id is a 404.
    two.login("ada").await;
    let list = one.listed().await;
    assert_eq!(list.len(), 2, "{list:?}");
    let other_id = list
        .iter()
        .find(|s| s["current"] == json!(false))
        .and_then(|s| s["id"].as_str())
        .expect("the other session")
        .to_owned();
    let (status, _) = one
        .post("/sessions/end", &[("id", "0".repeat(32).as_str())])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(two.user().await.as_deref(), Some("ada"));
    let (status, _) = one.post("/sessions/end", &[("id", &other_id)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(two.user().await, None, "client two is signed out");
    assert_eq!(one.user().await.as_deref(), Some("ada"));
    // Another user's sessions cannot be ended by id: bob's session is not ada's.
    let bob = Client::new(&demo, "client-bob/3.0");
    bob.login("bob").await;
    let bob_id = bob.listed().await[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = one.post("/sessions/end", &[("id", &bob_id)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(bob.user().await.as_deref(), Some("bob"));

    // Change password in client one: client two (signed in with the old hash) is
    // signed out on its next request; client one is re-hashed and stays, on a new key.
    two.login("ada").await;
    assert_eq!(one.listed().await.len(), 2);
    let (status, cycled) = one.post("/password", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cycled = cycled.expect("the re-login sets a new cookie");
    assert_ne!(cycled, key_one);
    assert_eq!(two.user().await, None, "the old password's session is gone");
    assert_eq!(
        one.user().await.as_deref(),
        Some("ada"),
        "the changing one stays"
    );
    assert_eq!(one.listed().await.len(), 1);
    // Signing in after the change works, with the new hash.
    two.login("ada").await;
    assert_eq!(two.user().await.as_deref(), Some("ada"));
    assert_eq!(one.listed().await.len(), 2);
    assert_eq!(bob.user().await.as_deref(), Some("bob"), "bob is untouched");

    // Logging out via the current session's own row.
    let mine = one
        .listed()
        .await
        .into_iter()
        .find(|s| s["current"] == json!(true))
        .expect("current");
    let (status, _) = one
        .post("/sessions/end", &[("id", mine["id"].as_str().expect("id"))])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(one.user().await, None);
    assert_eq!(two.listed().await.len(), 1);
    let (status, _) = two.post("/logout", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(two.user().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_user_on_axum() {
    two_clients_one_user("axum", file_config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_user_on_axum_over_redis() {
    two_clients_one_user("axum", redis_config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_user_on_actix_web() {
    two_clients_one_user("actix", file_config).await;
}

/// On Memcached (no per-user index) the page still renders, and says so.
async fn without_an_index(framework: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = write_config(
        tmp.path(),
        &format!(
            "engine = \"cache\"\n[cache]\nurl = \"{}\"\nkey_prefix = \"users-front-{}:\"\n",
            servers::memcached_url(),
            servers::unique_suffix()
        ),
    );
    let demo = start_demo(&config, tmp.path(), framework);
    let one = Client::new(&demo, "client-one/1.0");
    one.login("ada").await;
    let (status, page) = one.get("/").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"user\">ada<"), "{page}");
    assert!(page.contains("id=\"sessions-unsupported\""), "{page}");
    assert!(
        page.contains("memcached engine keeps no per-user index"),
        "{page}"
    );
    let (status, v) = one.sessions().await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("memcached")),
        "{v}"
    );
    let (status, _) = one.post("/sessions/end-others", &[]).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    // The password change still signs the session in again.
    let (status, _) = one.post("/password", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(one.user().await.as_deref(), Some("ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_says_memcached_keeps_no_index_on_axum() {
    without_an_index("axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_says_memcached_keeps_no_index_on_actix_web() {
    without_an_index("actix").await;
}

// ------------------------------------------------------------------ the CLI --

fn run(args: &[&str]) -> Output {
    support::sessions()
        .args(args)
        .output()
        .expect("run sessions")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn signed_in(user: Option<&str>, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("cart".into(), json!(["kiwi"]));
    let mut r = Record::with_ttl(d, ttl);
    r.meta.principal = user.map(str::to_owned);
    r.meta.last_seen = Some(r.created_at);
    r.meta.user_agent = Some("probe/1.0".into());
    r.meta.client_addr = Some("127.0.0.1".into());
    r
}

/// `sessions user` and `sessions revoke --user` on the store `config` describes.
async fn user_and_revoke(config_toml: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = write_config(tmp.path(), config_toml);
    let registry = session_cli::builtin_registry();
    let store: Arc<dyn SessionStore> = registry
        .build(&Config::from_toml(config_toml))
        .await
        .expect("build the store");
    let user = format!("ada-{}", servers::unique_suffix());
    let other = format!("bob-{}", servers::unique_suffix());
    let mut ada = Vec::new();
    for _ in 0..3 {
        ada.push(
            store
                .create(&signed_in(Some(&user), 3600))
                .await
                .expect("create"),
        );
    }
    let bob = store
        .create(&signed_in(Some(&other), 3600))
        .await
        .expect("create");
    let anonymous = store.create(&signed_in(None, 3600)).await.expect("create");

    let out = run(&["--config", &config, "user", &user, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["user"], json!(user));
    let listed = v["sessions"].as_array().expect("a list");
    let mut want: Vec<String> = ada.iter().map(session_id).collect();
    want.sort();
    assert_eq!(ids(listed), want, "{v}");
    for s in listed {
        assert_eq!(s["client_addr"], json!("127.0.0.1"), "{s}");
        assert_eq!(s["user_agent"], json!("probe/1.0"), "{s}");
        assert!(
            s["expires_at"].is_string() && s["last_seen"].is_string(),
            "{s}"
        );
    }
    let shown = text(&out.stdout);
    for k in &ada {
        assert!(
            !shown.contains(k.as_str()),
            "keys are never printed: {shown}"
        );
    }

    let out = run(&["--config", &config, "user", &user]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("3 live session(s)"), "{table}");
    assert!(table.contains("127.0.0.1 probe/1.0"), "{table}");

    let out = run(&["--config", &config, "revoke", "--user", &user]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ended 3 session(s)"),
        "{}",
        text(&out.stdout)
    );
    for k in &ada {
        assert!(store.load(k).await.expect("load").is_none(), "revoked");
    }
    assert!(
        store.load(&bob).await.expect("load").is_some(),
        "bob's stays"
    );
    assert!(store.load(&anonymous).await.expect("load").is_some());

    let out = run(&["--config", &config, "user", &user]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no live session"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["--config", &config, "revoke", "--user", &user, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ended"], json!(0), "{v}");

    let out = run(&["--config", &config, "revoke", "--user", &other, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ended"], json!(1), "{v}");
    store.delete(&anonymous).await.expect("clean up");
}

#[tokio::test]
async fn user_and_revoke_on_the_file_engine() {
    let tmp = tempfile::tempdir().expect("tmp");
    user_and_revoke(&format!(
        "engine = \"file\"\n[file]\npath = \"{}\"\n",
        tmp.path().join("sessions").display()
    ))
    .await;
}

#[tokio::test]
async fn user_and_revoke_on_redis() {
    user_and_revoke(&format!(
        "engine = \"cache\"\n[cache]\nurl = \"{}\"\nkey_prefix = \"users-front-{}:\"\n",
        servers::redis_url(),
        servers::unique_suffix()
    ))
    .await;
}

#[test]
fn user_and_revoke_explain_an_engine_without_an_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = write_config(
        tmp.path(),
        &format!(
            "engine = \"cache\"\n[cache]\nurl = \"{}\"\n",
            servers::memcached_url()
        ),
    );
    for args in [
        vec!["--config", &config, "user", "ada"],
        vec!["--config", &config, "revoke", "--user", "ada", "--json"],
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("engine memcached keeps no per-user index"),
            "{err}"
        );
        assert!(
            err.contains("file, db"),
            "names the engines that can: {err}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
}

#[test]
fn user_and_revoke_refuse_a_bad_name_before_any_io() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A server nobody listens on: a name check that reached it would fail differently.
    let config = write_config(
        tmp.path(),
        "engine = \"cache\"\n[cache]\nurl = \"redis://127.0.0.1:1\"\n",
    );
    let long = "x".repeat(300);
    for name in ["tab\there", "", long.as_str()] {
        for args in [
            vec!["--config", &config, "user", name],
            vec!["--config", &config, "revoke", "--user", name],
        ] {
            let out = run(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains("invalid user name"), "{err}");
            assert!(err.contains("no control characters"), "{err}");
        }
    }
}
