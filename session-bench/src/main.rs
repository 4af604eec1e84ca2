//! `session-bench`: every session engine against its raw-client floor and against the
//! store a user would pick instead (tower-sessions and its sqlx and Redis stores), at
//! concurrency 1 and 32, in one run; the axum middleware against tower-sessions'
//! layer and against no layer; and the actix-web middleware against actix-session's
//! (both over Redis) and against no middleware.
//!
//! ```text
//! scripts/bench                      # servers + both runs + BENCHMARKS.md + charts
//! scripts/bench --only redis,memory  # some groups
//! scripts/bench --only memory-bound  # the memory engine at its bound (bound.rs)
//! scripts/bench --only metrics-cost  # the metrics layer against the bare store (metrics_cost.rs)
//! scripts/bench --only growth        # memory, file, Redis, SQLite, PostgreSQL at 1k, 100k, 1M sessions (growth.rs)
//! scripts/bench --only sweep         # clear_expired of 100k expired among 10k live under load (sweep.rs)
//! scripts/bench --only wide          # reading one key of a 10-key and a 1,000-key session (wide.rs)
//! scripts/bench --workload random    # the engine groups with every session loaded and updated once, in random order
//! ```
//!
//! For each group (engine), each of `--runs` runs does `--rounds` rounds; a round runs
//! the four phases (create, load, update, delete) at concurrency 1 and then 32, and in
//! each phase every side (ours, floor, peer) in turn, the order rotating from round to
//! round so that a drift in machine load hits every side alike. A phase is bounded by an
//! operation count and a time budget (`--secs`). Ratios are taken within a round (ours
//! over the side measured next to it) and their median is reported, with the range of
//! the per-run medians.

mod actix;
mod bound;
mod chart;
mod groups;
mod growth;
mod harness;
mod instructions;
mod layer;
mod metrics_cost;
mod ours;
mod peers;
mod raw;
mod report;
mod sweep;
mod wide;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use harness::{Op, R, RoundState, phase, quantile_us};
use report::{Cell, Report};

/// Command-line options.
struct Args {
    runs: usize,
    rounds: usize,
    scale: f64,
    secs: f64,
    only: Vec<String>,
    out: PathBuf,
    doc: Option<PathBuf>,
    layer: bool,
    layer_requests: usize,
    /// `--count THING`: run one measured thing and exit (the `instructions` group's
    /// child processes).
    count: Option<String>,
    count_n: usize,
    /// `--growth-engines`: the engines of the `growth` group.
    growth_engines: Vec<String>,
    /// `--growth-sizes`: its sizes.
    growth_sizes: Vec<u64>,
    /// `--workload`: which sessions the engine groups' load and update phases use.
    workload: harness::Workload,
    /// `--interleaved`: engine groups run ours interleaved with each other side.
    interleaved: bool,
}

