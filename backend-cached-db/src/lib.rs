//! # backend-cached-db
//!
//! Django's `cached_db` engine, done consistently: any cache store in front of any
//! durable store, both as `Arc<dyn SessionStore>`. Reads come from the cache and fall
//! back to the durable store; writes go to the durable store first and its answer
//! (including its version) is authoritative.
//!
//! The engine builds its store with [`CachedDbConfig::build`]`(&settings, cache, db,
//! l1)`: the constructor shape every backend crate has (see "Constructors" in
//! `docs/BACKENDS.md`), plus the parts, which the registry builds from the nested engine
//! configurations first.
//!
//! ## The consistency rule
//!
//! **No read returns data older than the durable store's, even after a failed cache
//! write**, as far as the cache's own commands allow (see "Fences" below). Django 5.1+
//! logs a failed cache write and keeps serving the stale entry until its TTL. Here:
//!
//! - a write (update, touch, delete) goes to the durable store, then **invalidates** the
//!   cache entry, an update or a delete by leaving a fence in its place (an entry is
//!   never rewritten with a new version in place, so cache versions always mirror
//!   durable versions);
//! - if the invalidation fails, or a cache write (a fill, a create) fails, the key is
//!   remembered as *suspect*: its reads in this process bypass the cache, and a
//!   background task keeps deleting its entry (backing off while the cache fails) until
//!   a delete is answered. A command that timed out on the client may still reach the
//!   cache later, after another process's writer invalidated the entry; the repair
//!   delete travels after it over the same connection, so once it is answered no
//!   process can read that late, old entry;
//! - a read that misses fills the cache with add-if-absent, then re-reads the durable
//!   version and takes the fill back if a write slipped in between (this closes the
//!   classic cache-aside race between a reader's fill and a writer's invalidation). The
//!   fill is replaced by a fence with a compare-and-set on its version, so what a writer
//!   put in its place meanwhile (its fence, or a newer fill) stays, and the first level
//!   is not filled with a read known to be old.
//!
//! **Fences.** Re-reading after the fill drops a stale entry, but until that re-read is
//! answered other requests could read it: a fill whose durable read came before a
//! logout, and whose add reached the cache after the logout's invalidation, served the
//! ended session to a concurrent request on another instance (the multi-instance drill,
//! `session-cli/tests/multi_instance.rs`, caught it). So an update or a delete does not
//! just drop the cached entry: it replaces it with a *fence*, a small record marked with
//! [`FENCE_KEY`] that lives [`FENCE_TTL_SECS`] seconds, whose version is one below the
//! version the write made (a delete's is `u64::MAX - 1`). A load reads a fence as a
//! miss. A fill adds its record where the cache holds nothing, or sets it over a fence
//! with a compare-and-set on the fence's version: only the version the fenced write made
//! passes, so a fill of an older version, or of a deleted session, is refused before
//! anyone can read it. The fill then re-reads the durable store as before. What is left:
//!
//! - a touch, a raw write and a write that failed still drop the entry without a fence
//!   (a touch keeps the version, and a failed write's version is unknown): for those the
//!   re-read closes the race, after the fact;
//! - a fill whose durable read began more than 5 seconds before its add was answered
//!   (a stalled process: the fence may have expired meanwhile) is taken back right
//!   after its add;
//! - a fence that cannot be placed (the cache fails, or fills win the race three times)
//!   makes the key suspect, as a failed invalidation does.
//!
//! A fence costs a write one more cache command than a plain invalidation (a delete and
//! an add).
//!
//! While the cache is unreachable from one process but reachable from another, that
//! other process may read an entry the first could not invalidate, until the repair
//! task's delete gets through (or the entry's TTL ends, or the cache restarts empty, as
//! the usual Redis and Memcached deployments for sessions do).
//!
//! ## Lazy loads
//!
//! The session handle's load ([`session_core::SessionStore::load_lazy`]) goes through
//! the same levels, counters, fills and invalidations as `load`, and keeps the record's
//! data encoded until a key is read ([`session_core::lazy`]) when the first level or the
//! cache answers: a request reading one key of a wide session decodes one value. A
//! cache entry is checked in full without being decoded
//! ([`session_core::LazyData::check`]: a walk over its keys and values, no allocation),
//! and one that would fail the whole decode, in its header or inside its data, is
//! dropped and the durable store read, as `load` does: a damaged cache entry never
//! costs a visitor the session the durable store still holds. With a first level, a
//! cache hit is decoded whole to fill it. A miss reads the durable store whole, since
//! the cache and the first level are refilled with a whole record.
//!
//! ## Outages
//!
//! Cache errors never fail a request: reads and writes carry on against the durable store,
//! degraded, and a warning is logged at most once per `log_interval_secs`. After a failure
//! the cache is skipped for `retry_interval_ms`, then tried again, so a returning cache is
//! used again without a restart.
//!
//! ## Every session of a user
//!
//! When the durable store keeps a per-user index ([`session_core::UserIndex`]), so does
//! this store: listings and counts are the durable store's, and each session it ends is
//! deleted through this store's own delete, which invalidates the cache entry (and the
//! first-level one) under the rules above. An ended session is therefore never read back
//! from the cache, by this process or another, and a request of it still in flight gets
//! `NotFound` from the durable store when it saves. Since a signed-in session can be
//! ended before its own create returns, creating one re-reads the durable store after
//! filling the cache (as a fill after a miss does) and drops the entry if the session is
//! already gone.
//!
//! ## Optional first level
//!
//! `l1_ttl_ms > 0` adds an in-process memory level in front of the cache. Writes through
//! this process invalidate it at once; writes by *other* processes are seen after at most
//! `l1_ttl_ms` (its staleness bound). Off by default.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use backend_cache::MemoryStore;
//! use backend_cached_db::CachedDbStore;
//! use session_core::{Record, SessionStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let cache = Arc::new(MemoryStore::new());
//! let durable = Arc::new(MemoryStore::new()); // a DbStore or FileStore in real life
//! let store = CachedDbStore::new(cache, durable.clone());
//! let key = store.create(&Record::with_ttl(Default::default(), 3600)).await?;
//! assert!(durable.exists(&key).await?);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod store;

