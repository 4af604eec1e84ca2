//! Maintenance: the optional capability an operator tool discovers from a built store.
//!
//! Serving sessions needs only [`SessionStore`]. Looking after a store — creating or
//! upgrading its schema, deleting expired records in batches with a running count,
//! reporting how many records it holds and how big they are — is a separate, optional
//! trait, [`Maintenance`], which an engine implements when it has something to offer.
//! A tool that holds nothing but an `Arc<dyn SessionStore>` (the `sessions` command
//! line, an application's admin endpoint) asks the store for it:
//!
//! ```
//! # use session_core::SessionStore;
//! # async fn run(store: &dyn SessionStore) -> session_core::Result<()> {
//! match store.maintenance() {
//!     Some(m) => match m.migrate().await? {
//!         Some(done) if done.created() => println!("created {}", done.object),
//!         Some(done) => println!("{} at schema version {}", done.object, done.to),
//!         None => println!("{} keeps no schema", m.target()),
//!     },
//!     None => println!("engine {} offers no maintenance", store.engine()),
//! }
//! # Ok(()) }
//! ```
//!
//! Discovery is a method of [`SessionStore`] ([`SessionStore::maintenance`], `None` by
//! default), so it works through `dyn SessionStore` without downcasting, the way
//! OpenDAL's layers expose optional capabilities. Stores that wrap another store forward
//! it: [`crate::HashedKeys`] forwards the inner store's maintenance unchanged (schema,
//! expiry sweeps and statistics do not depend on the keys; statistics scan the derived
//! keys the inner store holds), and the `cached_db` engine forwards its durable store's.
//!
//! Listing keys stays on [`SessionStore`] ([`SessionStore::list`],
//! [`SessionStore::count`], flagged by [`crate::Capabilities::listing`]): copying
//! sessions needs keys a store can load, which is not a maintenance matter, and a hashing
//! wrapper does not claim it.
//!
//! [`scan_stats`] is the statistics of any store that lists its keys, by reading every
//! record once: an engine with nothing faster implements [`Maintenance::stats`] with it,
//! and tools use it for stores without the capability.

use async_trait::async_trait;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::key::SessionKey;
use crate::store::SessionStore;
use crate::time::Timestamp;

/// Upper bounds (exclusive, in bytes) of the size classes of [`StoreStats::sizes`]; the
/// last class has no bound.
pub const SIZE_BUCKETS: [u64; 6] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, u64::MAX];

/// Keys read per page by [`scan_stats`].
const PAGE: usize = 1000;

/// A progress callback: called with the running total (records removed, records read).
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What [`Maintenance::migrate`] did to a store's schema.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaMigration {
    /// What carries the schema, for messages: `table sessions`.
    pub object: String,
    /// The schema version before the run (0: it did not exist).
    pub from: u64,
    /// The schema version after the run.
    pub to: u64,
}

impl SchemaMigration {
    /// A migration of `object` from schema version `from` to `to`.
    pub fn new(object: impl Into<String>, from: u64, to: u64) -> Self {
        SchemaMigration {
            object: object.into(),
            from,
            to,
        }
    }

    /// Whether the run created the schema (there was none before).
    pub fn created(&self) -> bool {
        self.from == 0 && self.to > 0
    }

    /// Whether the run changed anything.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// What [`Maintenance::clear_expired`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClearReport {
    /// Expired records removed.
    pub removed: u64,
    /// Entries that could not be checked and were left in place (logged by fingerprint).
    pub skipped: u64,
    /// What the skipped entries were, for people: `2 not regular files, 0 that could not
    /// be checked`.
    pub skipped_detail: Option<String>,
}

impl ClearReport {
    /// `removed` records removed, nothing skipped.
    pub fn removed(removed: u64) -> Self {
        ClearReport {
            removed,
            ..ClearReport::default()
        }
    }

    /// This report with `skipped` entries left in place, described by `detail`.
    pub fn with_skipped(mut self, skipped: u64, detail: Option<String>) -> Self {
        self.skipped = skipped;
        self.skipped_detail = detail;
        self
    }
}

/// What a store holds ([`Maintenance::stats`], [`scan_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Records that decode and have not expired.
    pub live: u64,
    /// Records past their deadline, not yet removed.
    pub expired: u64,
    /// Records whose bytes the codec cannot read (corrupt or foreign).
    pub unreadable: u64,
    /// Entries that could not be read at all (a store's own notion: not a regular file,
    /// over the size limit); left in place and logged by the store.
    pub skipped: u64,
    /// Sum of the stored sizes of the records counted above, in bytes.
    pub total_bytes: u64,
    /// The largest stored size, in bytes.
    pub largest_bytes: u64,
    /// How many records fall in each class of [`SIZE_BUCKETS`].
    pub sizes: [u64; SIZE_BUCKETS.len()],
    /// The earliest deadline among the expired records still stored: how far cleanup
    /// lags behind. `None` when none is stored, or the store cannot tell.
    pub oldest_expired: Option<Timestamp>,
}

