//! `clear_expired` under load (`--only sweep`): on SQLite and PostgreSQL, a table of
//! 100,000 expired sessions among 10,000 live ones is swept (the store's own
//! `clear_expired`, as the background cleanup and `sessions clear` call it) while 8
//! tasks load and update random live sessions, compare-and-set as the session handle
//! does. Reported: how long those operations took during the sweep, next to the same
//! load on the same table without a sweep, how long the sweep took, and whether every
//! live session survived it (each one is loaded afterwards).
//!
//! Expired rows are planted through the store's raw access (the bytes of a real
//! record, with a deadline an hour ago), so seeding costs one statement a row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_db::DbStore;
use integration_tests::servers;
use session_core::{Error, SessionKey, SessionStore, Timestamp};

use crate::harness::{R, XorShift, quantile_us, record};
use crate::wrong;

/// Tasks loading and updating during the sweep.
const WORKERS: usize = 8;
/// Operations one worker does at most in a phase (the phase also ends with the sweep).
const MAX_OPS_PER_WORKER: usize = 500_000;
/// The load-only phase's length, and the longest a sweep may take.
const IDLE: Duration = Duration::from_secs(2);
const SWEEP_LIMIT: Duration = Duration::from_secs(120);

/// One engine and phase.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepRow {
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// `no sweep` or `during sweep`.
    pub phase: &'static str,
    /// Loads and updates done in the phase.
    pub ops: usize,
    /// Load latency p50 / p99 / max, microseconds.
    pub load_us: [f64; 3],
    /// Update latency p50 / p99 / max, microseconds.
    pub update_us: [f64; 3],
    /// Records the sweep removed (0 in the `no sweep` phase).
    pub removed: u64,
    /// How long the sweep took, milliseconds (0 in the `no sweep` phase).
    pub sweep_ms: f64,
    /// Live sessions still loadable after the phase, of `live`.
    pub survivors: usize,
    /// Live sessions seeded.
    pub live: usize,
}

/// Runs the measurement on SQLite (a file in a temporary directory) and PostgreSQL (a
/// table of its own, dropped afterwards).
pub async fn run(expired: usize, live: usize, run_id: &str) -> R<Vec<SweepRow>> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("sweep.db").display());
    let pg_table = format!("bench_sweep_{run_id}");
    for (engine, url, table) in [
        ("sqlite", sqlite, "sessions".to_owned()),
        ("postgres", servers::postgres_url(), pg_table),
    ] {
        let store = crate::groups::db_store(&url, &table).await?;
        let result = measure(engine, &store, expired, live).await;
        store.drop_table().await?;
        rows.extend(result.map_err(|e| format!("sweep {engine}: {e}"))?);
    }
    Ok(rows)
}

async fn measure(
    engine: &str,
    store: &Arc<DbStore>,
    expired: usize,
    live: usize,
) -> R<Vec<SweepRow>> {
    let started = Instant::now();
    let keys = Arc::new(seed(store, expired, live).await?);
    println!(
        "sweep {engine}: seeded {expired} expired and {live} live sessions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for phase in ["no sweep", "during sweep"] {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(work(store.clone(), keys.clone(), stop.clone(), w as u64)))
            .collect();
        let (removed, sweep_ms) = if phase == "no sweep" {
            tokio::time::sleep(IDLE).await;
            (0, 0.0)
        } else {
            // The workers get going first, and keep going a little after.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            let removed = tokio::time::timeout(SWEEP_LIMIT, store.clear_expired())
                .await
                .map_err(|_| format!("the sweep took longer than {SWEEP_LIMIT:?}"))??;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (removed, ms)
        };
        stop.store(true, Ordering::Relaxed);
        let (mut loads, mut updates) = (Vec::new(), Vec::new());
        for w in workers {
            let (l, u) = w.await??;
            loads.extend(l);
            updates.extend(u);
        }
        let mut survivors = 0;
        for k in keys.iter() {
            if store.load(k).await?.is_some() {
                survivors += 1;
            }
        }
        let q = |v: &mut Vec<u64>| {
            [
                quantile_us(v, 0.5),
                quantile_us(v, 0.99),
                v.iter().max().map_or(0.0, |m| *m as f64 / 1e3),
            ]
        };
        let row = SweepRow {
            engine: engine.to_owned(),
            phase,
            ops: loads.len() + updates.len(),
            load_us: q(&mut loads),
            update_us: q(&mut updates),
            removed,
            sweep_ms,
            survivors,
            live,
        };
        println!("{}", line(&row));
        rows.push(row);
    }
    Ok(rows)
}

/// `live` sessions created through the store (their keys returned) and `expired`
/// planted with a past deadline.
async fn seed(store: &Arc<DbStore>, expired: usize, live: usize) -> R<Vec<SessionKey>> {
    let first = store.create(&record()).await?;
    let Some(raw) = store.raw() else {
        return wrong!("the db engine offers no raw access");
    };
    let Some(bytes) = raw.get_raw(&first).await? else {
        return wrong!("a created session has no stored bytes");
    };
    let bytes = Arc::new(bytes);
    let past = Timestamp::now().add_secs(-3600);
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let store = store.clone();
            let bytes = bytes.clone();
            let (n_live, n_expired) = (share(live - 1, w), share(expired, w));
            tokio::spawn(async move {
                let mut keys = Vec::with_capacity(n_live);
                for _ in 0..n_live {
                    keys.push(store.create(&record()).await?);
                }
                let raw = store.raw().expect("checked above");
                for _ in 0..n_expired {
                    raw.put_raw(&SessionKey::generate()?, &bytes, past).await?;
                }
                Ok::<_, crate::harness::BenchError>(keys)
            })
        })
        .collect();
    let mut keys = vec![first];
    for t in tasks {
        keys.extend(t.await??);
    }
    Ok(keys)
}

/// Worker `w`'s part of `n`.
fn share(n: usize, w: usize) -> usize {
    n / WORKERS + usize::from(w < n % WORKERS)
}

/// Loads a random live session and updates it with the version it read, until `stop`;
/// the latencies (ns) of loads and of updates.
async fn work(
    store: Arc<DbStore>,
    keys: Arc<Vec<SessionKey>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> R<(Vec<u64>, Vec<u64>)> {
    let mut rng = XorShift::new(seed);
    let (mut loads, mut updates) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) && loads.len() < MAX_OPS_PER_WORKER {
        let key = &keys[rng.below(keys.len() as u64) as usize];
        let t = Instant::now();
        let Some(r) = store.load(key).await? else {
            return wrong!("a live session vanished during the sweep");
        };
        loads.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        match store.update(key, &r, Some(r.version)).await {
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        updates.push(t.elapsed().as_nanos() as u64);
    }
    Ok((loads, updates))
}

fn line(r: &SweepRow) -> String {
    format!(
        "| {} | {} | {} | {:.0} / {:.0} / {:.1} | {:.0} / {:.0} / {:.1} | {} | {:.0} | {} of {} |",
        r.engine,
        r.phase,
        r.ops,
        r.load_us[0],
        r.load_us[1],
        r.load_us[2] / 1e3,
        r.update_us[0],
        r.update_us[1],
        r.update_us[2] / 1e3,
        r.removed,
        r.sweep_ms,
        r.survivors,
        r.live
    )
}

/// The rows as a Markdown table.
pub fn table(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| engine | phase | loads + updates | load p50 / p99 µs / max ms | update p50 / p99 µs / max ms | removed | sweep ms | live sessions kept |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&line(r));
        s.push('\n');
    }
    s
}
