//! `anchor`: the multi-instance concurrent drill (session-cli/tests/multi_instance.rs)
//! run side by side against ours and against tower-sessions, both on one Redis.
//!
//! ```text
//! cargo build --release -p session-cli --bin sessions            # ours (main workspace)
//! cargo build --release --manifest-path session-bench/Cargo.toml --bin anchor
//! anchor [--runs N] [--sessions PATH] [--redis URL]
//! ```
//!
//! Each side runs as three separate processes on three loopback ports sharing one Redis
//! (`--redis`, else `SESSIONS_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`; loopback
//! only):
//!
//! - **ours**: the built `sessions demo` binary (`--sessions`, else `sessions` next to
//!   this binary: both workspaces build into one target directory when
//!   `CARGO_TARGET_DIR` is shared), `cache` engine, a key prefix unique to the run,
//!   purged at the end;
//! - **tower-sessions**: this binary re-run as `anchor serve-tower`, a small axum app
//!   with the same routes (`GET /` counts a visit, `POST /cart/add` adds an item and
//!   answers 303, `GET /state` reads) on tower-sessions' `SessionManagerLayer` over
//!   tower-sessions-redis-store (fred, a pool of 6 connections as its README sets up).
//!   Its keys are bare session ids: every id the drill saw is deleted at the end.
//!
//! The drill is the same for both: 3 visitors, each session created on one instance and
//! read on the others; then 4 clients per visitor at once, 30 writes each (increments and
//! cart adds, alternating), every request to the next instance in turn. A write counts
//! as acknowledged when it got its success status (200 or 303) with the visitor's own
//! session. The final state is read on every instance; "lost" counts acknowledged
//! increments and adds missing from it. Every request is bounded (15 s), every count
//! fixed; the sides run in alternating order from run to run. The command fails (exit 1)
//! if ours lost an acknowledged write, got an error, or its instances disagreed.
//!
//! Own code, not a crate: the drill's client side mirrors the test harness's (it is not a
//! library); the adapter [`Core14`] exists because tower-sessions-redis-store 0.16
//! implements tower-sessions-core 0.14's store trait while the layer of tower-sessions
//! 0.15 (the version the rest of this benchmark measures) wants 0.15's; the records of
//! both versions have the same fields, so the adapter only moves them across.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

/// Errors of the driver (a missing server or binary, a broken instance).
type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const INSTANCES: usize = 3;
/// Visitors in the drill.
const VISITORS: usize = 3;
/// Clients sending writes at once for one visitor.
const CLIENTS: usize = 4;
/// Writes per client: increments and cart adds, alternating.
const WRITES: usize = 30;
/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an instance may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The session cookie's name on both sides.
const COOKIE_NAME: &str = "sessionid";
/// What an instance prints once it listens (ours prints the same with `sessions demo`).
const TOWER_LISTENING: &str = "anchor tower-sessions listening on http://";
const OURS_LISTENING: &str = "sessions demo listening on http://";

