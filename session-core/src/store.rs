//! The storage contract every backend implements.
//!
//! A store keeps [`Record`]s under [`SessionKey`]s and promises:
//! - [`SessionStore::insert_new`] writes only if the key is absent (SQL unique insert,
//!   `SET NX`, `O_EXCL`), so [`SessionStore::create`] never overwrites, re-rolling the key
//!   on a collision;
//! - [`SessionStore::load`] returns `None` for a missing **or expired** record, even
//!   before any cleanup ran;
//! - [`SessionStore::update`] never resurrects: a record deleted or expired meanwhile is
//!   [`Error::NotFound`]; given an expected version it is compare-and-set and reports
//!   [`Error::Conflict`]. Every successful write bumps the version;
//! - [`SessionStore::delete`] is idempotent; [`SessionStore::touch`] moves the deadline
//!   without rewriting the data or the version; [`SessionStore::clear_expired`] returns
//!   how many records it removed.
//!
//! The conformance suite in the `integration-tests` crate checks all of this on any store.
//!
//! ## Stores that answer without waiting
//!
//! Every [`SessionStore`] call returns a boxed future (the trait is object-safe through
//! `async_trait`), and every store layer wrapping it adds one more: an allocation, a free
//! and the moves of the future, a few hundred instructions. Next to a network round trip
//! that is nothing; next to an in-process store's lookup (the `memory` engine answers a
//! load in a few thousand instructions) it is most of what a layer costs. Such a store
//! also implements [`ImmediateStore`], the same operations as plain functions, and offers
//! it through [`SessionStore::immediate`]; a layer whose work needs no waiting (the
//! metrics layer) offers its own over the inner store's. The session handle calls the
//! store through [`StoreCalls`], which takes that path when it is there and the
//! `async` method otherwise, so a layer that knows nothing of it (a third party's, the
//! timeout layer) is never bypassed: it offers none (the default), and its store is
//! called as before.

use std::fmt;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::{KeyGenerator, SessionKey};
use crate::lazy::LazyRecord;
use crate::maintenance::Maintenance;
use crate::record::Record;
use crate::time::Timestamp;
use crate::users::UserIndex;

/// How many keys [`SessionStore::create`] tries before giving up.
pub const MAX_CREATE_ATTEMPTS: u32 = 16;

/// What a backend guarantees; the conformance suite picks its cases from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The server drops expired records by itself (Redis, Memcached TTLs).
    pub native_ttl: bool,
    /// Several processes can share the store safely.
    pub cross_process: bool,
    /// Records survive a restart of the process and of the server.
    pub durable: bool,
    /// `update` with an expected version is atomic compare-and-set.
    pub compare_and_set: bool,
    /// `count` and `list` are supported.
    pub listing: bool,
    /// The server may evict live records under memory pressure (a cache).
    pub may_evict: bool,
}

impl Capabilities {
    /// No guarantees beyond the trait's contract.
    pub const fn none() -> Self {
        Capabilities {
            native_ttl: false,
            cross_process: false,
            durable: false,
            compare_and_set: false,
            listing: false,
            may_evict: false,
        }
    }

    /// With `native_ttl` set.
    pub const fn native_ttl(mut self, v: bool) -> Self {
        self.native_ttl = v;
        self
    }
    /// With `cross_process` set.
    pub const fn cross_process(mut self, v: bool) -> Self {
        self.cross_process = v;
        self
    }
    /// With `durable` set.
    pub const fn durable(mut self, v: bool) -> Self {
        self.durable = v;
        self
    }
    /// With `compare_and_set` set.
    pub const fn compare_and_set(mut self, v: bool) -> Self {
        self.compare_and_set = v;
        self
    }
    /// With `listing` set.
    pub const fn listing(mut self, v: bool) -> Self {
        self.listing = v;
        self
    }
    /// With `may_evict` set.
    pub const fn may_evict(mut self, v: bool) -> Self {
        self.may_evict = v;
        self
    }
}

/// Outcome of [`SessionStore::insert_new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The record was written under the key.
    Created,
    /// The key was already taken; nothing was written.
    KeyTaken,
}

