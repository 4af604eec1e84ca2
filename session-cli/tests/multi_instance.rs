//! Many app instances, one store: three `sessions demo` processes (the built binary) on
//! three loopback ports share one store, for each of Redis Cluster, PostgreSQL, the
//! file engine's directory, and cached_db (Redis in front of PostgreSQL).
//!
//! Three drills run on each store, over HTTP as a browser meets the demo:
//!
//! - **concurrent**: a session created on one instance is read by the others; then
//!   several clients per visitor send writes at once (visit-counter increments with
//!   `GET /`, cart adds with `POST /cart/add`), every request to the next instance in
//!   turn. Every acknowledged increment and add must be in the session at the end, as
//!   every instance reads it (0 lost).
//! - **logout**: writers hammer one session on two instances while a third logs it out.
//!   The logout is seen at once by the others, a request sent after it never finds the
//!   old session (it gets a fresh key), in-flight writers get 400 (counted), and the old
//!   key stays gone from the store (no resurrection).
//! - **slow instance**: requests are sent to one instance, which is then stopped
//!   (SIGSTOP) for 1.5 s while another instance writes newer data, or logs the session
//!   out; then it is resumed (SIGCONT). Its late writes must not overwrite the newer
//!   data (compare-and-set re-applies them), and must not bring the ended session back.
//!   Where exactly the stop lands is timing: the assertions are the invariants (no
//!   acknowledged write lost, no resurrection), whatever the late requests' outcome.
//!   The stop is longer than the Redis command timeout (1 s by default), so on the
//!   Redis engines a late request whose store command was in flight may answer 503
//!   (the timeout elapsed from the resumed process's point of view): counted, allowed,
//!   never an acknowledgement.
//!
//! Each drill prints a `DRILL-RESULT` line. Namespaces (table, key prefixes, directory)
//! are unique per run and removed at the end. Every wait is bounded; a missing server
//! fails the test naming it.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::servers;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::Value;
use session_core::{Config, EngineRegistry, SessionKey, SessionStore};

const INSTANCES: usize = 3;
/// Visitors in the concurrent drill.
const VISITORS: usize = 3;
/// Clients sending writes at once for one visitor.
const CLIENTS: usize = 4;
/// Writes per client: increments and cart adds, alternating.
const WRITES: usize = 30;
/// Writers racing the logout, per round.
const LOGOUT_WRITERS: usize = 4;
/// Logout rounds at most: rounds stop early once an in-flight writer got its 400.
const LOGOUT_ROUNDS: usize = 6;
/// Requests sent to the instance about to be stopped.
const LATE_REQUESTS: usize = 8;
/// How long the slow instance stays stopped.
const STOPPED: Duration = Duration::from_millis(1500);
/// The longest one request may take (a stopped instance included) before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an instance may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

type Instance = support::DemoInstance;

/// Starts [`INSTANCES`] demos at once on `config`, each on a free loopback port.
fn start_instances(config: &Path, cwd: &Path) -> Vec<Instance> {
    // The 400s the drills provoke are logged as warnings: keep errors only.
    let mut instances: Vec<Instance> = (0..INSTANCES)
        .map(|_| support::spawn_demo(config, cwd, "error"))
        .collect();
    let deadline = Instant::now() + START_TIMEOUT;
    for instance in &mut instances {
        instance.wait_ready(deadline);
    }
    instances
}

/// The session cookie a response sets: `Some("")` for the deleting cookie.
fn set_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let rest = v.strip_prefix("sessionid=")?;
        let value = rest.split(';').next().unwrap_or_default();
        Some(value.trim_matches('"').to_owned())
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("client")
}

/// What one request got.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    cookie: Option<String>,
}

async fn get_page(c: &reqwest::Client, base: &str, key: Option<&str>) -> Reply {
    let mut req = c.get(format!("{base}/"));
    if let Some(k) = key {
        req = req.header(COOKIE, format!("sessionid={k}"));
    }
    let resp = req.send().await.expect("GET / answered");
    let reply = Reply {
        status: resp.status(),
        cookie: set_cookie(&resp),
    };
    let _ = resp.bytes().await;
    reply
}