const USAGE: &str = "\
usage: anchor [--runs N] [--sessions PATH] [--redis URL]
       anchor serve-tower --redis URL     (one tower-sessions instance; used by the drill)

  --runs N         drill runs per side (default 3)
  --sessions PATH  the built `sessions` binary (default: next to this binary)
  --redis URL      a loopback Redis (default: SESSIONS_TEST_REDIS_URL or redis://127.0.0.1:6379)
";

struct Args {
    runs: usize,
    sessions: Option<PathBuf>,
    redis: Option<String>,
}

enum Mode {
    Drill(Args),
    ServeTower(String),
}

fn parse_args() -> Result<Mode, String> {
    let mut it = std::env::args().skip(1).peekable();
    let serve = it.peek().is_some_and(|a| a == "serve-tower");
    if serve {
        it.next();
    }
    let mut a = Args {
        runs: 3,
        sessions: None,
        redis: None,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--runs" => {
                let v = value("--runs")?;
                a.runs = v.parse().map_err(|_| format!("not a number: {v}"))?;
            }
            "--sessions" => a.sessions = Some(value("--sessions")?.into()),
            "--redis" => a.redis = Some(value("--redis")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.runs == 0 || a.runs > 20 {
        return Err("--runs must be 1 to 20".into());
    }
    if serve {
        return a
            .redis
            .map(Mode::ServeTower)
            .ok_or_else(|| "serve-tower needs --redis".into());
    }
    Ok(Mode::Drill(a))
}

fn main() {
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            if e.is_empty() {
                print!("{USAGE}");
                std::process::exit(0);
            }
            eprintln!("anchor: {e}\n");
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match mode {
        Mode::Drill(a) => rt.block_on(drill_all(a)),
        Mode::ServeTower(url) => rt.block_on(serve_tower(&url)),
    };
    if let Err(e) = result {
        eprintln!("anchor: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// The tower-sessions instance.

/// A tower-sessions-core 0.14 store (tower-sessions-redis-store 0.16) seen through
/// 0.15's `SessionStore` trait, which tower-sessions 0.15's layer wants.
#[derive(Clone, Debug)]
struct Core14<S>(S);

fn to14(r: &tower_sessions::session::Record) -> tower_sessions_core_014::session::Record {
    tower_sessions_core_014::session::Record {
        id: tower_sessions_core_014::session::Id(r.id.0),
        data: r.data.clone(),
        expiry_date: r.expiry_date,
    }
}

fn error15(
    e: tower_sessions_core_014::session_store::Error,
) -> tower_sessions::session_store::Error {
    use tower_sessions::session_store::Error as E15;
    use tower_sessions_core_014::session_store::Error as E14;
    match e {
        E14::Encode(s) => E15::Encode(s),
        E14::Decode(s) => E15::Decode(s),
        E14::Backend(s) => E15::Backend(s),
    }
}

#[async_trait::async_trait]
impl<S> tower_sessions::SessionStore for Core14<S>
where
    S: tower_sessions_core_014::SessionStore + Clone + std::fmt::Debug,
{
    async fn create(
        &self,
        record: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        let mut r = to14(record);
        self.0.create(&mut r).await.map_err(error15)?;
        record.id = tower_sessions::session::Id(r.id.0);
        Ok(())
    }

    async fn save(
        &self,
        record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.0.save(&to14(record)).await.map_err(error15)
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        let r = self
            .0
            .load(&tower_sessions_core_014::session::Id(id.0))
            .await
            .map_err(error15)?;
        Ok(r.map(|r| tower_sessions::session::Record {
            id: tower_sessions::session::Id(r.id.0),
            data: r.data,
            expiry_date: r.expiry_date,
        }))
    }

    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        self.0
            .delete(&tower_sessions_core_014::session::Id(id.0))
            .await
            .map_err(error15)
    }
}

/// A session error as the answer a user's handler would give: 500.
fn internal(e: tower_sessions::session::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn tower_index(session: tower_sessions::Session) -> Result<Response, (StatusCode, String)> {
    let visits: u64 = session.get("visits").await.map_err(internal)?.unwrap_or(0) + 1;
    session.insert("visits", visits).await.map_err(internal)?;
    Ok(format!("{visits} visit(s)").into_response())
}

async fn tower_state(session: tower_sessions::Session) -> Result<Response, (StatusCode, String)> {
    let visits: u64 = session.get("visits").await.map_err(internal)?.unwrap_or(0);
    let cart: Vec<String> = session
        .get("cart")
        .await
        .map_err(internal)?
        .unwrap_or_default();
    Ok(Json(json!({ "visits": visits, "cart": cart })).into_response())
}

/// The cart-add form.
#[derive(serde::Deserialize)]
struct ItemForm {
    item: String,
}

async fn tower_cart_add(
    session: tower_sessions::Session,
    Form(f): Form<ItemForm>,
) -> Result<Response, (StatusCode, String)> {
    let item = f.item.trim().to_owned();
    if item.is_empty() || item.len() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "an item is 1 to 64 characters").into_response());
    }
    let mut cart: Vec<String> = session
        .get("cart")
        .await
        .map_err(internal)?
        .unwrap_or_default();
    cart.push(item);
    session.insert("cart", cart).await.map_err(internal)?;
    Ok(Redirect::to("/").into_response())
}

/// One tower-sessions instance on a free loopback port; exits when stdin closes (the
/// driver went away).
async fn serve_tower(url: &str) -> R<()> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    loopback_only(url)?;
    let pool = Pool::new(Config::from_url(url)?, None, None, None, 6)?;
    pool.init().await?;
    let store = Core14(tower_sessions_redis_store::RedisStore::new(pool));
    let layer = tower_sessions::SessionManagerLayer::new(store)
        .with_name(COOKIE_NAME)
        .with_secure(false)
        .with_expiry(tower_sessions::Expiry::OnInactivity(time::Duration::weeks(
            2,
        )));
    let app = Router::new()
        .route("/", get(tower_index))
        .route("/state", get(tower_state))
        .route("/cart/add", post(tower_cart_add))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{TOWER_LISTENING}{}/", listener.local_addr()?);
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        std::process::exit(0);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The driver.

/// A URL whose host is a loopback address, or an error.
fn loopback_only(url: &str) -> R<()> {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let ok = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if ok {
        Ok(())
    } else {
        Err(format!("{url}: not a loopback address (this drill uses loopback only)").into())
    }
}

/// One running instance, killed on drop.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`INSTANCES`] processes of `cmd` at once; waits for each to print `marker`
/// followed by its address.
fn start(mut cmd: impl FnMut() -> Command, marker: &str) -> R<Vec<Instance>> {
    let mut started = Vec::new();
    for _ in 0..INSTANCES {
        let mut child = cmd()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        started.push((
            Instance {
                child,
                base: String::new(),
            },
            rx,
        ));
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let mut instances = Vec::new();
    for (mut instance, rx) in started {
        while instance.base.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|e| format!("an instance did not print its address in time: {e}"))?;
            if let Some(url) = line.strip_prefix(marker) {
                let addr: SocketAddr = url.trim_end_matches('/').parse()?;
                instance.base = format!("http://{addr}");
            }
        }
        instances.push(instance);
    }
    Ok(instances)
}

/// The session cookie a response sets.
fn set_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let rest = v
            .to_str()
            .ok()?
            .strip_prefix(COOKIE_NAME)?
            .strip_prefix('=')?;
        let value = rest.split(';').next().unwrap_or_default();
        Some(value.trim_matches('"').to_owned())
    })
}

