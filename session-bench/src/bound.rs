//! The memory engine at its bound (`--only memory-bound`): what one insert costs in a
//! store far below `max_entries` and in the same store once it holds `max_entries`
//! sessions, so that every insert has to evict (or is not admitted).
//!
//! Every store is built from configuration (`engine = "memory"`, `max_entries` =
//! [`BOUND`]). The full one is filled once. Each run then times [`INSERTS`] creates (one
//! task, the benchmark's 10-field session) into three stores: an empty one, one filled to
//! [`INSERTS`] below the bound (so the timed creates end exactly at it: the same map size
//! as the full store, without evicting), and the full one. The figure the issue sets a
//! goal for is the ratio of the per-insert costs at the bound over just below it; the
//! ratio over the empty store also shows what a large map costs by itself (cache misses).

use std::sync::Arc;
use std::time::Instant;

use session_core::SessionStore;

use crate::harness::{R, record};
use crate::ours::from_toml;
use crate::wrong;

/// `max_entries` of the measured stores.
pub const BOUND: usize = 500_000;
/// Creates timed per side and run.
pub const INSERTS: usize = 20_000;

/// One run's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BoundRun {
    /// Mean µs per create in an empty store.
    pub empty_us: f64,
    /// Mean µs per create in a store just below its bound.
    pub below_us: f64,
    /// Mean µs per create in the full store.
    pub at_us: f64,
}

impl BoundRun {
    /// At the bound over just below it.
    pub fn ratio(&self) -> f64 {
        if self.below_us > 0.0 {
            self.at_us / self.below_us
        } else {
            0.0
        }
    }

    /// At the bound over an empty store.
    pub fn ratio_empty(&self) -> f64 {
        if self.empty_us > 0.0 {
            self.at_us / self.empty_us
        } else {
            0.0
        }
    }
}

/// Every run, with how long the fill took.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BoundReport {
    /// `max_entries`.
    pub bound: usize,
    /// Creates timed per side and run.
    pub inserts: usize,
    /// Seconds to fill the store to its bound.
    pub fill_secs: f64,
    /// Sessions the full store counted after the last run (within the bound).
    pub count_after: u64,
    /// Each run.
    pub runs: Vec<BoundRun>,
}

async fn store() -> R<Arc<dyn SessionStore>> {
    from_toml(&format!(
        "engine = \"memory\"\n[memory]\nmax_entries = {BOUND}\n"
    ))
    .await
}

/// Mean µs per create of `n` creates into `store`.
async fn time_creates(store: &dyn SessionStore, n: usize) -> R<f64> {
    let r = record();
    let started = Instant::now();
    for _ in 0..n {
        store.create(&r).await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Fills one store to its bound, then times `runs` runs.
pub async fn run(runs: usize) -> R<BoundReport> {
    let full = store().await?;
    let started = Instant::now();
    time_creates(full.as_ref(), BOUND).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for _ in 0..runs {
        let empty = store().await?;
        let below = store().await?;
        time_creates(below.as_ref(), BOUND - INSERTS).await?;
        let empty_us = time_creates(empty.as_ref(), INSERTS).await?;
        drop(empty);
        let at_us = time_creates(full.as_ref(), INSERTS).await?;
        let below_us = time_creates(below.as_ref(), INSERTS).await?;
        out.push(BoundRun {
            empty_us,
            below_us,
            at_us,
        });
    }
    let count_after = full.count().await?;
    if count_after > BOUND as u64 {
        return wrong!("memory-bound: the full store counts {count_after} > {BOUND}");
    }
    Ok(BoundReport {
        bound: BOUND,
        inserts: INSERTS,
        fill_secs,
        count_after,
        runs: out,
    })
}

impl BoundReport {
    /// The Markdown table: one row per run.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from(
            "| Run | µs/insert, empty store | µs/insert, just below the bound | µs/insert at the bound | at ÷ just below | at ÷ empty |\n|--:|--:|--:|--:|--:|--:|\n",
        );
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x |",
                i + 1,
                r.empty_us,
                r.below_us,
                r.at_us,
                r.ratio(),
                r.ratio_empty()
            );
        }
        let _ = writeln!(
            s,
            "\nBound {} sessions (the full store filled in {:.1} s), {} creates per store and \
             run, one task; the full store counted {} sessions afterwards.",
            self.bound, self.fill_secs, self.inserts, self.count_after
        );
        s
    }
}