async fn add(c: &reqwest::Client, base: &str, key: Option<&str>, item: &str) -> Reply {
    let mut req = c.post(format!("{base}/cart/add")).form(&[("item", item)]);
    if let Some(k) = key {
        req = req.header(COOKIE, format!("sessionid={k}"));
    }
    let resp = req.send().await.expect("POST /cart/add answered");
    let reply = Reply {
        status: resp.status(),
        cookie: set_cookie(&resp),
    };
    let _ = resp.bytes().await;
    reply
}

async fn logout(c: &reqwest::Client, base: &str, key: &str) -> Reply {
    let resp = c
        .post(format!("{base}/logout"))
        .header(COOKIE, format!("sessionid={key}"))
        .send()
        .await
        .expect("POST /logout answered");
    Reply {
        status: resp.status(),
        cookie: set_cookie(&resp),
    }
}

/// The session as `GET /state` shows it: visits and cart.
async fn state(c: &reqwest::Client, base: &str, key: &str) -> (u64, Vec<String>) {
    let resp = c
        .get(format!("{base}/state"))
        .header(COOKIE, format!("sessionid={key}"))
        .send()
        .await
        .expect("GET /state answered");
    assert_eq!(resp.status(), StatusCode::OK, "GET /state on {base}");
    let v: Value = resp.json().await.expect("state JSON");
    let visits = v["visits"].as_u64().expect("visits");
    let cart = v["cart"]
        .as_array()
        .expect("cart")
        .iter()
        .map(|i| i.as_str().expect("item").to_owned())
        .collect();
    (visits, cart)
}

/// The same session read on every instance: all must agree.
async fn state_everywhere(
    c: &reqwest::Client,
    instances: &[Instance],
    key: &str,
) -> (u64, Vec<String>) {
    let first = state(c, &instances[0].base, key).await;
    for i in &instances[1..] {
        assert_eq!(
            state(c, &i.base, key).await,
            first,
            "instances disagree on one session"
        );
    }
    first
}

/// A new visitor: `GET /` on `base` creates the session (visits = 1); its key.
async fn new_visitor(c: &reqwest::Client, base: &str) -> String {
    let r = get_page(c, base, None).await;
    assert_eq!(r.status, StatusCode::OK, "first visit");
    let key = r.cookie.expect("a session cookie on the first visit");
    assert!(!key.is_empty(), "a session key");
    key
}

/// The store under test, built in this process from the instances' configuration, for
/// the after-the-fact check that an ended session's key is absent.
async fn build_store(toml: &str) -> Arc<dyn SessionStore> {
    let registry = EngineRegistry::new();
    backend_file::register(&registry);
    backend_cache::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    registry
        .build(&Config::from_toml(toml))
        .await
        .expect("the store the instances use")
}

async fn assert_gone(store: &dyn SessionStore, key: &str) {
    let key = SessionKey::parse(key).expect("a well-formed key");
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "an ended session came back in the store"
    );
}

/// Figures of the concurrent drill.
#[derive(Debug, Default)]
struct Concurrent {
    requests: usize,
    acked: usize,
    errors: usize,
    lost: usize,
}

