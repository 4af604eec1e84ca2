//! Throughput of the cache drivers against raw clients and tower-sessions' stores, at
//! concurrency 1 and 32, in one run.
//!
//! ```text
//! source target/test-servers.env
//! cargo bench -p backend-cache --bench cache_stores
//! ```
//!
//! Every figure is operations per second over a bounded number of operations on a ~1 KiB
//! session of 10 fields: 5 rounds per pair, alternating which side goes first; printed
//! are each side's median ops/s with its spread, and the median (and range) of the
//! per-round ratios, which is what the targets are judged on: on a shared 2-core
//! machine neighbouring rounds see the same load. `BENCH_ONLY=memory|redis|memcached`
//! runs one group. Baselines:
//!
//! - `raw-redis`: the redis crate on a multiplexed connection, `SET PX` / `GET` of the
//!   same encoded bytes (no codec: the floor any store on it pays);
//! - `raw-redis+codec`: the same plus encoding/decoding with the same codec (what a
//!   minimal store without compare-and-set would do);
//! - `tower-redis`: `tower-sessions-redis-store` 0.16 (fred, a pool of 6 as in its
//!   README): `create` = `SET NX EXAT`, `save` = `SET XX EXAT`, `load` = `GET` + MessagePack;
//! - `tower-memory`: tower-sessions' `MemoryStore` (a tokio `Mutex<HashMap>`);
//! - `raw-memcached`: async-memcached 0.9, one client per worker, `add`/`set`/`get` of
//!   the same encoded bytes; `raw-memcached+codec` also encodes and decodes.
//!
//! Every key is written under a random prefix (tower's under ids it mints) with a
//! 10-minute TTL, and deleted at the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_memcached::AsciiProtocol;
use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use integration_tests::servers;
use redis::AsyncCommands;
use session_core::{Codec, Record, SessionData, SessionKey, SessionStore};
use tokio::sync::Mutex;

const TTL_SECS: i64 = 600;
const ROUNDS: usize = 5;

/// The benchmark session: 10 fields, ~1 KiB encoded.
fn session_data() -> SessionData {
    (0..10)
        .map(|i| {
            (
                format!("field_{i}"),
                serde_json::Value::String(format!("{i:02}-{}", "x".repeat(92))),
            )
        })
        .collect()
}

fn record() -> Record {
    Record::with_ttl(session_data(), TTL_SECS)
}

/// One thing to measure: keys it creates, loads and updates.
#[session_core::async_trait]
trait Target: Send + Sync + 'static {
    type Key: Clone + Send + Sync + 'static;
    async fn create(&self) -> Self::Key;
    async fn load(&self, key: &Self::Key);
    /// Updates `key`, whose stored version is `version`.
    async fn update(&self, key: &Self::Key, version: u64);
    async fn cleanup(&self) {}
}

/// `concurrency` workers, `total` operations split between them; ops/s of the wall time.
async fn run<F, Fut>(concurrency: usize, total: usize, op: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let per = total / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(WORKER.scope(w, async move {
            for i in 0..per {
                op(w, i).await;
            }
        })));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    (per * concurrency) as f64 / started.elapsed().as_secs_f64()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Load,
    Update,
}

/// Median and spread of several rounds.
#[derive(Clone, Copy)]
struct Figure {
    median: f64,
    min: f64,
    max: f64,
}

