//! Metrics and traces of every store call, and of every request, over the
//! [`metrics`] facade (feature `metrics`, on by default).
//!
//! [`MetricsLayer`] is a store layer ([`crate::layer`]): any store wearing it, built-in
//! or third-party, counts each operation by outcome, times it, and runs it inside a
//! `tracing` span named `session_store` with the fields `engine`, `operation` and
//! `session` (the key's [`SessionKey::fingerprint`], never the key). From
//! configuration it is the layer `metrics`:
//!
//! ```toml
//! engine = "file"
//! layers = ["metrics"]
//! ```
//!
//! [`MetricsHook`] is the middleware's side ([`crate::hooks::RequestHook`]): it counts
//! requests and what the session did in them.
//!
//! The facade records nothing until the application installs a recorder (for example
//! `metrics-exporter-prometheus`'s); the library forces no exporter. Install it before
//! building the store: the layer registers its handles with the recorder of that moment
//! (a store built earlier records nothing), and its series are exported from the start,
//! at 0, for each operation and the outcomes the contract allows it.
//!
//! ## Names
//!
//! Prometheus conventions: `snake_case`, a unit suffix, `_total` for counters, base
//! units (seconds).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `session_store_operations_total` | counter | `engine`, `operation`, `outcome` | store calls by outcome (an in-process store's published every [`PUBLISH_INTERVAL`]: see [Cost](#cost)) |
//! | `session_store_errors_total` | counter | `engine`, `operation`, `kind` | failed store calls (outcome `error`) by error kind |
//! | `session_store_operation_duration_seconds` | histogram | `engine`, `operation` | time of each store call, failed ones included (on an in-process store: one call in 16, to within an eighth, published every [`PUBLISH_INTERVAL`]: see [Cost](#cost)) |
//! | `session_store_expired_removed_total` | counter | `engine` | expired records removed by `clear_expired` (the call, and the background cleanup) |
//! | `session_requests_total` | counter | | requests that went through the session middleware |
//! | `session_request_actions_total` | counter | `action` | what the session did in a request (a request may count under several actions) |
//!
//! `operation` is one of `insert_new`, `create`, `load`, `update`, `delete`, `touch`,
//! `exists`, `clear_expired`, `count`, `list`. `outcome`, by operation:
//!
//! | operation | outcomes |
//! |---|---|
//! | `load`, `exists` | `hit`, `miss` |
//! | `insert_new` | `created`, `key_taken` |
//! | `create` | `created` |
//! | `update` | `ok`, `conflict` (a compare-and-set that lost; the session handle reloads and retries), `not_found` |
//! | `touch` | `ok`, `not_found` |
//! | `delete` | `deleted`, `absent` |
//! | `clear_expired`, `count`, `list` | `ok` |
//! | any | `error` |
//!
//! `kind` (of `session_store_errors_total`): `timeout`, `backend`, `codec`, `limit`,
//! `invalid_key`, `value`, `key_collision`, `conflict_exhausted`, `unsupported`,
//! `config`.
//!
//! `action` (of `session_request_actions_total`): `loaded` (a stored session was read),
//! `saved`, `created` (saved under a new key), `cycled` (`cycle_key`), `flushed`
//! (`flush`), `touched` (deadline extended), `refused_deleted` (a save refused because
//! the session was deleted meanwhile: the logout race), `save_failed` (any other failed
//! save).
//!
//! ## Cost
//!
//! Per call: one count on handles registered up front, and a span when a `tracing`
//! subscriber wants DEBUG spans (none is built otherwise: a disabled span still costs a
//! `log` check where `tracing`'s `log` feature is on); the key's fingerprint (a SHA-256)
//! is computed only when a subscriber listens to the span. Timed calls add two clock
//! reads and one histogram update.
//!
//! Every call of a store that keeps its records outside the process (cross-process or
//! durable: file, db, Redis, Memcached, `cached_db`) is timed, and counted on the
//! recorder's counter at once.
//!
//! An in-process store (the `memory` engine) answers in well under a microsecond, where
//! the layer's usual work would be a noticeable share of the call. Three things differ
//! there:
//!
//! - **Sampled durations.** One call in [`IN_PROCESS_SAMPLE_EVERY`] of each operation is
//!   timed, drawn at random on the calling thread, so its histogram's `_count` and `_sum`
//!   are those of the sample. A timed call is counted in a duration bucket (four per
//!   doubling, from 32 ns to 137 s), and each bucket reaches the histogram as its
//!   midpoint, which is within an eighth of every duration counted in it.
//! - **Published at an interval.** Every call is counted, and every timed call
//!   bucketed, on a stripe of counters of the calling thread's own. The stripes are added
//!   to the recorder's counters and histograms every [`PUBLISH_INTERVAL`] by a background
//!   thread (`session-metrics`), when the store is dropped, and whenever the application
//!   calls [`publish`]. A scrape can therefore lag the last second of calls; call
//!   [`publish`] before rendering for figures exact to the last call (the demo's
//!   `/metrics` does). Worker threads that all write to one counter or histogram move its
//!   cache lines between cores on nearly every call, which at 32 concurrent deletes on 2
//!   cores added a quarter to a delete.
//! - **Hosted instruments.** Over a store that answers without waiting (see
//!   [`SessionStore::immediate`]) the layer's immediate calls count, time and trace as
//!   the `async` ones, so the session handle ([`crate::store::StoreCalls`]) reaches the
//!   engine without a boxed future. An engine that hosts the instruments
//!   ([`HostedMetrics`], the `memory` engine) measures those calls itself, and the layer
//!   does not stand between the caller and it at all.
//!
//! `scripts/bench --only metrics-cost` measures the layer against the bare store in the
//! same run (see `BENCHMARKS.md`).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use ::metrics::{Counter, Histogram, SharedString, counter, histogram};
use async_trait::async_trait;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::hooks::{RequestHook, RequestOutcome};
use crate::key::SessionKey;
use crate::layer::StoreLayer;
use crate::lazy::LazyRecord;
use crate::maintenance::Maintenance;
use crate::record::Record;
use crate::store::{Capabilities, ImmediateStore, Inserted, RawAccess, SessionStore};
use crate::time::Timestamp;

/// Counter: store calls by `engine`, `operation` and `outcome`.
pub const STORE_OPERATIONS: &str = "session_store_operations_total";
/// Counter: failed store calls by `engine`, `operation` and error `kind`.
pub const STORE_ERRORS: &str = "session_store_errors_total";
/// Histogram: seconds per store call, by `engine` and `operation`.
pub const STORE_DURATION: &str = "session_store_operation_duration_seconds";
/// Counter: expired records removed, by `engine`.
pub const EXPIRED_REMOVED: &str = "session_store_expired_removed_total";
/// Counter: requests through the session middleware.
pub const REQUESTS: &str = "session_requests_total";
/// Counter: what sessions did in requests, by `action`.
pub const REQUEST_ACTIONS: &str = "session_request_actions_total";

