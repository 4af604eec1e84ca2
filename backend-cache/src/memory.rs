//! The in-process store (engine `memory`).
//!
//! Records live in a [`moka`] cache (`moka::sync::Cache`), a concurrent cache modelled on
//! Java's Caffeine. It is used rather than own code because it gives, with O(1) work per
//! operation, the three things a bounded session store needs and a plain concurrent map
//! does not:
//!
//! - **A bound that is cheap to keep.** `max_entries` is moka's `max_capacity`.
//!   Eviction takes the victim from the cold end of an LRU list kept by moka's
//!   housekeeping, O(1) per insert: an insert into a full store costs about twice one
//!   below the bound, never a walk over the store (BENCHMARKS.md, "Memory engine at its
//!   bound").
//! - **Frequency-aware admission (TinyLFU).** While the store is full, a new session is
//!   admitted only if its key has been used more often (in a compact frequency sketch)
//!   than the coldest stored session it would displace; otherwise the new session is
//!   dropped instead. Sessions in active use are read on every request and stay hot, so a
//!   flood of one-request visitors (crawlers, scanners, a burst of anonymous traffic)
//!   cannot push logged-in users out.
//! - **Native per-session expiry.** Each entry expires at its own record's deadline
//!   (moka's `Expiry`, re-armed by every update and touch), so expired sessions leave the
//!   store by themselves: [`SessionStore::clear_expired`] has nothing to do
//!   (`Capabilities::native_ttl`). Reads still compare the deadline with the wall clock,
//!   so an expired record is never returned, not even for the instant before moka drops
//!   it.
//!
//! **What a visitor sees when the store is full.** A session evicted to make room, or a
//! new session that was not admitted, is simply absent: the next request carrying its
//! cookie loads nothing and the visitor gets a fresh, empty session (a logged-in user is
//! logged out), exactly as after the session expired. Nothing fails and no error is
//! returned; the write that created the session reported success. Size `max_entries`
//! above the peak number of live sessions so this only happens under abuse
//! (`Capabilities::may_evict` says the store may drop live records).
//!
//! **How far the bound can overshoot.** moka applies evictions in batched housekeeping,
//! not inside each insert: between two housekeeping runs the store can hold more than
//! `max_entries` sessions. Housekeeping runs whenever 64 writes are pending, and writers
//! run it themselves when its queue (384 writes) is full, so the overshoot stays below a
//! few hundred entries however many threads insert. [`MemoryStore::count`] (and
//! `clear_expired`) run the pending housekeeping first, so what they report is within the
//! bound; `backend-cache/tests/memory_bound.rs` checks this under concurrent inserts.
//!
//! **Atomicity.** moka holds one small slot per session (the current record behind a
//! mutex, and its deadline); `update`, `touch` and `delete` change the slot under its
//! lock, so an update is compare-and-set on the version and never resurrects a session
//! deleted meanwhile (delete empties the slot before anything else can see it). Only
//! `insert_new` inserts slots, under a striped create lock: create-if-absent, replacing
//! only an expired or deleted slot. Keeping updates out of moka's write path keeps them cheap: moka's own
//! compute operations cost several times a plain map write. moka's timer of a slot is
//! armed a little past the record's deadline: by a sixteenth of the time left, at most
//! [`REARM_SLACK`] (a minute). A write re-arms it, with one `get`, only when the new
//! deadline passes the armed one or falls more than that slack before it: the write flags
//! the slot, and `Expiry::expire_after_read` hands moka the new timer only when flagged,
//! so plain reads leave the timer alone without reading the clock. A sliding session
//! updated on every request thus re-arms at most about once a minute instead of on every
//! write (that `get` was a fifth of a request's cost through the axum layer). The slack
//! changes no answer, since reads check the record's own deadline: an expired record
//! only leaves memory up to the slack later.
//!
//! **Lookups.** Every read and write finds its slot in a second table, a sharded map
//! (`dashmap`) from key to a weak reference to the slot, rather than through moka's
//! `get`: moka's read path logs each read for its policy and reads a clock, and with
//! the housekeeping those logs cause it cost a tenth of a request's instructions through
//! the axum layer (`session-bench --only instructions`). moka stays the owner: it holds
//! the only strong references besides a caller's, and a slot unlists itself when moka's
//! last reference (or a caller's) goes, so the table never holds a session moka let go
//! for longer than a caller still uses it. moka's policy still learns what is in use:
//! one lookup of a slot in four (the first, the fifth, ...) also reads it
//! through moka, which keeps a session used on every request among the frequent and
//! recent ones while a flood of one-request visitors reads each of theirs once.
//!
//! **Costs kept off the hot path.** The cache has no eviction listener: with one, moka
//! serialises every insert and removal through a per-key lock map. A slot counts its
//! own eviction instead, when moka drops it still holding a live record
//! ([`MemoryStore::evictions`]). Keys are hashed with a seeded multiply-rotate hash
//! rather than SipHash (see `KeyHash` for why that is safe here): moka's hash table
//! rehashes whole segments as it grows, shrinks and collects the tombstones of removals.
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
//! record is gone (deleted, expired, evicted by moka) or now bound to another principal
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
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::Expiry;
use moka::sync::Cache;
use serde::Deserialize;
use session_core::codec::{ENCRYPTION_OVERHEAD, MAX_DEPTH};
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
    /// Most sessions held at once. When full, a new session either displaces the
    /// least used one or, when it is used less than that one, is not kept (see the
    /// module docs).
    pub max_entries: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: 1_000_000,
        }
    }
}

