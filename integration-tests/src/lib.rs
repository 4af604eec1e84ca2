//! # integration-tests: the session store conformance suite
//!
//! Every behaviour a session store must keep, as a library. A backend (built-in or
//! third-party) runs the whole suite with one call; cases are picked from the store's
//! [`Capabilities`], and each case gets a store in a fresh namespace from the
//! [`StoreFactory`] the backend provides.
//!
//! The cases fall in eight [`Category`]s: the store contract, expiry, Django's handle
//! semantics, values, concurrency, bad input (malformed cookies, corrupt bytes),
//! listing, and every session of a user (the per-principal index a store offers through
//! [`SessionStore::user_index`], sign-in metadata and the auth check). Handle-level
//! cases drive a [`session_core::Session`] over the store under test; the bad-input
//! cases wrap it in a [`SpyStore`] to prove that a malformed cookie causes no I/O. The crate's README lists every category with its count, the timing
//! margins the cases keep, and the outcomes the concurrency cases pin down;
//! `examples/custom_store.rs` is a complete third-party store that passes the suite.
//!
//! ```
//! use std::sync::Arc;
//! use integration_tests::{StoreFactory, run_conformance};
//! use session_core::{BoxError, SessionStore};
//!
//! struct Memory;
//!
//! #[session_core::async_trait]
//! impl StoreFactory for Memory {
//!     async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
//!         Ok(Arc::new(backend_cache::MemoryStore::new()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let report = run_conformance("memory", &Memory).await;
//! report.assert_passed();
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cases;
pub mod fault_proxy;
pub mod http_cases;
pub mod lazy;
pub mod servers;
mod spy;

pub use spy::{Call, SpyStore};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use session_core::{BoxError, Capabilities, Config, EngineRegistry, SessionSettings, SessionStore};

/// Makes stores for the suite: each call to [`StoreFactory::fresh`] returns a store in a
/// new, empty namespace (directory, table, key prefix), so cases cannot see each other.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A store in a fresh, empty namespace.
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError>;

    /// Settings the session handle uses in handle-level cases.
    fn settings(&self) -> SessionSettings {
        SessionSettings::default()
    }

    /// Removes every namespace `fresh` created. Called once, after the last case.
    async fn cleanup(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A [`StoreFactory`] that builds stores through the engine registry from a
/// configuration, which `make_config` returns anew (with a fresh namespace) each call.
pub struct ConfigFactory<F> {
    registry: EngineRegistry,
    make_config: F,
}

impl<F> ConfigFactory<F>
where
    F: Fn() -> Config + Send + Sync,
{
    /// A factory over `registry` and a configuration maker.
    pub fn new(registry: EngineRegistry, make_config: F) -> Self {
        ConfigFactory {
            registry,
            make_config,
        }
    }
}

#[async_trait]
impl<F> StoreFactory for ConfigFactory<F>
where
    F: Fn() -> Config + Send + Sync,
{
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(self.registry.build(&(self.make_config)()).await?)
    }

    fn settings(&self) -> SessionSettings {
        (self.make_config)().settings().unwrap_or_default()
    }
}

/// The groups of cases; counts per category are printed and documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// The store contract: create, load, update, delete, touch, exists, versions.
    Store,
    /// Expiry: deadlines, `clear_expired`, every `set_expiry` form.
    Expiry,
    /// The session handle's Django semantics.
    Django,
    /// Values: kinds, sizes, unicode.
    Values,
    /// Concurrency: parallel creates, conflicting saves.
    Concurrency,
    /// Malformed keys, corrupt stored bytes.
    BadInput,
    /// Counting and listing.
    Listing,
    /// Every session of a user: the per-principal index
    /// ([`SessionStore::user_index`]), sign-in metadata and the auth check.
    Users,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a case gets: a store in a fresh namespace and the handle settings.
pub struct Ctx {
    /// The store under test.
    pub store: Arc<dyn SessionStore>,
    /// Settings for session handles.
    pub settings: Arc<SessionSettings>,
    /// The store's declared capabilities.
    pub caps: Capabilities,
}

/// A case's outcome: `Err` carries the explanation of the failure.
pub type CaseResult = Result<(), String>;

/// One conformance case.
pub struct Case {
    /// Unique name.
    pub name: &'static str,
    /// Its group.
    pub category: Category,
    /// Whether the case applies to a store with these capabilities.
    pub applies: fn(&Capabilities) -> bool,
    /// The check itself.
    pub run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>,
}

/// Every case of the suite.
pub fn all_cases() -> Vec<Case> {
    cases::all()
}

/// How many cases each category holds (whatever a store's capabilities).
pub fn case_counts() -> BTreeMap<Category, usize> {
    let mut m = BTreeMap::new();
    for c in all_cases() {
        *m.entry(c.category).or_insert(0) += 1;
    }
    m
}

/// The longest a single case may run before it counts as failed (a hung store must not
/// hang the test run).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Marks a [`CaseResult`] error as "not applicable", for what capabilities cannot say
/// (for example whether the store offers [`SessionStore::raw`]).
const NOT_APPLICABLE: &str = "\u{0}not applicable: ";

/// The error a case returns when it finds at run time that it does not apply to the
/// store; the run records it as [`Outcome::Skipped`], not as a failure.
pub fn not_applicable(why: &str) -> String {
    format!("{NOT_APPLICABLE}{why}")
}

/// Outcome of one case.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Not applicable to the store: excluded by its capabilities, or found at run time
    /// to need something it does not offer (raw byte access, see [`not_applicable`]).
    Skipped,
    /// Failed, with the reason.
    Failed(String),
}

