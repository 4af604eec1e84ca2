//! The in-process store (engine `memory`).
//!
//! Records live in a [`quick_cache`] cache (`quick_cache::sync::Cache`): a sharded,
//! bounded concurrent map with a scan-resistant eviction policy. It is used rather than
//! own code because it gives, with O(1) work per operation and about the memory of a
//! plain hash map, the two things a bounded session store needs and a plain concurrent
//! map does not:
//!
//! - **A bound that is cheap to keep and never overshoots.** `max_entries` is the cache's
//!   capacity, split evenly over its shards. An insert into a full shard evicts within
//!   that insert, O(1) amortised, never a walk over the store, so the store never holds
//!   more than `max_entries` sessions, not even for an instant (BENCHMARKS.md, "Memory
//!   engine at its bound").
//! - **Scan resistance.** The policy is a variant of CLOCK-Pro, close to S3-FIFO. A new
//!   session enters a small probationary section (a tenth of the store here, see
//!   [`PROBATION`]); a session read again while there is promoted to the protected
//!   section when the clock reaches it. When the store is full, the victim is taken from
//!   the probationary section first: a flood of one-request visitors (crawlers,
//!   scanners, a burst of anonymous traffic) displaces its own kind, not the sessions of
//!   the users who come back. A key evicted recently and seen again (the cache keeps the
//!   hashes of recent victims) goes straight to the protected section.
//!
//! **What a visitor sees when the store is full.** A session evicted to make room is
//! simply absent: the next request carrying its cookie loads nothing and the visitor
//! gets a fresh, empty session (a logged-in user is logged out), exactly as after the
//! session expired. Nothing fails and no error is returned; the write that created the
//! session reported success. Size `max_entries` above the peak number of live sessions
//! so this only happens under abuse (`Capabilities::may_evict` says the store may drop
//! live records).
//!
//! **Expiry.** Reads compare each record's deadline with the wall clock, so an expired
//! record is never returned. Expired records are not dropped by a timer: they hold room
//! until [`SessionStore::clear_expired`] removes them (a sweep of every shard, each
//! locked in turn; the `[cleanup]` background task of `session_core::cleanup` runs it
//! for an application), or until the bound evicts them: an expired session is never read
//! again, so it loses its place as the policy's clock passes it, like any session not
//! in use. Memory stays within the bound either way, and the sweep frees it early. A
//! timer per session (moka's timer wheel, which an earlier version of this engine used)
//! costs work on every write and memory for every session (BENCHMARKS.md, "The memory
//! engine on quick_cache").
//!
//! **Atomicity.** The cache holds one small slot per session (the current record
//! behind a mutex); `update`, `touch` and `delete` change the slot under
//! its lock, so an update is compare-and-set on the version and never resurrects a
//! session deleted meanwhile (delete empties the slot before anything else can see it).
//! Only `insert_new` inserts slots, under a striped create lock: create-if-absent,
//! replacing only an expired or deleted slot. The sweep of `clear_expired` empties an
//! expired slot under its lock before removing it, so an update in flight finds it
//! gone. Lock order: a cache shard, then a slot; no code takes a shard's lock while it
//! holds a slot's.
//!
//! **Lookups.** A read takes its shard's read lock, finds the slot and marks it used (one
//! relaxed atomic store), and clones its `Arc`. Keys are hashed with the cache's default
//! seeded hasher (`ahash`), per store.
//!
//! **Records are kept encoded.** A slot holds the record as the compact codec
//! ([`BincodeCodec`]) writes it, one allocation, beside the few fields the store reads
//! on every call (deadline, version, principal). The `SessionStore` trait takes
//! `&Record` and returns an owned `Record`, so a store must copy a record in on every
//! write and out on every load whatever it keeps. A decoded copy (a map of a dozen keys
//! and strings) is one allocation per key and string, to make and to free, and it held
//! about twice its encoded size in memory; an encoded copy is one allocation, freed in
//! one call when the record is replaced or removed. The bytes are reference-counted
//! (`Arc<[u8]>`): the session handle's load ([`SessionStore::load_lazy`]) shares them
//! and decodes only the keys its request reads ([`session_core::lazy`]), and a whole
//! [`SessionStore::load`] decodes them (about the cost of the deep copy it replaces).
//! A record of [`KeyIndex::MIN_KEYS`] keys or more keeps its key index after it (4 bytes
//! a key, built once per write), so that a read of one key of a wide session is a binary
//! search, not a walk over the keys before it.
//! Checks of a deadline, a version or a principal (`exists`,
//! `touch`, the compare-and-set of `update`, the user index) never decode, and a touch
//! changes the deadline in place without copying the bytes. `BENCHMARKS.md` ("As the
//! store grows") has the resident memory per session.
//!
//! `max_encoded_size` holds as on every other engine: a store built from configuration
//! (or given [`MemoryStore::with_size_limit`]) refuses a write whose encoding with the
//! configured codec would exceed it with `CodecError::TooLarge`. To keep writes cheap
//! the record is measured with that codec only when a quick upper bound of its encoded
//! size (a walk over the values, without encoding) exceeds the limit, which real
//! sessions almost never do.
//!
//! **Every session of a user** ([`UserIndex`]). Beside the cache, a concurrent map
//! (`dashmap`, sharded) from each principal to the keys of its signed-in sessions. The
//! entry is added before the record is written (`insert_new` under the key's create
//! stripe, `update` under the slot's lock, and only when the principal changes), so a
//! live record bound to a principal is always in that principal's set. Entries whose
//! record is gone (deleted, expired, evicted) or now bound to another principal
//! (or to none) are removed when the principal's sessions are listed, on the principal's
//! next sign-in, by `delete`, and by [`SessionStore::clear_expired`] (a sweep of the
//! whole index, for principals who never come back). A removal re-checks the record
//! under the key's create stripe and the slot's lock, the locks every write of that key
//! holds while it adds its entry, so no write can slip in between the check and the
//! removal. Anonymous records never touch the index: their writes take no extra lock.
//! Listing costs one cache read per entry of the principal, never a walk over the store.
//! Ending a session empties its slot under the same locks, as `delete` does, so an
//! update still in flight gets `Error::NotFound` and cannot write it back.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter};
use serde::Deserialize;
use session_core::codec::{ENCRYPTION_OVERHEAD, MAX_DEPTH};
use session_core::metrics::HostedMetrics;
use session_core::store::create_now_with;
use session_core::users::{session_id, sort_oldest_first, validate_principal};
use session_core::{
    BincodeCodec, Capabilities, Codec, EncodedBytes, EngineRegistry, Error, ImmediateStore,
    Inserted, KeyIndex, LazyRecord, Record, Result, SessionKey, SessionStore, Timestamp, UserIndex,
    UserSession, async_trait,
};

