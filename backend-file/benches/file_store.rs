//! FileStore against the bare file-system work it is built on, in one run.
//!
//! For create, load, update and delete, at concurrency 1 and 32, it times the store and a
//! raw baseline doing the same I/O of the same encoded bytes with `tokio::fs`:
//! temp file + rename (create, update), read (load), remove (delete). The baseline does
//! no locking, no decoding, no checks: the ratio store/raw is the price of the store's
//! guarantees. A second baseline, raw+codec, adds the codec work any store must do
//! (decode after a read, encode before a write), to separate the store's own machinery
//! (locks, checks, temp names) from the codec's cost. The three sides run interleaved,
//! `REPS` times; the median is reported with the spread (min..max) of the repetitions.
//!
//! ```text
//! cargo bench -p backend-file --bench file_store
//! BENCH_OPS=4000 BENCH_FSYNC=1 BENCH_CODEC=json BENCH_ONLY=load,update \
//!     cargo bench -p backend-file --bench file_store
//! ```
//! `BENCH_DIR=/dev/shm` runs on tmpfs, which shows the store's own CPU cost; on a disk
//! file system, inode allocation and writeback dominate creates and updates on both sides.
//! `BENCH_FSYNC=1` makes both sides flush file and directory (off by default: on a disk
//! the flush dominates and hides everything else).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use backend_file::FileStore;
use serde_json::json;
use session_core::{BincodeCodec, Codec, JsonCodec, Record, SessionData, SessionKey, SessionStore};
use tokio::io::AsyncWriteExt;

const REPS: usize = 5;
const CONCURRENCY: [usize; 2] = [1, 32];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Create,
    Load,
    Update,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Store,
    Raw,
    RawCodec,
}

#[derive(Clone)]
struct Env {
    store: FileStore,
    raw_dir: PathBuf,
    record: Record,
    bytes: Arc<Vec<u8>>,
    codec: Arc<dyn Codec>,
    fsync: bool,
}

static TEMP: AtomicU64 = AtomicU64::new(0);

/// A session of about 1 KiB in 10 fields.
fn session() -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(1_234_567));
    d.insert("username".into(), json!("zoë.müller@example.com"));
    d.insert("csrf".into(), json!("f".repeat(64)));
    d.insert(
        "cart".into(),
        json!([
            {"sku": "A-1001", "qty": 2, "price": 19.99},
            {"sku": "B-2002", "qty": 1, "price": 5.25},
            {"sku": "C-3003", "qty": 4, "price": 0.99}
        ]),
    );
    d.insert(
        "prefs".into(),
        json!({"theme": "dark", "lang": "de-CH", "tz": "Europe/Zurich"}),
    );
    d.insert("last_seen".into(), json!(1_700_000_000_000i64));
    d.insert("flash".into(), json!(["Saved.", "Your order has shipped."]));
    d.insert(
        "history".into(),
        json!((0..40).map(|i| format!("/p/{i}")).collect::<Vec<_>>()),
    );
    d.insert("roles".into(), json!(["customer", "beta"]));
    d.insert("note".into(), json!("x".repeat(200)));
    Record::with_ttl(d, 3600)
}

async fn raw_write(dir: &Path, name: &str, bytes: &[u8], fsync: bool) {
    let n = TEMP.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp_raw_{n}"));
    if fsync {
        let mut f = tokio::fs::File::create(&tmp).await.expect("create temp");
        f.write_all(bytes).await.expect("write");
        f.sync_data().await.expect("sync");
        drop(f);
        tokio::fs::rename(&tmp, dir.join(name))
            .await
            .expect("rename");
        tokio::fs::File::open(dir)
            .await
            .expect("open dir")
            .sync_all()
            .await
            .expect("sync dir");
    } else {
        tokio::fs::write(&tmp, bytes).await.expect("write temp");
        tokio::fs::rename(&tmp, dir.join(name))
            .await
            .expect("rename");
    }
}

/// The keys (and raw file names) one repetition works on, prepared untimed.
async fn prepare(env: &Env, op: Op, ops: usize, side: Side) -> Vec<SessionKey> {
    let keys: Vec<SessionKey> = (0..ops)
        .map(|_| SessionKey::generate().expect("key"))
        .collect();
    if op == Op::Create {
        return keys;
    }
    // Load and update reuse a small working set; delete needs one file per op.
    let distinct = if op == Op::Delete { ops } else { ops.min(256) };
    for k in &keys[..distinct] {
        if side != Side::Store {
            raw_write(&env.raw_dir, k.as_str(), &env.bytes, false).await;
        } else {
            env.store.insert_new(k, &env.record).await.expect("insert");
        }
    }
    (0..ops).map(|i| keys[i % distinct].clone()).collect()
}