const USAGE: &str = "\
usage: session-bench [--runs N] [--rounds N] [--scale F] [--secs S] [--only g1,g2]
                     [--out DIR] [--doc FILE] [--no-layer] [--layer-requests N]
                     [--eager-loads] [--interleaved]

  --runs N        complete runs, reported side by side as a spread (default 2)
  --rounds N      rounds per run and group (default 3)
  --scale F       multiplies every phase's operation count (default 1.0)
  --secs S        time budget of one phase, seconds (default 0.5)
  --only LIST     groups to run: memory, file, sqlite, postgres, mariadb, redis,
                  redis-cluster, memcached, cached_db:memory+sqlite,
                  cached_db:redis+postgres, cached_db:memcached+mariadb, layer,
                  memory-bound (insert cost below vs at a bound of 500,000 sessions),
                  metrics-cost (memory and file with and without the metrics layer),
                  growth (memory, file, Redis, SQLite and PostgreSQL, ours and the
                  reference, at 1k, 100k and 1M stored sessions, random keys),
                  sweep (SQLite's and PostgreSQL's clear_expired of 100,000 expired
                  sessions among 10,000 live ones while 8 tasks load and update),
                  wide (requests reading one key of 10-key and 1,000-key sessions)
  --out DIR       where results.md, results.json and the SVG charts go
                  (default docs/bench)
  --doc FILE      also replace the results section of FILE (BENCHMARKS.md)
  --no-layer      skip the middleware comparisons (axum and actix-web; group `layer`)
  --interleaved   engine groups: ours runs interleaved with each other side within one
                  phase (batches of 8, the side drawn at random; hot keys; no latency
                  percentiles), instead of each side in a phase of its own. A side's
                  rate is its operations over its batches' summed time: at c=32 that
                  is a task's latency, not the store's throughput, and two sides that
                  queue on one resource (SQLite's write lock, tower's async mutex) wait
                  on each other. Read it for c=1, and for loads
  --eager-loads   our load phases decode the whole record (`SessionStore::load`) instead
                  of loading as the session handle does (the default, `--lazy-loads`:
                  `load_lazy`, the data left encoded, then one field read)
  --layer-requests N  requests per round per setup in the middleware comparisons (default 20000)
  --count-n N     operations per counted process in the `instructions` group (default 2000)
  --growth-engines LIST  engines of the growth group (default memory,file,redis,sqlite,postgres)
  --growth-sizes LIST    its sizes (default 1000,100000,1000000; file stops at 100000)
  --growth-self-check    SQLite and PostgreSQL only: the reference against itself, each
                         on a store of its own (what the method reads with no difference)
  --workload W    the engine groups' load and update phases: hot (default; one session
                  per task, over and over) or random (every session the round created,
                  each once, in random order)