/// Options of the `memory` engine (config section `memory`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Most sessions held at once. When full, a new session displaces one that was
    /// not read again since it was stored, before any session in use (see the module
    /// docs).
    pub max_entries: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: 1_000_000,
        }
    }
}

/// The share of the store kept for new sessions not read again yet (the cache's cold
/// section; the rest is the protected, hot one). quick_cache's default is 3 %, tuned for
/// caches where a new item that matters is read again soon. A new session's second
/// request may come seconds later, so new sessions get a tenth of the store: under a
/// flood as large as the store, a newcomer is evicted only after a tenth of the store's
/// worth of other newcomers arrived before its second request.
pub const PROBATION: f64 = 0.1;

/// Fewest sessions per shard: smaller stores use fewer shards (as quick_cache would).
const MIN_SHARD_ENTRIES: usize = 32;

/// The cache of slots: unit weights (the bound counts sessions), the cache's seeded
/// hasher, and [`Evictions`] to count the sessions dropped for the bound.
type Slots = Cache<SessionKey, Arc<Slot>, UnitWeighter, DefaultHashBuilder, Evictions>;

/// In-process session store.
pub struct MemoryStore {
    cache: Slots,
    /// Serialises `insert_new` per key (by stripe): the only writer of new slots.
    create_locks: Box<[Mutex<()>]>,
    max_entries: usize,
    evictions: Arc<AtomicU64>,
    size_limit: Option<SizeLimit>,
    /// Principal -> keys of its signed-in sessions (a superset of the live ones).
    users: DashMap<Box<str>, HashSet<SessionKey>>,
    /// The metrics layer's instruments, once a layer arms them: each immediate call is
    /// measured inside the engine, with no layer between it and the caller.
    metrics: HostedMetrics,
}

impl fmt::Debug for MemoryStore {
    // The cache's own `Debug` would list its shards; a store of a million sessions would
    // print its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.len())
            .field("max_entries", &self.max_entries)
            .field("evictions", &self.evictions())
            .field("size_limit", &self.size_limit)
            .field("principals", &self.users.len())
            .finish()
    }
}

/// Stripes of the create lock: enough that two creates rarely share one on a few cores.
const CREATE_STRIPES: usize = 64;

/// The codec of the records slots keep (no size limit of its own: the store's limit is
/// checked with the configured codec before a record is stored).
static COMPACT: LazyLock<BincodeCodec> = LazyLock::new(|| BincodeCodec::new(usize::MAX));

/// A record as its slot keeps it (see the module docs, "Records are kept encoded"): the
/// encoded record, and beside it what the store checks on every call. A touch moves only
/// `expires_at`, and an update stores the caller's record under the store's next
/// version: these two fields, not the encoded ones, are the record's.
#[derive(Debug)]
struct Stored {
    /// Shared with every lazy load of this version ([`session_core::lazy`]): a load
    /// copies nothing, and an update replaces the bytes rather than changing them. The
    /// record as the compact codec wrote it or, for a record of
    /// [`KeyIndex::MIN_KEYS`] keys or more, `INDEXED`, the record's length (4 bytes,
    /// little-endian), the record, then its [`KeyIndex`].
    bytes: Arc<[u8]>,
    expires_at: Timestamp,
    version: u64,
    principal: Option<Box<str>>,
}

/// The first byte of a slot's bytes that carry a key index (a compact record starts
/// with its own magic byte, `0xB1`).
const INDEXED: u8 = 0x1D;

impl Stored {
    /// `record`, encoded, stored under `version`. A record with many keys keeps its key
    /// index beside it, so that a lookup is a binary search rather than a walk.
    fn encode(record: &Record, version: u64) -> Result<Self> {
        let encoded = COMPACT.encode(record).map_err(Error::Codec)?;
        let index = (record.data.len() >= KeyIndex::MIN_KEYS)
            .then(|| KeyIndex::build(&encoded))
            .flatten();
        let bytes = match (index, u32::try_from(encoded.len())) {
            (Some(index), Ok(len)) => {
                let mut b = Vec::with_capacity(5 + encoded.len() + index.len());
                b.push(INDEXED);
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(&encoded);
                b.extend_from_slice(&index);
                Arc::from(b)
            }
            _ => Arc::from(encoded),
        };
        Ok(Stored {
            bytes,
            expires_at: record.expires_at,
            version,
            principal: record.principal().map(Box::from),
        })
    }