/// A session store. Object-safe: applications hold an `Arc<dyn SessionStore>`.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The engine's name (`"file"`, `"db"`, `"redis"`, ...), used in errors and logs.
    fn engine(&self) -> &str;

    /// What this store guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Writes `record` under `key` only if no live record holds the key (an expired one
    /// may be replaced). The stored version is `record.version`.
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted>;

    /// Mints a fresh key and inserts `record` under it, re-rolling on collision.
    async fn create(&self, record: &Record) -> Result<SessionKey> {
        create_with(self, record, &SessionKey::generate).await
    }

    /// The live record under `key`, or `None` when it is missing or expired.
    ///
    /// Stored bytes the codec cannot decode are [`Error::Codec`] (never `None`, never
    /// [`Error::Backend`]), with a `tracing::warn!` carrying the key's
    /// [`SessionKey::fingerprint`] (never the key). The session handle then starts a new
    /// session under a new key and leaves the bytes in place.
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// [`SessionStore::load`], the data left encoded until it is read
    /// ([`crate::lazy`]): what the session handle calls. By default the record is loaded
    /// whole. A store that keeps encoded records hands their bytes to
    /// [`Codec::decode_lazy`](crate::Codec::decode_lazy) instead of
    /// [`Codec::decode`](crate::Codec::decode); a store wrapping another forwards the
    /// inner store's, doing its own work around it.
    ///
    /// The contract is `load`'s: `None` for a missing or expired record, and
    /// [`Error::Codec`] for a header the codec cannot decode. Damage inside the data is
    /// found when the data is read ([`crate::LazyData`]).
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        Ok(self.load(key).await?.map(LazyRecord::from))
    }

    /// Replaces the record's data, expiry and deadline, returning the new version.
    ///
    /// Fails with [`Error::NotFound`] when no live record exists (never an upsert), and
    /// with [`Error::Conflict`] when `expected_version` is given and differs.
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64>;

    /// Removes the record; `Ok(false)` when there was none. Idempotent.
    async fn delete(&self, key: &SessionKey) -> Result<bool>;

    /// Moves the deadline of a live record to `expires_at` without touching its data or
    /// version. [`Error::NotFound`] when there is no live record.
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()>;

    /// Whether a live record exists under `key`.
    async fn exists(&self, key: &SessionKey) -> Result<bool>;

    /// Removes expired records and returns how many it removed (0 where the server
    /// expires records itself).
    async fn clear_expired(&self) -> Result<u64>;

    /// Number of records held (live and not yet cleared expired ones), where supported.
    async fn count(&self) -> Result<u64> {
        Err(Error::unsupported(self.engine(), "count"))
    }

    /// Up to `limit` keys in ascending order, strictly after `after`, where supported.
    /// Keyset pagination: pass the last key of a page to get the next.
    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let _ = (after, limit);
        Err(Error::unsupported(self.engine(), "list"))
    }

    /// Access to the stored bytes, for stores that keep encoded records.
    fn raw(&self) -> Option<&dyn RawAccess> {
        None
    }

    /// The store's maintenance operations (schema migration, batched expiry sweeps,
    /// statistics), for stores that offer them: how operator tools find them behind an
    /// `Arc<dyn SessionStore>`. `None` by default; a store wrapping another forwards the
    /// inner store's. See [`crate::maintenance`].
    fn maintenance(&self) -> Option<&dyn Maintenance> {
        None
    }

    /// The store's index of sessions by principal ([`crate::users`]), for stores that
    /// keep one. `None` by default (Memcached cannot list, so it has none); a store
    /// wrapping another forwards the inner store's.
    fn user_index(&self) -> Option<&dyn UserIndex> {
        None
    }

    /// The same store's operations as plain functions, for a store that answers without
    /// waiting (see the [module docs](self#stores-that-answer-without-waiting)). `None`
    /// by default. A store that wraps another must not forward the inner store's (its
    /// calls would skip the wrapper's work); it may offer its own, doing that work.
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        None
    }
}

/// The operations of a [`SessionStore`] that answers without waiting (an in-process
/// store), as plain functions with the same contract as the `async` methods of the same
/// name. Offered through [`SessionStore::immediate`]; see the
/// [module docs](self#stores-that-answer-without-waiting).
pub trait ImmediateStore: Send + Sync {
    /// [`SessionStore::insert_new`].
    fn insert_new_now(&self, key: &SessionKey, record: &Record) -> Result<Inserted>;

    /// [`SessionStore::create`]: mints keys with [`SessionKey::generate`] until one is
    /// free, as [`create_with`] does.
    fn create_now(&self, record: &Record) -> Result<SessionKey> {
        create_now_with(|key| self.insert_new_now(key, record))
    }

