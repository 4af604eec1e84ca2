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
//! The handle loads through [`SessionStore::load_lazy`]: the data stays as the store's
//! bytes while the request only reads it, and [`Session::get`] or
//! [`Session::contains_key`] decodes one value (or none) where a whole load decoded every
//! key ([`crate::lazy`]). The first change, or a read of everything ([`Session::load`],
//! [`Session::keys`], a save), decodes the map once.
//!
//! A client-supplied key the store does not know (or a record whose bytes cannot be
//! decoded) is never adopted: the session starts empty and the next save mints a fresh
//! key. A corrupt record is logged and left untouched in the store. Damage inside the
//! data, found only when a read reaches it, is handled the same way at that read.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::codec::CodecError;
use crate::config::SessionSettings;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::key::SessionKey;
use crate::lazy::{LazyData, LazyRecord};
use crate::record::{Record, SessionData, SessionMeta};
use crate::store::{SessionStore, StoreCalls};
use crate::time::Timestamp;
use crate::users::{AuthCheck, UserIndex, UserSession, index_of, validate_principal};

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
    /// The current view of the data, decoded; `None` until first touched, and while the
    /// loaded data is only read ([`State::lazy`]).
    data: Option<SessionData>,
    /// The loaded data as the store returned it, decoded only as far as it is read
    /// ([`crate::lazy`]); taken into [`State::data`] by the first change or full read.
    lazy: Option<LazyData>,
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
    /// The framework's facts as loaded (or as this request set them).
    meta: SessionMeta,
    /// Set by `login` and `clear`: the meta this request decided, kept over a rebase.
    meta_override: Option<SessionMeta>,
    /// The client this request came from ([`Session::set_client`]).
    client: Option<(Option<String>, Option<String>)>,
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
    /// Data that is still encoded stays so while this request has made no change.
    fn rebase(&mut self, base: Option<LazyRecord>) -> Result<()> {
        let data = match base {
            Some(r) => {
                self.loaded = true;
                self.version = Some(r.version);
                self.created_at = Some(r.created_at);
                self.expires_at = Some(r.expires_at);
                if !self.expiry_set {
                    self.expiry = r.expiry;
                }
                self.meta = r.meta;
                r.data
            }
            None => {
                // Unknown, expired or undecodable: never adopt the client's key.
                self.key = None;
                self.version = None;
                self.created_at = None;
                self.expires_at = None;
                self.meta = SessionMeta::default();
                LazyData::decoded(SessionData::new())
            }
        };
        if let Some(m) = &self.meta_override {
            self.meta = m.clone();
        }
        self.base_loaded = true;
        if self.changes.is_empty() && !data.is_decoded() {
            self.data = None;
            self.lazy = Some(data);
            return Ok(());
        }
        self.lazy = None;
        let mut data = data.decode().unwrap_or_else(|e| {
            self.drop_corrupt(&e);
            SessionData::new()
        });
        apply(&mut data, &self.changes)?;
        self.data = Some(data);
        Ok(())
    }

    /// Stored data found damaged while it is read ([`crate::lazy`]): as for a record
    /// that fails to load, the session starts new, under a key the next save mints, and
    /// the stored bytes stay as they are.
    fn drop_corrupt(&mut self, e: &CodecError) {
        if let Some(key) = &self.key {
            tracing::warn!(
                session = %key.fingerprint(),
                error = %e,
                "session data corrupted; starting a new session and leaving the stored record untouched"
            );
        }
        self.key = None;
        self.lazy = None;
        self.loaded = false;
        self.version = None;
        self.created_at = None;
        self.expires_at = None;
        self.meta = self.meta_override.clone().unwrap_or_default();
    }

    /// The data, decoded whole (the first change or full read of loaded data).
    fn data_mut(&mut self) -> &mut SessionData {
        if self.data.is_none() {
            let data = match self.lazy.take().map(LazyData::decode) {
                None => SessionData::new(),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    self.drop_corrupt(&e);
                    SessionData::new()
                }
            };
            self.data = Some(data);
        }
        self.data.get_or_insert_with(SessionData::new)
    }

    /// Whether the data, as loaded or decoded, is here (nothing to load).
    fn has_data(&self) -> bool {
        self.data.is_some() || self.lazy.is_some()
    }

    /// Django's `is_empty()`: no key and no data.
    fn is_empty(&self) -> bool {
        self.key.is_none() && self.lazy.is_none() && self.data.as_ref().is_none_or(|d| d.is_empty())
    }

    /// The value under `key`, decoding only it while the data is still encoded.
    fn value(&mut self, key: &str) -> Option<Value> {
        if let (None, Some(lazy)) = (&self.data, &self.lazy) {
            match lazy.get(key) {
                Ok(v) => return v,
                Err(e) => self.drop_corrupt(&e),
            }
        }
        self.data_mut().get(key).cloned()
    }

    /// Whether `key` holds a value, decoding none while the data is still encoded.
    fn contains(&mut self, key: &str) -> bool {
        if let (None, Some(lazy)) = (&self.data, &self.lazy) {
            match lazy.contains_key(key) {
                Ok(v) => return v,
                Err(e) => self.drop_corrupt(&e),
            }
        }
        self.data_mut().contains_key(key)
    }

    /// Replaces the data with an empty map (clear, flush, a login as someone else).
    fn empty_data(&mut self) {
        self.lazy = None;
        self.data = Some(SessionData::new());
    }

    /// The meta to write at `now`: empty for an anonymous session; otherwise the loaded
    /// meta, seen now, with the request's client when one was recorded.
    fn meta_at(&self, now: Timestamp) -> SessionMeta {
        if self.meta.principal.is_none() {
            return SessionMeta::default();
        }
        let mut m = self.meta.clone();
        m.last_seen = Some(now);
        if let Some((ua, addr)) = &self.client {
            m.user_agent.clone_from(ua);
            m.client_addr.clone_from(addr);
        }
        m
    }
}

