//! A third-party backend running the conformance suite: the worked example.
//!
//! `MapStore` below is a complete, correct session store in about a hundred lines: a
//! `Mutex<HashMap>` that honours the whole [`SessionStore`] contract (insert only if
//! absent, never return an expired record, never upsert on update, compare-and-set on
//! the version, touch without a version bump). Its factory hands the suite a fresh, empty
//! store for every case, and one call runs every case its capabilities allow.
//!
//! Run it with `cargo run -p integration-tests --example custom_store`. In your own crate,
//! add `integration-tests` as a dev-dependency and put the same call in a test:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_passes_the_conformance_suite() {
//!     integration_tests::run_conformance("map-store", &MapStoreFactory)
//!         .await
//!         .assert_passed();
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use integration_tests::{StoreFactory, run_conformance};
use session_core::{
    BoxError, Capabilities, Error, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
    async_trait,
};

/// An in-process store: one map behind one mutex (never held across an `.await`).
#[derive(Debug, Default)]
pub struct MapStore {
    map: Mutex<HashMap<SessionKey, Record>>,
}

impl MapStore {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Record>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The live record under `key` in `map`, if any.
fn live<'a>(map: &'a mut HashMap<SessionKey, Record>, key: &SessionKey) -> Option<&'a mut Record> {
    map.get_mut(key)
        .filter(|r| !r.is_expired_at(Timestamp::now()))
}

#[async_trait]
impl SessionStore for MapStore {
    fn engine(&self) -> &str {
        "map-store"
    }

    fn capabilities(&self) -> Capabilities {
        // The suite picks its cases from these: this store supports CAS and listing.
        Capabilities::none().compare_and_set(true).listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let mut map = self.map();
        if live(&mut map, key).is_some() {
            return Ok(Inserted::KeyTaken);
        }
        map.insert(key.clone(), record.clone());
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(live(&mut self.map(), key).map(|r| r.clone()))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let mut map = self.map();
        let current = live(&mut map, key).ok_or(Error::NotFound)?;
        if let Some(expected) = expected_version.filter(|v| *v != current.version) {
            return Err(Error::Conflict {
                expected,
                found: current.version,
            });
        }
        let version = current.version + 1;
        *current = Record {
            version,
            ..record.clone()
        };
        Ok(version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.map().remove(key).is_some())
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let mut map = self.map();
        let current = live(&mut map, key).ok_or(Error::NotFound)?;
        current.expires_at = expires_at;
        Ok(())
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(live(&mut self.map(), key).is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, r| !r.is_expired_at(now));
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
}

/// Gives the suite a new, empty `MapStore` for each case. A networked store would
/// return a client on a fresh namespace here (a random table, key prefix or directory)
/// and drop those namespaces in `cleanup`.
pub struct MapStoreFactory;

#[async_trait]
impl StoreFactory for MapStoreFactory {
    async fn fresh(&self) -> std::result::Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(MapStore::default()))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Prints `conformance[map-store]: N passed, ...` with the count per category, and
    // panics listing every failed case with its reason.
    run_conformance("map-store", &MapStoreFactory)
        .await
        .assert_passed();
}