pub use store::{CachedDbConfig, CachedDbStats, CachedDbStore, FENCE_KEY, FENCE_TTL_SECS};

use std::sync::Arc;

use session_core::{EngineContext, EngineRegistry, Result, SessionSettings, SessionStore};

impl CachedDbConfig {
    /// Builds the store from this configuration, the shared settings and its already
    /// built parts: the cache, the durable store and, used only when `l1_ttl_ms` is not
    /// zero, the in-process first level. The constructor the `cached_db` engine uses
    /// (it builds the parts from the nested engine configurations first);
    /// [`CachedDbStore::with_config`] is the lower-level one.
    ///
    /// The shared settings are taken for the same shape as every backend's `build`;
    /// the parts already apply them.
    pub async fn build(
        &self,
        _settings: &SessionSettings,
        cache: Arc<dyn SessionStore>,
        db: Arc<dyn SessionStore>,
        l1: Option<Arc<dyn SessionStore>>,
    ) -> Result<Arc<dyn SessionStore>> {
        self.validate()?;
        let l1_ttl = std::time::Duration::from_millis(self.l1_ttl_ms);
        let mut store = CachedDbStore::with_config(cache, db, self.clone());
        if let Some(l1) = l1.filter(|_| !l1_ttl.is_zero()) {
            store = store.with_l1(l1, l1_ttl);
        }
        Ok(Arc::new(store))
    }
}

/// Registers the `cached_db` engine.
///
/// ```toml
/// engine = "cached_db"
/// [cached_db]
/// l1_ttl_ms = 0            # in-process first level, off by default
///                          # (when on: [cached_db.l1], engine defaults to "memory")
/// [cached_db.cache]        # a complete engine config; engine defaults to "cache"
/// engine = "cache"
/// url = "redis://127.0.0.1:6379"   # shorthand for [cached_db.cache.cache] url = ...
/// [cached_db.db]           # a complete engine config; engine defaults to "db"
/// engine = "db"
/// [cached_db.db.db]        # the full form works too
/// url = "postgres://app@127.0.0.1/app"
/// ```
///
/// From the environment: `SESSION_CACHED_DB__CACHE__URL=redis://...` and
/// `SESSION_CACHED_DB__DB__URL=postgres://...`. Unknown keys anywhere in the nested
/// configurations are refused before anything is built, and shared settings (`codec`,
/// `expiry`, ...) are set at the top level only.
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        "cached_db",
        |ctx: EngineContext| async move {
            let options: CachedDbConfig = ctx.section("cached_db")?;
            options.validate().map_err(|e| ctx.locate(e))?;
            let cache = ctx.build_nested("cached_db.cache", "cache").await?;
            let db = ctx.build_nested("cached_db.db", "db").await?;
            let l1 = match options.l1_ttl_ms {
                0 => None,
                _ => Some(ctx.build_nested("cached_db.l1", "memory").await?),
            };
            options
                .build(&ctx.settings, cache, db, l1)
                .await
                .map_err(|e| ctx.locate(e))
        },
        |ctx: &EngineContext| {
            let options: CachedDbConfig = ctx.section("cached_db")?;
            options.validate().map_err(|e| ctx.locate(e))?;
            ctx.validate_nested("cached_db.cache", "cache")?;
            ctx.validate_nested("cached_db.db", "db")?;
            if options.l1_ttl_ms > 0 || ctx.config.contains("cached_db.l1") {
                ctx.validate_nested("cached_db.l1", "memory")?;
            }
            Ok(())
        },
    );
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
