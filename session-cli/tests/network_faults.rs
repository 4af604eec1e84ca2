//! Network faults between an app instance and its store, on the built `sessions demo`:
//! instance A reaches the store through a small fault proxy, instance B directly. The
//! proxy adds latency, then drops every connection and refuses new ones, then
//! blackholes (accepts, holds every byte, answers nothing), then heals; on Redis (the
//! `cache` engine) and PostgreSQL (the `db` engine).
//!
//! Asserted: every request to A answers within the store's configured deadlines plus a
//! margin (nothing hangs); every failure is a 503; no acknowledged write is lost
//! (read back through both instances); after the fault heals, A reads what B wrote
//! during and after the fault (no stale read); every worker is served again within 5 s
//! (the recovery time is printed in a `DRILL-RESULT` line).
//!
//! The proxy is [`integration_tests::fault_proxy`].

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::fault_proxy::{FaultProxy, Mode};
use integration_tests::servers;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::Value;

type Instance = support::DemoInstance;

fn start_instance(config: &Path, cwd: &Path) -> Instance {
    // Every failure the faults cause is logged at `error`: keep the output short.
    let mut instance = support::spawn_demo(config, cwd, "off");
    instance.wait_ready(Instant::now() + Duration::from_secs(20));
    instance
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let rest = v.to_str().ok()?.strip_prefix("sessionid=")?;
        Some(rest.split(';').next()?.trim_matches('"').to_owned())
    })
}

/// What one request got: its status (None: no answer at all), its session cookie,
/// and how long it took.
struct Reply {
    status: Option<StatusCode>,
    cookie: Option<String>,
    took: Duration,
}

async fn add(c: &reqwest::Client, base: &str, key: &str, item: &str) -> Reply {
    let t = Instant::now();
    let r = c
        .post(format!("{base}/cart/add"))
        .header(COOKIE, format!("sessionid={key}"))
        .form(&[("item", item)])
        .send()
        .await;
    match r {
        Ok(resp) => Reply {
            status: Some(resp.status()),
            cookie: session_cookie(&resp),
            took: t.elapsed(),
        },
        Err(e) => {
            eprintln!("POST {base}/cart/add: {e}");
            Reply {
                status: None,
                cookie: None,
                took: t.elapsed(),
            }
        }
    }
}

/// The cart as `base` reads it (`None` for a failed read: a 503 during a fault).
async fn cart(c: &reqwest::Client, base: &str, key: &str) -> Result<Vec<String>, StatusCode> {
    let resp = c
        .get(format!("{base}/state"))
        .header(COOKIE, format!("sessionid={key}"))
        .send()
        .await
        .map_err(|_| StatusCode::GATEWAY_TIMEOUT)?;
    if resp.status() != StatusCode::OK {
        return Err(resp.status());
    }
    let v: Value = resp.json().await.expect("state JSON");
    Ok(v["cart"]
        .as_array()
        .expect("cart")
        .iter()
        .map(|i| i.as_str().expect("item").to_owned())
        .collect())
}

/// A session created through `base` with one item; its key.
async fn new_session(c: &reqwest::Client, base: &str, item: &str) -> String {
    let resp = c
        .post(format!("{base}/cart/add"))
        .form(&[("item", item)])
        .send()
        .await
        .expect("first add");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "first add");
    session_cookie(&resp).expect("a session cookie")
}

/// Load figures of one fault phase.
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: usize,
    unavailable: usize,
    other: usize,
    slowest_ok: Duration,
    slowest_failure: Duration,
    /// Adds acknowledged.
    acked: Vec<String>,
}

const WORKERS: usize = 3;
/// Added one way, so 100 ms per round trip: well under every timeout configured here.
const LATENCY: Duration = Duration::from_millis(50);
/// Margin on top of the store's deadlines for a request's own work and scheduling.
const MARGIN: Duration = Duration::from_millis(1500);