pub use crate::hooks::error_kind;

/// How many calls of each operation an in-process store's duration histogram samples one
/// of, drawn at random (see the module docs, "Cost"). A power of two.
pub const IN_PROCESS_SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// The sampler's state on this thread: a xorshift32 generator, seeded from the
    /// thread's own address so threads don't draw in step.
    static SAMPLER: Cell<u32> = const { Cell::new(0) };
}

/// Whether to time this call: true for one call in `every` (a power of two), at random.
///
/// A draw is a few instructions on the calling thread's own state, where a shared call
/// counter would be an atomic update on a cache line that every worker thread writes
/// (at 32 concurrent calls on 2 cores it cost more than the rest of the layer). Drawn at
/// random rather than counted, so that calls which alternate (two stores, or loads and
/// updates, in a fixed rhythm) are all sampled alike.
#[inline(always)]
fn sample(every: u32) -> bool {
    SAMPLER.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // First draw on this thread (xorshift's state must not be 0).
            x = (state as *const Cell<u32> as usize as u32) | 1;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        x & (every - 1) == 0
    })
}

/// Counts `removed` expired records of `engine` ([`EXPIRED_REMOVED`]).
pub fn record_expired_removed(engine: &str, removed: u64) {
    if removed > 0 {
        counter!(EXPIRED_REMOVED, "engine" => engine.to_owned()).increment(removed);
    }
}

/// Metrics and a tracing span on every call of the store it wraps. Registered as the
/// `metrics` layer (no options). See the [module docs](self).
///
/// The counter and histogram handles of every operation and expected outcome are
/// registered with the recorder installed when the layer wraps the store (so a call
/// costs atomic updates, not a registry lookup): install the recorder before building
/// the store. Those series are exported from the start, at 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl StoreLayer for MetricsLayer {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        let caps = inner.capabilities();
        let in_process = !(caps.cross_process || caps.durable);
        let ins = Arc::new(Instruments::register(inner.engine(), in_process));
        let immediate = inner.immediate();
        // An engine that hosts the instruments counts its own immediate calls (see
        // [`HostedMetrics`]); this layer then only forwards them.
        let hosted = immediate
            .and_then(|now| now.hosted_metrics())
            .is_some_and(|h| h.host(ins.clone()));
        let immediate = immediate.is_some();
        Arc::new(MetricsStore {
            inner,
            ins,
            immediate,
            hosted,
        })
    }
}

/// The operations, as indices of [`Instruments::ops`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    InsertNew,
    Create,
    Load,
    Update,
    Delete,
    Touch,
    Exists,
    ClearExpired,
    Count,
    List,
}

impl Op {
    const COUNT: usize = 10;
    const ALL: [Op; Op::COUNT] = [
        Op::InsertNew,
        Op::Create,
        Op::Load,
        Op::Update,
        Op::Delete,
        Op::Touch,
        Op::Exists,
        Op::ClearExpired,
        Op::Count,
        Op::List,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::InsertNew => "insert_new",
            Op::Create => "create",
            Op::Load => "load",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Touch => "touch",
            Op::Exists => "exists",
            Op::ClearExpired => "clear_expired",
            Op::Count => "count",
            Op::List => "list",
        }
    }

    /// The outcomes the contract lets this operation have (`error` aside).
    fn outcomes(self) -> &'static [Outcome] {
        use Outcome::*;
        match self {
            Op::InsertNew => &[Created, KeyTaken],
            Op::Create => &[Created],
            Op::Load | Op::Exists => &[Hit, Miss],
            Op::Update => &[Ok, Conflict, NotFound],
            Op::Touch => &[Ok, NotFound],
            Op::Delete => &[Deleted, Absent],
            Op::ClearExpired | Op::Count | Op::List => &[Ok],
        }
    }
}

/// The `outcome` label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Hit,
    Miss,
    Created,
    KeyTaken,
    Ok,
    Conflict,
    NotFound,
    Deleted,
    Absent,
    Error,
}

impl Outcome {
    const COUNT: usize = 10;

    fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Created => "created",
            Outcome::KeyTaken => "key_taken",
            Outcome::Ok => "ok",
            Outcome::Conflict => "conflict",
            Outcome::NotFound => "not_found",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Error => "error",
        }
    }
}

/// The registered handles of one operation.
struct OpHandles {
    /// By [`Outcome`] index; `None` for outcomes the operation should not have.
    outcomes: [Option<Counter>; Outcome::COUNT],
    duration: Histogram,
}

impl OpHandles {
    fn register(engine: &SharedString, op: Op) -> Self {
        let mut outcomes: [Option<Counter>; Outcome::COUNT] = Default::default();
        for o in op.outcomes().iter().chain([&Outcome::Error]) {
            outcomes[*o as usize] = Some(counter!(
                STORE_OPERATIONS,
                "engine" => engine.clone(),
                "operation" => op.name(),
                "outcome" => o.name(),
            ));
        }
        OpHandles {
            outcomes,
            duration: histogram!(
                STORE_DURATION,
                "engine" => engine.clone(),
                "operation" => op.name(),
            ),
        }
    }
}

/// How often the counts that in-process stores keep per thread reach the recorder's
/// counters (see the module docs, "Cost"); [`publish`] does it at once.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Adds to the recorder's counters, now, the counts that in-process stores keep per
/// thread (see the module docs, "Cost"). A background thread does it every
/// [`PUBLISH_INTERVAL`], and a store does it when it is dropped; call this before
/// rendering the metrics for counts exact to the last call (the demo's `/metrics` does).
/// Cheap when nothing is pending; safe from any thread.
pub fn publish() {
    let live: Vec<Arc<Pending>> = {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|p| p.strong_count() > 0);
        registry.iter().filter_map(Weak::upgrade).collect()
    };
    for pending in live {
        pending.publish();
    }
}

/// The in-process stores' pending counts, for [`publish`].
static REGISTRY: Mutex<Vec<Weak<Pending>>> = Mutex::new(Vec::new());

/// Starts the thread that publishes every [`PUBLISH_INTERVAL`], once per process.
static PUBLISHER: Once = Once::new();

/// The next thread's stripe (see [`stripe_of_thread`]).
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe of every in-process store's counts; `usize::MAX` until the
    /// thread's first count.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe number (taken modulo each store's stripe count): threads take
/// consecutive numbers as they first count, so a runtime's worker threads count on
/// stripes of their own.
#[inline(always)]
fn stripe_of_thread() -> usize {
    STRIPE.with(|s| {
        let n = s.get();
        if n != usize::MAX {
            return n;
        }
        let n = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        s.set(n);
        n
    })
}