The group `instructions` (only when named in --only) counts instructions per request and
per store call under valgrind's callgrind (see src/instructions.rs); its processes run
this binary as `session-bench --count THING --count-n N`.
";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runs: 2,
        rounds: 3,
        scale: 1.0,
        secs: 0.5,
        only: Vec::new(),
        out: PathBuf::from("docs/bench"),
        doc: None,
        layer: true,
        layer_requests: 20_000,
        count: None,
        count_n: 2_000,
        growth_engines: growth::ENGINES.map(str::to_owned).to_vec(),
        growth_sizes: vec![1_000, 100_000, 1_000_000],
        workload: harness::Workload::Hot,
        interleaved: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = num(&value("--runs")?)?,
            "--rounds" => a.rounds = num(&value("--rounds")?)?,
            "--scale" => a.scale = num(&value("--scale")?)?,
            "--secs" => a.secs = num(&value("--secs")?)?,
            "--only" => a.only = value("--only")?.split(',').map(str::to_owned).collect(),
            "--out" => a.out = value("--out")?.into(),
            "--doc" => a.doc = Some(value("--doc")?.into()),
            "--no-layer" => a.layer = false,
            "--interleaved" => a.interleaved = true,
            "--lazy-loads" => ours::LAZY_LOADS.store(true, std::sync::atomic::Ordering::Relaxed),
            "--eager-loads" => ours::LAZY_LOADS.store(false, std::sync::atomic::Ordering::Relaxed),
            "--layer-requests" => a.layer_requests = num(&value("--layer-requests")?)?,
            "--count" => a.count = Some(value("--count")?),
            "--count-n" => a.count_n = num(&value("--count-n")?)?,
            "--growth-engines" => {
                a.growth_engines = value("--growth-engines")?
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "--workload" => {
                a.workload = match value("--workload")?.as_str() {
                    "hot" => harness::Workload::Hot,
                    "random" => harness::Workload::Random,
                    w => return Err(format!("--workload {w}: hot or random")),
                }
            }
            "--growth-self-check" => {
                growth::SELF_CHECK.store(true, std::sync::atomic::Ordering::Relaxed)
            }
            "--growth-sizes" => {
                a.growth_sizes = value("--growth-sizes")?
                    .split(',')
                    .map(num)
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.runs == 0 || a.rounds == 0 || a.count_n == 0 || a.scale <= 0.0 || a.secs <= 0.0 {
        return Err("--runs, --rounds, --scale and --secs must be positive".into());
    }
    for g in &a.only {
        if g != "layer"
            && g != "instructions"
            && g != "memory-bound"
            && g != "metrics-cost"
            && g != "sweep"
            && g != "growth"
            && g != "wide"
            && !groups::NAMES.contains(&g.as_str())
        {
            return Err(format!("unknown group {g}"));
        }
    }
    for e in &a.growth_engines {
        if !growth::ENGINES.contains(&e.as_str()) {
            return Err(format!("unknown growth engine {e}"));
        }
        if growth::SELF_CHECK.load(std::sync::atomic::Ordering::Relaxed)
            && !growth::SELF_CHECK_ENGINES.contains(&e.as_str())
        {
            return Err(format!(
                "--growth-self-check: {e} has no reference to run twice (sqlite and postgres do)"
            ));
        }
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if e.is_empty() {
                print!("{USAGE}");
                std::process::exit(0);
            }
            eprintln!("session-bench: {e}\n");
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(thing) = &args.count {
        let counted = match thing.strip_prefix("rss:") {
            Some(side) => rt.block_on(growth::rss_count(side, args.count_n)),
            None => rt.block_on(instructions::count(thing, args.count_n)),
        };
        if let Err(e) = counted {
            eprintln!("session-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("session-bench: {e}");
        std::process::exit(1);
    }
}

/// Rates (per round) and latencies of one side, op and concurrency in one run.
#[derive(Default)]
struct Acc {
    rates: Vec<Vec<f64>>,
    latencies: Vec<u64>,
}

async fn run(args: Args) -> R<()> {
    let started = Instant::now();
    let wants = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let run_id = integration_tests::servers::unique_suffix();
    let mut report = Report::new(args.runs, args.rounds, args.secs, args.scale);
    report.workload = args.workload;
    println!(
        "session: 10 fields, {} bytes encoded (bincode); {} runs x {} rounds; phases bounded by count and {} s; {} keys",
        groups::encoded_len()?,
        args.runs,
        args.rounds,
        args.secs,
        args.workload.name()
    );
    for name in groups::NAMES {
        if !wants(name) {
            continue;
        }
        let group = groups::build(name, args.scale, args.secs, &run_id)
            .await
            .map_err(|e| format!("{name}: setting up: {e}"))?;
        // (side index, op, concurrency) -> accumulated figures
        let mut acc: AccMap = BTreeMap::new();
        let mut ratios: RatioMap = BTreeMap::new();
        for run in 0..args.runs {
            for (ci, &conc) in [1usize, 32].iter().enumerate() {
                let budget = group.budgets[ci];
                for round in 0..args.rounds {
                    // Every side of a round draws the same random order.
                    let seed = ((run * 2 + ci) * args.rounds + round) as u64;
                    let mut states: Vec<RoundState> = group
                        .sides
                        .iter()
                        .map(|_| args.workload.round(seed))
                        .collect();
                    if args.interleaved {
                        interleaved_round(
                            &group,
                            conc,
                            budget,
                            (run, round, ci),
                            &mut acc,
                            &mut ratios,
                        )
                        .await
                        .map_err(|e| format!("{name}: c={conc}: {e}"))?;
                        continue;
                    }
                    for (oi, op) in Op::ALL.into_iter().enumerate() {
                        let n = group.sides.len();
                        let mut rates = vec![0.0; n];
                        for k in 0..n {
                            let i = (k + round + oi + run) % n;
                            let side = &group.sides[i];
                            let mut s = phase(&side.target, &mut states[i], op, conc, budget)
                                .await
                                .map_err(|e| {
                                    format!("{name}: {} {} c={conc}: {e}", side.name, op.name())
                                })?;
                            rates[i] = s.rate();
                            let a = acc.entry((i, op, conc)).or_default();
                            if a.rates.len() <= run {
                                a.rates.resize(run + 1, Vec::new());
                            }
                            a.rates[run].push(s.rate());
                            a.latencies.append(&mut s.latencies);
                        }
                        for i in 1..n {
                            let r = ratios.entry((i, op, conc)).or_default();
                            if r.len() <= run {
                                r.resize(run + 1, Vec::new());
                            }
                            if rates[i] > 0.0 {
                                r[run].push(rates[0] / rates[i]);
                            }
                        }
                    }
                }
            }
        }
        for side in &group.sides {
            side.target
                .cleanup()
                .await
                .map_err(|e| format!("{name}: cleaning up {}: {e}", side.name))?;
        }
        for ((i, op, conc), mut a) in acc {
            let side = &group.sides[i];
            let cell = Cell {
                engine: group.engine.clone(),
                side: side.name.clone(),
                role: side.role,
                op,
                concurrency: conc,
                rates_by_run: std::mem::take(&mut a.rates),
                p50_us: quantile_us(&mut a.latencies, 0.50),
                p99_us: quantile_us(&mut a.latencies, 0.99),
                ratio_by_run: ratios.remove(&(i, op, conc)).unwrap_or_default(),
            };
            report.push(cell);
        }
        report.print_group(&group.engine);
    }
    if wants("memory-bound") {
        let bound = bound::run(args.runs).await?;
        println!("\n{}", bound.table());
        report.memory_bound = Some(bound);
    }
    let mut metrics_cost_md = None;
    if wants("metrics-cost") {
        let (scale, secs) = (args.scale, args.secs);
        let rows = metrics_cost::run(args.rounds * args.runs, |engine, conc| {
            let ops = match (engine, conc) {
                ("memory", 1) => 50_000,
                ("memory", _) => 100_000,
                (_, 1) => 5_000,
                _ => 10_000,
            };
            harness::Budget {
                ops: ((ops as f64 * scale) as usize).max(64),
                time: std::time::Duration::from_secs_f64(secs),
            }
        })
        .await?;
        let md = metrics_cost::table(&rows);
        println!(
            "\nmetrics layer cost (median of {} rounds)\n{md}",
            args.rounds * args.runs
        );
        metrics_cost_md = Some(md);
    }
    let mut growth_md = None;
    if wants("growth") {
        let ops = ((20_000.0 * args.scale) as usize).max(100);
        let engines: Vec<&str> = args.growth_engines.iter().map(String::as_str).collect();
        let rows = growth::run(&engines, &args.growth_sizes, ops, &run_id).await?;
        let md = growth::table(&rows);
        println!("\ngrowth\n{md}");
        growth_md = Some(md);
    }
    let mut sweep_md = None;
    if wants("sweep") {
        let expired = ((100_000.0 * args.scale) as usize).max(100);
        let live = ((10_000.0 * args.scale) as usize).max(10);
        let rows = sweep::run(expired, live, &run_id).await?;
        let md = sweep::table(&rows);
        println!("\nclear_expired under load\n{md}");
        sweep_md = Some(md);
    }
    let mut wide_md = None;
    if wants("wide") {
        let requests = ((2_000.0 * args.scale) as usize).max(64);
        let md = wide::run(requests, args.rounds * args.runs).await?;
        println!("\nreading one key, by the session's keys\n{md}");
        wide_md = Some(md);
    }
    let mut instructions_md = None;
    if args.only.iter().any(|g| g == "instructions") {
        let n = args.count_n;
        let md =
            tokio::task::spawn_blocking(move || instructions::run(n).map_err(|e| e.to_string()))
                .await??;
        println!("\ninstructions\n{md}");
        instructions_md = Some(md);
    }
    if args.layer && wants("layer") {
        let rows = layer::run(args.layer_requests, args.rounds * args.runs, 64).await?;
        report.layer = rows;
        report.print_layer();
        let rows = actix::run(args.layer_requests, args.rounds * args.runs, 64, &run_id).await?;
        report.actix = rows;
        report.print_actix();
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)?;
    let md = report.markdown();
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if let Some(md) = &metrics_cost_md {
        std::fs::write(args.out.join("metrics-cost.md"), md)?;
    }
    if let Some(md) = &growth_md {
        std::fs::write(args.out.join("growth.md"), md)?;
    }
    if let Some(md) = &sweep_md {
        std::fs::write(args.out.join("sweep.md"), md)?;
    }
    if let Some(md) = &wide_md {
        std::fs::write(args.out.join("wide.md"), md)?;
    }
    if let Some(md) = &instructions_md {
        std::fs::write(args.out.join("instructions.md"), md)?;
    }
    for conc in [1usize, 32] {
        if let Some(svg) = chart::svg(&report, conc) {
            std::fs::write(args.out.join(format!("ops-c{conc}.svg")), svg)?;
        }
    }
    if let Some(doc) = &args.doc {
        report::splice(doc, &md)?;
        println!("updated {}", doc.display());
    }
    println!(
        "wrote {} (results.md, results.json, ops-c1.svg, ops-c32.svg) in {:.0} s",
        args.out.display(),
        report.elapsed_secs
    );
    Ok(())
}

/// Per (side index, operation, concurrency): each run's rates (ops/s) and every latency.
type AccMap = BTreeMap<(usize, Op, usize), Acc>;
/// Per (side index, operation, concurrency): each run's ratios of ours to that side.
type RatioMap = BTreeMap<(usize, Op, usize), Vec<Vec<f64>>>;

/// One round of `--interleaved`: for each operation, ours paired with every other side in
/// turn ([`harness::paired_phase`], each pair on keys of its own), ours' rate taken from
/// its first pairing. `at` is (run, round, concurrency index).
async fn interleaved_round(
    group: &groups::Group,
    conc: usize,
    budget: harness::Budget,
    at: (usize, usize, usize),
    acc: &mut AccMap,
    ratios: &mut RatioMap,
) -> R<()> {
    let (run, round, ci) = at;
    let n = group.sides.len();
    let mut states: Vec<[harness::PairState; 2]> = (1..n).map(|_| Default::default()).collect();
    for (oi, op) in Op::ALL.into_iter().enumerate() {
        for j in 0..n - 1 {
            // The pairs take turns in a rotating order.
            let k = 1 + (j + round + oi) % (n - 1);
            let pair = [group.sides[0].target.clone(), group.sides[k].target.clone()];
            let seed = ((((run * 2 + ci) * 1000 + round) * 4 + oi) * 8 + k) as u64;
            let [(os, on), (ts, tn)] =
                harness::paired_phase(&pair, &mut states[k - 1], op, conc, budget, seed)
                    .await
                    .map_err(|e| format!("{} with {}: {e}", op.name(), group.sides[k].name))?;
            if os <= 0.0 || ts <= 0.0 || on == 0 || tn == 0 {
                return wrong!(
                    "{} with {}: a side made no operation",
                    op.name(),
                    group.sides[k].name
                );
            }
            let (ours, theirs) = (on as f64 / os, tn as f64 / ts);
            let mut push = |i: usize, rate: f64| {
                let a = acc.entry((i, op, conc)).or_default();
                if a.rates.len() <= run {
                    a.rates.resize(run + 1, Vec::new());
                }
                a.rates[run].push(rate);
            };
            if k == 1 {
                push(0, ours);
            }
            push(k, theirs);
            let r = ratios.entry((k, op, conc)).or_default();
            if r.len() <= run {
                r.resize(run + 1, Vec::new());
            }
            r[run].push(ours / theirs);
        }
    }
    Ok(())
}