impl Figure {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Figure {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
    fn spread_pct(&self) -> f64 {
        (self.max - self.min) / self.median * 100.0
    }
}

/// One round: ops/s of `total` operations `op` by `concurrency` workers.
async fn measure<T: Target>(target: Arc<T>, op: Op, concurrency: usize, total: usize) -> f64 {
    {
        match op {
            Op::Create => {
                let t = target.clone();
                run(concurrency, total, move |_, _| {
                    let t = t.clone();
                    async move {
                        t.create().await;
                    }
                })
                .await
            }
            Op::Load => {
                let mut keys = Vec::with_capacity(concurrency);
                for w in 0..concurrency {
                    keys.push(WORKER.scope(w, target.create()).await);
                }
                let keys = Arc::new(keys);
                let t = target.clone();
                run(concurrency, total, move |w, _| {
                    let (t, keys) = (t.clone(), keys.clone());
                    async move { t.load(&keys[w]).await }
                })
                .await
            }
            Op::Update => {
                let mut keys = Vec::with_capacity(concurrency);
                for w in 0..concurrency {
                    keys.push(WORKER.scope(w, target.create()).await);
                }
                let keys = Arc::new(keys);
                let versions: Arc<Vec<AtomicU64>> =
                    Arc::new((0..concurrency).map(|_| AtomicU64::new(1)).collect());
                let t = target.clone();
                run(concurrency, total, move |w, _| {
                    let (t, keys, versions) = (t.clone(), keys.clone(), versions.clone());
                    async move {
                        let v = versions[w].fetch_add(1, Ordering::Relaxed);
                        t.update(&keys[w], v).await;
                    }
                })
                .await
            }
        }
    }
}

// ---------------------------------------------------------------- our stores

struct Ours {
    store: Arc<dyn SessionStore>,
    record: Record,
}

#[session_core::async_trait]
impl Target for Ours {
    type Key = SessionKey;
    async fn create(&self) -> SessionKey {
        self.store.create(&self.record).await.expect("create")
    }
    async fn load(&self, key: &SessionKey) {
        let r = self.store.load(key).await.expect("load");
        assert!(r.is_some(), "benchmark session vanished");
    }
    async fn update(&self, key: &SessionKey, version: u64) {
        self.store
            .update(key, &self.record, Some(version))
            .await
            .expect("update");
    }
}

struct OursPurged(Ours, Arc<CacheStore>);

#[session_core::async_trait]
impl Target for OursPurged {
    type Key = SessionKey;
    async fn create(&self) -> SessionKey {
        self.0.create().await
    }
    async fn load(&self, key: &SessionKey) {
        self.0.load(key).await
    }
    async fn update(&self, key: &SessionKey, version: u64) {
        self.0.update(key, version).await
    }
    async fn cleanup(&self) {
        self.1.purge().await.expect("purge the benchmark prefix");
    }
}

// ---------------------------------------------------------------- raw redis

struct RawRedis {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
    codec: Option<Arc<dyn Codec>>,
    bytes: Vec<u8>,
    record: Record,
    next: AtomicU64,
}

impl RawRedis {
    fn payload(&self) -> Vec<u8> {
        match &self.codec {
            Some(c) => c.encode(&self.record).expect("encode"),
            None => self.bytes.clone(),
        }
    }
}

#[session_core::async_trait]
impl Target for RawRedis {
    type Key = String;
    async fn create(&self) -> String {
        let key = format!(
            "{}raw{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(self.payload())
            .arg("NX")
            .arg("PX")
            .arg(TTL_SECS * 1000)
            .query_async(&mut c)
            .await
            .expect("SET NX PX");
        key
    }
    async fn load(&self, key: &String) {
        let mut c = self.conn.clone();
        let got: Option<Vec<u8>> = c.get(key).await.expect("GET");
        let got = got.expect("benchmark key vanished");
        if let Some(codec) = &self.codec {
            codec.decode(&got).expect("decode");
        }
    }
    async fn update(&self, key: &String, _version: u64) {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(self.payload())
            .arg("PX")
            .arg(TTL_SECS * 1000)
            .query_async(&mut c)
            .await
            .expect("SET PX");
    }
}

// ---------------------------------------------------------------- tower-sessions stores

mod tower_redis {
    use super::*;
    use tower_sessions_core_014::SessionStore as _;
    use tower_sessions_core_014::session::{Id, Record as TRecord};
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, KeysInterface, Pool};

    pub struct TowerRedis {
        pub store: RedisStore<Pool>,
        pub pool: Pool,
        pub record: TRecord,
        pub created: std::sync::Mutex<Vec<Id>>,
    }