    /// Where the record lies in `bytes`, and whether its key index follows it.
    fn record_range(&self) -> (std::ops::Range<usize>, bool) {
        match &self.bytes[..] {
            [INDEXED, a, b, c, d, ..] => {
                let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
                (5..5 + len, true)
            }
            _ => (0..self.bytes.len(), false),
        }
    }

    /// The record's bytes.
    fn record(&self) -> &[u8] {
        self.bytes.get(self.record_range().0).unwrap_or_default()
    }

    /// The record, decoded.
    fn decode(&self) -> Result<Record> {
        let mut record = COMPACT.decode(self.record()).map_err(Error::Codec)?;
        record.expires_at = self.expires_at;
        record.version = self.version;
        Ok(record)
    }

    /// The record, its data left encoded and shared with this slot until it is read,
    /// searched through its key index when it has one.
    fn decode_lazy(&self) -> Result<LazyRecord> {
        let shared = EncodedBytes::from(Arc::clone(&self.bytes));
        let (range, indexed) = self.record_range();
        let index = indexed
            .then(|| shared.slice(range.end..shared.len()))
            .flatten();
        let bytes = shared.slice(range).ok_or_else(|| {
            Error::Codec(session_core::CodecError::Truncated(
                "stored record cut short".into(),
            ))
        })?;
        let mut record = COMPACT.decode_lazy(bytes).map_err(Error::Codec)?;
        if let Some(index) = index {
            record.data = record.data.with_index(KeyIndex::new(index));
        }
        record.expires_at = self.expires_at;
        record.version = self.version;
        Ok(record)
    }

    /// As [`Record::is_expired_at`].
    fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }
}

/// One session in the cache: its current record, `None` once deleted or swept.
#[derive(Debug)]
struct Slot {
    record: Mutex<Option<Stored>>,
}

impl Slot {
    fn new(record: Stored) -> Self {
        Slot {
            record: Mutex::new(Some(record)),
        }
    }

    /// The slot's lock. A panic while it was held cannot leave a half-written record
    /// (every change is one assignment), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Option<Stored>> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `f` of the live record, if any, under the slot's lock.
    fn read<T>(&self, now: Timestamp, f: impl FnOnce(&Stored) -> T) -> Option<T> {
        self.lock()
            .as_ref()
            .filter(|r| !r.is_expired_at(now))
            .map(f)
    }

    /// For the sweep: whether the slot stays. An expired record is taken out under the
    /// lock (an update in flight then finds nothing to write over) and counted in
    /// `removed`; an empty slot (a record ended while an update held the slot) goes
    /// uncounted.
    fn keep_at(&self, now: Timestamp, removed: &std::cell::Cell<u64>) -> bool {
        let mut guard = self.lock();
        match guard.as_ref() {
            Some(r) if !r.is_expired_at(now) => true,
            Some(_) => {
                *guard = None;
                removed.set(removed.get() + 1);
                false
            }
            None => false,
        }
    }
}

/// Counts the sessions the cache evicts for the bound while they hold a live record
/// ([`MemoryStore::evictions`]). Called by the cache under the evicting shard's lock.
#[derive(Clone, Debug)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<SessionKey, Arc<Slot>> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut (), _key: SessionKey, slot: Arc<Slot>) {
        if slot.read(Timestamp::now(), |_| ()).is_some() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `max_encoded_size` on a store that keeps decoded records: the configured codec
/// measures a record when the quick bound cannot rule out that it is too large.
#[derive(Debug)]
struct SizeLimit {
    codec: Arc<dyn Codec>,
    max_encoded_size: usize,
}

impl SizeLimit {
    fn check(&self, record: &Record) -> Result<()> {
        if encoded_size_bound(record, self.max_encoded_size) <= self.max_encoded_size {
            return Ok(());
        }
        // The codec gives the exact answer and the same typed errors as the engines that
        // store bytes (`TooLarge`, or `Encode` for a value nested too deeply).
        self.codec.encode(record).map(drop).map_err(Error::Codec)
    }
}

/// The most bytes any built-in codec (bincode or JSON, sealed or not) can need for a
/// value, besides its strings' bytes: tag, length prefix or number, quotes, separators.
const BOUND_PER_VALUE: usize = 40;
/// The same for the record's own fields (version, times, expiry, JSON field names).
const BOUND_PER_RECORD: usize = 512;
/// Bytes per string byte at most: JSON writes a control character as `\u00XX`.
const BOUND_PER_STRING_BYTE: usize = 6;

