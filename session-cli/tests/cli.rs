//! End-to-end tests of the built `sessions` binary against real files and servers.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_file::FileStore;
use integration_tests::servers;
use serde_json::json;
use session_core::{Record, SessionData, SessionKey, SessionStore};

fn bin() -> Command {
    // Keep the developer's environment from choosing the engine.
    support::sessions()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run sessions")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p.to_string_lossy().into_owned()
}

fn file_config(dir: &Path, sessions: &Path) -> String {
    write_config(
        dir,
        "file.toml",
        &format!(
            "engine = \"file\"\ncodec = \"json\"\n[file]\npath = \"{}\"\n",
            sessions.display()
        ),
    )
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(n));
    d.insert("cart".into(), json!(["apple", "pear"]));
    Record::with_ttl(d, ttl)
}

async fn seed(store: &FileStore, live: usize, expired: usize) -> Vec<(SessionKey, Record)> {
    let mut out = Vec::new();
    for i in 0..live {
        let r = record(i as i64, 3600 + i as i64);
        out.push((store.create(&r).await.expect("create"), r));
    }
    for i in 0..expired {
        let k = SessionKey::generate().expect("rng");
        store
            .insert_new(&k, &record(1000 + i as i64, -60))
            .await
            .expect("insert expired");
    }
    out
}

fn session_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("sess_"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

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

fn start_demo(config: &str) -> Demo {
    let mut child = bin()
        .args(["--config", config, "demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut base = None;
    while Instant::now() < deadline && base.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && let Some(url) = line.strip_prefix("sessions demo listening on ")
        {
            base = Some(url.trim_end_matches('/').to_owned());
        }
    }
    let base = base.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the demo did not print its URL within 30 s");
    });
    Demo { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_pages_and_keeps_sessions_in_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sessions = tmp.path().join("sessions");
    let config = file_config(tmp.path(), &sessions);
    let demo = start_demo(&config);
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    for n in 1..=3 {
        let body = client
            .get(format!("{}/", demo.base))
            .send()
            .await
            .expect("GET /")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains(&format!("id=\"visit-count\">{n}<")),
            "visit {n} not counted"
        );
    }
    let files = session_files(&sessions);
    assert_eq!(files.len(), 1, "one session file: {files:?}");
    let stored = std::fs::read_to_string(sessions.join(&files[0])).expect("read session file");
    assert!(
        stored.contains("\"visits\":3"),
        "readable JSON in the file: {stored}"
    );

    client
        .post(format!("{}/cart/add", demo.base))
        .form(&[("item", "apple")])
        .send()
        .await
        .expect("add");
    client
        .post(format!("{}/cart/add", demo.base))
        .form(&[("item", "kiwi")])
        .send()
        .await
        .expect("add");
    client
        .post(format!("{}/cart/remove", demo.base))
        .form(&[("item", "apple")])
        .send()
        .await
        .expect("remove");
    let state: serde_json::Value = client
        .get(format!("{}/state", demo.base))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["cart"], json!(["kiwi"]));

    // Login cycles the key: the old file goes, a new one holds the same data.
    client
        .post(format!("{}/login", demo.base))
        .form(&[("username", "ada")])
        .send()
        .await
        .expect("login");
    let after_login = session_files(&sessions);
    assert_eq!(after_login.len(), 1);
    assert_ne!(after_login, files, "login must cycle the session key");
    let state: serde_json::Value = client
        .get(format!("{}/state", demo.base))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["user"], json!("ada"));
    assert_eq!(state["cart"], json!(["kiwi"]), "data kept across login");

    client
        .post(format!("{}/logout", demo.base))
        .send()
        .await
        .expect("logout");
    // Logout deletes the record; the redirected page view then starts a new session.
    let after_logout = session_files(&sessions);
    assert!(
        !after_logout.contains(&after_login[0]),
        "logout deletes the session file"
    );
    let state: serde_json::Value = client
        .get(format!("{}/state", demo.base))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["user"], json!(null));
    assert_eq!(state["cart"], json!([]));
    assert_eq!(state["visits"], json!(1), "a fresh session after logout");
}