    pub async fn connect(url: &str) -> TowerRedis {
        let pool = Pool::new(
            Config::from_url(url).expect("fred config"),
            None,
            None,
            None,
            6,
        )
        .expect("pool");
        pool.init().await.expect("fred connect");
        let record = TRecord {
            id: Id::default(),
            data: session_data().into_iter().collect::<HashMap<_, _>>(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(TTL_SECS),
        };
        TowerRedis {
            store: RedisStore::new(pool.clone()),
            pool,
            record,
            created: std::sync::Mutex::new(Vec::new()),
        }
    }

    #[session_core::async_trait]
    impl Target for TowerRedis {
        type Key = Id;
        async fn create(&self) -> Id {
            let mut r = self.record.clone();
            r.id = Id::default();
            self.store.create(&mut r).await.expect("create");
            self.created.lock().expect("ids").push(r.id);
            r.id
        }
        async fn load(&self, key: &Id) {
            let r = self.store.load(key).await.expect("load");
            assert!(r.is_some(), "benchmark session vanished");
        }
        async fn update(&self, key: &Id, _version: u64) {
            let mut r = self.record.clone();
            r.id = *key;
            self.store.save(&r).await.expect("save");
        }
        async fn cleanup(&self) {
            let ids: Vec<Id> = std::mem::take(&mut *self.created.lock().expect("ids"));
            for chunk in ids.chunks(500) {
                let keys: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
                let _: i64 = self.pool.del(keys).await.expect("DEL");
            }
        }
    }
}

mod tower_memory {
    use super::*;
    use tower_sessions::session::{Id, Record as TRecord};
    use tower_sessions::session_store::SessionStore as _;

    pub struct TowerMemory {
        pub store: tower_sessions::MemoryStore,
        pub record: TRecord,
    }

    pub fn new() -> TowerMemory {
        TowerMemory {
            store: tower_sessions::MemoryStore::default(),
            record: TRecord {
                id: Id::default(),
                data: session_data().into_iter().collect::<HashMap<_, _>>(),
                expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(TTL_SECS),
            },
        }
    }