/// The number of series of one store: every operation by every outcome.
const SERIES: usize = Op::COUNT * Outcome::COUNT;

/// One stripe of a store's counts, by series, and of its sampled durations, by
/// operation and [duration bucket](bucket_of), on cache lines no other stripe shares.
#[repr(align(128))]
struct Stripe {
    counts: [AtomicU64; SERIES],
    durations: [[AtomicU64; BUCKETS]; Op::COUNT],
}

/// Duration buckets per doubling: a bucket spans a quarter of its lower bound or less.
const SUB_BUCKETS: u32 = 4;
/// The first bucket starts at 2^5 ns (32 ns; shorter durations are counted in it).
const MIN_OCTAVE: u32 = 5;
/// Doublings covered: up to 2^37 ns (137 s; longer durations are counted in the last).
const OCTAVES: usize = 32;
/// Duration buckets per operation.
const BUCKETS: usize = OCTAVES * SUB_BUCKETS as usize;

/// The bucket of a duration of `nanos` ns: by its power of two and its next two bits.
#[inline(always)]
fn bucket_of(nanos: u64) -> usize {
    let n = nanos.max(1 << MIN_OCTAVE);
    let octave = 63 - n.leading_zeros();
    let sub = (n >> (octave - 2)) & u64::from(SUB_BUCKETS - 1);
    ((octave - MIN_OCTAVE) as usize * SUB_BUCKETS as usize + sub as usize).min(BUCKETS - 1)
}

/// The duration, in seconds, a bucket's counts are published as: its midpoint, within
/// an eighth of any duration counted in it (of those within the buckets' range).
fn bucket_secs(bucket: usize) -> f64 {
    let octave = bucket as u32 / SUB_BUCKETS + MIN_OCTAVE;
    let sub = u64::from(bucket as u32 % SUB_BUCKETS);
    let width = 1u64 << (octave - 2);
    let lower = (u64::from(SUB_BUCKETS) + sub) * width;
    (lower as f64 + width as f64 / 2.0) / 1e9
}

/// The counts and sampled durations of an in-process store, kept per stripe of threads
/// until published; the durations as counts per bucket (see [`bucket_of`]), published
/// as each bucket's midpoint.
///
/// Why not record on the recorder's handles directly, as the layer does over every
/// other store: a call of the in-process engine costs well under a microsecond, and
/// every worker thread writing to one counter or histogram moves its cache lines
/// between cores (with `metrics-exporter-prometheus`, recording one delete in 16 on
/// the shared histogram added a quarter to a delete at 32 concurrent calls on 2
/// cores). The `metrics` facade has no way to add up per-thread values when the
/// exporter renders (the recorder owns a handle's storage), so the stripes are handed
/// to the handles in the background instead, the way OpenTelemetry's SDK and
/// Micrometer's step registries aggregate in process and export at an interval.
///
/// Durations are bucketed rather than held as values: holding them meant a lock and a
/// growing buffer per timed call, and measured slower than the shared histogram at
/// concurrency 1 (`BENCHMARKS.md`, "Counts and durations per thread").
struct Pending {
    stripes: Box<[Stripe]>,
    /// `stripes.len() - 1` (a power of two).
    mask: usize,
    /// The published series: a series' index and its counter.
    series: Vec<(usize, Counter)>,
    /// Each operation's duration histogram.
    durations: [Histogram; Op::COUNT],
    /// What each of `series`, then each operation's duration buckets, published so
    /// far.
    published: Mutex<(Vec<u64>, Vec<u64>)>,
}

