//! The Redis driver: standalone servers (`redis://`, `rediss://`) and Redis Cluster.
//!
//! Each session is one Redis string: the 42-byte header of the [stored format](crate#stored-format) (version and
//! deadline) followed by the codec's bytes, with a native expiry (`PX`) equal to the
//! record's remaining age. Every operation is one round trip:
//!
//! | operation | command |
//! |---|---|
//! | `insert_new` | `SET key value NX PX ttl` (a script replaces a record whose header says it expired) |
//! | `load` | `GET key` |
//! | `update` | a Lua script: compare the stored header with the expected version, check liveness, `SET ... PX` the value the client built with version + 1 |
//! | `touch` | a Lua script: check liveness, `SETRANGE` the deadline digits, `PEXPIRE` |
//! | `delete` | `DEL key` |
//! | `exists` | `GETRANGE key 0 41` (the header only) |
//! | `count`/`list` | `SCAN MATCH <escaped prefix>*` (on every master of a cluster) |
//!
//! Scripts are sent as `EVALSHA`, and as `EVAL` (which caches them) on the server's
//! `NOSCRIPT`. A standalone server is reached through a
//! [`::redis::aio::ConnectionManager`] (one multiplexed connection that reconnects in the
//! background after a failure); a cluster through the crate's async cluster client. In a
//! cluster the key is `<prefix>{<session key>}`: the hash tag keeps everything a session
//! ever stores on one slot, so scripts never cross slots.
//!
//! ## Every session of a user
//!
//! The store is a [`UserIndex`]: each principal has a sorted set
//! `<prefix>u:<hex SHA-256 of the principal>` (the principal itself never appears in a
//! key name) whose members are the keys of its signed-in sessions, scored by the time
//! (the set's own server's clock, in ms) they were last added.
//!
//! - Writing a signed-in record (`insert_new`, `update`) first enters the key in the
//!   set: `ZADD` with the server's time, and the set's TTL extended to at least the
//!   record's remaining age (plus a second). Only then is the record written, so a live
//!   signed-in record is always in its principal's set. On one server both steps run in
//!   one script (the write scripts with the index step in front, the set as a second
//!   key): one round trip, as for an anonymous write. On a cluster the index step is a
//!   call of its own before the write. Anonymous records skip the step: their writes
//!   are the commands and scripts they always were.
//! - Listing reads the members (`ZRANGE`), fetches their records with one `MGET`, and
//!   returns those that are live and still bound to the principal. Members that are
//!   not (record deleted, expired or evicted, or rewritten for another principal or for
//!   none) are removed, but only when their score says they were added more than a
//!   grace period ago (twice `command_timeout_ms`, at least 2 s), by a script that
//!   re-reads the score atomically: a member added again meanwhile, or one whose record
//!   write is still in flight (added, not yet written), is kept for a later listing.
//!   The cost is proportional to the principal's sessions: `ZRANGE` plus `MGET` of its
//!   members, never a `SCAN`.
//! - Ending sessions is `DEL` of their keys (the normal delete: an update still in
//!   flight gets [`Error::NotFound`] and cannot write them back), then `ZREM`.
//!
//! The same scheme serves a cluster. The set and a principal's sessions live in
//! different slots (each session key is its own hash tag), so no step spans slots in
//! one command or script: the order of the steps (set first, record second; prune only
//! what is stale and old) is what keeps the listing complete, not a transaction.
//! Putting a principal's sessions under one hash tag would have allowed one script per
//! write, but the session key must stay the only thing needed to find a record (the
//! principal is not known when a request loads its session), and it would pile every
//! session of a busy principal onto one node. `MGET` and `DEL` over many slots are
//! split per node by the cluster client.
//!
//! `touch` moves a record's deadline without reading it and so leaves the set's TTL
//! alone. The session handle never touches a signed-in session (it saves it, which
//! re-adds it to the set); a caller that extends a signed-in record with `touch` beyond
//! its principal's set lifetime should save it instead.
//!
//! Every operation is bounded by `cache.command_timeout_ms` ([`Error::Timeout`]), by
//! one timer:
//! - The `cache` engine wears a [`TimeoutLayer`](session_core::layer::TimeoutLayer) of
//!   that bound around every session operation, which also covers waiting for a
//!   reconnect, and its client sets no response timeout of its own. The client's
//!   timer under the layer cost a load about 870 of its 22,700 instructions, and 2-9 %
//!   of its rate at concurrency 1 against the raw client; a cluster client has two (a
//!   command's and a request's across redirections). See BENCHMARKS.md, "Redis: one
//!   timer per operation". The layer is the timer kept because only it also bounds
//!   the wait for a reconnect. The steps the layer leaves unbounded (each
//!   `SCAN` step and `CLUSTER SLOTS` of `count` and `list`, each `DEL` of
//!   [`RedisStore::purge_prefix`]) are bounded one by one by the store.
//! - A store built with [`RedisStore::connect`] or
//!   [`CacheStore::connect`](crate::CacheStore::connect) may be used without the layer:
//!   its client bounds every command (the response timeout). Wearing the layer as well
//!   (`.with_layer(...)`) bounds reconnect waits too.
//!
//! A server that is down gives [`Error::Backend`] or [`Error::Timeout`] at once or within
//! that bound, and the same store works again when it is back.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
#[cfg(feature = "cluster")]
use ::redis::cluster::ClusterClientBuilder;
#[cfg(feature = "cluster")]
use ::redis::cluster_async::ClusterConnection;
#[cfg(feature = "cluster")]
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{Cmd, ErrorKind, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use session_core::users::{session_id, sort_oldest_first, validate_principal};
use session_core::{
    Capabilities, Codec, Error, Inserted, LazyRecord, RawAccess, Record, Result, SessionKey,
    SessionStore, Timestamp, UserIndex, UserSession, async_trait,
};

use crate::cache::{Bound, CacheConfig, CacheTarget, redact};
use crate::envelope::{self, Envelope, HEADER_LEN, StoredValue};

/// `update` with an expected version, the common case. The client already built the new
/// value (header with version expected + 1), so on the fast path the script compares the
/// stored header's first 21 bytes with `ARGV[1]` (`v` and the expected digits), checks
/// the deadline and writes; only a failed check classifies. Replies 2 written, 0 not
/// found, 3 corrupt header, `{1, v}` conflict with the stored version `v`.
///
/// A script is the one atomic compare-and-set Redis 7 offers a multiplexed connection
/// (`WATCH` needs a connection per transaction and two round trips). It costs the server
/// more than a `SET` (on Redis 7.0 about 7 µs against 0.5 µs, most of it passing the
/// ~1 KiB value through Lua; staging the value under another key with a plain `SET` and
/// `RENAME`ing it in the script measured no cheaper), so updates reach a lower ceiling
/// than blind writes when the server is saturated.
const UPDATE_CAS_LUA: &str = r"
local h = redis.call('GETRANGE', KEYS[1], 0, 41)
local e = tonumber(string.sub(h, 23, 42))
if e and string.sub(h, 1, 21) == ARGV[1] and e > tonumber(ARGV[2]) then
  if ARGV[3] == '0' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
  end
  return 2
end
if h == '' then return 0 end
if e == nil or string.len(h) < 42 or string.sub(h, 1, 1) ~= 'v' or string.sub(h, 22, 22) ~= 'e'
   or not string.find(string.sub(h, 2, 21), '^%d+$') then
  return 3
end
if e <= tonumber(ARGV[2]) then return 0 end
return {1, string.sub(h, 2, 21)}
";

/// `update` without an expected version (a blind write that still never resurrects):
/// reads the header, checks liveness, writes the value with the stored version + 1 (an
/// exact decimal increment of the 20 digits, no float rounding), or deletes the key when
/// the new deadline has already passed. Replies `{0}` not found, `{2, v}` written as
/// version `v`, `{3}` corrupt header.
const UPDATE_LUA: &str = r"
local h = redis.call('GETRANGE', KEYS[1], 0, 41)
if h == '' then return {0} end
local v = string.sub(h, 2, 21)
local e = tonumber(string.sub(h, 23, 42))
if string.len(h) < 42 or string.sub(h, 1, 1) ~= 'v' or string.sub(h, 22, 22) ~= 'e'
   or e == nil or not string.find(v, '^%d+$') then
  return {3}
end
if e <= tonumber(ARGV[1]) then return {0} end
local i = 20
local tail = ''
while i > 0 and string.sub(v, i, i) == '9' do
  tail = tail .. '0'
  i = i - 1
end
if i == 0 then return {3} end
local nv = string.sub(v, 1, i - 1) .. string.char(string.byte(v, i) + 1) .. tail
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], 'v' .. nv .. 'e' .. ARGV[3] .. ARGV[4], 'PX', ARGV[2])
end
return {2, nv}
";

