//! The Memcached driver (`memcache://host:port`).
//!
//! Each session is one item: the 42-byte header of the [stored format](crate#stored-format) (version and deadline) and
//! the codec's bytes, with Memcached's own expiry set to the record's remaining age.
//!
//! | operation | commands |
//! |---|---|
//! | `insert_new` | `ms ... ME` (add; when taken: `mg`, and a CAS write only over a record whose header says it expired) |
//! | `load` | `mg key v c` (value and CAS token) |
//! | `update` | `ms ... C<token>` with version + 1, where `token` is the CAS token this store last saw for that version; otherwise (or on `EX`) `mg`, check liveness and version, then the CAS write |
//! | `touch` | `mg`, then a CAS write of the same bytes with the deadline digits rewritten |
//! | `delete` | `delete` |
//!
//! **No user index.** Memcached cannot enumerate its keys, and an index kept in
//! Memcached items could be evicted independently of the sessions, silently hiding live
//! ones: [`SessionStore::user_index`] is `None`, so `Session::user_sessions` and
//! `end_other_sessions` give [`Error::Unsupported`]. Use Redis (standalone or Cluster),
//! the memory engine or a database engine when the application lists a user's sessions.
//!
//! The meta commands (`mg`/`ms`, Memcached 1.6+) return the item's CAS token with every
//! read and write, so the usual load-then-update of a request is one round trip per
//! step, as with Redis, while staying a compare-and-set.
//!
//! Memcached expiry is in whole seconds and, above 30 days, an absolute Unix time: the
//! driver rounds the remaining age up (plus one second, since the server's clock ticks
//! once a second) and switches to the absolute form past 30 days; the header keeps the
//! exact deadline and is what `load` checks. A record whose deadline has passed is never
//! written with exptime 0 (which means "never expires"): `insert_new` writes nothing and
//! `update`/`touch` write it with exptime -1, which Memcached treats as already expired.
//!
//! The client is this crate's own implementation of the text protocol
//! (the private `protocol` module): the maintained async crates do not fit. `async-memcached` 0.9 has
//! `get`/`set`/`add`/`delete` but no `gets`/`cas` in its ASCII API and no `touch`, holds
//! one connection behind `&mut self`, and has neither timeouts nor reconnection. The
//! seven commands needed here take a few hundred lines over a tokio `TcpStream`, with a
//! bounded pool, a connect timeout and recovery after a server restart. Session
//! operations are bounded by the `cache` engine's
//! [`TimeoutLayer`](session_core::layer::TimeoutLayer) (`command_timeout_ms`); a store
//! built with [`MemcachedStore::connect`] directly wears it with `.with_layer(...)`.

mod protocol;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use session_core::{
    Capabilities, Codec, CodecError, Error, Inserted, LazyRecord, RawAccess, Record, Result,
    SessionKey, SessionStore, Timestamp, async_trait,
};

use crate::cache::{CacheConfig, CacheTarget};
use crate::envelope::{self, EXPIRES_OFFSET, Envelope, HEADER_LEN};
use protocol::{MetaStored, Pool, ProtoError};

/// Memcached reads an exptime above this many seconds as an absolute Unix time.
const RELATIVE_EXPTIME_MAX: u64 = 30 * 24 * 60 * 60;

/// How often a compare-and-set loop re-reads after losing a race before giving up.
/// (Bounded in time too: the whole loop runs under the command timeout.)
const CAS_ATTEMPTS: u32 = 64;

/// After losing a compare-and-set race: a short random pause, growing with the attempt,
/// so that writers hammering one session take turns instead of colliding in lockstep.
async fn back_off(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cap_us = 50 * u64::from(attempt.min(20) + 1);
    tokio::time::sleep(Duration::from_micros(u64::from(nanos) % cap_us)).await;
}

/// How long purging a prefix may take (it walks every item on the server).
const PURGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The exptime for a record live until `expires_at`, or `None` when it has expired.
fn exptime(expires_at: Timestamp, now: Timestamp) -> Option<i64> {
    let ttl_ms = envelope::ttl_millis(expires_at, now)?;
    let secs = ttl_ms.div_ceil(1000) + 1;
    if secs <= RELATIVE_EXPTIME_MAX {
        i64::try_from(secs).ok()
    } else {
        // Absolute form; the deadline is positive here since it is after `now`.
        let abs = expires_at.as_unix_millis().div_euclid(1000) + 2;
        Some(abs)
    }
}