    /// [`SessionStore::load`].
    fn load_now(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// [`SessionStore::load_lazy`]; by default the record is loaded whole.
    fn load_lazy_now(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        Ok(self.load_now(key)?.map(LazyRecord::from))
    }

    /// [`SessionStore::update`].
    fn update_now(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64>;

    /// [`SessionStore::delete`].
    fn delete_now(&self, key: &SessionKey) -> Result<bool>;

    /// [`SessionStore::touch`].
    fn touch_now(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()>;

    /// [`SessionStore::exists`].
    fn exists_now(&self, key: &SessionKey) -> Result<bool>;

    /// The metrics layer's instruments, when this engine hosts them in its own calls
    /// (see [`crate::metrics::HostedMetrics`]): the layer then measures every call above
    /// through them instead of wrapping the engine. `None` (the default): the layer
    /// wraps it.
    #[cfg(feature = "metrics")]
    fn hosted_metrics(&self) -> Option<&crate::metrics::HostedMetrics> {
        None
    }
}

/// [`ImmediateStore::create_now`] over `insert_new`: mints keys with
/// [`SessionKey::generate`] until `insert_new` creates one, as [`create_with`] does.
pub fn create_now_with(
    mut insert_new: impl FnMut(&SessionKey) -> Result<Inserted>,
) -> Result<SessionKey> {
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let key = SessionKey::generate()?;
        if let Inserted::Created = insert_new(&key)? {
            return Ok(key);
        }
        tracing::debug!("session key collision; re-rolling");
    }
    Err(Error::KeyCollision {
        attempts: MAX_CREATE_ATTEMPTS,
    })
}

/// Calls a store the way the session handle does: through [`SessionStore::immediate`]
/// when the store offers it (no future is boxed), through the `async` method otherwise.
/// The result is the same either way; only the cost differs. Implemented for every
/// store, `dyn SessionStore` included.
///
/// ```
/// use session_core::store::StoreCalls;
/// # async fn demo(store: &dyn session_core::SessionStore, key: &session_core::SessionKey) -> session_core::Result<()> {
/// if let Some(record) = store.call_load(key).await? {
///     println!("version {}", record.version);
/// }
/// # Ok(())
/// # }
/// ```
pub trait StoreCalls: SessionStore {
    /// [`SessionStore::create`].
    fn call_create(
        &self,
        record: &Record,
    ) -> impl std::future::Future<Output = Result<SessionKey>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.create_now(record),
                None => self.create(record).await,
            }
        }
    }

    /// [`SessionStore::load`].
    fn call_load(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<Record>>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.load_now(key),
                None => self.load(key).await,
            }
        }
    }

    /// [`SessionStore::load_lazy`].
    fn call_load_lazy(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<Option<LazyRecord>>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.load_lazy_now(key),
                None => self.load_lazy(key).await,
            }
        }
    }

    /// [`SessionStore::update`].
    fn call_update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> impl std::future::Future<Output = Result<u64>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.update_now(key, record, expected_version),
                None => self.update(key, record, expected_version).await,
            }
        }
    }

    /// [`SessionStore::delete`].
    fn call_delete(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<bool>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.delete_now(key),
                None => self.delete(key).await,
            }
        }
    }

    /// [`SessionStore::touch`].
    fn call_touch(
        &self,
        key: &SessionKey,
        expires_at: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.touch_now(key, expires_at),
                None => self.touch(key, expires_at).await,
            }
        }
    }

    /// [`SessionStore::exists`].
    fn call_exists(
        &self,
        key: &SessionKey,
    ) -> impl std::future::Future<Output = Result<bool>> + Send {
        async move {
            match self.immediate() {
                Some(now) => now.exists_now(key),
                None => self.exists(key).await,
            }
        }
    }
}

impl<S: SessionStore + ?Sized> StoreCalls for S {}

/// Byte-level access to a store that keeps encoded records: used by operator tools
/// (`sessions show --raw`) and by the conformance suite to plant corrupt bytes.
#[async_trait]
pub trait RawAccess: Send + Sync {
    /// Writes `bytes` as the stored form of `key`, live until `expires_at`, replacing anything there.
    ///
    /// The bytes are stored as they are (never decoded), at version 1 where the key held
    /// nothing (the SQL store bumps the version of a row it replaces). A store that keeps the
    /// deadline and version outside the encoded bytes (columns, a header, a file's
    /// mtime) sets them there, as [`SessionStore::touch`] moves only that deadline, and
    /// on load overwrites the decoded record's copies with them.
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()>;
    /// The stored bytes of `key`, expired or not.
    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>>;
}

/// [`SessionStore::create`] with an explicit key generator: the hook tests use to force
/// collisions.
pub async fn create_with<S: SessionStore + ?Sized>(
    store: &S,
    record: &Record,
    keygen: &KeyGenerator,
) -> Result<SessionKey> {
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let key = keygen()?;
        match store.insert_new(&key, record).await? {
            Inserted::Created => return Ok(key),
            Inserted::KeyTaken => {
                tracing::debug!(engine = store.engine(), "session key collision; re-rolling");
            }
        }
    }
    Err(Error::KeyCollision {
        attempts: MAX_CREATE_ATTEMPTS,
    })
}
