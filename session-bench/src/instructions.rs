//! Instructions per request and per store call (`--only instructions`), counted by
//! valgrind's callgrind: the figures the wall-clock groups give as rates, made
//! repeatable on a shared machine. Callgrind counts executed instructions, not time: the
//! same binary and inputs give the same count whatever else the machine runs, so a
//! change of one percent shows, where the timed groups spread by tens of percent. It
//! does not see cache misses, atomics' latency or allocator contention, so it stands
//! beside the timed figures, not in place of them.
//!
//! Each measured thing runs in a child process of this binary under
//! `valgrind --tool=callgrind` (`--count THING --count-n N`), twice: with `N` and with
//! `2N` operations. The difference of the two totals divided by `N` is the cost of one
//! operation, without start-up, set-up and warm-up (the same in both).
//!
//! Measured:
//! - the axum setups of the `layer` group ([`crate::layer::SETUPS`]): one request
//!   that reads and increments one session value (64 sessions round robin);
//! - the memory engine's `load`, `update`, and `create` followed by `delete` of a new
//!   session (the benchmark's 10-field session), bare and wearing the metrics layer,
//!   with a Prometheus recorder installed in both processes, called as the session
//!   handle calls them ([`session_core::StoreCalls`]).
//!
//! `--count redis:load` and `--count redis-floor:load` run the same loop against Redis,
//! through the `cache` engine and through the raw client: not counted by the group, but a
//! process to profile (`perf record -g`) for what a store's load adds to a `GET`.
//! `--count file:load` and `--count file-floor:load` do the same for the file engine
//! against `tokio::fs`.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;

use session_core::SessionStore;
use session_core::layer::StoreLayer;
use session_core::metrics::MetricsLayer;

use crate::harness::{Key, R, Target};
use crate::ours::Ours;
use crate::wrong;

/// Store calls are cheaper than requests, and vary more from process to process: each
/// process runs this many times more of them (with `--count-n 2000`, 50,000 and 100,000
/// calls, so a process's stray housekeeping weighs a few instructions a call).
const STORE_SCALE: usize = 25;

/// Runs one measured thing `n` times (the child process's work).
pub async fn count(thing: &str, n: usize) -> R<()> {
    if let Some(setup) = thing.strip_prefix("axum:") {
        return crate::layer::count_one(setup, n).await;
    }
    let Some((side, op)) = thing.split_once(':') else {
        return wrong!("unknown thing to count: {thing}");
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))?;
    // Built directly, as the axum setups' store is: from configuration the engine wears
    // the timeout layer, whose timers make the count depend on the wall clock.
    let bare: Arc<dyn SessionStore> = Arc::new(backend_cache::MemoryStore::new());
    let target: Box<dyn Target> = match side {
        "memory" => Box::new(Ours::new(bare)),
        "memory+metrics" => Box::new(Ours::new(MetricsLayer.layer(bare))),
        // Against Redis (`SESSIONS_TEST_REDIS_URL`, default the local server): the
        // `cache` engine as configuration builds it, and the raw client's floor. For a
        // profile of one side's client work (`perf record` on `--count redis:load`);
        // the group does not count them (the layer's timers follow the wall clock).
        "redis" => {
            let url = integration_tests::servers::redis_url();
            Box::new(Ours::new(
                crate::ours::from_toml(&format!(
                    "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = \"count:\"\n"
                ))
                .await?,
            ))
        }
        "redis-floor" => Box::new(crate::raw::RawRedis::new(
            crate::raw::RedisConn::single(&integration_tests::servers::redis_url()).await?,
            "count-raw:".to_owned(),
            crate::groups::encoded()?,
        )),
        // The file engine as configuration builds it, and `tokio::fs`, each in a
        // directory of its own (removed at exit), for the same kind of profile.
        "file" | "file-floor" => {
            let dir = tempfile::tempdir()?;
            let target: Box<dyn Target> = if side == "file" {
                Box::new(Ours::new(
                    crate::ours::from_toml(&format!(
                        "engine = \"file\"\n[file]\npath = {:?}\n",
                        dir.path()
                    ))
                    .await?,
                ))
            } else {
                Box::new(crate::raw::RawFs::new(
                    dir.path().to_owned(),
                    crate::groups::encoded()?,
                    true,
                ))
            };
            return run_all(target.as_ref(), op, n).await;
        }
        other => return wrong!("unknown store side: {other}"),
    };
    run_all(target.as_ref(), op, n).await
}