/// Moves the deadline of a live record: rewrites the deadline digits in place and the
/// native expiry, leaving data and version alone. Replies 0 not found, 1 done, 3 corrupt.
const TOUCH_LUA: &str = r"
local h = redis.call('GETRANGE', KEYS[1], 0, 41)
if h == '' then return 0 end
local e = tonumber(string.sub(h, 23, 42))
if string.len(h) < 42 or string.sub(h, 1, 1) ~= 'v' or string.sub(h, 22, 22) ~= 'e' or e == nil then
  return 3
end
if e <= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SETRANGE', KEYS[1], 22, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// `insert_new` after `SET NX` found the key taken: replaces the value only if the stored
/// header says the record expired (the server's clock may lag ours by a few ms).
/// Replies 1 written, 0 a live (or unreadable) record holds the key.
const REPLACE_EXPIRED_LUA: &str = r"
local h = redis.call('GETRANGE', KEYS[1], 0, 41)
if h ~= '' then
  local e = tonumber(string.sub(h, 23, 42))
  if e == nil or string.sub(h, 1, 1) ~= 'v' or e > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
";

/// Adds session key `ARGV[1]` to a principal's sorted set `KEYS[1]`, scored with the
/// server's time (ms), and keeps the set alive for at least `ARGV[2]` ms.
const INDEX_ADD_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local want = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
";

