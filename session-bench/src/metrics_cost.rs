//! What the metrics layer costs (`--only metrics-cost`): each engine's four operations
//! on one store, bare and wearing `session_core::metrics::MetricsLayer`, in the same
//! run, with a real recorder installed (`metrics-exporter-prometheus`'s, as an
//! application would, rendered every second as a scraper would), so every call updates
//! a counter and a histogram.
//!
//! Both sides share the store (same map, same directory), each on keys it created
//! itself. The two sides run interleaved within each phase: every task alternates a
//! batch of [`crate::harness::BATCH`] operations on one side with a batch on the other (which side goes
//! first is drawn at random each time: a cost that comes back every so many operations,
//! such as moka's housekeeping after a number of writes, would otherwise land on the
//! same side's batch every time), and times each batch. A
//! phase's figure for a side is its batches' summed time over its operations, so what
//! else the machine does during the phase weighs on both sides alike, where two phases
//! run one after the other (the first version of this group) each met the machine in
//! another state and single rounds moved by 20-30 %. The figure is the median over
//! rounds of the time ratio (layered time per operation over bare: 1.05 means the layer
//! adds 5 %), with its quartiles. Each round also runs the bare store against itself the
//! same way: that ratio would be 1 for a method without bias, and it shows what the
//! method reads in each cell when nothing differs (a memory-engine create at
//! concurrency 1 carries lumps of moka's housekeeping, which land on one side's batch
//! or the other's and move single rounds by several percent).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use session_core::SessionStore;
use session_core::layer::StoreLayer;
use session_core::metrics::MetricsLayer;

use crate::harness::{Budget, Op, PairState, R, Target, median, paired_phase, quantile};
use crate::ours::{Ours, from_toml};
use crate::wrong;

/// Per round: the first side's rates, the second side's, and their ratios.
type Rates = (Vec<f64>, Vec<f64>, Vec<f64>);

/// One engine, operation and concurrency.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CostRow {
    /// The engine.
    pub engine: String,
    /// The operation.
    pub op: Op,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Median ops/s of the bare store: operations over the summed time of the batches
    /// that made them (at concurrency 32, a task's rate rather than the store's).
    pub bare: f64,
    /// The same with the layer.
    pub with_layer: f64,
    /// Median over rounds of bare rate / layered rate (time per operation, layered over
    /// bare, within the round's interleaved phase).
    pub time_ratio: f64,
    /// First and third quartiles of that ratio over the rounds.
    pub quartiles: (f64, f64),
    /// The same ratio with the bare store on both sides (1 for a method without bias).
    pub same_ratio: f64,
    /// Its first and third quartiles.
    pub same_quartiles: (f64, f64),
}

/// Installs the recorder the layered side records into (once per process), and
/// renders it every second as a scraper would (which also drains the histogram
/// samples it holds), until the process ends.
fn install_recorder() -> R<()> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            std::hint::black_box(handle.render());
        }
    });
    Ok(())
}

/// Runs the comparison for `memory` and `file`: `rounds` rounds of the four phases at
/// concurrency 1 and 32, each phase bounded by `budget(engine, concurrency)`.
pub async fn run(rounds: usize, budget: impl Fn(&str, usize) -> Budget) -> R<Vec<CostRow>> {
    install_recorder()?;
    let mut rows = Vec::new();
    for engine in ["memory", "file"] {
        let dir = tempfile::tempdir()?;
        let toml = match engine {
            "memory" => "engine = \"memory\"\n".to_owned(),
            _ => format!("engine = \"file\"\n[file]\npath = {:?}\n", dir.path()),
        };
        for conc in [1usize, 32] {
            let b = budget(engine, conc);
            // Per pair and op: (first side's rates, second side's rates, ratios).
            let mut acc: Vec<Vec<Rates>> =
                vec![vec![(Vec::new(), Vec::new(), Vec::new()); Op::ALL.len()]; 2];
            for round in 0..rounds {
                let pairs = stores(&toml, round).await?;
                for (pi, sides) in pairs.iter().enumerate() {
                    let mut state: [PairState; 2] = Default::default();
                    for (oi, op) in Op::ALL.into_iter().enumerate() {
                        let seed = (((round * 2 + pi) * Op::ALL.len() + oi) as u64) << 8;
                        let [(bs, bn), (ls, ln)] =
                            paired_phase(sides, &mut state, op, conc, b, seed)
                                .await
                                .map_err(|e| format!("metrics-cost {engine} {}: {e}", op.name()))?;
                        if bs <= 0.0 || ls <= 0.0 || bn == 0 || ln == 0 {
                            return wrong!(
                                "metrics-cost {engine} {}: a side made no operation",
                                op.name()
                            );
                        }
                        let rates = [bn as f64 / bs, ln as f64 / ls];
                        let a = &mut acc[pi][oi];
                        a.0.push(rates[0]);
                        a.1.push(rates[1]);
                        a.2.push(rates[0] / rates[1]);
                    }
                }
            }
            for (oi, op) in Op::ALL.into_iter().enumerate() {
                let (bare, layered, ratios) = &acc[0][oi];
                let same = &acc[1][oi].2;
                rows.push(CostRow {
                    engine: engine.to_owned(),
                    op,
                    concurrency: conc,
                    bare: median(bare),
                    with_layer: median(layered),
                    time_ratio: median(ratios),
                    quartiles: (quantile(ratios, 0.25), quantile(ratios, 0.75)),
                    same_ratio: median(same),
                    same_quartiles: (quantile(same, 0.25), quantile(same, 0.75)),
                });
            }
        }
    }
    Ok(rows)
}

/// The two pairs of one round: bare against layered, and two bare stores against each
/// other (what the method reads when the two sides are alike: its own bias and noise in
/// that cell).
///
/// Four stores of `toml`'s configuration, one per side, built afresh each round, the
/// roles rotating with `round` over the order they were built in. The layered side
/// needs a store of its own (the memory engine hosts the layer's instruments, so a store
/// that wears the layer measures every call made on it, through the layer or not); a
/// store kept for the whole run would keep its place in the allocator's heap for every
/// round (which moved a memory delete at concurrency 1 by up to a fifth between two
/// bare stores); and a store used by both pairs would meet the second one warm.
async fn stores(toml: &str, round: usize) -> R<[[Arc<dyn Target>; 2]; 2]> {
    let mut built: Vec<Arc<dyn SessionStore>> = Vec::with_capacity(4);
    for _ in 0..4 {
        built.push(from_toml(toml).await?);
    }
    built.rotate_left(round % 4);
    let side = |s: Arc<dyn SessionStore>| -> Arc<dyn Target> { Arc::new(Ours::new(s)) };
    let [bare, layered, one, two] = <[Arc<dyn SessionStore>; 4]>::try_from(built)
        .map_err(|_| "metrics-cost: four stores".to_owned())?;
    Ok([
        [side(bare), side(MetricsLayer.layer(layered))],
        [side(one), side(two)],
    ])
}

/// The rows as a Markdown table.
pub fn table(rows: &[CostRow]) -> String {
    let mut s = String::from(
        "| engine | op | concurrency | bare ops/s | with metrics ops/s | time ratio (with / bare): median (quartiles) | bare / bare: median (quartiles) |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} ({:.3}-{:.3}) | {:.3} ({:.3}-{:.3}) |\n",
            r.engine,
            r.op.name(),
            r.concurrency,
            r.bare,
            r.with_layer,
            r.time_ratio,
            r.quartiles.0,
            r.quartiles.1,
            r.same_ratio,
            r.same_quartiles.0,
            r.same_quartiles.1
        ));
    }
    s
}
