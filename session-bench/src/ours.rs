//! Our engines, built from configuration exactly as an application builds them, and
//! called as the session handle calls them ([`StoreCalls`]: an engine that answers
//! without waiting is called without a boxed future).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use session_core::{Config, EngineRegistry, Record, SessionStore, StoreCalls};

use crate::harness::{Key, R, Target, record};
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

/// `--lazy-loads`: load phases load as the session handle does ([`Ours::load_lazy`]).
pub static LAZY_LOADS: AtomicBool = AtomicBool::new(false);

/// The field a lazy load reads, as a request reading one key of its session does.
const READ_FIELD: &str = "field_5";

/// One of our stores behind the [`SessionStore`] trait; `cleanup` runs `cleanup`.
pub struct Ours {
    store: Arc<dyn SessionStore>,
    record: Record,
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
        Ok(Key::Session(self.store.call_create(&self.record).await?))
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
        Ok(self
            .store
            .call_update(session_key(key)?, &self.record, Some(version))
            .await?)
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