/// An upper bound of `record`'s encoded size under any built-in codec, computed without
/// encoding. Stops early (returning a value above `stop_above`) once it exceeds
/// `stop_above`, and returns `usize::MAX` for values nested deeper than the codecs
/// accept, so the caller asks the codec for the exact (typed) answer.
fn encoded_size_bound(record: &Record, stop_above: usize) -> usize {
    let mut size = BOUND_PER_RECORD + ENCRYPTION_OVERHEAD;
    // Only arrays and objects wait on this list, to have their items counted: a record
    // whose values are scalars (the common case) is bounded without allocating.
    let mut nested = Vec::new();
    let entries = record.data.iter().map(|(k, v)| (Some(k), v));
    if let Some(stop) = add_items(&mut size, stop_above, entries, 1, &mut nested) {
        return stop;
    }
    while let Some((v, depth)) = nested.pop() {
        let stop = match v {
            serde_json::Value::Array(items) => {
                let items = items.iter().map(|v| (None, v));
                add_items(&mut size, stop_above, items, depth + 1, &mut nested)
            }
            serde_json::Value::Object(map) => {
                let entries = map.iter().map(|(k, v)| (Some(k), v));
                add_items(&mut size, stop_above, entries, depth + 1, &mut nested)
            }
            _ => None,
        };
        if let Some(stop) = stop {
            return stop;
        }
    }
    size
}

/// Adds to `size` the bound of `items` (values at `depth`, each with its key if it is a
/// map's), leaving their own arrays and objects on `nested`. Returns what
/// [`encoded_size_bound`] returns if it should stop: `size` once above `stop_above`, or
/// `usize::MAX` for values nested deeper than the codecs accept.
fn add_items<'a>(
    size: &mut usize,
    stop_above: usize,
    items: impl Iterator<Item = (Option<&'a String>, &'a serde_json::Value)>,
    depth: usize,
    nested: &mut Vec<(&'a serde_json::Value, usize)>,
) -> Option<usize> {
    for (k, v) in items {
        if depth > MAX_DEPTH {
            return Some(usize::MAX);
        }
        *size = size
            .saturating_add(k.map_or(0, |k| string_bound(k)))
            .saturating_add(v.as_str().map_or(BOUND_PER_VALUE, string_bound));
        if *size > stop_above {
            return Some(*size);
        }
        if v.is_array() || v.is_object() {
            nested.push((v, depth));
        }
    }
    None
}

