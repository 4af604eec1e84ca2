//! A store wrapper that records every call made to the store it wraps.
//!
//! The bad-input cases use it to prove that a malformed cookie never reaches a store
//! (no load, no exists, nothing but the create of a brand-new key), and the handle cases
//! use it to prove laziness (`clear` and a fresh handle do no I/O). It is public so a
//! backend's own tests can make the same kind of assertion.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use session_core::{
    Capabilities, Inserted, RawAccess, Record, Result, SessionKey, SessionStore, Timestamp,
};

/// One call seen by a [`SpyStore`], with the key it named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `insert_new(key, _)`.
    InsertNew(SessionKey),
    /// `create(_)`, with the key it minted (`None` when it failed).
    Create(Option<SessionKey>),
    /// `load(key)`.
    Load(SessionKey),
    /// `update(key, _, expected_version)`.
    Update(SessionKey, Option<u64>),
    /// `delete(key)`.
    Delete(SessionKey),
    /// `touch(key, _)`.
    Touch(SessionKey),
    /// `exists(key)`.
    Exists(SessionKey),
    /// `clear_expired()`.
    ClearExpired,
    /// `count()`.
    Count,
    /// `list(after, limit)`.
    List,
}

impl Call {
    /// The key the call named, if any.
    pub fn key(&self) -> Option<&SessionKey> {
        match self {
            Call::InsertNew(k)
            | Call::Load(k)
            | Call::Update(k, _)
            | Call::Delete(k)
            | Call::Touch(k)
            | Call::Exists(k) => Some(k),
            Call::Create(k) => k.as_ref(),
            Call::ClearExpired | Call::Count | Call::List => None,
        }
    }
}

/// Wraps any store and records each call before forwarding it unchanged.
#[derive(Debug)]
pub struct SpyStore {
    inner: Arc<dyn SessionStore>,
    calls: Mutex<Vec<Call>>,
}

impl SpyStore {
    /// A spy in front of `inner`, with no calls recorded yet.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        SpyStore {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn log(&self) -> MutexGuard<'_, Vec<Call>> {
        // A panicking case must not turn every later read of the log into a panic too.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, call: Call) {
        self.log().push(call);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.log().clone()
    }

    /// How many calls so far.
    pub fn call_count(&self) -> usize {
        self.log().len()
    }

    /// How many `load` calls so far.
    pub fn loads(&self) -> usize {
        self.log()
            .iter()
            .filter(|c| matches!(c, Call::Load(_)))
            .count()
    }

    /// Forgets the calls recorded so far.
    pub fn reset(&self) {
        self.log().clear();
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }
}

#[async_trait]
impl SessionStore for SpyStore {
    fn engine(&self) -> &str {
        self.inner.engine()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.record(Call::InsertNew(key.clone()));
        self.inner.insert_new(key, record).await
    }

    async fn create(&self, record: &Record) -> Result<SessionKey> {
        // Forward to the inner `create` so a backend's own create strategy is what runs.
        let res = self.inner.create(record).await;
        self.record(Call::Create(res.as_ref().ok().cloned()));
        res
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.record(Call::Load(key.clone()));
        self.inner.load(key).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.record(Call::Update(key.clone(), expected_version));
        self.inner.update(key, record, expected_version).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.record(Call::Delete(key.clone()));
        self.inner.delete(key).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.record(Call::Touch(key.clone()));
        self.inner.touch(key, expires_at).await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.record(Call::Exists(key.clone()));
        self.inner.exists(key).await
    }

    async fn clear_expired(&self) -> Result<u64> {
        self.record(Call::ClearExpired);
        self.inner.clear_expired().await
    }

    async fn count(&self) -> Result<u64> {
        self.record(Call::Count);
        self.inner.count().await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        self.record(Call::List);
        self.inner.list(after, limit).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        self.inner.raw()
    }

    fn maintenance(&self) -> Option<&dyn session_core::Maintenance> {
        self.inner.maintenance()
    }

    fn user_index(&self) -> Option<&dyn session_core::UserIndex> {
        self.inner.user_index()
    }
}
