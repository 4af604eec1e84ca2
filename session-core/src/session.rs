//! The per-request session handle, with Django's `SessionBase` semantics.
//!
//! A [`Session`] is cheap to clone (all clones share one state), `Send + Sync`, and lazy:
//! nothing is read from the store until the data is first touched. It tracks Django's
//! `accessed` and `modified` flags and, beyond Django, records the list of changes this
//! request made. When a save finds that a concurrent request wrote the session first
//! (a version conflict), it reloads the record, re-applies only its own changes and
//! retries, so two requests changing different keys both keep their work.
//! [`Session::update`] records a closure instead of a value, so a counter incremented by
//! many concurrent requests counts every increment.
//!
//! A client-supplied key the store does not know (or a record whose bytes cannot be
//! decoded) is never adopted: the session starts empty and the next save mints a fresh
//! key. A corrupt record is logged and left untouched in the store.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::SessionSettings;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::key::SessionKey;
use crate::record::{Record, SessionData};
use crate::store::SessionStore;
use crate::time::Timestamp;

/// Django's test-cookie key and value.
pub const TEST_COOKIE_NAME: &str = "testcookie";
/// Django's test-cookie value.
pub const TEST_COOKIE_VALUE: &str = "worked";

type ModifyFn = dyn Fn(Option<&Value>) -> Result<Value, serde_json::Error> + Send + Sync;

#[derive(Clone)]
enum Change {
    Set(String, Value),
    Remove(String),
    Clear,
    Modify(String, Arc<ModifyFn>),
}

#[derive(Default)]
struct State {
    key: Option<SessionKey>,
    /// The current view of the data; `None` until first touched.
    data: Option<SessionData>,
    /// Whether `version`/`created_at` reflect the store (or a brand-new session).
    base_loaded: bool,
    version: Option<u64>,
    created_at: Option<Timestamp>,
    /// The stored deadline as loaded (or last written by this handle).
    expires_at: Option<Timestamp>,
    expiry: Expiry,
    expiry_set: bool,
    accessed: bool,
    modified: bool,
    changes: Vec<Change>,
    /// The key the handle was made with, for observers ([`Session::original_key`]).
    original_key: Option<SessionKey>,
    /// A stored record was read ([`Session::loaded`]).
    loaded: bool,
    /// `cycle_key` ran ([`Session::cycled`]).
    cycled: bool,
    /// `flush` ran ([`Session::flushed`]).
    flushed: bool,
}

fn apply(data: &mut SessionData, changes: &[Change]) -> Result<()> {
    for c in changes {
        match c {
            Change::Set(k, v) => {
                data.insert(k.clone(), v.clone());
            }
            Change::Remove(k) => {
                data.remove(k);
            }
            Change::Clear => data.clear(),
            Change::Modify(k, f) => {
                let v = f(data.get(k)).map_err(|source| Error::Value {
                    key: k.clone(),
                    source,
                })?;
                data.insert(k.clone(), v);
            }
        }
    }
    Ok(())
}

impl State {
    /// Takes `base` (the store's record, or none) as the origin of this request's view.
    fn rebase(&mut self, base: Option<Record>) -> Result<()> {
        let mut data = match base {
            Some(r) => {
                self.loaded = true;
                self.version = Some(r.version);
                self.created_at = Some(r.created_at);
                self.expires_at = Some(r.expires_at);
                if !self.expiry_set {
                    self.expiry = r.expiry;
                }
                r.data
            }
            None => {
                // Unknown, expired or undecodable: never adopt the client's key.
                self.key = None;
                self.version = None;
                self.created_at = None;
                self.expires_at = None;
                SessionData::new()
            }
        };
        apply(&mut data, &self.changes)?;
        self.data = Some(data);
        self.base_loaded = true;
        Ok(())
    }

    fn data_mut(&mut self) -> &mut SessionData {
        self.data.get_or_insert_with(SessionData::new)
    }
}

struct Inner {
    store: Arc<dyn SessionStore>,
    settings: Arc<SessionSettings>,
    state: Mutex<State>,
}

/// One visitor's session during one request.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Session")
            .field("key", &st.key)
            .field("loaded", &st.data.is_some())
            .field("accessed", &st.accessed)
            .field("modified", &st.modified)
            .finish()
    }
}

