//! Fault injection with figures: a server is killed (SIGKILL, no clean shutdown) in the
//! middle of a mixed load and restarted, through the full stack built from
//! configuration (hashed keys, encrypted records). Checked: only typed "unavailable"
//! errors while it is down (no panic, no hang past the timeout), zero acknowledged writes
//! lost, and the time from the restart until every worker is served again. Each run
//! prints its figures (`--nocapture`); RELIABILITY.md quotes them.
//!
//! - Redis with `appendfsync always` (a private `redis-server` on a free port): runs by
//!   default, about 4 s.
//! - PostgreSQL (a private cluster made with `initdb` in a temp directory, run as the
//!   `postgres` user, stopped with `pg_ctl -m immediate`, i.e. crash recovery on start):
//!   opt-in, `cargo test -p integration-tests --test faults -- --ignored` (needs root
//!   for `runuser` and the PostgreSQL server binaries; about 5 s).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::servers::free_port;
use serde_json::json;
use session_core::{Config, EngineRegistry, Error, Record, SessionData, SessionKey, SessionStore};

const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const WORKERS: usize = 4;
const KEYS_PER_WORKER: usize = 10;

fn record(n: u64) -> Record {
    let mut d = SessionData::new();
    d.insert("n".into(), json!(n));
    d.insert("pad".into(), json!("x".repeat(200)));
    Record::with_ttl(d, 600)
}

fn registry() -> EngineRegistry {
    let r = EngineRegistry::new();
    backend_cache::register(&r);
    backend_db::register(&r);
    r
}

/// What one key's owner knows: the last acknowledged value and version, and a write
/// whose outcome is unknown (it failed with an outage error: the server may or may not
/// have applied it before the connection broke).
#[derive(Clone, Copy)]
struct Known {
    n: u64,
    version: u64,
    in_doubt: Option<u64>,
}

#[derive(Default)]
struct Tally {
    ops: u64,
    ok: u64,
    /// Outage errors by kind (`Backend`, `Timeout`).
    unavailable: BTreeMap<&'static str, u64>,
    /// Anything else: a wrong answer or an unexpected error. Must stay empty.
    wrong: Vec<String>,
    /// The slowest failing operation: an outage must not hang a request.
    slowest_failure: Duration,
    /// Per worker: when it was first served after the restart.
    first_ok_after_restart: Vec<Option<Instant>>,
}

struct Fault<'a> {
    name: &'a str,
    /// Kills the server.
    kill: Box<dyn FnMut() + Send + 'a>,
    /// Starts it again.
    restart: Box<dyn FnMut() + Send + 'a>,
    down_for: Duration,
    /// Longest an operation may take to fail while the server is down.
    failure_bound: Duration,
    /// Whether requests see the outage (false: a composite store must hide it).
    outage_visible: bool,
}