/// Removes the members `ARGV[2..]` of the sorted set `KEYS[1]` that were last added
/// more than `ARGV[1]` ms ago (by the server's clock). Replies how many it removed.
const INDEX_PRUNE_LUA: &str = r"
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= cutoff then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
";

/// A Lua script and its SHA-1, sent as `EVALSHA` (and as `EVAL` after `NOSCRIPT`).
struct Lua {
    code: String,
    sha: String,
}

impl Lua {
    fn new(code: &str) -> Self {
        Lua {
            code: code.to_owned(),
            sha: Script::new(code).get_hash().to_owned(),
        }
    }

    /// `code` preceded by the index step of a standalone server: adds session key
    /// `ARGV[#ARGV - 1]` to the principal's sorted set `KEYS[2]` (scored with the
    /// server's time) and keeps the set alive for at least `ARGV[#ARGV]` ms, then runs
    /// `code` on `KEYS[1]` with its own arguments in front.
    fn indexed(code: &str) -> Self {
        Self::new(&format!("{INDEX_STEP_LUA}{code}"))
    }
}

/// The index step of [`Lua::indexed`] scripts, scoped so its names stay its own.
const INDEX_STEP_LUA: &str = r"
do
  local n = #ARGV
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[n - 1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[n]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[n])
  end
end
";

/// `insert_new` of a signed-in record: `SET NX PX` as a script, so that a standalone
/// server runs the index step in the same call. Replies 1 written, 0 key taken.
const SET_NX_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

static UPDATE: LazyLock<Lua> = LazyLock::new(|| Lua::new(UPDATE_LUA));
static UPDATE_CAS: LazyLock<Lua> = LazyLock::new(|| Lua::new(UPDATE_CAS_LUA));
static TOUCH: LazyLock<Lua> = LazyLock::new(|| Lua::new(TOUCH_LUA));
static REPLACE_EXPIRED: LazyLock<Lua> = LazyLock::new(|| Lua::new(REPLACE_EXPIRED_LUA));
static INDEX_ADD: LazyLock<Lua> = LazyLock::new(|| Lua::new(INDEX_ADD_LUA));
static SET_NX: LazyLock<Lua> = LazyLock::new(|| Lua::new(SET_NX_LUA));
static SET_NX_INDEXED: LazyLock<Lua> = LazyLock::new(|| Lua::indexed(SET_NX_LUA));
static UPDATE_INDEXED: LazyLock<Lua> = LazyLock::new(|| Lua::indexed(UPDATE_LUA));
static UPDATE_CAS_INDEXED: LazyLock<Lua> = LazyLock::new(|| Lua::indexed(UPDATE_CAS_LUA));
static INDEX_PRUNE: LazyLock<Lua> = LazyLock::new(|| Lua::new(INDEX_PRUNE_LUA));

/// How long a principal's set outlives the longest session added to it, beyond the
/// session's remaining age: slack for the clocks of client and server.
const INDEX_TTL_SLACK_MS: u64 = 1000;

/// The least time a stale member stays in a principal's set after it was last added
/// (the grace is twice the command timeout when that is longer).
const INDEX_MIN_GRACE: Duration = Duration::from_secs(2);

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: u64 = 1000;