/// Creates 64 sessions, calls `op` on them round robin (500 warm-up calls, then `n`),
/// and deletes them.
async fn run_all(target: &dyn Target, op: &str, n: usize) -> R<()> {
    let mut keys: Vec<(Key, u64)> = Vec::with_capacity(64);
    for _ in 0..64 {
        keys.push((target.create().await?, 1));
    }
    run_calls(target, &mut keys, op, 500).await?;
    run_calls(target, &mut keys, op, n).await?;
    for (key, _) in &keys {
        target.delete(key).await?;
    }
    Ok(())
}

/// `count` calls of `op` on the sessions of `keys`, round robin.
async fn run_calls(target: &dyn Target, keys: &mut [(Key, u64)], op: &str, count: usize) -> R<()> {
    for i in 0..count {
        let slot = i % keys.len();
        let (key, version) = &mut keys[slot];
        match op {
            "load" => target.load(key, false).await?,
            "update" => *version = target.update(key, *version).await?,
            "create+delete" => {
                let fresh = target.create().await?;
                target.delete(&fresh).await?;
            }
            other => return wrong!("unknown store call: {other}"),
        }
    }
    Ok(())
}

/// Instructions of this binary running `--count thing --count-n n` under callgrind.
fn instructions(thing: &str, n: usize) -> R<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&exe)
        .args(["--count", thing, "--count-n", &n.to_string()])
        // The store's `load` (the whole record decoded), as the module docs name it.
        .arg("--eager-loads")
        .output()
        .map_err(|e| format!("running valgrind: {e} (install it: apt-get install valgrind)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return wrong!("{thing}: the counted run failed:\n{stderr}");
    }
    // "==PID== Collected : 123456"
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .map_or_else(
            || wrong!("{thing}: no instruction count in callgrind's output:\n{stderr}"),
            Ok,
        )
}

/// Instructions per operation of `thing`: (I(2n) - I(n)) / n, each total the least of
/// `reps` processes. The middleware requests count the same in every process; the store
/// calls vary by about one percent between processes (moka's housekeeping runs on a
/// timer as well as on a count, and callgrind slows the clock's pace down unevenly), and
/// the least of three filters that out.
fn per_op(thing: &str, n: usize, reps: usize) -> R<f64> {
    let least = |n: usize| -> R<u64> {
        let mut best = u64::MAX;
        for _ in 0..reps {
            best = best.min(instructions(thing, n)?);
        }
        Ok(best)
    };
    let one = least(n)?;
    let two = least(2 * n)?;
    if two <= one {
        return wrong!(
            "{thing}: {two} instructions for {} operations, {one} for {n}",
            2 * n
        );
    }
    Ok((two - one) as f64 / n as f64)
}

/// Counts everything and returns the markdown section.
pub fn run(n: usize) -> R<String> {
    let mut md = String::new();
    writeln!(
        md,
        "Instructions counted by callgrind (`session-bench --only instructions --count-n {n}`: \
         {n} and {} requests per process, {} and {} store calls, the least of three processes; \
         see `session-bench/src/instructions.rs`):\n",
        2 * n,
        STORE_SCALE * n,
        2 * STORE_SCALE * n
    )?;
    writeln!(
        md,
        "| Axum setup | instructions/request | session-axum ÷ setup |"
    )?;
    writeln!(md, "|---|--:|--:|")?;
    let mut layer = Vec::new();
    for setup in crate::layer::SETUPS {
        let i = per_op(&format!("axum:{setup}"), n, 1)?;
        println!("axum {setup}: {i:.0} instructions/request");
        layer.push((setup, i));
    }
    let ours = layer[0].1;
    for (setup, i) in &layer {
        // Speed ratio: how many of this setup's requests cost one of ours.
        writeln!(md, "| {setup} | {i:.0} | {:.2}x |", i / ours)?;
    }
    writeln!(
        md,
        "\n| Memory engine call | bare | with the metrics layer | layer ÷ bare |"
    )?;
    writeln!(md, "|---|--:|--:|--:|")?;
    for op in ["load", "update", "create+delete"] {
        let bare = per_op(&format!("memory:{op}"), STORE_SCALE * n, 3)?;
        let layered = per_op(&format!("memory+metrics:{op}"), STORE_SCALE * n, 3)?;
        println!("memory {op}: {bare:.0} bare, {layered:.0} with metrics (instructions/call)");
        writeln!(
            md,
            "| {op} | {bare:.0} | {layered:.0} | {:.3}x |",
            layered / bare
        )?;
    }
    Ok(md)
}