impl Session {
    /// A handle on `key` (or a new session when `None`). Nothing is loaded yet.
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: Arc<SessionSettings>,
        key: Option<SessionKey>,
    ) -> Self {
        Session {
            inner: Arc::new(Inner {
                store,
                settings,
                state: Mutex::new(State {
                    original_key: key.clone(),
                    key,
                    ..State::default()
                }),
            }),
        }
    }

    /// A handle from a raw cookie value: a malformed value means no session, with no I/O.
    pub fn from_cookie(
        store: Arc<dyn SessionStore>,
        settings: Arc<SessionSettings>,
        cookie: Option<&str>,
    ) -> Self {
        let key = cookie.and_then(|c| SessionKey::parse(c).ok());
        Session::new(store, settings, key)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's key: `None` for a new, flushed, or unknown-key session.
    pub fn key(&self) -> Option<SessionKey> {
        self.lock().key.clone()
    }

    /// Whether the data was read or written during this request.
    pub fn accessed(&self) -> bool {
        self.lock().accessed
    }

    /// Whether the data or expiry was changed during this request.
    pub fn modified(&self) -> bool {
        self.lock().modified
    }

    /// The key the handle was made with (from the request's cookie), whether or not it
    /// named a live record; for observers (request hooks, audit), which log its
    /// fingerprint.
    pub fn original_key(&self) -> Option<SessionKey> {
        self.lock().original_key.clone()
    }

    /// Whether a stored record was read through this handle.
    pub fn loaded(&self) -> bool {
        self.lock().loaded
    }

    /// Whether [`Session::cycle_key`] succeeded on this handle.
    pub fn cycled(&self) -> bool {
        self.lock().cycled
    }

    /// Whether [`Session::flush`] ran on this handle.
    pub fn flushed(&self) -> bool {
        self.lock().flushed
    }

    /// The version the current data is based on (`None` before load or for a new session).
    pub fn version(&self) -> Option<u64> {
        self.lock().version
    }

    /// The store behind this session.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// The settings this session follows.
    pub fn settings(&self) -> &SessionSettings {
        &self.inner.settings
    }

    /// Django's `is_empty()`: no key and no data. Never loads.
    pub fn is_empty(&self) -> bool {
        let st = self.lock();
        st.key.is_none() && st.data.as_ref().is_none_or(|d| d.is_empty())
    }

    async fn load_base(&self, key: &SessionKey) -> Result<Option<Record>> {
        match self.inner.store.load(key).await {
            Ok(r) => Ok(r),
            Err(Error::Codec(e)) => {
                tracing::warn!(
                    session = %key.fingerprint(),
                    engine = self.inner.store.engine(),
                    error = %e,
                    "session data corrupted; starting a new session and leaving the stored record untouched"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn ensure_data(&self) -> Result<()> {
        let key = {
            let mut st = self.lock();
            st.accessed = true;
            if st.data.is_some() {
                return Ok(());
            }
            st.key.clone()
        };
        let base = match &key {
            Some(k) => self.load_base(k).await?,
            None => None,
        };
        let mut st = self.lock();
        if st.data.is_none() {
            st.rebase(base)?;
        }
        Ok(())
    }

    async fn with_data<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        self.ensure_data().await?;
        let mut st = self.lock();
        f(&mut st)
    }

    /// Loads (if needed) and returns a copy of all the data.
    pub async fn load(&self) -> Result<SessionData> {
        self.with_data(|st| Ok(st.data_mut().clone())).await
    }

    /// The value under `key` as JSON.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>> {
        self.with_data(|st| Ok(st.data_mut().get(key).cloned()))
            .await
    }

    /// The value under `key` converted to `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_value(key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|source| Error::Value {
                    key: key.to_owned(),
                    source,
                }),
        }
    }

    /// Stores `value` under `key`.
    pub async fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let v = serde_json::to_value(value).map_err(|source| Error::Value {
            key: key.to_owned(),
            source,
        })?;
        self.insert_value(key, v).await
    }

    fn check_room(&self, data: &SessionData, new_keys: usize) -> Result<()> {
        let max_keys = self.inner.settings.max_keys;
        if data.len().saturating_add(new_keys) > max_keys {
            return Err(Error::Limit(format!(
                "a session holds at most {max_keys} keys (setting max_keys)"
            )));
        }
        Ok(())
    }

    /// Stores a JSON value under `key`.
    pub async fn insert_value(&self, key: &str, value: Value) -> Result<()> {
        self.with_data(|st| {
            let data = st.data_mut();
            self.check_room(data, usize::from(!data.contains_key(key)))?;
            data.insert(key.to_owned(), value.clone());
            st.changes.push(Change::Set(key.to_owned(), value));
            st.modified = true;
            Ok(())
        })
        .await
    }

    /// Removes `key`, returning its value. `modified` is set only if it was present.
    pub async fn remove(&self, key: &str) -> Result<Option<Value>> {
        self.with_data(|st| {
            let old = st.data_mut().remove(key);
            if old.is_some() {
                st.changes.push(Change::Remove(key.to_owned()));
                st.modified = true;
            }
            Ok(old)
        })
        .await
    }

    /// Removes `key`, returning its value converted to `T` (Django's `pop`). A value
    /// that does not convert is left in place and reported as [`Error::Value`].
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.get_value(key).await? else {
            return Ok(None);
        };
        let typed = T::deserialize(&v).map_err(|source| Error::Value {
            key: key.to_owned(),
            source,
        })?;
        self.remove(key).await?;
        Ok(Some(typed))
    }

    /// Whether `key` is present (Django's `in`).
    pub async fn contains_key(&self, key: &str) -> Result<bool> {
        self.with_data(|st| Ok(st.data_mut().contains_key(key)))
            .await
    }

    /// The keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.with_data(|st| Ok(st.data_mut().keys().cloned().collect()))
            .await
    }

    /// The values, in key order.
    pub async fn values(&self) -> Result<Vec<Value>> {
        self.with_data(|st| Ok(st.data_mut().values().cloned().collect()))
            .await
    }

    /// The number of keys.
    pub async fn len(&self) -> Result<usize> {
        self.with_data(|st| Ok(st.data_mut().len())).await
    }

    /// Returns the value under `key`, inserting `default` first if it is absent
    /// (Django's `setdefault`: `modified` is set only when it inserts).
    pub async fn setdefault<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        default: T,
    ) -> Result<T> {
        if let Some(v) = self.get::<T>(key).await? {
            return Ok(v);
        }
        self.insert(key, &default).await?;
        Ok(default)
    }

    /// Inserts every entry (Django's `update`); sets `modified` even when empty.
    pub async fn extend(&self, entries: SessionData) -> Result<()> {
        self.with_data(|st| {
            let data = st.data_mut();
            let new_keys = entries.keys().filter(|k| !data.contains_key(*k)).count();
            self.check_room(data, new_keys)?;
            st.modified = true;
            for (k, v) in entries {
                st.data_mut().insert(k.clone(), v.clone());
                st.changes.push(Change::Set(k, v));
            }
            Ok(())
        })
        .await
    }

    /// Replaces the value under `key` with `f(current)`, and returns it.
    ///
    /// Unlike `get` then `insert`, the closure itself is recorded: if a concurrent request
    /// saved first, the save re-runs `f` on the fresh value, so no update is lost
    /// (a counter incremented by 64 concurrent requests ends at 64).
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let modify: Arc<ModifyFn> = Arc::new(move |cur: Option<&Value>| {
            let cur = cur.map(|v| T::deserialize(v)).transpose()?;
            serde_json::to_value(f(cur))
        });
        let new = self
            .with_data(|st| {
                let data = st.data_mut();
                self.check_room(data, usize::from(!data.contains_key(key)))?;
                let v = modify(data.get(key)).map_err(|source| Error::Value {
                    key: key.to_owned(),
                    source,
                })?;
                data.insert(key.to_owned(), v.clone());
                st.changes
                    .push(Change::Modify(key.to_owned(), modify.clone()));
                st.modified = true;
                Ok(v)
            })
            .await?;
        serde_json::from_value(new).map_err(|source| Error::Value {
            key: key.to_owned(),
            source,
        })
    }

    /// Empties the data without loading it; the key is kept (Django's `clear`).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.data = Some(SessionData::new());
        st.changes.push(Change::Clear);
        st.accessed = true;
        st.modified = true;
    }

    /// Empties the data, deletes the stored record and drops the key (logout).
    pub async fn flush(&self) -> Result<()> {
        let key = {
            let mut st = self.lock();
            st.data = Some(SessionData::new());
            st.changes.clear();
            st.accessed = true;
            st.modified = true;
            st.version = None;
            st.created_at = None;
            st.expires_at = None;
            st.expiry = Expiry::Default;
            st.expiry_set = false;
            st.base_loaded = true;
            st.flushed = true;
            st.key.take()
        };
        if let Some(k) = key {
            self.inner.store.delete(&k).await?;
        }
        Ok(())
    }

    /// Moves the data to a fresh key and deletes the old record. Call it at login, against
    /// session fixation.
    pub async fn cycle_key(&self) -> Result<()> {
        self.ensure_data().await?;
        let now = Timestamp::now();
        let (old, record) = {
            let st = self.lock();
            let created = st.created_at.unwrap_or(now);
            let expiry = st.expiry;
            let record = Record {
                data: st.data.clone().unwrap_or_default(),
                expiry,
                created_at: created,
                expires_at: self.inner.settings.expiry.expires_at(expiry, now, created),
                version: 1,
            };
            (st.key.clone(), record)
        };
        let new_key = self.inner.store.create(&record).await?;
        {
            let mut st = self.lock();
            st.key = Some(new_key);
            st.version = Some(record.version);
            st.created_at = Some(record.created_at);
            st.expires_at = Some(record.expires_at);
            st.changes.clear();
            st.base_loaded = true;
            st.modified = true;
            st.cycled = true;
        }
        if let Some(old) = old {
            self.inner.store.delete(&old).await?;
        }
        Ok(())
    }

    /// Sets the expiry policy (Django's `set_expiry`): see [`Expiry`].
    pub fn set_expiry(&self, expiry: Expiry) {
        let mut st = self.lock();
        st.expiry = expiry;
        st.expiry_set = true;
        st.accessed = true;
        st.modified = true;
    }

    /// The expiry policy in force.
    pub async fn expiry(&self) -> Result<Expiry> {
        self.with_data(|st| Ok(st.expiry)).await
    }

    /// Seconds until expiry if the session were saved at `modification`.
    pub async fn expiry_age_at(&self, modification: Timestamp) -> Result<i64> {
        let s = &self.inner.settings.expiry;
        self.with_data(|st| {
            Ok(s.age_secs(
                st.expiry,
                modification,
                st.created_at.unwrap_or(modification),
            ))
        })
        .await
    }

    /// Seconds until expiry if saved now (Django's `get_expiry_age`).
    pub async fn expiry_age(&self) -> Result<i64> {
        self.expiry_age_at(Timestamp::now()).await
    }

    /// The deadline if saved at `modification`.
    pub async fn expiry_date_at(&self, modification: Timestamp) -> Result<Timestamp> {
        let s = &self.inner.settings.expiry;
        self.with_data(|st| {
            Ok(s.expires_at(
                st.expiry,
                modification,
                st.created_at.unwrap_or(modification),
            ))
        })
        .await
    }

    /// The deadline if saved now (Django's `get_expiry_date`).
    pub async fn expiry_date(&self) -> Result<Timestamp> {
        self.expiry_date_at(Timestamp::now()).await
    }

    /// Whether the cookie should last only until the browser closes.
    pub async fn expire_at_browser_close(&self) -> Result<bool> {
        let s = &self.inner.settings.expiry;
        self.with_data(|st| Ok(s.expire_at_browser_close(st.expiry)))
            .await
    }

    /// Django's `set_test_cookie`.
    pub async fn set_test_cookie(&self) -> Result<()> {
        self.insert(TEST_COOKIE_NAME, TEST_COOKIE_VALUE).await
    }

    /// Django's `test_cookie_worked`.
    pub async fn test_cookie_worked(&self) -> Result<bool> {
        Ok(self.get::<String>(TEST_COOKIE_NAME).await?.as_deref() == Some(TEST_COOKIE_VALUE))
    }

    /// Django's `delete_test_cookie`.
    pub async fn delete_test_cookie(&self) -> Result<()> {
        self.remove(TEST_COOKIE_NAME).await.map(|_| ())
    }

    /// The stored deadline as last loaded or written by this handle (`None` for a new or
    /// not-yet-loaded session).
    pub fn stored_expires_at(&self) -> Option<Timestamp> {
        self.lock().expires_at
    }

    /// Extends the stored deadline without rewriting the data, when a sliding session's
    /// deadline would move by at least `interval` (the middleware's touch policy: an
    /// idle-timeout session read on every request is touched at most once per interval
    /// instead of being rewritten). Returns whether it touched.
    ///
    /// Does nothing for a modified session (its save renews the deadline), a session
    /// that was never loaded, or a fixed-deadline policy. A session deleted meanwhile is
    /// left deleted ([`Error::NotFound`] is reported as `Ok(false)`).
    pub async fn touch_if_due(&self, interval: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let (key, new_deadline) = {
            let st = self.lock();
            let (Some(key), Some(stored), false, true) =
                (st.key.clone(), st.expires_at, st.modified, st.base_loaded)
            else {
                return Ok(false);
            };
            if matches!(st.expiry, Expiry::At(_)) {
                return Ok(false);
            }
            let created = st.created_at.unwrap_or(now);
            let next = self
                .inner
                .settings
                .expiry
                .expires_at(st.expiry, now, created);
            let moved = stored.millis_until(next);
            if moved < i64::try_from(interval.as_millis()).unwrap_or(i64::MAX) {
                return Ok(false);
            }
            (key, next)
        };
        match self.inner.store.touch(&key, new_deadline).await {
            Ok(()) => {
                self.lock().expires_at = Some(new_deadline);
                Ok(true)
            }
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the session: creates it under a fresh key when it has none, otherwise
    /// updates it with compare-and-set on the version it was based on.
    ///
    /// On a conflict the record is reloaded and this request's changes re-applied, up to
    /// `save_attempts` times. [`Error::NotFound`] means the session was deleted meanwhile
    /// (a concurrent logout): it is not resurrected.
    pub async fn save(&self) -> Result<()> {
        let need_base = {
            let st = self.lock();
            match &st.key {
                Some(k) if !st.base_loaded => Some(k.clone()),
                _ => None,
            }
        };
        if let Some(k) = need_base {
            let base = self.load_base(&k).await?;
            self.lock().rebase(base)?;
        }
        let store = &self.inner.store;
        let attempts = self.inner.settings.save_attempts.max(1);
        for attempt in 1..=attempts {
            let now = Timestamp::now();
            let (key, record, expected) = {
                let mut st = self.lock();
                let created = st.created_at.unwrap_or(now);
                let expiry = st.expiry;
                let record = Record {
                    data: st.data_mut().clone(),
                    expiry,
                    created_at: created,
                    expires_at: self.inner.settings.expiry.expires_at(expiry, now, created),
                    version: st.version.map_or(1, |v| v.saturating_add(1)),
                };
                (st.key.clone(), record, st.version)
            };
            let Some(key) = key else {
                let new_key = store.create(&record).await?;
                let mut st = self.lock();
                st.key = Some(new_key);
                st.version = Some(record.version);
                st.created_at = Some(record.created_at);
                st.expires_at = Some(record.expires_at);
                st.changes.clear();
                st.base_loaded = true;
                return Ok(());
            };
            match store.update(&key, &record, expected).await {
                Ok(version) => {
                    let mut st = self.lock();
                    st.version = Some(version);
                    st.created_at = Some(record.created_at);
                    st.expires_at = Some(record.expires_at);
                    st.changes.clear();
                    return Ok(());
                }
                Err(Error::Conflict { .. }) if attempt < attempts => {
                    tokio::time::sleep(backoff(attempt)).await;
                    match self.load_base(&key).await? {
                        None => return Err(Error::NotFound),
                        Some(base) => self.lock().rebase(Some(base))?,
                    }
                }
                Err(Error::Conflict { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Err(Error::ConflictRetriesExhausted { attempts })
    }
}

/// Randomised, growing pause between conflict retries, so contenders spread out.
fn backoff(attempt: u32) -> Duration {
    let mut b = [0u8; 4];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => attempt.wrapping_mul(7919),
    };
    let ceiling_us = 200u32 << attempt.min(6);
    Duration::from_micros(u64::from(r % ceiling_us))
}

#[cfg(test)]
mod tests;