/// The most bytes a string can need, with its tag or length.
fn string_bound(s: &str) -> usize {
    s.len()
        .saturating_mul(BOUND_PER_STRING_BYTE)
        .saturating_add(BOUND_PER_VALUE)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store with the default bound (1,000,000 sessions).
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A store with explicit options.
    pub fn with_config(config: MemoryConfig) -> Self {
        let max_entries = config.max_entries.max(1);
        // The cache splits its capacity evenly over its shards, rounding each share up:
        // the shard count is chosen here (quick_cache's own rule, a power of two up to
        // four per core with at least 32 sessions each) so that the capacity can be
        // rounded down to a multiple of it, and the store never holds more than
        // `max_entries`.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut shards = (cores * 4).next_power_of_two();
        while shards > 1 && max_entries / shards < MIN_SHARD_ENTRIES {
            shards /= 2;
        }
        let capacity = max_entries / shards * shards;
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(capacity)
            .weight_capacity(capacity as u64)
            .hot_allocation(1.0 - PROBATION)
            .build()
            .expect("every option is set");
        let evictions = Arc::new(AtomicU64::new(0));
        let cache = Cache::with_options(
            options,
            UnitWeighter,
            DefaultHashBuilder::default(),
            Evictions(Arc::clone(&evictions)),
        );
        MemoryStore {
            cache,
            create_locks: (0..CREATE_STRIPES).map(|_| Mutex::new(())).collect(),
            max_entries,
            evictions,
            size_limit: None,
            users: DashMap::new(),
            metrics: HostedMetrics::default(),
        }
    }

    /// This store, refusing records whose encoding by `codec` would exceed
    /// `max_encoded_size` bytes (`Error::Codec(CodecError::TooLarge { .. })`, nothing
    /// stored), as the engines that store bytes do. `codec` should be the configured one
    /// (`SessionSettings::codec()`), whose own limit is `max_encoded_size`; the engine
    /// built from configuration is set up this way.
    pub fn with_size_limit(mut self, codec: Arc<dyn Codec>, max_encoded_size: usize) -> Self {
        self.size_limit = Some(SizeLimit {
            codec,
            max_encoded_size,
        });
        self
    }

    fn check_size(&self, record: &Record) -> Result<()> {
        match &self.size_limit {
            Some(limit) => limit.check(record),
            None => Ok(()),
        }
    }

    /// The configured bound (`max_entries`).
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How many sessions were evicted to respect `max_entries` while they held a live
    /// record (counted as the cache evicts them).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The slot under `key`, without marking it used (for checks by the index and
    /// `insert_new`, which are not a visitor's use).
    fn listed(&self, key: &SessionKey) -> Option<Arc<Slot>> {
        self.cache.peek(key)
    }

    /// The slot under `key`, marked used for the eviction policy.
    fn slot(&self, key: &SessionKey) -> Option<Arc<Slot>> {
        self.cache.get(key)
    }

    /// `f` of `key`'s live record, if any, under its slot's lock.
    fn read<T>(&self, key: &SessionKey, now: Timestamp, f: impl FnOnce(&Stored) -> T) -> Option<T> {
        self.slot(key)?.read(now, f)
    }

    /// Runs `f` on the live record of `key` under its slot's lock. `f` changes the
    /// record in place (or leaves it as it was and fails) and returns the answer. A
    /// record written with a past deadline stays until the sweep counts it, as on every
    /// engine without native expiry; reads treat it as absent.
    fn modify<T>(&self, key: &SessionKey, f: impl FnOnce(&mut Stored) -> Result<T>) -> Result<T> {
        let now = Timestamp::now();
        let slot = self.slot(key).ok_or(Error::NotFound)?;
        let mut guard = slot.lock();
        let cur = guard
            .as_mut()
            .filter(|r| !r.is_expired_at(now))
            .ok_or(Error::NotFound)?;
        f(cur)
    }

    /// Removes every expired record (and every emptied slot): each shard is locked in
    /// turn, for one pass over its slots. Returns how many expired records it removed.
    fn sweep(&self) -> u64 {
        let now = Timestamp::now();
        let removed = std::cell::Cell::new(0);
        self.cache.retain(|_, slot| slot.keep_at(now, &removed));
        removed.get()
    }

    /// The create lock of `key`'s stripe: held by `insert_new`, the only writer of new
    /// slots, and by the index while it removes an entry of `key`.
    fn create_lock(&self, key: &SessionKey) -> MutexGuard<'_, ()> {
        let stripe = key.as_str().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.create_locks[stripe % CREATE_STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `key` to `principal`'s set. Callers hold `key`'s create stripe or slot lock.
    fn index_add(&self, principal: &str, key: &SessionKey) {
        if self
            .users
            .get(principal)
            .is_some_and(|keys| keys.contains(key))
        {
            return;
        }
        self.users
            .entry(principal.into())
            .or_default()
            .insert(key.clone());
    }

    /// Removes `key` from `principal`'s set (and the set once empty).
    fn index_remove(&self, principal: &str, key: &SessionKey) {
        if let Some(mut keys) = self.users.get_mut(principal) {
            keys.remove(key);
        }
        self.users.remove_if(principal, |_, keys| keys.is_empty());
    }

    /// The keys in `principal`'s set (copied: no index lock is held afterwards).
    fn index_keys(&self, principal: &str) -> Vec<SessionKey> {
        self.users
            .get(principal)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `f` of `key`'s live record if it is bound to `principal` (no lock beyond the
    /// slot's).
    fn bound<T>(
        &self,
        principal: &str,
        key: &SessionKey,
        now: Timestamp,
        f: impl FnOnce(&Stored) -> T,
    ) -> Option<T> {
        self.read(key, now, |r| {
            (r.principal() == Some(principal)).then(|| f(r))
        })
        .flatten()
    }

    /// Re-checks `key` under its create stripe and slot lock: returns `f` of its live
    /// record if it is bound to `principal`, and otherwise removes the stale entry, under
    /// those locks, so that no write re-binding the key can slip in between.
    fn prune<T>(
        &self,
        principal: &str,
        key: &SessionKey,
        f: impl FnOnce(&Stored) -> T,
    ) -> Option<T> {
        let _create = self.create_lock(key);
        let now = Timestamp::now();
        let Some(slot) = self.listed(key) else {
            self.index_remove(principal, key);
            return None;
        };
        let guard = slot.lock();
        match guard.as_ref() {
            Some(r) if !r.is_expired_at(now) && r.principal() == Some(principal) => Some(f(r)),
            _ => {
                self.index_remove(principal, key);
                None
            }
        }
    }

    /// `f` of `key`'s live record bound to `principal`, pruning the entry when there is
    /// none.
    fn bound_or_prune<T>(
        &self,
        principal: &str,
        key: &SessionKey,
        now: Timestamp,
        f: impl Fn(&Stored) -> T,
    ) -> Option<T> {
        self.bound(principal, key, now, &f)
            .or_else(|| self.prune(principal, key, &f))
    }

    /// Forgets the stale entries of `principal` (those of live sessions stay).
    fn prune_principal(&self, principal: &str) {
        let now = Timestamp::now();
        for key in self.index_keys(principal) {
            self.bound_or_prune(principal, &key, now, |_| ());
        }
    }

    /// Ends `key` if it is a live session of `principal`: empties its slot (an update in
    /// flight then finds nothing to write over) and removes it from the cache and the
    /// index, as `delete` does. Whether it was live.
    fn end(&self, principal: &str, key: &SessionKey) -> bool {
        let _create = self.create_lock(key);
        let now = Timestamp::now();
        let Some(slot) = self.listed(key) else {
            self.index_remove(principal, key);
            return false;
        };
        let mut guard = slot.lock();
        let ended = guard
            .as_ref()
            .is_some_and(|r| !r.is_expired_at(now) && r.principal() == Some(principal));
        if ended {
            *guard = None;
        }
        self.index_remove(principal, key);
        drop(guard);
        if ended {
            // Still under the create stripe: the slot under `key` is the one emptied.
            self.cache.remove(key);
        }
        ended
    }

    /// Removes the index entries of sessions that are gone or re-bound, for every
    /// principal: what `clear_expired` does after the sweep.
    fn sweep_index(&self) {
        let principals: Vec<Box<str>> = self.users.iter().map(|e| e.key().clone()).collect();
        for p in principals {
            self.prune_principal(&p);
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn engine(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .compare_and_set(true)
            .listing(true)
            .may_evict(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.insert_new_now(key, record)
    }

    async fn create(&self, record: &Record) -> Result<SessionKey> {
        self.create_now(record)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_now(key)
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.load_lazy_now(key)
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.update_now(key, record, expected_version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.delete_now(key)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.touch_now(key, expires_at)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.exists_now(key)
    }

    /// Removes the expired records (a sweep of every shard, see the module docs,
    /// "Expiry"), then the user index's entries of sessions that are gone. Returns how
    /// many expired records it removed.
    async fn clear_expired(&self) -> Result<u64> {
        let removed = self.sweep();
        self.sweep_index();
        Ok(removed)
    }

    /// The number of stored sessions (never above `max_entries`), expired ones not yet
    /// swept included, as on the other engines without native expiry.
    async fn count(&self) -> Result<u64> {
        Ok(self.cache.len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let now = Timestamp::now();
        let mut keys: Vec<SessionKey> = self
            .cache
            .iter()
            .filter(|(k, slot)| after.is_none_or(|a| k > a) && slot.read(now, |_| ()).is_some())
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

/// The bodies of the immediate calls below.
impl MemoryStore {
    fn insert_new_unmeasured(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.check_size(record)?;
        let now = Timestamp::now();
        // Encoded before any lock is taken.
        let stored = Stored::encode(record, record.version)?;
        // Create-if-absent under the key's stripe of the create lock: every new slot is
        // inserted here, so no other create can slip in between the check and the
        // insert. (A record expired on arrival is stored too, as on every engine without
        // native expiry, and swept by `clear_expired`; it can replace only an expired
        // record.)
        let create = self.create_lock(key);
        // Without marking the slot used: a new key (the rule: keys are minted fresh)
        // is absent.
        if self
            .listed(key)
            .is_some_and(|slot| slot.read(now, |_| ()).is_some())
        {
            return Ok(Inserted::KeyTaken);
        }
        // A signed-in session enters its principal's index before it is stored.
        let principal = record.principal();
        if let Some(p) = principal {
            self.index_add(p, key);
        }
        self.cache.insert(key.clone(), Arc::new(Slot::new(stored)));
        drop(create);
        if let Some(p) = principal {
            // A sign-in: forget the principal's sessions that ended meanwhile.
            self.prune_principal(p);
        }
        Ok(Inserted::Created)
    }

    #[inline]
    fn load_unmeasured(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.read(key, Timestamp::now(), Stored::decode).transpose()
    }

    #[inline]
    fn load_lazy_unmeasured(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.read(key, Timestamp::now(), Stored::decode_lazy)
            .transpose()
    }

    #[inline]
    fn update_unmeasured(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.check_size(record)?;
        // Encoded before the slot's lock is taken; the version is set under it.
        let next = Stored::encode(record, 0)?;
        self.modify(key, |cur| {
            if let Some(expected) = expected_version.filter(|v| *v != cur.version) {
                return Err(Error::Conflict {
                    expected,
                    found: cur.version,
                });
            }
            // Under the slot's lock, before the record is replaced: a record that now
            // names another principal enters that principal's index (one that keeps
            // its principal is in it already; anonymous records never are).
            if let Some(p) = record.principal()
                && cur.principal() != Some(p)
            {
                self.index_add(p, key);
            }
            let version = cur.version.saturating_add(1);
            *cur = Stored { version, ..next };
            Ok(version)
        })
    }

    #[inline]
    fn delete_unmeasured(&self, key: &SessionKey) -> Result<bool> {
        let Some((_, slot)) = self.cache.remove(key) else {
            return Ok(false);
        };
        let was = slot.lock().take();
        if let Some(p) = was.as_ref().and_then(|r| r.principal()) {
            self.prune(p, key, |_| ());
        }
        Ok(was.is_some_and(|r| !r.is_expired_at(Timestamp::now())))
    }

    #[inline]
    fn touch_unmeasured(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        // In place: the encoded record stays as it is (see `Stored`).
        self.modify(key, |cur| {
            cur.expires_at = expires_at;
            Ok(())
        })
    }

    #[inline]
    fn exists_unmeasured(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.read(key, Timestamp::now(), |_| ()).is_some())
    }
}

/// Every call of the engine is a lookup and a lock in this process: the session handle
/// makes them without a boxed future (see `session_core::store`, "Stores that answer
/// without waiting"). Each runs through the hosted metrics (a plain call until the
/// metrics layer arms them).
impl ImmediateStore for MemoryStore {
    fn insert_new_now(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.metrics
            .insert_new(key, || self.insert_new_unmeasured(key, record))
    }

    fn create_now(&self, record: &Record) -> Result<SessionKey> {
        self.metrics
            .create(|| create_now_with(|key| self.insert_new_unmeasured(key, record)))
    }

    fn load_now(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.metrics.load(key, || self.load_unmeasured(key))
    }

    fn load_lazy_now(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.metrics
            .load_lazy(key, || self.load_lazy_unmeasured(key))
    }

    fn update_now(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.metrics.update(key, || {
            self.update_unmeasured(key, record, expected_version)
        })
    }

    fn delete_now(&self, key: &SessionKey) -> Result<bool> {
        self.metrics.delete(key, || self.delete_unmeasured(key))
    }

    fn touch_now(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.metrics
            .touch(key, || self.touch_unmeasured(key, expires_at))
    }

    fn exists_now(&self, key: &SessionKey) -> Result<bool> {
        self.metrics.exists(key, || self.exists_unmeasured(key))
    }

    fn hosted_metrics(&self) -> Option<&HostedMetrics> {
        Some(&self.metrics)
    }
}

#[async_trait]
impl UserIndex for MemoryStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        validate_principal(principal)?;
        let now = Timestamp::now();
        let mut out = Vec::new();
        for key in self.index_keys(principal) {
            if let Some(record) = self.bound_or_prune(principal, &key, now, Stored::decode) {
                out.push(UserSession::from_record(key, &record?, current));
            }
        }
        sort_oldest_first(&mut out);
        Ok(out)
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        validate_principal(principal)?;
        Ok(self
            .index_keys(principal)
            .into_iter()
            .find(|key| session_id(key) == id)
            .is_some_and(|key| self.end(principal, &key)))
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        validate_principal(principal)?;
        let mut ended = 0;
        for key in self.index_keys(principal) {
            if Some(&key) != keep && self.end(principal, &key) {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        validate_principal(principal)?;
        let now = Timestamp::now();
        Ok(self
            .index_keys(principal)
            .iter()
            .filter(|key| self.bound_or_prune(principal, key, now, |_| ()).is_some())
            .count() as u64)
    }
}

impl MemoryConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.max_entries == 0 {
            return Err(Error::config("memory.max_entries", "must be at least 1"));
        }
        Ok(())
    }

    /// Builds the store from this configuration and the shared settings: it applies
    /// `max_encoded_size`, measured with the configured codec. The constructor the
    /// `memory` engine uses; [`MemoryStore::with_config`] is the lower-level one.
    pub async fn build(
        &self,
        settings: &session_core::SessionSettings,
    ) -> Result<Arc<dyn SessionStore>> {
        self.validate()?;
        let store = MemoryStore::with_config(self.clone())
            .with_size_limit(settings.codec(), settings.max_encoded_size);
        Ok(Arc::new(store))
    }
}

/// Registers the `memory` engine (options in the `memory` section), built with
/// [`MemoryConfig::build`].
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        "memory",
        |ctx: session_core::EngineContext| async move {
            let cfg: MemoryConfig = ctx.section("memory")?;
            cfg.build(&ctx.settings).await.map_err(|e| ctx.locate(e))
        },
        |ctx: &session_core::EngineContext| {
            let cfg: MemoryConfig = ctx.section("memory")?;
            cfg.validate().map_err(|e| ctx.locate(e))
        },
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use session_core::{CodecError, CodecKind, Config, Expiry, SessionData};

    use super::*;

    fn record(data: serde_json::Value, expiry: Expiry) -> Record {
        let mut r = Record::with_ttl(
            data.as_object().cloned().unwrap_or_else(SessionData::new),
            60,
        );
        r.expiry = expiry;
        r.version = u64::MAX;
        r
    }

    #[test]
    fn the_size_bound_is_never_below_an_encoding() {
        let sealed = Config::from_toml(
            "codec = \"json\"\n[encryption]\nkeys = [\"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"]\n",
        )
        .settings()
        .expect("settings")
        .try_codec()
        .expect("codec");
        let codecs = [
            CodecKind::Bincode.build(usize::MAX),
            CodecKind::Json.build(usize::MAX),
            sealed,
        ];
        let control = "\u{1}".repeat(300);
        let mut deep = json!(null);
        for _ in 0..MAX_DEPTH - 1 {
            deep = json!([deep]);
        }
        let records = [
            record(json!({}), Expiry::Default),
            record(json!({ "": "" }), Expiry::BrowserClose),
            record(json!({ control.clone(): control }), Expiry::Idle(i64::MIN)),
            record(
                json!({ "n": [u64::MAX, i64::MIN, -1.797_693_134_862_315_7e308, 5e-324, null, true] }),
                Expiry::At(Timestamp::from_unix_millis(i64::MIN)),
            ),
            record(json!({ "a": vec![json!(""); 500], "o": { "\"": { "\\": [[], {}] } } }), Expiry::Default),
            record(json!({ "deep": deep.clone() }), Expiry::Default),
        ]
        .map(|mut r| {
            r.created_at = Timestamp::from_unix_millis(i64::MIN);
            r.expires_at = r.created_at;
            r
        });
        let too_deep = record(json!({ "deep": [deep] }), Expiry::Default);
        // Past the binary codec's depth the bound gives way to the configured codec.
        assert_eq!(encoded_size_bound(&too_deep, usize::MAX), usize::MAX);
        assert!(codecs[0].encode(&too_deep).is_err());
        for r in &records {
            let bound = encoded_size_bound(r, usize::MAX);
            for codec in &codecs {
                let len = codec.encode(r).expect("encode").len();
                assert!(bound >= len, "{}: bound {bound} < {len}", codec.name());
            }
        }
    }

    #[tokio::test]
    async fn wide_records_load_indexed_and_every_load_reads_what_was_written() {
        let store = MemoryStore::new();
        for keys in [1, KeyIndex::MIN_KEYS - 1, KeyIndex::MIN_KEYS, 1_000] {
            let data: SessionData = (0..keys)
                .map(|i| (format!("k{i}"), json!({ "i": i })))
                .collect();
            let r = record(serde_json::Value::Object(data), Expiry::Idle(60));
            let key = store.create(&r).await.expect("create");
            let lazy = store.load_lazy(&key).await.expect("load").expect("live");
            assert!(!lazy.data.is_decoded());
            assert_eq!(lazy.data.is_indexed(), keys >= KeyIndex::MIN_KEYS, "{keys}");
            for (k, v) in &r.data {
                assert_eq!(lazy.data.get(k).expect("get").as_ref(), Some(v), "{k}");
            }
            assert_eq!(lazy.data.get("nope").expect("get"), None);
            let whole = store.load(&key).await.expect("load").expect("live");
            assert_eq!(whole.data, r.data);
            assert_eq!(lazy.decode().expect("decode"), whole);
            // An update below the index's threshold drops it, one above rebuilds it.
            let fewer = record(json!({ "only": 1 }), Expiry::Default);
            store.update(&key, &fewer, None).await.expect("update");
            let lazy = store.load_lazy(&key).await.expect("load").expect("live");
            assert!(!lazy.data.is_indexed());
            assert_eq!(lazy.data.get("only").expect("get"), Some(json!(1)));
            store.update(&key, &r, None).await.expect("update");
            let lazy = store.load_lazy(&key).await.expect("load").expect("live");
            assert_eq!(lazy.data.is_indexed(), keys >= KeyIndex::MIN_KEYS);
            assert_eq!(lazy.decode().expect("decode").data, r.data);
        }
    }

    #[tokio::test]
    async fn max_encoded_size_is_enforced_on_every_write() {
        let codec = CodecKind::Json.build(1000);
        let store = MemoryStore::new().with_size_limit(codec.clone(), 1000);
        let small = record(json!({ "a": "b" }), Expiry::Default);
        let big = record(json!({ "a": "b".repeat(1000) }), Expiry::Default);
        assert!(matches!(
            store.create(&big).await,
            Err(Error::Codec(CodecError::TooLarge { limit: 1000, .. }))
        ));
        let key = store.create(&small).await.expect("create");
        assert!(matches!(
            store.update(&key, &big, None).await,
            Err(Error::Codec(CodecError::TooLarge { limit: 1000, .. }))
        ));
        let kept = store.load(&key).await.expect("load").expect("live");
        assert_eq!(kept.data, small.data);
        // Near the limit the codec decides, so anything that encodes within it fits.
        let mut n = 1000;
        loop {
            let r = record(json!({ "a": "c".repeat(n) }), Expiry::Default);
            match store.update(&key, &r, None).await {
                Ok(_) => break,
                Err(Error::Codec(CodecError::TooLarge { .. })) => n -= 1,
                Err(e) => panic!("{e}"),
            }
        }
        let stored = store.load(&key).await.expect("load").expect("live");
        assert_eq!(codec.encode(&stored).expect("encode").len(), 1000);
        // Without a limit (built in code), nothing is measured.
        assert!(MemoryStore::new().create(&big).await.is_ok());
    }

    #[tokio::test]
    async fn bounded_with_eviction() {
        for max_entries in [1, 10, 100, 1_000, 1_001] {
            let store = MemoryStore::with_config(MemoryConfig { max_entries });
            let n = max_entries * 3 + 50;
            for _ in 0..n {
                let r = Record::with_ttl(Default::default(), 60);
                store.create(&r).await.expect("create");
                assert!(store.count().await.expect("count") <= max_entries as u64);
            }
            // Every session dropped for the bound was live, and is counted as it goes.
            let held = store.count().await.expect("count");
            assert_eq!(store.evictions(), n as u64 - held, "{max_entries}");
            assert!(
                held * 2 >= max_entries as u64,
                "{held} of {max_entries} held"
            );
        }
    }

    #[tokio::test]
    async fn the_sweep_removes_expired_records_and_counts_them() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 100 });
        let mut expired = Vec::new();
        for _ in 0..3 {
            expired.push(
                store
                    .create(&Record::with_ttl(Default::default(), -1))
                    .await
                    .expect("create expired"),
            );
        }
        let mut live = Vec::new();
        for _ in 0..4 {
            live.push(
                store
                    .create(&Record::with_ttl(Default::default(), 60))
                    .await
                    .expect("create"),
            );
        }
        // Touched into the past, and updated into the past: expired in place.
        store
            .touch(&live[0], Timestamp::now().add_secs(-1))
            .await
            .expect("touch");
        let past = Record::with_ttl(Default::default(), -1);
        store.update(&live[1], &past, None).await.expect("update");
        // Held until swept, never read.
        assert_eq!(store.count().await.expect("count"), 7);
        for k in expired.iter().chain(&live[..2]) {
            assert!(!store.exists(k).await.expect("exists"));
            assert!(store.load(k).await.expect("load").is_none());
        }
        assert_eq!(store.clear_expired().await.expect("clear_expired"), 5);
        assert_eq!(store.count().await.expect("count"), 2);
        assert_eq!(store.clear_expired().await.expect("clear_expired"), 0);
        assert_eq!(store.evictions(), 0);
        for k in &live[2..] {
            assert!(store.exists(k).await.expect("exists"));
        }
    }

    #[tokio::test]
    async fn an_update_that_raced_the_sweep_finds_nothing() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 100 });
        let key = store
            .create(&Record::with_ttl(Default::default(), 60))
            .await
            .expect("create");
        // The update's side: the slot taken before the sweep, used after it.
        let slot = store.slot(&key).expect("slot");
        store
            .touch(&key, Timestamp::now().add_secs(-1))
            .await
            .expect("touch");
        assert_eq!(store.clear_expired().await.expect("clear_expired"), 1);
        assert!(
            slot.lock().is_none(),
            "the sweep left the record in its slot"
        );
        assert!(matches!(
            store
                .update(&key, &Record::with_ttl(Default::default(), 60), None)
                .await,
            Err(Error::NotFound)
        ));
        assert!(store.load(&key).await.expect("load").is_none());
    }
}
