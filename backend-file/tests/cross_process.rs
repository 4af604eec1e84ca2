//! Several OS processes on one session directory: compare-and-set holds across them, and
//! a writer killed with SIGKILL mid-stream leaves only complete session files.
//!
//! The test binary re-executes itself as the child: the parent runs the ignored test
//! `child_process` with an environment variable naming the child's role.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backend_file::FileStore;
use serde_json::json;
use session_core::{Error, Record, SessionData, SessionKey, SessionStore};

const ROLE: &str = "BACKEND_FILE_TEST_ROLE";
const DIR: &str = "BACKEND_FILE_TEST_DIR";
const KEYS: &str = "BACKEND_FILE_TEST_KEYS";

/// Increments per task; each child process runs `TASKS` tasks.
const INCREMENTS: u64 = 50;
const TASKS: usize = 3;
/// Retries of one increment before the child gives up (a livelock would be a bug).
const MAX_RETRIES: u32 = 10_000;
/// No child may outlive this, whatever happens.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

fn counter(n: u64, pad: usize) -> Record {
    let mut data = SessionData::new();
    data.insert("n".into(), json!(n));
    // Padding makes a torn write (part old, part new) detectable as a decode error.
    data.insert("pad".into(), json!("x".repeat(pad)));
    for i in 0..8 {
        data.insert(format!("field{i}"), json!({"i": i, "n": n}));
    }
    Record::with_ttl(data, 3600)
}

fn open_store(dir: &Path) -> FileStore {
    FileStore::builder().dir(dir).build().expect("store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Entry point of the child processes; does nothing unless started by a parent test.
#[test]
#[ignore = "child process role: started by the tests of this file"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // libtest has printed `test child_process ... ` without a newline: end that line so
    // the parent reads the child's protocol lines whole.
    println!();
    let dir = PathBuf::from(std::env::var(DIR).expect("dir"));
    let keys: Vec<SessionKey> = std::env::var(KEYS)
        .expect("keys")
        .split(',')
        .map(|k| SessionKey::parse(k).expect("key"))
        .collect();
    match role.as_str() {
        "cas" => runtime().block_on(cas_child(&dir, keys)),
        "writer" => runtime().block_on(writer_child(&dir, keys)),
        other => panic!("unknown role {other}"),
    }
}

/// Increments counters by compare-and-set, printing `ACKED <key> <count>` per key.
async fn cas_child(dir: &Path, keys: Vec<SessionKey>) {
    let store = std::sync::Arc::new(open_store(dir));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, keys) = (store.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = vec![0u64; keys.len()];
            for i in 0..INCREMENTS as usize {
                let k = (i + t) % keys.len();
                let key = &keys[k];
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries < MAX_RETRIES, "increment never went through");
                    let cur = store.load(key).await.expect("load").expect("live");
                    let n = cur.data["n"].as_u64().expect("counter");
                    match store
                        .update(
                            key,
                            &counter(n + 1, 700 + (n as usize % 300)),
                            Some(cur.version),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
                acked[k] += 1;
            }
            acked
        }));
    }
    let mut total = vec![0u64; keys.len()];
    for t in tasks {
        for (sum, n) in total.iter_mut().zip(t.await.expect("task")) {
            *sum += n;
        }
    }
    for (key, n) in keys.iter().zip(total) {
        println!("ACKED {} {n}", key.as_str());
    }
}

/// Writes as fast as it can until killed: updates of the given keys with records of
/// varying size (up to ~256 KiB, so a kill often lands mid-write) and fresh creates.
/// Prints `ACK <key> <version>` after each acknowledged update.
async fn writer_child(dir: &Path, keys: Vec<SessionKey>) {
    let store = open_store(dir);
    let started = Instant::now();
    let mut i = 0usize;
    println!("READY");
    while started.elapsed() < CHILD_DEADLINE {
        i += 1;
        let key = &keys[i % keys.len()];
        let pad = (i * 7919) % (256 * 1024);
        let version = store
            .update(key, &counter(i as u64, pad), None)
            .await
            .expect("update");
        println!("ACK {} {version}", key.as_str());
        if i.is_multiple_of(4) {
            store
                .create(&counter(i as u64, pad / 2))
                .await
                .expect("create");
        }
    }
}

fn spawn_child(role: &str, dir: &Path, keys: &[SessionKey]) -> Child {
    let keys: Vec<&str> = keys.iter().map(SessionKey::as_str).collect();
    Command::new(std::env::current_exe().expect("own executable"))
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(KEYS, keys.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child process")
}

/// Forwards the child's stdout lines to a channel, so the parent can wait with a deadline.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_bounded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn session_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sess_"))
        })
        .collect()
}