/// The connection: a reconnecting multiplexed connection, or the cluster client's.
/// Both are cheap handles over shared state; commands clone them.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A session store on Redis, standalone or Cluster (engine names `redis`,
/// `redis-cluster` in errors and logs).
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    cluster: bool,
    codec: Arc<dyn Codec>,
    command_timeout: Duration,
    /// Who bounds each command: the client (its response timeout), or the engine's
    /// timeout layer each operation and the store each sweep step.
    bound: Bound,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("codec", &self.codec.name())
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server or cluster that `config` names (`cache.url` with a
    /// `redis://`, `rediss://` or `redis+cluster://` scheme, or `cache.urls` for a
    /// cluster). Fails when the configuration is invalid or the server does not answer
    /// within `cache.connect_timeout_ms`. Every command is bounded by
    /// `cache.command_timeout_ms` in the client.
    pub async fn connect(config: &CacheConfig, codec: Arc<dyn Codec>) -> Result<Self> {
        Self::connect_bounded(config, codec, Bound::Client).await
    }

    /// [`RedisStore::connect`], its commands bounded by `bound`.
    pub(crate) async fn connect_bounded(
        config: &CacheConfig,
        codec: Arc<dyn Codec>,
        bound: Bound,
    ) -> Result<Self> {
        match config.target()? {
            CacheTarget::Redis(url) => Self::connect_standalone(config, &url, codec, bound).await,
            #[cfg(feature = "cluster")]
            CacheTarget::RedisCluster(urls) => {
                Self::connect_cluster(config, &urls, codec, bound).await
            }
            _ => Err(Error::config(
                "cache.url",
                "not a Redis URL: use redis://host:port, rediss://host:port or redis+cluster://h1:p1,h2:p2",
            )),
        }
    }

    async fn connect_standalone(
        config: &CacheConfig,
        url: &str,
        codec: Arc<dyn Codec>,
        bound: Bound,
    ) -> Result<Self> {
        if url.starts_with("rediss://") {
            #[cfg(not(feature = "tls"))]
            return Err(Error::config(
                "cache.url",
                "rediss:// needs TLS support: build backend-cache with its `tls` feature",
            ));
            // The process may already have chosen a provider; keep it if so.
            #[cfg(feature = "tls")]
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = ::redis::Client::open(url)
            .map_err(|e| Error::config("cache.url", format!("invalid Redis URL: {e}")))?;
        let connect_timeout = config.connect_timeout();
        let command_timeout = config.command_timeout();
        // Few retries with short delays: a session operation waiting on a reconnect is
        // bounded by the engine's timeout layer anyway, and once the retries are spent
        // the next command starts a fresh attempt, so a server that comes back is found
        // within about a second rather than after a long exponential backoff.
        // The response timeout bounds each command of a store that may be used without
        // the layer; under the layer it is off (the client's default is 500 ms).
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout((bound == Bound::Client).then_some(command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connecting = ConnectionManager::new_with_config(client, manager_config);
        // The manager retries its first connection too; bound the whole attempt.
        let connect_bound = connect_timeout.saturating_mul(4);
        let manager = match session_core::layer::deadline("redis", connect_bound, connecting).await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(Error::backend(
                    "redis",
                    format!(
                        "could not connect to {}: {e}; is the server running?",
                        redact(url)
                    ),
                ));
            }
            Err(timeout) => return Err(timeout),
        };
        Ok(RedisStore {
            conn: Conn::Single(manager),
            prefix: config.key_prefix.clone(),
            cluster: false,
            codec,
            command_timeout,
            bound,
        })
    }

    #[cfg(feature = "cluster")]
    async fn connect_cluster(
        config: &CacheConfig,
        urls: &[String],
        codec: Arc<dyn Codec>,
        bound: Bound,
    ) -> Result<Self> {
        let connect_timeout = config.connect_timeout();
        let command_timeout = config.command_timeout();
        if urls.iter().any(|u| u.starts_with("rediss://")) {
            #[cfg(not(feature = "tls"))]
            return Err(Error::config(
                "cache.urls",
                "rediss:// needs TLS support: build backend-cache with its `tls` feature",
            ));
            #[cfg(feature = "tls")]
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
            .connection_timeout(connect_timeout);
        // Each command, and each request across its redirections (the overall timeout
        // follows the response timeout), of a store that may be used without the layer;
        // none under the layer (the builder's default).
        if bound == Bound::Client {
            builder = builder.response_timeout(command_timeout);
        }
        let client = builder
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(200)
            .build()
            .map_err(|e| {
                Error::config(
                    "cache.urls",
                    format!("invalid Redis Cluster node URLs: {e}"),
                )
            })?;
        let connect_bound = connect_timeout.saturating_mul(4);
        let connecting = client.get_async_connection();
        let conn =
            match session_core::layer::deadline("redis-cluster", connect_bound, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(Error::backend(
                        "redis-cluster",
                        format!(
                            "could not connect to the cluster at {}: {e}; are the nodes running?",
                            urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
                        ),
                    ));
                }
                Err(timeout) => return Err(timeout),
            };
        Ok(RedisStore {
            conn: Conn::Cluster(conn),
            prefix: config.key_prefix.clone(),
            cluster: true,
            codec,
            command_timeout,
            bound,
        })
    }

    /// The configured key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    fn engine_name(&self) -> &'static str {
        if self.cluster {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    /// The Redis key of a session: `<prefix><key>`, or `<prefix>{<key>}` in a cluster.
    fn redis_key(&self, key: &SessionKey) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.as_str().len() + 2);
        k.extend_from_slice(self.prefix.as_bytes());
        if self.cluster {
            k.push(b'{');
            k.extend_from_slice(key.as_str().as_bytes());
            k.push(b'}');
        } else {
            k.extend_from_slice(key.as_str().as_bytes());
        }
        k
    }

    /// The sorted set of `principal`'s sessions: `<prefix>u:<hex SHA-256>`. Not a
    /// session key (it is longer and has a colon), so `SCAN`-based counts skip it.
    fn index_key(&self, principal: &str) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(principal.as_bytes());
        let mut k = Vec::with_capacity(self.prefix.len() + 2 + 64);
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(b"u:");
        for b in digest {
            k.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        k
    }

    /// Enters `key` in `principal`'s set before a record bound to it, `ttl` ms to
    /// live, is written.
    async fn index_add(&self, principal: &str, key: &SessionKey, ttl: u64) -> Result<()> {
        let ikey = self.index_key(principal);
        let reply = self
            .eval(&INDEX_ADD, &ikey, |c| {
                c.arg(key.as_str())
                    .arg(ttl.saturating_add(INDEX_TTL_SLACK_MS));
            })
            .await?;
        match int_of(&reply) {
            Some(1) => Ok(()),
            _ => Err(self.unexpected("index script", &reply)),
        }
    }

    /// Runs a write script on the session key `rkey`. For a signed-in record
    /// (`index`: principal, session key, remaining age in ms) the key enters the
    /// principal's set first: in the same script on a standalone server (`indexed`, the
    /// set as a second key), by a call of its own before the write on a cluster (the set
    /// is in another slot).
    async fn eval_write(
        &self,
        plain: &Lua,
        indexed: &Lua,
        rkey: &[u8],
        index: Option<(&str, &SessionKey, u64)>,
        args: impl Fn(&mut Cmd),
    ) -> Result<Value> {
        let Some((principal, key, ttl)) = index else {
            return self.eval(plain, rkey, args).await;
        };
        if self.cluster {
            self.index_add(principal, key, ttl).await?;
            return self.eval(plain, rkey, args).await;
        }
        let ikey = self.index_key(principal);
        self.eval_keys(indexed, &[rkey, &ikey], |c| {
            args(c);
            c.arg(key.as_str())
                .arg(ttl.saturating_add(INDEX_TTL_SLACK_MS));
        })
        .await
    }

    /// How long after its last addition a stale member may be removed.
    fn index_grace(&self) -> Duration {
        self.command_timeout.saturating_mul(2).max(INDEX_MIN_GRACE)
    }

    /// The live sessions of `principal` with their keys; prunes stale members.
    async fn index_list(&self, principal: &str) -> Result<Vec<(SessionKey, Record)>> {
        validate_principal(principal)?;
        let ikey = self.index_key(principal);
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(&ikey).arg(0).arg(-1);
        let members = match self.query(&cmd).await? {
            Value::Array(items) => items,
            other => return Err(self.unexpected("ZRANGE", &other)),
        };
        let mut keys = Vec::with_capacity(members.len());
        let mut stale: Vec<Vec<u8>> = Vec::new();
        for m in members {
            let Value::BulkString(b) = m else {
                return Err(self.unexpected("ZRANGE member", &m));
            };
            match std::str::from_utf8(&b)
                .ok()
                .and_then(|s| SessionKey::parse(s).ok())
            {
                Some(k) => keys.push(k),
                None => stale.push(b),
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            let mut mget = ::redis::cmd("MGET");
            for k in &keys {
                mget.arg(self.redis_key(k));
            }
            let values = match self.query(&mget).await? {
                Value::Array(v) if v.len() == keys.len() => v,
                other => return Err(self.unexpected("MGET", &other)),
            };
            let now = Timestamp::now();
            for (key, value) in keys.into_iter().zip(values) {
                let bytes = match value {
                    Value::BulkString(b) => b,
                    Value::Nil => {
                        stale.push(key.as_str().as_bytes().to_vec());
                        continue;
                    }
                    other => return Err(self.unexpected("MGET value", &other)),
                };
                let record = Envelope::parse(&bytes)
                    .and_then(|env| {
                        if env.is_live_at(now) {
                            env.decode(self.codec.as_ref()).map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                    .map_err(|e| self.corrupt(&key, e));
                match record {
                    Ok(Some(r)) if r.principal() == Some(principal) => out.push((key, r)),
                    // Expired, or bound to another principal (or to none).
                    Ok(_) => stale.push(key.as_str().as_bytes().to_vec()),
                    // Unreadable: logged; neither listed nor forgotten.
                    Err(_) => {}
                }
            }
        }
        if !stale.is_empty() {
            let grace = u64::try_from(self.index_grace().as_millis()).unwrap_or(u64::MAX);
            self.eval(&INDEX_PRUNE, &ikey, |c| {
                c.arg(grace);
                for m in &stale {
                    c.arg(m);
                }
            })
            .await?;
        }
        Ok(out)
    }

    /// Deletes `keys` (sessions of `principal`) and removes them from its set: how many
    /// records were deleted.
    async fn index_end(&self, principal: &str, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut del = ::redis::cmd("DEL");
        for k in keys {
            del.arg(self.redis_key(k));
        }
        let ended = match self.query(&del).await? {
            Value::Int(n) => u64::try_from(n).unwrap_or(0),
            other => return Err(self.unexpected("DEL", &other)),
        };
        let mut zrem = ::redis::cmd("ZREM");
        zrem.arg(self.index_key(principal));
        for k in keys {
            zrem.arg(k.as_str());
        }
        self.query(&zrem).await?;
        Ok(ended)
    }

    /// The session key inside a Redis key found by `SCAN`, if it is one of ours.
    fn session_key_of(&self, redis_key: &[u8]) -> Option<SessionKey> {
        let rest = redis_key.strip_prefix(self.prefix.as_bytes())?;
        let rest = if self.cluster {
            rest.strip_prefix(b"{")?.strip_suffix(b"}")?
        } else {
            rest
        };
        SessionKey::parse(std::str::from_utf8(rest).ok()?).ok()
    }

    fn map_err(&self, e: RedisError) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                engine: self.engine_name().into(),
                after: self.command_timeout,
            }
        } else {
            Error::backend(self.engine_name(), e)
        }
    }

    /// Runs one command (or script) future, mapping its error (a response timeout
    /// becomes [`Error::Timeout`]).
    async fn mapped<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, RedisError>>,
    ) -> Result<T> {
        fut.await.map_err(|e| self.map_err(e))
    }

    async fn query(&self, cmd: &Cmd) -> Result<Value> {
        let mut conn = self.conn.clone();
        self.mapped(cmd.query_async::<Value>(&mut conn)).await
    }

    /// One step of a sweep (a `SCAN` step, `CLUSTER SLOTS`, a `DEL` of
    /// [`RedisStore::purge_prefix`]), which the engine's timeout layer does not bound:
    /// bounded here by the command timeout when the client does not bound it.
    async fn step<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if self.bound == Bound::Client {
            fut.await
        } else {
            session_core::layer::deadline(self.engine_name(), self.command_timeout, fut).await?
        }
    }

    /// Runs `script` on `key` with the arguments `args` appends: `EVALSHA`, and `EVAL`
    /// (which also caches the script) when the server does not know it yet, e.g. after
    /// a restart or on a cluster node seen for the first time. Building the command
    /// directly, rather than through `ScriptInvocation`, saves a copy of the payload.
    async fn eval(&self, script: &Lua, key: &[u8], args: impl Fn(&mut Cmd)) -> Result<Value> {
        self.eval_keys(script, &[key], args).await
    }

    /// [`RedisStore::eval`] with several keys (one server: a cluster refuses keys of
    /// different slots in one script).
    async fn eval_keys(
        &self,
        script: &Lua,
        keys: &[&[u8]],
        args: impl Fn(&mut Cmd),
    ) -> Result<Value> {
        let mut conn = self.conn.clone();
        let fut = async {
            let mut cmd = ::redis::cmd("EVALSHA");
            cmd.arg(&script.sha).arg(keys.len()).arg(keys);
            args(&mut cmd);
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let mut cmd = ::redis::cmd("EVAL");
                    cmd.arg(&script.code).arg(keys.len()).arg(keys);
                    args(&mut cmd);
                    cmd.query_async::<Value>(&mut conn).await
                }
                other => other,
            }
        };
        self.mapped(fut).await
    }

    /// The live record of `key`, decoded by `decode` from its envelope.
    async fn load_with<T>(
        &self,
        key: &SessionKey,
        decode: impl FnOnce(StoredValue, &dyn Codec) -> std::result::Result<T, session_core::CodecError>,
    ) -> Result<Option<T>> {
        let Some(bytes) = self.get_value(key).await? else {
            return Ok(None);
        };
        let stored = StoredValue::parse(bytes).map_err(|e| self.corrupt(key, e))?;
        if !stored.envelope().is_live_at(Timestamp::now()) {
            return Ok(None);
        }
        decode(stored, self.codec.as_ref())
            .map(Some)
            .map_err(|e| self.corrupt(key, e))
    }

    fn corrupt(&self, key: &SessionKey, e: session_core::CodecError) -> Error {
        tracing::warn!(
            engine = self.engine_name(),
            key = %key.fingerprint(),
            error = %e,
            "unreadable session record in Redis"
        );
        Error::Codec(e)
    }

    fn unexpected(&self, what: &str, v: &Value) -> Error {
        Error::backend(
            self.engine_name(),
            format!("unexpected reply to {what}: {v:?}"),
        )
    }

    /// The stored value of `key`, expired or not.
    async fn get_value(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.redis_key(key));
        match self.query(&cmd).await? {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            other => Err(self.unexpected("GET", &other)),
        }
    }

    /// Writes `value` under `key` with a TTL, or removes the key when `ttl` is `None`.
    async fn put_value(&self, key: &SessionKey, value: &[u8], ttl: Option<u64>) -> Result<()> {
        let rkey = self.redis_key(key);
        let cmd = match ttl {
            Some(ms) => {
                let mut c = ::redis::cmd("SET");
                c.arg(rkey).arg(value).arg("PX").arg(ms);
                c
            }
            None => {
                let mut c = ::redis::cmd("DEL");
                c.arg(rkey);
                c
            }
        };
        self.query(&cmd).await.map(drop)
    }

    /// Deletes every key under this store's prefix (`SCAN` + `DEL`), returning how many.
    /// For tests and operators tearing a namespace down; on a cluster, every master.
    pub async fn purge_prefix(&self) -> Result<u64> {
        let keys = self.scan_keys().await?;
        let mut removed = 0u64;
        // One DEL per key: in a cluster, the keys of one call must share a slot.
        for k in keys {
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(k);
            if let Value::Int(n) = self.step(self.query(&cmd)).await? {
                removed += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(removed)
    }

    /// Every Redis key under the prefix, by `SCAN`: on the server, or on each master
    /// of the cluster (found with `CLUSTER SLOTS`, each scanned over the cluster
    /// client's own connection to it).
    async fn scan_keys(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        match &self.conn {
            Conn::Single(_) => self.scan_node(None, &mut out).await?,
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => {
                for node in self.cluster_masters().await? {
                    self.scan_node(Some(node), &mut out).await?;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `(host, port)` of every master that serves slots.
    #[cfg(feature = "cluster")]
    async fn cluster_masters(&self) -> Result<Vec<(String, u16)>> {
        let Conn::Cluster(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        let mut conn = conn.clone();
        let reply = self
            .step(self.mapped(conn.route_command(
                ::redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )))
            .await?;
        let Value::Array(ranges) = &reply else {
            return Err(self.unexpected("CLUSTER SLOTS", &reply));
        };
        let mut masters = Vec::new();
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => continue,
            };
            let Some(port) = master
                .get(1)
                .and_then(int_of)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            if !masters.contains(&(host.clone(), port)) {
                masters.push((host, port));
            }
        }
        if masters.is_empty() {
            return Err(self.unexpected("CLUSTER SLOTS", &reply));
        }
        Ok(masters)
    }

    /// Appends the keys under the prefix on one node (`None`: the standalone server).
    async fn scan_node(&self, node: Option<(String, u16)>, out: &mut Vec<Vec<u8>>) -> Result<()> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor = 0u64;
        loop {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.cursor_arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let reply = match (&node, &self.conn) {
                #[cfg(feature = "cluster")]
                (Some((host, port)), Conn::Cluster(conn)) => {
                    let mut conn = conn.clone();
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    });
                    self.step(self.mapped(conn.route_command(cmd, routing)))
                        .await?
                }
                _ => self.step(self.query(&cmd)).await?,
            };
            let Value::Array(mut parts) = reply else {
                return Err(self.unexpected("SCAN", &reply));
            };
            let (Some(Value::Array(keys)), Some(next)) = (parts.pop(), parts.pop()) else {
                return Err(Error::backend(self.engine_name(), "malformed SCAN reply"));
            };
            for k in keys {
                if let Value::BulkString(b) = k {
                    out.push(b);
                }
            }
            cursor = match next {
                Value::BulkString(b) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                    Error::backend(self.engine_name(), "malformed SCAN cursor")
                })?,
                Value::Int(n) => u64::try_from(n).unwrap_or(0),
                other => return Err(self.unexpected("SCAN cursor", &other)),
            };
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    async fn session_keys(&self) -> Result<Vec<SessionKey>> {
        Ok(self
            .scan_keys()
            .await?
            .iter()
            .filter_map(|k| self.session_key_of(k))
            .collect())
    }
}

/// Escapes Redis glob metacharacters so a configured prefix matches only itself.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn version_of(v: &Value) -> Option<u64> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn corrupt_header() -> session_core::CodecError {
    session_core::CodecError::Corrupt("stored value has no valid cache header".into())
}

