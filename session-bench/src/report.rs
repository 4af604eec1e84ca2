//! Figures, the Markdown tables, the target checks, and the splice into BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use crate::bound::BoundReport;
use crate::groups::Role;
use crate::harness::{Op, R, median};
use crate::layer::LayerRow;
use crate::wrong;

/// Everything one side measured for one op and concurrency.
#[derive(serde::Serialize)]
pub struct Cell {
    /// The group.
    pub engine: String,
    /// The side's name.
    pub side: String,
    /// Ours, floor or peer.
    pub role: Role,
    /// The operation.
    pub op: Op,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Ops/s of every round, per run.
    pub rates_by_run: Vec<Vec<f64>>,
    /// Median latency over every operation of every run, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Ours over this side, per round, per run (empty for ours).
    pub ratio_by_run: Vec<Vec<f64>>,
}

impl Cell {
    /// Median ops/s over every round of every run.
    pub fn rate(&self) -> f64 {
        median(&self.rates_by_run.concat())
    }

    /// (max - min) / median of the per-run medians, in percent.
    pub fn spread_pct(&self) -> f64 {
        let m: Vec<f64> = self.rates_by_run.iter().map(|r| median(r)).collect();
        let (lo, hi) = min_max(&m);
        let mid = median(&m);
        if mid > 0.0 {
            (hi - lo) / mid * 100.0
        } else {
            0.0
        }
    }

    /// Median of every per-round ratio.
    pub fn ratio(&self) -> f64 {
        median(&self.ratio_by_run.concat())
    }

