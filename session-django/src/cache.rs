//! Django's `cache` session engine layout on Redis, as Django's own Redis cache backend
//! (`django.core.cache.backends.redis.RedisCache`) stores it.
//!
//! - Key: `{KEY_PREFIX}:{VERSION}:django.contrib.sessions.cache{session_key}` (the cache
//!   framework's `make_key`; with Django's defaults `:1:django.contrib.sessions.cache…`).
//! - Value: the session dict **pickled** (Django's `RedisSerializer`), not signed. Only
//!   the types a JSON session can hold are read or written (`None`, bools, ints within
//!   64 bits, floats, str, lists and str-keyed dicts); anything else in a pickle
//!   (tuples, sets, bytes, class instances) is refused with a typed codec error, and no
//!   Python object is ever constructed. Pickles are read and written with
//!   `serde-pickle`, a kept crate, rather than our own pickle code.
//! - TTL: the seconds until the record's deadline (`get_expiry_age()` in Django).
//!
//! Because the cache value carries no signature, whoever can write to this Redis can
//! forge sessions, for Django as for us: keep it private to the applications.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value as Pickle};
use session_core::codec::CodecError;
use session_core::store::RawAccess;
use session_core::{
    Capabilities, Error, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
};

use crate::format::{from_dict, to_dict, version_of};

/// The engine name in errors and logs.
pub const ENGINE: &str = "django_cache";

/// Django's key prefix of the `cache` session engine.
pub const CACHE_PREFIX: &str = "django.contrib.sessions.cache";

/// Django's key prefix of the `cached_db` session engine.
pub const CACHED_DB_PREFIX: &str = "django.contrib.sessions.cached_db";

/// Options of the `django_cache` engine (config section `django_cache`): the Redis
/// server and the cache settings of Django's `CACHES[SESSION_CACHE_ALIAS]`.
///
/// ```toml
/// engine = "django_cache"
/// [django_cache]
/// url = "redis://127.0.0.1:6379/0"   # Django's CACHES[...]["LOCATION"]
/// key_prefix = ""                    # Django's CACHES[...]["KEY_PREFIX"]
/// version = 1                        # Django's CACHES[...]["VERSION"]
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DjangoCacheConfig {
    /// The Redis URL.
    pub url: String,
    /// Django's cache `KEY_PREFIX`.
    pub key_prefix: String,
    /// Django's cache `VERSION`.
    pub version: i64,
}

impl Default for DjangoCacheConfig {
    fn default() -> Self {
        DjangoCacheConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: String::new(),
            version: 1,
        }
    }
}

impl DjangoCacheConfig {
    /// Checks the URL.
    pub fn validate(&self) -> Result<()> {
        redis::Client::open(self.url.as_str())
            .map(|_| ())
            .map_err(|e| Error::config("django_cache.url", e.to_string()))
    }

    /// Connects and builds the store (the `cache` engine's key prefix).
    pub async fn build(&self) -> Result<DjangoCacheStore> {
        DjangoCacheStore::connect(&self.url, &self.key_prefix, self.version, CACHE_PREFIX).await
    }
}

/// Sessions in Redis as Django's cache session engine keeps them.
#[derive(Clone)]
pub struct DjangoCacheStore {
    conn: ConnectionManager,
    /// `{KEY_PREFIX}:{VERSION}:{engine prefix}`.
    prefix: String,
}

impl std::fmt::Debug for DjangoCacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoCacheStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend(e: redis::RedisError) -> Error {
    Error::backend(ENGINE, e)
}

/// Redis compare-and-set: replace only while the value is the expected one.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1";

impl DjangoCacheStore {
    /// Connects to `url`; keys are `{key_prefix}:{version}:{engine_prefix}{session key}`
    /// ([`CACHE_PREFIX`] for Django's `cache` engine, [`CACHED_DB_PREFIX`] for the
    /// cache half of `cached_db`).
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        version: i64,
        engine_prefix: &str,
    ) -> Result<DjangoCacheStore> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::config("django_cache.url", e.to_string()))?;
        let conn = ConnectionManager::new(client).await.map_err(backend)?;
        Ok(DjangoCacheStore {
            conn,
            prefix: format!("{key_prefix}:{version}:{engine_prefix}"),
        })
    }

    /// The Redis key Django uses for `key`.
    pub fn redis_key(&self, key: &SessionKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    async fn get_bytes(&self, key: &SessionKey) -> Result<Option<(Vec<u8>, i64)>> {
        let mut c = self.conn.clone();
        let (v, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .get(self.redis_key(key))
            .cmd("PTTL")
            .arg(self.redis_key(key))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(v.map(|b| (b, pttl)))
    }
}

/// The record's data (with `_session_expiry`) as a protocol-3 pickle of a dict.
pub fn to_pickle(record: &Record) -> Result<Vec<u8>> {
    serde_pickle::to_vec(&Value::Object(to_dict(record)), SerOptions::new())
        .map_err(|e| Error::Codec(CodecError::Encode(e.to_string())))
}

/// A pickled session dict back as data and expiry, refusing non-JSON types.
pub fn from_pickle(bytes: &[u8]) -> Result<(session_core::SessionData, session_core::Expiry)> {
    let v = serde_pickle::value_from_slice(bytes, DeOptions::new()).map_err(|e| {
        Error::Codec(CodecError::Corrupt(format!(
            "not a pickle of JSON-able values: {e}"
        )))
    })?;
    match pickle_to_json(v)? {
        Value::Object(map) => from_dict(map),
        _ => Err(Error::Codec(CodecError::Corrupt(
            "the pickled session is not a dict".into(),
        ))),
    }
}

fn refuse(what: &str) -> Error {
    Error::Codec(CodecError::Corrupt(format!(
        "pickled session holds {what}, which a JSON session cannot"
    )))
}

fn pickle_to_json(v: Pickle) -> Result<Value> {
    Ok(match v {
        Pickle::None => Value::Null,
        Pickle::Bool(b) => Value::Bool(b),
        Pickle::I64(i) => Value::from(i),
        Pickle::Int(_) => return Err(refuse("an integer beyond 64 bits")),
        Pickle::F64(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| refuse("a non-finite float"))?,
        Pickle::String(s) => Value::String(s),
        Pickle::List(items) => Value::Array(
            items
                .into_iter()
                .map(pickle_to_json)
                .collect::<Result<_>>()?,
        ),
        Pickle::Dict(map) => Value::Object(dict_to_json(map)?),
        Pickle::Bytes(_) => return Err(refuse("bytes")),
        Pickle::Tuple(_) => return Err(refuse("a tuple")),
        Pickle::Set(_) | Pickle::FrozenSet(_) => return Err(refuse("a set")),
    })
}

fn dict_to_json(map: BTreeMap<HashableValue, Pickle>) -> Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let HashableValue::String(k) = k else {
            return Err(refuse("a dict key that is not a str"));
        };
        out.insert(k, pickle_to_json(v)?);
    }
    Ok(out)
}

