//! A `sessions` command line of your own: the built-in engines plus one more, with
//! schema migration, expiry sweeps and statistics through [`Maintenance`].
//!
//! The engine, `jsonfile`, keeps every session in one JSON document with a schema
//! version, `{"schema": 1, "sessions": {KEY: RECORD}}`: just enough of a store with a
//! schema to show what an engine implements for `sessions migrate`, `clear-expired` and
//! `stats`. It reads and rewrites the whole document on every operation (one process at
//! a time), so it is a demonstration, not a store to deploy.
//!
//! ```text
//! cargo run -p session-cli --example custom_engine -- --config jsonfile.toml migrate
//! ```
//!
//! with `jsonfile.toml`:
//!
//! ```toml
//! engine = "jsonfile"
//! [jsonfile]
//! path = "/var/lib/app/sessions.json"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use session_core::maintenance::Progress;
use session_core::{
    Capabilities, ClearReport, Codec, Error, Inserted, JsonCodec, Maintenance, Record, Result,
    SchemaMigration, SessionKey, SessionStore, StoreStats, Timestamp, async_trait,
};
use tokio::sync::Mutex;

/// The engine's name, and its section.
const ENGINE: &str = "jsonfile";
/// The schema version this build writes.
const SCHEMA: u64 = 1;

/// `[jsonfile]`: unknown keys are errors.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct JsonFileConfig {
    /// The document's path.
    path: PathBuf,
}

/// Sessions in one JSON document.
#[derive(Debug)]
struct JsonFileStore {
    path: PathBuf,
    codec: JsonCodec,
    /// One operation at a time, in this process.
    lock: Mutex<()>,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::backend(ENGINE, e.to_string())
}

impl JsonFileStore {
    /// Opens nothing: `sessions migrate` creates the document.
    fn new(path: PathBuf) -> Self {
        JsonFileStore {
            path,
            codec: JsonCodec::default(),
            lock: Mutex::new(()),
        }
    }