/// What one request got: status and session cookie, or the transport error.
#[derive(Debug)]
struct Reply {
    status: Option<StatusCode>,
    cookie: Option<String>,
}

async fn send(req: reqwest::RequestBuilder, key: Option<&str>) -> Reply {
    let req = match key {
        Some(k) => req.header(COOKIE, format!("{COOKIE_NAME}={k}")),
        None => req,
    };
    match req.send().await {
        Ok(resp) => {
            let reply = Reply {
                status: Some(resp.status()),
                cookie: set_cookie(&resp),
            };
            let _ = resp.bytes().await;
            reply
        }
        Err(e) => {
            eprintln!("request failed: {e}");
            Reply {
                status: None,
                cookie: None,
            }
        }
    }
}

async fn state(c: &reqwest::Client, base: &str, key: &str) -> R<(u64, Vec<String>)> {
    let resp = c
        .get(format!("{base}/state"))
        .header(COOKIE, format!("{COOKIE_NAME}={key}"))
        .send()
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET /state on {base}: {}", resp.status()).into());
    }
    let v: Value = resp.json().await?;
    let visits = v["visits"].as_u64().ok_or("no visits in /state")?;
    let cart = v["cart"]
        .as_array()
        .ok_or("no cart in /state")?
        .iter()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect();
    Ok((visits, cart))
}

/// One side's figures in one run.
#[derive(Debug, Default)]
struct Figures {
    requests: usize,
    acked_incs: u64,
    kept_incs: u64,
    acked_adds: usize,
    kept_adds: usize,
    errors: usize,
    /// Sessions whose first read on another instance did not find the first visit.
    cross_read_misses: usize,
    /// Sessions the three instances read differently at the end.
    disagreements: usize,
    duration: Duration,
}

impl Figures {
    fn lost(&self) -> u64 {
        (self.acked_incs - self.kept_incs) + (self.acked_adds - self.kept_adds) as u64
    }
}