/// The drill on one store. `a_toml`/`b_toml`: the configurations of instance A
/// (through the proxy) and B (direct); `op_deadline`: the longest one store operation
/// may take before the store gives up (the configured timeouts).
async fn drill(store: &str, proxy: &FaultProxy, a_toml: &str, b_toml: &str, op_deadline: Duration) {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, cb) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&ca, a_toml).expect("config a");
    std::fs::write(&cb, b_toml).expect("config b");
    let a = start_instance(&ca, dir.path());
    let b = start_instance(&cb, dir.path());
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    // A request does at most a load and a save (plus conflict retries, none here: one
    // writer per session), each bounded by the store's deadline.
    let bound = op_deadline * 2 + MARGIN;

    let mut keys = Vec::new();
    for w in 0..WORKERS {
        keys.push(new_session(&c, &a.base, &format!("w{w}-first")).await);
    }
    let phase = Arc::new(std::sync::Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // First success of each worker at or after `healed`.
    let served_again: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; WORKERS]));
    let healed: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());
    let mut workers = Vec::new();
    for (w, key) in keys.iter().enumerate() {
        let (c, base, key) = (c.clone(), a.base.clone(), key.clone());
        let (phase, stop, served_again, healed) = (
            phase.clone(),
            stop.clone(),
            served_again.clone(),
            healed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tallies = vec![Tally::default(); 5];
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = *phase.lock().expect("phase");
                let item = format!("w{w}p{p}n{n}");
                n += 1;
                let sent = Instant::now();
                let r = add(&c, &base, &key, &item).await;
                // Counted in the phase it was answered in: a request sent just before
                // a fault and cut by it is that fault's.
                let t = &mut tallies[*phase.lock().expect("phase")];
                assert!(
                    r.took <= bound,
                    "{item}: answered after {:?}, over the {bound:?} bound",
                    r.took
                );
                match r.status {
                    Some(StatusCode::SEE_OTHER) if r.cookie.as_deref() == Some(key.as_str()) => {
                        t.ok += 1;
                        t.slowest_ok = t.slowest_ok.max(r.took);
                        t.acked.push(item);
                        if healed.get().is_some_and(|h| sent >= *h) {
                            let mut s = served_again.lock().expect("served");
                            s[w].get_or_insert_with(Instant::now);
                        }
                    }
                    Some(StatusCode::SERVICE_UNAVAILABLE) => {
                        t.unavailable += 1;
                        t.slowest_failure = t.slowest_failure.max(r.took);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => {
                        eprintln!("{item}: {other:?}");
                        t.other += 1;
                        t.slowest_failure = t.slowest_failure.max(r.took);
                    }
                }
            }
            tallies
        }));
    }

    // Phases: 0 pass, 1 latency, 2 refuse, 3 blackhole, 4 healed.
    let set = |p: usize, m: Mode| {
        *phase.lock().expect("phase") = p;
        proxy.set(m);
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    set(1, Mode::Delay(LATENCY));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set(2, Mode::Refuse);
    // B keeps writing while A is cut off: A must read these after the fault.
    let mut from_b = Vec::new();
    for (w, key) in keys.iter().enumerate() {
        let item = format!("w{w}-from-b-during");
        let r = add(&c, &b.base, key, &item).await;
        assert_eq!(r.status, Some(StatusCode::SEE_OTHER), "B during the fault");
        from_b.push((w, item));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set(3, Mode::Blackhole);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let healed_at = Instant::now();
    let _ = healed.set(healed_at);
    set(4, Mode::Pass);
    // Every worker served again within 5 s.
    let deadline = healed_at + Duration::from_secs(5);
    loop {
        let done = served_again
            .lock()
            .expect("served")
            .iter()
            .all(Option::is_some);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{store}: a worker was not served again within 5 s of the fault healing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovery = served_again
        .lock()
        .expect("served")
        .iter()
        .flatten()
        .map(|t| t.duration_since(healed_at))
        .max()
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut phases = vec![Tally::default(); 5];
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); WORKERS];
    for (w, h) in workers.into_iter().enumerate() {
        for (p, t) in h.await.expect("worker").into_iter().enumerate() {
            let q = &mut phases[p];
            q.ok += t.ok;
            q.unavailable += t.unavailable;
            q.other += t.other;
            q.slowest_ok = q.slowest_ok.max(t.slowest_ok);
            q.slowest_failure = q.slowest_failure.max(t.slowest_failure);
            acked[w].extend(t.acked);
        }
        acked[w].push(format!("w{w}-first"));
    }
    for (w, item) in from_b {
        acked[w].push(item);
    }
    // After the fault: B writes, A must read it at once (no stale read), and every
    // acknowledged add is there through both instances.
    let mut stale = 0;
    let mut lost = 0;
    let mut acked_total = 0;
    for (w, key) in keys.iter().enumerate() {
        let item = format!("w{w}-from-b-after");
        let r = add(&c, &b.base, key, &item).await;
        assert_eq!(r.status, Some(StatusCode::SEE_OTHER), "B after the fault");
        acked[w].push(item.clone());
        let via_a = cart(&c, &a.base, key).await.expect("A reads after healing");
        let via_b = cart(&c, &b.base, key).await.expect("B reads");
        assert_eq!(via_a, via_b, "{store}: A and B disagree after the fault");
        stale += usize::from(!via_a.contains(&item));
        lost += acked[w].iter().filter(|i| !via_a.contains(i)).count();
        acked_total += acked[w].len();
    }
    let requests: usize = phases.iter().map(|t| t.ok + t.unavailable + t.other).sum();
    println!(
        "DRILL-RESULT drill=network store={store} instances=2 workers={WORKERS} requests={requests} \
         latency_ms={} latency_ok={} latency_503={} latency_slowest_ms={} refuse_ok={} refuse_503={} \
         refuse_slowest_failure_ms={} blackhole_ok={} blackhole_503={} blackhole_slowest_failure_ms={} \
         other_errors={} bound_ms={} acked={acked_total} lost={lost} stale={stale} recovery_ms={}",
        LATENCY.as_millis() * 2,
        phases[1].ok,
        phases[1].unavailable,
        phases[1]
            .slowest_ok
            .max(phases[1].slowest_failure)
            .as_millis(),
        phases[2].ok,
        phases[2].unavailable,
        phases[2].slowest_failure.as_millis(),
        phases[3].ok,
        phases[3].unavailable,
        phases[3].slowest_failure.as_millis(),
        phases.iter().map(|t| t.other).sum::<usize>(),
        bound.as_millis(),
        recovery.as_millis()
    );
    assert_eq!(
        phases.iter().map(|t| t.other).sum::<usize>(),
        0,
        "{store}: only 503s"
    );
    assert_eq!(lost, 0, "{store}: acknowledged writes lost");
    assert_eq!(stale, 0, "{store}: stale read after the fault");
    assert!(
        phases[0].ok > 0 && phases[4].ok > 0,
        "{store}: served before and after"
    );
    assert!(phases[3].unavailable > 0, "{store}: the blackhole was felt");
    assert_eq!(
        phases[1].unavailable, 0,
        "{store}: latency under the timeouts must not fail requests"
    );
    assert!(
        phases[1].slowest_ok >= LATENCY * 2,
        "{store}: the latency was not felt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behind_a_faulty_network() {
    let url = servers::redis_url();
    let prefix = format!("netfault-{}:", servers::unique_suffix());
    let cleanup = CacheStore::connect(
        &CacheConfig::new(url.clone()).with_key_prefix(&prefix),
        session_core::CodecKind::Bincode.build(1 << 22),
    )
    .await
    .unwrap_or_else(|e| servers::unreachable("Redis", &url, e));
    let proxy = FaultProxy::start(servers::port_of(&url)).await;
    let toml = |u: &str| {
        format!(
            "engine = \"cache\"\n[cache]\nurl = {u:?}\nkey_prefix = {prefix:?}\n\
             connect_timeout_ms = 500\ncommand_timeout_ms = 500\n"
        )
    };
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port());
    drill(
        "redis",
        &proxy,
        &toml(&via_proxy),
        &toml(&url),
        Duration::from_millis(500),
    )
    .await;
    cleanup.purge().await.expect("purge the run's keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_behind_a_faulty_network() {
    let url = servers::postgres_url();
    let table = format!("netfault_{}", servers::unique_suffix());
    let probe = DbStore::connect(&DbConfig::new(&url).with_table(&table))
        .await
        .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &url, e));
    let proxy = FaultProxy::start(servers::port_of(&url)).await;
    let via_proxy = url.replacen(
        &format!(":{}/", servers::port_of(&url)),
        &format!(":{}/", proxy.port()),
        1,
    );
    assert_ne!(via_proxy, url, "the proxy's URL");
    let toml = |u: &str| {
        format!(
            "engine = \"db\"\n[db]\nurl = {u:?}\ntable = {table:?}\n\
             acquire_timeout_ms = 500\nstatement_timeout_ms = 500\n"
        )
    };
    // acquire + statement + the store's grace second.
    drill(
        "postgres",
        &proxy,
        &toml(&via_proxy),
        &toml(&url),
        Duration::from_millis(2000),
    )
    .await;
    probe.drop_table().await.expect("drop the run's table");
}