impl Pending {
    /// The pending counts of a store whose handles are `ops` (by [`Op`] index).
    fn new(ops: &[OpHandles; Op::COUNT]) -> Arc<Self> {
        let series: Vec<(usize, Counter)> = ops
            .iter()
            .enumerate()
            .flat_map(|(op, h)| {
                h.outcomes
                    .iter()
                    .enumerate()
                    .filter_map(move |(o, c)| c.clone().map(|c| (op * Outcome::COUNT + o, c)))
            })
            .collect();
        let durations = ops.each_ref().map(|h| h.duration.clone());
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let count = (threads * 2).next_power_of_two().clamp(2, 64);
        let stripes = (0..count)
            .map(|_| Stripe {
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                durations: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            })
            .collect();
        let published = Mutex::new((vec![0; series.len()], vec![0; Op::COUNT * BUCKETS]));
        let pending = Arc::new(Pending {
            stripes,
            mask: count - 1,
            series,
            durations,
            published,
        });
        REGISTRY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&pending));
        PUBLISHER.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("session-metrics".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(PUBLISH_INTERVAL);
                        publish();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    error = %e,
                    "session metrics: no publishing thread; in-process stores' counts \
                     reach the recorder only through session_core::metrics::publish() \
                     and when a store is dropped"
                );
            }
        });
        pending
    }

    #[inline(always)]
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_of_thread() & self.mask]
    }

    #[inline(always)]
    fn count(&self, series: usize) {
        self.stripe().counts[series].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sampled duration of `op` in its bucket on this thread's stripe.
    #[inline(always)]
    fn sample(&self, op: Op, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.stripe().durations[op as usize][bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds to each counter what its series counted since the last publish, and to each
    /// histogram the durations its buckets counted.
    fn publish(&self) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (series_done, buckets_done) = &mut *published;
        for ((series, counter), done) in self.series.iter().zip(series_done.iter_mut()) {
            let new = self.since(done, |s| &s.counts[*series]);
            if new > 0 {
                counter.increment(new);
            }
        }
        for (op, histogram) in self.durations.iter().enumerate() {
            for bucket in 0..BUCKETS {
                let done = &mut buckets_done[op * BUCKETS + bucket];
                let new = self.since(done, |s| &s.durations[op][bucket]);
                if new > 0 {
                    let new = usize::try_from(new).unwrap_or(usize::MAX);
                    histogram.record_many(bucket_secs(bucket), new);
                }
            }
        }
    }

    /// What one slot of every stripe (`slot` picks it) added up to since `done`, which
    /// becomes the new total.
    fn since(&self, done: &mut u64, slot: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        let total: u64 = self
            .stripes
            .iter()
            .map(|s| slot(s).load(Ordering::Relaxed))
            .sum();
        let new = total.saturating_sub(*done);
        *done = total.max(*done);
        new
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.publish();
    }
}

/// What the layer measures a store with: the handles it registered, how often it
/// times a call, and (over an in-process store) its pending counts.
struct Instruments {
    engine: SharedString,
    ops: [OpHandles; Op::COUNT],
    /// In-process stores count here, published every [`PUBLISH_INTERVAL`], and time one
    /// call in [`IN_PROCESS_SAMPLE_EVERY`]; every other store records every call on the
    /// handles themselves.
    pending: Option<Arc<Pending>>,
}

impl Instruments {
    fn register(engine: &str, in_process: bool) -> Self {
        let engine = SharedString::from(Arc::<str>::from(engine));
        let ops = Op::ALL.map(|op| OpHandles::register(&engine, op));
        let pending = in_process.then(|| Pending::new(&ops));
        Instruments {
            engine,
            ops,
            pending,
        }
    }

    /// Whether a subscriber wants this layer's DEBUG spans. A span is built only then: a
    /// disabled span still costs a `log` check per call where `tracing`'s `log` feature
    /// is on, and dropping even `Span::none()` costs a few dozen instructions.
    #[inline(always)]
    fn traced() -> bool {
        tracing::enabled!(kind: tracing::metadata::Kind::SPAN, tracing::Level::DEBUG)
    }

    /// The span of a call, for a subscriber that wants it ([`Self::traced`]). Out of
    /// line: the untraced path, every call's when no subscriber listens, carries none of
    /// it.
    #[cold]
    #[inline(never)]
    fn span(&self, op: Op, key: Option<&SessionKey>) -> Option<tracing::Span> {
        let span = tracing::debug_span!(
            "session_store",
            engine = &*self.engine,
            operation = op.name(),
            session = tracing::field::Empty,
        );
        if !span.is_disabled()
            && let Some(k) = key
        {
            span.record("session", k.fingerprint());
        }
        Some(span).filter(|s| !s.is_disabled())
    }

    /// The start time of this call when it is timed (every call of a store that keeps
    /// its records outside the process, one in [`IN_PROCESS_SAMPLE_EVERY`] otherwise).
    #[inline]
    fn start(&self) -> Option<Instant> {
        (self.pending.is_none() || sample(IN_PROCESS_SAMPLE_EVERY)).then(Instant::now)
    }

    /// Counts the call by the outcome of `result` (`outcome` gives a success's) and
    /// records its time when it was timed. Inlined into each call: as a function of its
    /// own, its frame cost a tenth of the layer's instructions.
    #[inline(always)]
    fn finish<T>(
        &self,
        op: Op,
        start: Option<Instant>,
        result: &Result<T>,
        outcome: impl FnOnce(&T) -> Outcome,
    ) {
        let handles = &self.ops[op as usize];
        let label = match result {
            Ok(v) => outcome(v),
            Err(e) => self.failed(op, e),
        };
        match (&handles.outcomes[label as usize], &self.pending) {
            (Some(_), Some(pending)) => {
                pending.count(op as usize * Outcome::COUNT + label as usize)
            }
            (Some(c), None) => c.increment(1),
            (None, _) => self.unexpected(op, label),
        }
        if let Some(start) = start {
            let elapsed = start.elapsed();
            match &self.pending {
                Some(pending) => pending.sample(op, elapsed),
                None => handles.duration.record(elapsed.as_secs_f64()),
            }
        }
    }

    /// The outcome of a failed call: `not_found` and `conflict` are outcomes of their
    /// own; any other error is counted by kind ([`STORE_ERRORS`]) and is `error`.
    #[cold]
    #[inline(never)]
    fn failed(&self, op: Op, e: &Error) -> Outcome {
        match e {
            Error::NotFound => Outcome::NotFound,
            Error::Conflict { .. } => Outcome::Conflict,
            e => {
                counter!(
                    STORE_ERRORS,
                    "engine" => self.engine.clone(),
                    "operation" => op.name(),
                    "kind" => error_kind(e),
                )
                .increment(1);
                Outcome::Error
            }
        }
    }

    /// Counts an outcome outside the contract (a third-party store's `NotFound` from
    /// `delete`, say): counted all the same, registered on first sight.
    #[cold]
    #[inline(never)]
    fn unexpected(&self, op: Op, label: Outcome) {
        counter!(
            STORE_OPERATIONS,
            "engine" => self.engine.clone(),
            "operation" => op.name(),
            "outcome" => label.name(),
        )
        .increment(1);
    }

    /// Runs `fut` as `op` on `key`: in a span, timed, counted by the outcome `outcome`
    /// gives its success.
    async fn observe<T, F>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let span = if Self::traced() {
            self.span(op, key)
        } else {
            None
        };
        let start = self.start();
        let result = match span {
            None => fut.await,
            Some(span) => fut.instrument(span).await,
        };
        self.finish(op, start, &result, outcome);
        result
    }

    /// [`Self::observe`] of a call that answers without waiting.
    #[inline(always)]
    fn observe_now<T>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if Self::traced() {
            return self.observe_traced(op, key, outcome, call);
        }
        let start = self.start();
        let result = call();
        self.finish(op, start, &result, outcome);
        result
    }

    /// [`Self::observe_now`] for a subscriber that wants spans: the call runs inside its
    /// span.
    #[cold]
    #[inline(never)]
    fn observe_traced<T>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let span = self.span(op, key);
        let start = self.start();
        let result = match span {
            None => call(),
            Some(span) => span.in_scope(call),
        };
        self.finish(op, start, &result, outcome);
        result
    }
}

/// The metrics layer's instruments, hosted in an in-process engine's own immediate
/// calls ([`ImmediateStore::hosted_metrics`]).
///
/// Over such an engine the [`MetricsLayer`] hands its instruments to the engine instead
/// of standing between the caller and it: the session handle's calls then reach the
/// engine as they would without the layer, and the engine counts, times and traces each
/// one exactly as the layer would (same names, same spans). On a call of a few hundred
/// nanoseconds, the call through a wrapping store was itself a tenth of the cost.
///
/// An engine keeps one (`HostedMetrics::default()`) and runs the body of each of its
/// immediate calls through the method of the same name; until a layer arms it, each
/// method only calls the body. Once armed, the engine measures each of those calls,
/// whether it came through the layer or was made on the engine directly (through
/// another `Arc` of it); the layer's `clear_expired`, `count` and `list` stay the
/// layer's.
///
/// ```
/// use session_core::metrics::HostedMetrics;
/// use session_core::{Result, SessionKey};
///
/// struct Engine {
///     metrics: HostedMetrics,
/// }
///
/// impl Engine {
///     fn delete_now(&self, key: &SessionKey) -> Result<bool> {
///         self.metrics.delete(key, || Ok(false))
///     }
/// }
/// # let e = Engine { metrics: HostedMetrics::default() };
/// # assert!(!e.delete_now(&SessionKey::generate().unwrap()).unwrap());
/// ```
#[derive(Default)]
pub struct HostedMetrics(OnceLock<Arc<Instruments>>);

impl fmt::Debug for HostedMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostedMetrics")
            .field("armed", &self.0.get().is_some())
            .finish()
    }
}