/// The concurrent drill on three running instances. `seen` collects every session key
/// a response named (for the cleanup of stores without a key prefix).
async fn drill(instances: &Arc<Vec<Instance>>, seen: &Mutex<BTreeSet<String>>) -> R<Figures> {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let mut f = Figures::default();
    let started = Instant::now();
    let mut visitors = Vec::new();
    for v in 0..VISITORS {
        let base = &instances[v % INSTANCES].base;
        let r = send(c.get(format!("{base}/")), None).await;
        f.requests += 1;
        let key = match (r.status, r.cookie) {
            (Some(StatusCode::OK), Some(k)) if !k.is_empty() => k,
            other => return Err(format!("first visit on {base}: {other:?}").into()),
        };
        seen.lock().map_err(|_| "lock")?.insert(key.clone());
        for i in instances.iter() {
            if state(&c, &i.base, &key).await? != (1, vec![]) {
                f.cross_read_misses += 1;
            }
        }
        visitors.push(key);
    }
    let mut tasks = Vec::new();
    for (v, key) in visitors.iter().enumerate() {
        for cl in 0..CLIENTS {
            let (key, instances, c) = (key.clone(), instances.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                // (visitor, acked increments, acked items, errors, keys seen)
                let mut incs = 0u64;
                let mut items = Vec::new();
                let mut errors = 0usize;
                let mut keys = Vec::new();
                for n in 0..WRITES {
                    let base = &instances[(v + cl + n) % INSTANCES].base;
                    let (r, ok, item) = if n % 2 == 0 {
                        let r = send(c.get(format!("{base}/")), Some(&key)).await;
                        (r, StatusCode::OK, None)
                    } else {
                        let item = format!("v{v}c{cl}n{n}");
                        let req = c.post(format!("{base}/cart/add")).form(&[("item", &item)]);
                        (
                            send(req, Some(&key)).await,
                            StatusCode::SEE_OTHER,
                            Some(item),
                        )
                    };
                    if let Some(k) = r.cookie.as_ref().filter(|k| !k.is_empty() && **k != key) {
                        keys.push(k.clone());
                    }
                    if r.status == Some(ok) && r.cookie.as_deref().is_none_or(|k| k == key) {
                        match item {
                            Some(i) => items.push(i),
                            None => incs += 1,
                        }
                    } else {
                        errors += 1;
                        eprintln!("write on {base}: {r:?}");
                    }
                }
                (v, incs, items, errors, keys)
            }));
        }
    }
    let mut acked_incs = [0u64; VISITORS];
    let mut acked_items = vec![Vec::new(); VISITORS];
    for t in tasks {
        let (v, incs, items, errors, keys) = t.await?;
        f.requests += WRITES;
        f.errors += errors;
        acked_incs[v] += incs;
        acked_items[v].extend(items);
        seen.lock().map_err(|_| "lock")?.extend(keys);
    }
    f.duration = started.elapsed();
    for (v, key) in visitors.iter().enumerate() {
        let first = state(&c, &instances[0].base, key).await?;
        for i in &instances[1..] {
            if state(&c, &i.base, key).await? != first {
                f.disagreements += 1;
            }
        }
        let (visits, cart) = first;
        // The first visit counts as an acknowledged increment, as in the test drill.
        let acked = 1 + acked_incs[v];
        f.acked_incs += acked;
        f.kept_incs += visits.min(acked);
        f.acked_adds += acked_items[v].len();
        f.kept_adds += acked_items[v].iter().filter(|i| cart.contains(i)).count();
    }
    Ok(f)
}

/// Starts ours (three `sessions demo`) on a fresh key prefix, drills, stops, purges.
async fn run_ours(sessions: &PathBuf, redis: &str) -> R<Figures> {
    let prefix = format!("anchor-{}:", integration_tests::servers::unique_suffix());
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("Sessions.toml");
    std::fs::write(
        &config,
        format!("engine = \"cache\"\n[cache]\nurl = {redis:?}\nkey_prefix = {prefix:?}\n"),
    )?;
    let cleanup = backend_cache::CacheStore::connect(
        &backend_cache::CacheConfig::new(redis).with_key_prefix(&prefix),
        session_core::CodecKind::Bincode.build(1 << 22),
    )
    .await?;
    let instances = start(
        || {
            let mut cmd = Command::new(sessions);
            for (k, _) in std::env::vars() {
                if k.starts_with("SESSION_") {
                    cmd.env_remove(k);
                }
            }
            cmd.arg("--config")
                .arg(&config)
                .args(["demo", "--host", "127.0.0.1", "--port", "0"])
                .current_dir(dir.path())
                .env("SESSIONS_LOG", "error");
            cmd
        },
        OURS_LISTENING,
    );
    let result = match instances {
        Ok(i) => drill(&Arc::new(i), &Mutex::new(BTreeSet::new())).await,
        Err(e) => Err(e),
    };
    cleanup.purge().await?;
    result
}