#[tokio::test]
async fn clear_expired_removes_exactly_the_expired_sessions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("s");
    let store = FileStore::new(&dir).expect("store");
    let live = seed(&store, 5, 7).await;
    let config = file_config(tmp.path(), &dir);
    let out = run(&["--config", &config, "clear-expired", "--batch-size", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("7 expired sessions removed"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(session_files(&dir).len(), 5);
    for (k, _) in live {
        assert!(store.exists(&k).await.expect("exists"));
    }
}

#[tokio::test]
async fn show_prints_the_stored_session_as_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("s");
    let store = FileStore::new(&dir).expect("store");
    let seeded = seed(&store, 1, 0).await;
    let config = file_config(tmp.path(), &dir);
    let out = run(&["--config", &config, "show", seeded[0].0.as_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(shown["data"]["user_id"], json!(0));
    assert_eq!(shown["data"]["cart"], json!(["apple", "pear"]));
    assert!(
        shown["expires_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    // Unknown and malformed keys are clear errors.
    let unknown = SessionKey::generate().expect("rng");
    let out = run(&["--config", &config, "show", unknown.as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no live session"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--config", &config, "show", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn stats_counts_live_and_expired() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("s");
    let store = FileStore::new(&dir).expect("store");
    seed(&store, 4, 3).await;
    let config = file_config(tmp.path(), &dir);
    let out = run(&["--config", &config, "stats", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["live"], json!(4));
    assert_eq!(s["expired"], json!(3));
    // The expired records were written 60 s past their deadline: the cleanup lags
    // that much (and a little more, the time this test took).
    let lag = s["cleanup_lag_secs"].as_i64().expect("a lag");
    assert!((60..120).contains(&lag), "{s}");
    let out = run(&["--config", &config, "stats"]);
    assert!(
        text(&out.stdout).contains("live          4"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("cleanup lag   1m"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["--config", &config, "clear-expired"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["--config", &config, "stats", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["cleanup_lag_secs"], json!(null), "{s}");
    let out = run(&["--config", &config, "stats"]);
    assert!(
        text(&out.stdout).contains("cleanup lag   none"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn check_fails_clearly_on_bad_configuration() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad_url = write_config(
        tmp.path(),
        "bad.toml",
        "engine = \"db\"\n[db]\nurl = \"postgres://postgres@127.0.0.1:1/test\"\nacquire_timeout_ms = 2000\n",
    );
    let out = run(&["--config", &bad_url, "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("hint:"), "{}", text(&out.stderr));
    let unknown = write_config(tmp.path(), "unknown.toml", "engine = \"nope\"\n");
    let out = run(&["--config", &unknown, "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("known engines"),
        "{}",
        text(&out.stderr)
    );
    let missing = tmp.path().join("missing.toml");
    let out = run(&["--config", &missing.to_string_lossy(), "check"]);
    assert_eq!(out.status.code(), Some(2));
    let ok = file_config(tmp.path(), &tmp.path().join("ok"));
    let out = run(&["--config", &ok, "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: engine file"));
}

async fn copy_and_verify(target_config: &str, target: Arc<dyn SessionStore>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("s");
    let store = FileStore::new(&dir).expect("store");
    let seeded = seed(&store, 25, 3).await;
    let from = file_config(tmp.path(), &dir);
    let to = write_config(tmp.path(), "to.toml", target_config);
    for round in 0..2 {
        let out = run(&["copy", "--from", &from, "--to", &to]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("copied 25 sessions"),
            "{}",
            text(&out.stdout)
        );
    }
    for (k, r) in &seeded {
        let got = target.load(k).await.expect("load").expect("copied session");
        assert_eq!(got.data, r.data);
        assert_eq!(got.expires_at, r.expires_at, "expiry preserved");
    }
    for (k, _) in &seeded {
        target.delete(k).await.expect("clean up");
    }
}

#[tokio::test]
async fn copy_moves_every_session_from_file_to_redis() {
    let prefix = format!("cli-copy-{}:", servers::unique_suffix());
    let url = servers::redis_url();
    let config =
        format!("engine = \"cache\"\n[cache]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n");
    let target = session_core::EngineRegistry::new();
    backend_cache::register(&target);
    let store = target
        .build(&session_core::Config::from_toml(&config))
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &url, e));
    copy_and_verify(&config, store.clone()).await;
}

#[tokio::test]
async fn copy_moves_every_session_from_file_to_postgres() {
    let table = format!("cli_copy_{}", servers::unique_suffix());
    let url = servers::postgres_url();
    let config = format!("engine = \"db\"\n[db]\nurl = \"{url}\"\ntable = \"{table}\"\n");
    let registry = session_core::EngineRegistry::new();
    backend_db::register(&registry);
    let store = registry
        .build(&session_core::Config::from_toml(&config))
        .await
        .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &url, e));
    copy_and_verify(&config, store).await;
    let mut options = backend_db::DbConfig::new(url);
    options.table = table;
    let db = backend_db::DbStore::connect(&options)
        .await
        .expect("connect");
    db.drop_table().await.expect("drop");
}

#[test]
fn help_lists_every_command_with_examples() {
    let out = run(&["--help"]);
    let help = text(&out.stdout);
    for cmd in [
        "demo",
        "migrate",
        "clear-expired",
        "stats",
        "show",
        "copy",
        "check",
        "Exit codes",
    ] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
}
