//! A third-party engine migrated, swept and counted through the command line: the
//! `custom_engine` example is a `sessions` built with `session_cli::main_with` and an
//! engine of its own (`jsonfile`) that implements `Maintenance`. The commands find the
//! capability on the built store; nothing in the CLI knows the engine's name.
//!
//! The example is built with the cargo that runs this test (a no-op when `cargo test`
//! already built it) and run as a program, as an application would ship it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use backend_file::FileStore;
use integration_tests::servers;
use serde_json::{Value, json};
use session_core::{Record, SessionData, SessionStore};

/// The `custom_engine` example's executable, built once per test run.
fn example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--offline", "-p", "session-cli", "--example"])
            .args(["custom_engine", "--message-format=json-render-diagnostics"]);
        // Same profile as the binary under test.
        let sessions = Path::new(env!("CARGO_BIN_EXE_sessions"));
        if sessions.parent().and_then(Path::file_name) == Some("release".as_ref()) {
            cargo.arg("--release");
        }
        let out = cargo.output().expect("run cargo build --example");
        assert!(
            out.status.success(),
            "building the custom_engine example failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == "custom_engine"
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the example's executable")
    })
}

fn clean(mut c: Command) -> Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("SESSION_") {
            c.env_remove(k);
        }
    }
    c
}

fn run_example(args: &[&str]) -> Output {
    clean(Command::new(example()))
        .args(args)
        .output()
        .expect("run the custom_engine example")
}

fn run_sessions(args: &[&str]) -> Output {
    clean(Command::new(env!("CARGO_BIN_EXE_sessions")))
        .args(args)
        .output()
        .expect("run sessions")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts exit 0, returns stdout.
fn ok(out: Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p.to_string_lossy().into_owned()
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(n));
    Record::with_ttl(d, ttl)
}

#[tokio::test]
async fn a_custom_engine_is_migrated_swept_and_counted_through_the_cli() {
    let tmp = tempfile::tempdir().expect("tmp");
    let doc = tmp.path().join("sessions.json");
    let config = write(
        tmp.path(),
        "jsonfile.toml",
        &format!(
            "engine = \"jsonfile\"\n[jsonfile]\npath = {:?}\n",
            doc.display().to_string()
        ),
    );

    // migrate: creates the document, a re-run changes nothing.
    let out = ok(run_example(&["--config", &config, "migrate"]), "migrate");
    assert_eq!(
        out.trim(),
        format!("created document {} (schema version 1)", doc.display())
    );
    let stored: Value =
        serde_json::from_slice(&std::fs::read(&doc).expect("created")).expect("json");
    assert_eq!(stored, json!({"schema": 1, "sessions": {}}));
    let out = ok(
        run_example(&["--config", &config, "migrate"]),
        "migrate again",
    );
    assert_eq!(
        out.trim(),
        format!(
            "document {} is up to date (schema version 1)",
            doc.display()
        )
    );

    // Sessions arrive by `copy` from a file store: four long-lived, two about to expire.
    let files = FileStore::new(tmp.path().join("files")).expect("file store");
    for i in 0..4 {
        files.create(&record(i, 3600)).await.expect("create");
    }
    for i in 0..2 {
        files.create(&record(100 + i, 1)).await.expect("create");
    }
    let from = write(
        tmp.path(),
        "file.toml",
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            tmp.path().join("files").display().to_string()
        ),
    );
    let out = ok(
        run_example(&["copy", "--from", &from, "--to", &config]),
        "copy",
    );
    assert!(
        out.contains("copied 6 sessions from file to jsonfile: 6 new"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // stats: the engine's own counts.
    let stats: Value = serde_json::from_str(&ok(
        run_example(&["--config", &config, "stats", "--json"]),
        "stats --json",
    ))
    .expect("json");
    assert_eq!(stats["engine"], json!("jsonfile"));
    assert_eq!(stats["live"], json!(4), "{stats}");
    assert_eq!(stats["expired"], json!(2), "{stats}");
    assert_eq!(stats["unreadable"], json!(0), "{stats}");
    let sizes: u64 = stats["histogram"]
        .as_array()
        .expect("histogram")
        .iter()
        .map(|b| b[1].as_u64().expect("count"))
        .sum();
    assert_eq!(sizes, 6, "every record in a size class: {stats}");
    let out = ok(run_example(&["--config", &config, "stats"]), "stats");
    assert!(out.contains("live          4"), "{out}");

    // clear-expired: the engine's sweep, named by its target.
    let out = ok(
        run_example(&["--config", &config, "clear-expired"]),
        "clear-expired",
    );
    assert_eq!(
        out.trim(),
        format!(
            "2 expired sessions removed from jsonfile ({})",
            doc.display()
        )
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&doc).expect("doc")).expect("json");
    assert_eq!(stored["sessions"].as_object().map(|s| s.len()), Some(4));

    // The stock `sessions` does not know the engine: a configuration error, exit 2.
    let out = run_sessions(&["--config", &config, "migrate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("jsonfile"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_says_what_an_engine_without_a_schema_or_maintenance_needs() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The file engine offers maintenance but keeps no schema.
    let file = write(
        tmp.path(),
        "file.toml",
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            tmp.path().join("files").display().to_string()
        ),
    );
    let out = ok(
        run_sessions(&["--config", &file, "migrate"]),
        "migrate file",
    );
    assert_eq!(
        out.trim(),
        "engine file keeps no schema: nothing to migrate"
    );

    // A Redis cache offers no maintenance at all (Redis expires keys by itself).
    let redis = servers::redis_url();
    let prefix = format!("cli-maint-{}:", servers::unique_suffix());
    let cache = write(
        tmp.path(),
        "cache.toml",
        &format!("engine = \"cache\"\n[cache]\nurl = {redis:?}\nkey_prefix = {prefix:?}\n"),
    );
    let out = ok(
        run_sessions(&["--config", &cache, "migrate"]),
        "migrate cache",
    );
    assert_eq!(
        out.trim(),
        "engine redis offers no maintenance operations (no schema to migrate): nothing to do"
    );
}

#[tokio::test]
async fn stats_of_a_hashed_store_count_what_the_inner_store_holds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("files");
    let inner = FileStore::new(&dir).expect("file store");
    let hashed = session_core::HashedKeys::new(std::sync::Arc::new(inner));
    for i in 0..3 {
        hashed.create(&record(i, 3600)).await.expect("create");
    }
    hashed
        .create(&record(9, -60))
        .await
        .expect("create expired");
    let config = write(
        tmp.path(),
        "hashed.toml",
        &format!(
            "engine = \"file\"\nhash_keys = true\n[file]\npath = {:?}\n",
            dir.display().to_string()
        ),
    );
    let stats: Value = serde_json::from_str(&ok(
        run_sessions(&["--config", &config, "stats", "--json"]),
        "stats --json",
    ))
    .expect("json");
    assert_eq!(stats["engine"], json!("file (hashed keys)"));
    assert_eq!(stats["live"], json!(3), "{stats}");
    assert_eq!(stats["expired"], json!(1), "{stats}");
    let out = ok(
        run_sessions(&["--config", &config, "clear-expired"]),
        "clear-expired",
    );
    assert_eq!(out.trim(), "1 expired sessions removed from file");
}