/// Several clients per visitor, every request to the next instance.
async fn concurrent_drill(instances: &Arc<Vec<Instance>>) -> Concurrent {
    let c = client();
    let mut figures = Concurrent::default();
    let mut visitors = Vec::new();
    for v in 0..VISITORS {
        // Created on one instance, read by the others.
        let key = new_visitor(&c, &instances[v % INSTANCES].base).await;
        for i in instances.iter() {
            assert_eq!(
                state(&c, &i.base, &key).await,
                (1, vec![]),
                "a session created on one instance, read on another"
            );
        }
        figures.requests += 1;
        figures.acked += 1;
        visitors.push(key);
    }
    let mut tasks = Vec::new();
    for (v, key) in visitors.iter().enumerate() {
        for cl in 0..CLIENTS {
            let key = key.clone();
            let instances = instances.clone();
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                // (acked increments, acked items, sent items, errors)
                let mut incs = 0u64;
                let mut items = Vec::new();
                let mut sent = Vec::new();
                let mut errors = 0usize;
                for n in 0..WRITES {
                    let base = &instances[(v + cl + n) % INSTANCES].base;
                    if n % 2 == 0 {
                        let r = get_page(&c, base, Some(&key)).await;
                        if r.status == StatusCode::OK
                            && r.cookie.as_deref().is_none_or(|k| k == key)
                        {
                            incs += 1;
                        } else {
                            errors += 1;
                            eprintln!("increment on {base}: {r:?}");
                        }
                    } else {
                        let item = format!("v{v}c{cl}n{n}");
                        sent.push(item.clone());
                        let r = add(&c, base, Some(&key), &item).await;
                        if r.status == StatusCode::SEE_OTHER
                            && r.cookie.as_deref().is_none_or(|k| k == key)
                        {
                            items.push(item);
                        } else {
                            errors += 1;
                            eprintln!("cart add on {base}: {r:?}");
                        }
                    }
                }
                (v, incs, items, sent, errors)
            }));
        }
    }
    let mut acked_incs = [0u64; VISITORS];
    let mut acked_items = vec![Vec::new(); VISITORS];
    let mut sent_items = vec![BTreeSet::new(); VISITORS];
    for t in tasks {
        let (v, incs, items, sent, errors) = t.await.expect("client task");
        figures.requests += WRITES;
        figures.acked += WRITES - errors;
        figures.errors += errors;
        acked_incs[v] += incs;
        acked_items[v].extend(items);
        sent_items[v].extend(sent);
    }
    let sent_incs = (CLIENTS * WRITES.div_ceil(2)) as u64;
    for (v, key) in visitors.iter().enumerate() {
        let (visits, cart) = state_everywhere(&c, instances, key).await;
        // Unacknowledged requests (none expected) may or may not have landed.
        assert!(
            visits <= 1 + sent_incs,
            "more visits ({visits}) than requests sent"
        );
        let lost_incs = (1 + acked_incs[v]).saturating_sub(visits);
        let lost_items = acked_items[v].iter().filter(|i| !cart.contains(i)).count();
        assert!(
            cart.iter().all(|i| sent_items[v].contains(i)),
            "cart items nobody sent: {cart:?}"
        );
        let unique: BTreeSet<_> = cart.iter().collect();
        assert_eq!(unique.len(), cart.len(), "an add applied twice: {cart:?}");
        figures.lost += usize::try_from(lost_incs).unwrap_or(usize::MAX) + lost_items;
    }
    figures
}

/// Figures of the logout drill.
#[derive(Debug, Default)]
struct Logout {
    rounds: usize,
    saved_before: usize,
    interrupted: usize,
    fresh: usize,
    errors: usize,
}