/// Key -> slot: the path of every lookup (see the module docs, "Lookups").
type Lookup = DashMap<SessionKey, Weak<Slot>, KeyHash>;

/// moka's policy is told of one lookup of a slot in this many (see the module docs).
const READ_SAMPLE: u32 = 4;

/// In-process session store.
pub struct MemoryStore {
    cache: Cache<SessionKey, Arc<Slot>, KeyHash>,
    /// Every slot moka holds (and a slot moka dropped while a caller still held it),
    /// by key; a slot unlists itself when dropped.
    lookup: Arc<Lookup>,
    /// Serialises `insert_new` per key (by stripe): the only writer of new slots.
    create_locks: Box<[Mutex<()>]>,
    max_entries: usize,
    evictions: Arc<AtomicU64>,
    size_limit: Option<SizeLimit>,
    /// Principal -> keys of its signed-in sessions (a superset of the live ones).
    users: DashMap<Box<str>, HashSet<SessionKey>>,
}

impl fmt::Debug for MemoryStore {
    // moka's own `Debug` lists every entry; a store of a million sessions prints its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("max_entries", &self.max_entries)
            .field("evictions", &self.evictions())
            .field("size_limit", &self.size_limit)
            .field("principals", &self.users.len())
            .finish()
    }
}

/// Longest lifetime handed to moka: deadlines further away (years) expire on reads by the
/// wall clock all the same.
const MAX_NATIVE_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

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

/// One session in the cache: its current record (`None` once deleted) and the record's
/// deadline, readable without the lock by moka's expiry.
#[derive(Debug)]
struct Slot {
    record: Mutex<Option<Stored>>,
    expires_at: AtomicI64,
    /// Unix milliseconds moka's timer is armed for: `expires_at` plus a slack (see
    /// [`armed_for`]).
    armed: AtomicI64,
    /// Set when `armed` moved: the next read hands moka the new timer.
    rearm: AtomicBool,
    /// The store's eviction count, bumped if the slot is dropped holding a live record.
    evictions: Arc<AtomicU64>,
    /// Lookups so far (moka hears of one in [`READ_SAMPLE`]).
    reads: AtomicU32,
    /// The slot's key and the table that lists it under that key: dropping the slot
    /// removes its entry.
    key: SessionKey,
    lookup: Arc<Lookup>,
}

