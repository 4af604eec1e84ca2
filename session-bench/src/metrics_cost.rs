//! What the metrics layer costs (`--only metrics-cost`): each engine's four operations
//! on one store, bare and wearing `session_core::metrics::MetricsLayer`, in the same
//! run, with a real recorder installed (`metrics-exporter-prometheus`'s, as an
//! application would, rendered every second as a scraper would), so every call updates
//! a counter and a histogram.
//!
//! Both sides share the store (same map, same directory), each on keys it created
//! itself; in every round each phase runs both sides in turn, the order rotating, and
//! the figure is the median over rounds of the time ratio (bare rate over layered
//! rate: 1.05 means the layer adds 5 %).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;
use session_core::SessionStore;
use session_core::layer::StoreLayer;
use session_core::metrics::MetricsLayer;

use crate::harness::{Budget, Op, R, RoundState, Target, median, phase};
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
    /// Median ops/s of the bare store.
    pub bare: f64,
    /// Median ops/s with the layer.
    pub with_layer: f64,
    /// Median over rounds of bare rate / layered rate (time per op, layered over bare).
    pub time_ratio: f64,
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
        let sides: [Arc<dyn Target>; 2] = [Arc::new(Ours::new(bare)), Arc::new(Ours::new(layered))];
        for conc in [1usize, 32] {
            let b = budget(engine, conc);
            // Per op: (bare rates, layered rates, ratios)
            let mut acc: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
                vec![(Vec::new(), Vec::new(), Vec::new()); Op::ALL.len()];
            for round in 0..rounds {
                let mut states = [RoundState::default(), RoundState::default()];
                for (oi, op) in Op::ALL.into_iter().enumerate() {
                    let mut rates = [0.0; 2];
                    for k in 0..2 {
                        let i = (k + round + oi) % 2;
                        rates[i] = phase(&sides[i], &mut states[i], op, conc, b)
                            .await
                            .map_err(|e| format!("metrics-cost {engine} {}: {e}", op.name()))?
                            .rate();
                    }
                    let a = &mut acc[oi];
                    a.0.push(rates[0]);
                    a.1.push(rates[1]);
                    if rates[1] > 0.0 {
                        a.2.push(rates[0] / rates[1]);
                    }
                }
            }
            for (oi, op) in Op::ALL.into_iter().enumerate() {
                let (bare, layered, ratios) = &acc[oi];
                rows.push(CostRow {
                    engine: engine.to_owned(),
                    op,
                    concurrency: conc,
                    bare: median(bare),
                    with_layer: median(layered),
                    time_ratio: median(ratios),
                });
            }
        }
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[CostRow]) -> String {
    let mut s = String::from(
        "| engine | op | concurrency | bare ops/s | with metrics ops/s | time ratio (with / bare) |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} |\n",
            r.engine,
            r.op.name(),
            r.concurrency,
            r.bare,
            r.with_layer,
            r.time_ratio
        ));
    }
    s
}