/// Writers on two instances race a logout on the third.
async fn logout_drill(instances: &Arc<Vec<Instance>>, store: &dyn SessionStore) -> Logout {
    let c = client();
    let mut figures = Logout::default();
    for round in 0..LOGOUT_ROUNDS {
        figures.rounds += 1;
        let home = round % INSTANCES;
        let key = new_visitor(&c, &instances[home].base).await;
        let logged_out: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());
        let mut writers = Vec::new();
        for w in 0..LOGOUT_WRITERS {
            let (c, key, instances) = (c.clone(), key.clone(), instances.clone());
            let logged_out = logged_out.clone();
            writers.push(tokio::spawn(async move {
                let base = &instances[(home + 1 + w % 2) % INSTANCES].base;
                let deadline = Instant::now() + Duration::from_secs(3);
                // (saved before the logout, interrupted with 400, given a fresh key, other)
                let mut out = (0, 0, 0, 0);
                for n in 0.. {
                    let sent_at = Instant::now();
                    let r = add(&c, base, Some(&key), &format!("w{w}n{n}")).await;
                    let sent_after_logout = logged_out.get().is_some_and(|t| sent_at > *t);
                    match (r.status, r.cookie.as_deref()) {
                        (StatusCode::SEE_OTHER, Some(k)) if k == key => {
                            assert!(
                                !sent_after_logout,
                                "a write sent after the logout was saved in the ended session"
                            );
                            out.0 += 1;
                        }
                        (StatusCode::BAD_REQUEST, None) => {
                            assert!(
                                !sent_after_logout,
                                "400 for a request sent after the logout"
                            );
                            out.1 += 1;
                            break;
                        }
                        (StatusCode::SEE_OTHER, Some(k)) if !k.is_empty() => {
                            out.2 += 1;
                            break;
                        }
                        other => {
                            eprintln!("writer on {base}: {other:?}");
                            out.3 += 1;
                            break;
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the logout never reached a writer"
                    );
                }
                out
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = logout(&c, &instances[home].base, &key).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "logout");
        assert_eq!(r.cookie.as_deref(), Some(""), "logout deletes the cookie");
        let _ = logged_out.set(Instant::now());
        // Seen at once by the others.
        for i in instances.iter() {
            assert_eq!(
                state(&c, &i.base, &key).await,
                (0, vec![]),
                "the ended session read on {} right after the logout",
                i.base
            );
        }
        for w in writers {
            let (before, interrupted, fresh, other) = w.await.expect("writer task");
            figures.saved_before += before;
            figures.interrupted += interrupted;
            figures.fresh += fresh;
            figures.errors += other;
        }
        assert_eq!(state_everywhere(&c, instances, &key).await, (0, vec![]));
        assert_gone(store, &key).await;
        if figures.interrupted > 0 {
            break;
        }
    }
    figures
}

/// Figures of the slow-instance drill.
#[derive(Debug, Default)]
struct Slow {
    late: usize,
    late_acked: usize,
    late_interrupted: usize,
    late_fresh: usize,
    /// 503s: the store command timed out from the resumed process's point of view.
    late_unavailable: usize,
    late_errors: usize,
    answered_after_resume: usize,
    newer_acked: usize,
    lost: usize,
    recovery: Duration,
}

/// Sends [`LATE_REQUESTS`] writes (cart adds and increments) to `slow`, stops it,
/// runs `meanwhile`, resumes it after [`STOPPED`]; returns the late replies and how
/// long after the resume the last one came.
async fn with_stopped<F, Fut>(
    instances: &Arc<Vec<Instance>>,
    slow: usize,
    key: &str,
    tag: &str,
    meanwhile: F,
) -> (Vec<(String, Reply, bool)>, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = client();
    let mut late = Vec::new();
    for n in 0..LATE_REQUESTS {
        let (c, key, instances) = (c.clone(), key.to_owned(), instances.clone());
        let item = format!("{tag}{n}");
        late.push(tokio::spawn(async move {
            let base = &instances[slow].base;
            let r = if n % 2 == 0 {
                add(&c, base, Some(&key), &item).await
            } else {
                get_page(&c, base, Some(&key)).await
            };
            (item, r, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    let stopped_at = Instant::now();
    instances[slow].signal("STOP");
    let work = meanwhile();
    let resume = async {
        tokio::time::sleep_until((stopped_at + STOPPED).into()).await;
        instances[slow].signal("CONT");
        Instant::now()
    };
    // The other instance's work may wait on the stopped one (a file lock it held):
    // resume on time regardless.
    let ((), resumed_at) = tokio::join!(work, resume);
    let mut replies = Vec::new();
    let mut last = resumed_at;
    for t in late {
        let (item, r, at) = t.await.expect("late request");
        last = last.max(at);
        replies.push((item, r, at > resumed_at));
    }
    (replies, last - resumed_at)
}

async fn slow_instance_drill(instances: &Arc<Vec<Instance>>, store: &dyn SessionStore) -> Slow {
    let c = client();
    let mut f = Slow::default();

    // 1. Newer data written meanwhile by another instance survives the late writes.
    let key = new_visitor(&c, &instances[0].base).await;
    let newer = std::sync::Mutex::new((0u64, Vec::new()));
    let (replies, recovery) = with_stopped(instances, 0, &key, "late", || async {
        for n in 0..4 {
            let item = format!("newer{n}");
            let r = add(&c, &instances[1].base, Some(&key), &item).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "newer add: {r:?}");
            let g = get_page(&c, &instances[2].base, Some(&key)).await;
            assert_eq!(g.status, StatusCode::OK, "newer increment: {g:?}");
            let mut newer = newer.lock().expect("lock");
            newer.0 += 1;
            newer.1.push(item);
        }
    })
    .await;
    let (newer_incs, newer_items) = newer.into_inner().expect("lock");
    f.newer_acked += usize::try_from(newer_incs).unwrap_or(0) + newer_items.len();
    f.recovery = recovery;
    let (visits, cart) = state_everywhere(&c, instances, &key).await;
    let mut acked_incs = 1 + newer_incs;
    let mut acked_items = newer_items;
    for (item, r, after) in &replies {
        f.late += 1;
        f.answered_after_resume += usize::from(*after);
        let same = r.cookie.as_deref().is_none_or(|k| k == key);
        match r.status {
            StatusCode::SEE_OTHER if same => acked_items.push(item.clone()),
            StatusCode::OK if same => acked_incs += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                f.late_unavailable += 1;
                continue;
            }
            _ => {
                eprintln!("late request: {r:?}");
                f.late_errors += 1;
                continue;
            }
        }
        f.late_acked += 1;
    }
    f.lost += usize::try_from(acked_incs.saturating_sub(visits)).unwrap_or(0);
    f.lost += acked_items.iter().filter(|i| !cart.contains(i)).count();

    // 2. A session logged out meanwhile on another instance stays ended.
    let key = new_visitor(&c, &instances[0].base).await;
    let (replies, recovery) = with_stopped(instances, 0, &key, "gone", || async {
        let r = logout(&c, &instances[1].base, &key).await;
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "logout while one is stopped"
        );
        assert_eq!(
            state(&c, &instances[2].base, &key).await,
            (0, vec![]),
            "logout seen at once by a third instance"
        );
    })
    .await;
    f.recovery = f.recovery.max(recovery);
    for (_, r, after) in &replies {
        f.late += 1;
        f.answered_after_resume += usize::from(*after);
        match (r.status, r.cookie.as_deref()) {
            // Saved before the logout reached the store: the logout then removed it.
            (StatusCode::SEE_OTHER | StatusCode::OK, Some(k)) if k == key => f.late_acked += 1,
            (StatusCode::OK, None) => f.late_acked += 1,
            (StatusCode::BAD_REQUEST, None) => f.late_interrupted += 1,
            (StatusCode::SEE_OTHER | StatusCode::OK, Some(k)) if !k.is_empty() => {
                f.late_fresh += 1;
            }
            (StatusCode::SERVICE_UNAVAILABLE, None) => f.late_unavailable += 1,
            other => {
                eprintln!("late request after the logout: {other:?}");
                f.late_errors += 1;
            }
        }
    }
    assert_eq!(
        state_everywhere(&c, instances, &key).await,
        (0, vec![]),
        "a late write brought an ended session back"
    );
    assert_gone(store, &key).await;
    f
}

/// The three drills on one store; prints the `DRILL-RESULT` lines.
async fn drills(store_name: &str, toml: &str, dir: &Path) {
    let config = dir.join("Sessions.toml");
    std::fs::write(&config, toml).expect("write config");
    let started = Instant::now();
    let instances = Arc::new(start_instances(&config, dir));
    let store = build_store(toml).await;

    let t = Instant::now();
    let f = concurrent_drill(&instances).await;
    println!(
        "DRILL-RESULT drill=concurrent store={store_name} instances={INSTANCES} visitors={VISITORS} \
         clients_per_visitor={CLIENTS} requests={} acked={} errors={} lost={} duration_ms={}",
        f.requests,
        f.acked,
        f.errors,
        f.lost,
        t.elapsed().as_millis()
    );
    assert_eq!(f.lost, 0, "acknowledged writes lost on {store_name}");
    assert_eq!(f.errors, 0, "requests failed on {store_name}");

    let t = Instant::now();
    let l = logout_drill(&instances, store.as_ref()).await;
    println!(
        "DRILL-RESULT drill=logout store={store_name} instances={INSTANCES} rounds={} \
         writers_per_round={LOGOUT_WRITERS} saved_before={} interrupted_400={} fresh_session={} \
         errors={} resurrected=0 duration_ms={}",
        l.rounds,
        l.saved_before,
        l.interrupted,
        l.fresh,
        l.errors,
        t.elapsed().as_millis()
    );
    assert_eq!(
        l.errors, 0,
        "writers racing a logout got errors on {store_name}"
    );
    assert!(
        l.interrupted > 0,
        "no in-flight writer got 400 in {} rounds on {store_name}",
        l.rounds
    );

    let s = slow_instance_drill(&instances, store.as_ref()).await;
    println!(
        "DRILL-RESULT drill=slow-instance store={store_name} instances={INSTANCES} stopped_ms={} \
         late_requests={} answered_after_resume={} late_acked={} late_interrupted_400={} late_fresh_session={} \
         late_503={} late_errors={} newer_acked={} lost={} resurrected=0 recovery_ms={}",
        STOPPED.as_millis(),
        s.late,
        s.answered_after_resume,
        s.late_acked,
        s.late_interrupted,
        s.late_fresh,
        s.late_unavailable,
        s.late_errors,
        s.newer_acked,
        s.lost,
        s.recovery.as_millis()
    );
    assert_eq!(
        s.lost, 0,
        "a late write overwrote newer data on {store_name}"
    );
    assert_eq!(s.late_errors, 0, "late requests failed on {store_name}");
    drop(instances);
    eprintln!("{store_name}: drills done in {:?}", started.elapsed());
}

fn cluster_toml(urls: &[String], prefix: &str) -> String {
    format!("engine = \"cache\"\n[cache]\nurls = {urls:?}\nkey_prefix = {prefix:?}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_redis_cluster() {
    let dir = tempfile::tempdir().expect("tmp");
    let urls = servers::redis_cluster_urls();
    let prefix = format!("multi-{}:", servers::unique_suffix());
    let config = CacheConfig {
        urls: urls.clone(),
        ..CacheConfig::default().with_key_prefix(&prefix)
    };
    let cleanup = CacheStore::connect(&config, session_core::CodecKind::Bincode.build(1 << 22))
        .await
        .unwrap_or_else(|e| servers::unreachable("The Redis Cluster", &urls.join(","), e));
    drills("redis-cluster", &cluster_toml(&urls, &prefix), dir.path()).await;
    cleanup.purge().await.expect("purge the run's keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_postgres() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = servers::postgres_url();
    let table = format!("multi_{}", servers::unique_suffix());
    let probe = DbStore::connect(&DbConfig {
        auto_migrate: false,
        ..DbConfig::new(&url).with_table(&table)
    })
    .await
    .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &url, e));
    let toml = format!("engine = \"db\"\n[db]\nurl = {url:?}\ntable = {table:?}\n");
    drills("postgres", &toml, dir.path()).await;
    probe.drop_table().await.expect("drop the run's table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_file_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let sessions = dir.path().join("sessions");
    let toml = format!(
        "engine = \"file\"\n[file]\npath = {:?}\n",
        sessions.to_string_lossy()
    );
    drills("file", &toml, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_cached_db_redis_over_postgres() {
    let dir = tempfile::tempdir().expect("tmp");
    let pg = servers::postgres_url();
    let redis = servers::redis_url();
    let suffix = servers::unique_suffix();
    let table = format!("multi_cdb_{suffix}");
    let prefix = format!("multi-cdb-{suffix}:");
    let probe = DbStore::connect(&DbConfig {
        auto_migrate: false,
        ..DbConfig::new(&pg).with_table(&table)
    })
    .await
    .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &pg, e));
    let cache = CacheStore::connect(
        &CacheConfig::new(redis.clone()).with_key_prefix(&prefix),
        session_core::CodecKind::Bincode.build(1 << 22),
    )
    .await
    .unwrap_or_else(|e| servers::unreachable("Redis", &redis, e));
    let toml = format!(
        "engine = \"cached_db\"\n[cached_db.cache]\nengine = \"cache\"\n\
         [cached_db.cache.cache]\nurl = {redis:?}\nkey_prefix = {prefix:?}\n\
         [cached_db.db]\nengine = \"db\"\n[cached_db.db.db]\nurl = {pg:?}\ntable = {table:?}\n"
    );
    drills("cached_db", &toml, dir.path()).await;
    cache.purge().await.expect("purge the run's cache keys");
    probe.drop_table().await.expect("drop the run's table");
}
