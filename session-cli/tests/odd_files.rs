//! The built `sessions` binary on a file-engine directory that holds, beside real
//! sessions, entries named like session files that are not sessions: a FIFO, a
//! directory, a symlink to `/dev/zero`, a symlink to a file outside the directory, a
//! socket, and a sparse 64 MiB file.
//!
//! `stats`, `clear-expired`, `show` and `copy` must finish (a FIFO once hung them for
//! good), skip and count those entries, leave them in place, and still do their work on
//! the real sessions. Every run has a deadline: on a hang the child is killed and the
//! test fails. The demo app, given such a key as its cookie, must answer with a fresh
//! session at once (not 503, not a hang).

#![cfg(unix)]

mod support;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_file::FileStore;
use serde_json::json;
use session_core::{Record, SessionData, SessionKey, SessionStore};

/// How long one command may take; each takes well under a second.
const DEADLINE: Duration = Duration::from_secs(20);

fn bin() -> Command {
    // Keep the developer's environment from choosing the engine.
    let mut c = support::sessions();
    c.env_remove("SESSIONS_LOG");
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sessions ARGS` with its output in files under `tmp`; kills it and fails the
/// test if it has not exited within [`DEADLINE`].
fn run(tmp: &Path, args: &[&str]) -> Run {
    let out = tmp.join("stdout");
    let err = tmp.join("stderr");
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn sessions");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`sessions {}` did not finish within {DEADLINE:?}; stderr: {}",
                args.join(" "),
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn file_config(dir: &Path, name: &str, sessions: &Path) -> String {
    let p = dir.join(name);
    fs::write(
        &p,
        format!(
            "engine = \"file\"\ncodec = \"json\"\n[file]\npath = \"{}\"\nfsync = false\n",
            sessions.display()
        ),
    )
    .expect("write config");
    p.to_string_lossy().into_owned()
}

fn store(dir: &Path) -> FileStore {
    FileStore::builder()
        .dir(dir)
        .fsync(false)
        .codec(std::sync::Arc::new(session_core::JsonCodec::new(4 << 20)))
        .build()
        .expect("store")
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(n));
    Record::with_ttl(d, ttl)
}

/// The odd entries planted in a session directory, by kind.
struct Planted {
    entries: Vec<(&'static str, SessionKey)>,
    outside: PathBuf,
    _socket: UnixListener,
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

fn plant(tmp: &Path, store: &FileStore) -> Planted {
    let mut entries = Vec::new();
    let mut key = |kind: &'static str| {
        let k = SessionKey::generate().expect("rng");
        entries.push((kind, k.clone()));
        store.path_of(&k)
    };
    mkfifo(&key("fifo"));
    fs::create_dir(key("directory")).expect("mkdir");
    symlink("/dev/zero", key("zero")).expect("symlink");
    let outside = tmp.join("outside.json");
    fs::write(
        &outside,
        serde_json::to_vec(&json!({"not": "a session"})).expect("json"),
    )
    .expect("outside");
    symlink(&outside, key("outside")).expect("symlink");
    let socket = UnixListener::bind(key("socket")).expect("socket");
    // A regular file that does not decode is a corrupt record, removed by clear-expired
    // once its deadline (its mtime) has passed: an hour ahead, it must stay.
    File::create(key("sparse"))
        .and_then(|f| {
            f.set_len(64 << 20)?;
            f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        })
        .expect("sparse file");
    Planted {
        entries,
        outside,
        _socket: socket,
    }
}

fn assert_in_place(store: &FileStore, planted: &Planted) {
    for (kind, key) in &planted.entries {
        assert!(
            fs::symlink_metadata(store.path_of(key)).is_ok(),
            "the {kind} entry was removed"
        );
    }
    assert_eq!(
        fs::read(&planted.outside).expect("outside"),
        br#"{"not":"a session"}"#,
        "the file outside the directory changed"
    );
}

fn assert_no_raw_keys(run: &Run, planted: &Planted) {
    for (kind, key) in &planted.entries {
        assert!(
            !run.stderr.contains(key.as_str()) && !run.stdout.contains(key.as_str()),
            "the {kind} entry's raw key was printed: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_skip_count_and_keep_odd_entries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let sessions = t.join("sessions");
    let config = file_config(t, "file.toml", &sessions);
    let src = store(&sessions);
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(src.create(&record(i, 3600)).await.expect("create"));
    }
    for i in 0..2 {
        let k = SessionKey::generate().expect("rng");
        src.insert_new(&k, &record(100 + i, -60))
            .await
            .expect("expired");
    }
    let planted = plant(t, &src);
    let odd = planted.entries.len() as u64;

    // stats: every real session counted, every odd entry skipped and reported.
    let stats = run(t, &["--config", &config, "stats"]);
    assert_eq!(stats.code, 0, "stats: {}{}", stats.stdout, stats.stderr);
    assert!(stats.stdout.contains("live          3"), "{}", stats.stdout);
    assert!(stats.stdout.contains("expired       2"), "{}", stats.stdout);
    assert!(
        stats
            .stdout
            .contains(&format!("skipped {odd} unreadable entries")),
        "{}",
        stats.stdout
    );
    assert_no_raw_keys(&stats, &planted);
    let json = run(t, &["--config", &config, "stats", "--json"]);
    assert_eq!(json.code, 0, "stats --json: {}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["live"], 3);
    assert_eq!(v["skipped"], odd);

    // show: a real session prints; an odd key is a corrupt record (exit 1), promptly.
    let ok = run(t, &["--config", &config, "show", live[0].as_str()]);
    assert_eq!(ok.code, 0, "show: {}", ok.stderr);
    assert!(ok.stdout.contains("\"user_id\": 0"), "{}", ok.stdout);
    for (kind, key) in &planted.entries {
        for raw in [false, true] {
            let mut args = vec!["--config", &config, "show", key.as_str()];
            if raw {
                args.push("--raw");
            }
            let r = run(t, &args);
            assert_eq!(r.code, 1, "show (raw {raw}) of the {kind}: {}", r.stderr);
            let why = if *kind == "sparse" {
                "over the limit"
            } else {
                "not a regular file"
            };
            assert!(
                r.stderr.contains(why),
                "show (raw {raw}) of the {kind}: {}",
                r.stderr
            );
            assert!(r.stdout.is_empty(), "show printed {}", r.stdout);
        }
    }

    // clear-expired: the expired sessions go, the odd entries are counted and stay.
    let clear = run(t, &["--config", &config, "clear-expired"]);
    assert_eq!(clear.code, 0, "clear-expired: {}", clear.stderr);
    assert!(
        clear
            .stdout
            .contains("2 expired sessions removed from file"),
        "{}",
        clear.stdout
    );
    // The sparse file is a regular file whose deadline (its mtime) has not passed: not
    // due, so not skipped either.
    assert!(
        clear.stdout.contains(&format!(
            "skipped {} unreadable entries ({} not regular files, 0 that could not be checked)",
            odd - 1,
            odd - 1
        )),
        "{}",
        clear.stdout
    );
    assert_no_raw_keys(&clear, &planted);
    assert_eq!(src.count().await.expect("count"), 3 + odd);

    // copy: the real sessions arrive, the odd entries are skipped in the source, and an
    // odd entry in the target under a live session's key is not overwritten.
    let target = t.join("target");
    let to = file_config(t, "to.toml", &target);
    let dst = store(&target);
    mkfifo(&dst.path_of(&live[2]));
    let copy = run(t, &["copy", "--from", &config, "--to", &to]);
    assert_eq!(copy.code, 0, "copy: {}{}", copy.stdout, copy.stderr);
    assert!(
        copy.stdout
            .contains("copied 2 sessions from file to file: 2 new"),
        "{}",
        copy.stdout
    );
    assert!(
        copy.stdout.contains(&format!(
            "skipped {} unreadable entries ({odd} in the source, 1 in the target",
            odd + 1
        )),
        "{}",
        copy.stdout
    );
    assert_no_raw_keys(&copy, &planted);
    for key in &live[..2] {
        assert_eq!(
            dst.load(key).await.expect("load").expect("copied").data,
            src.load(key).await.expect("load").expect("source").data
        );
    }
    assert!(
        fs::symlink_metadata(dst.path_of(&live[2]))
            .expect("target fifo")
            .file_type()
            .is_fifo(),
        "the target's FIFO was replaced"
    );
    assert_in_place(&src, &planted);
    assert_eq!(src.count().await.expect("count"), 3 + odd);
}

/// `sessions demo` on the file directory, stopped when dropped.
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
        .stderr(Stdio::null())
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
    let Some(base) = base else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the demo did not print its URL within 30 s");
    };
    Demo { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_naming_an_odd_entry_gets_a_fresh_session_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let sessions = t.join("sessions");
    let config = file_config(t, "file.toml", &sessions);
    let s = store(&sessions);
    let planted = plant(t, &s);
    let demo = start_demo(&config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client");
    for (kind, key) in &planted.entries {
        let started = Instant::now();
        let resp = client
            .get(format!("{}/", demo.base))
            .header("cookie", format!("sessionid={}", key.as_str()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET / with the {kind}'s key: {e}"));
        assert_eq!(resp.status(), 200, "the {kind}'s key");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the {kind}'s key took {:?}",
            started.elapsed()
        );
        let set = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("sessionid="))
            .unwrap_or_else(|| panic!("no session cookie for the {kind}'s key"))
            .to_owned();
        let new_key = set["sessionid=".len()..].split(';').next().expect("value");
        assert!(
            SessionKey::parse(new_key).is_ok() && new_key != key.as_str(),
            "the {kind}'s visitor got {set}"
        );
        let body = resp.text().await.expect("body");
        assert!(
            body.contains("id=\"visit-count\">1<"),
            "the {kind}'s visitor is not on a fresh session"
        );
    }
    drop(demo);
    assert_in_place(&s, &planted);
}