    #[session_core::async_trait]
    impl Target for TowerMemory {
        type Key = Id;
        async fn create(&self) -> Id {
            let mut r = self.record.clone();
            r.id = Id::default();
            self.store.create(&mut r).await.expect("create");
            r.id
        }
        async fn load(&self, key: &Id) {
            let r = self.store.load(key).await.expect("load");
            assert!(r.is_some(), "benchmark session vanished");
        }
        async fn update(&self, key: &Id, _version: u64) {
            let mut r = self.record.clone();
            r.id = *key;
            self.store.save(&r).await.expect("save");
        }
    }
}

// ---------------------------------------------------------------- raw memcached

struct RawMemcached {
    /// One client per worker (async-memcached holds one connection behind `&mut`);
    /// a worker's lock is never contended.
    clients: Vec<Mutex<async_memcached::Client>>,
    prefix: String,
    bytes: Vec<u8>,
    /// With a codec: encode before each write and decode after each read, as a store must.
    codec: Option<(Arc<dyn Codec>, Record)>,
    next: AtomicU64,
}

impl RawMemcached {
    async fn connect(
        addr: &str,
        workers: usize,
        prefix: String,
        bytes: Vec<u8>,
        codec: Option<(Arc<dyn Codec>, Record)>,
    ) -> Self {
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            clients.push(Mutex::new(
                async_memcached::Client::new(format!("tcp://{addr}"))
                    .await
                    .expect("async-memcached connect"),
            ));
        }
        RawMemcached {
            clients,
            prefix,
            bytes,
            codec,
            next: AtomicU64::new(0),
        }
    }
    fn payload(&self) -> Vec<u8> {
        match &self.codec {
            Some((c, r)) => c.encode(r).expect("encode"),
            None => self.bytes.clone(),
        }
    }
    fn client(&self, key: &str) -> &Mutex<async_memcached::Client> {
        // Keys carry their worker's index: each worker stays on its own client.
        let w: usize = key
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        &self.clients[w % self.clients.len()]
    }
}

tokio::task_local! {
    static WORKER: usize;
}

#[session_core::async_trait]
impl Target for RawMemcached {
    type Key = String;
    async fn create(&self) -> String {
        let w = WORKER.try_with(|w| *w).unwrap_or(0);
        let key = format!(
            "{}raw{}-{w}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        self.client(&key)
            .lock()
            .await
            .add(&key, self.payload().as_slice(), Some(TTL_SECS), None)
            .await
            .expect("add");
        key
    }
    async fn load(&self, key: &String) {
        let got = self.client(key).lock().await.get(key).await.expect("get");
        let got = got.and_then(|v| v.data).expect("benchmark key vanished");
        if let Some((c, _)) = &self.codec {
            c.decode(&got).expect("decode");
        }
    }
    async fn update(&self, key: &String, _version: u64) {
        self.client(key)
            .lock()
            .await
            .set(key, self.payload().as_slice(), Some(TTL_SECS), None)
            .await
            .expect("set");
    }
}

// ---------------------------------------------------------------- driver

struct Comparison {
    group: &'static str,
    ours: &'static str,
    base: &'static str,
    op: Op,
    concurrency: usize,
    a: Figure,
    b: Figure,
    ratio: Figure,
}

/// Measures `ours` against `base`. Each round gets its targets from the makers: the
/// in-process stores start empty every round (they would otherwise fill up and evict),
/// the server-backed ones are shared.
async fn compare<A: Target, B: Target>(
    out: &mut Vec<Comparison>,
    group: &'static str,
    (ours, a): (&'static str, &dyn Fn() -> Arc<A>),
    (base, b): (&'static str, &dyn Fn() -> Arc<B>),
    ops: &[Op],
    totals: (usize, usize),
) {
    for &concurrency in &[1usize, 32] {
        let total = if concurrency == 1 { totals.0 } else { totals.1 };
        for &op in ops {
            // Rounds alternate A, B, B, A, ...: on a shared machine the load drifts, and
            // each round's ratio compares two neighbouring measurements.
            let (mut fa, mut fb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..ROUNDS {
                let (x, y) = if r % 2 == 0 {
                    let x = measure(a(), op, concurrency, total).await;
                    (x, measure(b(), op, concurrency, total).await)
                } else {
                    let y = measure(b(), op, concurrency, total).await;
                    (measure(a(), op, concurrency, total).await, y)
                };
                fa.push(x);
                fb.push(y);
                ratios.push(x / y);
            }
            let (fa, fb, ratio) = (Figure::of(fa), Figure::of(fb), Figure::of(ratios));
            let c = Comparison {
                group,
                ours,
                base,
                op,
                concurrency,
                a: fa,
                b: fb,
                ratio,
            };
            print_row(&c);
            out.push(c);
        }
    }
}

fn print_row(c: &Comparison) {
    println!(
        "{:<10} {:<7} c={:<3} {:>10} {:>8.0} ops/s (±{:>3.0}%)  {:>16} {:>8.0} ops/s (±{:>3.0}%)  ratio {:>5.2}x [{:.2}..{:.2}]",
        c.group,
        format!("{:?}", c.op).to_lowercase(),
        c.concurrency,
        c.ours,
        c.a.median,
        c.a.spread_pct(),
        c.base,
        c.b.median,
        c.b.spread_pct(),
        c.ratio.median,
        c.ratio.min,
        c.ratio.max
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async_main(quick));
}

async fn async_main(quick: bool) {
    let scale = if quick { 20 } else { 1 };
    let codec: Arc<dyn Codec> = session_core::CodecKind::Bincode.build(1 << 22);
    let rec = record();
    let bytes = codec.encode(&rec).expect("encode");
    let run_id = servers::unique_suffix();
    println!(
        "session: {} fields, {} bytes encoded (bincode); {ROUNDS} rounds per pair, ± = (max-min)/median",
        rec.data.len(),
        bytes.len()
    );
    let mut out = Vec::new();

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wants = |g: &str| only.is_empty() || only.split(',').any(|o| o == g);

    if wants("memory") {
        let ours = || {
            Arc::new(Ours {
                store: Arc::new(MemoryStore::new()),
                record: rec.clone(),
            })
        };
        let tower = || Arc::new(tower_memory::new());
        compare(
            &mut out,
            "memory",
            ("memory", &ours),
            ("tower-memory", &tower),
            &[Op::Create, Op::Load, Op::Update],
            (100_000 / scale, 200_000 / scale),
        )
        .await;
    }

    if wants("redis") {
        bench_redis(&mut out, &codec, &rec, &bytes, &run_id, scale).await;
    }
    if wants("memcached") {
        bench_memcached(&mut out, &codec, &rec, &bytes, &run_id, scale).await;
    }
    print_summary(&out);
}

async fn bench_redis(
    out: &mut Vec<Comparison>,
    codec: &Arc<dyn Codec>,
    rec: &Record,
    bytes: &[u8],
    run_id: &str,
    scale: usize,
) {
    let redis_url = servers::redis_url();
    let prefix = format!("bench-{run_id}:");
    let cache_store = Arc::new(
        CacheStore::connect(
            &CacheConfig::new(&redis_url).with_key_prefix(&prefix),
            codec.clone(),
        )
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &redis_url, e)),
    );
    let ours = Arc::new(OursPurged(
        Ours {
            store: cache_store.clone(),
            record: rec.clone(),
        },
        cache_store.clone(),
    ));
    let conn = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis connect");
    let raw = |with_codec: bool| {
        Arc::new(RawRedis {
            conn: conn.clone(),
            prefix: prefix.clone(),
            codec: with_codec.then(|| codec.clone()),
            bytes: bytes.to_vec(),
            record: rec.clone(),
            next: AtomicU64::new(0),
        })
    };
    let (raw_bytes, raw_codec) = (raw(false), raw(true));
    let ours_ = || ours.clone();
    let (raw_bytes_, raw_codec_) = (|| raw_bytes.clone(), || raw_codec.clone());
    let ops = [Op::Create, Op::Load, Op::Update];
    let totals = (4_000 / scale, 16_000 / scale);
    compare(
        out,
        "redis",
        ("redis", &ours_),
        ("raw-redis", &raw_bytes_),
        &ops,
        totals,
    )
    .await;
    compare(
        out,
        "redis",
        ("redis", &ours_),
        ("raw-redis+codec", &raw_codec_),
        &ops,
        totals,
    )
    .await;
    let tower = Arc::new(tower_redis::connect(&redis_url).await);
    let tower_ = || tower.clone();
    compare(
        out,
        "redis",
        ("redis", &ours_),
        ("tower-redis", &tower_),
        &ops,
        totals,
    )
    .await;
    tower.cleanup().await;
    ours.cleanup().await;
}

async fn bench_memcached(
    out: &mut Vec<Comparison>,
    codec: &Arc<dyn Codec>,
    rec: &Record,
    bytes: &[u8],
    run_id: &str,
    scale: usize,
) {
    let mc_url = servers::memcached_url();
    let mc_addr = mc_url
        .split_once("://")
        .map(|(_, a)| a.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| mc_url.clone());
    let mc_prefix = format!("bench-{run_id}:");
    let mc_store = Arc::new(
        CacheStore::connect(
            &CacheConfig::new(&mc_url).with_key_prefix(&mc_prefix),
            codec.clone(),
        )
        .await
        .unwrap_or_else(|e| servers::unreachable("Memcached", &mc_url, e)),
    );
    let ours_mc = Arc::new(OursPurged(
        Ours {
            store: mc_store.clone(),
            record: rec.clone(),
        },
        mc_store.clone(),
    ));
    let ops = [Op::Create, Op::Load, Op::Update];
    let totals = (4_000 / scale, 16_000 / scale);
    let raw_mc = Arc::new(
        RawMemcached::connect(&mc_addr, 32, mc_prefix.clone(), bytes.to_vec(), None).await,
    );
    let ours_ = || ours_mc.clone();
    compare(
        out,
        "memcached",
        ("memcached", &ours_),
        ("raw-memcached", &|| raw_mc.clone()),
        &ops,
        totals,
    )
    .await;
    let raw_mc_codec = Arc::new(
        RawMemcached::connect(
            &mc_addr,
            32,
            format!("{mc_prefix}codec:"),
            bytes.to_vec(),
            Some((codec.clone(), rec.clone())),
        )
        .await,
    );
    compare(
        out,
        "memcached",
        ("memcached", &ours_),
        ("raw-memcached+codec", &|| raw_mc_codec.clone()),
        &ops,
        totals,
    )
    .await;
    ours_mc.cleanup().await;
}

fn print_summary(out: &[Comparison]) {
    println!("\nsummary (ours / baseline: median of per-round ratios [min..max]):");
    for c in out {
        println!(
            "  {:<9} {:<6} c={:<3} {:>9} vs {:<16} {:>5.2}x [{:.2}..{:.2}]",
            c.group,
            format!("{:?}", c.op).to_lowercase(),
            c.concurrency,
            c.ours,
            c.base,
            c.ratio.median,
            c.ratio.min,
            c.ratio.max
        );
    }
}
