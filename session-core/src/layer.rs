//! Store layers: wrappers any store can wear, as OpenDAL's `Layer` and tower's `Layer`.
//!
//! A [`StoreLayer`] takes a store and returns a store that behaves the same with
//! something added around every call: keys hashed at rest ([`HashKeysLayer`]), a
//! deadline on every operation ([`TimeoutLayer`]), metrics, tracing. A layer sees the
//! store only as an `Arc<dyn SessionStore>`, so it works on any engine, built-in or
//! third-party, and layers stack:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use session_core::layer::{HashKeysLayer, StoreLayerExt, StoreLayers, TimeoutLayer};
//! use session_core::{Record, SessionData, SessionStore};
//! # use session_core::{Capabilities, Inserted, Result, SessionKey, Timestamp};
//! # /// Stands in for any store, a third-party one included.
//! # #[derive(Debug, Default)]
//! # struct KvStore(std::sync::Mutex<std::collections::HashMap<String, Record>>);
//! # #[session_core::async_trait]
//! # impl SessionStore for KvStore {
//! #     fn engine(&self) -> &str { "kv" }
//! #     fn capabilities(&self) -> Capabilities { Capabilities::none() }
//! #     async fn insert_new(&self, k: &SessionKey, r: &Record) -> Result<Inserted> {
//! #         self.0.lock().unwrap().insert(k.as_str().into(), r.clone()); Ok(Inserted::Created)
//! #     }
//! #     async fn load(&self, k: &SessionKey) -> Result<Option<Record>> {
//! #         Ok(self.0.lock().unwrap().get(k.as_str()).cloned())
//! #     }
//! #     async fn update(&self, _: &SessionKey, _: &Record, _: Option<u64>) -> Result<u64> { unimplemented!() }
//! #     async fn delete(&self, _: &SessionKey) -> Result<bool> { unimplemented!() }
//! #     async fn touch(&self, _: &SessionKey, _: Timestamp) -> Result<()> { unimplemented!() }
//! #     async fn exists(&self, _: &SessionKey) -> Result<bool> { unimplemented!() }
//! #     async fn clear_expired(&self) -> Result<u64> { Ok(0) }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! // One layer at a time ...
//! let store = KvStore::default().with_layer(TimeoutLayer::new(Duration::from_secs(2)));
//! assert_eq!(store.engine(), "kv");
//!
//! // ... or a stack, innermost first: the deadline wraps the store, the hashing wraps
//! // the deadline.
//! let layers = StoreLayers::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .layer(HashKeysLayer);
//! let store: Arc<dyn SessionStore> = layers.apply(Arc::new(KvStore::default()));
//! let key = store.create(&Record::with_ttl(SessionData::new(), 60)).await?;
//! assert!(store.load(&key).await?.is_some());
//! # Ok(()) }
//! ```
//!
//! From configuration, the root key `layers` lists layers by name, innermost first, and
//! each reads its options from the root section of its name; `hash_keys = true` adds
//! the hashing layer outermost:
//!
//! ```toml
//! engine = "file"
//! layers = ["timeout"]
//! hash_keys = true
//!
//! [timeout]
//! per_call_ms = 2000    # every session operation (load, update, ...), required
//! sweep_ms = 60000      # clear_expired, count and list; absent: not bounded
//! ```
//!
//! [`crate::EngineRegistry::register_layer`] adds a layer under a name of its own,
//! configured from its own section with the same strictness as an engine's (unknown
//! keys are errors, found before anything is built).
//!
//! A layer wraps the store as a whole: it does not reach into a composite engine's
//! parts. Engines that need a layer on a part apply it themselves (the `cache` engine
//! wears a [`TimeoutLayer`] of its `command_timeout_ms`, so `cached_db` falls back to
//! its database when the cache stops answering).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::hashed::HashedKeys;
use crate::key::SessionKey;
use crate::lazy::LazyRecord;
use crate::record::Record;
use crate::store::{Capabilities, Inserted, RawAccess, SessionStore};
use crate::time::Timestamp;

/// A wrapper any store can wear: given the store, returns the store with the layer's
/// behaviour added. Object-safe; closures `Fn(Arc<dyn SessionStore>) -> Arc<dyn
/// SessionStore>` are layers too.
///
/// A layer's store should forward [`SessionStore::raw`] and
/// [`SessionStore::maintenance`] to the store it wraps (as [`TimeoutLayer`]'s does):
/// without them, `sessions migrate`, `stats` and `clear-expired` see no maintenance
/// operations behind the layer.
pub trait StoreLayer: Send + Sync + 'static {
    /// Wraps `inner`.
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore>;
}

impl<F> StoreLayer for F
where
    F: Fn(Arc<dyn SessionStore>) -> Arc<dyn SessionStore> + Send + Sync + 'static,
{
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        self(inner)
    }
}

impl StoreLayer for Arc<dyn StoreLayer> {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        (**self).layer(inner)
    }
}

