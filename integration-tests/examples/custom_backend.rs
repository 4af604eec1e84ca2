//! A third-party engine from configuration to conformance run: the worked example of the
//! backend guide (`docs/BACKENDS.md`).
//!
//! `KvStore` keeps each session the way a key-value database or a SQL row would: the
//! codec's bytes plus the deadline and the version *outside* the bytes (the authoritative
//! copies, so `touch` moves a deadline without re-encoding and `update` compares versions
//! without decoding). It offers raw byte access, so the suite's corrupt-bytes cases run on
//! it too. The engine:
//!
//! 1. owns a configuration section, `[kv]`, read into a type that rejects unknown keys,
//!    with a check of its values that runs before anything is built;
//! 2. is registered with [`EngineRegistry::register_store_checked`] under the name `kv`;
//! 3. is built through the registry from a configuration and run through the whole
//!    conformance suite with [`ConfigFactory`]: every case applies, every case passes.
//!
//! Run it with `cargo run -p integration-tests --example custom_backend`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use integration_tests::{ConfigFactory, run_conformance};
use serde::Deserialize;
use session_core::{
    Capabilities, Codec, Config, EngineContext, EngineRegistry, Error, Inserted, RawAccess, Record,
    Result, SessionKey, SessionStore, Timestamp, async_trait,
};

/// The engine's name: the value of `engine` in the configuration and its section's key.
pub const ENGINE: &str = "kv";

/// The `[kv]` section. `deny_unknown_fields` makes a typo (`max_entires`) an error that
/// names the key path and suggests the nearest key.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    /// The most sessions the store holds; a create beyond it fails with a typed error.
    pub max_entries: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            max_entries: 100_000,
        }
    }
}

impl KvConfig {
    /// Checks the values serde cannot: the error names `kv.max_entries`.
    pub fn validate(&self) -> Result<()> {
        if self.max_entries == 0 {
            return Err(Error::config(
                format!("{ENGINE}.max_entries"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One stored session: the codec's bytes, and the deadline and version kept beside them.
#[derive(Clone, Debug)]
struct Entry {
    bytes: Vec<u8>,
    expires_at: Timestamp,
    version: u64,
}

impl Entry {
    fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

/// A session store over an in-process map of encoded records.
#[derive(Debug)]
pub struct KvStore {
    map: Mutex<HashMap<SessionKey, Entry>>,
    codec: Arc<dyn Codec>,
    max_entries: usize,
}

impl KvStore {
    /// A store encoding records with `codec`.
    pub fn new(config: &KvConfig, codec: Arc<dyn Codec>) -> Self {
        KvStore {
            map: Mutex::new(HashMap::new()),
            codec,
            max_entries: config.max_entries,
        }
    }

    /// The map; the lock is never held across an `.await`.
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry under `key`, if any.
    fn live<'a>(
        map: &'a mut HashMap<SessionKey, Entry>,
        key: &SessionKey,
    ) -> Option<&'a mut Entry> {
        map.get_mut(key).filter(|e| e.is_live(Timestamp::now()))
    }
}

#[async_trait]
impl SessionStore for KvStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        // One process, nothing survives a restart; CAS and listing are supported, so the
        // suite runs those categories too.
        Capabilities::none().compare_and_set(true).listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        // Encode outside the lock: the codec enforces `max_encoded_size`.
        let bytes = self.codec.encode(record)?;
        let mut map = self.map();
        if Self::live(&mut map, key).is_some() {
            return Ok(Inserted::KeyTaken);
        }
        if map.len() >= self.max_entries && !map.contains_key(key) {
            return Err(Error::Limit(format!(
                "the {ENGINE} store holds its maximum of {} sessions",
                self.max_entries
            )));
        }
        map.insert(
            key.clone(),
            Entry {
                bytes,
                expires_at: record.expires_at,
                version: record.version,
            },
        );
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let Some(entry) = Self::live(&mut self.map(), key).cloned() else {
            return Ok(None);
        };
        match self.codec.decode(&entry.bytes) {
            Ok(mut record) => {
                // The copies beside the bytes are authoritative.
                record.version = entry.version;
                record.expires_at = entry.expires_at;
                Ok(Some(record))
            }
            Err(e) => {
                // Undecodable bytes: a typed codec error (the handle then starts a new
                // session and leaves the bytes alone), logged by fingerprint, never by key.
                tracing::warn!(
                    engine = ENGINE,
                    session = %key.fingerprint(),
                    error = %e,
                    "stored session does not decode"
                );
                Err(Error::Codec(e))
            }
        }
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let bytes = self.codec.encode(record)?;
        let mut map = self.map();
        // Never an upsert: a record deleted or expired meanwhile stays gone.
        let current = Self::live(&mut map, key).ok_or(Error::NotFound)?;
        if let Some(expected) = expected_version.filter(|v| *v != current.version) {
            return Err(Error::Conflict {
                expected,
                found: current.version,
            });
        }
        // The store bumps the version; the record's own `version` is not trusted.
        let version = current.version + 1;
        *current = Entry {
            bytes,
            expires_at: record.expires_at,
            version,
        };
        Ok(version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.map().remove(key).is_some())
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        // Moves the deadline beside the bytes: no re-encoding, no version bump.
        let mut map = self.map();
        let current = Self::live(&mut map, key).ok_or(Error::NotFound)?;
        current.expires_at = expires_at;
        Ok(())
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(Self::live(&mut self.map(), key).is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| e.is_live(now));
        Ok((before - map.len()) as u64)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.map().len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let mut keys: Vec<SessionKey> = self
            .map()
            .keys()
            .filter(|k| after.is_none_or(|a| *k > a))
            .cloned()
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }
}

#[async_trait]
impl RawAccess for KvStore {
    /// Plants `bytes` as they are, live until `expires_at`, at version 1 (a fresh record).
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        self.map().insert(
            key.clone(),
            Entry {
                bytes: bytes.to_vec(),
                expires_at,
                version: 1,
            },
        );
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).map(|e| e.bytes.clone()))
    }
}

/// Registers the `kv` engine: what a backend crate's `register` function does.
pub fn register(registry: &EngineRegistry) {
    registry.register_store_checked(
        ENGINE,
        |ctx| async move {
            let config: KvConfig = ctx.section(ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))?;
            Ok(KvStore::new(&config, ctx.codec()))
        },
        |ctx: &EngineContext| {
            let config: KvConfig = ctx.section(ENGINE)?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
}

/// The configuration the conformance run builds every store from.
pub fn config() -> Config {
    Config::from_toml("engine = \"kv\"\n[kv]\nmax_entries = 10000\n")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = EngineRegistry::new();
    register(&registry);

    // A typo and a bad value fail validation, before anything is built.
    for bad in ["[kv]\nmax_entires = 5", "[kv]\nmax_entries = 0"] {
        let err = registry
            .validate(&Config::from_toml(&format!("engine = \"kv\"\n{bad}")))
            .expect_err("an invalid configuration");
        println!("rejected as expected: {err}");
    }

    // Every case builds its store through the registry from the configuration (an
    // in-process map is empty when built; a networked store would put a fresh table or
    // key prefix in each configuration). Prints `conformance[kv]: 191 passed, ...`.
    let factory = ConfigFactory::new(registry, config);
    run_conformance(ENGINE, &factory).await.assert_passed();
}
