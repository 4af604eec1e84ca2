//! Which engine an operator command acts on, on the built `sessions` binary: none
//! configured and the in-process memory engine are refused with a way out, and `copy`
//! reads its two files as they are, whatever `SESSION_*` variables the shell holds.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use backend_file::FileStore;
use serde_json::json;
use session_core::{Record, SessionData, SessionKey, SessionStore};

/// The binary, run in `cwd`, with no `SESSION_*` variable but `env`.
fn bin(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = support::sessions();
    c.current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    bin(cwd, env).args(args).output().expect("run sessions")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p.to_string_lossy().into_owned()
}

fn file_config(dir: &Path, name: &str, sessions: &Path) -> String {
    write_config(
        dir,
        name,
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            sessions.display().to_string()
        ),
    )
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(n));
    Record::with_ttl(d, ttl)
}

fn session_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("sess_"))
                .count()
        })
        .unwrap_or(0)
}

fn operator_commands() -> Vec<Vec<String>> {
    let key = SessionKey::generate().expect("rng");
    [
        vec!["migrate"],
        vec!["clear-expired"],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["show", key.as_str()],
        vec!["check"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect()
}

fn assert_refused(out: &Output, what: &str, args: &[String]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    assert!(stderr.contains(what), "{args:?}: {stderr}");
    assert!(
        stderr.contains("hint: pass --config FILE") && stderr.contains("SESSION_ENGINE"),
        "{args:?}: says how to choose an engine: {stderr}"
    );
}

#[test]
fn operator_commands_without_an_engine_refuse_and_say_how_to_choose() {
    let tmp = tempfile::tempdir().expect("tmp");
    for args in operator_commands() {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(tmp.path(), &[], &argv);
        assert_refused(&out, "needs an engine, and none is configured", &args);
        assert!(
            text(&out.stderr).contains("no configuration file"),
            "{}",
            text(&out.stderr)
        );
    }
    // A configuration file that names no engine is refused the same way, by name.
    let config = write_config(tmp.path(), "noengine.toml", "codec = \"json\"\n");
    for args in operator_commands() {
        let mut argv: Vec<&str> = vec!["--config", &config];
        argv.extend(args.iter().map(String::as_str));
        let out = run(tmp.path(), &[], &argv);
        assert_refused(&out, "needs an engine", &args);
        assert!(
            text(&out.stderr).contains("noengine.toml"),
            "{}",
            text(&out.stderr)
        );
    }
    // Sessions.toml in the working directory is found and named.
    write_config(tmp.path(), "Sessions.toml", "codec = \"json\"\n");
    let out = run(tmp.path(), &[], &["stats"]);
    assert_refused(
        &out,
        "(Sessions.toml, SESSION_ENGINE unset)",
        &["stats".into()],
    );
}

#[test]
fn operator_commands_refuse_the_in_process_memory_engine() {
    let tmp = tempfile::tempdir().expect("tmp");
    for args in operator_commands() {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(tmp.path(), &[("SESSION_ENGINE", "memory")], &argv);
        assert_refused(
            &out,
            "engine memory (no configuration file, SESSION_ENGINE=memory) keeps sessions inside the application's own process",
            &args,
        );
    }
    let config = write_config(tmp.path(), "memory.toml", "engine = \"memory\"\n");
    let out = run(tmp.path(), &[], &["--config", &config, "stats"]);
    assert_refused(
        &out,
        "keeps sessions inside the application's own process",
        &["stats".into()],
    );
    // A cache engine with no server URL is an in-process memory store as well.
    let config = write_config(tmp.path(), "cache.toml", "engine = \"cache\"\n");
    for args in [vec!["stats"], vec!["check"], vec!["clear-expired"]] {
        let mut argv: Vec<&str> = vec!["--config", &config];
        argv.extend(args.iter().copied());
        let out = run(tmp.path(), &[], &argv);
        assert_refused(
            &out,
            "engine memory (its configuration) keeps sessions inside",
            &args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        );
    }
    // The environment still chooses a real engine for the operator commands.
    let sessions = tmp.path().join("sessions");
    let out = run(
        tmp.path(),
        &[
            ("SESSION_ENGINE", "file"),
            ("SESSION_FILE__PATH", &sessions.to_string_lossy()),
        ],
        &["check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: engine file answers"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn copy_reads_its_files_as_they_are_whatever_the_environment_says() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src_dir = tmp.path().join("src");
    let dst_dir = tmp.path().join("dst");
    let src = FileStore::new(&src_dir).expect("store");
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(src.create(&record(i, 3600)).await.expect("create"));
    }
    let from = file_config(tmp.path(), "from.toml", &src_dir);
    let to = file_config(tmp.path(), "to.toml", &dst_dir);
    let out = run(
        tmp.path(),
        &[
            ("SESSION_ENGINE", "memory"),
            ("SESSION_FILE__PATH", "/nonexistent/elsewhere"),
        ],
        &["copy", "--from", &from, "--to", &to],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("copied 3 sessions from file to file: 3 new"),
        "{stdout}"
    );
    assert!(
        stderr.contains("ignoring the environment overrides SESSION_ENGINE, SESSION_FILE__PATH"),
        "says the environment was not applied: {stderr}"
    );
    assert_eq!(session_files(&dst_dir), 3);
    let dst = FileStore::new(&dst_dir).expect("store");
    for k in &keys {
        assert!(dst.load(k).await.expect("load").is_some(), "copied");
    }
}

#[tokio::test]
async fn copy_refuses_a_side_without_a_real_engine() {
    let tmp = tempfile::tempdir().expect("tmp");
    let from = file_config(tmp.path(), "from.toml", &tmp.path().join("src"));
    let memory = write_config(tmp.path(), "memory.toml", "engine = \"memory\"\n");
    let none = write_config(tmp.path(), "none.toml", "codec = \"json\"\n");
    let (from, memory, none) = (from.as_str(), memory.as_str(), none.as_str());
    for (args, what) in [
        (["copy", "--from", from, "--to", memory], "engine memory"),
        (["copy", "--from", memory, "--to", from], "engine memory"),
        (["copy", "--from", none, "--to", from], "needs an engine"),
        (["copy", "--from", from, "--to", none], "needs an engine"),
    ] {
        let out = run(tmp.path(), &[], &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(what), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let missing = tmp.path().join("missing.toml");
    let out = run(
        tmp.path(),
        &[],
        &["copy", "--from", &missing.to_string_lossy(), "--to", from],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not exist"));
}

#[tokio::test]
async fn copy_that_copies_nothing_says_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let to = file_config(tmp.path(), "to.toml", &tmp.path().join("dst"));

    // An empty source.
    let empty = file_config(tmp.path(), "empty.toml", &tmp.path().join("empty"));
    let out = run(tmp.path(), &[], &["copy", "--from", &empty, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("copied 0 sessions"));
    assert!(
        text(&out.stderr).contains("empty.toml, engine file) holds no sessions"),
        "{}",
        text(&out.stderr)
    );

    // A source whose sessions have all expired.
    let old_dir = tmp.path().join("old");
    let old = FileStore::new(&old_dir).expect("store");
    for i in 0..4 {
        let k = SessionKey::generate().expect("rng");
        old.insert_new(&k, &record(i, -60)).await.expect("insert");
    }
    let old_cfg = file_config(tmp.path(), "old.toml", &old_dir);
    let out = run(tmp.path(), &[], &["copy", "--from", &old_cfg, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "copied 0 sessions from file to file: 0 new, 0 updated, 0 already there, 4 skipped"
        ),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("holds 4 sessions, all expired: nothing to copy"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(session_files(&tmp.path().join("dst")), 0);
}

/// Kills the demo when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_without_configuration_keeps_its_file_default() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Child(
        bin(tmp.path(), &[("TMPDIR", &tmp.path().to_string_lossy())])
            .args(["demo", "--port", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn demo"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut engine_line = None;
    while Instant::now() < deadline && engine_line.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.starts_with("engine:")
        {
            engine_line = Some(line);
        }
    }
    let line = engine_line.expect("the demo printed its engine within 30 s");
    assert!(line.starts_with("engine: file"), "{line}");
}
