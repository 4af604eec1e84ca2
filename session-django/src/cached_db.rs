//! Django's `cached_db` session engine layout: the `django_session` table (as
//! [`crate::db`]) with a copy of each session in Redis under
//! `{KEY_PREFIX}:{VERSION}:django.contrib.sessions.cached_db{session_key}` (pickled, as
//! [`crate::cache`]).
//!
//! Writes follow Django: the table first (whose errors count), then the cache, so the
//! Django side, which reads its cache first, sees every change; a delete removes both.
//! Reads differ on purpose: ours go to the table, the authority, so compare-and-set
//! checks the table's value and a row deleted out of band (or by Django's `flush`, which
//! deletes both) is never served from a stale cached copy. A failed cache write is
//! logged and followed by a best-effort delete of the cached copy (Django leaves the
//! stale copy in place).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use session_core::store::RawAccess;
use session_core::{
    Capabilities, Error, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
};

use crate::cache::{CACHED_DB_PREFIX, DjangoCacheStore};
use crate::db::{DjangoDbConfig, DjangoDbStore};

/// The engine name in errors and logs.
pub const ENGINE: &str = "django_cached_db";

/// Options of the `django_cached_db` engine (config section `django_cached_db`): the
/// table's options and the cache's.
///
/// ```toml
/// engine = "django_cached_db"
/// [django_cached_db]
/// redis_url = "redis://127.0.0.1:6379/0"
/// key_prefix = ""
/// version = 1
/// [django_cached_db.db]
/// url = "postgres://app@127.0.0.1/app"
/// secret_key = "the Django SECRET_KEY"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DjangoCachedDbConfig {
    /// The Redis URL (Django's `CACHES[SESSION_CACHE_ALIAS]["LOCATION"]`).
    pub redis_url: String,
    /// Django's cache `KEY_PREFIX`.
    pub key_prefix: String,
    /// Django's cache `VERSION`.
    pub version: i64,
    /// The table and secrets.
    pub db: DjangoDbConfig,
}

impl Default for DjangoCachedDbConfig {
    fn default() -> Self {
        DjangoCachedDbConfig {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: String::new(),
            version: 1,
            db: DjangoDbConfig::default(),
        }
    }
}

impl DjangoCachedDbConfig {
    /// Checks both halves.
    pub fn validate(&self) -> Result<()> {
        redis::Client::open(self.redis_url.as_str())
            .map_err(|e| Error::config("django_cached_db.redis_url", e.to_string()))?;
        self.db.validate()
    }

    /// Connects both halves.
    pub async fn build(&self) -> Result<DjangoCachedDbStore> {
        self.validate()?;
        let db = self.db.build().await?;
        let cache = DjangoCacheStore::connect(
            &self.redis_url,
            &self.key_prefix,
            self.version,
            CACHED_DB_PREFIX,
        )
        .await?;
        Ok(DjangoCachedDbStore { db, cache })
    }
}

/// Sessions as Django's `cached_db` engine keeps them (see the module docs).
#[derive(Clone, Debug)]
pub struct DjangoCachedDbStore {
    db: DjangoDbStore,
    cache: DjangoCacheStore,
}

impl DjangoCachedDbStore {
    /// Over a table store and a cache store (built with [`CACHED_DB_PREFIX`]).
    pub fn new(db: DjangoDbStore, cache: DjangoCacheStore) -> Self {
        DjangoCachedDbStore { db, cache }
    }

    /// The table half.
    pub fn db(&self) -> &DjangoDbStore {
        &self.db
    }

    /// The cache half.
    pub fn cache(&self) -> &DjangoCacheStore {
        &self.cache
    }

    async fn fill(&self, key: &SessionKey, record: &Record) {
        let r = match self.cache.update(key, record, None).await {
            Err(Error::NotFound) => self.cache.insert_new(key, record).await.map(|_| 0),
            other => other,
        };
        if let Err(e) = r {
            tracing::error!(engine = ENGINE, key = %key.fingerprint(), error = %e, "Error saving to cache; dropping the cached copy");
            let _ = self.cache.delete(key).await;
        }
    }
}

#[async_trait]
impl SessionStore for DjangoCachedDbStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        self.db.capabilities()
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let r = self.db.insert_new(key, record).await?;
        if r == Inserted::Created {
            self.fill(key, record).await;
        }
        Ok(r)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        // The table is the authority: its version is what compare-and-set checks, and
        // a row deleted out of band is never served from a stale cached copy.
        self.db.load(key).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let v = self.db.update(key, record, expected).await?;
        self.fill(key, record).await;
        Ok(v)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let _ = self.cache.delete(key).await;
        self.db.delete(key).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.db.touch(key, expires_at).await?;
        let _ = self.cache.touch(key, expires_at).await;
        Ok(())
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
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
        self.db.raw()
    }
}