impl StoreStats {
    /// Counts one record of `size` stored bytes: live (`Some(true)`), expired
    /// (`Some(false)`) or unreadable (`None`).
    pub fn add(&mut self, size: u64, live: Option<bool>) {
        match live {
            Some(true) => self.live += 1,
            Some(false) => self.expired += 1,
            None => self.unreadable += 1,
        }
        self.total_bytes += size;
        self.largest_bytes = self.largest_bytes.max(size);
        if let Some(i) = SIZE_BUCKETS.iter().position(|bound| size < *bound) {
            self.sizes[i] += 1;
        }
    }

    /// Notes an expired record's deadline for [`StoreStats::oldest_expired`].
    pub fn note_expired(&mut self, expires_at: Timestamp) {
        if self.oldest_expired.is_none_or(|t| expires_at < t) {
            self.oldest_expired = Some(expires_at);
        }
    }
}

/// Optional maintenance operations of a store, found through
/// [`SessionStore::maintenance`]. See the [module docs](self).
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// What the operations act on, for messages: `db (sessions)`, `file`.
    fn target(&self) -> String;

    /// Creates or upgrades the store's schema to the version this build knows; safe to
    /// run again, and from several processes at once. `None` for a store that keeps no
    /// schema (the default).
    async fn migrate(&self) -> Result<Option<SchemaMigration>> {
        Ok(None)
    }

    /// The batch [`Maintenance::clear_expired`] takes when the operator names none
    /// (`sessions clear-expired` without `--batch-size`): 10,000 by default; a store
    /// whose batches hold a lock over more than their rows says less (the `db` engine
    /// on SQLite: 1,000).
    fn default_batch(&self) -> u64 {
        10_000
    }

    /// Removes expired records, at most `batch` per step (smaller batches hold shorter
    /// locks; a store without batches may ignore it), calling `progress` with the
    /// running total.
    async fn clear_expired(&self, batch: u64, progress: Progress<'_>) -> Result<ClearReport>;

    /// Counts and sizes of what the store holds, calling `progress` with the number of
    /// records read so far.
    async fn stats(&self, progress: Progress<'_>) -> Result<StoreStats>;
}

/// The statistics of any store that lists its keys: every record read once, through
/// [`SessionStore::raw`] where the store offers it (sizes as stored; unreadable bytes
/// counted, not fatal), else through [`SessionStore::load`] (sizes as `codec` encodes).
///
/// [`Error::Unsupported`] when the store does not list its keys.
pub async fn scan_stats(
    store: &dyn SessionStore,
    codec: &dyn Codec,
    progress: Progress<'_>,
) -> Result<StoreStats> {
    if !store.capabilities().listing {
        return Err(Error::unsupported(
            store.engine(),
            "listing sessions (needed by stats)",
        ));
    }
    let mut s = StoreStats::default();
    let now = Timestamp::now();
    let mut after: Option<SessionKey> = None;
    let mut read = 0u64;
    loop {
        let page = store.list(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(s);
        };
        after = Some(last.clone());
        for k in page {
            read += 1;
            progress(read);
            let (size, live) = match store.raw() {
                Some(raw) => match raw.get_raw(&k).await {
                    Ok(None) => continue,
                    Ok(Some(bytes)) => {
                        let record = codec.decode(&bytes).ok();
                        if let Some(r) = record.as_ref().filter(|r| r.is_expired_at(now)) {
                            s.note_expired(r.expires_at);
                        }
                        (bytes.len() as u64, record.map(|r| !r.is_expired_at(now)))
                    }
                    // Not a session entry, or one over the limit: the store said which
                    // (by fingerprint) in its log; one of them must not end the report.
                    Err(Error::Codec(_)) => {
                        s.skipped += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                None => match store.load(&k).await {
                    Ok(Some(r)) => (
                        codec.encode(&r).map(|b| b.len() as u64).unwrap_or(0),
                        Some(true),
                    ),
                    Ok(None) => {
                        s.expired += 1;
                        continue;
                    }
                    Err(Error::Codec(_)) => {
                        s.unreadable += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            s.add(size, live);
        }
    }
}