impl HostedMetrics {
    /// Arms it with a layer's instruments; false when another layer armed it first
    /// (that layer then measures the engine's immediate calls, and this one wraps).
    fn host(&self, ins: Arc<Instruments>) -> bool {
        self.0.set(ins).is_ok()
    }

    #[inline(always)]
    fn observe<T>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self.0.get() {
            None => call(),
            Some(ins) => ins.observe_now(op, key, outcome, call),
        }
    }

    /// [`ImmediateStore::insert_new_now`]'s body, measured.
    #[inline(always)]
    pub fn insert_new(
        &self,
        key: &SessionKey,
        call: impl FnOnce() -> Result<Inserted>,
    ) -> Result<Inserted> {
        self.observe(Op::InsertNew, Some(key), inserted_outcome, call)
    }

    /// [`ImmediateStore::create_now`]'s body, measured (one `create`, whatever
    /// `insert_new` calls it makes).
    #[inline(always)]
    pub fn create(&self, call: impl FnOnce() -> Result<SessionKey>) -> Result<SessionKey> {
        self.observe(Op::Create, None, |_| Outcome::Created, call)
    }

    /// [`ImmediateStore::load_now`]'s body, measured.
    #[inline(always)]
    pub fn load(
        &self,
        key: &SessionKey,
        call: impl FnOnce() -> Result<Option<Record>>,
    ) -> Result<Option<Record>> {
        self.observe(Op::Load, Some(key), load_outcome, call)
    }

    /// [`ImmediateStore::load_lazy_now`]'s body, measured (as a `load`).
    #[inline(always)]
    pub fn load_lazy(
        &self,
        key: &SessionKey,
        call: impl FnOnce() -> Result<Option<LazyRecord>>,
    ) -> Result<Option<LazyRecord>> {
        self.observe(Op::Load, Some(key), load_outcome, call)
    }

    /// [`ImmediateStore::update_now`]'s body, measured.
    #[inline(always)]
    pub fn update(&self, key: &SessionKey, call: impl FnOnce() -> Result<u64>) -> Result<u64> {
        self.observe(Op::Update, Some(key), |_| Outcome::Ok, call)
    }

    /// [`ImmediateStore::delete_now`]'s body, measured.
    #[inline(always)]
    pub fn delete(&self, key: &SessionKey, call: impl FnOnce() -> Result<bool>) -> Result<bool> {
        self.observe(Op::Delete, Some(key), delete_outcome, call)
    }

    /// [`ImmediateStore::touch_now`]'s body, measured.
    #[inline(always)]
    pub fn touch(&self, key: &SessionKey, call: impl FnOnce() -> Result<()>) -> Result<()> {
        self.observe(Op::Touch, Some(key), |_| Outcome::Ok, call)
    }

    /// [`ImmediateStore::exists_now`]'s body, measured.
    #[inline(always)]
    pub fn exists(&self, key: &SessionKey, call: impl FnOnce() -> Result<bool>) -> Result<bool> {
        self.observe(Op::Exists, Some(key), exists_outcome, call)
    }
}

/// A store wearing a [`MetricsLayer`].
pub struct MetricsStore {
    inner: Arc<dyn SessionStore>,
    ins: Arc<Instruments>,
    /// Whether the wrapped store offers immediate calls (it does or doesn't for its
    /// whole life), so that [`SessionStore::immediate`] answers without asking it.
    immediate: bool,
    /// Whether the wrapped store hosts the instruments ([`HostedMetrics`]): it then
    /// measures its own calls but `clear_expired`, `count` and `list`.
    hosted: bool,
}

impl fmt::Debug for MetricsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsStore")
            .field("inner", &self.inner)
            .field("hosted", &self.hosted)
            .finish()
    }
}

impl MetricsStore {
    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }

    /// [`Instruments::observe`], unless the wrapped store measures the call itself.
    async fn observe<T, F>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if self.hosted {
            fut.await
        } else {
            self.ins.observe(op, key, outcome, fut).await
        }
    }

    /// [`Instruments::observe_now`] of a call of the inner store's [`ImmediateStore`].
    #[inline(always)]
    fn observe_now<T>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        outcome: impl FnOnce(&T) -> Outcome,
        call: impl FnOnce(&dyn ImmediateStore) -> Result<T>,
    ) -> Result<T> {
        let Some(inner) = self.inner.immediate() else {
            // `immediate` offers this store only over an inner one that has it.
            return Err(Error::unsupported(self.inner.engine(), "immediate calls"));
        };
        if self.hosted {
            return call(inner);
        }
        self.ins.observe_now(op, key, outcome, || call(inner))
    }
}

fn load_outcome<R>(r: &Option<R>) -> Outcome {
    if r.is_some() {
        Outcome::Hit
    } else {
        Outcome::Miss
    }
}

fn inserted_outcome(i: &Inserted) -> Outcome {
    match i {
        Inserted::Created => Outcome::Created,
        Inserted::KeyTaken => Outcome::KeyTaken,
    }
}

fn delete_outcome(d: &bool) -> Outcome {
    if *d {
        Outcome::Deleted
    } else {
        Outcome::Absent
    }
}

fn exists_outcome(e: &bool) -> Outcome {
    if *e { Outcome::Hit } else { Outcome::Miss }
}

/// Offered (through [`SessionStore::immediate`]) only when the wrapped store offers its
/// own: the same counts, times and spans as the `async` methods, without the boxed
/// future of each layer. A `create` counts as `create` (the inner store's
/// `insert_new_now` calls under it are not counted twice).
impl ImmediateStore for MetricsStore {
    fn insert_new_now(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.observe_now(Op::InsertNew, Some(key), inserted_outcome, |s| {
            s.insert_new_now(key, record)
        })
    }

    fn create_now(&self, record: &Record) -> Result<SessionKey> {
        self.observe_now(
            Op::Create,
            None,
            |_| Outcome::Created,
            |s| s.create_now(record),
        )
    }

    fn load_now(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.observe_now(Op::Load, Some(key), load_outcome, |s| s.load_now(key))
    }

    fn load_lazy_now(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.observe_now(Op::Load, Some(key), load_outcome, |s| s.load_lazy_now(key))
    }

    fn update_now(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.observe_now(
            Op::Update,
            Some(key),
            |_| Outcome::Ok,
            |s| s.update_now(key, record, expected_version),
        )
    }

    fn delete_now(&self, key: &SessionKey) -> Result<bool> {
        self.observe_now(Op::Delete, Some(key), delete_outcome, |s| s.delete_now(key))
    }

    fn touch_now(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.observe_now(
            Op::Touch,
            Some(key),
            |_| Outcome::Ok,
            |s| s.touch_now(key, expires_at),
        )
    }

    fn exists_now(&self, key: &SessionKey) -> Result<bool> {
        self.observe_now(Op::Exists, Some(key), exists_outcome, |s| s.exists_now(key))
    }
}

