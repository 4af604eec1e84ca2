//! Background cleanup: `clear_expired` every few minutes for applications without cron.
//!
//! Opt-in: nothing runs unless the application starts it ([`Cleanup::spawn`]), typically
//! from the `[cleanup]` section of the configuration ([`CleanupConfig`]):
//!
//! ```toml
//! [cleanup]
//! interval_secs = 300   # how often, required
//! jitter_secs = 30      # a random 0..=jitter added to each wait (default: interval / 10)
//! batch = 1000          # records per delete step, for stores that sweep in batches
//! timeout_secs = 60     # a run still going after this long is dropped (default: interval)
//! ```
//!
//! Each run calls the store's [`Maintenance::clear_expired`](crate::Maintenance) when it
//! has maintenance operations (batched deletes, short locks), else
//! [`SessionStore::clear_expired`], under the run's deadline. A failed or late run is
//! logged and the next one comes at the next interval; the task never ends on its own.
//!
//! **Several instances.** Every app instance may run it against one store: a sweep
//! deletes only records already past their deadline, with a conditional delete per
//! record or batch, so two sweeps at once remove each record once and never touch a live
//! one. The jitter spreads instances that started together, so they rarely sweep at
//! the same moment.
//!
//! **Stopping.** [`CleanupHandle::stop`] ends the task between runs (or cancels a run
//! in progress) and waits for it; dropping the handle aborts it. Stop it when the app
//! shuts down (the `sessions demo` command does, after its server stops).
//!
//! Each run logs what it removed at `debug`, adds to the
//! `session_store_expired_removed_total` counter (feature `metrics`) and publishes
//! [`SessionEvent::Expired`] to the [`Events`] given with [`Cleanup::events`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use session_core::cleanup::{Cleanup, CleanupOptions};
//!
//! async fn serve_app(store: Arc<dyn session_core::SessionStore>) {
//!     let cleanup = Cleanup::new(store, CleanupOptions::every(Duration::from_secs(300))).spawn();
//!     // ... serve until shutdown ...
//!     cleanup.stop().await;
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Events, SessionEvent};
use crate::store::SessionStore;

/// The configuration section of the background cleanup.
pub const SECTION: &str = "cleanup";

/// `[cleanup]`: the options of the background cleanup. Unknown keys are errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// Seconds between runs; required when the section is present, at least 1.
    pub interval_secs: Option<u64>,
    /// Up to this many seconds added at random to each wait; default a tenth of the
    /// interval.
    pub jitter_secs: Option<u64>,
    /// Records per delete step for stores that sweep in batches; default 1000, at
    /// least 1.
    pub batch: Option<u64>,
    /// Seconds a run may take before it is dropped; default the interval, at least 1.
    pub timeout_secs: Option<u64>,
}

impl CleanupConfig {
    /// The options `config`'s `[cleanup]` section describes, or `None` when it has
    /// none (the cleanup is opt-in). Errors name the key (`cleanup.interval_secs`).
    pub fn from_config(config: &Config) -> Result<Option<CleanupOptions>> {
        if !config.contains(SECTION) {
            return Ok(None);
        }
        let cfg: CleanupConfig = config.section(SECTION)?;
        cfg.options().map(Some).map_err(|e| config.locate(e))
    }

    /// The options these settings describe.
    pub fn options(&self) -> Result<CleanupOptions> {
        let positive = |key: &str, v: Option<u64>| match v {
            Some(0) => Err(Error::config(
                format!("{SECTION}.{key}"),
                "must be at least 1",
            )),
            other => Ok(other),
        };
        let interval = positive("interval_secs", self.interval_secs)?.ok_or_else(|| {
            Error::config(
                format!("{SECTION}.interval_secs"),
                "is required to run the background cleanup (seconds between runs); \
                 remove the [cleanup] section to turn it off",
            )
        })?;
        let interval = Duration::from_secs(interval);
        let mut options = CleanupOptions::every(interval);
        if let Some(j) = self.jitter_secs {
            options.jitter = Duration::from_secs(j);
        }
        if let Some(b) = positive("batch", self.batch)? {
            options.batch = b;
        }
        if let Some(t) = positive("timeout_secs", self.timeout_secs)? {
            options.run_timeout = Duration::from_secs(t);
        }
        Ok(options)
    }
}

/// How the background cleanup runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupOptions {
    /// Time between the end of one run and the start of the next (before jitter).
    pub interval: Duration,
    /// Up to this much is added at random to each wait.
    pub jitter: Duration,
    /// Records per delete step (stores that sweep in batches).
    pub batch: u64,
    /// A run still going after this long is dropped and logged.
    pub run_timeout: Duration,
}

