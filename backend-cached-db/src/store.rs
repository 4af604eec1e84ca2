//! The composed store: durable writes, cache-first reads, invalidation with a suspect
//! set, and a circuit breaker for cache outages. See the crate docs for the rules.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde::de::IgnoredAny;
use session_core::users::{UserIndex, UserSession, index_of, validate_principal};
use session_core::{
    Capabilities, Error, Inserted, LazyRecord, RawAccess, Record, Result, SessionData, SessionKey,
    SessionStore, Timestamp,
};

/// The data key that marks a fence: a cache entry that stands for a durable write (see
/// the crate docs, "Fences"). A load reads a fence as a miss.
pub const FENCE_KEY: &str = "\u{0}cached_db.fence";

/// How long a fence stays in the cache, in seconds.
pub const FENCE_TTL_SECS: i64 = 10;

/// A fill whose durable read began longer ago than this is dropped right after its add:
/// the add may have reached the cache after the fence of a write made since expired.
const FILL_MAX_AGE: Duration = Duration::from_secs(5);

/// The version of the fence a delete leaves: no durable version is one above it, so no
/// fill can ever pass it.
const DELETED: u64 = u64::MAX - 1;

/// The fence of a write whose durable version is now `version + 1` (or of a delete).
fn fence_record(version: u64) -> Record {
    let mut data = SessionData::new();
    data.insert(FENCE_KEY.to_owned(), true.into());
    let mut fence = Record::with_ttl(data, FENCE_TTL_SECS);
    fence.version = version;
    fence
}

/// A cache entry that may be a fence.
trait Fenced {
    fn is_fence(&self) -> bool;
}

impl Fenced for Record {
    fn is_fence(&self) -> bool {
        self.data.contains_key(FENCE_KEY)
    }
}

impl Fenced for LazyRecord {
    fn is_fence(&self) -> bool {
        // An entry whose keys cannot be read is not served either: the load's own
        // check drops it.
        self.data.contains_key(FENCE_KEY).unwrap_or(false)
    }
}

/// Options of the `cached_db` engine (section `cached_db`; its `cache` and `db`
/// sub-sections are complete engine configurations).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CachedDbConfig {
    /// Lifetime of in-process first-level entries in milliseconds; 0 turns the level off.
    pub l1_ttl_ms: u64,
    /// How long the cache is skipped after a failure before it is tried again.
    pub retry_interval_ms: u64,
    /// At most one "cache unavailable" warning per this many seconds.
    pub log_interval_secs: u64,
    /// Most keys remembered as suspect; beyond it every read bypasses the cache.
    pub max_suspects: usize,
    /// The nested cache engine configuration (read by the registry).
    pub cache: Option<IgnoredAny>,
    /// The nested durable engine configuration (read by the registry).
    pub db: Option<IgnoredAny>,
    /// The nested first-level engine configuration (default `memory`).
    pub l1: Option<IgnoredAny>,
}

impl Default for CachedDbConfig {
    fn default() -> Self {
        CachedDbConfig {
            l1_ttl_ms: 0,
            retry_interval_ms: 1000,
            log_interval_secs: 30,
            max_suspects: 1_000_000,
            cache: None,
            db: None,
            l1: None,
        }
    }
}