    /// The document, or `None` before the first migration.
    fn read_doc(&self) -> Result<Option<Map<String, Value>>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes).map_err(backend)? {
                Value::Object(doc) => Ok(Some(doc)),
                _ => Err(backend("the document is not a JSON object")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// The sessions of the migrated document.
    fn read(&self) -> Result<Map<String, Value>> {
        let doc = self.read_doc()?.ok_or_else(|| {
            backend(format!(
                "{} does not exist: run `sessions migrate` first",
                self.path.display()
            ))
        })?;
        match doc.get("sessions") {
            Some(Value::Object(s)) => Ok(s.clone()),
            _ => Err(backend("the document has no sessions object")),
        }
    }

    fn write(&self, sessions: Map<String, Value>) -> Result<()> {
        let doc = json!({ "schema": SCHEMA, "sessions": sessions });
        let bytes = serde_json::to_vec_pretty(&doc).map_err(backend)?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(backend)?;
        std::fs::rename(&tmp, &self.path).map_err(backend)
    }

    fn encode(&self, record: &Record) -> Result<Value> {
        let bytes = self.codec.encode(record)?;
        serde_json::from_slice(&bytes).map_err(backend)
    }

    fn decode(&self, value: &Value) -> Result<Record> {
        let bytes = serde_json::to_vec(value).map_err(backend)?;
        Ok(self.codec.decode(&bytes)?)
    }

    /// The live record under `key`.
    fn live(&self, sessions: &Map<String, Value>, key: &SessionKey) -> Result<Option<Record>> {
        match sessions.get(key.as_str()) {
            None => Ok(None),
            Some(v) => {
                let r = self.decode(v)?;
                Ok((!r.is_expired_at(Timestamp::now())).then_some(r))
            }
        }
    }
}

#[async_trait]
impl SessionStore for JsonFileStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .durable(true)
            .compare_and_set(true)
            .listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let _g = self.lock.lock().await;
        let mut sessions = self.read()?;
        if self.live(&sessions, key)?.is_some() {
            return Ok(Inserted::KeyTaken);
        }
        sessions.insert(key.as_str().to_owned(), self.encode(record)?);
        self.write(sessions)?;
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let _g = self.lock.lock().await;
        self.live(&self.read()?, key)
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let _g = self.lock.lock().await;
        let mut sessions = self.read()?;
        let current = self.live(&sessions, key)?.ok_or(Error::NotFound)?;
        if let Some(v) = expected.filter(|v| *v != current.version) {
            return Err(Error::Conflict {
                expected: v,
                found: current.version,
            });
        }
        let mut next = record.clone();
        next.version = current.version + 1;
        sessions.insert(key.as_str().to_owned(), self.encode(&next)?);
        self.write(sessions)?;
        Ok(next.version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let _g = self.lock.lock().await;
        let mut sessions = self.read()?;
        let was = sessions.remove(key.as_str()).is_some();
        self.write(sessions)?;
        Ok(was)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let _g = self.lock.lock().await;
        let mut sessions = self.read()?;
        let mut r = self.live(&sessions, key)?.ok_or(Error::NotFound)?;
        r.expires_at = expires_at;
        sessions.insert(key.as_str().to_owned(), self.encode(&r)?);
        self.write(sessions)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.load(key).await?.is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        Ok(Maintenance::clear_expired(self, u64::MAX, &|_| {})
            .await?
            .removed)
    }

    async fn count(&self) -> Result<u64> {
        let _g = self.lock.lock().await;
        Ok(self.read()?.len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let _g = self.lock.lock().await;
        let sessions = self.read()?;
        let mut keys: Vec<&String> = sessions
            .keys()
            .filter(|k| after.is_none_or(|a| k.as_str() > a.as_str()))
            .collect();
        keys.sort();
        keys.into_iter()
            .take(limit)
            .map(|k| SessionKey::parse(k).map_err(Error::from))
            .collect()
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }
}

#[async_trait]
impl Maintenance for JsonFileStore {
    fn target(&self) -> String {
        format!("{ENGINE} ({})", self.path.display())
    }

    /// Creates the document at schema version 1; a document of a later schema is an error.
    async fn migrate(&self) -> Result<Option<SchemaMigration>> {
        let _g = self.lock.lock().await;
        let object = format!("document {}", self.path.display());
        let from = match self.read_doc()? {
            None => 0,
            Some(doc) => doc.get("schema").and_then(Value::as_u64).unwrap_or(0),
        };
        if from > SCHEMA {
            return Err(backend(format!(
                "{object} has schema version {from}; this build knows {SCHEMA}"
            )));
        }
        if from < SCHEMA {
            self.write(Map::new())?;
        }
        Ok(Some(SchemaMigration::new(object, from, SCHEMA)))
    }

    async fn clear_expired(&self, _batch: u64, progress: Progress<'_>) -> Result<ClearReport> {
        let _g = self.lock.lock().await;
        let sessions = self.read()?;
        let now = Timestamp::now();
        let before = sessions.len();
        let kept: Map<String, Value> = sessions
            .into_iter()
            .filter(|(_, v)| self.decode(v).map_or(true, |r| !r.is_expired_at(now)))
            .collect();
        let removed = (before - kept.len()) as u64;
        self.write(kept)?;
        progress(removed);
        Ok(ClearReport::removed(removed))
    }

    /// Counted from the document, sizes as the JSON of each record.
    async fn stats(&self, progress: Progress<'_>) -> Result<StoreStats> {
        let _g = self.lock.lock().await;
        let now = Timestamp::now();
        let mut stats = StoreStats::default();
        for (i, v) in self.read()?.values().enumerate() {
            let size = serde_json::to_vec(v).map_or(0, |b| b.len() as u64);
            let live = self.decode(v).ok().map(|r| !r.is_expired_at(now));
            stats.add(size, live);
            progress(i as u64 + 1);
        }
        Ok(stats)
    }
}

fn main() -> ExitCode {
    let registry = session_cli::builtin_registry();
    registry.register_store_checked(
        ENGINE,
        |ctx| async move {
            let cfg: JsonFileConfig = ctx.section(ENGINE)?;
            Ok(JsonFileStore::new(cfg.path))
        },
        |ctx| {
            let cfg: JsonFileConfig = ctx.section(ENGINE)?;
            if cfg.path.as_os_str().is_empty() {
                return Err(Error::config(format!("{ENGINE}.path"), "is required"));
            }
            Ok(())
        },
    );
    session_cli::main_with(registry)
}