#[async_trait]
impl SessionStore for RedisStore {
    fn engine(&self) -> &str {
        self.engine_name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .native_ttl(true)
            .cross_process(true)
            .compare_and_set(true)
            .listing(true)
            .may_evict(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let now = Timestamp::now();
        let Some(ttl) = envelope::ttl_millis(record.expires_at, now) else {
            // Already expired: writing it would be invisible at once, so write nothing
            // (a deadline in the past must never become "no expiry"); still report a
            // live owner of the key as such.
            return Ok(if self.exists(key).await? {
                Inserted::KeyTaken
            } else {
                Inserted::Created
            });
        };
        let payload = self.codec.encode(record)?;
        let value = envelope::wrap(record.version, record.expires_at, &payload);
        let rkey = self.redis_key(key);
        if let Some(p) = record.principal() {
            // Signed in: the key enters the principal's set before the record is set.
            let reply = self
                .eval_write(&SET_NX, &SET_NX_INDEXED, &rkey, Some((p, key, ttl)), |c| {
                    c.arg(&value).arg(ttl);
                })
                .await?;
            match int_of(&reply) {
                Some(1) => return Ok(Inserted::Created),
                Some(0) => {}
                _ => return Err(self.unexpected("insert script", &reply)),
            }
        } else {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(&rkey).arg(&value).arg("NX").arg("PX").arg(ttl);
            match self.query(&cmd).await? {
                Value::Okay => return Ok(Inserted::Created),
                Value::Nil => {}
                other => return Err(self.unexpected("SET NX", &other)),
            }
        }
        let reply = self
            .eval(&REPLACE_EXPIRED, &rkey, |c| {
                c.arg(now.as_unix_millis()).arg(ttl).arg(&value);
            })
            .await?;
        match int_of(&reply) {
            Some(1) => Ok(Inserted::Created),
            Some(0) => Ok(Inserted::KeyTaken),
            _ => Err(self.unexpected("insert script", &reply)),
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_with(key, |stored, codec| stored.envelope().decode(codec))
            .await
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.load_with(key, |stored, codec| stored.decode_lazy(codec))
            .await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let payload = self.codec.encode(record)?;
        let now = Timestamp::now();
        let ttl = envelope::ttl_millis(record.expires_at, now).unwrap_or(0);
        // A signed-in record enters its principal's set before it is written (not one
        // written already expired, which the script deletes).
        let index = record
            .principal()
            .filter(|_| ttl > 0)
            .map(|p| (p, key, ttl));
        let rkey = self.redis_key(key);
        let Some(expected) = expected_version else {
            let deadline = envelope::deadline_field(record.expires_at);
            let reply = self
                .eval_write(&UPDATE, &UPDATE_INDEXED, &rkey, index, |c| {
                    c.arg(now.as_unix_millis())
                        .arg(ttl)
                        .arg(&deadline)
                        .arg(&payload);
                })
                .await?;
            let parts = match &reply {
                Value::Array(parts) => parts.as_slice(),
                _ => return Err(self.unexpected("update script", &reply)),
            };
            return match (
                parts.first().and_then(int_of),
                parts.get(1).and_then(version_of),
            ) {
                (Some(0), _) => Err(Error::NotFound),
                (Some(2), Some(version)) => Ok(version),
                (Some(3), _) => Err(self.corrupt(key, corrupt_header())),
                _ => Err(self.unexpected("update script", &reply)),
            };
        };
        let version = expected.saturating_add(1);
        let value = envelope::wrap(version, record.expires_at, &payload);
        let mut stored_prefix = Vec::with_capacity(21);
        stored_prefix.push(b'v');
        envelope::push_digits(&mut stored_prefix, expected);
        let reply = self
            .eval_write(&UPDATE_CAS, &UPDATE_CAS_INDEXED, &rkey, index, |c| {
                c.arg(&stored_prefix)
                    .arg(now.as_unix_millis())
                    .arg(ttl)
                    .arg(&value);
            })
            .await?;
        match &reply {
            Value::Int(2) => Ok(version),
            Value::Int(0) => Err(Error::NotFound),
            Value::Int(3) => Err(self.corrupt(key, corrupt_header())),
            Value::Array(parts) => match (parts.first().and_then(int_of), parts.get(1)) {
                (Some(1), Some(found)) => Err(Error::Conflict {
                    expected,
                    found: version_of(found)
                        .ok_or_else(|| self.unexpected("update script", &reply))?,
                }),
                _ => Err(self.unexpected("update script", &reply)),
            },
            _ => Err(self.unexpected("update script", &reply)),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let mut cmd = ::redis::cmd("DEL");
        cmd.arg(self.redis_key(key));
        match self.query(&cmd).await? {
            Value::Int(n) => Ok(n > 0),
            other => Err(self.unexpected("DEL", &other)),
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        let ttl = envelope::ttl_millis(expires_at, now).unwrap_or(0);
        let rkey = self.redis_key(key);
        let deadline = envelope::deadline_field(expires_at);
        let reply = self
            .eval(&TOUCH, &rkey, |c| {
                c.arg(now.as_unix_millis()).arg(ttl).arg(&deadline);
            })
            .await?;
        match int_of(&reply) {
            Some(1) => Ok(()),
            Some(0) => Err(Error::NotFound),
            Some(3) => Err(self.corrupt(key, corrupt_header())),
            _ => Err(self.unexpected("touch script", &reply)),
        }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let mut cmd = ::redis::cmd("GETRANGE");
        cmd.arg(self.redis_key(key)).arg(0).arg(HEADER_LEN - 1);
        let header = match self.query(&cmd).await? {
            Value::BulkString(b) => b,
            Value::Nil => return Ok(false),
            other => return Err(self.unexpected("GETRANGE", &other)),
        };
        if header.is_empty() {
            return Ok(false);
        }
        let env = Envelope::parse(&header).map_err(|e| self.corrupt(key, e))?;
        Ok(env.is_live_at(Timestamp::now()))
    }

    async fn clear_expired(&self) -> Result<u64> {
        // Redis drops expired keys itself.
        Ok(0)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.session_keys().await?.len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let mut keys: Vec<SessionKey> = self
            .session_keys()
            .await?
            .into_iter()
            .filter(|k| after.is_none_or(|a| k > a))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(limit);
        Ok(keys)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }
}

#[async_trait]
impl UserIndex for RedisStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        let mut out: Vec<UserSession> = self
            .index_list(principal)
            .await?
            .into_iter()
            .map(|(key, record)| UserSession::from_record(key, &record, current))
            .collect();
        sort_oldest_first(&mut out);
        Ok(out)
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        let Some(key) = self
            .index_list(principal)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| session_id(key) == id)
        else {
            return Ok(false);
        };
        Ok(self.index_end(principal, &[key]).await? > 0)
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        let keys: Vec<SessionKey> = self
            .index_list(principal)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| Some(key) != keep)
            .collect();
        self.index_end(principal, &keys).await
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        Ok(self.index_list(principal).await?.len() as u64)
    }
}

#[async_trait]
impl RawAccess for RedisStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let ttl = envelope::ttl_millis(expires_at, Timestamp::now());
        self.put_value(key, &envelope::wrap(1, expires_at, bytes), ttl)
            .await
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_value(key)
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
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(escape_glob("session:"), "session:");
        assert_eq!(escape_glob("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1"), "redis://127.0.0.1");
    }
}
