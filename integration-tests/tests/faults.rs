//! Fault injection with figures: a server is killed (SIGKILL, no clean shutdown) in the
//! middle of a mixed load and restarted, through the full stack built from
//! configuration (hashed keys, encrypted records). Checked: only typed "unavailable"
//! errors while it is down (no panic, no hang past the timeout), zero acknowledged writes
//! lost, and every worker served again within 5 s of the restart. Each run prints its
//! figures (`--nocapture`): a sentence (`FAULT ...`) and a machine-readable line
//! (`FAULT-RESULT drill=... key=value ...`) from which `scripts/reliability` writes
//! RELIABILITY.md's fault table.
//!
//! Every server here is private: started by the test on a free loopback port in a temp
//! directory and stopped when the test ends, pass or fail (the shared test servers are
//! never touched). A missing server binary fails the test with what to install.
//!
//! - Redis with `appendfsync always`, and `cached_db` (Redis in front of SQLite).
//! - PostgreSQL: a cluster made with `initdb`, crashed with `pg_ctl stop -m immediate`
//!   (crash recovery from the WAL on start). As root it runs as the `postgres` user
//!   (`runuser`); otherwise as the current user.
//! - MariaDB: a data directory made with `mariadb-install-db`, `mariadbd` SIGKILLed
//!   (InnoDB crash recovery on start), durable defaults (`innodb_flush_log_at_trx_commit
//!   = 1`, doublewrite on).
//! - Memcached: the bare `cache` engine (a restart empties it by nature: a session is
//!   then gone, never older or corrupt) and `cached_db` (Memcached in front of SQLite:
//!   no request fails, nothing is lost).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
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
/// Every worker must be served again within this long after the restart (the issue's
/// bound).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// How long the load goes on after the restart (once every worker was served again).
const LOAD_AFTER_RESTART: Duration = Duration::from_millis(1800);
/// A worker that met an outage error waits this long before its next request, as a
/// client would, instead of spinning on refused connections.
const ERROR_BACKOFF: Duration = Duration::from_millis(5);

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

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let euid = status.as_deref().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
    });
    match euid {
        Some(uid) => uid == "0",
        None => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0"),
    }
}

/// The first of `names` found on `PATH` or in `extra` directories.
fn find_binary(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(extra.iter().map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Runs `cmd` to completion within `limit`, failing the test with its output otherwise.
fn run_bounded(what: &str, cmd: &mut Command, limit: Duration) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    assert!(status.success(), "{what} failed ({status}): {out}");
}

/// Kills (SIGKILL) and reaps a child we started.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// What one key's owner knows: the last acknowledged value and version, when it was
/// acknowledged, and the highest value of writes whose outcome is unknown (they failed
/// with an outage error: the server may or may not have applied one of them before the
/// connection broke). Any value in `(n, in_doubt]` may have landed.
#[derive(Clone, Copy)]
struct Known {
    n: u64,
    version: u64,
    in_doubt: Option<u64>,
    acked_at: Instant,
}

impl Known {
    fn fresh() -> Self {
        Known {
            n: 0,
            version: 1,
            in_doubt: None,
            acked_at: Instant::now(),
        }
    }

    /// Whether a stored record is one this owner may see: the acknowledged version, or
    /// (with a newer version) a write in doubt that landed.
    fn accepts(&self, r: &Record) -> bool {
        let n = r.data.get("n").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
        (n == self.n && r.version == self.version)
            || (self.in_doubt.is_some_and(|d| n > self.n && n <= d) && r.version > self.version)
    }
}

/// When the server went down and when it was back (its restart returned).
#[derive(Clone, Copy, Default)]
struct Phase {
    killed_at: Option<Instant>,
    restarted_at: Option<Instant>,
}

impl Phase {
    /// Whether a session acknowledged at `acked_at` may be gone: only on a store that
    /// keeps nothing across a restart, and only if it was acknowledged before the
    /// restart.
    fn may_be_gone(&self, volatile: bool, acked_at: Instant) -> bool {
        volatile && self.killed_at.is_some() && self.restarted_at.is_none_or(|r| acked_at < r)
    }
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
    /// Sessions found gone (volatile stores only) and replaced by fresh ones.
    gone: u64,
}

struct Fault<'a> {
    /// The drill's id in its `FAULT-RESULT` line (a word: `redis`, `cached_db_redis`, ...).
    id: &'a str,
    name: &'a str,
    /// Kills the server.
    kill: Box<dyn FnMut() + Send + 'a>,
    /// Starts it again; returns once it accepts requests.
    restart: Box<dyn FnMut() + Send + 'a>,
    down_for: Duration,
    /// Longest an operation may take to fail while the server is down.
    failure_bound: Duration,
    /// Whether requests see the outage (false: a composite store must hide it).
    outage_visible: bool,
    /// Whether the server keeps nothing across a restart (bare Memcached): sessions
    /// acknowledged before the restart may then be gone (the visitor gets a fresh
    /// session), but never older or corrupt.
    volatile: bool,
}