impl CachedDbConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.max_suspects == 0 {
            return Err(Error::config(
                "cached_db.max_suspects",
                "must be at least 1",
            ));
        }
        if self.log_interval_secs == 0 {
            return Err(Error::config(
                "cached_db.log_interval_secs",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

/// Counters of a [`CachedDbStore`], for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedDbStats {
    /// Loads answered by the cache (or the first level).
    pub hits: u64,
    /// Loads that went to the durable store.
    pub misses: u64,
    /// Cache operations that failed.
    pub cache_errors: u64,
    /// Keys currently suspect (their cache entry may be stale).
    pub suspects: u64,
}

#[derive(Default)]
struct Health {
    last_log: Option<Instant>,
    suppressed: u64,
}

/// A cache store in front of a durable store.
pub struct CachedDbStore {
    cache: Arc<dyn SessionStore>,
    db: Arc<dyn SessionStore>,
    l1: Option<(Arc<dyn SessionStore>, i64)>,
    retry_interval: Duration,
    log_interval: Duration,
    /// Keys whose cache entry may be stale, and the task that drops those entries.
    suspects: Arc<Suspects>,
    /// Logging state of outages (touched only on failures and recoveries).
    health: Mutex<Health>,
    /// Origin of `skip_until_ns`.
    epoch: Instant,
    /// Nanoseconds after `epoch` until which the cache is skipped; 0 when healthy.
    /// An atomic, so the healthy path of every request takes no lock.
    skip_until_ns: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    cache_errors: AtomicU64,
}

impl fmt::Debug for CachedDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDbStore")
            .field("cache", &self.cache)
            .field("db", &self.db)
            .field("l1", &self.l1.as_ref().map(|(s, ttl)| (s, ttl)))
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CachedDbStore {
    /// `cache` in front of `db`, with default options.
    pub fn new(cache: Arc<dyn SessionStore>, db: Arc<dyn SessionStore>) -> Self {
        Self::with_config(cache, db, CachedDbConfig::default())
    }

    /// `cache` in front of `db`, with explicit options. The first level is added with
    /// [`CachedDbStore::with_l1`].
    pub fn with_config(
        cache: Arc<dyn SessionStore>,
        db: Arc<dyn SessionStore>,
        config: CachedDbConfig,
    ) -> Self {
        CachedDbStore {
            suspects: Arc::new(Suspects::new(
                cache.clone(),
                config.max_suspects.max(1),
                Duration::from_millis(config.retry_interval_ms),
            )),
            cache,
            db,
            l1: None,
            retry_interval: Duration::from_millis(config.retry_interval_ms),
            log_interval: Duration::from_secs(config.log_interval_secs.max(1)),
            health: Mutex::new(Health::default()),
            epoch: Instant::now(),
            skip_until_ns: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            cache_errors: AtomicU64::new(0),
        }
    }

    /// Adds an in-process first level (typically a memory store) whose entries live at
    /// most `ttl`: the staleness bound for writes made by other processes.
    pub fn with_l1(mut self, l1: Arc<dyn SessionStore>, ttl: Duration) -> Self {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.l1 = (ms > 0).then_some((l1, ms));
        self
    }

    /// The cache store.
    pub fn cache(&self) -> &Arc<dyn SessionStore> {
        &self.cache
    }

    /// The durable store.
    pub fn durable(&self) -> &Arc<dyn SessionStore> {
        &self.db
    }

    /// Current counters.
    pub fn stats(&self) -> CachedDbStats {
        CachedDbStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            cache_errors: self.cache_errors.load(Ordering::Relaxed),
            suspects: self.suspects.count.load(Ordering::Relaxed) as u64,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn cache_usable(&self) -> bool {
        let until = self.skip_until_ns.load(Ordering::Relaxed);
        until == 0 || self.now_ns() >= until
    }

    fn cache_failed(&self, op: &str, err: &Error) {
        self.cache_errors.fetch_add(1, Ordering::Relaxed);
        let until = self
            .now_ns()
            .saturating_add(u64::try_from(self.retry_interval.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.skip_until_ns.store(until, Ordering::Relaxed);
        let now = Instant::now();
        let mut h = lock(&self.health);
        if h.last_log
            .is_none_or(|t| now.duration_since(t) >= self.log_interval)
        {
            tracing::warn!(
                cache = self.cache.engine(),
                op,
                error = %err,
                suppressed = h.suppressed,
                "session cache unavailable; serving from the durable store (degraded)"
            );
            h.last_log = Some(now);
            h.suppressed = 0;
        } else {
            h.suppressed += 1;
        }
    }

    fn cache_ok(&self) {
        if self.skip_until_ns.load(Ordering::Relaxed) != 0
            && self.skip_until_ns.swap(0, Ordering::Relaxed) != 0
        {
            tracing::info!(
                cache = self.cache.engine(),
                "session cache is answering again"
            );
        }
    }

    fn is_suspect(&self, key: &SessionKey) -> bool {
        self.suspects.contains(key)
    }

    fn mark_suspect(&self, key: &SessionKey) {
        Suspects::mark(&self.suspects, key);
    }

    /// What a write's invalidation or fence does first: drops the first-level entry,
    /// and returns the key's suspect mark when the cache may be written (the key is
    /// marked suspect when it may not).
    async fn before_cache_write(&self, key: &SessionKey) -> Option<u64> {
        if let Some((l1, _)) = &self.l1 {
            let _ = l1.delete(key).await;
        }
        if !self.cache_usable() {
            self.mark_suspect(key);
            return None;
        }
        Some(self.suspects.mark_of(key))
    }

    /// Drops the cached entry (and the first-level one); remembers the key as suspect
    /// when the cache cannot be reached.
    async fn invalidate(&self, key: &SessionKey) {
        let Some(mark) = self.before_cache_write(key).await else {
            return;
        };
        match self.cache.delete(key).await {
            Ok(_) => {
                self.cache_ok();
                self.suspects.clear(key, mark);
            }
            Err(e) => {
                self.cache_failed("invalidate", &e);
                self.mark_suspect(key);
            }
        }
    }

    /// Replaces the cached entry with a fence of `version` (see the crate docs,
    /// "Fences"), after a durable write made version `version + 1` (or deleted the
    /// record: [`DELETED`]). Drops the first-level entry; remembers the key as suspect
    /// when the cache cannot be reached or the fence cannot be placed.
    async fn fence(&self, key: &SessionKey, version: u64) {
        let Some(mark) = self.before_cache_write(key).await else {
            return;
        };
        let fence = fence_record(version);
        // A delete, then an add: a fill that slips in between is deleted again (it is
        // a reader's, and its own check would drop it too).
        for _ in 0..3 {
            let placed = match self.cache.delete(key).await {
                Ok(_) => self.cache.insert_new(key, &fence).await,
                Err(e) => Err(e),
            };
            match placed {
                Ok(Inserted::Created) => {
                    self.cache_ok();
                    self.suspects.clear(key, mark);
                    return;
                }
                Ok(Inserted::KeyTaken) => continue,
                Err(e) => {
                    self.cache_failed("fence", &e);
                    self.mark_suspect(key);
                    return;
                }
            }
        }
        // Fills keep winning the race: the entry may be one of them. The repair task
        // deletes it and keeps this process's reads off the cache until then.
        self.mark_suspect(key);
    }

    async fn fill_l1(&self, key: &SessionKey, record: &Record) {
        if let Some((l1, ttl)) = &self.l1 {
            let mut r = record.clone();
            let cap =
                Timestamp::from_unix_millis(Timestamp::now().as_unix_millis().saturating_add(*ttl));
            r.expires_at = r.expires_at.min(cap);
            let _ = l1.delete(key).await;
            let _ = l1.insert_new(key, &r).await;
        }
    }

    /// The cache's answer to a load of `key` (`load` runs it: the cache's whole or lazy
    /// load), when the cache may be trusted for it: not while it is skipped after a
    /// failure, and not for a suspect key, whose entry is dropped first. An undecodable
    /// entry is dropped, not served or propagated; a failure opens the breaker.
    async fn read_cache<R, F>(&self, key: &SessionKey, load: impl FnOnce() -> F) -> CacheRead<R>
    where
        R: Fenced,
        F: Future<Output = Result<Option<R>>>,
    {
        if !self.cache_usable() {
            return CacheRead::Miss { may_fill: false };
        }
        if self.is_suspect(key) {
            // Clear the possibly stale entry before trusting the cache again.
            self.invalidate(key).await;
            return CacheRead::Miss {
                may_fill: !self.is_suspect(key),
            };
        }
        match load().await {
            // A fence: a write was made since the entry was filled; the fill after this
            // miss may pass it only with the version that write made.
            Ok(Some(r)) if r.is_fence() => {
                self.cache_ok();
                CacheRead::Miss { may_fill: true }
            }
            Ok(Some(r)) => {
                self.cache_ok();
                CacheRead::Hit(r)
            }
            Ok(None) => CacheRead::Miss { may_fill: true },
            Err(Error::Codec(_)) => {
                self.invalidate(key).await;
                CacheRead::Miss { may_fill: false }
            }
            Err(e) => {
                self.cache_failed("load", &e);
                CacheRead::Miss { may_fill: false }
            }
        }
    }

    /// A load the cache did not answer: counted as a miss, read from the durable store,
    /// and filled into the cache (when `may_fill`) and the first level.
    async fn read_durable(&self, key: &SessionKey, may_fill: bool) -> Result<Option<Record>> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let read_at = Instant::now();
        let record = self.db.load(key).await?;
        if let Some(r) = &record {
            // A fill that found the durable store moved on since its read keeps the
            // record out of the first level too: this request answers with what it read,
            // the next one reads again.
            let current = !may_fill || self.fill_cache(key, r, read_at).await;
            if current {
                self.fill_l1(key, r).await;
            }
        }
        Ok(record)
    }

    /// Fills the cache after a miss with `record`, read from the durable store at
    /// `read_at`: added where the cache holds nothing, or set over the fence of the
    /// write that made this version (a compare-and-set on the fence's version, one
    /// below the record's). A fence of a later write or of a delete refuses it (see
    /// the crate docs, "Fences"). Then re-reads the durable version: if a write slipped
    /// in between anyway, the fill is taken back ([`CachedDbStore::retract_fill`]).
    ///
    /// Returns `false` when the record is known not to be the durable version any more
    /// (the re-read found another, or the read is too old to tell).
    async fn fill_cache(&self, key: &SessionKey, record: &Record, read_at: Instant) -> bool {
        let filled = match self.cache.insert_new(key, record).await {
            Ok(Inserted::Created) => Ok(true),
            Ok(Inserted::KeyTaken) => match record.version.checked_sub(1) {
                Some(fence) => match self.cache.update(key, record, Some(fence)).await {
                    Ok(_) => Ok(true),
                    Err(Error::Conflict { .. } | Error::NotFound) => Ok(false),
                    Err(e) => Err(e),
                },
                None => Ok(false),
            },
            Err(e) => Err(e),
        };
        match filled {
            Ok(true) => {
                self.cache_ok();
                if read_at.elapsed() > FILL_MAX_AGE {
                    self.retract_fill(key, record.version).await;
                    return false;
                }
                let current = self.db.load(key).await;
                let same = matches!(&current, Ok(Some(r)) if r.version == record.version);
                if !same {
                    self.retract_fill(key, record.version).await;
                }
                same
            }
            Ok(false) => {
                self.cache_ok();
                true
            }
            // The write may still reach the cache after its deadline, later than a
            // writer's fence: the key is suspect until a delete sent after it has been
            // answered.
            Err(e) => {
                self.cache_failed("fill", &e);
                self.mark_suspect(key);
                true
            }
        }
    }

    /// Takes back this process's fill of version `filled`: replaces the entry with a
    /// fence, with a compare-and-set on `filled`, so only while the entry is still that
    /// fill. A plain delete here would also drop what a writer put in its place since:
    /// the writer's fence, which then no longer refuses the fill of a reader slower than
    /// this one (its durable read older than the write), and that fill would be served
    /// until its own re-read; or a newer fill over that fence, which is the durable
    /// version. The update makes the fence's version `filled + 1`, so for the fence's
    /// life ([`FENCE_TTL_SECS`]) a fill passes it only with version `filled + 2`, and
    /// loads of this key read the durable store. Drops the first-level entry; a cache
    /// that fails makes the key suspect, as a failed invalidation does.
    async fn retract_fill(&self, key: &SessionKey, filled: u64) {
        if self.before_cache_write(key).await.is_none() {
            return;
        }
        let fence = fence_record(filled.saturating_add(1));
        match self.cache.update(key, &fence, Some(filled)).await {
            // Replaced; or the entry is no longer this fill (a fence, a newer fill, or
            // nothing), and stays.
            Ok(_) | Err(Error::Conflict { .. } | Error::NotFound) => self.cache_ok(),
            Err(e) => {
                self.cache_failed("retract fill", &e);
                self.mark_suspect(key);
            }
        }
    }
}

/// What the cache answered a load ([`CachedDbStore::read_cache`]).
enum CacheRead<R> {
    /// The cached record.
    Hit(R),
    /// Not answered: the durable store is read, and the cache is filled when `may_fill`
    /// (it answered that it holds no entry, or a suspect entry was dropped).
    Miss { may_fill: bool },
}

#[async_trait]
impl SessionStore for CachedDbStore {
    fn engine(&self) -> &str {
        "cached_db"
    }

    fn capabilities(&self) -> Capabilities {
        let db = self.db.capabilities();
        let cache = self.cache.capabilities();
        Capabilities::none()
            // Expiry, clear_expired and count are the database's.
            .native_ttl(db.native_ttl)
            .durable(db.durable)
            .cross_process(db.cross_process && cache.cross_process)
            .compare_and_set(db.compare_and_set)
            .listing(db.listing)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let out = self.db.insert_new(key, record).await?;
        if out == Inserted::Created {
            if self.cache_usable() && !self.is_suspect(key) {
                match self.cache.insert_new(key, record).await {
                    Ok(Inserted::Created) => {
                        self.cache_ok();
                        // A signed-in session can be ended through the user index as soon
                        // as the durable store holds it, before this create returns: if
                        // that delete's invalidation ran before the fill above, the entry
                        // would outlive the session. Re-read, as a fill after a miss does.
                        if record.principal().is_some() {
                            let current = self.db.load(key).await;
                            if !matches!(&current, Ok(Some(r)) if r.version == record.version) {
                                self.invalidate(key).await;
                            }
                        }
                    }
                    // A leftover entry under a brand-new key: drop it.
                    Ok(Inserted::KeyTaken) => self.invalidate(key).await,
                    Err(e) => {
                        self.cache_failed("create", &e);
                        self.mark_suspect(key);
                    }
                }
            } else {
                self.invalidate(key).await;
            }
        }
        Ok(out)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        if let Some((l1, _)) = &self.l1
            && let Ok(Some(r)) = l1.load(key).await
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(r));
        }
        let may_fill = match self.read_cache(key, || self.cache.load(key)).await {
            CacheRead::Hit(r) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.fill_l1(key, &r).await;
                return Ok(Some(r));
            }
            CacheRead::Miss { may_fill } => may_fill,
        };
        self.read_durable(key, may_fill).await
    }

    /// [`SessionStore::load`], the data left encoded until a key is read where the level
    /// that answers keeps it so ([`session_core::lazy`]): the same levels in the same
    /// order, the same counters, fills and invalidations.
    ///
    /// - A first-level hit is that store's lazy load.
    /// - A cache hit is the cache's lazy load, its data checked in full without being
    ///   decoded ([`session_core::LazyData::check`]): an entry that would fail the whole
    ///   decode, in its header or inside its data, is dropped and the durable store read,
    ///   as `load` does, so a damaged cache entry never costs a visitor the session the
    ///   durable store still holds. With a first level, the hit is decoded whole to
    ///   fill it, and an entry that fails that decode is dropped the same way.
    /// - A miss reads the durable store whole, as `load` does: refilling the cache and
    ///   the first level writes a whole record.
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        if let Some((l1, _)) = &self.l1
            && let Ok(Some(r)) = l1.load_lazy(key).await
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(r));
        }
        let may_fill = match self.read_cache(key, || self.cache.load_lazy(key)).await {
            CacheRead::Hit(r) => {
                let sound = match &self.l1 {
                    // Checked in full, not decoded: a value damaged inside the cached
                    // data would otherwise be found only when read, and the session
                    // handle would then start a new session while the durable store
                    // holds a sound copy.
                    None => r.data.check().map(|()| r),
                    // Decoded whole, to fill the first level.
                    Some(_) => match r.decode() {
                        Ok(whole) => {
                            self.fill_l1(key, &whole).await;
                            Ok(LazyRecord::from(whole))
                        }
                        Err(e) => Err(e),
                    },
                };
                match sound {
                    Ok(r) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(r));
                    }
                    // As `load`'s cache read of an undecodable entry: dropped, not served.
                    Err(_) => {
                        self.invalidate(key).await;
                        false
                    }
                }
            }
            CacheRead::Miss { may_fill } => may_fill,
        };
        Ok(self
            .read_durable(key, may_fill)
            .await?
            .map(LazyRecord::from))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let out = self.db.update(key, record, expected_version).await;
        match &out {
            // Fenced: a fill of an older version can no longer land.
            Ok(version) if *version > 0 => self.fence(key, version - 1).await,
            // Invalidated even on failure: a timed-out write may still have committed.
            _ => self.invalidate(key).await,
        }
        out
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let out = self.db.delete(key).await;
        match &out {
            // Nothing was stored: nothing a fill could bring back.
            Ok(false) => self.invalidate(key).await,
            // Deleted, or maybe (a timed-out delete may still have committed): fenced
            // for good.
            _ => self.fence(key, DELETED).await,
        }
        out
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let out = self.db.touch(key, expires_at).await;
        self.invalidate(key).await;
        out
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        // Through a load: a fence exists in the cache but stands for no session.
        if self.cache_usable() && !self.is_suspect(key) {
            match self.cache.load_lazy(key).await {
                Ok(Some(r)) if !r.is_fence() => return Ok(true),
                // A damaged entry answers nothing; the durable store does.
                Ok(_) | Err(Error::Codec(_)) => {}
                Err(e) => self.cache_failed("exists", &e),
            }
        }
        self.db.exists(key).await
    }

    async fn clear_expired(&self) -> Result<u64> {
        self.db.clear_expired().await
    }

    async fn count(&self) -> Result<u64> {
        self.db.count().await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.db.list(after, limit).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        self.db.raw().map(|_| self as &dyn RawAccess)
    }

    /// The durable store's: the schema, the expiry sweep and the statistics are the
    /// database's (the cache expires its entries by itself, and holds nothing the
    /// database does not).
    fn maintenance(&self) -> Option<&dyn session_core::Maintenance> {
        self.db.maintenance()
    }

    /// Present when the durable store keeps an index: listings are the durable store's
    /// (the cache holds nothing the durable store does not), and every session ended
    /// through it is deleted through this store, so its cache entry is invalidated too.
    fn user_index(&self) -> Option<&dyn UserIndex> {
        self.db.user_index().map(|_| self as &dyn UserIndex)
    }
}