/// `store.with_layer(layer)`: on any store type and on `Arc<dyn SessionStore>`.
pub trait StoreLayerExt {
    /// This store wearing `layer`.
    fn with_layer(self, layer: impl StoreLayer) -> Arc<dyn SessionStore>;
}

impl StoreLayerExt for Arc<dyn SessionStore> {
    fn with_layer(self, layer: impl StoreLayer) -> Arc<dyn SessionStore> {
        layer.layer(self)
    }
}

impl<S: SessionStore + 'static> StoreLayerExt for S {
    fn with_layer(self, layer: impl StoreLayer) -> Arc<dyn SessionStore> {
        layer.layer(Arc::new(self))
    }
}

/// A stack of layers, applied innermost first: the first layer added wraps the store,
/// the next wraps that, and so on (OpenDAL's order).
#[derive(Clone, Default)]
pub struct StoreLayers {
    layers: Vec<Arc<dyn StoreLayer>>,
}

impl fmt::Debug for StoreLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLayers")
            .field("len", &self.layers.len())
            .finish()
    }
}

impl StoreLayers {
    /// No layers: [`StoreLayers::apply`] returns the store as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// This stack with `layer` added outside the layers already in it.
    pub fn layer(mut self, layer: impl StoreLayer) -> Self {
        self.push(Arc::new(layer));
        self
    }

    /// Adds `layer` outside the layers already in the stack.
    pub fn push(&mut self, layer: Arc<dyn StoreLayer>) {
        self.layers.push(layer);
    }

    /// How many layers the stack holds.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack holds no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// `store` wearing every layer of the stack.
    pub fn apply(&self, store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        self.layers.iter().fold(store, |s, l| l.layer(s))
    }
}

impl StoreLayer for StoreLayers {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        self.apply(inner)
    }
}

/// Keys hashed at rest: wraps the store in [`HashedKeys`] (see [`crate::hashed`]).
///
/// Registered as the `hash_keys` layer; `hash_keys = true` in the configuration applies
/// it outermost, so every other layer sees derived keys only. Wear it once: keys hashed
/// twice are still valid keys but no longer the ones a `hash_keys` store written
/// elsewhere holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct HashKeysLayer;

impl StoreLayer for HashKeysLayer {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(HashedKeys::new(inner))
    }
}

/// `fut`, or [`Error::Timeout`] of `engine` when it has not finished `after` from now.
///
/// The one deadline of the framework: [`TimeoutLayer`] bounds operations with it, and
/// drivers bound what they run outside an operation (connection set-up, per-statement
/// deadlines of a long sweep) with it, so a timeout is the same error everywhere. The
/// future is dropped when the deadline passes.
pub async fn deadline<F: Future>(engine: &str, after: Duration, fut: F) -> Result<F::Output> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| Error::Timeout {
            engine: engine.to_owned(),
            after,
        })
}

/// A deadline on every operation: an operation that has not finished in time is
/// dropped and fails with [`Error::Timeout`] (an "unavailable" error: the middleware
/// answers 503), naming the wrapped store's engine.
///
/// The per-call bound covers the session operations (`insert_new`, `create`, `load`,
/// `update`, `delete`, `touch`, `exists`, and raw access); the sweep bound covers
/// `clear_expired`, `count` and `list`, whose length grows with the store, and is off
/// unless set ([`TimeoutLayer::sweep`]). Like any timeout, one on a write leaves
/// unknown whether the server applied it.
///
/// Registered as the `timeout` layer, configured from the `[timeout]` section
/// ([`TimeoutConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutLayer {
    per_call: Duration,
    sweep: Option<Duration>,
}

impl TimeoutLayer {
    /// Session operations bounded by `per_call`; sweeps not bounded.
    pub fn new(per_call: Duration) -> Self {
        TimeoutLayer {
            per_call,
            sweep: None,
        }
    }

    /// This layer bounding `clear_expired`, `count` and `list` by `sweep` too.
    pub fn sweep(mut self, sweep: Option<Duration>) -> Self {
        self.sweep = sweep;
        self
    }

    /// The bound of one session operation.
    pub fn per_call(&self) -> Duration {
        self.per_call
    }
}

impl StoreLayer for TimeoutLayer {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(TimeoutStore {
            inner,
            per_call: self.per_call,
            sweep: self.sweep,
        })
    }
}

/// `[timeout]`: the options of the `timeout` layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Bound of one session operation, in milliseconds; required, at least 1.
    pub per_call_ms: Option<u64>,
    /// Bound of `clear_expired`, `count` and `list`, in milliseconds; absent: unbounded.
    pub sweep_ms: Option<u64>,
}