/// Runs the mixed load (three reads per CAS write, each worker on its own keys),
/// kills and restarts the server mid-way, and checks and prints the outcome.
async fn run_fault(store: Arc<dyn SessionStore>, mut fault: Fault<'_>) {
    let mut keys = Vec::new();
    for _ in 0..WORKERS * KEYS_PER_WORKER {
        keys.push(
            store
                .create(&record(0))
                .await
                .expect("create before the fault"),
        );
    }
    let known: Arc<Mutex<HashMap<SessionKey, Known>>> = Arc::new(Mutex::new(
        keys.iter()
            .map(|k| {
                (
                    k.clone(),
                    Known {
                        n: 0,
                        version: 1,
                        in_doubt: None,
                    },
                )
            })
            .collect(),
    ));
    let tally = Arc::new(Mutex::new(Tally {
        first_ok_after_restart: vec![None; WORKERS],
        ..Tally::default()
    }));
    let restarted_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let load_for = fault.down_for + Duration::from_millis(2500);
    let stop = Instant::now() + load_for;

    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mine = keys[w * KEYS_PER_WORKER..(w + 1) * KEYS_PER_WORKER].to_vec();
        let (store, known, tally, restarted_at) = (
            store.clone(),
            known.clone(),
            tally.clone(),
            restarted_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop && i < 100_000 {
                let k = &mine[(i as usize) % mine.len()];
                i += 1;
                let started = Instant::now();
                let write = i.is_multiple_of(4);
                let snapshot = known.lock().expect("lock")[k];
                let outcome: Result<(), Error> = if write {
                    let next = snapshot.n.max(snapshot.in_doubt.unwrap_or(0)) + 1;
                    match store.update(k, &record(next), Some(snapshot.version)).await {
                        Ok(v) => {
                            known.lock().expect("lock").insert(
                                k.clone(),
                                Known {
                                    n: next,
                                    version: v,
                                    in_doubt: None,
                                },
                            );
                            Ok(())
                        }
                        Err(e) if e.is_unavailable() => {
                            known.lock().expect("lock").insert(
                                k.clone(),
                                Known {
                                    in_doubt: Some(next),
                                    ..snapshot
                                },
                            );
                            Err(e)
                        }
                        // A write in doubt that did land makes the next CAS conflict:
                        // resynchronise from the store on the next read.
                        Err(Error::Conflict { .. }) if snapshot.in_doubt.is_some() => Ok(()),
                        Err(e) => Err(e),
                    }
                } else {
                    match store.load(k).await {
                        Ok(Some(r)) => {
                            let n = r.data["n"].as_u64().unwrap_or(u64::MAX);
                            if n == snapshot.n || Some(n) == snapshot.in_doubt {
                                known.lock().expect("lock").insert(
                                    k.clone(),
                                    Known {
                                        n,
                                        version: r.version,
                                        in_doubt: None,
                                    },
                                );
                                Ok(())
                            } else {
                                tally.lock().expect("lock").wrong.push(format!(
                                    "read {n}, acknowledged {} (in doubt {:?})",
                                    snapshot.n, snapshot.in_doubt
                                ));
                                Ok(())
                            }
                        }
                        Ok(None) => {
                            tally
                                .lock()
                                .expect("lock")
                                .wrong
                                .push("an acknowledged session vanished".into());
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                };
                let took = started.elapsed();
                {
                    let mut t = tally.lock().expect("lock");
                    t.ops += 1;
                    match outcome {
                        Ok(()) => {
                            t.ok += 1;
                            let restart = *restarted_at.lock().expect("lock");
                            if let Some(r) = restart
                                && started >= r
                                && t.first_ok_after_restart[w].is_none()
                            {
                                t.first_ok_after_restart[w] = Some(Instant::now());
                            }
                        }
                        Err(e) if e.is_unavailable() => {
                            let kind = match e {
                                Error::Timeout { .. } => "Timeout",
                                _ => "Backend",
                            };
                            *t.unavailable.entry(kind).or_insert(0) += 1;
                            t.slowest_failure = t.slowest_failure.max(took);
                        }
                        Err(e) => t.wrong.push(format!("unexpected error: {e}")),
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = tally.lock().expect("lock").ok;
    (fault.kill)();
    let killed = Instant::now();
    tokio::time::sleep(fault.down_for).await;
    let restart_started = Instant::now();
    (fault.restart)();
    let restart_took = restart_started.elapsed();
    *restarted_at.lock().expect("lock") = Some(Instant::now());
    let down = killed.elapsed();
    for t in tasks {
        t.await.expect("worker panicked");
    }

    // Every acknowledged write is there (or the one in doubt, if it landed).
    let mut lost = 0;
    let known: Vec<(SessionKey, Known)> = known
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (k, want) in &known {
        match store.load(k).await.expect("load after recovery") {
            Some(r) => {
                let n = r.data["n"].as_u64().unwrap_or(u64::MAX);
                if n != want.n && Some(n) != want.in_doubt {
                    lost += 1;
                }
            }
            None => lost += 1,
        }
    }

    let t = tally.lock().expect("lock");
    let restart = restarted_at.lock().expect("lock").expect("restarted");
    let recovered: Vec<Duration> = t
        .first_ok_after_restart
        .iter()
        .map(|f| f.map_or(Duration::MAX, |f| f - restart))
        .collect();
    let worst = recovered.iter().max().copied().unwrap_or(Duration::MAX);
    println!(
        "FAULT {}: {} ops by {WORKERS} workers over {:?} ({} ok; {} ok before the kill); \
         server down {:?} (restart took {:?}); outage errors {:?}; slowest failing op {:?}; \
         wrong answers {}; acknowledged writes lost {lost} of {}; every worker served \
         again {:?} after the restart",
        fault.name,
        t.ops,
        load_for,
        t.ok,
        before,
        down,
        restart_took,
        t.unavailable,
        t.slowest_failure,
        t.wrong.len(),
        keys.len(),
        worst,
    );
    assert!(
        t.wrong.is_empty(),
        "wrong answers: {:?}",
        &t.wrong[..t.wrong.len().min(5)]
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    if fault.outage_visible {
        assert!(!t.unavailable.is_empty(), "the outage was not noticed");
    } else {
        assert!(
            t.unavailable.is_empty(),
            "requests failed: {:?}",
            t.unavailable
        );
    }
    assert!(
        t.slowest_failure <= fault.failure_bound,
        "a failing operation took {:?}",
        t.slowest_failure
    );
    assert!(worst < Duration::from_secs(2), "recovery took {worst:?}");
}

// ---------------------------------------------------------------------------------
// Redis, append-only file fsynced on every write
// ---------------------------------------------------------------------------------

fn start_redis(port: u16, dir: &Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--protected-mode", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not start redis-server ({e}): install it with `apt-get install redis-server`"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_redis(port, dir.path()))));
    let config = Config::from_toml(&format!(
        "engine = \"cache\"\nhash_keys = true\n\
         [encryption]\nkeys = [\"{KEY}\"]\n\
         [cache]\nurl = \"redis://127.0.0.1:{port}\"\n\
         command_timeout_ms = 250\nconnect_timeout_ms = 250\n"
    ));
    let store = registry().build(&config).await.expect("redis store");
    let (s1, s2) = (server.clone(), server.clone());
    let path = dir.path().to_path_buf();
    run_fault(
        store,
        Fault {
            name: "redis (AOF always, SIGKILL)",
            kill: Box::new(move || {
                if let Some(mut c) = s1.lock().expect("lock").take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }),
            restart: Box::new(move || {
                *s2.lock().expect("lock") = Some(start_redis(port, &path));
            }),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
        },
    )
    .await;
    if let Some(mut c) = server.lock().expect("lock").take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------------------------
// cached_db: Redis (no persistence) in front of SQLite
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_hides_a_redis_kill_and_the_cache_comes_back() {
    use backend_cache::{CacheConfig, CacheStore};
    use backend_cached_db::{CachedDbConfig, CachedDbStore};
    use backend_db::{DbConfig, DbStore};
    use session_core::hashed::HashedKeys;

    let dir = tempfile::tempdir().expect("tmp");
    let redis_dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_redis(port, redis_dir.path()))));
    let settings = Config::from_toml(&format!("[encryption]\nkeys = [\"{KEY}\"]\n"))
        .settings()
        .expect("settings");
    let codec = settings.try_codec().expect("codec");
    let cache = CacheStore::connect(
        &CacheConfig {
            command_timeout_ms: 250,
            connect_timeout_ms: 250,
            ..CacheConfig::new(format!("redis://127.0.0.1:{port}"))
        },
        codec.clone(),
    )
    .await
    .expect("redis");
    let db = DbStore::connect(&DbConfig::new(format!(
        "sqlite://{}",
        dir.path().join("s.db").display()
    )))
    .await
    .expect("sqlite")
    .with_codec(codec);
    db.migrate().await.expect("migrate");
    let cached = Arc::new(CachedDbStore::with_config(
        Arc::new(cache),
        Arc::new(db),
        CachedDbConfig {
            retry_interval_ms: 100,
            ..CachedDbConfig::default()
        },
    ));
    let store: Arc<dyn SessionStore> = Arc::new(HashedKeys::new(cached.clone()));

    // Watches the cache's hit counter: when does the cache serve again after the restart?
    let restarted: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let cache_back: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let watcher = {
        let (cached, restarted, cache_back) =
            (cached.clone(), restarted.clone(), cache_back.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut hits_at_restart = None;
            while Instant::now() < deadline {
                let r = *restarted.lock().expect("lock");
                if let Some(r) = r {
                    let hits = cached.stats().hits;
                    let base = *hits_at_restart.get_or_insert(hits);
                    if hits > base {
                        *cache_back.lock().expect("lock") = Some(r.elapsed());
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (s1, s2, r2) = (server.clone(), server.clone(), restarted.clone());
    let path = redis_dir.path().to_path_buf();
    let before = cached.stats();
    run_fault(
        store,
        Fault {
            name: "cached_db (redis killed, sqlite durable)",
            kill: Box::new(move || {
                if let Some(mut c) = s1.lock().expect("lock").take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }),
            restart: Box::new(move || {
                // A cold cache: the old AOF is gone, as after a cache node replacement.
                let _ = std::fs::remove_file(path.join("appendonly.aof"));
                let _ = std::fs::remove_dir_all(path.join("appendonlydir"));
                *s2.lock().expect("lock") = Some(start_redis(port, &path));
                *r2.lock().expect("lock") = Some(Instant::now());
            }),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: false,
        },
    )
    .await;
    watcher.await.expect("watcher");
    let after = cached.stats();
    let back = *cache_back.lock().expect("lock");
    println!(
        "FAULT cached_db: cache errors {} during the outage, hits {} -> {}, misses {} -> {}; \
         the cache served a hit again {back:?} after the restart",
        after.cache_errors - before.cache_errors,
        before.hits,
        after.hits,
        before.misses,
        after.misses
    );
    assert!(
        after.cache_errors > before.cache_errors,
        "the outage was not noticed"
    );
    let back = back.expect("the cache never served again after the restart");
    assert!(
        back < Duration::from_secs(3),
        "cache recovery took {back:?}"
    );
    if let Some(mut c) = server.lock().expect("lock").take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL, a private cluster
// ---------------------------------------------------------------------------------

/// A private PostgreSQL cluster in a temp directory, owned by the `postgres` user.
struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn pg_bin() -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        found.retain(|p| p.join("initdb").exists());
        found.sort();
        found.pop().unwrap_or_else(|| {
            panic!("no PostgreSQL server binaries under /usr/lib/postgresql: apt-get install postgresql")
        })
    }

    fn run(&self, what: &str, cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn as_postgres(&self, tool: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
        c
    }

    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sessions-pg-fault-{}",
            integration_tests::servers::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let pg = PrivatePostgres {
            bin: Self::pg_bin(),
            dir,
            port: free_port(),
        };
        pg.run(
            "chown the cluster directory to postgres",
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.dir),
        );
        pg.run(
            "initdb",
            pg.as_postgres("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(pg.dir.join("data")),
        );
        pg.start();
        pg
    }

    fn start(&self) {
        self.run(
            "pg_ctl start",
            self.as_postgres("pg_ctl")
                .args(["-w", "-t", "30", "-D"])
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {} -c listen_addresses=127.0.0.1 -k {}",
                    self.port,
                    self.dir.display()
                ))
                .arg("start"),
        );
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint, as in a
    /// crash; the next start runs crash recovery from the WAL.
    fn crash(&self) {
        self.run(
            "pg_ctl stop -m immediate",
            self.as_postgres("pg_ctl")
                .args(["-w", "-m", "immediate", "-D"])
                .arg(self.dir.join("data"))
                .arg("stop"),
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault drill: starts a private PostgreSQL cluster as root (runuser); run with --ignored"]
async fn postgres_crashed_mid_load_loses_no_acknowledged_write() {
    let pg = Arc::new(PrivatePostgres::new());
    let config = Config::from_toml(&format!(
        "engine = \"db\"\nhash_keys = true\n\
         [encryption]\nkeys = [\"{KEY}\"]\n\
         [db]\nurl = \"{}\"\nacquire_timeout_ms = 500\nstatement_timeout_ms = 500\n",
        pg.url()
    ));
    let store = registry().build(&config).await.expect("postgres store");
    let (p1, p2) = (pg.clone(), pg.clone());
    run_fault(
        store,
        Fault {
            name: "postgres (private cluster, stop -m immediate)",
            kill: Box::new(move || p1.crash()),
            restart: Box::new(move || p2.start()),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
        },
    )
    .await;
}