/// The durable store's index for listing; ending goes through [`CachedDbStore`]'s own
/// delete (durable delete, then invalidation of the cache entry, with the suspect-set
/// repair when the cache cannot be reached), so no process keeps reading an ended
/// session from the cache, and a request of it still in flight gets `NotFound` from the
/// durable store when it saves.
#[async_trait]
impl UserIndex for CachedDbStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        validate_principal(principal)?;
        index_of(self.db.as_ref())?
            .sessions_of(principal, current)
            .await
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        validate_principal(principal)?;
        let sessions = index_of(self.db.as_ref())?
            .sessions_of(principal, None)
            .await?;
        match sessions.into_iter().find(|s| s.id == id) {
            Some(s) => self.delete(&s.stored_key).await,
            None => Ok(false),
        }
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        validate_principal(principal)?;
        let sessions = index_of(self.db.as_ref())?
            .sessions_of(principal, None)
            .await?;
        let mut ended = 0;
        for s in sessions {
            if Some(&s.stored_key) != keep && self.delete(&s.stored_key).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        validate_principal(principal)?;
        index_of(self.db.as_ref())?.count_of(principal).await
    }
}

/// Raw access goes to the durable store, and drops the cached entry so the bytes written
/// are the bytes read.
#[async_trait]
impl RawAccess for CachedDbStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let raw = self
            .db
            .raw()
            .ok_or_else(|| Error::unsupported(self.db.engine(), "raw access"))?;
        let out = raw.put_raw(key, bytes, expires_at).await;
        self.invalidate(key).await;
        out
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let raw = self
            .db
            .raw()
            .ok_or_else(|| Error::unsupported(self.db.engine(), "raw access"))?;
        raw.get_raw(key).await
    }
}