#[async_trait]
impl SessionStore for MetricsStore {
    fn engine(&self) -> &str {
        self.inner.engine()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.observe(
            Op::InsertNew,
            Some(key),
            inserted_outcome,
            self.inner.insert_new(key, record),
        )
        .await
    }

    async fn create(&self, record: &Record) -> Result<SessionKey> {
        self.observe(
            Op::Create,
            None,
            |_| Outcome::Created,
            self.inner.create(record),
        )
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.observe(Op::Load, Some(key), load_outcome, self.inner.load(key))
            .await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.observe(Op::Load, Some(key), load_outcome, self.inner.load_lazy(key))
            .await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.observe(
            Op::Update,
            Some(key),
            |_| Outcome::Ok,
            self.inner.update(key, record, expected_version),
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.observe(
            Op::Delete,
            Some(key),
            delete_outcome,
            self.inner.delete(key),
        )
        .await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.observe(
            Op::Touch,
            Some(key),
            |_| Outcome::Ok,
            self.inner.touch(key, expires_at),
        )
        .await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.observe(
            Op::Exists,
            Some(key),
            exists_outcome,
            self.inner.exists(key),
        )
        .await
    }

    // The three calls no engine hosts: measured here over every store.
    async fn clear_expired(&self) -> Result<u64> {
        let removed = self
            .ins
            .observe(
                Op::ClearExpired,
                None,
                |_| Outcome::Ok,
                self.inner.clear_expired(),
            )
            .await?;
        record_expired_removed(&self.ins.engine, removed);
        Ok(removed)
    }

    async fn count(&self) -> Result<u64> {
        self.ins
            .observe(Op::Count, None, |_| Outcome::Ok, self.inner.count())
            .await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.ins
            .observe(
                Op::List,
                None,
                |_| Outcome::Ok,
                self.inner.list(after, limit),
            )
            .await
    }

    /// The inner store's raw access, not measured: operator and test tooling.
    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner.raw()
    }

    /// The inner store's maintenance, not measured per call (the background cleanup
    /// counts what it removes).
    fn maintenance(&self) -> Option<&dyn Maintenance> {
        self.inner.maintenance()
    }

    fn user_index(&self) -> Option<&dyn crate::UserIndex> {
        self.inner.user_index()
    }

    /// When the wrapped store answers without waiting: its own if it hosts the
    /// instruments (it measures each call itself), else this layer's, measuring every
    /// call.
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        if self.hosted {
            self.inner.immediate()
        } else {
            self.immediate.then_some(self as &dyn ImmediateStore)
        }
    }
}

/// The middleware's metrics: [`REQUESTS`] and [`REQUEST_ACTIONS`] for every request
/// (see the [module docs](self)). Give it to the middleware as a request hook.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsHook;