fn ttl_ms(expires_at: Timestamp) -> i64 {
    Timestamp::now().millis_until(expires_at)
}

#[async_trait]
impl SessionStore for DjangoCacheStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .native_ttl(true)
            .cross_process(true)
            .compare_and_set(true)
            .may_evict(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let bytes = to_pickle(record)?;
        let ttl = ttl_ms(record.expires_at);
        if ttl <= 0 {
            // Django's `add` with a past timeout stores nothing lasting either.
            return Ok(Inserted::Created);
        }
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(bytes)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(if set.is_some() {
            Inserted::Created
        } else {
            Inserted::KeyTaken
        })
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let Some((bytes, pttl)) = self.get_bytes(key).await? else {
            return Ok(None);
        };
        let (data, expiry) = from_pickle(&bytes).inspect_err(|e| {
            tracing::warn!(engine = ENGINE, key = %key.fingerprint(), error = %e, "Django cache session refused");
        })?;
        let now = Timestamp::now();
        // PTTL -1: no expiry set (a cache VERSION with timeout None).
        let expires_at = if pttl >= 0 {
            now.add_duration(std::time::Duration::from_millis(pttl.unsigned_abs()))
        } else {
            Timestamp::from_unix_millis(i64::MAX)
        };
        Ok(Some(Record {
            meta: crate::format::meta_of(&data),
            data,
            expiry,
            created_at: now,
            expires_at,
            version: version_of(&bytes),
        }))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let bytes = to_pickle(record)?;
        let version = version_of(&bytes);
        let ttl = ttl_ms(record.expires_at);
        let Some((old, _)) = self.get_bytes(key).await? else {
            return Err(Error::NotFound);
        };
        if let Some(expected) = expected_version {
            let found = version_of(&old);
            if found != expected {
                return Err(Error::Conflict { expected, found });
            }
        }
        if ttl <= 0 {
            self.delete(key).await?;
            return Ok(version);
        }
        let mut c = self.conn.clone();
        let r: i64 = redis::Script::new(CAS)
            .key(self.redis_key(key))
            .arg(&old)
            .arg(&bytes)
            .arg(ttl)
            .invoke_async(&mut c)
            .await
            .map_err(backend)?;
        match r {
            1 => Ok(version),
            -1 => Err(Error::NotFound),
            _ => match self.get_bytes(key).await? {
                None => Err(Error::NotFound),
                Some((cur, _)) => Err(Error::Conflict {
                    expected: expected_version.unwrap_or_else(|| version_of(&old)),
                    found: version_of(&cur),
                }),
            },
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("DEL")
            .arg(self.redis_key(key))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let ttl = ttl_ms(expires_at);
        let mut c = self.conn.clone();
        if ttl <= 0 {
            return if self.delete(key).await? {
                Ok(())
            } else {
                Err(Error::NotFound)
            };
        }
        let n: i64 = redis::cmd("PEXPIRE")
            .arg(self.redis_key(key))
            .arg(ttl)
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        if n == 1 { Ok(()) } else { Err(Error::NotFound) }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.redis_key(key))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn clear_expired(&self) -> Result<u64> {
        // Redis expires the keys itself (Django's cache engine does nothing here too).
        Ok(0)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }
}

#[async_trait]
impl RawAccess for DjangoCacheStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms(expires_at).max(1))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(self.get_bytes(key).await?.map(|(b, _)| b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pickles_round_trip_and_foreign_types_are_refused() {
        let Value::Object(data) = json!({"a": [1, 2.5, null, true, "é"], "b": {"c": "d"}}) else {
            unreachable!()
        };
        let rec = Record::with_ttl(data.clone(), 60);
        let bytes = to_pickle(&rec).expect("pickles");
        assert_eq!(from_pickle(&bytes).expect("unpickles").0, data);
        // Python: pickle.dumps({"t": (1, 2)}, 5) and pickle.dumps({"s": b"x"}, 5)
        let tuple =
            b"\x80\x05\x95\x0e\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01t\x94K\x01K\x02\x86\x94s.";
        let bytes_val =
            b"\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01s\x94C\x01x\x94s.";
        for bad in [&tuple[..], &bytes_val[..], b"not a pickle", b""] {
            assert!(
                matches!(from_pickle(bad), Err(Error::Codec(CodecError::Corrupt(_)))),
                "{bad:?}"
            );
        }
    }
}