impl Drop for Slot {
    /// moka drops a slot when it leaves the cache. Deleted slots are empty and expired
    /// ones are past their deadline (moka may drop them up to `CLOCK_SLACK` early), and
    /// `insert_new` replaces no other: a slot still holding a live record was dropped
    /// for the bound (evicted, or not admitted).
    fn drop(&mut self) {
        let record = self
            .record
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if record.is_some() {
            let deadline = self.expires_at.load(Ordering::Relaxed);
            let now = Timestamp::now().as_unix_millis();
            if deadline.saturating_sub(now) > CLOCK_SLACK.as_millis() as i64 {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Unlist this slot, unless its key lists a newer one already. No lookup guard
        // is ever held while a slot may be dropped (see `MemoryStore::slot`), so this
        // cannot wait on its own thread.
        let me: *const Slot = self;
        self.lookup
            .remove_if(&self.key, |_, listed| std::ptr::eq(listed.as_ptr(), me));
    }
}

impl Slot {
    fn new(key: SessionKey, record: Stored, store: &MemoryStore, now: Timestamp) -> Self {
        let deadline = record.expires_at.as_unix_millis();
        Slot {
            reads: AtomicU32::new(0),
            key,
            lookup: Arc::clone(&store.lookup),
            expires_at: AtomicI64::new(deadline),
            armed: AtomicI64::new(armed_for(deadline, now)),
            record: Mutex::new(Some(record)),
            rearm: AtomicBool::new(false),
            evictions: Arc::clone(&store.evictions),
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

    /// The time until moka's timer should fire (the armed deadline).
    fn remaining(&self) -> Duration {
        let deadline = Timestamp::from_unix_millis(self.armed.load(Ordering::Relaxed));
        let ms = Timestamp::now().millis_until(deadline);
        u64::try_from(ms).map_or(Duration::ZERO, |ms| {
            Duration::from_millis(ms).min(MAX_NATIVE_TTL)
        })
    }
}

/// The most moka's timer is armed past a record's deadline (see the module docs).
pub const REARM_SLACK: Duration = Duration::from_secs(60);

/// The instant (Unix ms) to arm moka's timer for a record due at `deadline`: a sixteenth
/// of the time left past it, at most [`REARM_SLACK`].
fn armed_for(deadline: i64, now: Timestamp) -> i64 {
    let left = deadline.saturating_sub(now.as_unix_millis()).max(0);
    deadline.saturating_add((left / 16).min(REARM_SLACK.as_millis() as i64))
}

/// Whether a record now due at `deadline` needs moka's timer, armed for `armed`, moved:
/// it would fire before the deadline, or more than the slack after it.
fn needs_rearm(deadline: i64, armed: i64, now: Timestamp) -> bool {
    deadline > armed || armed > armed_for(deadline, now)
}

/// How much earlier than its deadline moka may drop a session: the two clocks (moka's
/// monotonic one, the wall clock of deadlines) read a millisecond apart at most.
const CLOCK_SLACK: Duration = Duration::from_millis(2);

/// Each entry expires at its slot's deadline, re-armed by the `get` after every write
/// that moves it (the write sets the slot's `rearm` flag first).
struct Deadline;

impl Expiry<SessionKey, Arc<Slot>> for Deadline {
    fn expire_after_create(
        &self,
        _key: &SessionKey,
        value: &Arc<Slot>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.remaining())
    }

    fn expire_after_read(
        &self,
        _key: &SessionKey,
        value: &Arc<Slot>,
        _read_at: Instant,
        duration_until_expiry: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        // Plain reads leave the timer as it is (no clock read); the read after a write
        // that moved the deadline (it set `rearm` after storing the deadline) hands the
        // new one over.
        if value.rearm.swap(false, Ordering::Acquire) {
            Some(value.remaining())
        } else {
            duration_until_expiry
        }
    }

    fn expire_after_update(
        &self,
        _key: &SessionKey,
        value: &Arc<Slot>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining())
    }
}

/// The hash of session keys in the cache, seeded per store.
///
/// moka hashes the key on every operation, and its hash table (`cht`) rehashes every
/// key of a segment when the table grows, shrinks, or collects the tombstones removals
/// leave (every tenth of its capacity in removals): with the standard SipHash-1-3, that
/// hashing was the largest cost of creating and deleting sessions after the allocator
/// (BENCHMARKS.md). SipHash exists to stop an attacker from choosing many keys that
/// collide in one bucket. Here the keys that get inserted are minted by the server
/// (`SessionKey::generate`: 32 symbols from the OS random generator; their SHA-256
/// digests under the `hashed` wrapper; the same keys copied from another store by
/// `cached_db` or `sessions copy`), so no client chooses what is stored, and the keys a
/// client sends only probe buckets filled with random keys. A multiply-and-rotate pass
/// over 8-byte words with a full-avalanche finalizer (MurmurHash3's `fmix64`), seeded
/// per store from the standard library's random state, spreads such keys as well as
/// SipHash at a fraction of the cost. It is not meant to resist chosen keys: an
/// application that calls `insert_new` with keys taken from requests would lose that
/// protection. Own code: twenty lines, against a new direct dependency (foldhash, built
/// already for hashbrown, would serve as well).
#[derive(Clone, Debug)]
struct KeyHash {
    seed: u64,
}

impl KeyHash {
    fn new() -> Self {
        KeyHash {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// The hasher of [`KeyHash`].
#[derive(Debug)]
struct KeyHasher(u64);

/// 2^64 / golden ratio, odd: the multiplier of Fibonacci hashing.
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl KeyHasher {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(MIX).rotate_left(31);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(b));
        }
        // The length, so that a shorter input padded with zeroes differs.
        self.word(bytes.len() as u64);
    }

    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }

    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64: every input bit reaches every output bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
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
    let string = |s: &str| {
        s.len()
            .saturating_mul(BOUND_PER_STRING_BYTE)
            .saturating_add(BOUND_PER_VALUE)
    };
    let mut size = BOUND_PER_RECORD + ENCRYPTION_OVERHEAD;
    let mut stack = Vec::new();
    for (k, v) in &record.data {
        size = size
            .saturating_add(string(k))
            .saturating_add(BOUND_PER_VALUE);
        stack.push((v, 1usize));
    }
    while let Some((v, depth)) = stack.pop() {
        if size > stop_above {
            return size;
        }
        if depth > MAX_DEPTH {
            return usize::MAX;
        }
        if let Some(s) = v.as_str() {
            size = size.saturating_add(s.len().saturating_mul(BOUND_PER_STRING_BYTE));
        } else if let Some(items) = v.as_array() {
            size = size.saturating_add(items.len().saturating_mul(BOUND_PER_VALUE));
            if size > stop_above {
                return size;
            }
            stack.extend(items.iter().map(|v| (v, depth + 1)));
        } else if let Some(map) = v.as_object() {
            for (k, v) in map {
                size = size
                    .saturating_add(string(k))
                    .saturating_add(BOUND_PER_VALUE);
                if size > stop_above {
                    return size;
                }
                stack.push((v, depth + 1));
            }
        }
    }
    size
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
        // No eviction listener: with one, moka serialises every insert and removal
        // through a per-key lock map (two more hash-map writes per operation). Slots
        // count their own evictions when dropped.
        let hash = KeyHash::new();
        let cache = Cache::builder()
            .max_capacity(max_entries as u64)
            .expire_after(Deadline)
            .build_with_hasher(hash.clone());
        MemoryStore {
            cache,
            lookup: Arc::new(DashMap::with_hasher(hash)),
            create_locks: (0..CREATE_STRIPES).map(|_| Mutex::new(())).collect(),
            max_entries,
            evictions: Arc::new(AtomicU64::new(0)),
            size_limit: None,
            users: DashMap::new(),
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

    /// How many sessions were dropped to respect `max_entries`: live ones evicted and
    /// new ones not admitted. Counted when moka frees a dropped session, so it lags the
    /// inserts by the pending housekeeping ([`MemoryStore::run_pending_tasks`]) and by
    /// moka's deferred reclamation of removed entries (epoch-based, freed within a few
    /// later operations).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Runs moka's pending housekeeping now: applies evictions for the bound and drops
    /// expired entries. Every operation triggers it now and then; [`SessionStore::count`]
    /// and [`SessionStore::clear_expired`] call it first.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// The slot listed under `key`, without telling moka's policy.
    fn listed(&self, key: &SessionKey) -> Option<Arc<Slot>> {
        // The guard ends with this statement, before the upgrade: a slot is never
        // dropped (and never unlists itself) while a lookup guard is held.
        let weak = self.lookup.get(key).map(|e| Weak::clone(e.value()))?;
        weak.upgrade()
    }

    /// The slot under `key`. One call in [`READ_SAMPLE`] per slot also reads it through
    /// moka, so its policy keeps seeing which sessions are in use.
    fn slot(&self, key: &SessionKey) -> Option<Arc<Slot>> {
        let slot = self.listed(key)?;
        if slot
            .reads
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(READ_SAMPLE)
        {
            let _ = self.cache.get(key);
        }
        Some(slot)
    }

    /// `f` of `key`'s live record, if any, under its slot's lock.
    fn read<T>(&self, key: &SessionKey, now: Timestamp, f: impl FnOnce(&Stored) -> T) -> Option<T> {
        // moka's clock and the wall clock can differ by a millisecond: the record's own
        // deadline decides.
        self.slot(key)?.read(now, f)
    }

    /// Runs `f` on the live record of `key` under its slot's lock. `f` changes the
    /// record in place (or leaves it as it was and fails) and returns the answer.
    /// Re-arms moka's timer when the deadline moved.
    fn modify<T>(&self, key: &SessionKey, f: impl FnOnce(&mut Stored) -> Result<T>) -> Result<T> {
        let now = Timestamp::now();
        let slot = self.slot(key).ok_or(Error::NotFound)?;
        let mut guard = slot.lock();
        let cur = guard
            .as_mut()
            .filter(|r| !r.is_expired_at(now))
            .ok_or(Error::NotFound)?;
        let answer = f(cur)?;
        let expired = cur.is_expired_at(now);
        let deadline = cur.expires_at.as_unix_millis();
        slot.expires_at.store(deadline, Ordering::Relaxed);
        let moved = needs_rearm(deadline, slot.armed.load(Ordering::Relaxed), now);
        if moved {
            slot.armed
                .store(armed_for(deadline, now), Ordering::Relaxed);
            slot.rearm.store(true, Ordering::Release);
        }
        // A record stored already expired empties the slot: it is as good as absent.
        if expired {
            *guard = None;
        }
        if moved {
            // expire_after_read reads the new deadline. Done under the slot's lock, so
            // no reader can find the slot with the new record and the old timer.
            let _ = self.cache.get(key);
        }
        drop(guard);
        Ok(answer)
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
    /// principal: what `clear_expired` does beside moka's housekeeping.
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
            .native_ttl(true)
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

    /// Expired sessions leave the store by themselves (`native_ttl`): this runs the
    /// pending housekeeping, which drops those due, forgets the user index's entries of
    /// sessions that are gone, and reports 0.
    async fn clear_expired(&self) -> Result<u64> {
        self.cache.run_pending_tasks();
        self.sweep_index();
        Ok(0)
    }

    /// The number of stored sessions after the pending housekeeping ran (so within
    /// `max_entries`). Sessions expired since the last housekeeping may still count.
    async fn count(&self) -> Result<u64> {
        self.cache.run_pending_tasks();
        Ok(self.cache.entry_count())
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let now = Timestamp::now();
        let mut keys: Vec<SessionKey> = self
            .cache
            .iter()
            .filter(|(k, slot)| after.is_none_or(|a| **k > *a) && slot.read(now, |_| ()).is_some())
            .map(|(k, _)| SessionKey::clone(&k))
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

/// Every call of the engine is a lookup and a lock in this process: the session handle
/// makes them without a boxed future (see `session_core::store`, "Stores that answer
/// without waiting").
impl ImmediateStore for MemoryStore {
    fn insert_new_now(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.check_size(record)?;
        let now = Timestamp::now();
        if record.is_expired_at(now) {
            // Expired on arrival: as good as absent, so it takes no room. It may replace
            // an expired record, never a live one.
            return Ok(match self.read(key, now, |_| ()) {
                Some(_) => Inserted::KeyTaken,
                None => Inserted::Created,
            });
        }
        // Encoded before any lock is taken.
        let stored = Stored::encode(record, record.version)?;
        // Create-if-absent under the key's stripe of the create lock: every new slot is
        // inserted here, so no other create can slip in between the check and the
        // insert. (moka's own `or_insert_with` does the same through a waiter map and
        // flushes its epoch collector on every insert: twice the cost.)
        let create = self.create_lock(key);
        // Through the lookup table, which tells moka nothing: a new key (the rule:
        // keys are minted fresh) is absent.
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
        let slot = Arc::new(Slot::new(key.clone(), stored, self, now));
        self.lookup.insert(key.clone(), Arc::downgrade(&slot));
        self.cache.insert(key.clone(), slot);
        drop(create);
        if let Some(p) = principal {
            // A sign-in: forget the principal's sessions that ended meanwhile.
            self.prune_principal(p);
        }
        Ok(Inserted::Created)
    }

    fn load_now(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.read(key, Timestamp::now(), Stored::decode).transpose()
    }

    fn load_lazy_now(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.read(key, Timestamp::now(), Stored::decode_lazy)
            .transpose()
    }

    fn update_now(
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

    fn delete_now(&self, key: &SessionKey) -> Result<bool> {
        let Some(slot) = self.cache.remove(key) else {
            return Ok(false);
        };
        let was = slot.lock().take();
        if let Some(p) = was.as_ref().and_then(|r| r.principal()) {
            self.prune(p, key, |_| ());
        }
        Ok(was.is_some_and(|r| !r.is_expired_at(Timestamp::now())))
    }

    fn touch_now(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        // In place: the encoded record stays as it is (see `Stored`).
        self.modify(key, |cur| {
            cur.expires_at = expires_at;
            Ok(())
        })
    }

    fn exists_now(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.read(key, Timestamp::now(), |_| ()).is_some())
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
            record(json!({ "deep": deep }), Expiry::Default),
        ]
        .map(|mut r| {
            r.created_at = Timestamp::from_unix_millis(i64::MIN);
            r.expires_at = r.created_at;
            r
        });
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

    #[test]
    fn key_hashes_spread_generated_keys_and_differ_per_store() {
        let (a, b) = (KeyHash::new(), KeyHash::new());
        let keys: Vec<SessionKey> = (0..100_000)
            .map(|_| SessionKey::generate().expect("rng"))
            .collect();
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|k| a.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len(), "64-bit collisions");
        // The low bits (a table's bucket) and the high bits (moka's segment) both spread:
        // Pearson's chi-squared over 1,024 buckets has 1,023 degrees of freedom (mean
        // 1,023, standard deviation 45); a uniform hash stays below 1,023 + 7 sd except
        // about once in 10^11 runs, while a hash that leaves even a quarter of the
        // buckets empty scores above 30,000.
        for shift in [0, 54] {
            let mut buckets = [0u64; 1024];
            for h in &hashes {
                buckets[((h >> shift) & 1023) as usize] += 1;
            }
            let expected = hashes.len() as f64 / 1024.0;
            let chi2: f64 = buckets
                .iter()
                .map(|&n| (n as f64 - expected).powi(2) / expected)
                .sum();
            assert!(
                chi2 < 1023.0 + 7.0 * 45.2,
                "shift {shift}: chi-squared {chi2:.0}"
            );
        }
        assert_ne!(a.hash_one(&keys[0]), b.hash_one(&keys[0]), "unseeded");
    }

    #[tokio::test]
    async fn bounded_with_eviction() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 10 });
        for _ in 0..100 {
            let r = Record::with_ttl(Default::default(), 60);
            store.create(&r).await.expect("create");
        }
        assert!(store.count().await.expect("count") <= 10);
        // Evictions are counted as moka frees the dropped sessions, a few operations
        // after its housekeeping dropped them.
        for _ in 0..1000 {
            if store.evictions() >= 90 {
                break;
            }
            store.run_pending_tasks();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(store.evictions(), 90);
    }

    #[tokio::test]
    async fn expired_records_take_no_room() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 4 });
        for _ in 0..3 {
            store
                .create(&Record::with_ttl(Default::default(), -1))
                .await
                .expect("create expired");
        }
        // A record expired on arrival is never kept.
        assert_eq!(store.count().await.expect("count"), 0);
        let mut live = Vec::new();
        for _ in 0..4 {
            live.push(
                store
                    .create(&Record::with_ttl(Default::default(), 60))
                    .await
                    .expect("create"),
            );
        }
        store.run_pending_tasks();
        assert_eq!(store.evictions(), 0);
        for k in &live {
            assert!(store.exists(k).await.expect("exists"));
        }
    }
}
