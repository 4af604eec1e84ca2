//! The in-process store (engine `memory`).
//!
//! Records live in a sharded `DashMap`. Expired records are invisible at once and dropped
//! lazily (on access, on insert pressure, or by `clear_expired`). The map is bounded by
//! `max_entries`: when an insert finds it full, expired entries are swept first, then the
//! entry closest to its deadline among a small sample is evicted (Redis' approximate
//! policy), so memory stays bounded without a global LRU list.
//!
//! Records are kept decoded, yet `max_encoded_size` holds as on every other engine: a
//! store built from configuration (or given [`MemoryStore::with_size_limit`]) refuses a
//! write whose encoding would exceed it with `CodecError::TooLarge`. To keep writes cheap
//! the record is only encoded when a quick upper bound of its encoded size (a walk over
//! the values, without encoding) exceeds the limit, which real sessions almost never do.
//!
//! No shard guard is ever held across an `.await`: every operation is synchronous inside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::Deserialize;
use session_core::codec::{ENCRYPTION_OVERHEAD, MAX_DEPTH};
use session_core::{
    Capabilities, Codec, EngineRegistry, Error, Inserted, Record, Result, SessionKey, SessionStore,
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
    size_limit: Option<SizeLimit>,
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
        MemoryStore {
            map: DashMap::new(),
            max_entries: config.max_entries.max(1),
            evictions: AtomicU64::new(0),
            size_limit: None,
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
        self.check_size(record)?;
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
        self.check_size(record)?;
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

/// Registers the `memory` engine (options in the `memory` section). The store applies
/// the configured `max_encoded_size`, measured with the configured codec.
pub fn register(registry: &EngineRegistry) {
    fn checked(ctx: &session_core::EngineContext) -> Result<MemoryConfig> {
        let cfg: MemoryConfig = ctx.section("memory")?;
        if cfg.max_entries == 0 {
            return Err(ctx.locate(Error::config("memory.max_entries", "must be at least 1")));
        }
        Ok(cfg)
    }
    registry.register_checked(
        "memory",
        |ctx: session_core::EngineContext| async move {
            let cfg = checked(&ctx)?;
            let store = MemoryStore::with_config(cfg)
                .with_size_limit(ctx.codec(), ctx.settings.max_encoded_size);
            Ok(Arc::new(store) as Arc<dyn SessionStore>)
        },
        |ctx: &session_core::EngineContext| checked(ctx).map(drop),
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