/// Starts three tower-sessions instances, drills, stops, deletes every session seen.
async fn run_tower(redis: &str) -> R<Figures> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, KeysInterface, Pool};
    let me = std::env::current_exe()?;
    let seen = Mutex::new(BTreeSet::new());
    let result = match start(
        || {
            let mut cmd = Command::new(&me);
            cmd.args(["serve-tower", "--redis", redis]);
            cmd
        },
        TOWER_LISTENING,
    ) {
        Ok(i) => drill(&Arc::new(i), &seen).await,
        Err(e) => Err(e),
    };
    let pool = Pool::new(Config::from_url(redis)?, None, None, None, 1)?;
    pool.init().await?;
    let keys: Vec<String> = seen.into_inner().map_err(|_| "lock")?.into_iter().collect();
    for k in &keys {
        let _: i64 = pool.del(k.as_str()).await?;
    }
    pool.quit().await?;
    result
}

/// `sessions` next to this binary.
fn default_sessions() -> R<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or("this binary has no directory")?;
    Ok(dir.join(format!("sessions{}", std::env::consts::EXE_SUFFIX)))
}

async fn drill_all(a: Args) -> R<()> {
    let redis = a
        .redis
        .or_else(|| std::env::var("SESSIONS_TEST_REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    loopback_only(&redis)?;
    let sessions = match a.sessions {
        Some(p) => p,
        None => default_sessions()?,
    };
    if !sessions.is_file() {
        return Err(format!(
            "{}: no `sessions` binary (build it with `cargo build --release -p session-cli \
             --bin sessions` into the same target directory, or pass --sessions PATH)",
            sessions.display()
        )
        .into());
    }
    println!(
        "anchor: {INSTANCES} instances per side on one Redis ({redis}); {VISITORS} visitors x \
         {CLIENTS} clients x {WRITES} writes; {} run(s)",
        a.runs
    );
    let mut all: Vec<(&str, Vec<Figures>)> =
        vec![("ours", Vec::new()), ("tower-sessions", Vec::new())];
    for run in 0..a.runs {
        for k in 0..2 {
            let side = (k + run) % 2;
            let f = if side == 0 {
                run_ours(&sessions, &redis).await
            } else {
                run_tower(&redis).await
            }
            .map_err(|e| format!("{} run {}: {e}", all[side].0, run + 1))?;
            println!(
                "ANCHOR-RESULT side={} run={} requests={} acked_increments={} kept_increments={} \
                 acked_adds={} kept_adds={} lost={} errors={} cross_read_misses={} \
                 instances_disagree={} duration_ms={}",
                all[side].0,
                run + 1,
                f.requests,
                f.acked_incs,
                f.kept_incs,
                f.acked_adds,
                f.kept_adds,
                f.lost(),
                f.errors,
                f.cross_read_misses,
                f.disagreements,
                f.duration.as_millis()
            );
            all[side].1.push(f);
        }
    }
    println!(
        "\n| Run | Side | Requests | Increments acknowledged / kept / lost | Cart adds acknowledged / kept / lost | Errors | Instances disagree |\n|---|---|---|---|---|---|---|"
    );
    for run in 0..a.runs {
        for (name, figures) in &all {
            let f = &figures[run];
            println!(
                "| {} | {name} | {} | {} / {} / {} | {} / {} / {} | {} | {} |",
                run + 1,
                f.requests,
                f.acked_incs,
                f.kept_incs,
                f.acked_incs - f.kept_incs,
                f.acked_adds,
                f.kept_adds,
                f.acked_adds - f.kept_adds,
                f.errors,
                f.disagreements
            );
        }
    }
    // Ours promises every acknowledged write kept: a run that shows otherwise fails.
    let ours = &all[0].1;
    if ours
        .iter()
        .any(|f| f.lost() > 0 || f.errors > 0 || f.disagreements > 0)
    {
        return Err(
            "ours lost acknowledged writes, failed requests or disagreed across instances".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::loopback_only;

    #[test]
    fn only_loopback_redis_urls_pass() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://:pw@127.0.0.1:6380/2",
            "redis://[::1]:6379",
        ] {
            assert!(loopback_only(ok).is_ok(), "{ok}");
        }
        for bad in [
            "redis://10.0.0.5:6379",
            "redis://example.com",
            "redis://[2001:db8::1]",
        ] {
            assert!(loopback_only(bad).is_err(), "{bad}");
        }
    }
}