/// Exptime that stores an item as already expired (never 0: that means "no expiry").
const EXPIRED: i64 = -1;

/// A session store on one Memcached server (engine name `memcached`).
pub struct MemcachedStore {
    pool: Pool,
    prefix: String,
    codec: Arc<dyn Codec>,
    /// The CAS token last seen for a session, so that the usual load-then-update (and
    /// update-then-update) is one `ms C<token>` round trip instead of `mg` + `ms`. A
    /// stale token only costs the fallback: the server answers `EX` and the update
    /// re-reads. Bounded: cleared when it grows past [`MAX_TOKENS`].
    tokens: DashMap<SessionKey, Token>,
    token_writes: AtomicU64,
}

/// What the store last saw of a session: enough to compare-and-set without a read.
#[derive(Clone, Copy, Debug)]
struct Token {
    version: u64,
    expires_at: Timestamp,
    cas: u64,
}

/// Most CAS tokens remembered at once.
const MAX_TOKENS: usize = 65_536;

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("addr", &self.pool.addr())
            .field("prefix", &self.prefix)
            .field("codec", &self.codec.name())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` (which may use `?` on protocol results) on a pooled connection bound to
/// `$conn`; the connection goes back to the pool only after a clean exchange (a
/// deadline that drops the future drops the connection too).
macro_rules! with_conn {
    ($store:expr, $conn:ident => $body:expr) => {{
        let store = $store;
        // One clock reading serves the pool's idle bookkeeping.
        let started = std::time::Instant::now();
        let fut = async {
            let mut lease = store.pool.get(started).await?;
            let result: std::result::Result<_, ProtoError> = {
                let $conn = &mut lease.conn;
                async { $body }.await
            };
            match &result {
                Ok(_) => store.pool.put(lease, started),
                Err(e) => store.pool.failed(e),
            }
            result
        };
        store.mapped(fut).await
    }};
}

/// What a read-check-write loop decided.
enum Outcome<T> {
    Done(T),
    NotFound,
    Conflict(u64),
    Corrupt(CodecError),
    Contended,
}

impl MemcachedStore {
    /// Connects to the Memcached server that `config.url` names (`memcache://host:port`).
    pub async fn connect(config: &CacheConfig, codec: Arc<dyn Codec>) -> Result<Self> {
        let CacheTarget::Memcached(addr) = config.target()? else {
            return Err(Error::config(
                "cache.url",
                "not a Memcached URL: use memcache://host:port",
            ));
        };
        let store = MemcachedStore {
            pool: Pool::new(addr, config.pool_size, config.connect_timeout()),
            prefix: config.key_prefix.clone(),
            codec,
            tokens: DashMap::new(),
            token_writes: AtomicU64::new(0),
        };
        // Fail at startup, naming the server, rather than at the first request.
        let probe = async {
            let now = std::time::Instant::now();
            let lease = store.pool.get(now).await?;
            store.pool.put(lease, now);
            Ok::<_, ProtoError>(())
        };
        store
            .bounded(config.connect_timeout(), probe)
            .await
            .map_err(|e| match e {
                Error::Backend { source, .. } => Error::backend(
                    "memcached",
                    format!(
                        "could not connect to {}: {source}; is the server running?",
                        store.pool.addr()
                    ),
                ),
                other => other,
            })?;
        Ok(store)
    }

    /// The configured key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn remember(&self, key: &SessionKey, version: u64, expires_at: Timestamp, cas: u64) {
        // `len` visits every shard: check it now and then, not on every write.
        if self
            .token_writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && self.tokens.len() > MAX_TOKENS
        {
            self.tokens.clear();
        }
        let token = Token {
            version,
            expires_at,
            cas,
        };
        // In place when known (the usual case): no key copy, no allocation.
        if let Some(mut known) = self.tokens.get_mut(key) {
            *known = token;
            return;
        }
        self.tokens.insert(key.clone(), token);
    }

    /// Records the token of a write, unless the write stored an already expired record.
    fn after_write(
        &self,
        key: &SessionKey,
        version: u64,
        expires_at: Timestamp,
        exp: i64,
        cas: u64,
    ) {
        if exp == EXPIRED {
            self.forget(key);
        } else {
            self.remember(key, version, expires_at, cas);
        }
    }

    fn forget(&self, key: &SessionKey) {
        self.tokens.remove(key);
    }

    fn token(&self, key: &SessionKey) -> Option<Token> {
        self.tokens.get(key).map(|t| *t)
    }

    fn item_key(&self, key: &SessionKey) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.as_str().len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_str().as_bytes());
        k
    }

    /// `fut` with its protocol error mapped, or [`Error::Timeout`] when it has not
    /// finished within `after` (connection set-up and purges: session operations are
    /// bounded by the engine's [`TimeoutLayer`](session_core::layer::TimeoutLayer)).
    async fn bounded<T>(
        &self,
        after: Duration,
        fut: impl Future<Output = std::result::Result<T, ProtoError>>,
    ) -> Result<T> {
        session_core::layer::deadline("memcached", after, self.mapped(fut)).await?
    }

    /// `fut` with its protocol error mapped to the framework's.
    async fn mapped<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, ProtoError>>,
    ) -> Result<T> {
        match fut.await {
            Ok(v) => Ok(v),
            Err(ProtoError::ConnectTimeout { after, .. }) => Err(Error::Timeout {
                engine: "memcached".into(),
                after,
            }),
            Err(e) if e.is_too_large() => Err(Error::Limit(format!(
                "the session is larger than the Memcached server's item size limit (raise it with memcached -I): {e}"
            ))),
            Err(e) => Err(Error::backend("memcached", e)),
        }
    }

    /// The live record of `key`, checked and decoded by `decode` straight from the
    /// connection's read buffer; `stamp` gives its version and deadline to remember.
    async fn load_with<T: Send>(
        &self,
        key: &SessionKey,
        decode: impl Fn(&Envelope<'_>, &dyn Codec) -> std::result::Result<T, CodecError> + Send + Sync,
        stamp: impl Fn(&T) -> (u64, Timestamp),
    ) -> Result<Option<T>> {
        let ik = self.item_key(key);
        let codec = self.codec.as_ref();
        let decode = &decode;
        let read = with_conn!(self, c => c.meta_get_with(&ik, |bytes, cas| {
            let env = Envelope::parse(bytes)?;
            if !env.is_live_at(Timestamp::now()) {
                return Ok(None);
            }
            Ok(Some((decode(&env, codec)?, cas)))
        }).await)?;
        match read {
            Some(Ok(Some((record, cas)))) => {
                let (version, expires_at) = stamp(&record);
                self.remember(key, version, expires_at, cas);
                Ok(Some(record))
            }
            None | Some(Ok(None)) => {
                self.forget(key);
                Ok(None)
            }
            Some(Err(e)) => Err(self.corrupt(key, e)),
        }
    }

    fn corrupt(&self, key: &SessionKey, e: CodecError) -> Error {
        tracing::warn!(
            engine = "memcached",
            key = %key.fingerprint(),
            error = %e,
            "unreadable session record in Memcached"
        );
        Error::Codec(e)
    }

    async fn get_item(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let ik = self.item_key(key);
        with_conn!(self, c => c.get(&ik).await)
    }

    /// Deletes every item under this store's prefix (found with
    /// `lru_crawler metadump all`), returning how many. For tests and operators
    /// retiring a namespace; it walks every item on the server.
    pub async fn purge_prefix(&self) -> Result<u64> {
        let prefix = self.prefix.as_bytes().to_vec();
        let mut keys = Vec::new();
        for attempt in 0..20 {
            let listed = self
                .bounded(PURGE_TIMEOUT, async {
                    let mut lease = self.pool.get(std::time::Instant::now()).await?;
                    // The dump streams to its end; the connection is not reused after.
                    lease.conn.keys_with_prefix(&prefix).await
                })
                .await;
            match listed {
                Ok(k) => {
                    keys = k;
                    break;
                }
                // Another client's crawl is running: wait for it.
                Err(Error::Backend { source, .. })
                    if source.to_string().contains("BUSY") && attempt < 19 =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut removed = 0;
        for k in keys {
            if with_conn!(self, c => c.delete(&k).await)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl SessionStore for MemcachedStore {
    fn engine(&self) -> &str {
        "memcached"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .native_ttl(true)
            .cross_process(true)
            .compare_and_set(true)
            .may_evict(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let now = Timestamp::now();
        let Some(exp) = exptime(record.expires_at, now) else {
            // Already expired: nothing to write, but a live owner still holds the key.
            return Ok(if self.exists(key).await? {
                Inserted::KeyTaken
            } else {
                Inserted::Created
            });
        };
        let payload = self.codec.encode(record)?;
        let header = envelope::wrap(record.version, record.expires_at, &[]);
        let value: &[&[u8]] = &[&header, &payload];
        let ik = self.item_key(key);
        let outcome = with_conn!(self, c => {
            for _ in 0..CAS_ATTEMPTS {
                match c.meta_set(&ik, exp, value, None, true).await? {
                    MetaStored::Stored(cas) => return Ok(Some(cas)),
                    MetaStored::NotStored => {}
                    other => {
                        return Err(ProtoError::Protocol(format!("add replied {other:?}")));
                    }
                }
                // Taken: replace it only if its own header says it expired.
                let Some((bytes, cas)) = c.meta_get(&ik).await? else {
                    continue; // vanished meanwhile: add again
                };
                match Envelope::parse(&bytes) {
                    Ok(env) if !env.is_live_at(Timestamp::now()) => {
                        if let MetaStored::Stored(cas) =
                            c.meta_set(&ik, exp, value, Some(cas), false).await?
                        {
                            return Ok(Some(cas));
                        }
                    }
                    _ => return Ok(None),
                }
            }
            Ok(None)
        })?;
        Ok(match outcome {
            Some(cas) => {
                self.remember(key, record.version, record.expires_at, cas);
                Inserted::Created
            }
            None => Inserted::KeyTaken,
        })
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_with(
            key,
            |env, codec| env.decode(codec),
            |r| (r.version, r.expires_at),
        )
        .await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.load_with(
            key,
            |env, codec| env.decode_lazy(codec),
            |r| (r.version, r.expires_at),
        )
        .await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let payload = self.codec.encode(record)?;
        let ik = self.item_key(key);
        let now = Timestamp::now();
        let exp = exptime(record.expires_at, now).unwrap_or(EXPIRED);
        // Fast path: the token we last saw says the stored version is the expected one
        // and live; the server's CAS check makes the write conditional on nothing having
        // changed since.
        if let Some(expected) = expected_version
            && let Some(token) = self.token(key)
            && token.version == expected
            && token.expires_at > now
        {
            let version = expected.saturating_add(1);
            let header = envelope::wrap(version, record.expires_at, &[]);
            let cas = token.cas;
            match with_conn!(self, c => c.meta_set(&ik, exp, &[&header, &payload], Some(cas), false).await)?
            {
                MetaStored::Stored(cas) => {
                    self.after_write(key, version, record.expires_at, exp, cas);
                    return Ok(version);
                }
                MetaStored::NotFound => {
                    self.forget(key);
                    return Err(Error::NotFound);
                }
                // Changed since: re-read below.
                MetaStored::Exists | MetaStored::NotStored => self.forget(key),
            }
        }
        let outcome = with_conn!(self, c => {
            for attempt in 0..CAS_ATTEMPTS {
                let Some((bytes, cas)) = c.meta_get(&ik).await? else {
                    return Ok(Outcome::NotFound);
                };
                let now = Timestamp::now();
                let env = match Envelope::parse(&bytes) {
                    Ok(env) => env,
                    Err(e) => return Ok(Outcome::Corrupt(e)),
                };
                if !env.is_live_at(now) {
                    return Ok(Outcome::NotFound);
                }
                if expected_version.is_some_and(|v| v != env.version) {
                    return Ok(Outcome::Conflict(env.version));
                }
                let version = env.version.saturating_add(1);
                let header = envelope::wrap(version, record.expires_at, &[]);
                match c.meta_set(&ik, exp, &[&header, &payload], Some(cas), false).await? {
                    MetaStored::Stored(cas) => return Ok(Outcome::Done((version, cas))),
                    // A concurrent write won: re-read.
                    MetaStored::Exists => back_off(attempt).await,
                    MetaStored::NotFound | MetaStored::NotStored => return Ok(Outcome::NotFound),
                }
            }
            Ok(Outcome::Contended)
        })?;
        match outcome {
            Outcome::Done((version, cas)) => {
                self.after_write(key, version, record.expires_at, exp, cas);
                Ok(version)
            }
            Outcome::NotFound => {
                self.forget(key);
                Err(Error::NotFound)
            }
            Outcome::Conflict(found) => Err(Error::Conflict {
                expected: expected_version.unwrap_or_default(),
                found,
            }),
            Outcome::Corrupt(e) => Err(self.corrupt(key, e)),
            Outcome::Contended => Err(Error::ConflictRetriesExhausted {
                attempts: CAS_ATTEMPTS,
            }),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.forget(key);
        let ik = self.item_key(key);
        with_conn!(self, c => c.delete(&ik).await)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let ik = self.item_key(key);
        let field = envelope::deadline_field(expires_at);
        let outcome = with_conn!(self, c => {
            for attempt in 0..CAS_ATTEMPTS {
                let Some((mut bytes, cas)) = c.meta_get(&ik).await? else {
                    return Ok(Outcome::NotFound);
                };
                let now = Timestamp::now();
                let version = match Envelope::parse(&bytes) {
                    Ok(env) if env.is_live_at(now) => env.version,
                    Ok(_) => return Ok(Outcome::NotFound),
                    Err(e) => return Ok(Outcome::Corrupt(e)),
                };
                // Same bytes, same version: only the deadline digits change.
                bytes[EXPIRES_OFFSET..HEADER_LEN].copy_from_slice(&field);
                let exp = exptime(expires_at, now).unwrap_or(EXPIRED);
                match c.meta_set(&ik, exp, &[&bytes], Some(cas), false).await? {
                    MetaStored::Stored(cas) => return Ok(Outcome::Done((version, cas, exp))),
                    MetaStored::Exists => back_off(attempt).await,
                    MetaStored::NotFound | MetaStored::NotStored => return Ok(Outcome::NotFound),
                }
            }
            Ok(Outcome::Contended)
        })?;
        match outcome {
            Outcome::Done((version, cas, exp)) => {
                self.after_write(key, version, expires_at, exp, cas);
                Ok(())
            }
            Outcome::NotFound => {
                self.forget(key);
                Err(Error::NotFound)
            }
            Outcome::Corrupt(e) => Err(self.corrupt(key, e)),
            Outcome::Conflict(_) | Outcome::Contended => Err(Error::ConflictRetriesExhausted {
                attempts: CAS_ATTEMPTS,
            }),
        }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let Some(bytes) = self.get_item(key).await? else {
            return Ok(false);
        };
        let env = Envelope::parse(&bytes).map_err(|e| self.corrupt(key, e))?;
        Ok(env.is_live_at(Timestamp::now()))
    }

    async fn clear_expired(&self) -> Result<u64> {
        // Memcached drops expired items itself.
        Ok(0)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }
}

#[async_trait]
impl RawAccess for MemcachedStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        self.forget(key);
        let ik = self.item_key(key);
        let value = envelope::wrap(1, expires_at, bytes);
        match exptime(expires_at, Timestamp::now()) {
            Some(exp) => with_conn!(self, c => c.set(&ik, exp, &value).await),
            None => with_conn!(self, c => c.delete(&ik).await).map(drop),
        }
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_item(key)
            .await?
            .map(|v| match Envelope::parse(&v) {
                Ok(env) => env.payload.to_vec(),
                Err(_) => v,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_rules() {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        // Rounded up, plus the one-second tick margin.
        assert_eq!(
            exptime(now.add_duration(Duration::from_millis(1)), now),
            Some(2)
        );
        assert_eq!(exptime(now.add_secs(60), now), Some(61));
        // Past 30 days: an absolute Unix time, after the deadline.
        let far = now.add_secs(31 * 24 * 3600);
        let abs = exptime(far, now).expect("live");
        assert!(abs > i64::try_from(RELATIVE_EXPTIME_MAX).unwrap_or(0));
        assert!(abs * 1000 >= far.as_unix_millis());
        // Expired: never 0 ("never expires").
        assert_eq!(exptime(now, now), None);
        assert_eq!(exptime(now.add_secs(-5), now), None);
    }
}
