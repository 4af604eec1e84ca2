//! What the metrics layer costs (`--only metrics-cost`): each engine's four operations
//! on one store, bare and wearing `session_core::metrics::MetricsLayer`, in the same
//! run, with a real recorder installed (`metrics-exporter-prometheus`'s, as an
//! application would, rendered every second as a scraper would), so every call updates
//! a counter and a histogram.
//!
//! Both sides share the store (same map, same directory), each on keys it created
//! itself. The two sides run interleaved within each phase: every task alternates a
//! batch of [`BATCH`] operations on one side with a batch on the other (which side goes
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

use std::time::Instant;

use crate::harness::{Budget, Key, Op, R, Target, XorShift, median, quantile};
use crate::wrong;

/// Operations one side runs back to back, timed as one, before the other side's turn:
/// enough that the two clock reads around a batch weigh nothing next to its work, few
/// enough that the sides take turns many thousand times a phase.
pub const BATCH: usize = 8;

/// Per round: the first side's rates, the second side's, and their ratios.
type Rates = (Vec<f64>, Vec<f64>, Vec<f64>);

/// One side's sessions in a round: the keys its create phase made, and each one's
/// stored version.
#[derive(Default)]
struct Side {
    keys: Vec<Key>,
    versions: Vec<u64>,
}

/// What one task hands back: per side, (seconds, operations, keys made, keys worked on
/// with their versions, delete keys not reached).
type TaskOut = [(f64, usize, Vec<Key>, Vec<(usize, Key, u64)>, Vec<Key>); 2];

/// Runs `op` with `concurrency` tasks on both sides interleaved (see the module docs)
/// within `budget` (its operation count is split between the sides); per side, the
/// seconds its batches took and the operations they made.
async fn paired_phase(
    sides: &[Arc<dyn Target>; 2],
    state: &mut [Side; 2],
    op: Op,
    concurrency: usize,
    budget: Budget,
    seed: u64,
) -> R<[(f64, usize); 2]> {
    let per_task_side = (budget.ops / concurrency / 2).max(BATCH);
    for (side, st) in sides.iter().zip(state.iter_mut()) {
        if op != Op::Create {
            // A create phase cut short by its time budget: top up, untimed.
            while st.keys.len() < concurrency {
                st.keys.push(side.create().await?);
            }
        }
        st.versions.resize(st.keys.len(), 1);
    }
    // Per task and side: the hot key (load, update) or the keys to delete.
    let mut work: Vec<[Vec<(usize, Key, u64)>; 2]> =
        (0..concurrency).map(|_| [Vec::new(), Vec::new()]).collect();
    let mut doomed: Vec<[Vec<Key>; 2]> =
        (0..concurrency).map(|_| [Vec::new(), Vec::new()]).collect();
    for (s, st) in state.iter_mut().enumerate() {
        match op {
            Op::Load | Op::Update => {
                for (w, task) in work.iter_mut().enumerate() {
                    task[s].push((w, st.keys[w].clone(), st.versions[w]));
                }
            }
            Op::Delete => {
                for (i, k) in std::mem::take(&mut st.keys).into_iter().enumerate() {
                    doomed[i % concurrency][s].push(k);
                }
                st.versions.clear();
            }
            Op::Create => {}
        }
    }
    let deadline = Instant::now() + budget.time;
    let mut tasks = Vec::with_capacity(concurrency);
    for (w, (mut mywork, mine)) in work.into_iter().zip(doomed).enumerate() {
        let sides = sides.clone();
        tasks.push(tokio::spawn(async move {
            let mut out: TaskOut = Default::default();
            let limit = |s: usize| match op {
                Op::Delete => mine[s].len(),
                _ => per_task_side,
            };
            let mut done = [0usize; 2];
            let mut rng = XorShift::new(seed.wrapping_add(w as u64));
            while (done[0] < limit(0) || done[1] < limit(1)) && Instant::now() < deadline {
                // The generator's top bit (its lowest is the weakest).
                let first = (rng.below(u64::MAX) >> 63) as usize;
                for k in 0..2 {
                    let s = (first + k) % 2;
                    let t = &sides[s];
                    let n = BATCH.min(limit(s) - done[s]);
                    if n == 0 {
                        continue;
                    }
                    if op == Op::Delete && done[s] == 0 && !t.holds(&mine[s][0]).await? {
                        return wrong!(
                            "delete phase: a created session is missing before its delete"
                        );
                    }
                    let t0 = Instant::now();
                    for i in 0..n {
                        let at = done[s] + i;
                        match op {
                            Op::Create => out[s].2.push(t.create().await?),
                            Op::Load => t.load(&mywork[s][0].1, at == 0).await?,
                            Op::Update => {
                                let (_, key, version) = &mut mywork[s][0];
                                *version = t.update(key, *version).await?;
                            }
                            Op::Delete => t.delete(&mine[s][at]).await?,
                        }
                    }
                    out[s].0 += t0.elapsed().as_secs_f64();
                    out[s].1 += n;
                    if op == Op::Delete && done[s] == 0 && t.holds(&mine[s][0]).await? {
                        return wrong!("delete phase: the session is still there after its delete");
                    }
                    done[s] += n;
                }
            }
            for s in 0..2 {
                out[s].3 = std::mem::take(&mut mywork[s]);
                if op == Op::Delete {
                    out[s].4 = mine[s][done[s]..].to_vec();
                }
            }
            Ok::<_, crate::harness::BenchError>(out)
        }));
    }
    let mut totals = [(0.0, 0usize); 2];
    let mut leftovers = Vec::new();
    for task in tasks {
        for (s, (secs, ops, made, worked, left)) in task.await??.into_iter().enumerate() {
            totals[s].0 += secs;
            totals[s].1 += ops;
            state[s].keys.extend(made);
            for (i, _, version) in worked {
                state[s].versions[i] = version;
            }
            leftovers.extend(left.into_iter().map(|k| (s, k)));
        }
    }
    // Keys a time-limited delete phase did not reach: removed untimed.
    for (s, k) in leftovers {
        sides[s].delete(&k).await?;
    }
    Ok(totals)
}
use crate::ours::{Ours, from_toml};

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
        let bare: Arc<dyn SessionStore> = from_toml(&toml).await?;
        let layered = MetricsLayer.layer(bare.clone());
        // The comparison, and the bare store against itself: what the method reads when
        // the two sides are the same (its own bias and noise in that cell).
        let pairs: [[Arc<dyn Target>; 2]; 2] = [
            [
                Arc::new(Ours::new(bare.clone())),
                Arc::new(Ours::new(layered)),
            ],
            [Arc::new(Ours::new(bare.clone())), Arc::new(Ours::new(bare))],
        ];
        for conc in [1usize, 32] {
            let b = budget(engine, conc);
            // Per pair and op: (first side's rates, second side's rates, ratios).
            let mut acc: Vec<Vec<Rates>> =
                vec![vec![(Vec::new(), Vec::new(), Vec::new()); Op::ALL.len()]; 2];
            for round in 0..rounds {
                for (pi, sides) in pairs.iter().enumerate() {
                    let mut state: [Side; 2] = Default::default();
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