impl CleanupOptions {
    /// A run every `interval` (at least 1 ms), a tenth of it as jitter, batches of
    /// 1000, each run bounded by the interval.
    pub fn every(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        CleanupOptions {
            interval,
            jitter: interval / 10,
            batch: 1000,
            run_timeout: interval,
        }
    }

    /// These options with `jitter`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// These options with `batch` (at least 1).
    pub fn batch(mut self, batch: u64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// These options with each run bounded by `timeout` (at least 1 ms).
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = timeout.max(Duration::from_millis(1));
        self
    }
}

/// A background cleanup, ready to start.
#[derive(Debug)]
#[must_use = "call .spawn() to start it"]
pub struct Cleanup {
    store: Arc<dyn SessionStore>,
    options: CleanupOptions,
    events: Option<Events>,
}

impl Cleanup {
    /// A cleanup of `store` with `options`.
    pub fn new(store: Arc<dyn SessionStore>, options: CleanupOptions) -> Self {
        Cleanup {
            store,
            options,
            events: None,
        }
    }

    /// Publishes [`SessionEvent::Expired`] for each run that removed records.
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// One run now: removes the store's expired records, under the run deadline, and
    /// returns how many.
    pub async fn run_once(&self) -> Result<u64> {
        let engine = self.store.engine().to_owned();
        let sweep = async {
            match self.store.maintenance() {
                Some(m) => m
                    .clear_expired(self.options.batch, &|_| {})
                    .await
                    .map(|r| r.removed),
                None => self.store.clear_expired().await,
            }
        };
        let removed = crate::layer::deadline(&engine, self.options.run_timeout, sweep).await??;
        #[cfg(feature = "metrics")]
        crate::metrics::record_expired_removed(&engine, removed);
        if removed > 0
            && let Some(events) = &self.events
        {
            events.publish(SessionEvent::Expired {
                engine,
                count: removed,
            });
        }
        Ok(removed)
    }

    /// Starts the task on the current tokio runtime.
    pub fn spawn(self) -> CleanupHandle {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let wait = self.options.interval + random_upto(self.options.jitter);
                tokio::select! {
                    _ = &mut stop_rx => return,
                    () = tokio::time::sleep(wait) => {}
                }
                tokio::select! {
                    _ = &mut stop_rx => return,
                    result = self.run_once() => match result {
                        Ok(removed) => tracing::debug!(
                            engine = self.store.engine(),
                            removed,
                            "background cleanup removed expired sessions"
                        ),
                        Err(e) => tracing::warn!(
                            engine = self.store.engine(),
                            error = %e,
                            "background cleanup failed; trying again at the next interval"
                        ),
                    },
                }
            }
        });
        CleanupHandle {
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

/// A uniformly random duration in `0..=max` (millisecond steps).
fn random_upto(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        // No randomness: no jitter rather than no cleanup.
        Err(_) => 0,
    };
    Duration::from_millis(r % ms.saturating_add(1))
}

/// The running cleanup task. [`CleanupHandle::stop`] ends it and waits; dropping the
/// handle aborts it.
#[derive(Debug)]
pub struct CleanupHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl CleanupHandle {
    /// Ends the task (cancelling a run in progress) and waits until it has ended.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            // Cancelled or panicked: either way it is over.
            let _ = t.await;
        }
    }

    /// Whether the task has ended (it ends only when stopped or aborted).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for CleanupHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_strict_and_opt_in() {
        assert_eq!(
            CleanupConfig::from_config(&Config::from_toml("engine = \"file\"")).expect("ok"),
            None
        );
        let o = CleanupConfig::from_config(&Config::from_toml(
            "[cleanup]\ninterval_secs = 60\nbatch = 10",
        ))
        .expect("valid")
        .expect("on");
        assert_eq!(o.interval, Duration::from_secs(60));
        assert_eq!(o.jitter, Duration::from_secs(6));
        assert_eq!(o.batch, 10);
        assert_eq!(o.run_timeout, Duration::from_secs(60));
        let err = CleanupConfig::from_config(&Config::from_toml("[cleanup]\nintervall_secs = 60"))
            .expect_err("typo");
        assert!(err.to_string().contains("cleanup.intervall_secs"), "{err}");
        let err = CleanupConfig::from_config(&Config::from_toml("[cleanup]\nbatch = 5"))
            .expect_err("no interval");
        assert!(err.to_string().contains("cleanup.interval_secs"), "{err}");
        let err = CleanupConfig::from_config(&Config::from_toml("[cleanup]\ninterval_secs = 0"))
            .expect_err("zero");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn jitter_stays_in_bounds() {
        assert_eq!(random_upto(Duration::ZERO), Duration::ZERO);
        for _ in 0..200 {
            assert!(random_upto(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
