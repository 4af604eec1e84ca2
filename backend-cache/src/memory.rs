//! The in-process store (engine `memory`).
//!
//! Records live in a sharded `DashMap`. Expired records are invisible at once and dropped
//! lazily (on access, on insert pressure, or by `clear_expired`). The map is bounded by
//! `max_entries`: when an insert finds it full, expired entries are swept first, then the
//! entry closest to its deadline among a small sample is evicted (Redis' approximate
//! policy), so memory stays bounded without a global LRU list.
//!
//! No shard guard is ever held across an `.await`: every operation is synchronous inside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::Deserialize;
use session_core::{
    Capabilities, EngineRegistry, Error, Inserted, Record, Result, SessionKey, SessionStore,
    Timestamp, async_trait,
};

/// Options of the `memory` engine (config section `memory`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Most sessions held at once; inserts beyond it evict.
    pub max_entries: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: 1_000_000,
        }
    }
}

/// How many entries an eviction looks at to pick its victim.
const EVICTION_SAMPLE: usize = 16;

/// In-process session store.
#[derive(Debug)]
pub struct MemoryStore {
    map: DashMap<SessionKey, Arc<Record>>,
    max_entries: usize,
    evictions: AtomicU64,
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
        MemoryStore {
            map: DashMap::new(),
            max_entries: config.max_entries.max(1),
            evictions: AtomicU64::new(0),
        }
    }

    /// How many live entries were evicted to respect `max_entries`.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<Arc<Record>> {
        let found = self.map.get(key).map(|r| r.value().clone())?;
        if found.is_expired_at(now) {
            // Drop it lazily, unless a writer replaced it meanwhile.
            self.map.remove_if(key, |_, r| r.is_expired_at(now));
            None
        } else {
            Some(found)
        }
    }

    fn make_room(&self, now: Timestamp) {
        if self.map.len() < self.max_entries {
            return;
        }
        let before = self.map.len();
        self.map.retain(|_, r| !r.is_expired_at(now));
        if self.map.len() < before || self.map.len() < self.max_entries {
            return;
        }
        let victim = self
            .map
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|e| e.value().expires_at)
            .map(|e| e.key().clone());
        if let Some(k) = victim
            && self.map.remove(&k).is_some()
        {
            self.evictions.fetch_add(1, Ordering::Relaxed);
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
        let now = Timestamp::now();
        self.make_room(now);
        match self.map.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                if e.get().is_expired_at(now) {
                    e.insert(Arc::new(record.clone()));
                    Ok(Inserted::Created)
                } else {
                    Ok(Inserted::KeyTaken)
                }
            }
            Entry::Vacant(e) => {
                e.insert(Arc::new(record.clone()));
                Ok(Inserted::Created)
            }
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(self.live(key, Timestamp::now()).map(|r| Record::clone(&r)))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let now = Timestamp::now();
        let Some(mut cur) = self.map.get_mut(key) else {
            return Err(Error::NotFound);
        };
        if cur.is_expired_at(now) {
            drop(cur);
            self.map.remove_if(key, |_, r| r.is_expired_at(now));
            return Err(Error::NotFound);
        }
        if let Some(expected) = expected_version.filter(|v| *v != cur.version) {
            return Err(Error::Conflict {
                expected,
                found: cur.version,
            });
        }
        let version = cur.version.saturating_add(1);
        let mut next = record.clone();
        next.version = version;
        *cur = Arc::new(next);
        Ok(version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.map.remove(key).is_some())
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        match self.map.get_mut(key) {
            Some(mut cur) if !cur.is_expired_at(now) => {
                Arc::make_mut(&mut *cur).expires_at = expires_at;
                Ok(())
            }
            _ => Err(Error::NotFound),
        }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.live(key, Timestamp::now()).is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let before = self.map.len();
        self.map.retain(|_, r| !r.is_expired_at(now));
        Ok(before.saturating_sub(self.map.len()) as u64)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.map.len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let mut keys: Vec<SessionKey> = self
            .map
            .iter()
            .map(|e| e.key().clone())
            .filter(|k| after.is_none_or(|a| k > a))
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }
}

/// Registers the `memory` engine (options in the `memory` section).
pub fn register(registry: &EngineRegistry) {
    registry.register("memory", |ctx: session_core::EngineContext| async move {
        let cfg: MemoryConfig = ctx.section("memory")?;
        if cfg.max_entries == 0 {
            return Err(Error::config("memory.max_entries", "must be at least 1"));
        }
        Ok(Arc::new(MemoryStore::with_config(cfg)) as Arc<dyn SessionStore>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_with_eviction() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 10 });
        for _ in 0..100 {
            let r = Record::with_ttl(Default::default(), 60);
            store.create(&r).await.expect("create");
        }
        assert!(store.map.len() <= 10);
        assert!(store.evictions() >= 90);
    }

    #[tokio::test]
    async fn expired_entries_are_swept_before_live_ones_are_evicted() {
        let store = MemoryStore::with_config(MemoryConfig { max_entries: 4 });
        for _ in 0..3 {
            store
                .create(&Record::with_ttl(Default::default(), -1))
                .await
                .expect("create expired");
        }
        let live = store
            .create(&Record::with_ttl(Default::default(), 60))
            .await
            .expect("create");
        store
            .create(&Record::with_ttl(Default::default(), 60))
            .await
            .expect("create");
        assert_eq!(store.evictions(), 0);
        assert!(store.exists(&live).await.expect("exists"));
    }
}