/// Keys whose cache entry may be stale in this process's view, each with the number of
/// the mark that made it suspect, and the repair task that deletes those entries.
///
/// A key becomes suspect when its invalidation failed, or when a cache write of it
/// (a fill, a create) failed: a command that timed out on the client may still reach
/// the cache later, after a writer in another process invalidated the entry, and leave
/// an old record there that every process would read. Reads of a suspect key in this
/// process bypass the cache; the repair task keeps deleting the entries of suspect keys
/// (in the background, never on a request's path, backing off to `retry_interval`
/// while the cache fails) until a delete is answered. Commands to one key travel over
/// one connection in order, so an answered delete was applied after any late write
/// that was sent before it; from then on the entry is fresh for every process.
///
/// A key is cleared only if it was not marked again while its delete was in flight
/// (the mark number): a write whose invalidation failed meanwhile keeps it suspect.
struct Suspects {
    cache: Arc<dyn SessionStore>,
    keys: Mutex<HashMap<SessionKey, u64>>,
    /// `keys.len()`, readable without the lock (the healthy path takes no lock).
    count: AtomicUsize,
    /// More than `max` keys were marked: every read bypasses the cache until restart.
    overflowed: AtomicBool,
    max: usize,
    /// Numbers the marks.
    marks: AtomicU64,
    /// A repair task is running.
    repairing: AtomicBool,
    retry_interval: Duration,
}