#[test]
fn two_processes_compare_and_set_loses_no_acknowledged_increment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store = open_store(&dir);
    let rt = runtime();
    let keys: Vec<SessionKey> = (0..3)
        .map(|_| rt.block_on(store.create(&counter(0, 10))).expect("create"))
        .collect();

    let mut children: Vec<(Child, mpsc::Receiver<String>)> = (0..2)
        .map(|_| {
            let mut c = spawn_child("cas", &dir, &keys);
            let rx = lines_of(c.stdout.take().expect("stdout"));
            (c, rx)
        })
        .collect();

    // Meanwhile, this process reads: every read decodes and counters never go back.
    let mut last = vec![0u64; keys.len()];
    let mut reads = 0u64;
    let deadline = Instant::now() + CHILD_DEADLINE;
    while children
        .iter_mut()
        .any(|(c, _)| c.try_wait().expect("try_wait").is_none())
    {
        for (k, key) in keys.iter().enumerate() {
            let r = rt
                .block_on(store.load(key))
                .unwrap_or_else(|e| panic!("a concurrent read failed: {e}"))
                .expect("live");
            let n = r.data["n"].as_u64().expect("counter");
            assert!(n >= last[k], "counter went back from {} to {n}", last[k]);
            last[k] = n;
            reads += 1;
        }
        assert!(Instant::now() < deadline, "children never finished");
        // Leave the CPU to the writers: the point is overlap, not read volume.
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for (mut child, rx) in children {
        let status = wait_bounded(&mut child, "cas child");
        assert!(status.success(), "child failed: {status}");
        // The pipe closed with the child's exit, so this drains every line it printed.
        for line in rx.iter() {
            if let Some(rest) = line.strip_prefix("ACKED ") {
                let (k, n) = rest.split_once(' ').expect("ACKED line");
                *acked.entry(k.to_owned()).or_default() += n.parse::<u64>().expect("count");
            }
        }
    }
    let total: u64 = acked.values().sum();
    assert_eq!(total, 2 * TASKS as u64 * INCREMENTS, "every child reported");
    for key in &keys {
        let r = rt.block_on(store.load(key)).expect("load").expect("live");
        let want = acked.get(key.as_str()).copied().unwrap_or(0);
        assert_eq!(r.data["n"], json!(want), "lost or duplicated increments");
        assert_eq!(r.version, 1 + want, "one version per acknowledged write");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| !n.to_string_lossy().starts_with("sess_"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
    println!("cross-process CAS: {total} increments, {reads} concurrent reads");
}

#[test]
fn sigkill_mid_write_leaves_only_complete_files_and_keeps_acknowledged_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store = open_store(&dir);
    let rt = runtime();
    let keys: Vec<SessionKey> = (0..4)
        .map(|_| rt.block_on(store.create(&counter(0, 10))).expect("create"))
        .collect();

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..3 {
        let mut child = spawn_child("writer", &dir, &keys);
        let rx = lines_of(child.stdout.take().expect("stdout"));
        // libtest prints its own lines first; wait for the child's.
        let started = Instant::now();
        while rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writer child started")
            != "READY"
        {
            assert!(started.elapsed() < Duration::from_secs(60), "no READY line");
        }
        std::thread::sleep(Duration::from_millis(300));
        child.kill().expect("SIGKILL the writer"); // SIGKILL on Unix: no cleanup runs
        let status = wait_bounded(&mut child, "killed writer");
        assert!(
            !status.success(),
            "round {round}: the writer was not killed"
        );
        let mut acks = 0;
        for line in rx.iter() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (k, v) = rest.split_once(' ').expect("ACK line");
                let v: u64 = v.parse().expect("version");
                let e = acked.entry(k.to_owned()).or_default();
                *e = (*e).max(v);
                acks += 1;
            }
        }
        assert!(
            acks > 0,
            "round {round}: the writer acknowledged nothing in 300 ms"
        );

        // Every session file decodes, whatever instant the kill landed on.
        let files = session_files(&dir);
        assert!(files.len() >= keys.len());
        for path in &files {
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            let key = SessionKey::parse(&name["sess_".len()..]).expect("session file name");
            match rt.block_on(store.load(&key)) {
                Ok(Some(_)) => {}
                other => panic!("round {round}: {name} did not decode after SIGKILL: {other:?}"),
            }
        }
        // No acknowledged update is lost: the stored version is at least the last one
        // acknowledged (one more if the kill fell between the rename and the print).
        for key in &keys {
            let r = rt.block_on(store.load(key)).expect("load").expect("live");
            let a = acked.get(key.as_str()).copied().unwrap_or(1);
            assert!(
                r.version == a || r.version == a + 1,
                "round {round}: stored version {} but {a} was acknowledged",
                r.version
            );
            acked.insert(key.as_str().to_owned(), r.version);
        }
    }

    // Temp files a killed writer left are neither listed nor counted, and a sweep that
    // considers them stale removes them.
    let temps = std::fs::read_dir(&dir)
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".tmp_"))
        })
        .count();
    println!(
        "SIGKILL rounds: {} keys, {temps} temp file(s) left by killed writers",
        keys.len()
    );
    let count = rt.block_on(store.count()).expect("count");
    assert_eq!(count as usize, session_files(&dir).len());
    let sweeper = FileStore::builder()
        .dir(&dir)
        .stale_temp_after(Duration::ZERO)
        .build()
        .expect("store");
    assert_eq!(rt.block_on(sweeper.clear_expired()).expect("sweep"), 0);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("sess_")),
        "leftovers after the sweep: {names:?}"
    );
}