    /// Lowest and highest per-run median ratio.
    pub fn ratio_range(&self) -> (f64, f64) {
        let m: Vec<f64> = self.ratio_by_run.iter().map(|r| median(r)).collect();
        min_max(&m)
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// One target of the benchmark issue, checked.
#[derive(serde::Serialize)]
pub struct Check {
    /// What is compared.
    pub what: String,
    /// The goal (ours / other at least this).
    pub goal: f64,
    /// The median ratio.
    pub ratio: f64,
    /// Per-run range.
    pub range: (f64, f64),
    /// Whether the median meets the goal.
    pub met: bool,
}

/// A whole run of the command.
#[derive(serde::Serialize)]
pub struct Report {
    /// Complete runs.
    pub runs: usize,
    /// Rounds per run.
    pub rounds: usize,
    /// Time budget per phase.
    pub secs: f64,
    /// Operation-count multiplier.
    pub scale: f64,
    /// CPU, cores, kernel.
    pub machine: String,
    /// The load and update phases' workload (`--workload`).
    pub workload: crate::harness::Workload,
    /// Whether our loads left the data encoded and read one field (`--lazy-loads`, the
    /// default) or decoded the whole record (`--eager-loads`).
    pub lazy_loads: bool,
    /// Every measured cell.
    pub cells: Vec<Cell>,
    /// The middleware comparison.
    pub layer: Vec<LayerRow>,
    /// The actix-web middleware comparison.
    pub actix: Vec<LayerRow>,
    /// The memory engine at its bound (`memory-bound`).
    pub memory_bound: Option<BoundReport>,
    /// Wall time of the command.
    pub elapsed_secs: f64,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_us(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

fn fmt_ratio(c: &Cell) -> String {
    let (lo, hi) = c.ratio_range();
    format!("**{:.2}x** ({lo:.2}–{hi:.2})", c.ratio())
}

impl Report {
    /// An empty report.
    pub fn new(runs: usize, rounds: usize, secs: f64, scale: f64) -> Self {
        Report {
            runs,
            rounds,
            secs,
            scale,
            machine: machine(),
            workload: crate::harness::Workload::Hot,
            lazy_loads: crate::ours::LAZY_LOADS.load(std::sync::atomic::Ordering::Relaxed),
            cells: Vec::new(),
            layer: Vec::new(),
            actix: Vec::new(),
            memory_bound: None,
            elapsed_secs: 0.0,
        }
    }

    /// Adds a cell.
    pub fn push(&mut self, c: Cell) {
        self.cells.push(c);
    }

    fn find(&self, engine: &str, role: Role, op: Op, conc: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.engine == engine && c.role == role && c.op == op && c.concurrency == conc)
    }

    /// Engines in measured order.
    pub fn engines(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in &self.cells {
            if !v.contains(&c.engine) {
                v.push(c.engine.clone());
            }
        }
        v
    }

    fn side_name(&self, engine: &str, role: Role) -> Option<String> {
        self.cells
            .iter()
            .find(|c| c.engine == engine && c.role == role)
            .map(|c| c.side.clone())
    }

    /// Ops/s of `engine`'s side `role`, op `op`, concurrency `conc`.
    pub fn rate(&self, engine: &str, role: Role, op: Op, conc: usize) -> Option<f64> {
        self.find(engine, role, op, conc).map(Cell::rate)
    }

    fn rows(&self, engine: &str, out: &mut String) {
        for conc in [1usize, 32] {
            for op in Op::ALL {
                let Some(ours) = self.find(engine, Role::Ours, op, conc) else {
                    continue;
                };
                let lat = |c: &Cell| format!("{} / {}", fmt_us(c.p50_us), fmt_us(c.p99_us));
                let other = |role| match self.find(engine, role, op, conc) {
                    Some(c) => (
                        format!("{} ±{:.0}%", fmt_rate(c.rate()), c.spread_pct()),
                        lat(c),
                        fmt_ratio(c),
                    ),
                    None => ("—".into(), "—".into(), "—".into()),
                };
                let (fr, fl, fx) = other(Role::Floor);
                let (pr, pl, px) = other(Role::Peer);
                let _ = writeln!(
                    out,
                    "| {engine} | {} | {conc} | {} ±{:.0}% | {} | {fr} | {fl} | {fx} | {pr} | {pl} | {px} |",
                    op.name(),
                    fmt_rate(ours.rate()),
                    ours.spread_pct(),
                    lat(ours),
                );
            }
        }
    }

    const HEADER: &'static str = "| Engine | Op | c | Ours ops/s | p50 / p99 µs | Floor ops/s | p50 / p99 µs | ours ÷ floor | Peer ops/s | p50 / p99 µs | ours ÷ peer |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";

    /// Prints `engine`'s rows to stdout as they are measured.
    pub fn print_group(&self, engine: &str) {
        let mut s = String::from(Self::HEADER);
        self.rows(engine, &mut s);
        println!("\n{s}");
        let mut cas = String::new();
        self.cas_rows(engine, &mut cas);
        if !cas.is_empty() {
            println!("{}{cas}", Self::CAS_HEADER);
        }
    }

    const CAS_HEADER: &'static str = "| Engine | c | Ours update ops/s | p50 / p99 µs | Compare-and-set floor ops/s | p50 / p99 µs | ours ÷ CAS floor | ours ÷ blind floor |\n|---|--:|--:|--:|--:|--:|--:|--:|\n";

    /// `engine`'s updates against its compare-and-set floor, where it has one.
    fn cas_rows(&self, engine: &str, out: &mut String) {
        for conc in [1usize, 32] {
            let (Some(ours), Some(cas)) = (
                self.find(engine, Role::Ours, Op::Update, conc),
                self.find(engine, Role::CasFloor, Op::Update, conc),
            ) else {
                continue;
            };
            let lat = |c: &Cell| format!("{} / {}", fmt_us(c.p50_us), fmt_us(c.p99_us));
            let blind = self
                .find(engine, Role::Floor, Op::Update, conc)
                .map_or_else(|| "—".into(), fmt_ratio);
            let _ = writeln!(
                out,
                "| {engine} | {conc} | {} ±{:.0}% | {} | {} ±{:.0}% | {} | {} | {blind} |",
                fmt_rate(ours.rate()),
                ours.spread_pct(),
                lat(ours),
                fmt_rate(cas.rate()),
                cas.spread_pct(),
                lat(cas),
                fmt_ratio(cas),
            );
        }
    }

    /// Prints the middleware rows.
    pub fn print_layer(&self) {
        println!("\n{}", self.layer_table());
    }

    /// Prints the actix-web middleware rows.
    pub fn print_actix(&self) {
        println!("\n{}", self.actix_table());
    }

    fn layer_table(&self) -> String {
        let mut s = rows_table("session-axum", &self.layer);
        let us = |name: &str| {
            self.layer
                .iter()
                .find(|r| r.name == name && r.median > 0.0)
                .map(|r| 1e6 / r.median)
        };
        let paired = self
            .layer
            .iter()
            .find(|r| r.name == "session-axum, session untouched")
            .map(|r| r.extra_us);
        if let (Some(untouched), Some(bare), Some(paired)) = (
            us("session-axum, session untouched"),
            us("no session layer"),
            paired,
        ) {
            let _ = writeln!(
                s,
                "\nA request that never touches its session pays {paired:.3} µs for the layer, \
                 median over rounds of the difference within a round ({:.3} µs between the \
                 two setups' medians; goal: at most 0.3 µs).",
                untouched - bare
            );
        }
        s
    }

    fn actix_table(&self) -> String {
        rows_table("session-actix", &self.actix)
    }

    /// The targets the benchmark issue sets, each checked against the measured ratio.
    pub fn checks(&self) -> Vec<Check> {
        let mut v = Vec::new();
        let mut check = |what: String, c: Option<&Cell>, goal: f64| {
            if let Some(c) = c {
                let ratio = c.ratio();
                v.push(Check {
                    what,
                    goal,
                    ratio,
                    range: c.ratio_range(),
                    met: ratio >= goal,
                });
            }
        };
        for e in self.engines() {
            for conc in [1usize, 32] {
                // Loads: 0.95x (the lazy-load issue's goal); updates: 0.9x.
                for (op, goal) in [(Op::Load, 0.95), (Op::Update, 0.9)] {
                    check(
                        format!("{e} {} c={conc} vs floor", op.name()),
                        self.find(&e, Role::Floor, op, conc),
                        goal,
                    );
                }
            }
        }
        for e in self.engines() {
            for conc in [1usize, 32] {
                check(
                    format!("{e} update c={conc} vs compare-and-set floor"),
                    self.find(&e, Role::CasFloor, Op::Update, conc),
                    0.9,
                );
            }
        }
        for conc in [1usize, 32] {
            for op in Op::ALL {
                check(
                    format!("redis {} c={conc} vs tower-sessions-redis-store", op.name()),
                    self.find("redis", Role::Peer, op, conc),
                    1.3,
                );
            }
        }
        for conc in [1usize, 32] {
            check(
                format!("postgres create c={conc} vs tower-sessions-sqlx-store"),
                self.find("postgres", Role::Peer, Op::Create, conc),
                1.5,
            );
        }
        for op in Op::ALL {
            check(
                format!("memory {} c=32 vs tower-sessions MemoryStore", op.name()),
                self.find("memory", Role::Peer, op, 32),
                1.5,
            );
        }
        v
    }

    /// The whole results section, Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Machine: {}. {} runs × {} rounds; each phase bounded by its operation count \
             (×{}) and {} s. Generated by `scripts/bench` in {:.0} s.\n",
            self.machine, self.runs, self.rounds, self.scale, self.secs, self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "Workload: {}.\n",
            match self.workload {
                crate::harness::Workload::Hot =>
                    "hot keys (`--workload hot`): load and update work on one session per \
                     task, over and over",
                crate::harness::Workload::Random =>
                    "random keys (`--workload random`): load and update work on every \
                     session the round created, each once, in random order",
            }
        );
        let _ = writeln!(
            s,
            "Our loads: {}.\n",
            if self.lazy_loads {
                "as the session handle loads (`load_lazy`: the data left encoded, then one \
                 field of ten read; the default, `--lazy-loads`)"
            } else {
                "the whole record decoded (`SessionStore::load`, `--eager-loads`)"
            }
        );
        s.push_str("### Sides per engine\n\n| Engine | Floor | Peer |\n|---|---|---|\n");
        for e in self.engines() {
            let _ = writeln!(
                s,
                "| {e} | {} | {} |",
                self.side_name(&e, Role::Floor)
                    .unwrap_or_else(|| "—".into()),
                self.side_name(&e, Role::Peer).unwrap_or_else(|| "—".into())
            );
        }
        s.push_str(
            "\n### Every cell\n\nOps/s: median over every round of both runs, ± the spread \
             of the two runs' medians. Ratios: median of the per-round ratios (ours over the \
             side measured next to it in the same round), with each run's median in \
             parentheses.\n\n",
        );
        s.push_str(Self::HEADER);
        for e in self.engines() {
            self.rows(&e, &mut s);
        }
        let mut cas = String::new();
        for e in self.engines() {
            self.cas_rows(&e, &mut cas);
        }
        if !cas.is_empty() {
            s.push_str(
                "\n### Updates against a compare-and-set floor\n\nThe blind floor's update is a \
                 plain `SET XX`, which loses a concurrent request's write; ours checks the \
                 version. The compare-and-set floor is the smallest script that does that check \
                 (`GETRANGE` of an 8-byte version, then `SET`), through the same client's \
                 `EVALSHA`:\n\n",
            );
            s.push_str(Self::CAS_HEADER);
            s.push_str(&cas);
        }
        s.push_str(
            "\n### Targets\n\n| Target | Goal | Measured | Runs | |\n|---|--:|--:|--:|---|\n",
        );
        for c in self.checks() {
            let _ = writeln!(
                s,
                "| {} | ≥ {:.2}x | {:.2}x | {:.2}–{:.2} | {} |",
                c.what,
                c.goal,
                c.ratio,
                c.range.0,
                c.range.1,
                if c.met { "met" } else { "**missed**" }
            );
        }
        if let Some(b) = &self.memory_bound {
            s.push_str(
                "\n### Memory engine at its bound\n\nMean cost of one create (through \
                 `SessionStore::create`) into a memory store far below `max_entries` and \
                 into one holding `max_entries` sessions (goal: within 2x):\n\n",
            );
            s.push_str(&b.table());
        }
        if !self.layer.is_empty() {
            s.push_str(
                "\n### Middleware\n\nIn-process requests (`tower::ServiceExt::oneshot`) to a \
                 handler that reads and increments one session value, 64 sessions round \
                 robin, over the in-process memory store; and, for what the layer costs a \
                 request that does not use it, our layer in front of the handler without \
                 sessions, on requests without a cookie (goal: at most 0.3 µs over no \
                 layer):\n\n",
            );
            s.push_str(&self.layer_table());
        }
        if !self.actix.is_empty() {
            s.push_str(
                "\n### actix-web middleware\n\nIn-process requests (`Service::call` on the app, built \
                 as `actix_web::test::init_service` does) to the same handler, 64 sessions \
                 round robin, both session middlewares over the same Redis server with signed \
                 cookies:\n\n",
            );
            s.push_str(&self.actix_table());
        }
        s.push_str(
            "\nCharts (log scale): [concurrency 1](docs/bench/ops-c1.svg), \
             [concurrency 32](docs/bench/ops-c32.svg).\n\n\
             ![ops/s at concurrency 1](docs/bench/ops-c1.svg)\n\n\
             ![ops/s at concurrency 32](docs/bench/ops-c32.svg)\n",
        );
        s
    }
}

const BEGIN: &str = "<!-- results:begin (written by scripts/bench) -->";
const END: &str = "<!-- results:end -->";

/// Replaces the text between the results markers of `doc` with `md`.
pub fn splice(doc: &Path, md: &str) -> R<()> {
    let text = std::fs::read_to_string(doc)?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return wrong!(
            "{} has no `{BEGIN}` ... `{END}` section to replace",
            doc.display()
        );
    };
    if e < b {
        return wrong!("{}: results markers out of order", doc.display());
    }
    let new = format!("{}{BEGIN}\n\n{md}\n{}", &text[..b], &text[e..]);
    std::fs::write(doc, new)?;
    Ok(())
}

/// A middleware table: each setup's median, spread, cost per request, and the first
/// row (`ours`) over it.
fn rows_table(ours_name: &str, rows: &[LayerRow]) -> String {
    let mut s = format!(
        "| Setup | requests/s | ±spread | µs/request | {ours_name} ÷ setup (medians) | \
         {ours_name} ÷ setup, per round: median (quartiles) |\n|---|--:|--:|--:|--:|--:|\n"
    );
    let ours = rows.first().map(|r| r.median).unwrap_or(0.0);
    for r in rows {
        let (m, q1, q3) = r.paired;
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}% | {:.2} | {:.2}x | {:.2}x ({:.2}-{:.2}) |",
            r.name,
            fmt_rate(r.median),
            r.spread_pct,
            1e6 / r.median,
            if r.median > 0.0 { ours / r.median } else { 0.0 },
            m,
            q1,
            q3
        );
    }
    s
}