/// Deletes per repair round before the task yields.
const REPAIR_BATCH: usize = 64;
/// First wait of the repair task after a failed delete; doubles up to `retry_interval`.
const REPAIR_BACKOFF: Duration = Duration::from_millis(20);

impl Suspects {
    fn new(cache: Arc<dyn SessionStore>, max: usize, retry_interval: Duration) -> Self {
        Suspects {
            cache,
            keys: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            max,
            marks: AtomicU64::new(0),
            repairing: AtomicBool::new(false),
            retry_interval,
        }
    }

    fn contains(&self, key: &SessionKey) -> bool {
        self.overflowed.load(Ordering::Relaxed)
            || (self.count.load(Ordering::Relaxed) > 0 && lock(&self.keys).contains_key(key))
    }

    /// The current mark of `key` (0 when it is not suspect).
    fn mark_of(&self, key: &SessionKey) -> u64 {
        if self.count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        lock(&self.keys).get(key).copied().unwrap_or(0)
    }

    fn mark(this: &Arc<Self>, key: &SessionKey) {
        {
            let mut keys = lock(&this.keys);
            if keys.len() >= this.max && !keys.contains_key(key) {
                if !this.overflowed.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        max = this.max,
                        "too many session cache entries could not be invalidated; \
                         every read now bypasses the cache until restart"
                    );
                }
                return;
            }
            let mark = this.marks.fetch_add(1, Ordering::Relaxed) + 1;
            keys.insert(key.clone(), mark);
            this.count.store(keys.len(), Ordering::Relaxed);
        }
        Self::ensure_repair(this);
    }

    /// Clears `key` if its mark is still `mark` (0: it was not suspect when its delete
    /// was sent, so a mark made since is newer and stays).
    fn clear(&self, key: &SessionKey, mark: u64) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut keys = lock(&self.keys);
        if keys.get(key).is_some_and(|m| *m == mark) {
            keys.remove(key);
            self.count.store(keys.len(), Ordering::Relaxed);
        }
    }

    /// Starts the repair task unless one runs (outside a tokio runtime, suspect keys are
    /// cleared by their next read, as before the task existed).
    fn ensure_repair(this: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if this.repairing.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(Self::repair(Arc::downgrade(this)));
    }

    /// Deletes the entries of suspect keys until none is left; ends when the store is
    /// dropped.
    async fn repair(this: Weak<Self>) {
        let mut backoff = REPAIR_BACKOFF;
        loop {
            let Some(s) = this.upgrade() else { return };
            let batch: Vec<(SessionKey, u64)> = lock(&s.keys)
                .iter()
                .take(REPAIR_BATCH)
                .map(|(k, m)| (k.clone(), *m))
                .collect();
            if batch.is_empty() {
                s.repairing.store(false, Ordering::Release);
                // A key marked after the snapshot but before the flag was lowered saw
                // a running task and did not start one: take it over.
                if s.count.load(Ordering::Acquire) == 0 || s.repairing.swap(true, Ordering::AcqRel)
                {
                    return;
                }
                continue;
            }
            let mut failed = false;
            for (key, mark) in batch {
                match s.cache.delete(&key).await {
                    Ok(_) => s.clear(&key, mark),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let wait = if failed {
                let w = backoff;
                backoff = (backoff * 2).min(s.retry_interval.max(REPAIR_BACKOFF));
                Some(w)
            } else {
                backoff = REPAIR_BACKOFF;
                None
            };
            drop(s);
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => tokio::task::yield_now().await,
            }
        }
    }
}