impl TimeoutConfig {
    /// The layer these options describe; errors name the key (`timeout.per_call_ms`).
    pub fn layer(&self) -> Result<TimeoutLayer> {
        let per_call = match self.per_call_ms {
            None => return Err(Error::config("timeout.per_call_ms", "is required")),
            Some(0) => {
                return Err(Error::config(
                    "timeout.per_call_ms",
                    "must be at least 1 (milliseconds)",
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let sweep = match self.sweep_ms {
            Some(0) => {
                return Err(Error::config(
                    "timeout.sweep_ms",
                    "must be at least 1 (milliseconds), or absent for no bound",
                ));
            }
            other => other.map(Duration::from_millis),
        };
        Ok(TimeoutLayer::new(per_call).sweep(sweep))
    }
}

/// A store wearing a [`TimeoutLayer`].
pub struct TimeoutStore {
    inner: Arc<dyn SessionStore>,
    per_call: Duration,
    sweep: Option<Duration>,
}

impl TimeoutStore {
    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }

    async fn call<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        deadline(self.inner.engine(), self.per_call, fut).await?
    }

    async fn sweep<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match self.sweep {
            Some(after) => deadline(self.inner.engine(), after, fut).await?,
            None => fut.await,
        }
    }
}

impl fmt::Debug for TimeoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutStore")
            .field("per_call", &self.per_call)
            .field("sweep", &self.sweep)
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl SessionStore for TimeoutStore {
    fn engine(&self) -> &str {
        self.inner.engine()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.call(self.inner.insert_new(key, record)).await
    }

    async fn create(&self, record: &Record) -> Result<SessionKey> {
        self.call(self.inner.create(record)).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.call(self.inner.load(key)).await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.call(self.inner.load_lazy(key)).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.call(self.inner.update(key, record, expected_version))
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.call(self.inner.delete(key)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.call(self.inner.touch(key, expires_at)).await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.call(self.inner.exists(key)).await
    }

    async fn clear_expired(&self) -> Result<u64> {
        self.sweep(self.inner.clear_expired()).await
    }

    async fn count(&self) -> Result<u64> {
        self.sweep(self.inner.count()).await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.sweep(self.inner.list(after, limit)).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner.raw().map(|_| self as &dyn RawAccess)
    }

    /// The inner store's maintenance, unbounded: migrations and sweeps are operator work
    /// that grows with the store, not a request's call.
    fn maintenance(&self) -> Option<&dyn crate::Maintenance> {
        self.inner.maintenance()
    }

    /// The inner store's index, each call under the per-call bound (a request's "your
    /// devices" page or "sign out other devices" is a request's call).
    fn user_index(&self) -> Option<&dyn crate::UserIndex> {
        self.inner
            .user_index()
            .map(|_| self as &dyn crate::UserIndex)
    }
}

#[async_trait]
impl crate::UserIndex for TimeoutStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<crate::UserSession>> {
        self.call(crate::users::index_of(self.inner.as_ref())?.sessions_of(principal, current))
            .await
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        self.call(crate::users::index_of(self.inner.as_ref())?.end_session(principal, id))
            .await
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        self.call(crate::users::index_of(self.inner.as_ref())?.end_sessions(principal, keep))
            .await
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        self.call(crate::users::index_of(self.inner.as_ref())?.count_of(principal))
            .await
    }
}

/// Raw access under the per-call bound, as every other session operation.
#[async_trait]
impl RawAccess for TimeoutStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        match self.inner.raw() {
            Some(raw) => self.call(raw.put_raw(key, bytes, expires_at)).await,
            None => Err(Error::unsupported(self.engine(), "raw access")),
        }
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        match self.inner.raw() {
            Some(raw) => self.call(raw.get_raw(key)).await,
            None => Err(Error::unsupported(self.engine(), "raw access")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadlines_never_overflow() {
        // The configuration bounds timeouts only below: the largest ones mean "never".
        for after in [Duration::MAX, Duration::from_millis(u64::MAX)] {
            assert_eq!(deadline("t", after, async { 7 }).await.expect("in time"), 7);
        }
        let err = deadline("t", Duration::from_millis(1), std::future::pending::<()>())
            .await
            .expect_err("late");
        assert!(
            matches!(&err, Error::Timeout { engine, after } if engine == "t" && after.as_millis() == 1),
            "{err}"
        );
        assert!(err.is_unavailable());
    }

    #[test]
    fn timeout_config_names_its_keys() {
        let err = TimeoutConfig::default().layer().expect_err("required");
        assert!(err.to_string().contains("timeout.per_call_ms"), "{err}");
        let err = TimeoutConfig {
            per_call_ms: Some(0),
            sweep_ms: None,
        }
        .layer()
        .expect_err("zero");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let layer = TimeoutConfig {
            per_call_ms: Some(250),
            sweep_ms: Some(5000),
        }
        .layer()
        .expect("valid");
        assert_eq!(
            layer,
            TimeoutLayer::new(Duration::from_millis(250)).sweep(Some(Duration::from_secs(5)))
        );
    }
}
