//! Our engines, built from configuration exactly as an application builds them, and
//! called as the session handle calls them ([`StoreCalls`]: an engine that answers
//! without waiting is called without a boxed future).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use session_core::{Config, EngineRegistry, Record, SessionStore, StoreCalls, Timestamp};

use crate::harness::{Key, R, TTL_SECS, Target, record};
use crate::wrong;

/// A registry with every built-in engine (what `sessions` and applications use).
pub fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_file::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    registry
}

/// Builds the store a TOML configuration selects.
pub async fn from_toml(toml: &str) -> R<Arc<dyn SessionStore>> {
    Ok(registry().build(&Config::from_toml(toml)).await?)
}

/// Whether load phases load as the session handle does ([`Ours::load_lazy`]: the data
/// left encoded, one field read), the default; `--eager-loads` turns it off, and loads
/// then decode the whole record (`SessionStore::load`).
pub static LAZY_LOADS: AtomicBool = AtomicBool::new(true);

/// The field a lazy load reads, as a request reading one key of its session does.
const READ_FIELD: &str = "field_5";

/// One of our stores behind the [`SessionStore`] trait; `cleanup` runs `cleanup`.
///
/// Every create and update writes the benchmark record with a deadline of its own,
/// [`TTL_SECS`] from the moment of the call, as the session handle's save computes one
/// and as the floors and the peers write theirs. A deadline fixed once would let a
/// database leave its expiry index alone on every update (PostgreSQL's heap-only
/// updates, an untouched SQLite index entry) where a real save cannot: our updates read
/// 3-22 % above the same statements that way. The records are kept in a free list, so
/// no call pays a copy of the data.
pub struct Ours {
    store: Arc<dyn SessionStore>,
    record: Record,
    spare: Mutex<Vec<Record>>,
    cleanup: Option<Box<dyn Fn() -> CleanupFuture + Send + Sync>>,
}

/// What a cleanup hook returns.
pub type CleanupFuture = std::pin::Pin<Box<dyn std::future::Future<Output = R<()>> + Send>>;

impl Ours {
    /// `store`, writing the benchmark record.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Ours {
            store,
            record: record(),
            spare: Mutex::default(),
            cleanup: None,
        }
    }

    /// Loads `key` as the session handle does (`load_lazy`: the header decoded, the data
    /// left encoded) and reads one field, checked against what was written; with `exact`
    /// the whole data is decoded and compared.
    async fn load_lazy(&self, key: &session_core::SessionKey, exact: bool) -> R<()> {
        let engine = self.store.engine();
        let Some(r) = self.store.call_load_lazy(key).await? else {
            return wrong!("{engine}: benchmark session vanished");
        };
        let right = if exact {
            r.decode()?.data == self.record.data
        } else {
            r.data.get(READ_FIELD)?.as_ref() == self.record.data.get(READ_FIELD)
        };
        if right {
            Ok(())
        } else {
            wrong!("{engine}: load returned other data")
        }
    }

    /// The benchmark record with a deadline [`TTL_SECS`] from now (a spare one, or a
    /// copy of the template when every spare is in use).
    fn fresh(&self) -> Record {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut r = spare.unwrap_or_else(|| self.record.clone());
        r.expires_at = Timestamp::now().add_secs(TTL_SECS);
        r
    }

    /// Hands `r` back to the free list.
    fn done_with(&self, r: Record) {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }

    /// Runs `f` when the benchmark is done with this store.
    pub fn on_cleanup(mut self, f: impl Fn() -> CleanupFuture + Send + Sync + 'static) -> Self {
        self.cleanup = Some(Box::new(f));
        self
    }
}

fn session_key(key: &Key) -> R<&session_core::SessionKey> {
    match key {
        Key::Session(k) => Ok(k),
        other => wrong!("ours: foreign key {other:?}"),
    }
}

#[async_trait::async_trait]
impl Target for Ours {
    async fn create(&self) -> R<Key> {
        let r = self.fresh();
        let made = self.store.call_create(&r).await;
        self.done_with(r);
        Ok(Key::Session(made?))
    }

    async fn load(&self, key: &Key, exact: bool) -> R<()> {
        if LAZY_LOADS.load(Ordering::Relaxed) {
            return self.load_lazy(session_key(key)?, exact).await;
        }
        match self.store.call_load(session_key(key)?).await? {
            Some(r) if exact && r.data == self.record.data => Ok(()),
            Some(r) if !exact && r.data.len() == self.record.data.len() => Ok(()),
            Some(_) => wrong!("{}: load returned other data", self.store.engine()),
            None => wrong!("{}: benchmark session vanished", self.store.engine()),
        }
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        let key = session_key(key)?;
        let r = self.fresh();
        let updated = self.store.call_update(key, &r, Some(version)).await;
        self.done_with(r);
        Ok(updated?)
    }

    async fn delete(&self, key: &Key) -> R<()> {
        if self.store.call_delete(session_key(key)?).await? {
            Ok(())
        } else {
            wrong!("{}: delete found nothing", self.store.engine())
        }
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        Ok(self.store.call_load(session_key(key)?).await?.is_some())
    }

    async fn cleanup(&self) -> R<()> {
        match &self.cleanup {
            Some(f) => f().await,
            None => Ok(()),
        }
    }
}