/// What every session handle of one application shares: the store, the settings and the
/// application's [`AuthCheck`]. A middleware builds one and gives each request's handle a
/// reference to it ([`Session::in_context`]): one reference count per request rather
/// than one per part.
pub struct SessionContext {
    store: Arc<dyn SessionStore>,
    settings: Arc<SessionSettings>,
    auth_check: Option<Arc<dyn AuthCheck>>,
}

impl SessionContext {
    /// The context of handles over `store` with `settings` and, if any, `auth_check`
    /// (see [`Session::with_auth_check`]).
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: Arc<SessionSettings>,
        auth_check: Option<Arc<dyn AuthCheck>>,
    ) -> Self {
        SessionContext {
            store,
            settings,
            auth_check,
        }
    }

    /// The store behind the handles.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContext")
            .field("engine", &self.store.engine())
            .field("auth_check", &self.auth_check.is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    ctx: Arc<SessionContext>,
    state: Mutex<State>,
}

/// What a session did during one request, read at once ([`Session::activity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// The data was read or written ([`Session::accessed`]).
    pub accessed: bool,
    /// The data or expiry was changed ([`Session::modified`]).
    pub modified: bool,
    /// No key and no data ([`Session::is_empty`]).
    pub empty: bool,
    /// The session has a key: it was loaded under one or saved.
    pub has_key: bool,
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
            .field("loaded", &st.has_data())
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
        Session::with_auth_check(store, settings, key, None)
    }

    /// [`Session::new`] with the application's [`AuthCheck`]: a signed-in session whose
    /// stored auth hash no longer matches the principal's current one (a password
    /// change) is flushed when it is loaded, as Django does.
    pub fn with_auth_check(
        store: Arc<dyn SessionStore>,
        settings: Arc<SessionSettings>,
        key: Option<SessionKey>,
        auth_check: Option<Arc<dyn AuthCheck>>,
    ) -> Self {
        Session::in_context(
            Arc::new(SessionContext::new(store, settings, auth_check)),
            key,
        )
    }

    /// [`Session::with_auth_check`] over a context shared by many handles (a
    /// middleware's: see [`SessionContext`]).
    pub fn in_context(ctx: Arc<SessionContext>, key: Option<SessionKey>) -> Self {
        Session {
            inner: Arc::new(Inner {
                ctx,
                state: Mutex::new(State {
                    original_key: key.clone(),
                    key,
                    ..State::default()
                }),
            }),
        }
    }

    /// The deadline the settings give a session with `expiry`, created at `created`, saved
    /// at `now`.
    fn deadline(&self, expiry: Expiry, now: Timestamp, created: Timestamp) -> Timestamp {
        self.inner
            .ctx
            .settings
            .expiry
            .expires_at(expiry, now, created)
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

    /// Whether the session was neither read nor changed during this request (neither
    /// [`Session::accessed`] nor [`Session::modified`]), under one lock: what a
    /// middleware asks of every request.
    pub fn untouched(&self) -> bool {
        let st = self.lock();
        !st.accessed && !st.modified
    }

    /// [`Session::accessed`], [`Session::modified`], [`Session::is_empty`] and whether
    /// the session has a key, read under one lock: what a middleware asks of every
    /// response.
    pub fn activity(&self) -> Activity {
        let st = self.lock();
        Activity {
            accessed: st.accessed,
            modified: st.modified,
            empty: st.is_empty(),
            has_key: st.key.is_some(),
        }
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
        &self.inner.ctx.store
    }

    /// The settings this session follows.
    pub fn settings(&self) -> &SessionSettings {
        &self.inner.ctx.settings
    }

    /// Django's `is_empty()`: no key and no data. Never loads.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    async fn load_base(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        match self.inner.ctx.store.call_load_lazy(key).await {
            Ok(Some(r)) => self.check_auth(key, r).await,
            Ok(None) => Ok(None),
            Err(Error::Codec(e)) => {
                tracing::warn!(
                    session = %key.fingerprint(),
                    engine = self.inner.ctx.store.engine(),
                    error = %e,
                    "session data corrupted; starting a new session and leaving the stored record untouched"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Drops (and deletes) a signed-in record whose auth hash the application no longer
    /// vouches for.
    async fn check_auth(&self, key: &SessionKey, record: LazyRecord) -> Result<Option<LazyRecord>> {
        let (Some(check), Some(principal)) = (&self.inner.ctx.auth_check, record.principal())
        else {
            return Ok(Some(record));
        };
        let current = check.auth_hash(principal).await?;
        if current.is_some() && current == record.meta.auth_hash {
            return Ok(Some(record));
        }
        tracing::info!(
            session = %key.fingerprint(),
            "session's auth hash no longer matches its principal's; flushing it"
        );
        self.inner.ctx.store.call_delete(key).await?;
        self.lock().flushed = true;
        Ok(None)
    }

    /// Loads the data if this handle has none yet, and marks it accessed.
    async fn ensure_data(&self) -> Result<()> {
        self.with_data(|_| Ok(())).await
    }

    /// Runs `f` on the state once the data is there (loading it first if needed), and
    /// marks the data accessed. Where it is already there (every call after a request's
    /// first), under one lock: a lock is two atomic operations, and a request that reads
    /// and writes a value would otherwise take it twice as often.
    async fn with_data<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let key = {
            let mut st = self.lock();
            st.accessed = true;
            if st.has_data() {
                return f(&mut st);
            }
            st.key.clone()
        };
        let base = match &key {
            Some(k) => self.load_base(k).await?,
            None => None,
        };
        let mut st = self.lock();
        if !st.has_data() {
            st.rebase(base)?;
        }
        f(&mut st)
    }

    /// Loads (if needed) and returns a copy of all the data.
    pub async fn load(&self) -> Result<SessionData> {
        self.with_data(|st| Ok(st.data_mut().clone())).await
    }

    /// The value under `key` as JSON.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>> {
        self.with_data(|st| Ok(st.value(key))).await
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
        let max_keys = self.inner.ctx.settings.max_keys;
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
            match data.get_mut(key) {
                // An existing key keeps its string: no allocation for the map's copy.
                Some(slot) => *slot = value.clone(),
                None => {
                    data.insert(key.to_owned(), value.clone());
                }
            }
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
        self.with_data(|st| Ok(st.contains(key))).await
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

    /// Empties the data without loading it; the key is kept (Django's `clear`). A
    /// signed-in session is signed out (its principal is unbound).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.meta = SessionMeta::default();
        st.meta_override = Some(SessionMeta::default());
        st.empty_data();
        st.changes.push(Change::Clear);
        st.accessed = true;
        st.modified = true;
    }

    /// Empties the data, deletes the stored record and drops the key (logout).
    pub async fn flush(&self) -> Result<()> {
        let key = {
            let mut st = self.lock();
            st.empty_data();
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
            st.meta = SessionMeta::default();
            st.meta_override = None;
            st.key.take()
        };
        if let Some(k) = key {
            self.inner.ctx.store.call_delete(&k).await?;
        }
        Ok(())
    }

    /// Moves the data to a fresh key and deletes the old record. Call it at login, against
    /// session fixation.
    pub async fn cycle_key(&self) -> Result<()> {
        self.ensure_data().await?;
        let now = Timestamp::now();
        let (old, record) = {
            let mut st = self.lock();
            let data = st.data_mut().clone();
            let created = st.created_at.unwrap_or(now);
            let expiry = st.expiry;
            let record = Record {
                data,
                expiry,
                created_at: created,
                expires_at: self.deadline(expiry, now, created),
                version: 1,
                meta: st.meta_at(now),
            };
            (st.key.clone(), record)
        };
        let new_key = self.inner.ctx.store.call_create(&record).await?;
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
            self.inner.ctx.store.call_delete(&old).await?;
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
        self.with_data(|st| Ok(self.age_secs(st, modification)))
            .await
    }

    /// Seconds until expiry of the session `st` holds, if saved at `modification`.
    fn age_secs(&self, st: &State, modification: Timestamp) -> i64 {
        self.inner.ctx.settings.expiry.age_secs(
            st.expiry,
            modification,
            st.created_at.unwrap_or(modification),
        )
    }

    /// Seconds until expiry if saved now (Django's `get_expiry_age`).
    pub async fn expiry_age(&self) -> Result<i64> {
        self.expiry_age_at(Timestamp::now()).await
    }

    /// The deadline if saved at `modification`.
    pub async fn expiry_date_at(&self, modification: Timestamp) -> Result<Timestamp> {
        let s = &self.inner.ctx.settings.expiry;
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

    /// The `Max-Age` of the session's cookie if the session is saved at `modification`:
    /// `None` for a cookie that lasts until the browser closes
    /// ([`Session::expire_at_browser_close`]), else [`Session::expiry_age_at`]; both
    /// read under one lock.
    pub async fn cookie_max_age_at(&self, modification: Timestamp) -> Result<Option<i64>> {
        let s = &self.inner.ctx.settings.expiry;
        self.with_data(|st| {
            Ok((!s.expire_at_browser_close(st.expiry)).then(|| self.age_secs(st, modification)))
        })
        .await
    }

    /// Whether the cookie should last only until the browser closes.
    pub async fn expire_at_browser_close(&self) -> Result<bool> {
        let s = &self.inner.ctx.settings.expiry;
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
    ///
    /// A signed-in session is saved instead (at most once per `interval`), so its
    /// [`SessionMeta::last_seen`] moves with its activity.
    pub async fn touch_if_due(&self, interval: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let (key, new_deadline) = {
            let st = self.lock();
            let (Some(key), Some(stored), false, true) =
                (st.key.clone(), st.expires_at, st.modified, st.base_loaded)
            else {
                return Ok(false);
            };
            if st.meta.principal.is_some() {
                let due = st
                    .meta
                    .last_seen
                    .is_none_or(|seen| seen.millis_until(now) >= interval_ms);
                (key, due.then_some(Due::Save))
            } else {
                if matches!(st.expiry, Expiry::At(_)) {
                    return Ok(false);
                }
                let created = st.created_at.unwrap_or(now);
                let next = self.deadline(st.expiry, now, created);
                let moved = stored.millis_until(next);
                if moved < interval_ms {
                    return Ok(false);
                }
                (key, Some(Due::Touch(next)))
            }
        };
        enum Due {
            Save,
            Touch(Timestamp),
        }
        let new_deadline = match new_deadline {
            None => return Ok(false),
            Some(Due::Save) => {
                return match self.save().await {
                    Ok(()) => Ok(true),
                    Err(Error::NotFound) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(Due::Touch(d)) => d,
        };
        match self.inner.ctx.store.call_touch(&key, new_deadline).await {
            Ok(()) => {
                self.lock().expires_at = Some(new_deadline);
                Ok(true)
            }
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the client this request came from (`User-Agent`, address), written into
    /// [`SessionMeta`] of a signed-in session at its next save. Framework adapters call
    /// it when client tracking is on; it never loads.
    pub fn set_client(&self, user_agent: Option<String>, client_addr: Option<String>) {
        self.lock().client = Some((user_agent, client_addr));
    }

    /// Signs the session in as `principal` (Django's `login`): a session signed in as
    /// another principal is emptied first, the key is cycled (against fixation), and the
    /// principal, `auth_hash` (the app's hash of the credentials, checked on every later
    /// load by the [`AuthCheck`]) and the time are recorded, outside the data.
    pub async fn login(&self, principal: &str, auth_hash: Option<&str>) -> Result<()> {
        validate_principal(principal)?;
        self.ensure_data().await?;
        {
            let mut st = self.lock();
            if st.meta.principal.as_deref().is_some_and(|p| p != principal) {
                st.empty_data();
                st.changes.clear();
                st.changes.push(Change::Clear);
            }
            let meta = SessionMeta {
                principal: Some(principal.to_owned()),
                auth_hash: auth_hash.map(str::to_owned),
                ..SessionMeta::default()
            };
            st.meta = meta.clone();
            st.meta_override = Some(meta);
            st.modified = true;
        }
        self.cycle_key().await
    }

    /// Signs out: [`Session::flush`] (data, record and key gone).
    pub async fn logout(&self) -> Result<()> {
        self.flush().await
    }

    /// The principal the session is signed in as.
    pub async fn principal(&self) -> Result<Option<String>> {
        self.with_data(|st| Ok(st.meta.principal.clone())).await
    }

    /// The framework's facts about this session as loaded (principal, last seen, client).
    pub async fn meta(&self) -> Result<SessionMeta> {
        self.with_data(|st| Ok(st.meta.clone())).await
    }

    async fn signed_in(&self) -> Result<(String, Option<SessionKey>, &dyn UserIndex)> {
        let Some(principal) = self.principal().await? else {
            return Err(Error::NotSignedIn);
        };
        let index = index_of(self.inner.ctx.store.as_ref())?;
        Ok((principal, self.key(), index))
    }

    /// Every live session of this session's principal ("your devices"), this one marked
    /// [`UserSession::current`]. [`Error::NotSignedIn`] for an anonymous session,
    /// [`Error::Unsupported`] on a store without a user index (Memcached).
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>> {
        let (principal, key, index) = self.signed_in().await?;
        index.sessions_of(&principal, key.as_ref()).await
    }

    /// Ends every other session of this session's principal ("sign out other devices"),
    /// returning how many ended. This session stays signed in.
    pub async fn end_other_sessions(&self) -> Result<u64> {
        let (principal, key, index) = self.signed_in().await?;
        index.end_sessions(&principal, key.as_ref()).await
    }

    /// Ends the session of this principal whose [`UserSession::id`] is `id`; `Ok(false)`
    /// when the principal has no such live session.
    pub async fn end_user_session(&self, id: &str) -> Result<bool> {
        let (principal, _, index) = self.signed_in().await?;
        index.end_session(&principal, id).await
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
        let store = &self.inner.ctx.store;
        let attempts = self.inner.ctx.settings.save_attempts.max(1);
        for attempt in 1..=attempts {
            let now = Timestamp::now();
            let (key, record, expected) = {
                let mut st = self.lock();
                let data = st.data_mut().clone();
                let created = st.created_at.unwrap_or(now);
                let expiry = st.expiry;
                let record = Record {
                    data,
                    expiry,
                    created_at: created,
                    expires_at: self.deadline(expiry, now, created),
                    version: st.version.map_or(1, |v| v.saturating_add(1)),
                    meta: st.meta_at(now),
                };
                (st.key.clone(), record, st.version)
            };
            let Some(key) = key else {
                let new_key = store.call_create(&record).await?;
                let mut st = self.lock();
                st.key = Some(new_key);
                st.version = Some(record.version);
                st.created_at = Some(record.created_at);
                st.expires_at = Some(record.expires_at);
                st.meta = record.meta;
                st.changes.clear();
                st.base_loaded = true;
                return Ok(());
            };
            match store.call_update(&key, &record, expected).await {
                Ok(version) => {
                    let mut st = self.lock();
                    st.version = Some(version);
                    st.created_at = Some(record.created_at);
                    st.expires_at = Some(record.expires_at);
                    st.meta = record.meta;
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