impl RequestHook for MetricsHook {
    fn on_request(&self, outcome: &RequestOutcome) {
        counter!(REQUESTS).increment(1);
        for action in outcome.actions() {
            counter!(REQUEST_ACTIONS, "action" => action).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::StoreLayerExt;
    use crate::record::SessionData;
    use crate::store::StoreCalls;
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A store of one record slot, enough to drive each outcome; in-process unless
    /// `durable`, offering its calls as an [`ImmediateStore`] when `immediate` (counting
    /// the calls that came that way).
    #[derive(Debug, Default)]
    struct One {
        slot: std::sync::Mutex<Option<(String, Record)>>,
        durable: bool,
        immediate: bool,
        immediate_calls: AtomicU32,
    }

    impl One {
        fn durable() -> Self {
            One {
                durable: true,
                ..One::default()
            }
        }
        fn immediate() -> Self {
            One {
                immediate: true,
                ..One::default()
            }
        }
        fn seen(&self) {
            self.immediate_calls.fetch_add(1, Ordering::Relaxed);
        }
        fn slot(&self) -> std::sync::MutexGuard<'_, Option<(String, Record)>> {
            self.slot.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl ImmediateStore for One {
        fn insert_new_now(&self, k: &SessionKey, r: &Record) -> Result<Inserted> {
            self.seen();
            let mut g = self.slot();
            if g.is_some() {
                return Ok(Inserted::KeyTaken);
            }
            *g = Some((k.as_str().to_owned(), r.clone()));
            Ok(Inserted::Created)
        }
        fn load_now(&self, k: &SessionKey) -> Result<Option<Record>> {
            self.seen();
            Ok(self
                .slot()
                .as_ref()
                .filter(|(s, _)| s == k.as_str())
                .map(|(_, r)| r.clone()))
        }
        fn update_now(&self, k: &SessionKey, r: &Record, exp: Option<u64>) -> Result<u64> {
            self.seen();
            let mut g = self.slot();
            match g.as_mut().filter(|(s, _)| s == k.as_str()) {
                None => Err(Error::NotFound),
                Some((_, cur)) if exp.is_some_and(|v| v != cur.version) => Err(Error::Conflict {
                    expected: exp.unwrap_or_default(),
                    found: cur.version,
                }),
                Some((_, cur)) => {
                    *cur = r.clone();
                    cur.version += 1;
                    Ok(cur.version)
                }
            }
        }
        fn delete_now(&self, k: &SessionKey) -> Result<bool> {
            self.seen();
            let mut g = self.slot();
            let hit = g.as_ref().is_some_and(|(s, _)| s == k.as_str());
            if hit {
                *g = None;
            }
            Ok(hit)
        }
        fn touch_now(&self, _: &SessionKey, _: Timestamp) -> Result<()> {
            self.seen();
            Err(Error::Timeout {
                engine: "one".into(),
                after: std::time::Duration::from_millis(5),
            })
        }
        fn exists_now(&self, k: &SessionKey) -> Result<bool> {
            Ok(self.load_now(k)?.is_some())
        }
    }

    /// The async calls answer through the same code, not counted as immediate ones.
    #[async_trait]
    impl SessionStore for One {
        fn engine(&self) -> &str {
            "one"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::none().durable(self.durable)
        }
        async fn insert_new(&self, k: &SessionKey, r: &Record) -> Result<Inserted> {
            let r = self.insert_new_now(k, r);
            self.immediate_calls.fetch_sub(1, Ordering::Relaxed);
            r
        }
        async fn load(&self, k: &SessionKey) -> Result<Option<Record>> {
            let r = self.load_now(k);
            self.immediate_calls.fetch_sub(1, Ordering::Relaxed);
            r
        }
        async fn update(&self, k: &SessionKey, r: &Record, exp: Option<u64>) -> Result<u64> {
            let r = self.update_now(k, r, exp);
            self.immediate_calls.fetch_sub(1, Ordering::Relaxed);
            r
        }
        async fn delete(&self, k: &SessionKey) -> Result<bool> {
            let r = self.delete_now(k);
            self.immediate_calls.fetch_sub(1, Ordering::Relaxed);
            r
        }
        async fn touch(&self, k: &SessionKey, at: Timestamp) -> Result<()> {
            let r = self.touch_now(k, at);
            self.immediate_calls.fetch_sub(1, Ordering::Relaxed);
            r
        }
        async fn exists(&self, k: &SessionKey) -> Result<bool> {
            Ok(self.load(k).await?.is_some())
        }
        async fn clear_expired(&self) -> Result<u64> {
            Ok(3)
        }
        fn immediate(&self) -> Option<&dyn ImmediateStore> {
            self.immediate.then_some(self as &dyn ImmediateStore)
        }
    }

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Drives every outcome through the layer over `inner` (through [`StoreCalls`] when
    /// `calls`, else the async methods) and checks the counts.
    fn every_outcome_counted(inner: One, calls: bool) {
        let inner = Arc::new(inner);
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        ::metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let store = MetricsLayer.layer(inner.clone() as Arc<dyn SessionStore>);
                let store = &*store;
                let record = Record::with_ttl(SessionData::new(), 60);
                let other = SessionKey::generate().expect("key");
                if calls {
                    let key = store.call_create(&record).await.expect("create");
                    assert!(store.call_load(&key).await.expect("load").is_some());
                    assert!(store.call_load(&other).await.expect("load").is_none());
                    assert!(!store.call_exists(&other).await.expect("exists"));
                    store
                        .call_update(&key, &record, Some(1))
                        .await
                        .expect("cas");
                    let err = store
                        .call_update(&key, &record, Some(1))
                        .await
                        .expect_err("lost");
                    assert!(err.is_conflict());
                    let err = store
                        .call_update(&other, &record, None)
                        .await
                        .expect_err("gone");
                    assert!(err.is_not_found());
                    let err = store
                        .call_touch(&key, Timestamp::now())
                        .await
                        .expect_err("late");
                    assert!(err.is_unavailable());
                    assert!(store.call_delete(&key).await.expect("delete"));
                    assert!(!store.call_delete(&key).await.expect("delete"));
                } else {
                    let key = store.create(&record).await.expect("create");
                    assert!(store.load(&key).await.expect("load").is_some());
                    assert!(store.load(&other).await.expect("load").is_none());
                    assert!(!store.exists(&other).await.expect("exists"));
                    store.update(&key, &record, Some(1)).await.expect("cas");
                    let err = store
                        .update(&key, &record, Some(1))
                        .await
                        .expect_err("lost");
                    assert!(err.is_conflict());
                    let err = store.update(&other, &record, None).await.expect_err("gone");
                    assert!(err.is_not_found());
                    let err = store.touch(&key, Timestamp::now()).await.expect_err("late");
                    assert!(err.is_unavailable());
                    assert!(store.delete(&key).await.expect("delete"));
                    assert!(!store.delete(&key).await.expect("delete"));
                }
                assert_eq!(store.clear_expired().await.expect("clear"), 3);
                // Every call above but `clear_expired` reached the inner store the
                // immediate way exactly when the caller asked for it.
                let immediate = inner.immediate_calls.load(Ordering::Relaxed);
                assert_eq!(immediate, if calls { 10 } else { 0 });
                // An in-process store's counts wait on their threads' stripes.
                publish();
            });
        });
        let text = handle.render();
        let op = |o: &str, out: &str| {
            line_value(
                &text,
                &format!(
                    "session_store_operations_total{{engine=\"one\",operation=\"{o}\",outcome=\"{out}\"}}"
                ),
            )
        };
        assert_eq!(op("create", "created"), Some(1.0), "{text}");
        assert_eq!(op("load", "hit"), Some(1.0), "{text}");
        assert_eq!(op("load", "miss"), Some(1.0), "{text}");
        assert_eq!(op("exists", "miss"), Some(1.0), "{text}");
        assert_eq!(op("update", "ok"), Some(1.0), "{text}");
        assert_eq!(op("update", "conflict"), Some(1.0), "{text}");
        assert_eq!(op("update", "not_found"), Some(1.0), "{text}");
        assert_eq!(op("touch", "error"), Some(1.0), "{text}");
        assert_eq!(op("delete", "deleted"), Some(1.0), "{text}");
        assert_eq!(op("delete", "absent"), Some(1.0), "{text}");
        assert_eq!(op("clear_expired", "ok"), Some(1.0), "{text}");
        assert_eq!(
            line_value(
                &text,
                "session_store_errors_total{engine=\"one\",operation=\"touch\",kind=\"timeout\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            line_value(&text, "session_store_expired_removed_total{engine=\"one\"}"),
            Some(3.0),
            "{text}"
        );
        // An in-process store's durations are sampled (tested below): of the two
        // loads, none, one or both were timed; the series is exported either way.
        let timed = line_value(
            &text,
            "session_store_operation_duration_seconds_count{engine=\"one\",operation=\"load\"}",
        );
        assert!(matches!(timed, Some(t) if t <= 2.0), "{text}");
        // `create` goes through the layer once: the inner store's own insert_new is
        // not seen as a second call. Expected series are there from the start.
        assert_eq!(op("insert_new", "created"), Some(0.0), "{text}");
        // Outcomes outside an operation's contract are not pre-registered.
        assert_eq!(op("load", "created"), None, "{text}");
    }

    #[test]
    fn every_outcome_is_counted_under_its_name() {
        every_outcome_counted(One::default(), false);
    }

    #[test]
    fn immediate_calls_are_counted_as_the_async_ones() {
        let inner = One::immediate();
        every_outcome_counted(inner, true);
    }

    #[test]
    fn the_layer_offers_immediate_calls_only_over_a_store_that_has_them() {
        let layered = MetricsLayer.layer(Arc::new(One::default()));
        assert!(layered.immediate().is_none());
        let inner = Arc::new(One::immediate());
        let layered = MetricsLayer.layer(inner.clone());
        assert!(layered.immediate().is_some());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let record = Record::with_ttl(SessionData::new(), 60);
            let key = layered.call_create(&record).await.expect("create");
            layered.call_load(&key).await.expect("load");
            // create (one insert_new_now) and load, both the immediate way.
            assert_eq!(inner.immediate_calls.load(Ordering::Relaxed), 2);
            layered.load(&key).await.expect("load");
            assert_eq!(inner.immediate_calls.load(Ordering::Relaxed), 2);
            // A layer that offers none (the timeout layer) is never skipped: under it,
            // even the metrics layer is called the async way.
            let outer = crate::layer::TimeoutLayer::new(std::time::Duration::from_secs(5))
                .layer(layered.clone());
            assert!(outer.immediate().is_none());
            outer.call_load(&key).await.expect("load");
            assert_eq!(inner.immediate_calls.load(Ordering::Relaxed), 2);
        });
    }

    /// Loads through the layer on `store`, `n` times; the duration histogram's count.
    fn timed_loads(store: One, n: usize) -> Option<f64> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        ::metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let store = store.with_layer(MetricsLayer);
                let key = SessionKey::generate().expect("key");
                for _ in 0..n {
                    store.load(&key).await.expect("load");
                }
                publish();
            });
        });
        line_value(
            &handle.render(),
            "session_store_operation_duration_seconds_count{engine=\"one\",operation=\"load\"}",
        )
    }

    #[test]
    fn a_durable_store_times_every_call_and_an_in_process_one_samples() {
        let n = 33;
        assert_eq!(timed_loads(One::durable(), n), Some(n as f64));
        // 3,200 draws of one in 16: 200 expected, standard deviation about 14; the bounds
        // are 5 of them away (a sampler that times every call, none, or one call in 8 or
        // 32 falls outside).
        let n = 200 * IN_PROCESS_SAMPLE_EVERY as usize;
        let timed = timed_loads(One::default(), n).expect("the histogram is exported");
        assert!(
            (130.0..=270.0).contains(&timed),
            "{timed} of {n} calls timed"
        );
    }

    #[test]
    fn sampling_does_not_follow_a_rhythm_of_calls() {
        // Calls that alternate in a fixed rhythm (here: one of every 16 draws is ours,
        // the others another operation's) are still sampled at about one in 16.
        let every = IN_PROCESS_SAMPLE_EVERY;
        let mut ours = 0;
        for call in 0..every * 400 {
            let timed = sample(every);
            if call % every == 0 && timed {
                ours += 1;
            }
        }
        assert!((5..=60).contains(&ours), "{ours} of 400 sampled");
    }

    /// The series of loads that found nothing, of the test store.
    const LOAD_MISS: &str =
        "session_store_operations_total{engine=\"one\",operation=\"load\",outcome=\"miss\"}";

    /// `inner` wearing the layer, registered with a recorder of its own, and that
    /// recorder's handle.
    fn layered(inner: One) -> (PrometheusHandle, Arc<dyn SessionStore>) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let store =
            ::metrics::with_local_recorder(&recorder, || MetricsLayer.layer(Arc::new(inner)));
        (handle, store)
    }

    /// Counts `n` loads of a missing key through the layer over an in-process store, on
    /// `threads` threads at once; returns what the exporter shows after [`publish`].
    fn published_after(threads: usize, n: usize) -> Option<f64> {
        let (handle, store) = layered(One::immediate());
        let key = SessionKey::generate().expect("key");
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..n {
                        let now = store.immediate().expect("immediate");
                        assert!(now.load_now(&key).expect("load").is_none());
                    }
                });
            }
        });
        publish();
        line_value(&handle.render(), LOAD_MISS)
    }

    #[test]
    fn an_in_process_stores_counts_reach_the_exporter_when_published() {
        // Four threads on stripes of their own (or sharing some): nothing lost.
        assert_eq!(published_after(4, 10_000), Some(40_000.0));
    }

    #[test]
    fn the_publishing_thread_publishes_within_its_interval() {
        let (handle, store) = layered(One::immediate());
        let key = SessionKey::generate().expect("key");
        let now = store.immediate().expect("immediate");
        for _ in 0..3 {
            assert!(now.load_now(&key).expect("load").is_none());
        }
        let deadline = Instant::now() + PUBLISH_INTERVAL * 3;
        while line_value(&handle.render(), LOAD_MISS) != Some(3.0) {
            assert!(
                Instant::now() < deadline,
                "not published within {:?}",
                PUBLISH_INTERVAL * 3
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_dropped_store_publishes_what_it_counted() {
        let (handle, store) = layered(One::immediate());
        let key = SessionKey::generate().expect("key");
        for _ in 0..5 {
            let now = store.immediate().expect("immediate");
            assert!(now.load_now(&key).expect("load").is_none());
        }
        drop(store);
        // The publishing thread may hold the counts a moment while it publishes them.
        let deadline = Instant::now() + Duration::from_secs(2);
        while line_value(&handle.render(), LOAD_MISS) != Some(5.0) {
            assert!(Instant::now() < deadline, "{}", handle.render());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_durable_stores_counts_are_exported_at_once() {
        let (handle, store) = layered(One::durable());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let key = SessionKey::generate().expect("key");
        rt.block_on(async {
            assert!(store.load(&key).await.expect("load").is_none());
        });
        assert_eq!(line_value(&handle.render(), LOAD_MISS), Some(1.0));
    }

    #[test]
    fn a_sampled_duration_is_published_within_an_eighth_of_itself() {
        let mut last = 0;
        let mut nanos = 32.0_f64;
        while nanos < 1.3e11 {
            let n = nanos as u64;
            let bucket = bucket_of(n);
            assert!(bucket >= last, "{n} ns in bucket {bucket}, below {last}");
            last = bucket;
            let published = bucket_secs(bucket) * 1e9;
            assert!(
                (published - n as f64).abs() <= n as f64 / 8.0,
                "{n} ns published as {published} ns"
            );
            nanos *= 1.013;
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn an_in_process_stores_sampled_durations_reach_the_histogram() {
        let (handle, store) = layered(One::immediate());
        let key = SessionKey::generate().expect("key");
        let n = 100 * IN_PROCESS_SAMPLE_EVERY as usize;
        let started = Instant::now();
        for _ in 0..n {
            let now = store.immediate().expect("immediate");
            assert!(now.load_now(&key).expect("load").is_none());
        }
        let elapsed = started.elapsed().as_secs_f64();
        publish();
        let text = handle.render();
        let count = line_value(
            &text,
            "session_store_operation_duration_seconds_count{engine=\"one\",operation=\"load\"}",
        )
        .expect("count");
        let sum = line_value(
            &text,
            "session_store_operation_duration_seconds_sum{engine=\"one\",operation=\"load\"}",
        )
        .expect("sum");
        // About 100 of the calls were timed; together they took more than nothing and
        // (an eighth aside) no more than all the calls did.
        assert!((50.0..=160.0).contains(&count), "{count} timed: {text}");
        assert!(
            sum > 0.0 && sum <= elapsed * 1.125,
            "{sum} s of {elapsed} s"
        );
    }

    #[test]
    fn error_kinds_are_stable_names() {
        assert_eq!(error_kind(&Error::NotFound), "not_found");
        assert_eq!(error_kind(&Error::backend("x", "down")), "backend");
        assert_eq!(error_kind(&Error::Limit("big".into())), "limit");
        assert_eq!(error_kind(&Error::unsupported("x", "list")), "unsupported");
    }
}
