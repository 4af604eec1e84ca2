//! The measuring loop: a [`Target`] (one store, raw client or peer), four phases per
//! round (create, load, update, delete), `concurrency` tokio tasks per phase, a bounded
//! operation count and a time budget per phase.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{Record, SessionData, SessionKey};

/// Errors of a benchmark operation (a failed or wrong answer aborts the run).
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// Result of a benchmark operation.
pub type R<T> = Result<T, BenchError>;

/// Seconds a benchmark session lives (long enough never to expire during a run).
pub const TTL_SECS: i64 = 600;

/// The benchmark session: 10 fields, ~1 KiB encoded.
pub fn session_data() -> SessionData {
    (0..10)
        .map(|i| {
            (
                format!("field_{i}"),
                serde_json::Value::String(format!("{i:02}-{}", "x".repeat(92))),
            )
        })
        .collect()
}

/// [`session_data`] as a record living [`TTL_SECS`].
pub fn record() -> Record {
    Record::with_ttl(session_data(), TTL_SECS)
}

/// A key as each side names its sessions.
#[derive(Clone, Debug)]
pub enum Key {
    /// Ours (and the raw floors that mint our keys).
    Session(SessionKey),
    /// tower-sessions' `Id` (an `i128`).
    Id(i128),
}

impl Key {
    /// The key text for stores that use text keys.
    pub fn text(&self) -> String {
        match self {
            Key::Session(k) => k.as_str().to_owned(),
            Key::Id(i) => i.to_string(),
        }
    }
}

/// An error naming the side and the operation that answered wrongly.
#[derive(Debug)]
pub struct Wrong(pub String);

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Wrong {}

/// `Err(Wrong(..))` with a formatted message.
#[macro_export]
macro_rules! wrong {
    ($($t:tt)*) => {
        Err(Box::new($crate::harness::Wrong(format!($($t)*))) as $crate::harness::BenchError)
    };
}

/// One thing measured: our store, a raw client, or a peer's store.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// Stores a new session (the benchmark record) and returns its key.
    async fn create(&self) -> R<Key>;
    /// Loads `key`, which must be there, and decodes it as the side would. With `exact`
    /// the decoded content must equal what was written, field by field (the harness asks
    /// for it on every worker's first load of a phase); without it a cheaper check (the
    /// field count, or the bytes for sides that do not decode) may stand in.
    async fn load(&self, key: &Key, exact: bool) -> R<()>;
    /// Replaces the session under `key`, whose stored version is `version`; returns the
    /// new version (sides without versions return `version + 1`).
    async fn update(&self, key: &Key, version: u64) -> R<u64>;
    /// Deletes `key`, which must be there.
    async fn delete(&self, key: &Key) -> R<()>;
    /// Whether `key` holds a session now. The harness asks before and after every
    /// worker's first delete of a phase (outside the timed region), so a delete that
    /// removes nothing fails the run even on sides whose delete does not say.
    async fn holds(&self, key: &Key) -> R<bool>;
    /// Removes whatever the side left behind (tables, key prefixes).
    async fn cleanup(&self) -> R<()> {
        Ok(())
    }
}

/// The four operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A new session.
    Create,
    /// Reading an existing session.
    Load,
    /// Replacing an existing session (compare-and-set where the side has versions).
    Update,
    /// Removing a session.
    Delete,
}

impl Op {
    /// All four, in phase order.
    pub const ALL: [Op; 4] = [Op::Create, Op::Load, Op::Update, Op::Delete];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Load => "load",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// What one phase measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Operations completed.
    pub ops: usize,
    /// Wall time of the phase.
    pub secs: f64,
    /// Every operation's latency, in nanoseconds.
    pub latencies: Vec<u64>,
}

impl Sample {
    /// Operations per second of wall time.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Limits of one phase.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most operations (split between the workers).
    pub ops: usize,
    /// Most time; workers stop starting operations after it.
    pub time: Duration,
}

/// The keys a side created in this round's create phase, and their stored versions.
///
/// Load and update work either on the first `concurrency` ("hot") keys, one per worker,
/// over and over (the default: what a few busy visitors do), or on every created key once, in random order (what a site with
/// many visitors sees: most loads miss every cache the hot keys stay in); see
/// [`Workload::round`].
#[derive(Default)]
pub struct RoundState {
    created: Vec<Key>,
    /// `versions[i]` is the stored version of `created[i]`.
    versions: Vec<u64>,
    /// The random order's seed, in the random-key workload.
    random: Option<u64>,
}

/// Which sessions the load and update phases work on (`--workload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One hot session per worker, over and over.
    Hot,
    /// Every session created in the round once, in random order.
    Random,
}

impl Workload {
    /// The name `--workload` takes and the report shows.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Hot => "hot",
            Workload::Random => "random",
        }
    }

    /// A fresh round's state for this workload (`seed` orders the random one).
    pub fn round(self, seed: u64) -> RoundState {
        match self {
            Workload::Hot => RoundState::default(),
            Workload::Random => RoundState {
                random: Some(seed),
                ..RoundState::default()
            },
        }
    }
}