/// The result of a conformance run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Name of the target.
    pub target: String,
    /// Each case with its category and outcome, in run order.
    pub results: Vec<(&'static str, Category, Outcome)>,
}

impl Report {
    /// Names of the failed cases with their reasons.
    pub fn failures(&self) -> Vec<(&'static str, String)> {
        self.results
            .iter()
            .filter_map(|(n, _, o)| match o {
                Outcome::Failed(why) => Some((*n, why.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the named case failed.
    pub fn failed(&self, name: &str) -> bool {
        self.failures().iter().any(|(n, _)| *n == name)
    }

    /// Passed-case counts per category.
    pub fn passed_by_category(&self) -> BTreeMap<Category, usize> {
        let mut m = BTreeMap::new();
        for (_, c, o) in &self.results {
            if matches!(o, Outcome::Passed) {
                *m.entry(*c).or_insert(0) += 1;
            }
        }
        m
    }

    /// Number of passed cases.
    pub fn passed(&self) -> usize {
        self.passed_by_category().values().sum()
    }

    /// Panics with every failure listed, unless all applicable cases passed.
    pub fn assert_passed(&self) {
        let failures = self.failures();
        if !failures.is_empty() {
            let list: Vec<String> = failures
                .iter()
                .map(|(n, why)| format!("  - {n}: {why}"))
                .collect();
            panic!(
                "conformance suite on {}: {} case(s) failed:\n{}",
                self.target,
                failures.len(),
                list.join("\n")
            );
        }
    }
}

impl Report {
    /// Names of the cases that were not applicable to the store, in run order.
    pub fn not_applicable(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|(_, _, o)| matches!(o, Outcome::Skipped))
            .map(|(n, _, _)| *n)
            .collect()
    }

    /// Panics unless every applicable case passed ([`Report::assert_passed`]) AND exactly
    /// `passed` cases passed and `not_applicable` cases were not applicable.
    ///
    /// "No failure" alone lets a change to `capabilities()` or `raw()` turn a whole
    /// category into "not applicable" unnoticed; pinning both counts makes such a change
    /// fail the run, and the message lists the not-applicable cases so the moved ones are
    /// easy to spot. When a count changes on purpose, update the pin with the new numbers
    /// the message prints.
    pub fn assert_pinned(&self, passed: usize, not_applicable: usize) {
        self.assert_passed();
        let got_passed = self.passed();
        let na = self.not_applicable();
        if got_passed != passed || na.len() != not_applicable {
            let list: Vec<String> = na.iter().map(|n| format!("  - {n}")).collect();
            panic!(
                "conformance suite on {}: expected {passed} passed and {not_applicable} not \
                 applicable, got {got_passed} passed and {} not applicable (of {} cases run). \
                 A capability or raw() change moved cases; if that is intended, update the \
                 pin. Not applicable now:\n{}",
                self.target,
                na.len(),
                self.results.len(),
                if list.is_empty() {
                    "  (none)".to_owned()
                } else {
                    list.join("\n")
                }
            );
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skipped = self
            .results
            .iter()
            .filter(|(_, _, o)| matches!(o, Outcome::Skipped))
            .count();
        write!(
            f,
            "conformance[{}]: {} passed, {} failed, {} not applicable;",
            self.target,
            self.passed(),
            self.failures().len(),
            skipped
        )?;
        for (c, n) in self.passed_by_category() {
            write!(f, " {c}={n}")?;
        }
        Ok(())
    }
}

/// Runs every applicable case against stores from `factory`, then cleans up. Prints a
/// summary line with the count of cases per category.
pub async fn run_conformance(target: &str, factory: &dyn StoreFactory) -> Report {
    run_cases(target, factory, all_cases()).await
}

/// Runs the given cases (a subset, for a focused test) against stores from `factory`.
pub async fn run_cases(target: &str, factory: &dyn StoreFactory, cases: Vec<Case>) -> Report {
    let settings = Arc::new(factory.settings());
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let store = match factory.fresh().await {
            Ok(s) => s,
            Err(e) => {
                results.push((
                    case.name,
                    case.category,
                    Outcome::Failed(format!("could not build a fresh store: {e}")),
                ));
                continue;
            }
        };
        let caps = store.capabilities();
        if !(case.applies)(&caps) {
            results.push((case.name, case.category, Outcome::Skipped));
            continue;
        }
        let ctx = Ctx {
            store,
            settings: settings.clone(),
            caps,
        };
        let started = Instant::now();
        let run = std::panic::AssertUnwindSafe((case.run)(&ctx)).catch_unwind();
        let outcome = match tokio::time::timeout(CASE_TIMEOUT, run).await {
            Err(_) => Outcome::Failed(format!("did not finish within {CASE_TIMEOUT:?}")),
            Ok(Ok(Ok(()))) => Outcome::Passed,
            Ok(Ok(Err(why))) if why.starts_with(NOT_APPLICABLE) => {
                tracing::debug!(case = case.name, reason = %&why[NOT_APPLICABLE.len()..], "not applicable");
                Outcome::Skipped
            }
            Ok(Ok(Err(why))) => Outcome::Failed(why),
            Ok(Err(panic)) => Outcome::Failed(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            )),
        };
        tracing::debug!(case = case.name, elapsed = ?started.elapsed(), "conformance case done");
        results.push((case.name, case.category, outcome));
    }
    if let Err(e) = factory.cleanup().await {
        results.push((
            "cleanup",
            Category::Store,
            Outcome::Failed(format!("cleanup failed: {e}")),
        ));
    }
    let report = Report {
        target: target.to_owned(),
        results,
    };
    println!("{report}");
    report
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