/// A worker's session was found gone: it starts a fresh one in its place, as the
/// middleware does for a visitor whose session vanished.
async fn replace(
    store: &Arc<dyn SessionStore>,
    known: &Mutex<HashMap<SessionKey, Known>>,
    tally: &Mutex<Tally>,
    slot: &mut SessionKey,
) -> Result<(), Error> {
    let fresh = store.create(&record(0)).await?;
    tally.lock().expect("lock").gone += 1;
    let mut known = known.lock().expect("lock");
    known.remove(slot);
    known.insert(fresh.clone(), Known::fresh());
    *slot = fresh;
    Ok(())
}

/// Runs the mixed load (three reads per CAS write, each worker on its own keys),
/// kills and restarts the server mid-way, and checks and prints the outcome. Returns how
/// many sessions were gone after the restart (volatile stores only).
async fn run_fault(store: Arc<dyn SessionStore>, mut fault: Fault<'_>) -> u64 {
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
        keys.iter().map(|k| (k.clone(), Known::fresh())).collect(),
    ));
    let tally = Arc::new(Mutex::new(Tally {
        first_ok_after_restart: vec![None; WORKERS],
        ..Tally::default()
    }));
    let phase: Arc<Mutex<Phase>> = Arc::default();
    let volatile = fault.volatile;
    let load_started = Instant::now();
    // A hard stop, whatever happens to the restart.
    let hard_stop = load_started + fault.down_for + Duration::from_secs(30);

    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mut mine = keys[w * KEYS_PER_WORKER..(w + 1) * KEYS_PER_WORKER].to_vec();
        let (store, known, tally, phase) =
            (store.clone(), known.clone(), tally.clone(), phase.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while i < 200_000 {
                let now = Instant::now();
                let p = *phase.lock().expect("lock");
                if now >= hard_stop {
                    break;
                }
                if let Some(r) = p.restarted_at {
                    let served = tally.lock().expect("lock").first_ok_after_restart[w].is_some();
                    if (served && now >= r + LOAD_AFTER_RESTART)
                        || now >= r + RECOVERY_BOUND + Duration::from_millis(500)
                    {
                        break;
                    }
                }
                let slot = i % mine.len();
                i += 1;
                let k = mine[slot].clone();
                let started = Instant::now();
                let write = i.is_multiple_of(4);
                let snapshot = known.lock().expect("lock")[&k];
                let outcome: Result<(), Error> = if write {
                    let next = snapshot.n.max(snapshot.in_doubt.unwrap_or(0)) + 1;
                    match store
                        .update(&k, &record(next), Some(snapshot.version))
                        .await
                    {
                        Ok(v) => {
                            known.lock().expect("lock").insert(
                                k.clone(),
                                Known {
                                    n: next,
                                    version: v,
                                    in_doubt: None,
                                    acked_at: Instant::now(),
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
                        Err(Error::NotFound)
                            if phase
                                .lock()
                                .expect("lock")
                                .may_be_gone(volatile, snapshot.acked_at) =>
                        {
                            replace(&store, &known, &tally, &mut mine[slot]).await
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    match store.load(&k).await {
                        Ok(Some(r)) => {
                            if snapshot.accepts(&r) {
                                let n = r.data["n"].as_u64().unwrap_or(u64::MAX);
                                known.lock().expect("lock").insert(
                                    k.clone(),
                                    Known {
                                        n,
                                        version: r.version,
                                        in_doubt: None,
                                        acked_at: snapshot.acked_at,
                                    },
                                );
                            } else {
                                tally.lock().expect("lock").wrong.push(format!(
                                    "read n={:?} v{}, acknowledged n={} v{} (in doubt up to {:?})",
                                    r.data.get("n"),
                                    r.version,
                                    snapshot.n,
                                    snapshot.version,
                                    snapshot.in_doubt
                                ));
                            }
                            Ok(())
                        }
                        Ok(None)
                            if phase
                                .lock()
                                .expect("lock")
                                .may_be_gone(volatile, snapshot.acked_at) =>
                        {
                            replace(&store, &known, &tally, &mut mine[slot]).await
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
                let unavailable = outcome.as_ref().is_err_and(Error::is_unavailable);
                {
                    let mut t = tally.lock().expect("lock");
                    t.ops += 1;
                    match outcome {
                        Ok(()) => {
                            t.ok += 1;
                            if p.restarted_at.is_some_and(|r| started >= r)
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
                if unavailable {
                    tokio::time::sleep(ERROR_BACKOFF).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = tally.lock().expect("lock").ok;
    phase.lock().expect("lock").killed_at = Some(Instant::now());
    (fault.kill)();
    let killed = Instant::now();
    tokio::time::sleep(fault.down_for).await;
    let restart_started = Instant::now();
    (fault.restart)();
    let restart_took = restart_started.elapsed();
    phase.lock().expect("lock").restarted_at = Some(Instant::now());
    let down = killed.elapsed();
    for t in tasks {
        t.await.expect("worker panicked");
    }
    let load_took = load_started.elapsed();

    // Every acknowledged write is there (or a write in doubt, if it landed); on a
    // volatile store a session acknowledged before the restart may be gone instead.
    let mut lost = 0;
    let mut gone_at_end = 0;
    let p = *phase.lock().expect("lock");
    let known: Vec<(SessionKey, Known)> = known
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (k, want) in &known {
        match store.load(k).await.expect("load after recovery") {
            Some(r) if want.accepts(&r) => {}
            Some(_) => lost += 1,
            None if p.may_be_gone(volatile, want.acked_at) => gone_at_end += 1,
            None => lost += 1,
        }
    }

    let t = tally.lock().expect("lock");
    let restart = p.restarted_at.expect("restarted");
    let recovered: Vec<Duration> = t
        .first_ok_after_restart
        .iter()
        .map(|f| f.map_or(Duration::MAX, |f| f - restart))
        .collect();
    let worst = recovered.iter().max().copied().unwrap_or(Duration::MAX);
    let gone = if volatile {
        format!(
            "; sessions gone with the restart (fresh ones started) {} + {gone_at_end} never \
             read again",
            t.gone
        )
    } else {
        String::new()
    };
    println!(
        "FAULT {}: {} ops by {WORKERS} workers over {load_took:?} ({} ok; {} ok before the \
         kill); server down {down:?} (restart took {restart_took:?}); outage errors {:?}; \
         slowest failing op {:?}; wrong answers {}; acknowledged writes lost {lost} of {}{gone}; \
         every worker served again {worst:?} after the restart",
        fault.name,
        t.ops,
        t.ok,
        before,
        t.unavailable,
        t.slowest_failure,
        t.wrong.len(),
        known.len(),
    );
    // The same figures for scripts/reliability, which writes RELIABILITY.md's fault table
    // from these lines: `key=value` words, durations in whole milliseconds.
    println!(
        "FAULT-RESULT drill={} ops={} ok={} ok_before_kill={before} down_ms={} restart_ms={} \
         timeouts={} backend_errors={} slowest_failure_ms={} wrong={} lost={lost} \
         sessions={} gone={} recovery_ms={}",
        fault.id,
        t.ops,
        t.ok,
        down.as_millis(),
        restart_took.as_millis(),
        t.unavailable.get("Timeout").copied().unwrap_or(0),
        t.unavailable.get("Backend").copied().unwrap_or(0),
        t.slowest_failure.as_millis(),
        t.wrong.len(),
        known.len(),
        t.gone + gone_at_end,
        worst.as_millis(),
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
    assert!(worst < RECOVERY_BOUND, "recovery took {worst:?}");
    t.gone + gone_at_end
}

// ---------------------------------------------------------------------------------
// Redis, append-only file fsynced on every write
// ---------------------------------------------------------------------------------

fn start_redis(port: u16, dir: &Path) -> Child {
    let mut child = Command::new("redis-server")
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server did not start on {port}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_redis(port, dir.path()))));
    let _stop = KillOnDrop(server.clone());
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
            id: "redis",
            name: "redis (AOF always, SIGKILL)",
            kill: Box::new(move || kill(&mut s1.lock().expect("lock"))),
            restart: Box::new(move || {
                *s2.lock().expect("lock") = Some(start_redis(port, &path));
            }),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
            volatile: false,
        },
    )
    .await;
}

/// Kills the server child it shares when dropped: on success and on a failed assertion.
struct KillOnDrop(Arc<Mutex<Option<Child>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kill(&mut child);
    }
}

// ---------------------------------------------------------------------------------
// cached_db: a cache without persistence in front of SQLite
// ---------------------------------------------------------------------------------

/// Runs the load on `cache` in front of SQLite (through `HashedKeys` and encryption),
/// kills the cache server (`kill`) and brings it back empty (`restart`): no request may
/// fail, nothing may be lost, and the cache must serve hits again after the restart.
async fn cached_db_drill(
    id: &str,
    name: &str,
    cache: backend_cache::CacheConfig,
    kill: impl FnMut() + Send,
    mut restart: impl FnMut() + Send,
) {
    use backend_cache::CacheStore;
    use backend_cached_db::{CachedDbConfig, CachedDbStore};
    use backend_db::{DbConfig, DbStore};
    use session_core::hashed::HashedKeys;
    use session_core::{StoreLayerExt, TimeoutLayer};

    let dir = tempfile::tempdir().expect("tmp");
    let settings = Config::from_toml(&format!("[encryption]\nkeys = [\"{KEY}\"]\n"))
        .settings()
        .expect("settings");
    let codec = settings.try_codec().expect("codec");
    // Built directly, the cache wears the deadline the `cache` engine would give it.
    let deadline = TimeoutLayer::new(cache.command_timeout());
    let cache = CacheStore::connect(&cache, codec.clone())
        .await
        .expect("cache")
        .with_layer(deadline);
    let db = DbStore::connect(&DbConfig::new(format!(
        "sqlite://{}",
        dir.path().join("s.db").display()
    )))
    .await
    .expect("sqlite")
    .with_codec(codec);
    db.migrate().await.expect("migrate");
    let cached = Arc::new(CachedDbStore::with_config(
        cache,
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
            let deadline = Instant::now() + Duration::from_secs(40);
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
                    if r.elapsed() > Duration::from_secs(10) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let r2 = restarted.clone();
    let before = cached.stats();
    run_fault(
        store,
        Fault {
            id,
            name,
            kill: Box::new(kill),
            restart: Box::new(move || {
                restart();
                *r2.lock().expect("lock") = Some(Instant::now());
            }),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: false,
            volatile: false,
        },
    )
    .await;
    watcher.await.expect("watcher");
    let after = cached.stats();
    let back = *cache_back.lock().expect("lock");
    println!(
        "FAULT {name}: cache errors {} during the outage, hits {} -> {}, misses {} -> {}; \
         the cache served a hit again {back:?} after the restart",
        after.cache_errors - before.cache_errors,
        before.hits,
        after.hits,
        before.misses,
        after.misses
    );
    println!(
        "FAULT-RESULT drill={id} cache_errors={} cache_back_ms={}",
        after.cache_errors - before.cache_errors,
        back.map_or_else(|| "never".to_owned(), |b| b.as_millis().to_string())
    );
    assert!(
        after.cache_errors > before.cache_errors,
        "the outage was not noticed"
    );
    let back = back.expect("the cache never served again after the restart");
    assert!(back < RECOVERY_BOUND, "cache recovery took {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_hides_a_redis_kill_and_the_cache_comes_back() {
    let redis_dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_redis(port, redis_dir.path()))));
    let _stop = KillOnDrop(server.clone());
    let (s1, s2) = (server.clone(), server.clone());
    let path = redis_dir.path().to_path_buf();
    cached_db_drill(
        "cached_db_redis",
        "cached_db (redis killed, sqlite durable)",
        backend_cache::CacheConfig {
            command_timeout_ms: 250,
            connect_timeout_ms: 250,
            ..backend_cache::CacheConfig::new(format!("redis://127.0.0.1:{port}"))
        },
        move || kill(&mut s1.lock().expect("lock")),
        move || {
            // A cold cache: the old AOF is gone, as after a cache node replacement.
            let _ = std::fs::remove_file(path.join("appendonly.aof"));
            let _ = std::fs::remove_dir_all(path.join("appendonlydir"));
            *s2.lock().expect("lock") = Some(start_redis(port, &path));
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------
// PostgreSQL, a private cluster
// ---------------------------------------------------------------------------------

/// A private PostgreSQL cluster in a temp directory: owned by the `postgres` user when
/// we are root (PostgreSQL refuses to run as root), else by the current user.
struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn pg_bin() -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        found.retain(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file());
        found.sort();
        found
            .pop()
            .or_else(|| {
                find_binary(&["initdb"], &["/usr/pgsql/bin", "/usr/local/pgsql/bin"])
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| d.join("pg_ctl").is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "the PostgreSQL server binaries (initdb, pg_ctl) were not found under \
                     /usr/lib/postgresql/*/bin or on PATH: install them (Debian/Ubuntu: \
                     `apt-get install postgresql`) or run `scripts/test`"
                )
            })
    }

    fn tool(&self, tool: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        }
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
            as_postgres: is_root(),
        };
        if pg.as_postgres {
            run_bounded(
                "chown the cluster directory to postgres (as root the cluster runs as the \
                 `postgres` user, which the PostgreSQL packages create)",
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&pg.dir),
                Duration::from_secs(10),
            );
        }
        run_bounded(
            "initdb",
            pg.tool("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(pg.dir.join("data")),
            Duration::from_secs(60),
        );
        pg.start();
        pg
    }

    fn start(&self) {
        run_bounded(
            "pg_ctl start",
            self.tool("pg_ctl")
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
            Duration::from_secs(40),
        );
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint, as in a
    /// crash; the next start runs crash recovery from the WAL.
    fn crash(&self) {
        run_bounded(
            "pg_ctl stop -m immediate",
            self.tool("pg_ctl")
                .args(["-w", "-t", "30", "-m", "immediate", "-D"])
                .arg(self.dir.join("data"))
                .arg("stop"),
            Duration::from_secs(40),
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `db` store on `url` as the drills build it: from configuration, with hashed keys,
/// encryption and 500 ms acquire and statement timeouts.
async fn hardened_db_store(url: &str) -> Arc<dyn SessionStore> {
    let config = Config::from_toml(&format!(
        "engine = \"db\"\nhash_keys = true\n\
         [encryption]\nkeys = [\"{KEY}\"]\n\
         [db]\nurl = \"{url}\"\nacquire_timeout_ms = 500\nstatement_timeout_ms = 500\n"
    ));
    registry()
        .build(&config)
        .await
        .unwrap_or_else(|e| panic!("db store on {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_mid_load_loses_no_acknowledged_write() {
    let pg = Arc::new(PrivatePostgres::new());
    let store = hardened_db_store(&pg.url()).await;
    let (p1, p2) = (pg.clone(), pg.clone());
    run_fault(
        store,
        Fault {
            id: "postgres",
            name: "postgres (private cluster, stop -m immediate)",
            kill: Box::new(move || p1.crash()),
            restart: Box::new(move || p2.start()),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
            volatile: false,
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------
// MariaDB, a private server
// ---------------------------------------------------------------------------------

/// A private MariaDB server: a data directory made with `mariadb-install-db` in a temp
/// directory, `mariadbd` on a free loopback port with its own socket and pid file and
/// no option files read (`--no-defaults`). Killed when dropped.
struct PrivateMariaDb {
    server: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
    child: Mutex<Option<Child>>,
}

impl PrivateMariaDb {
    const INSTALL_HINT: &str = "install the MariaDB server (Debian/Ubuntu: `apt-get install \
                                mariadb-server`) or run `scripts/test`";

    fn new() -> Self {
        const SBIN: &[&str] = &[
            "/usr/sbin",
            "/usr/local/sbin",
            "/usr/libexec",
            "/usr/local/mysql/bin",
            "/usr/local/bin",
            "/usr/bin",
        ];
        let server = find_binary(&["mariadbd", "mysqld"], SBIN).unwrap_or_else(|| {
            panic!(
                "the MariaDB server binary (mariadbd) was not found on PATH or in {SBIN:?}: {}",
                Self::INSTALL_HINT
            )
        });
        let install = find_binary(&["mariadb-install-db", "mysql_install_db"], SBIN)
            .unwrap_or_else(|| {
                panic!(
                    "mariadb-install-db (or mysql_install_db) was not found on PATH or in \
                     {SBIN:?}: {}",
                    Self::INSTALL_HINT
                )
            });
        let db = PrivateMariaDb {
            server,
            dir: tempfile::Builder::new()
                .prefix("sessions-mariadb-fault-")
                .tempdir()
                .expect("temp dir"),
            port: free_port(),
            as_root: is_root(),
            child: Mutex::new(None),
        };
        // Root over TCP without a password, and the database the store uses; run at
        // every start (idempotent) before the server takes connections.
        std::fs::write(
            db.dir.path().join("init.sql"),
            "CREATE DATABASE IF NOT EXISTS test;\n\
             CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n",
        )
        .expect("init.sql");
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", db.data().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(Self::SMALL);
        if db.as_root {
            cmd.arg("--user=root");
        }
        run_bounded("mariadb-install-db", &mut cmd, Duration::from_secs(90));
        db.start();
        db
    }

    /// A small, fast-starting server; durability settings stay at their defaults
    /// (`innodb_flush_log_at_trx_commit = 1`, doublewrite on).
    const SMALL: [&str; 2] = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"];

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `mariadbd` (InnoDB crash recovery included after a kill) and waits until
    /// it greets clients.
    fn start(&self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--init-file={}", d.join("init.sql").display()))
            .arg("--skip-name-resolve")
            .args(Self::SMALL)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.as_root {
            cmd.arg("--user=root");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start mariadbd ({e}): {}", Self::INSTALL_HINT));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.greets() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "mariadbd did not come up on port {} ({}); the end of its log:\n{}",
                    self.port,
                    exited.map_or("timed out".to_owned(), |s| s.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().expect("lock") = Some(child);
    }

    /// Whether the server sends its handshake greeting (protocol version 10): a
    /// listening socket alone is not enough, the server queues connections before it
    /// serves them.
    fn greets(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut head = [0u8; 5];
        s.read_exact(&mut head).is_ok() && head[4] == 10
    }

    /// SIGKILL: no shutdown, no flush beyond what each commit already made durable.
    fn kill(&self) {
        kill(&mut self.child.lock().expect("lock"));
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kill(&mut child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_mid_load_loses_no_acknowledged_write() {
    let db = Arc::new(PrivateMariaDb::new());
    let store = hardened_db_store(&db.url()).await;
    let (d1, d2) = (db.clone(), db.clone());
    run_fault(
        store,
        Fault {
            id: "mariadb",
            name: "mariadb (private server, SIGKILL)",
            kill: Box::new(move || d1.kill()),
            restart: Box::new(move || d2.start()),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
            volatile: false,
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------
// Memcached, a private server
// ---------------------------------------------------------------------------------

/// Starts a private `memcached` on `port` (no persistence: a restart empties it) and
/// waits until it answers `version`.
fn start_memcached(port: u16) -> Child {
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "0", "-m", "64", "-t", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        // memcached refuses to run as root unless told which user to be.
        cmd.args(["-u", "root"]);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "could not start memcached ({e}): install it (`apt-get install memcached`) or run \
             `scripts/test`, which installs it"
        )
    });
    let answers = || {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 8];
        s.write_all(b"version\r\n").is_ok()
            && s.read_exact(&mut buf).is_ok()
            && buf.starts_with(b"VERSION")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("private memcached did not start on port {port} ({exited:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_killed_mid_load_gives_typed_errors_and_never_an_old_session() {
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_memcached(port))));
    let _stop = KillOnDrop(server.clone());
    let config = Config::from_toml(&format!(
        "engine = \"cache\"\nhash_keys = true\n\
         [encryption]\nkeys = [\"{KEY}\"]\n\
         [cache]\nurl = \"memcache://127.0.0.1:{port}\"\n\
         command_timeout_ms = 250\nconnect_timeout_ms = 250\npool_size = 8\n"
    ));
    let store = registry().build(&config).await.expect("memcached store");
    let (s1, s2) = (server.clone(), server.clone());
    let gone = run_fault(
        store,
        Fault {
            id: "memcached",
            name: "memcached (bare cache engine, SIGKILL)",
            kill: Box::new(move || kill(&mut s1.lock().expect("lock"))),
            restart: Box::new(move || {
                *s2.lock().expect("lock") = Some(start_memcached(port));
            }),
            down_for: Duration::from_millis(1000),
            failure_bound: Duration::from_millis(1500),
            outage_visible: true,
            volatile: true,
        },
    )
    .await;
    // A restarted Memcached is empty: the drill did see sessions go (and start afresh).
    assert!(gone > 0, "no session was gone after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_hides_a_memcached_kill_and_the_cache_comes_back() {
    let port = free_port();
    let server = Arc::new(Mutex::new(Some(start_memcached(port))));
    let _stop = KillOnDrop(server.clone());
    let (s1, s2) = (server.clone(), server.clone());
    cached_db_drill(
        "cached_db_memcached",
        "cached_db (memcached killed, sqlite durable)",
        backend_cache::CacheConfig {
            command_timeout_ms: 250,
            connect_timeout_ms: 250,
            pool_size: 8,
            ..backend_cache::CacheConfig::new(format!("memcache://127.0.0.1:{port}"))
        },
        move || kill(&mut s1.lock().expect("lock")),
        move || *s2.lock().expect("lock") = Some(start_memcached(port)),
    )
    .await;
}