/// Runs `op` on `target` with `concurrency` tasks within `budget`.
pub async fn phase(
    target: &Arc<dyn Target>,
    state: &mut RoundState,
    op: Op,
    concurrency: usize,
    budget: Budget,
) -> R<Sample> {
    let per_worker = (budget.ops / concurrency).max(1);
    if op != Op::Create && state.created.len() < concurrency {
        // A create phase cut short by its time budget: top up, untimed.
        while state.created.len() < concurrency {
            state.created.push(target.create().await?);
        }
    }
    let reads = op == Op::Load || op == Op::Update;
    if reads {
        state.versions.resize(state.created.len(), 1);
    }
    let mut tasks = Vec::with_capacity(concurrency);
    // Delete works through every created key (dealt out untimed, moved, not cloned).
    let mut delete_slices: Vec<Vec<Key>> = Vec::new();
    if op == Op::Delete {
        delete_slices = (0..concurrency).map(|_| Vec::new()).collect();
        for (i, k) in std::mem::take(&mut state.created).into_iter().enumerate() {
            delete_slices[i % concurrency].push(k);
        }
        state.versions.clear();
    }
    // Load and update: hot key `w` for worker `w`, or every key once in random order,
    // dealt out round robin (index into `created`, key, version), untimed.
    let mut work: Vec<Vec<(usize, Key, u64)>> = (0..concurrency).map(|_| Vec::new()).collect();
    if reads {
        match state.random {
            None => {
                for (w, slice) in work.iter_mut().enumerate() {
                    slice.push((w, state.created[w].clone(), state.versions[w]));
                }
            }
            Some(seed) => {
                let mut order: Vec<usize> = (0..state.created.len()).collect();
                let mut rng = XorShift::new(seed);
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i as u64 + 1) as usize);
                }
                for (j, i) in order.into_iter().enumerate() {
                    work[j % concurrency].push((i, state.created[i].clone(), state.versions[i]));
                }
            }
        }
    }
    let random = state.random.is_some();
    let started = Instant::now();
    let deadline = started + budget.time;
    for (w, mut mywork) in work.into_iter().enumerate() {
        let t = target.clone();
        let mine = delete_slices.get_mut(w).map(std::mem::take);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker.min(1 << 16));
            let mut made = Vec::new();
            let limit = match (&mine, reads && random) {
                (Some(keys), _) => keys.len(),
                (None, true) => mywork.len(),
                (None, false) => per_worker,
            };
            let mut i = 0usize;
            while i < limit && Instant::now() < deadline {
                // The first operation of each worker is checked in full.
                let first = i == 0;
                let doomed = match (op, &mine) {
                    (Op::Delete, Some(keys)) => Some(&keys[i]),
                    _ => None,
                };
                if let Some(k) = doomed.filter(|_| first)
                    && !t.holds(k).await?
                {
                    return wrong!("delete phase: a created session is missing before its delete");
                }
                let n = mywork.len().max(1);
                let item = mywork.get_mut(i % n);
                let t0 = Instant::now();
                match (op, item) {
                    (Op::Create, _) => made.push(t.create().await?),
                    (Op::Load, Some((_, key, _))) => t.load(key, first).await?,
                    (Op::Update, Some((_, key, version))) => {
                        *version = t.update(key, *version).await?;
                    }
                    (Op::Delete, _) => t.delete(doomed.expect("delete keys")).await?,
                    (_, None) => return wrong!("{} phase: a worker without a key", op.name()),
                }
                lat.push(t0.elapsed().as_nanos() as u64);
                if let Some(k) = doomed.filter(|_| first)
                    && t.holds(k).await?
                {
                    return wrong!("delete phase: the session is still there after its delete");
                }
                i += 1;
            }
            // The keys go back out to be dropped (or deleted, if not reached) untimed.
            Ok::<_, BenchError>((lat, made, mine, i, mywork))
        }));
    }
    let mut results = Vec::with_capacity(concurrency);
    for task in tasks {
        results.push(task.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let mut sample = Sample::default();
    let mut leftovers = Vec::new();
    for (lat, made, mine, reached, worked) in results {
        sample.ops += lat.len();
        sample.latencies.extend(lat);
        state.created.extend(made);
        if let Some(mut keys) = mine {
            leftovers.extend(keys.drain(reached..));
        }
        for (i, _, version) in worked {
            state.versions[i] = version;
        }
    }
    sample.secs = secs;
    // Keys a time-limited delete phase did not reach: removed untimed.
    for k in leftovers {
        target.delete(&k).await?;
    }
    Ok(sample)
}

/// The `q` quantile (0..=1) of `v` (sorted in place), in microseconds.
pub fn quantile_us(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i] as f64 / 1000.0
}

/// The `q`-quantile (0 to 1) of `v`, by linear interpolation between ranks.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

/// A xorshift64 generator: picks benchmark keys at random, cheaply and repeatably (not
/// for anything secret). `seed` is mixed so that small seeds (task numbers) diverge.
pub struct XorShift(u64);

impl XorShift {
    /// A generator for task or worker `seed`.
    pub fn new(seed: u64) -> Self {
        XorShift(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    /// The next value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % n
    }
}

/// Operations one side runs back to back, timed as one, before the other side's turn:
/// enough that the two clock reads around a batch weigh nothing next to its work, few
/// enough that the sides take turns many thousand times a phase.
pub const BATCH: usize = 8;

/// One side's sessions in a round: the keys its create phase made, and each one's
/// stored version.
#[derive(Default)]
pub struct PairState {
    keys: Vec<Key>,
    versions: Vec<u64>,
}

/// What one task hands back: per side, (seconds, operations, keys made, keys worked on
/// with their versions, delete keys not reached).
type TaskOut = [(f64, usize, Vec<Key>, Vec<(usize, Key, u64)>, Vec<Key>); 2];

/// Runs `op` with `concurrency` tasks on both sides interleaved: every task alternates a
/// batch of [`BATCH`] operations on one side with a batch on the other, which side goes
/// first drawn at random each time (a cost that comes back every so many operations
/// would otherwise land on the same side every time), and times each batch, within
/// `budget` (its operation count is split between the sides). Per side: the seconds its
/// batches took and the operations they made. Load and update work on hot keys (one per
/// task and side).
pub async fn paired_phase(
    sides: &[Arc<dyn Target>; 2],
    state: &mut [PairState; 2],
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
            Ok::<_, BenchError>(out)
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