async fn one(env: &Env, op: Op, key: &SessionKey, side: Side) {
    let raw = side != Side::Store;
    if side == Side::RawCodec && matches!(op, Op::Create | Op::Update) {
        let bytes = env.codec.encode(&env.record).expect("encode");
        raw_write(&env.raw_dir, key.as_str(), &bytes, env.fsync).await;
        return;
    }
    match (op, raw) {
        (Op::Create, false) => {
            env.store
                .insert_new(key, &env.record)
                .await
                .expect("create");
        }
        (Op::Load, false) => {
            env.store.load(key).await.expect("load").expect("live");
        }
        (Op::Update, false) => {
            env.store
                .update(key, &env.record, None)
                .await
                .expect("update");
        }
        (Op::Delete, false) => {
            assert!(env.store.delete(key).await.expect("delete"));
        }
        (Op::Create | Op::Update, true) => {
            raw_write(&env.raw_dir, key.as_str(), &env.bytes, env.fsync).await;
        }
        (Op::Load, true) => {
            let b = tokio::fs::read(env.raw_dir.join(key.as_str()))
                .await
                .expect("read");
            assert_eq!(b.len(), env.bytes.len());
            if side == Side::RawCodec {
                std::hint::black_box(env.codec.decode(&b).expect("decode"));
            }
        }
        (Op::Delete, true) => {
            tokio::fs::remove_file(env.raw_dir.join(key.as_str()))
                .await
                .expect("remove");
            if env.fsync {
                tokio::fs::File::open(&env.raw_dir)
                    .await
                    .expect("open dir")
                    .sync_all()
                    .await
                    .expect("sync dir");
            }
        }
    }
}

/// Ops per second of `ops` operations spread over `conc` tasks.
async fn measure(env: &Env, op: Op, conc: usize, ops: usize, side: Side) -> f64 {
    let keys = prepare(env, op, ops, side).await;
    // Each task takes every `conc`-th key, so concurrent tasks work on different keys.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conc);
    for t in 0..conc {
        let env = env.clone();
        let mine: Vec<SessionKey> = keys.iter().skip(t).step_by(conc).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for k in &mine {
                one(&env, op, k, side).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = started.elapsed().as_secs_f64();
    ops as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let ops: usize = std::env::var("BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let fsync = std::env::var("BENCH_FSYNC").is_ok_and(|v| v == "1");
    let json_codec = std::env::var("BENCH_CODEC").is_ok_and(|v| v == "json");
    let codec: Arc<dyn Codec> = if json_codec {
        Arc::new(JsonCodec::default())
    } else {
        Arc::new(BincodeCodec::default())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // BENCH_DIR picks the file system (e.g. /dev/shm for tmpfs); default: the OS temp dir.
    let tmp = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("tempdir in BENCH_DIR"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let store = FileStore::builder()
        .dir(tmp.path().join("store"))
        .fsync(fsync)
        .codec(codec.clone())
        .build()
        .expect("store");
    let raw_dir = tmp.path().join("raw");
    std::fs::create_dir(&raw_dir).expect("raw dir");
    let record = session();
    let bytes = Arc::new(codec.encode(&record).expect("encode"));
    let env = Env {
        store,
        raw_dir,
        record,
        bytes,
        codec: codec.clone(),
        fsync,
    };
    println!(
        "file_store bench in {}: {} codec, {} B session, {ops} ops per measurement, fsync {}, \
         {REPS} interleaved repetitions (median, spread min..max)",
        tmp.path().display(),
        codec.name(),
        env.bytes.len(),
        if fsync { "on" } else { "off" },
    );
    // The CPU work a store load adds to a raw read, for reading the ratios below.
    let started = Instant::now();
    for _ in 0..2000 {
        std::hint::black_box(
            codec
                .decode(std::hint::black_box(&env.bytes))
                .expect("decode"),
        );
    }
    let decode_us = started.elapsed().as_secs_f64() * 1e6 / 2000.0;
    let started = Instant::now();
    for _ in 0..2000 {
        std::hint::black_box(
            codec
                .encode(std::hint::black_box(&env.record))
                .expect("encode"),
        );
    }
    let encode_us = started.elapsed().as_secs_f64() * 1e6 / 2000.0;
    println!("codec: decode {decode_us:.1} us, encode {encode_us:.1} us per session");
    println!(
        "{:<6} {:>4} {:>24} {:>24} {:>24} {:>9} {:>9}",
        "op", "conc", "store ops/s", "raw ops/s", "raw+codec ops/s", "store/raw", "/raw+cdc"
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for op in [Op::Create, Op::Load, Op::Update, Op::Delete] {
        let name = format!("{op:?}").to_lowercase();
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        for conc in CONCURRENCY {
            let sides = [Side::Store, Side::Raw, Side::RawCodec];
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
            rt.block_on(async {
                // One untimed warm-up of each side, then interleaved repetitions.
                for side in sides {
                    measure(&env, op, conc, ops / 4, side).await;
                }
                for _ in 0..REPS {
                    for (i, side) in sides.into_iter().enumerate() {
                        runs[i].push(measure(&env, op, conc, ops, side).await);
                    }
                }
            });
            let cell = |v: &mut Vec<f64>| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                let m = median(v);
                (m, format!("{m:.0} ({lo:.0}..{hi:.0})"))
            };
            let (s_med, s_txt) = cell(&mut runs[0]);
            let (r_med, r_txt) = cell(&mut runs[1]);
            let (c_med, c_txt) = cell(&mut runs[2]);
            println!(
                "{name:<6} {conc:>4} {s_txt:>24} {r_txt:>24} {c_txt:>24} {:>8.2}x {:>8.2}x",
                s_med / r_med,
                s_med / c_med
            );
            // Keep the directories small between measurements.
            rt.block_on(async {
                for dir in [env.store.dir().to_owned(), env.raw_dir.clone()] {
                    let mut rd = tokio::fs::read_dir(&dir).await.expect("read_dir");
                    while let Some(e) = rd.next_entry().await.expect("entry") {
                        tokio::fs::remove_file(e.path()).await.expect("clean");
                    }
                }
            });
        }
    }
}
